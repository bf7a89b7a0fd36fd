#!/usr/bin/env bash
# Refreshes the README's dashboard screenshot: the dashboard e2e test
# (`keel up --agents 3`, a Deployment rolled out from echo:v1 to v2) saves
# what headless Chromium shows once the rollout completed.
# Needs: root (the test runs pods), chromium and kubectl. Run from anywhere.
set -euo pipefail
cd "$(dirname "$0")/.."
KEEL_DASHBOARD_SCREENSHOT="$PWD/docs/images/dashboard.png" \
  cargo test --locked -p keel --test dashboard -- --nocapture
test -s docs/images/dashboard.png
echo "wrote docs/images/dashboard.png"

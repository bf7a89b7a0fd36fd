#!/usr/bin/env bash
# Refreshes the README's chaos report screenshot: a one-seed run with the
# stale-reads bug injected, rendered by headless Chromium at the failing seed.
# Needs: chromium (apt-get install -y chromium). Run from anywhere.
set -euo pipefail
cd "$(dirname "$0")/.."
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# KEEL=path/to/keel skips the release build.
if [ -z "${KEEL:-}" ]; then
  cargo build --release --locked -p keel
  KEEL="${CARGO_TARGET_DIR:-target}/release/keel"
fi
# The injected bug makes the run fail; that is the point.
"$KEEL" chaos --seeds 1 --first-seed 101 --ops 300 --inject-bug stale-reads \
  --report "$tmp/report" --out "$tmp/failures.jsonl" >/dev/null 2>&1 || true
test -s "$tmp/report/index.html"
chromium --headless --no-sandbox --disable-gpu --hide-scrollbars \
  --user-data-dir="$tmp/profile" --window-size=1260,900 \
  --screenshot="$PWD/docs/images/chaos-report.png" \
  "file://$tmp/report/index.html" 2>/dev/null
echo "wrote docs/images/chaos-report.png"

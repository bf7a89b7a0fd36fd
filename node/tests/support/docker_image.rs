//! A tiny Docker image for tests, built from host files: no registry is
//! reachable, so `keel-test/sh:1` is `FROM scratch` with `/bin/sh`,
//! `/bin/sleep` and the shared libraries `ldd` lists. Shared by the
//! docker runtime tests here and `cli/tests/docker_agent.rs` (included
//! with `#[path]`).

use std::path::Path;
use std::process::Command;
use std::sync::Mutex;

pub const IMAGE: &str = "keel-test/sh:1";

/// Returns false when the suite is explicitly skipped; panics with a clear
/// message when Docker is unusable.
pub fn docker_available() -> bool {
    if std::env::var("KEEL_SKIP_DOCKER").is_ok_and(|v| v == "1") {
        eprintln!("KEEL_SKIP_DOCKER=1: skipping docker runtime test");
        return false;
    }
    let out = Command::new("docker").arg("info").output();
    match out {
        Ok(o) if o.status.success() => true,
        Ok(o) => panic!(
            "the Docker daemon is not reachable (`docker info` failed: {}); \
             start dockerd or set KEEL_SKIP_DOCKER=1 to skip these tests",
            String::from_utf8_lossy(&o.stderr).trim()
        ),
        Err(e) => panic!(
            "cannot run the docker CLI ({e}); install Docker or set KEEL_SKIP_DOCKER=1 to skip these tests"
        ),
    }
}

/// Builds `keel-test/sh:1` once per test process.
pub fn ensure_image() {
    static BUILT: Mutex<bool> = Mutex::new(false);
    let mut built = BUILT.lock().unwrap_or_else(|e| e.into_inner());
    if *built {
        return;
    }
    let ctx = tempfile::tempdir().unwrap();
    let rootfs = ctx.path().join("rootfs");
    std::fs::create_dir_all(rootfs.join("bin")).unwrap();
    let binaries = ["/bin/sh", "/bin/sleep"];
    for bin in binaries {
        copy_into(&rootfs, Path::new(bin), Path::new(bin));
    }
    let ldd = Command::new("ldd").args(binaries).output().unwrap();
    assert!(ldd.status.success(), "ldd failed");
    let ldd = String::from_utf8_lossy(&ldd.stdout).into_owned();
    let mut libs: Vec<&str> = ldd
        .split_whitespace()
        .filter(|w| w.starts_with('/') && !w.ends_with(':'))
        .collect();
    libs.sort_unstable();
    libs.dedup();
    for lib in libs {
        copy_into(&rootfs, Path::new(lib), Path::new(lib));
    }
    std::fs::write(
        ctx.path().join("Dockerfile"),
        "FROM scratch\nCOPY rootfs/ /\n",
    )
    .unwrap();
    let out = Command::new("docker")
        .args(["build", "-q", "-t", IMAGE])
        .arg(ctx.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "docker build failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    *built = true;
}

/// Copies `src` (following symlinks) to `<rootfs>/<dest>`.
fn copy_into(rootfs: &Path, src: &Path, dest: &Path) {
    let target = rootfs.join(dest.strip_prefix("/").unwrap());
    std::fs::create_dir_all(target.parent().unwrap()).unwrap();
    std::fs::copy(src, &target).unwrap_or_else(|e| panic!("copy {}: {e}", src.display()));
}

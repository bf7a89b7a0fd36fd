//! Network namespaces pinned by bind mounts, and running netlink work
//! inside one.
//!
//! A namespace lives as long as a process or a mount holds it: the agent
//! pins each pod's namespace on a file (`<root>/pods/<uid>/ns/net`), so it
//! survives agent restarts and container restarts, and every container of the
//! pod joins it by opening that file.
//!
//! Namespace switches happen on short-lived threads of their own
//! (`unshare`/`setns` change the calling thread only), never on a tokio
//! worker, so the agent's other tasks stay in the agent's namespace.

use std::fs::File;
use std::future::Future;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, Context as _};
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{setns, unshare, CloneFlags};

/// `statfs` type of namespace files (`NSFS_MAGIC`).
const NSFS_MAGIC: i64 = 0x6e73_6673;

/// Whether `path` is a pinned namespace (a bind mount of a namespace file),
/// not a leftover empty file (e.g. after a reboot).
pub fn is_pinned(path: &Path) -> bool {
    // The statfs type is i64 or i32 depending on the target.
    #[allow(clippy::unnecessary_cast)]
    nix::sys::statfs::statfs(path)
        .map(|s| s.filesystem_type().0 as i64 == NSFS_MAGIC)
        .unwrap_or(false)
}

/// Creates a new network namespace pinned at `pin` (parent directories are
/// created). Idempotent: an existing pin is kept.
pub fn create_pinned(pin: &Path) -> anyhow::Result<()> {
    if is_pinned(pin) {
        return Ok(());
    }
    if let Some(dir) = pin.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    }
    File::create(pin).with_context(|| format!("create {}", pin.display()))?;
    let pin_path = pin.to_path_buf();
    std::thread::spawn(move || -> anyhow::Result<()> {
        unshare(CloneFlags::CLONE_NEWNET).context("unshare a network namespace")?;
        mount(
            Some("/proc/thread-self/ns/net"),
            &pin_path,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .with_context(|| format!("pin the network namespace at {}", pin_path.display()))
    })
    .join()
    .map_err(|_| anyhow!("network namespace thread panicked"))?
}

/// Unpins the namespace at `pin` and removes the file; the namespace goes
/// away with its last process. A missing pin is not an error.
pub fn remove_pin(pin: &Path) -> std::io::Result<()> {
    if is_pinned(pin) {
        umount2(pin, MntFlags::MNT_DETACH).map_err(std::io::Error::from)?;
    }
    match std::fs::remove_file(pin) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Runs `work` with a netlink handle bound to the namespace at `netns`
/// (`None`: the caller's), on a thread of its own with a current-thread
/// runtime. A netlink socket belongs to the namespace it was opened in, so
/// the handle configures that namespace only.
pub async fn with_netlink<F, Fut, T>(netns: Option<PathBuf>, work: F) -> anyhow::Result<T>
where
    F: FnOnce(rtnetlink::Handle) -> Fut + Send + 'static,
    Fut: Future<Output = anyhow::Result<T>>,
    T: Send + 'static,
{
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("keel-netlink".into())
        .spawn(move || {
            let result = (|| {
                if let Some(path) = &netns {
                    let file =
                        File::open(path).with_context(|| format!("open {}", path.display()))?;
                    setns(&file, CloneFlags::CLONE_NEWNET).with_context(|| {
                        format!("enter the network namespace {}", path.display())
                    })?;
                }
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .context("netlink runtime")?;
                rt.block_on(async move {
                    let (conn, handle, _) =
                        rtnetlink::new_connection().context("open a netlink socket")?;
                    let conn = tokio::spawn(conn);
                    let out = work(handle).await;
                    conn.abort();
                    out
                })
            })();
            let _ = tx.send(result);
        })
        .context("spawn the netlink thread")?;
    rx.await
        .map_err(|_| anyhow!("netlink thread ended without a result"))?
}

//! `kubectl exec -t` into an isolated container: the session's terminal is
//! a host pseudo-terminal, which the container's private `/dev/pts` cannot
//! name (`tty` would say "not a tty"). So, as runc does, the command gets a
//! pseudo-terminal allocated from the container's devpts, and this process
//! copies bytes between the two (the host side in raw mode, so the
//! container's line discipline alone does echo and editing) and copies the
//! window size across whenever it changes.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd};

use anyhow::Context;
use nix::fcntl::OFlag;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::pty::{grantpt, posix_openpt, ptsname_r, unlockpt};
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::{fork, ForkResult};

const POLL_MS: u16 = 100;

/// Forks `child` onto a new pty of the container's devpts (as its session
/// leader with the pty as controlling terminal), proxies stdin/stdout to
/// it, and returns the child's exit code (128 + signal when killed).
pub fn run(child: impl FnOnce() -> anyhow::Error) -> anyhow::Result<i32> {
    let master = posix_openpt(OFlag::O_RDWR | OFlag::O_NOCTTY).context("open /dev/ptmx")?;
    grantpt(&master).context("grantpt")?;
    unlockpt(&master).context("unlockpt")?;
    let slave_name = ptsname_r(&master).context("ptsname")?;
    copy_size(stdin(), master.as_fd());
    // SAFETY: single-threaded process (an internal mode started by exec).
    match unsafe { fork() }.context("fork")? {
        ForkResult::Child => {
            drop(master);
            let err = match attach_terminal(&slave_name) {
                Ok(()) => child(),
                Err(e) => e,
            };
            eprintln!("keel exec: {err:#}");
            std::process::exit(127)
        }
        ForkResult::Parent { child } => {
            let saved = make_raw(stdin());
            proxy(master.as_fd());
            if let Some(t) = saved {
                let _ =
                    nix::sys::termios::tcsetattr(stdin(), nix::sys::termios::SetArg::TCSANOW, &t);
            }
            loop {
                match waitpid(child, None).context("waitpid")? {
                    WaitStatus::Exited(_, code) => return Ok(code),
                    WaitStatus::Signaled(_, sig, _) => return Ok(128 + sig as i32),
                    _ => continue,
                }
            }
        }
    }
}

fn stdin() -> BorrowedFd<'static> {
    // SAFETY: fd 0 stays open for the life of the process.
    unsafe { BorrowedFd::borrow_raw(0) }
}

/// New session with the pty slave as controlling terminal and stdio.
fn attach_terminal(slave_name: &str) -> anyhow::Result<()> {
    nix::unistd::setsid().context("setsid")?;
    let slave = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(slave_name)
        .with_context(|| format!("open {slave_name}"))?;
    let fd = slave.as_raw_fd();
    // SAFETY: ioctl and dup2 on descriptors owned by this process.
    unsafe {
        if libc::ioctl(fd, libc::TIOCSCTTY, 0) < 0 {
            return Err(std::io::Error::last_os_error()).context("TIOCSCTTY");
        }
        for target in 0..3 {
            if libc::dup2(fd, target) < 0 {
                return Err(std::io::Error::last_os_error()).context("dup2");
            }
        }
    }
    Ok(())
}

fn make_raw(fd: BorrowedFd<'_>) -> Option<nix::sys::termios::Termios> {
    use nix::sys::termios::{cfmakeraw, tcgetattr, tcsetattr, SetArg};
    let saved = tcgetattr(fd).ok()?;
    let mut raw = saved.clone();
    cfmakeraw(&mut raw);
    tcsetattr(fd, SetArg::TCSANOW, &raw).ok()?;
    Some(saved)
}

fn window_size(fd: BorrowedFd<'_>) -> Option<libc::winsize> {
    let mut ws = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ writes one winsize into `ws`.
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCGWINSZ, &mut ws) };
    (r == 0).then_some(ws)
}

fn copy_size(from: BorrowedFd<'_>, to: BorrowedFd<'_>) -> Option<(u16, u16)> {
    let ws = window_size(from)?;
    // SAFETY: TIOCSWINSZ reads one winsize.
    unsafe { libc::ioctl(to.as_raw_fd(), libc::TIOCSWINSZ, &ws) };
    Some((ws.ws_row, ws.ws_col))
}

/// Copies stdin → master and master → stdout until the container side
/// closes (every holder of the slave is gone: EIO) or stdin ends.
fn proxy(master: BorrowedFd<'_>) {
    let mut size = window_size(stdin()).map(|w| (w.ws_row, w.ws_col));
    let mut buf = [0u8; 16 * 1024];
    let mut stdin_open = true;
    loop {
        let now = window_size(stdin()).map(|w| (w.ws_row, w.ws_col));
        if now != size {
            size = copy_size(stdin(), master);
        }
        let mut fds = vec![PollFd::new(master, PollFlags::POLLIN)];
        if stdin_open {
            fds.push(PollFd::new(stdin(), PollFlags::POLLIN));
        }
        match poll(&mut fds, PollTimeout::from(POLL_MS)) {
            Ok(0) => continue,
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => continue,
            Err(_) => return,
        }
        let ready = |f: &PollFd| {
            f.revents().is_some_and(|r| {
                r.intersects(PollFlags::POLLIN | PollFlags::POLLHUP | PollFlags::POLLERR)
            })
        };
        let (master_ready, stdin_ready) = (ready(&fds[0]), fds.get(1).is_some_and(ready));
        drop(fds);
        if master_ready {
            match nix::unistd::read(master, &mut buf) {
                Ok(0) | Err(_) => return, // EIO: the container side closed
                Ok(n) => {
                    if write_all(1, &buf[..n]).is_err() {
                        return;
                    }
                }
            }
        }
        if stdin_ready {
            match nix::unistd::read(stdin(), &mut buf) {
                Ok(0) | Err(_) => stdin_open = false,
                Ok(n) => {
                    if write_all(master.as_raw_fd(), &buf[..n]).is_err() {
                        return;
                    }
                }
            }
        }
    }
}

fn write_all(fd: i32, mut data: &[u8]) -> std::io::Result<()> {
    while !data.is_empty() {
        // SAFETY: writes from a valid buffer to an open descriptor.
        let n = unsafe { libc::write(fd, data.as_ptr().cast(), data.len()) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        data = &data[n as usize..];
    }
    Ok(())
}

//! An interactive process in a container (`kubectl exec`), as the runtimes
//! hand it to the agent: two channels, whatever the runtime underneath.
//!
//! Guarantees every runtime gives for an [`ExecSession`]:
//! - all `Stdout`/`Stderr` output comes before the one final
//!   [`ExecOutput::Exit`], after which the output channel closes;
//! - `CloseStdin` (or dropping the input sender) gives the process EOF on
//!   its stdin;
//! - dropping the output receiver (the client went away) kills the process
//!   and everything it started.

use tokio::sync::mpsc;

/// A terminal size in character cells.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TermSize {
    pub width: u16,
    pub height: u16,
}

/// What to run. `command` is never empty (the agent checks).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecRequest {
    pub command: Vec<String>,
    /// Give the process a stdin pipe (else /dev/null).
    pub stdin: bool,
    /// Run on a pseudo-terminal: stdout and stderr are one stream (sent as
    /// `Stdout`), and `Resize` applies.
    pub tty: bool,
    /// Initial terminal size (tty only).
    pub size: Option<TermSize>,
}

/// Into the process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExecInput {
    Stdin(Vec<u8>),
    CloseStdin,
    Resize(TermSize),
}

/// Out of the process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExecOutput {
    Stdout(Vec<u8>),
    Stderr(Vec<u8>),
    /// The exit code; 128 + signal number when killed by a signal.
    Exit(i32),
}

/// A running exec; see the module docs for the guarantees.
#[derive(Debug)]
pub struct ExecSession {
    pub input: mpsc::Sender<ExecInput>,
    pub output: mpsc::Receiver<ExecOutput>,
}

/// Channel depth between a session's tasks and the agent: enough to keep a
/// pipe busy, small enough that a stalled client stalls the process.
pub(crate) const SESSION_QUEUE: usize = 32;

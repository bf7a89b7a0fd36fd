//! Running `nft` (nftables' own CLI) on scripts keel generates.
//!
//! Why the CLI: nftables has no netlink crate as maintained as the `nft`
//! tool itself, and a script given to `nft -f -` is applied as **one
//! transaction**: either every statement takes effect or none does. Each
//! table keel owns is replaced whole by [`replace_script`]'s
//! add-delete-add sequence, so a reconcile never leaves half a table and
//! never touches any other table of the namespace.
//!
//! Every value written into a script comes from a parsed type (an
//! [`std::net::IpAddr`], a port number, an index), never from API text,
//! so no object can inject nft syntax.

use std::io::Write as _;
use std::process::{Command, Stdio};

use anyhow::{bail, Context as _};

/// The nftables CLI, found on `PATH`.
pub const NFT: &str = "nft";

/// A script that atomically replaces table `family name` with `body`
/// (the statements inside `table family name { ... }`). The leading `add`
/// makes the `delete` valid when the table does not exist yet.
pub fn replace_script(family: &str, name: &str, body: &str) -> String {
    format!("add table {family} {name}\ndelete table {family} {name}\ntable {family} {name} {{\n{body}}}\n")
}

/// Applies `script` with `nft -f -` in the caller's network namespace.
///
/// Errors: nft is missing (the message says to install `nftables`), or it
/// refused the script (its stderr, with the line it names).
pub fn apply(script: &str) -> anyhow::Result<()> {
    let mut child = Command::new(NFT)
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("run {NFT} (install the nftables package)"))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(script.as_bytes())
            .context("write the nft script")?;
    }
    let out = child.wait_with_output().context("wait for nft")?;
    if !out.status.success() {
        bail!(
            "nft refused the ruleset: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Deletes table `family name` if it exists (agent cleanup, tests).
pub fn delete_table(family: &str, name: &str) -> anyhow::Result<()> {
    apply(&format!(
        "add table {family} {name}\ndelete table {family} {name}\n"
    ))
}

/// Whether `nft` can run here (for error messages at start).
pub fn available() -> bool {
    Command::new(NFT)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_replace_is_add_delete_add() {
        let s = replace_script("ip", "keel", "  chain c {\n  }\n");
        assert_eq!(
            s,
            "add table ip keel\ndelete table ip keel\ntable ip keel {\n  chain c {\n  }\n}\n"
        );
    }
}

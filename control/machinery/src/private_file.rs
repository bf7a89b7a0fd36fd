//! Writing secrets (keys, tokens, kubeconfigs) to disk: readable by the
//! owner only, and atomic, so a reader (a restarting process, a certificate
//! reload) never sees half a key.

use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::Path;

/// Writes `data` to `path` with mode 0600: a temporary file beside it,
/// fsynced, then renamed over `path`. Errors name the file.
pub fn write(path: &Path, data: impl AsRef<[u8]>) -> std::io::Result<()> {
    let named = |p: &Path| {
        let p = p.display().to_string();
        move |e: std::io::Error| std::io::Error::new(e.kind(), format!("{p}: cannot write: {e}"))
    };
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(named(&tmp))?;
    f.write_all(data.as_ref()).map_err(named(&tmp))?;
    f.sync_all().map_err(named(&tmp))?;
    std::fs::rename(&tmp, path).map_err(named(path))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    #[test]
    fn writes_owner_only_and_replaces_whole() {
        let dir = std::env::temp_dir().join(format!("keel-private-file-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("k.key");
        super::write(&p, "first").unwrap();
        super::write(&p, b"second").unwrap();
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "second");
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert!(!p.with_extension("tmp").exists());
        let err = super::write(&dir.join("no/such/dir/x"), "x").unwrap_err();
        assert!(
            err.to_string().contains("no/such/dir/x.tmp: cannot write"),
            "{err}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

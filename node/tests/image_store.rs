//! The OCI image store on disk: layer unpacking (whiteouts, opaque
//! directories, symlinks, hardlinks, refusing path escapes), `docker save`
//! and OCI-layout import, corrupt input leaving nothing behind, `rm` and
//! garbage collection keeping images in use. Fixtures are built here with
//! the `tar` crate. No network.

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use keel_node::image::digest::Digest;
use keel_node::image::unpack::apply_layer;
use keel_node::image::{gc, import, leases, reference, GcPolicy, ImageError, Store};
use serde_json::json;

/// One entry of a test layer.
enum E<'a> {
    Dir(&'a str, u32),
    File(&'a str, &'a str, u32),
    Symlink(&'a str, &'a str),
    Hardlink(&'a str, &'a str),
}

fn header(path: &str, kind: tar::EntryType, size: u64, mode: u32) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    // Written raw: the tar crate's set_path refuses `..`, which these tests need.
    let name = &mut h.as_gnu_mut().unwrap().name;
    name[..path.len()].copy_from_slice(path.as_bytes());
    h.set_entry_type(kind);
    h.set_size(size);
    h.set_mode(mode);
    h.set_uid(1234);
    h.set_gid(2345);
    h.set_mtime(1_600_000_000);
    h
}

fn layer(entries: &[E]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for e in entries {
        match e {
            E::Dir(p, mode) => {
                let mut h = header(p, tar::EntryType::Directory, 0, *mode);
                h.set_cksum();
                b.append(&h, &[][..]).unwrap();
            }
            E::File(p, content, mode) => {
                let mut h = header(p, tar::EntryType::Regular, content.len() as u64, *mode);
                h.set_cksum();
                b.append(&h, content.as_bytes()).unwrap();
            }
            E::Symlink(p, target) | E::Hardlink(p, target) => {
                let kind = match e {
                    E::Symlink(..) => tar::EntryType::Symlink,
                    _ => tar::EntryType::Link,
                };
                let mut h = header(p, kind, 0, 0o777);
                let link = &mut h.as_gnu_mut().unwrap().linkname;
                link[..target.len()].copy_from_slice(target.as_bytes());
                h.set_cksum();
                b.append(&h, &[][..]).unwrap();
            }
        }
    }
    b.into_inner().unwrap()
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

fn sha(bytes: &[u8]) -> String {
    Digest::of(bytes).to_string()
}

fn hex(bytes: &[u8]) -> String {
    Digest::of(bytes).hex().to_string()
}

/// A tar of `files` (path, content), as `docker save` writes it.
fn archive(files: &[(&str, &[u8])], symlinks: &[(&str, &str)]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (p, content) in files {
        let mut h = tar::Header::new_gnu();
        h.set_size(content.len() as u64);
        h.set_mode(0o644);
        b.append_data(&mut h, p, *content).unwrap();
    }
    for (p, target) in symlinks {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Symlink);
        h.set_size(0);
        b.append_link(&mut h, p, target).unwrap();
    }
    b.into_inner().unwrap()
}

fn config(entrypoint: &[&str]) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "architecture": "amd64", "os": "linux",
        "config": {"Entrypoint": entrypoint, "Cmd": ["--flag"], "Env": ["PATH=/bin", "A=b=c"],
                   "WorkingDir": "/work", "User": "1000:1000"},
        "rootfs": {"type": "layers", "diff_ids": []}
    }))
    .unwrap()
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> std::path::PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

/// A classic `docker save` archive of one image tagged `tags`.
fn docker_save(tags: &[&str], layers: &[Vec<u8>]) -> Vec<u8> {
    let cfg = config(&["/bin/app"]);
    let cfg_name = format!("{}.json", hex(&cfg));
    let mut files: Vec<(String, Vec<u8>)> = vec![(cfg_name.clone(), cfg)];
    let mut layer_names = Vec::new();
    for (i, l) in layers.iter().enumerate() {
        let n = format!("layer{i}/layer.tar");
        files.push((n.clone(), l.clone()));
        layer_names.push(n);
    }
    let manifest =
        serde_json::to_vec(&json!([{"Config": cfg_name, "RepoTags": tags, "Layers": layer_names}]))
            .unwrap();
    files.push(("manifest.json".into(), manifest));
    let refs: Vec<(&str, &[u8])> = files
        .iter()
        .map(|(p, c)| (p.as_str(), c.as_slice()))
        .collect();
    archive(&refs, &[])
}

fn store(dir: &Path) -> Store {
    Store::open(dir.join("store")).unwrap()
}

fn nothing_installed(s: &Store) {
    assert!(s.list().unwrap().is_empty(), "{:?}", s.list().unwrap());
    for d in ["images", "blobs/sha256", "tmp"] {
        let n = std::fs::read_dir(s.root().join(d)).unwrap().count();
        assert_eq!(n, 0, "{d} is not empty");
    }
}

#[test]
fn layers_apply_whiteouts_opaque_dirs_symlinks_and_hardlinks() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("rootfs");
    std::fs::create_dir(&root).unwrap();
    let lower = layer(&[
        E::Dir("etc/", 0o755),
        E::File("etc/gone", "lower", 0o644),
        E::File("etc/kept", "lower", 0o600),
        E::Dir("opq/", 0o755),
        E::File("opq/lower-file", "x", 0o644),
        E::Dir("opq/sub/", 0o755),
        E::File("opq/sub/deep", "x", 0o644),
        E::File("bin/app", "#!/bin/sh\n", 0o755),
        E::Symlink("etc/link", "gone"),
        E::File("replaced", "file first", 0o644),
    ]);
    apply_layer(&root, &lower[..], "lower").unwrap();
    // The opaque marker comes after an entry of the same layer: that entry stays.
    let upper = gzip(&layer(&[
        E::File("opq/upper-file", "y", 0o644),
        E::File("opq/.wh..wh..opq", "", 0o644),
        E::Dir("opq/sub/", 0o755),
        E::File("etc/.wh.gone", "", 0o644),
        E::Hardlink("bin/app2", "bin/app"),
        E::Dir("replaced/", 0o700),
    ]));
    apply_layer(&root, &upper[..], "upper").unwrap();

    assert!(
        !root.join("etc/gone").exists(),
        "whiteout removes the lower file"
    );
    assert_eq!(
        std::fs::read_to_string(root.join("etc/kept")).unwrap(),
        "lower"
    );
    let kept = std::fs::metadata(root.join("etc/kept")).unwrap();
    assert_eq!(kept.permissions().mode() & 0o777, 0o600);
    if unsafe { libc::geteuid() } == 0 {
        assert_eq!(
            (kept.uid(), kept.gid()),
            (1234, 2345),
            "owners preserved as root"
        );
    }
    assert!(
        !root.join("opq/lower-file").exists(),
        "opaque dir hides lower files"
    );
    assert!(
        !root.join("opq/sub/deep").exists(),
        "and lower contents of re-created dirs"
    );
    assert!(root.join("opq/sub").is_dir());
    assert_eq!(
        std::fs::read_to_string(root.join("opq/upper-file")).unwrap(),
        "y"
    );
    assert!(
        !root.join("opq/.wh..wh..opq").exists(),
        "markers are not materialised"
    );
    assert!(!root.join("etc/.wh.gone").exists());
    let link = std::fs::symlink_metadata(root.join("etc/link")).unwrap();
    assert!(link.file_type().is_symlink());
    assert_eq!(
        std::fs::read_link(root.join("etc/link")).unwrap(),
        Path::new("gone")
    );
    let (a, b) = (
        std::fs::metadata(root.join("bin/app")).unwrap(),
        std::fs::metadata(root.join("bin/app2")).unwrap(),
    );
    assert_eq!(a.ino(), b.ino(), "hardlink shares the inode");
    assert_eq!(a.permissions().mode() & 0o777, 0o755);
    assert_eq!(a.mtime(), 1_600_000_000, "mtime preserved");
    assert!(
        root.join("replaced").is_dir(),
        "a directory replaces a lower file"
    );
}

#[test]
fn layer_entries_that_escape_the_rootfs_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let outside = dir.path().join("outside");
    std::fs::create_dir(&outside).unwrap();
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("dot-dot", layer(&[E::File("../outside/evil", "x", 0o644)])),
        (
            "through a symlink",
            layer(&[
                E::Symlink("esc", outside.to_str().unwrap()),
                E::File("esc/evil", "x", 0o644),
            ]),
        ),
        (
            "hardlink out",
            layer(&[E::Hardlink("h", "../outside/target")]),
        ),
        (
            "whiteout through a symlink",
            layer(&[
                E::Symlink("wh", outside.to_str().unwrap()),
                E::File("wh/.wh.target", "", 0o644),
            ]),
        ),
        (
            "whiteout of the parent",
            layer(&[E::File("d/.wh...", "", 0o644)]),
        ),
    ];
    std::fs::write(outside.join("target"), "secret").unwrap();
    for (what, l) in cases {
        let root = dir
            .path()
            .join(format!("rootfs-{}", what.replace(' ', "-")));
        std::fs::create_dir(&root).unwrap();
        let err = apply_layer(&root, &l[..], what).unwrap_err();
        assert!(
            matches!(err, ImageError::PathEscape { .. }),
            "{what}: {err}"
        );
        assert!(err.to_string().contains("escapes the rootfs"), "{err}");
    }
    assert!(!outside.join("evil").exists(), "nothing written outside");
    assert!(outside.join("target").exists(), "nothing removed outside");
    assert_eq!(std::fs::read_dir(&outside).unwrap().count(), 1);
}

#[test]
fn docker_save_import_installs_a_runnable_image() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(dir.path());
    let l1 = layer(&[
        E::File("bin/app", "binary", 0o755),
        E::File("etc/old", "x", 0o644),
    ]);
    let l2 = gzip(&layer(&[
        E::File("etc/.wh.old", "", 0o644),
        E::File("work/data", "d", 0o644),
    ]));
    let file = write(
        dir.path(),
        "app.tar",
        &docker_save(&["example/app:1.0", "example/app:stable"], &[l1, l2]),
    );

    let imported = import::import(&s, &file).unwrap();
    assert_eq!(imported.len(), 1);
    assert_eq!(
        imported[0].tags,
        ["docker.io/example/app:1.0", "docker.io/example/app:stable"]
    );
    let d = s
        .lookup(&reference::parse("example/app:1.0").unwrap())
        .unwrap()
        .unwrap();
    assert_eq!(d.to_string(), imported[0].digest);
    let root = s.image_root(&d).unwrap();
    assert_eq!(
        std::fs::read_to_string(root.rootfs.join("bin/app")).unwrap(),
        "binary"
    );
    assert!(!root.rootfs.join("etc/old").exists());
    assert_eq!(root.entrypoint, ["/bin/app"]);
    assert_eq!(root.cmd, ["--flag"]);
    assert_eq!(
        root.env,
        [("PATH".into(), "/bin".into()), ("A".into(), "b=c".into())]
    );
    assert_eq!(root.working_dir.as_deref(), Some("/work"));
    assert_eq!(root.user.as_deref(), Some("1000:1000"));

    let rows = s.list().unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0].repository, "docker.io/example/app");
    assert_eq!(rows[0].tag, "1.0");
    assert!(rows[0].size_bytes > 0);
    // Every blob the manifest names is in the store, under its digest.
    for b in std::fs::read_dir(s.root().join("blobs/sha256")).unwrap() {
        let b = b.unwrap();
        let content = std::fs::read(b.path()).unwrap();
        assert_eq!(hex(&content), b.file_name().to_string_lossy());
    }
    // A second import of the same archive changes nothing.
    assert_eq!(
        import::import(&s, &file).unwrap()[0].digest,
        imported[0].digest
    );
    assert_eq!(s.installed().unwrap().len(), 1);
}

/// Docker 25+ `docker save`: OCI blobs plus manifest.json, duplicate
/// layers as symlinks.
#[test]
fn oci_in_docker_save_and_oci_layout_archives_import() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(dir.path());
    let l = gzip(&layer(&[E::File("hello", "world", 0o644)]));
    let cfg = config(&["/hello"]);
    let lp = format!("blobs/sha256/{}", hex(&l));
    let cp = format!("blobs/sha256/{}", hex(&cfg));
    let manifest = serde_json::to_vec(&json!([{"Config": cp, "RepoTags": ["127.0.0.1:5000/hello:v1"], "Layers": [lp, "dup/layer.tar"]}])).unwrap();
    let tar = archive(
        &[(&cp, &cfg), (&lp, &l), ("manifest.json", &manifest)],
        &[("dup/layer.tar", &format!("../{lp}"))],
    );
    let imported = import::import(&s, &write(dir.path(), "new-save.tar", &tar)).unwrap();
    assert_eq!(imported[0].tags, ["127.0.0.1:5000/hello:v1"]);

    // An OCI image layout: an index with two platforms; the host's is picked.
    let other_layer = gzip(&layer(&[E::File("hello", "arm", 0o644)]));
    let mk = |layer: &[u8]| {
        serde_json::to_vec(&json!({
            "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": sha(&cfg), "size": cfg.len()},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": sha(layer), "size": layer.len()}]
        }))
        .unwrap()
    };
    let (m_host, m_other) = (mk(&l), mk(&other_layer));
    let (host, other) = match std::env::consts::ARCH {
        "aarch64" => ("arm64", "amd64"),
        _ => ("amd64", "arm64"),
    };
    let idx = serde_json::to_vec(&json!({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [
            {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": sha(&m_other), "size": m_other.len(), "platform": {"os": "linux", "architecture": other}},
            {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": sha(&m_host), "size": m_host.len(), "platform": {"os": "linux", "architecture": host}}
        ]
    }))
    .unwrap();
    let top = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "manifests": [{"mediaType": "application/vnd.oci.image.index.v1+json", "digest": sha(&idx), "size": idx.len(),
                       "annotations": {"org.opencontainers.image.ref.name": "registry.example/multi:2"}}]
    }))
    .unwrap();
    let blob = |b: &[u8]| format!("blobs/sha256/{}", hex(b));
    let names = [
        blob(&cfg),
        blob(&l),
        blob(&other_layer),
        blob(&m_host),
        blob(&m_other),
        blob(&idx),
    ];
    let contents: [&[u8]; 6] = [&cfg, &l, &other_layer, &m_host, &m_other, &idx];
    let mut files: Vec<(&str, &[u8])> = names.iter().map(String::as_str).zip(contents).collect();
    files.push(("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#));
    files.push(("index.json", &top));
    let oci = gzip(&archive(&files, &[]));
    let imported = import::import(&s, &write(dir.path(), "oci.tar.gz", &oci)).unwrap();
    assert_eq!(imported[0].tags, ["registry.example/multi:2"]);
    assert_eq!(
        imported[0].digest,
        sha(&m_host),
        "the OCI manifest digest names the image"
    );
    let d = s
        .lookup(&reference::parse("registry.example/multi:2").unwrap())
        .unwrap()
        .unwrap();
    let root = s.image_root(&d).unwrap();
    assert_eq!(
        std::fs::read_to_string(root.rootfs.join("hello")).unwrap(),
        "world"
    );
    // By digest too.
    let by_digest = format!("registry.example/multi@{}", sha(&m_host));
    assert_eq!(
        s.lookup(&reference::parse(&by_digest).unwrap()).unwrap(),
        Some(d)
    );
}

#[test]
fn corrupt_archives_are_refused_and_leave_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(dir.path());
    let good = layer(&[E::File("a", "a", 0o644)]);
    // A truncated gzip layer.
    let bad_gz = gzip(&layer(&[E::File("b", &"b".repeat(100_000), 0o644)]));
    let truncated = bad_gz[..bad_gz.len() / 2].to_vec();
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "truncated layer",
            docker_save(&["x:1"], &[good.clone(), truncated]),
            "layer",
        ),
        (
            "garbage",
            b"this is not a tar archive at all".repeat(40),
            "not a tar archive",
        ),
        (
            "no manifest",
            archive(&[("hello.txt", b"hi")], &[]),
            "not a docker save or OCI image-layout archive",
        ),
        (
            "missing layer",
            {
                let cfg = config(&[]);
                let m = serde_json::to_vec(&json!([{"Config": "c.json", "RepoTags": ["x:1"], "Layers": ["nope/layer.tar"]}])).unwrap();
                archive(&[("c.json", &cfg), ("manifest.json", &m)], &[])
            },
            "lacks \"nope/layer.tar\"",
        ),
        (
            "digest mismatch",
            {
                let cfg = config(&[]);
                let fake = format!("blobs/sha256/{}", hex(b"something else"));
                let m = serde_json::to_vec(
                    &json!([{"Config": "c.json", "RepoTags": ["x:1"], "Layers": [fake]}]),
                )
                .unwrap();
                archive(
                    &[("c.json", &cfg), (&fake, &good), ("manifest.json", &m)],
                    &[],
                )
            },
            "corrupt",
        ),
    ];
    for (what, bytes, want) in cases {
        let file = write(dir.path(), "bad.tar", &bytes);
        let err = import::import(&s, &file).unwrap_err();
        assert!(err.to_string().contains(want), "{what}: {err}");
        nothing_installed(&s);
    }
}

#[test]
fn rm_untags_then_removes_and_refuses_images_in_use() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(dir.path());
    let l = layer(&[E::File("a", "a", 0o644)]);
    let file = write(dir.path(), "a.tar", &docker_save(&["app:1", "app:2"], &[l]));
    let digest = import::import(&s, &file).unwrap()[0].digest.clone();
    let pods = dir.path().join("pods");
    leases::write(&pods.join("uid-1"), "main", &digest, "shop/web").unwrap();

    let lock = s.lock().unwrap();
    let users = leases::in_use(&pods);
    assert!(
        s.remove(&lock, "app:1", &users).unwrap().is_empty(),
        "only untagged"
    );
    let err = s.remove(&lock, "app:2", &users).unwrap_err();
    assert!(matches!(err, ImageError::InUse { .. }), "{err}");
    assert!(
        err.to_string().contains("pod shop/web container main"),
        "{err}"
    );
    assert_eq!(s.list().unwrap().len(), 1, "the refused rm changed nothing");

    std::fs::remove_dir_all(pods.join("uid-1")).unwrap();
    let removed = s.remove(&lock, "app:2", &leases::in_use(&pods)).unwrap();
    assert_eq!(removed.len(), 1);
    drop(lock);
    nothing_installed(&s);
    let err = s
        .remove(&s.lock().unwrap(), "app:2", &BTreeMap::new())
        .unwrap_err();
    assert!(matches!(err, ImageError::NotFound(_)), "{err}");
}

#[test]
fn gc_removes_unused_images_least_recently_used_first_and_keeps_those_in_use() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(dir.path());
    let mut digests = Vec::new();
    for i in 0..3 {
        let l = layer(&[E::File("f", &i.to_string().repeat(10_000), 0o644)]);
        let file = write(
            dir.path(),
            "i.tar",
            &docker_save(&[&format!("img{i}:1")], &[l]),
        );
        digests.push(import::import(&s, &file).unwrap()[0].digest.clone());
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let pods = dir.path().join("pods");
    // img0 is the oldest, but in use.
    leases::write(&pods.join("p"), "c", &digests[0], "default/p").unwrap();
    let each = s
        .record(&Digest::parse(&digests[1]).unwrap())
        .unwrap()
        .size_bytes;
    let policy = GcPolicy {
        high_threshold_percent: 90,
        low_threshold_percent: 70,
        // Three images are 95 % of this budget; freeing one reaches 63 %.
        capacity_bytes: Some(each * 3 * 100 / 95),
    };
    let lock = s.lock().unwrap();
    let removed = gc::collect(&s, &lock, &policy, &leases::in_use(&pods)).unwrap();
    let removed: Vec<String> = removed.iter().map(ToString::to_string).collect();
    assert_eq!(
        removed,
        [digests[1].clone()],
        "least recently used unused image first"
    );
    let left: Vec<String> = s
        .installed()
        .unwrap()
        .iter()
        .map(ToString::to_string)
        .collect();
    assert!(left.contains(&digests[0]) && left.contains(&digests[2]));
    // Under the threshold now: nothing more goes.
    assert!(gc::collect(&s, &lock, &policy, &leases::in_use(&pods))
        .unwrap()
        .is_empty());
    assert!(s.record(&Digest::parse(&digests[0]).unwrap()).is_ok());
}

#[test]
fn concurrent_imports_of_one_archive_are_safe() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(dir.path());
    let l = gzip(&layer(&[E::File("x", &"x".repeat(50_000), 0o644)]));
    let file = write(dir.path(), "c.tar", &docker_save(&["conc:1"], &[l]));
    let results: Vec<_> = std::thread::scope(|scope| {
        let hs: Vec<_> = (0..4)
            .map(|_| {
                let s = Store::open(s.root()).unwrap();
                let f = file.clone();
                scope.spawn(move || import::import(&s, &f).map(|v| v[0].digest.clone()))
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let first = results[0].as_ref().unwrap().clone();
    for r in &results {
        assert_eq!(r.as_ref().unwrap(), &first);
    }
    assert_eq!(s.installed().unwrap().len(), 1);
    assert_eq!(std::fs::read_dir(s.root().join("tmp")).unwrap().count(), 0);
}

/// Agents sharing one store see each other's leases.
#[test]
fn leases_of_every_agent_sharing_a_store_protect_its_images() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(dir.path());
    let l = layer(&[E::File("a", "a", 0o644)]);
    let file = write(dir.path(), "a.tar", &docker_save(&["shared:1"], &[l]));
    let digest = import::import(&s, &file).unwrap()[0].digest.clone();
    let (a, b) = (
        dir.path().join("agent-a/pods"),
        dir.path().join("agent-b/pods"),
    );
    leases::register(&s, &a).unwrap();
    leases::register(&s, &b).unwrap();
    leases::register(&s, &b).unwrap();
    leases::write(&b.join("uid-b"), "c", &digest, "ns/on-b").unwrap();

    let users = leases::in_use_by_all(&s, Some(&a));
    assert_eq!(users[&digest], ["pod ns/on-b container c"], "listed once");
    let lock = s.lock().unwrap();
    let err = s.remove(&lock, "shared:1", &users).unwrap_err();
    assert!(err.to_string().contains("ns/on-b"), "{err}");
    let policy = GcPolicy {
        high_threshold_percent: 0,
        low_threshold_percent: 0,
        capacity_bytes: Some(1),
    };
    assert!(gc::collect(&s, &lock, &policy, &users).unwrap().is_empty());
    assert_eq!(s.installed().unwrap().len(), 1);
}

#[test]
fn zstd_layers_unpack_and_corrupt_ones_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("rootfs");
    std::fs::create_dir(&root).unwrap();
    let tar = layer(&[E::File("z/file", &"zstd ".repeat(1000), 0o640)]);
    let z =
        ruzstd::encoding::compress_to_vec(&tar[..], ruzstd::encoding::CompressionLevel::Fastest);
    assert_eq!(&z[..4], [0x28, 0xb5, 0x2f, 0xfd]);
    apply_layer(&root, &z[..], "zstd").unwrap();
    assert_eq!(
        std::fs::read_to_string(root.join("z/file")).unwrap(),
        "zstd ".repeat(1000)
    );
    let err = apply_layer(&root, &z[..z.len() / 2], "half").unwrap_err();
    assert!(matches!(err, ImageError::Corrupt(_)), "{err}");
    assert!(err.to_string().contains("layer half"), "{err}");
}

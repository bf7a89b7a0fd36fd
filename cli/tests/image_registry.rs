//! OCI images end to end: a real registry on loopback (Debian's
//! `docker-registry`, distribution 2.8, started here on 127.0.0.1 with a
//! temporary storage dir), an image built by `docker build` FROM scratch with
//! the static busybox copied in, pushed with `docker push`; then
//! `keel image pull|ls|rm|import` (tags, digests, a multi-arch index) and
//! pods on `keel up` (pull policies, imagePullSecrets against a registry
//! with basic auth, Pulling/Pulled events, ErrImagePull then
//! ImagePullBackOff with the reason).
//!
//! Skips, saying why, without docker, `docker-registry` or `busybox-static`
//! (or with `KEEL_SKIP_DOCKER=1`). Network: 127.0.0.1 only.

mod util;

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use util::up::{write, Up};
use util::{free_port, wait_for};

const BUSYBOX: &str = "/bin/busybox";

/// A `docker-registry serve` process; killed on drop.
struct Registry {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Registry {
    fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Builds `FROM scratch` + busybox as `<registry>/keel-test/<name>`,
    /// pushes it, removes the local copy; returns the manifest digest.
    fn push(&self, name: &str) -> String {
        self.push_with(name, "").0
    }

    /// As [`Registry::push`] with `extra` Dockerfile lines; returns the
    /// manifest digest and size.
    fn push_with(&self, name: &str, extra: &str) -> (String, u64) {
        let ctx = self
            .dir
            .path()
            .join(format!("ctx-{}", name.replace([':', '/'], "-")));
        std::fs::create_dir_all(&ctx).unwrap();
        std::fs::copy(BUSYBOX, ctx.join("busybox")).unwrap();
        write(
            &ctx,
            "Dockerfile",
            // The label first: no build step (and so no intermediate image
            // a concurrent test's `docker rmi` could delete) is shared
            // between registries.
            &format!("FROM scratch\nLABEL keel-test-image=\"{}/{name}\"\nCOPY busybox /bin/busybox\nENTRYPOINT [\"/bin/busybox\"]\nCMD [\"sleep\", \"3600\"]\n{extra}", self.addr()),
        );
        let tag = format!("{}/keel-test/{name}", self.addr());
        ok(Command::new("docker")
            .args(["build", "-q", "-t", &tag])
            .arg(&ctx));
        let out = ok(Command::new("docker").args(["push", &tag]));
        let digest = out
            .split_whitespace()
            .skip_while(|w| *w != "digest:")
            .nth(1)
            .unwrap_or_else(|| panic!("no digest in docker push output: {out}"))
            .to_string();
        let size = out
            .split_whitespace()
            .skip_while(|w| *w != "size:")
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("no size in docker push output: {out}"));
        let _ = Command::new("docker").args(["rmi", &tag]).output();
        (digest, size)
    }

    /// PUTs an image index as `<repo>:<tag>` (plain HTTP/1.1 to loopback).
    fn put_index(&self, repo: &str, tag: &str, index: &Value) {
        use std::io::{Read, Write};
        let body = serde_json::to_vec(index).unwrap();
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        write!(
            s,
            "PUT /v2/{repo}/manifests/{tag} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/vnd.oci.image.index.v1+json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            self.addr(),
            body.len()
        )
        .unwrap();
        s.write_all(&body).unwrap();
        let mut reply = String::new();
        s.read_to_string(&mut reply).unwrap();
        assert!(
            reply.starts_with("HTTP/1.1 201"),
            "index PUT refused: {reply}"
        );
    }
}

fn ok(cmd: &mut Command) -> String {
    let o = cmd.output().expect("command runs");
    assert!(
        o.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Why these tests cannot run here, if they cannot.
fn missing_prerequisite() -> Option<String> {
    if std::env::var("KEEL_SKIP_DOCKER").is_ok_and(|v| v == "1") {
        return Some("KEEL_SKIP_DOCKER=1".into());
    }
    if !Command::new("docker")
        .arg("info")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
    {
        return Some("the Docker daemon is not reachable (`docker info` failed)".into());
    }
    if Command::new("docker-registry")
        .arg("--version")
        .output()
        .is_err()
    {
        return Some("docker-registry is not installed (apt-get install docker-registry)".into());
    }
    if !Path::new(BUSYBOX).is_file() {
        return Some(format!(
            "{BUSYBOX} is missing (apt-get install busybox-static)"
        ));
    }
    None
}

fn registry() -> Option<Registry> {
    if let Some(why) = missing_prerequisite() {
        eprintln!("skipping: {why}");
        return None;
    }
    let dir = tempfile::tempdir().unwrap();
    let storage = dir.path().join("storage");
    Some(serve(dir, &storage, None))
}

/// `docker-registry serve` on a free loopback port, storing in `storage`;
/// with `htpasswd`, every request needs basic auth.
fn serve(dir: tempfile::TempDir, storage: &Path, htpasswd: Option<&Path>) -> Registry {
    let port = free_port();
    let auth = match htpasswd {
        Some(p) => format!(
            "auth:\n  htpasswd:\n    realm: keel-test\n    path: {}\n",
            p.display()
        ),
        None => String::new(),
    };
    let config = write(
        dir.path(),
        "config.yml",
        &format!(
            "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:{port}\n{auth}",
            storage.display()
        ),
    );
    let child = Command::new("docker-registry")
        .arg("serve")
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start docker-registry");
    let r = Registry { child, port, dir };
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "docker-registry did not listen on {port}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    r
}

/// A second registry over the same storage that requires user `keel`,
/// password `s3cret` (bcrypt htpasswd line made with Python's crypt).
fn with_auth(reg: &Registry) -> Registry {
    let dir = tempfile::tempdir().unwrap();
    let line = ok(Command::new("python3").args([
        "-W",
        "ignore",
        "-c",
        "import crypt; print('keel:' + crypt.crypt('s3cret', crypt.mksalt(crypt.METHOD_BLOWFISH)))",
    ]));
    let htpasswd = write(dir.path(), "htpasswd", &line);
    serve(dir, &reg.dir.path().join("storage"), Some(&htpasswd))
}

fn keel_image(root: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_keel"))
        .arg("image")
        .arg("--root-dir")
        .arg(root)
        .args(args)
        .env_remove("RUST_BACKTRACE")
        .output()
        .expect("keel image runs")
}

fn keel_image_ok(root: &Path, args: &[&str]) -> String {
    let o = keel_image(root, args);
    assert!(
        o.status.success(),
        "keel image {args:?} failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn keel_image_pulls_by_tag_and_digest_lists_removes_and_imports_docker_save() {
    let Some(reg) = registry() else { return };
    let digest = reg.push("bb:v1");
    let root = reg.dir.path().join("agent");
    let by_tag = format!("{}/keel-test/bb:v1", reg.addr());
    let by_digest = format!("{}/keel-test/bb@{digest}", reg.addr());

    let out = keel_image_ok(&root, &["pull", &by_tag]);
    assert!(out.contains(&digest), "{out}");
    let rootfs = root
        .join("image-store/images")
        .join(&digest["sha256:".len()..])
        .join("rootfs");
    let echoed = ok(Command::new(rootfs.join("bin/busybox")).args(["echo", "intact"]));
    assert_eq!(
        echoed.trim(),
        "intact",
        "the pulled binary is the pushed one"
    );
    keel_image_ok(&root, &["pull", &by_digest]);
    let ls = keel_image_ok(&root, &["ls"]);
    let lines: Vec<&str> = ls.lines().collect();
    assert_eq!(lines.len(), 3, "a tag row and a digest row: {ls}");
    assert!(
        lines[0]
            .split_whitespace()
            .eq(["REPOSITORY", "TAG", "DIGEST", "SIZE"]),
        "{ls}"
    );
    let repo = format!("{}/keel-test/bb", reg.addr());
    assert!(
        lines.iter().any(|l| l.split_whitespace().take(3).eq([
            repo.as_str(),
            "v1",
            digest.as_str()
        ])),
        "{ls}"
    );

    // A missing image: refused with the registry's reason, nothing stored.
    let o = keel_image(
        &root,
        &["pull", &format!("{}/keel-test/missing:v1", reg.addr())],
    );
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("manifest unknown"), "{err}");

    // rm: the tag first (the digest name still holds the image), then the image.
    assert!(keel_image_ok(&root, &["rm", &by_tag]).contains("untagged"));
    let out = keel_image_ok(&root, &["rm", &digest]);
    assert!(out.contains(&format!("deleted {digest}")), "{out}");
    assert_eq!(
        keel_image_ok(&root, &["ls"]).lines().count(),
        1,
        "only the header left"
    );
    let o = keel_image(&root, &["rm", &by_tag]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("not found"));

    // A multi-arch index: the linux/<host arch> entry is the one pulled.
    let (host, other) = match std::env::consts::ARCH {
        "aarch64" => ("arm64", "amd64"),
        _ => ("amd64", "arm64"),
    };
    let (host_digest, host_size) = reg.push_with("multi:host", "");
    let (other_digest, other_size) = reg.push_with("multi:other", "LABEL arch=other\n");
    assert_ne!(host_digest, other_digest);
    let entry = |digest: &str, size: u64, arch: &str| {
        serde_json::json!({"mediaType": "application/vnd.docker.distribution.manifest.v2+json",
            "digest": digest, "size": size, "platform": {"os": "linux", "architecture": arch}})
    };
    reg.put_index(
        "keel-test/multi",
        "v1",
        &serde_json::json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": [entry(&other_digest, other_size, other), entry(&host_digest, host_size, host)]}),
    );
    let out = keel_image_ok(
        &root,
        &["pull", &format!("{}/keel-test/multi:v1", reg.addr())],
    );
    assert!(out.contains(&host_digest), "{out}");

    // `docker save` of the pulled image imports; a truncated copy is refused
    // and imports nothing.
    ok(Command::new("docker").args(["pull", &by_tag]));
    let saved = reg.dir.path().join("saved.tar");
    ok(Command::new("docker")
        .args(["save", "-o"])
        .arg(&saved)
        .arg(&by_tag));
    let _ = Command::new("docker").args(["rmi", &by_tag]).output();
    let bytes = std::fs::read(&saved).unwrap();
    let truncated = write(reg.dir.path(), "truncated.tar", "");
    std::fs::write(&truncated, &bytes[..bytes.len() * 2 / 3]).unwrap();
    let other = reg.dir.path().join("other-agent");
    let o = keel_image(&other, &["import", truncated.to_str().unwrap()]);
    assert!(!o.status.success(), "a truncated archive is refused");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("truncated.tar"),
        "the message names the archive: {err}"
    );
    assert_eq!(
        keel_image_ok(&other, &["ls"]).lines().count(),
        1,
        "nothing imported"
    );
    let out = keel_image_ok(&other, &["import", saved.to_str().unwrap()]);
    assert!(out.contains(&by_tag), "{out}");
    let ls = keel_image_ok(&other, &["ls"]);
    assert!(
        ls.lines()
            .any(|l| l.starts_with(&repo) && l.contains(" v1 ")),
        "{ls}"
    );
}

fn pod_json(k: &util::kubectl::Kubectl, name: &str) -> Value {
    k.json(&["get", "pod", name])
}

fn waiting(pod: &Value) -> (String, String) {
    let w = &pod["status"]["containerStatuses"][0]["state"]["waiting"];
    (
        w["reason"].as_str().unwrap_or_default().to_string(),
        w["message"].as_str().unwrap_or_default().to_string(),
    )
}

fn events(k: &util::kubectl::Kubectl, pod: &str) -> Vec<(String, String)> {
    let sel = format!("involvedObject.name={pod}");
    k.json(&["get", "events", "--field-selector", &sel])["items"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|e| {
            (
                e["reason"].as_str().unwrap_or_default().to_string(),
                e["message"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

fn pod_manifest(name: &str, image: &str, policy: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\nspec:\n  containers:\n  - name: c\n    image: {image}\n    imagePullPolicy: {policy}\n"
    )
}

#[test]
fn pods_pull_from_a_loopback_registry_and_report_missing_images() {
    let Some(reg) = registry() else { return };
    let digest = reg.push("bb:v1");
    let up = Up::start(1, &["--runtime", "exec"]);
    let k = up.kubectl();
    let image = format!("{}/keel-test/bb:v1", reg.addr());
    let missing = format!("{}/keel-test/missing:v1", reg.addr());
    let dir = reg.dir.path();
    for (name, img, policy) in [
        ("pulled", image.as_str(), "IfNotPresent"),
        ("missing", missing.as_str(), "Always"),
        ("never", &format!("{}/keel-test/bb:v2", reg.addr()), "Never"),
    ] {
        let f = write(
            dir,
            &format!("{name}.yaml"),
            &pod_manifest(name, img, policy),
        );
        k.ok(&["apply", "-f", f.to_str().unwrap()]);
    }
    let log = || up.log();

    // Pulled from the registry; the exec runtime then says it cannot run it.
    wait_for(
        "the pulled image to reach the runtime",
        90,
        || {
            waiting(&pod_json(&k, "pulled"))
                .1
                .contains("needs the isolating runtime")
        },
        log,
    );
    let ev = events(&k, "pulled");
    assert!(
        ev.iter().any(|(r, m)| r == "Pulling" && m.contains(&image)),
        "{ev:?}"
    );
    assert!(
        ev.iter()
            .any(|(r, m)| r == "Pulled" && m.contains("Successfully pulled")),
        "{ev:?}"
    );

    // A second pod with IfNotPresent finds it present.
    let f = write(
        dir,
        "again.yaml",
        &pod_manifest("again", &image, "IfNotPresent"),
    );
    k.ok(&["apply", "-f", f.to_str().unwrap()]);
    wait_for(
        "the present image to be reused",
        60,
        || {
            events(&k, "again")
                .iter()
                .any(|(r, m)| r == "Pulled" && m.contains("already present on machine"))
        },
        log,
    );

    // A missing image: ErrImagePull, then ImagePullBackOff, with the reason.
    wait_for(
        "ImagePullBackOff",
        60,
        || waiting(&pod_json(&k, "missing")).0 == "ImagePullBackOff",
        log,
    );
    let (_, message) = waiting(&pod_json(&k, "missing"));
    assert!(message.contains("Back-off pulling image"), "{message}");
    assert!(message.contains("manifest unknown"), "{message}");
    let ev = events(&k, "missing");
    assert!(
        ev.iter()
            .any(|(r, m)| r == "Failed" && m == "Error: ErrImagePull"),
        "{ev:?}"
    );
    assert!(
        ev.iter()
            .any(|(r, m)| r == "Failed" && m.contains("manifest unknown")),
        "{ev:?}"
    );

    // Never: not present, so never pulled.
    wait_for(
        "ErrImageNeverPull",
        60,
        || waiting(&pod_json(&k, "never")).0 == "ErrImageNeverPull",
        log,
    );
    assert!(events(&k, "never").iter().all(|(r, _)| r != "Pulling"));

    // imagePullSecrets: the same image behind basic auth.
    let private = with_auth(&reg);
    let locked = format!("{}/keel-test/bb:v1", private.addr());
    k.ok(&[
        "create",
        "secret",
        "docker-registry",
        "regcred",
        &format!("--docker-server={}", private.addr()),
        "--docker-username=keel",
        "--docker-password=s3cret",
    ]);
    let f = write(dir, "anon.yaml", &pod_manifest("anon", &locked, "Always"));
    k.ok(&["apply", "-f", f.to_str().unwrap()]);
    let with_secret = format!(
        "{}  imagePullSecrets:\n  - name: regcred\n",
        pod_manifest("authed", &locked, "Always")
    );
    let f = write(dir, "authed.yaml", &with_secret);
    k.ok(&["apply", "-f", f.to_str().unwrap()]);
    wait_for(
        "the anonymous pull to be refused",
        60,
        || waiting(&pod_json(&k, "anon")).1.contains("Not authorized"),
        log,
    );
    wait_for(
        "the pull with the secret",
        60,
        || {
            events(&k, "authed")
                .iter()
                .any(|(r, m)| r == "Pulled" && m.contains("Successfully pulled"))
        },
        log,
    );

    // The image is in use: removing it (all its names) is refused, naming
    // the pod; removing one of its two tags only untags.
    let node = k.json(&["get", "nodes"])["items"][0]["metadata"]["name"]
        .as_str()
        .unwrap()
        .to_string();
    let root: PathBuf = up.data_dir().join("agents").join(node);
    let o = keel_image(&root, &["rm", &digest]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("in use by pod default/"), "{err}");
    assert!(keel_image_ok(&root, &["rm", &image]).contains("untagged"));
}

/// Store images run on the isolating runtime: one pulled from the loopback
/// registry and one only ever imported from `docker save` (policy Never),
/// each in its own rootfs: the image's busybox is there, the host's `/usr`
/// and `/home` are not.
#[test]
fn pulled_and_imported_images_run_on_the_isolating_runtime() {
    let missing = keel_node::runtime::isolated::missing_features(Path::new("/sys/fs/cgroup"));
    if !missing.is_empty() {
        eprintln!(
            "skipping: the keel runtime cannot run here: {}",
            missing.join(", ")
        );
        return;
    }
    let Some(reg) = registry() else { return };
    reg.push("run:v1");
    let pulled = format!("{}/keel-test/run:v1", reg.addr());
    reg.push("saved:v1");
    let saved_ref = format!("{}/keel-test/saved:v1", reg.addr());
    ok(Command::new("docker").args(["pull", &saved_ref]));
    let saved = reg.dir.path().join("run-saved.tar");
    ok(Command::new("docker")
        .args(["save", "-o"])
        .arg(&saved)
        .arg(&saved_ref));
    let _ = Command::new("docker").args(["rmi", &saved_ref]).output();

    let up = Up::start(1, &["--runtime", "keel"]);
    let k = up.kubectl();
    let log = || up.log();
    wait_for(
        "the node",
        60,
        || k.json(&["get", "nodes"])["items"][0]["metadata"]["name"].is_string(),
        log,
    );
    let node = k.json(&["get", "nodes"])["items"][0]["metadata"]["name"]
        .as_str()
        .unwrap()
        .to_string();
    let root: PathBuf = up.data_dir().join("agents").join(node);
    let out = keel_image_ok(&root, &["import", saved.to_str().unwrap()]);
    assert!(out.contains(&saved_ref), "{out}");

    let script = "/bin/busybox ls /; echo in-image; exec /bin/busybox sleep 3600";
    for (name, image, policy) in [
        ("pulled", pulled.as_str(), "IfNotPresent"),
        ("imported", saved_ref.as_str(), "Never"),
    ] {
        let manifest = format!(
            "{}    command: [\"/bin/busybox\", \"sh\", \"-c\", {script:?}]\n",
            pod_manifest(name, image, policy)
        );
        let f = write(reg.dir.path(), &format!("run-{name}.yaml"), &manifest);
        k.ok(&["apply", "-f", f.to_str().unwrap()]);
    }
    for name in ["pulled", "imported"] {
        wait_for(
            &format!("pod {name} running its image"),
            90,
            || {
                pod_json(&k, name)["status"]["phase"] == "Running"
                    && k.run(&["logs", name]).stdout.ends_with(b"in-image\n")
            },
            log,
        );
        let listing = String::from_utf8(k.run(&["logs", name]).stdout).unwrap();
        let entries: Vec<&str> = listing.lines().collect();
        assert!(entries.contains(&"bin"), "{listing}");
        assert!(
            !entries.contains(&"usr") && !entries.contains(&"home"),
            "the host's files are not in the pod: {listing}"
        );
        let image_id = pod_json(&k, name)["status"]["containerStatuses"][0]["imageID"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        assert!(image_id.contains("@sha256:"), "{image_id}");
    }
    assert!(events(&k, "imported").iter().all(|(r, _)| r != "Pulling"));
}

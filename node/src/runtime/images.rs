//! Image resolution for the exec runtime, and the built-in images.
//!
//! An image reference `[registry/]name[:tag][@digest]` resolves, in order, to:
//!
//! 1. a **built-in image**, whatever the tag (so `kubectl set image` between
//!    `keel/echo:v1` and `keel/echo:v2` is a real rollout):
//!    - `keel/echo`: HTTP server on `$POD_IP:$PORT` (defaults `0.0.0.0:8080`)
//!      answering every request with `pod=<POD_NAME> namespace=<POD_NAMESPACE>
//!      path=<path> image=<image>`; logs one line per request to stdout;
//!    - `keel/pause`: sleeps until SIGTERM/SIGINT, then exits 0;
//!    - `keel/host`: no entrypoint; the container's `command` runs with the
//!      host's own userland (`PATH` of the agent).
//!
//!    `echo` and `pause` run as `<keel binary> image <name>`; the runtime
//!    injects `POD_NAME`, `POD_NAMESPACE` (unless the spec sets them) and
//!    `KEEL_IMAGE` for built-in images.
//! 2. a **local image directory** `<image-dir>/<name>/<tag>/` (tag `latest` if
//!    absent; a leading `docker.io/` is ignored) holding either
//!    - `image.json`: `{"entrypoint": [...], "cmd": [...], "env": {"K": "V"},
//!      "workingDir": "/path"}` (all optional), or
//!    - an executable file `entrypoint` (used when there is no `image.json`).
//!
//!    A relative program path containing `/` (e.g. `./server`) is relative to
//!    the image directory, which is also the default working directory.
//! 3. otherwise [`RuntimeError::ImagePull`].
//!
//! Kubernetes rules apply: `command` replaces the entrypoint, `args` replaces
//! `cmd`. Environment: `PATH` (the agent's, or a standard default) and
//! `HOSTNAME=<pod name>`, then the image's env, then the spec's env (later wins).
//! Nothing else of the agent's environment leaks into containers.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Component, Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{ContainerSpec, Result, RuntimeError};

const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Exactly what the supervisor executes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessSpec {
    pub program: String,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    pub working_dir: PathBuf,
    pub log_path: PathBuf,
}

/// A parsed image reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRef {
    /// Repository path without registry `docker.io/`, e.g. `keel/echo`.
    pub name: String,
    pub tag: String,
}

impl ImageRef {
    pub fn parse(image: &str) -> Result<Self> {
        let bad = |reason: &str| RuntimeError::ImagePull {
            image: image.to_string(),
            reason: reason.to_string(),
        };
        let without_digest = image.split('@').next().unwrap_or_default();
        let last_slash = without_digest.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match without_digest[last_slash..].rfind(':') {
            Some(i) => without_digest.split_at(last_slash + i),
            None => (without_digest, ":latest"),
        };
        let name = name.strip_prefix("docker.io/").unwrap_or(name);
        let name = name.strip_prefix("library/").unwrap_or(name);
        let tag = &tag[1..];
        if name.is_empty() || tag.is_empty() {
            return Err(bad("invalid image reference"));
        }
        Ok(ImageRef {
            name: name.to_string(),
            tag: tag.to_string(),
        })
    }
}

/// `image.json` of a local image.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ImageConfig {
    #[serde(default)]
    entrypoint: Vec<String>,
    #[serde(default)]
    cmd: Vec<String>,
    #[serde(default)]
    env: BTreeMap<String, String>,
    #[serde(default)]
    working_dir: Option<PathBuf>,
}

/// An image resolved to its defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Image {
    entrypoint: Vec<String>,
    cmd: Vec<String>,
    env: Vec<(String, String)>,
    working_dir: PathBuf,
    /// Directory relative program paths are resolved against.
    root: Option<PathBuf>,
    builtin: bool,
}

/// Resolves image names to processes. Cheap to clone.
#[derive(Debug, Clone)]
pub struct ImageResolver {
    keel_binary: PathBuf,
    image_dir: Option<PathBuf>,
}

impl ImageResolver {
    /// `keel_binary` serves built-in images (`<keel_binary> image echo`);
    /// `image_dir` holds local images (none: only built-ins resolve).
    pub fn new(keel_binary: PathBuf, image_dir: Option<PathBuf>) -> Self {
        ImageResolver {
            keel_binary,
            image_dir,
        }
    }

    /// Turns a container spec into the process to execute, or
    /// [`RuntimeError::ImagePull`] / [`RuntimeError::InvalidSpec`].
    pub fn resolve(&self, spec: &ContainerSpec) -> Result<ProcessSpec> {
        let image = self.image(&ImageRef::parse(&spec.image)?, &spec.image)?;
        let mut argv = if spec.command.is_empty() {
            image.entrypoint.clone()
        } else {
            spec.command.clone()
        };
        let default_args = spec.command.is_empty() && spec.args.is_empty();
        argv.extend(if default_args {
            image.cmd.clone()
        } else {
            spec.args.clone()
        });
        if argv.is_empty() {
            return Err(RuntimeError::InvalidSpec(format!(
                "image {} has no entrypoint: the container needs a command",
                spec.image
            )));
        }
        let program = program_path(&argv.remove(0), image.root.as_deref());
        Ok(ProcessSpec {
            program,
            args: argv,
            env: container_env(spec, &image),
            working_dir: spec.working_dir.clone().unwrap_or(image.working_dir),
            log_path: spec.log_path.clone(),
        })
    }

    fn image(&self, r: &ImageRef, full: &str) -> Result<Image> {
        if let Some(image) = self.builtin(&r.name, full) {
            return Ok(image);
        }
        let not_found = |reason: String| RuntimeError::ImagePull {
            image: full.to_string(),
            reason,
        };
        let Some(root) = &self.image_dir else {
            return Err(not_found(
                "not a built-in image and no image directory".into(),
            ));
        };
        let relative = Path::new(&r.name).join(&r.tag);
        if relative
            .components()
            .any(|c| !matches!(c, Component::Normal(_)))
        {
            return Err(not_found("invalid image name".into()));
        }
        let dir = root.join(relative);
        load_local_image(&dir).map_err(|e| not_found(format!("{}: {e}", dir.display())))
    }

    fn builtin(&self, name: &str, full: &str) -> Option<Image> {
        let served = |which: &str| {
            vec![
                self.keel_binary.display().to_string(),
                crate::IMAGE_ARG.into(),
                which.into(),
            ]
        };
        let entrypoint = match name {
            "keel/echo" => served("echo"),
            "keel/pause" => served("pause"),
            "keel/host" => Vec::new(),
            _ => return None,
        };
        Some(Image {
            entrypoint,
            cmd: Vec::new(),
            env: vec![("KEEL_IMAGE".into(), full.into())],
            working_dir: PathBuf::from("/"),
            root: None,
            builtin: true,
        })
    }
}

fn load_local_image(dir: &Path) -> std::io::Result<Image> {
    let config_path = dir.join("image.json");
    let config = if config_path.is_file() {
        serde_json::from_slice::<ImageConfig>(&std::fs::read(&config_path)?)?
    } else if dir.join("entrypoint").is_file() {
        ImageConfig {
            entrypoint: vec!["./entrypoint".into()],
            ..ImageConfig::default()
        }
    } else {
        return Err(std::io::Error::new(
            std::io::ErrorKind::NotFound,
            "no image.json or entrypoint (image not found)",
        ));
    };
    Ok(Image {
        entrypoint: config.entrypoint,
        cmd: config.cmd,
        env: config.env.into_iter().collect(),
        working_dir: config.working_dir.unwrap_or_else(|| dir.to_path_buf()),
        root: Some(dir.to_path_buf()),
        builtin: false,
    })
}

/// A program with a `/` but not absolute is relative to the image root;
/// a bare name is looked up on the container's `PATH` at exec time.
fn program_path(program: &str, root: Option<&Path>) -> String {
    match root {
        Some(root) if program.contains('/') && !program.starts_with('/') => {
            let relative = program.strip_prefix("./").unwrap_or(program);
            root.join(relative).display().to_string()
        }
        _ => program.to_string(),
    }
}

fn container_env(spec: &ContainerSpec, image: &Image) -> Vec<(String, String)> {
    let path = std::env::var("PATH").unwrap_or_else(|_| DEFAULT_PATH.to_string());
    let mut env = vec![
        ("PATH".to_string(), path),
        ("HOSTNAME".into(), spec.pod_name.clone()),
    ];
    if image.builtin {
        env.push(("POD_NAME".into(), spec.pod_name.clone()));
        env.push(("POD_NAMESPACE".into(), spec.pod_namespace.clone()));
    }
    env.extend(image.env.iter().cloned());
    env.extend(spec.env.iter().cloned());
    dedup_last_wins(env)
}

fn dedup_last_wins(env: Vec<(String, String)>) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::with_capacity(env.len());
    for (k, v) in env {
        match out.iter_mut().find(|(name, _)| *name == k) {
            Some(slot) => slot.1 = v,
            None => out.push((k, v)),
        }
    }
    out
}

/// Entry point of a built-in image; never returns. The cli dispatches
/// `keel image <name> [args...]` here (see [`crate::run_internal_mode`]).
pub fn run_builtin_image(name: &str, _args: &[String]) -> ! {
    exit_on_termination_signals();
    let result = match name {
        "echo" => run_echo(),
        "pause" => run_pause(),
        other => Err(anyhow::anyhow!(
            "unknown built-in image {other:?} (echo, pause)"
        )),
    };
    if let Err(e) = result {
        eprintln!("keel image {name}: {e:#}");
        std::process::exit(1);
    }
    std::process::exit(0)
}

extern "C" fn exit_zero(_signal: libc::c_int) {
    // SAFETY: _exit is async-signal-safe.
    unsafe { libc::_exit(0) }
}

/// Built-in images stop cleanly (exit 0) on SIGTERM/SIGINT, like the real
/// pause container, so a graceful stop is visible as `Completed`.
fn exit_on_termination_signals() {
    for sig in [libc::SIGTERM, libc::SIGINT] {
        // SAFETY: the handler only calls _exit.
        unsafe { libc::signal(sig, exit_zero as *const () as libc::sighandler_t) };
    }
}

fn run_pause() -> anyhow::Result<()> {
    loop {
        // SAFETY: pause has no preconditions; it returns after a handled signal.
        unsafe { libc::pause() };
    }
}

/// Who the echo server says it is.
#[derive(Debug, Clone, Default)]
pub struct EchoIdentity {
    pub pod_name: String,
    pub pod_namespace: String,
    pub image: String,
}

impl EchoIdentity {
    fn from_env() -> Self {
        let var = |k: &str| std::env::var(k).unwrap_or_default();
        EchoIdentity {
            pod_name: var("POD_NAME"),
            pod_namespace: var("POD_NAMESPACE"),
            image: var("KEEL_IMAGE"),
        }
    }
}

fn run_echo() -> anyhow::Result<()> {
    let host = std::env::var("POD_IP").unwrap_or_else(|_| "0.0.0.0".to_string());
    let port = std::env::var("PORT").unwrap_or_else(|_| "8080".to_string());
    let listener = TcpListener::bind(format!("{host}:{port}"))?;
    println!("keel/echo listening on {}", listener.local_addr()?);
    serve_echo(listener, EchoIdentity::from_env())
}

/// Serves the echo protocol on `listener` until it fails; one thread per
/// connection, one request per connection. Public so tests can run it in-process.
pub fn serve_echo(listener: TcpListener, identity: EchoIdentity) -> anyhow::Result<()> {
    let identity = std::sync::Arc::new(identity);
    for stream in listener.incoming() {
        let stream = stream?;
        let identity = identity.clone();
        std::thread::spawn(move || {
            if let Err(e) = answer_echo(stream, &identity) {
                eprintln!("keel/echo: {e}");
            }
        });
    }
    Ok(())
}

fn answer_echo(stream: TcpStream, identity: &EchoIdentity) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    let mut header = String::new();
    while reader.read_line(&mut header)? > 2 {
        header.clear();
    }
    let mut parts = request_line.split_whitespace();
    let (method, path) = (parts.next().unwrap_or("GET"), parts.next().unwrap_or("/"));
    println!("{method} {path}");
    let body = echo_body(identity, path);
    let head = format!(
        "HTTP/1.1 200 OK\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    );
    let mut stream = stream;
    stream.write_all(head.as_bytes())?;
    if method != "HEAD" {
        stream.write_all(body.as_bytes())?;
    }
    stream.flush()
}

/// The echo response body: one line of `key=value` pairs.
pub fn echo_body(identity: &EchoIdentity, path: &str) -> String {
    format!(
        "pod={} namespace={} path={} image={}\n",
        identity.pod_name, identity.pod_namespace, path, identity.image
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(image: &str, command: &[&str], args: &[&str]) -> ContainerSpec {
        ContainerSpec {
            pod_uid: "uid".into(),
            pod_name: "web-1".into(),
            pod_namespace: "ns".into(),
            container_name: "c".into(),
            image: image.into(),
            command: command.iter().map(|s| s.to_string()).collect(),
            args: args.iter().map(|s| s.to_string()).collect(),
            env: vec![("A".into(), "1".into())],
            working_dir: None,
            log_path: "/tmp/x.log".into(),
            image_root: None,
            resources: Default::default(),
            mounts: Vec::new(),
            security: Default::default(),
        }
    }

    fn resolver(dir: Option<&Path>) -> ImageResolver {
        ImageResolver::new("/bin/keel".into(), dir.map(Path::to_path_buf))
    }

    #[test]
    fn parses_references() {
        let r = ImageRef::parse("keel/echo").unwrap();
        assert_eq!((r.name.as_str(), r.tag.as_str()), ("keel/echo", "latest"));
        let r = ImageRef::parse("docker.io/keel/echo:v2@sha256:abc").unwrap();
        assert_eq!((r.name.as_str(), r.tag.as_str()), ("keel/echo", "v2"));
        let r = ImageRef::parse("localhost:5000/app").unwrap();
        assert_eq!(
            (r.name.as_str(), r.tag.as_str()),
            ("localhost:5000/app", "latest")
        );
        assert!(ImageRef::parse("app:").is_err());
    }

    #[test]
    fn builtin_echo_runs_the_keel_binary_with_identity_env() {
        let p = resolver(None)
            .resolve(&spec("keel/echo:v2", &[], &[]))
            .unwrap();
        assert_eq!(p.program, "/bin/keel");
        assert_eq!(p.args, vec!["image", "echo"]);
        let env: BTreeMap<_, _> = p.env.into_iter().collect();
        assert_eq!(env["POD_NAME"], "web-1");
        assert_eq!(env["POD_NAMESPACE"], "ns");
        assert_eq!(env["KEEL_IMAGE"], "keel/echo:v2");
        assert_eq!(env["A"], "1");
    }

    #[test]
    fn host_image_needs_a_command() {
        let r = resolver(None);
        assert!(matches!(
            r.resolve(&spec("keel/host", &[], &[])),
            Err(RuntimeError::InvalidSpec(_))
        ));
        let p = r
            .resolve(&spec("keel/host", &["sh", "-c"], &["echo hi"]))
            .unwrap();
        assert_eq!(
            (p.program.as_str(), p.args.clone()),
            ("sh", vec!["-c".to_string(), "echo hi".into()])
        );
        assert_eq!(p.working_dir, PathBuf::from("/"));
    }

    #[test]
    fn unknown_image_is_an_image_pull_error() {
        let dir = tempfile::tempdir().unwrap();
        for r in [resolver(None), resolver(Some(dir.path()))] {
            let err = r.resolve(&spec("nginx:1.25", &[], &[])).unwrap_err();
            assert!(matches!(err, RuntimeError::ImagePull { .. }), "{err}");
        }
        let err = resolver(Some(dir.path()))
            .resolve(&spec("../etc:x", &[], &[]))
            .unwrap_err();
        assert!(matches!(err, RuntimeError::ImagePull { .. }), "{err}");
    }

    #[test]
    fn local_image_json_applies_kubernetes_override_rules() {
        let dir = tempfile::tempdir().unwrap();
        let image = dir.path().join("acme/app/v1");
        std::fs::create_dir_all(&image).unwrap();
        std::fs::write(
            image.join("image.json"),
            r#"{"entrypoint": ["./server"], "cmd": ["--port", "80"], "env": {"A": "image", "B": "2"}}"#,
        )
        .unwrap();
        let r = resolver(Some(dir.path()));
        let p = r.resolve(&spec("acme/app:v1", &[], &[])).unwrap();
        assert_eq!(p.program, image.join("server").display().to_string());
        assert_eq!(p.args, vec!["--port", "80"]);
        assert_eq!(p.working_dir, image);
        let env: BTreeMap<_, _> = p.env.into_iter().collect();
        assert_eq!((env["A"].as_str(), env["B"].as_str()), ("1", "2"));
        assert!(!env.contains_key("POD_NAME"));
        let p = r
            .resolve(&spec("acme/app:v1", &[], &["--port", "81"]))
            .unwrap();
        assert_eq!(p.args, vec!["--port", "81"]);
        let p = r
            .resolve(&spec("acme/app:v1", &["/bin/true"], &[]))
            .unwrap();
        assert_eq!((p.program.as_str(), p.args.len()), ("/bin/true", 0));
    }

    #[test]
    fn local_image_with_entrypoint_file() {
        let dir = tempfile::tempdir().unwrap();
        let image = dir.path().join("tool/latest");
        std::fs::create_dir_all(&image).unwrap();
        std::fs::write(image.join("entrypoint"), "#!/bin/sh\necho tool\n").unwrap();
        let p = resolver(Some(dir.path()))
            .resolve(&spec("tool", &[], &[]))
            .unwrap();
        assert_eq!(p.program, image.join("entrypoint").display().to_string());
    }

    #[test]
    fn echo_answers_with_identity_and_path_in_process() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let identity = EchoIdentity {
            pod_name: "p".into(),
            pod_namespace: "n".into(),
            image: "keel/echo".into(),
        };
        std::thread::spawn(move || serve_echo(listener, identity));
        let mut conn = TcpStream::connect(addr).unwrap();
        conn.write_all(b"GET /hello HTTP/1.1\r\nhost: x\r\n\r\n")
            .unwrap();
        let mut response = String::new();
        std::io::Read::read_to_string(&mut conn, &mut response).unwrap();
        assert!(response.starts_with("HTTP/1.1 200 OK"), "{response}");
        assert!(
            response.ends_with("pod=p namespace=n path=/hello image=keel/echo\n"),
            "{response}"
        );
    }
}

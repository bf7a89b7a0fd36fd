//! keel-node: the agent side of keel (the kubelet's job).
//!
//! [`agent`] is the node agent (registration, heartbeats, the pod watch,
//! the per-pod sync loop, probes, volumes, status, logs); [`agent::run`] is
//! its entry point; [`proxy`] is the Service proxy, [`dns`] the cluster DNS
//! server and [`ingress`] the built-in Ingress router every agent runs;
//! [`podnet`] is netns mode (a network namespace per pod); [`hollow`] runs
//! simulated agents (no runtime) for scale tests.
//! Below it is the runtime layer ([`runtime`]): the
//! [`runtime::Runtime`] trait and the `exec` runtime, in which containers are
//! supervised child processes of the agent and image names resolve to built-in
//! images served by the keel binary itself or to a local image directory.
//!
//! The keel binary must call [`run_internal_mode`] first thing in `main`: the
//! exec runtime re-executes the binary as a container supervisor
//! (`keel __supervise <dir>`) and as built-in images (`keel image echo`).

pub mod agent;
pub mod dns;
pub mod hollow;
pub mod image;
pub mod ingress;
pub mod podnet;
pub mod proxy;
pub mod runtime;

pub use runtime::images::run_builtin_image;
pub use runtime::supervisor::run_supervisor;

/// First argument selecting supervisor mode: `<keel> __supervise <container-dir>`.
pub const SUPERVISE_ARG: &str = "__supervise";
/// First argument selecting a built-in image: `<keel> image <echo|pause> [args...]`.
pub const IMAGE_ARG: &str = "image";

/// Runs an internal mode if `args` (the full argv, program name first) selects
/// one, and then never returns; otherwise returns so the caller parses its own
/// command line.
///
/// Why here: the exec runtime needs an executable for supervisors and built-in
/// images, and shipping one binary means that executable is keel itself.
pub fn run_internal_mode(args: &[String]) {
    match args.get(1).map(String::as_str) {
        Some(SUPERVISE_ARG) => match args.get(2) {
            Some(dir) => run_supervisor(std::path::Path::new(dir)),
            None => exit_usage("missing container directory"),
        },
        Some(runtime::isolated::INIT_ARG) => match args.get(2) {
            Some(dir) => runtime::isolated::init::run_init(std::path::Path::new(dir)),
            None => exit_usage("missing container directory"),
        },
        Some(runtime::isolated::podpid::PAUSE_ARG) => match args.get(2) {
            Some(root) => runtime::isolated::podpid::run_pause(std::path::Path::new(root)),
            None => exit_usage("missing pause root directory"),
        },
        Some(runtime::isolated::NSENTER_ARG) => match (args.get(2), args.get(3)) {
            (Some(dir), Some(sep)) if sep == "--" => {
                runtime::isolated::nsenter::run_nsenter(std::path::Path::new(dir), &args[4..])
            }
            _ => exit_usage("usage: __nsenter <container-dir> -- <command...>"),
        },
        // `keel image import|ls|rm|pull` are CLI commands; only the
        // built-in image names are served from here.
        Some(IMAGE_ARG) => {
            if let Some(name @ ("echo" | "pause")) = args.get(2).map(String::as_str) {
                run_builtin_image(name, &args[3..])
            }
        }
        _ => {}
    }
}

fn exit_usage(message: &str) -> ! {
    eprintln!("keel: {message}");
    std::process::exit(2)
}

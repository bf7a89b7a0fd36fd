//! Stand-in for the `keel` binary in keel-node's tests: it dispatches the
//! internal modes (container supervisor, built-in images) exactly like the cli
//! does, and nothing else.

fn main() {
    let args: Vec<String> = std::env::args().collect();
    keel_node::run_internal_mode(&args);
    eprintln!(
        "usage: {} {} <container-dir> | {} <echo|pause> [args...]",
        args.first()
            .map(String::as_str)
            .unwrap_or("keel-node-images"),
        keel_node::SUPERVISE_ARG,
        keel_node::IMAGE_ARG
    );
    std::process::exit(2);
}

//! Compiles keel's .proto files with `protox` (pure Rust, no `protoc` needed)
//! and generates prost messages plus tonic clients and servers.

const PROTOS: [&str; 4] = [
    "proto/mvccpb/kv.proto",
    "proto/etcdserverpb/rpc.proto",
    "proto/keel/raft.proto",
    "proto/keel/node.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=proto");
    for proto in PROTOS {
        println!("cargo:rerun-if-changed={proto}");
    }

    let fds = protox::compile(PROTOS, ["proto"])?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(fds)?;
    Ok(())
}

//! Generates the `logdog.Services` client and server from `proto/` with protox
//! (a pure-Rust protobuf compiler), so no system `protoc` is needed.

use std::path::PathBuf;

const FILES: [&str; 4] = [
    "logdog/services/v1/service.proto",
    "logdog/services/v1/state.proto",
    "logdog/services/v1/tasks.proto",
    "logdog/logpb/log.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?).join("../../proto");
    let files: Vec<PathBuf> = FILES.iter().map(|f| root.join(f)).collect();
    for f in &files {
        println!("cargo:rerun-if-changed={}", f.display());
    }
    let fds = protox::compile(&files, [&root])?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(fds)?;
    Ok(())
}

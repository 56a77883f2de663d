//! Compiles `strata/v1/*.proto` (the public API) into prost messages and tonic clients and
//! servers, and writes their file descriptor set (for gRPC reflection); then the internal
//! node-to-node protocol, `strata/internal/v1/*.proto`, on its own: it stays out of that
//! descriptor set, so the client port's reflection never lists it, and its `bytes` fields are
//! `bytes::Bytes`, so a snapshot's chunks are slices of one buffer rather than copies.
//!
//! protoc comes from `protoc-bin-vendored` and is handed to prost-build directly. `PROTOC` is
//! never set, here or globally: raft's own build accepts only a protoc of major version 3 and
//! would panic on the vendored one.

use std::path::PathBuf;

const PROTOS: &[&str] = &[
    "strata/v1/common.proto",
    "strata/v1/kv.proto",
    "strata/v1/txn.proto",
    "strata/v1/admin.proto",
];

const INTERNAL_PROTOS: &[&str] = &[
    "strata/internal/v1/raft.proto",
    "strata/internal/v1/shard.proto",
    "strata/internal/v1/membership.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=strata");
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    let mut config = tonic_prost_build::Config::new();
    config.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .file_descriptor_set_path(out_dir.join("strata_v1_descriptor.bin"))
        .compile_with_config(config, PROTOS, &["."])?;

    let internal_dir = out_dir.join("internal");
    std::fs::create_dir_all(&internal_dir)?;
    let mut config = tonic_prost_build::Config::new();
    config.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .bytes(".strata.internal.v1")
        // The membership service passes the public Admin messages on unchanged.
        .extern_path(".strata.v1", "crate::v1")
        // Its own directory: it imports admin.proto, whose generated file must not replace
        // the public one.
        .out_dir(&internal_dir)
        .compile_with_config(config, INTERNAL_PROTOS, &["."])?;
    Ok(())
}

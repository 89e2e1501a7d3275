//! Compiles every `.proto` file under `snapkeeper/` with protox (pure Rust: no `protoc`, no network),
//! writes the encoded descriptor set to `OUT_DIR/descriptor.bin` for server reflection, and generates
//! tonic clients and servers from the same descriptors.
//!
//! The include root is this crate's directory (`proto/` in the workspace), so files import each
//! other as `snapkeeper/<svc>/v1/<file>.proto`; `google/protobuf/*` come bundled with protox.

use std::path::{Path, PathBuf};

use prost::Message;

/// Directory (relative to the include root) that holds our packages.
const PACKAGES_DIR: &str = "snapkeeper";

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let include_root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?);
    // A directory makes cargo rerun on any change below it, new files included.
    println!("cargo:rerun-if-changed={PACKAGES_DIR}");

    let mut files = Vec::new();
    collect_proto_files(&include_root.join(PACKAGES_DIR), &mut files)?;
    files.sort();

    let descriptors = protox::compile(&files, [&include_root])?;
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(out_dir.join("descriptor.bin"), descriptors.encode_to_vec())?;

    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        // Server traits get default bodies answering `Unimplemented`, so a service crate can
        // implement its RPCs one by one against the final contract.
        .generate_default_stubs(true)
        .compile_fds(descriptors)?;
    Ok(())
}

/// Appends every `.proto` file below `dir` (recursively) to `files`.
fn collect_proto_files(dir: &Path, files: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            collect_proto_files(&path, files)?;
        } else if path.extension().is_some_and(|ext| ext == "proto") {
            files.push(path);
        }
    }
    Ok(())
}

//! Compiles every CUDA kernel source (`src/**/*.cu`) as host C++ with our emulator header
//! (`cuda-emu/cuda_emu.h`), into a static library the emulated test device calls through FFI.
//! The GPU compiles the same sources at run time with NVRTC; nothing here needs CUDA.

use std::path::{Path, PathBuf};

fn cuda_sources(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|e| e.expect("directory entry").path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            cuda_sources(&path, out);
        } else if matches!(
            path.extension().and_then(|e| e.to_str()),
            Some("cu" | "cuh")
        ) {
            println!("cargo:rerun-if-changed={}", path.display());
            if path.extension().is_some_and(|e| e == "cu") {
                out.push(path);
            }
        }
    }
}

fn main() {
    println!("cargo:rerun-if-changed=cuda-emu/cuda_emu.h");
    println!("cargo:rerun-if-changed=src");
    let mut sources = Vec::new();
    cuda_sources(Path::new("src"), &mut sources);
    let mut build = cc::Build::new();
    build
        .cpp(true)
        .std("c++20")
        .define("CUDA_EMU", None)
        .include("cuda-emu")
        .include("src/cuda")
        .include("src/philox")
        .flag("-pthread")
        .flag("-x")
        .flag("c++")
        .warnings(false);
    build.files(&sources);
    build.compile("cuda_emu_kernels");
    println!("cargo:rustc-link-lib=pthread");
}

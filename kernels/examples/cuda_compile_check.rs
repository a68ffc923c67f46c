//! Compiles every kernel module with NVRTC for each architecture given, the way the GPU backend
//! does at run time (same include expansion, same options), and writes `<module>.<arch>.ptx`
//! into the output folder. Any compile error fails with NVRTC's log.
//!
//! Usage: cuda_compile_check OUT_DIR ARCH... (e.g. sm_80 sm_90); needs libnvrtc on
//! LD_LIBRARY_PATH. `scripts/cuda-compile-check.sh` installs it and runs `ptxas -v` after.

use std::path::PathBuf;
use std::process::ExitCode;

use kernels::cuda::gpu;
use kernels::modules::MODULES;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some((out, archs)) = args.split_first().filter(|(_, a)| !a.is_empty()) else {
        eprintln!("usage: cuda_compile_check OUT_DIR ARCH...");
        return ExitCode::from(2);
    };
    let out = PathBuf::from(out);
    if let Err(e) = std::fs::create_dir_all(&out) {
        eprintln!("creating {}: {e}", out.display());
        return ExitCode::FAILURE;
    }
    let mut failed = 0;
    for arch in archs {
        let arch: &'static str = Box::leak(arch.clone().into_boxed_str());
        for m in MODULES {
            match gpu::compile_ptx(m, arch) {
                Ok(ptx) => {
                    let path = out.join(format!("{}.{arch}.ptx", m.name));
                    if let Err(e) = std::fs::write(&path, ptx.to_src()) {
                        eprintln!("writing {}: {e}", path.display());
                        failed += 1;
                    }
                }
                Err(e) => {
                    eprintln!("{e}");
                    failed += 1;
                }
            }
        }
    }
    println!(
        "compiled {} modules x {} architectures, {failed} failed",
        MODULES.len(),
        archs.len()
    );
    if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

//! The CUDA C sources, embedded in the binary, and the `#include` expansion NVRTC needs (it
//! compiles one string; our headers are inlined into it by name).

/// Headers a kernel source may `#include "name"`.
pub const HEADERS: &[(&str, &str)] = &[
    ("common.cuh", include_str!("common.cuh")),
    ("philox.cuh", include_str!("../philox/philox.cuh")),
    ("tiled_gemm.cuh", include_str!("tiled_gemm.cuh")),
    ("mma.cuh", include_str!("mma.cuh")),
    ("tc_gemm.cuh", include_str!("tc_gemm.cuh")),
];

/// One kernel source file: a CUDA module, named after its op.
#[derive(Debug, Clone, Copy)]
pub struct Module {
    pub name: &'static str,
    /// Path under `kernels/src/`.
    pub path: &'static str,
    pub source: &'static str,
}

/// Every kernel source of the crate (the compile check refuses a `.cu` file missing here).
pub const MODULES: &[Module] = &[
    Module {
        name: "relu",
        path: "relu/relu.cu",
        source: include_str!("../relu/relu.cu"),
    },
    Module {
        name: "add",
        path: "add/add.cu",
        source: include_str!("../add/add.cu"),
    },
    Module {
        name: "dropout",
        path: "dropout/dropout.cu",
        source: include_str!("../dropout/dropout.cu"),
    },
    Module {
        name: "adam",
        path: "adam/adam.cu",
        source: include_str!("../adam/adam.cu"),
    },
    Module {
        name: "sgd",
        path: "sgd/sgd.cu",
        source: include_str!("../sgd/sgd.cu"),
    },
    Module {
        name: "grad_norm",
        path: "grad_norm/grad_norm.cu",
        source: include_str!("../grad_norm/grad_norm.cu"),
    },
    Module {
        name: "softmax_ce",
        path: "softmax_ce/softmax_ce.cu",
        source: include_str!("../softmax_ce/softmax_ce.cu"),
    },
    Module {
        name: "maxpool",
        path: "maxpool/maxpool.cu",
        source: include_str!("../maxpool/maxpool.cu"),
    },
    Module {
        name: "dropblock",
        path: "dropblock/dropblock.cu",
        source: include_str!("../dropblock/dropblock.cu"),
    },
    Module {
        name: "batchnorm",
        path: "batchnorm/batchnorm.cu",
        source: include_str!("../batchnorm/batchnorm.cu"),
    },
    Module {
        name: "gemm",
        path: "gemm/gemm.cu",
        source: include_str!("../gemm/gemm.cu"),
    },
    Module {
        name: "gemm_tc",
        path: "gemm/gemm_tc.cu",
        source: include_str!("../gemm/gemm_tc.cu"),
    },
    Module {
        name: "conv2d",
        path: "conv2d/conv2d.cu",
        source: include_str!("../conv2d/conv2d.cu"),
    },
    Module {
        name: "conv2d_tc",
        path: "conv2d/conv2d_tc.cu",
        source: include_str!("../conv2d/conv2d_tc.cu"),
    },
    Module {
        name: "precision",
        path: "precision/precision.cu",
        source: include_str!("../precision/precision.cu"),
    },
    Module {
        name: "emu_harness",
        path: "cuda/testdata/emu_harness.cu",
        source: include_str!("testdata/emu_harness.cu"),
    },
];

/// The module named `name`.
pub fn module(name: &str) -> Option<&'static Module> {
    MODULES.iter().find(|m| m.name == name)
}

/// `source` with every `#include "x"` of a header in [`HEADERS`] replaced by the header's text,
/// each header once (they all start with `#pragma once`); other lines are left as they are.
pub fn expand_includes(source: &str) -> Result<String, String> {
    let mut out = String::new();
    let mut seen = Vec::new();
    expand_into(source, &mut out, &mut seen)?;
    Ok(out)
}

fn expand_into(source: &str, out: &mut String, seen: &mut Vec<&'static str>) -> Result<(), String> {
    for line in source.lines() {
        let trimmed = line.trim();
        if let Some(rest) = trimmed.strip_prefix("#include") {
            let name = rest.trim().trim_matches('"');
            if rest.trim().starts_with('"') {
                let (hname, text) = HEADERS
                    .iter()
                    .find(|(h, _)| *h == name)
                    .ok_or_else(|| format!("#include \"{name}\": not one of our headers"))?;
                if !seen.contains(hname) {
                    seen.push(hname);
                    expand_into(text, out, seen)?;
                }
                continue;
            }
        }
        if trimmed != "#pragma once" {
            out.push_str(line);
            out.push('\n');
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_cu_file_of_the_crate_is_registered() {
        fn walk(dir: &std::path::Path, out: &mut Vec<String>, root: &std::path::Path) {
            for e in std::fs::read_dir(dir).unwrap() {
                let p = e.unwrap().path();
                if p.is_dir() {
                    walk(&p, out, root);
                } else if p.extension().is_some_and(|x| x == "cu") {
                    out.push(
                        p.strip_prefix(root)
                            .unwrap()
                            .to_string_lossy()
                            .replace('\\', "/"),
                    );
                }
            }
        }
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut on_disk = Vec::new();
        walk(&root, &mut on_disk, &root);
        on_disk.sort();
        let mut registered: Vec<String> = MODULES.iter().map(|m| m.path.to_string()).collect();
        registered.sort();
        assert_eq!(on_disk, registered);
    }

    #[test]
    fn includes_expand_once_and_unknown_ones_are_refused() {
        let src = expand_includes(module("dropout").unwrap().source).unwrap();
        assert_eq!(src.matches("struct MaskKey {").count(), 1);
        assert_eq!(
            src.matches("__device__ __forceinline__ T warp_sum(T v)")
                .count(),
            1
        );
        assert!(!src.contains("#include \""));
        let e = expand_includes("#include \"nope.cuh\"\n").unwrap_err();
        assert_eq!(e, "#include \"nope.cuh\": not one of our headers");
    }
}

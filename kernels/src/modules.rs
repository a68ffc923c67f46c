//! Every CUDA module of the crate, one per op (each op's `cuda::MODULE`), and the harness's: what
//! the NVRTC compile check (`examples/cuda_compile_check.rs`) compiles. The backend (`cuda/`)
//! needs no such list: a kernel carries its own module.

use crate::cuda::source::{self, Module};
use crate::{
    adam, add, batchnorm, conv2d, dropblock, dropout, gemm, grad_norm, maxpool, precision, relu,
    sgd, softmax_ce,
};

/// Every kernel source of the crate (a test refuses a `.cu` file missing here).
pub const MODULES: &[Module] = &[
    relu::cuda::MODULE,
    add::cuda::MODULE,
    dropout::cuda::MODULE,
    adam::cuda::MODULE,
    sgd::cuda::MODULE,
    grad_norm::cuda::MODULE,
    softmax_ce::cuda::MODULE,
    maxpool::cuda::MODULE,
    dropblock::cuda::MODULE,
    batchnorm::cuda::MODULE,
    gemm::cuda::MODULE,
    gemm::tc::MODULE,
    conv2d::cuda::MODULE,
    conv2d::tc::MODULE,
    precision::cuda::MODULE,
    source::HARNESS,
];

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cuda::source::{compare_with_c, expand_includes};

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
        let src = dropout::cuda::MODULE.expanded().unwrap();
        assert_eq!(src.matches("struct MaskKey {").count(), 1);
        assert_eq!(
            src.matches("__device__ __forceinline__ T warp_sum(T v)")
                .count(),
            1
        );
        assert!(!src.contains("#include \""));
        let e = expand_includes("#include \"nope.cuh\"\n", &[]).unwrap_err();
        assert_eq!(e, "#include \"nope.cuh\": not one of our headers");
    }

    /// Each module's Rust parameter structs against the C structs of its source, field by field;
    /// and every struct a kernel of the source takes (`EMU_KERNEL(name, Params)`) has its twin.
    #[test]
    fn every_parameter_struct_mirrors_its_c_struct() {
        for m in MODULES {
            let src = m.expanded().unwrap();
            for layout in m.params {
                if let Err(e) = compare_with_c(&src, layout) {
                    panic!("{}: {e}", m.path);
                }
            }
            let kernels: Vec<&str> = src
                .lines()
                .map(|l| l.trim_matches(|c: char| c.is_whitespace() || c == '\\'))
                .filter(|l| l.starts_with("EMU_KERNEL("))
                .collect();
            assert!(!kernels.is_empty(), "{}: no EMU_KERNEL line", m.path);
            for line in kernels {
                let taken = line.trim_end_matches(')').rsplit(", ").next().unwrap();
                assert!(
                    m.params.iter().any(|p| p.c_name == taken),
                    "{}: {line}: no Rust twin of {taken} in the module's params",
                    m.path
                );
            }
        }
    }
}

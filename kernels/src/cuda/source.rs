//! CUDA C sources as the backend sees them: a [`Module`] (one `.cu` file, embedded in the
//! binary, named after its op), the headers a module may include, and the `#include` expansion
//! NVRTC needs (it compiles one string; our headers are inlined into it by name).
//!
//! Each op's `cuda.rs` declares its module; `crate::modules` lists them all.

/// A header a kernel source may `#include "name"`.
#[derive(Debug, Clone, Copy)]
pub struct Header {
    pub name: &'static str,
    pub source: &'static str,
}

/// The conventions every kernel source includes first (common.cuh).
pub const COMMON_CUH: Header = Header {
    name: "common.cuh",
    source: include_str!("common.cuh"),
};

/// The shared-memory tiled product of the GEMM and the convolutions (tiled_gemm.cuh).
pub const TILED_GEMM_CUH: Header = Header {
    name: "tiled_gemm.cuh",
    source: include_str!("tiled_gemm.cuh"),
};

/// The backend's own headers, which any module may include.
pub const HEADERS: &[Header] = &[COMMON_CUH, TILED_GEMM_CUH];

/// One kernel source file: a CUDA module, named after its op.
#[derive(Debug, Clone, Copy)]
pub struct Module {
    pub name: &'static str,
    /// Path under `kernels/src/`.
    pub path: &'static str,
    pub source: &'static str,
    /// The headers it includes from op folders (philox.cuh), besides the backend's [`HEADERS`].
    pub headers: &'static [Header],
}

impl Module {
    /// The source NVRTC compiles: [`expand_includes`] with this module's headers.
    pub fn expanded(&self) -> Result<String, String> {
        expand_includes(self.source, self.headers)
    }
}

/// The kernels that test the test harness itself (`testdata/emu_harness.cu`): wrong on purpose,
/// or there to show that the emulator's barrier and shuffles behave as a GPU's.
pub const HARNESS: Module = Module {
    name: "emu_harness",
    path: "cuda/testdata/emu_harness.cu",
    source: include_str!("testdata/emu_harness.cu"),
    headers: &[],
};

/// `source` with every `#include "x"` of a header in [`HEADERS`] or `headers` replaced by the
/// header's text, each header once (they all start with `#pragma once`); other lines are left as
/// they are.
pub fn expand_includes(source: &str, headers: &[Header]) -> Result<String, String> {
    let mut out = String::new();
    let mut seen = Vec::new();
    expand_into(source, headers, &mut out, &mut seen)?;
    Ok(out)
}

fn expand_into(
    source: &str,
    headers: &[Header],
    out: &mut String,
    seen: &mut Vec<&'static str>,
) -> Result<(), String> {
    for line in source.lines() {
        let trimmed = line.trim();
        if let Some(rest) = trimmed.strip_prefix("#include") {
            let name = rest.trim().trim_matches('"');
            if rest.trim().starts_with('"') {
                let header = HEADERS
                    .iter()
                    .chain(headers)
                    .find(|h| h.name == name)
                    .ok_or_else(|| format!("#include \"{name}\": not one of our headers"))?;
                if !seen.contains(&header.name) {
                    seen.push(header.name);
                    expand_into(header.source, headers, out, seen)?;
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

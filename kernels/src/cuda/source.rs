//! CUDA C sources as the backend sees them: a [`Module`] (one `.cu` file, embedded in the
//! binary, named after its op), the headers a module may include, and the `#include` expansion
//! NVRTC needs (it compiles one string; our headers are inlined into it by name).
//!
//! Each op's `cuda.rs` declares its module; `crate::modules` lists them all.

use super::launch::{params, KernelParams, StructLayout};

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

/// The tensor-core instructions of sm_80 (mma.sync, ldmatrix, cp.async, the TF32 and BF16
/// conversions) as device functions: inline PTX, or the emulator's model (mma.cuh).
pub const MMA_CUH: Header = Header {
    name: "mma.cuh",
    source: include_str!("mma.cuh"),
};

/// The tensor-core tiled product of the tensor-core GEMMs and convolutions (tc_gemm.cuh).
pub const TC_GEMM_CUH: Header = Header {
    name: "tc_gemm.cuh",
    source: include_str!("tc_gemm.cuh"),
};

/// The backend's own headers, which any module may include.
pub const HEADERS: &[Header] = &[COMMON_CUH, TILED_GEMM_CUH, MMA_CUH, TC_GEMM_CUH];

/// One kernel source file: a CUDA module, named after its op.
#[derive(Debug, Clone, Copy)]
pub struct Module {
    pub name: &'static str,
    /// Path under `kernels/src/`.
    pub path: &'static str,
    pub source: &'static str,
    /// The headers it includes from op folders (philox.cuh), besides the backend's [`HEADERS`].
    pub headers: &'static [Header],
    /// The Rust twins of its C parameter structs (and of the structs nested in them), which the
    /// test of `crate::modules` compares field by field with the C source.
    pub params: &'static [StructLayout],
}

/// The [`Module`] of op `$op`, in an op's `cuda.rs`: its source `src/$op/$op.cu` (embedded), the
/// headers it includes from op folders, and the Rust twins of its parameter structs (those
/// nested in others too), e.g. `module!(relu, headers: [], params: [ReluForwardParams])`.
macro_rules! module {
    ($op:ident, headers: [$($header:expr),* $(,)?], params: [$($params:ty),* $(,)?] $(,)?) => {
        $crate::cuda::source::Module {
            name: stringify!($op),
            path: concat!(stringify!($op), "/", stringify!($op), ".cu"),
            source: include_str!(concat!(stringify!($op), ".cu")),
            headers: &[$($header),*],
            params: &[$(<$params as $crate::cuda::KernelParams>::LAYOUT),*],
        }
    };
}
pub(crate) use module;

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
    params: &[
        HarnessParams::LAYOUT,
        MmaHarnessParams::LAYOUT,
        LdmatrixHarnessParams::LAYOUT,
    ],
};

params! {
    /// emu_harness.cu `HarnessParams`: x: (n) -> y.
    pub struct HarnessParams {
        pub y: u64,
        pub x: u64,
        pub n: u32,
    }

    /// emu_harness.cu `MmaHarnessParams`: a (16, K), b (K, 8), c (16, 8) -> d (16, 8), row-major.
    pub struct MmaHarnessParams {
        pub d: u64,
        pub a: u64,
        pub b: u64,
        pub c: u64,
    }

    /// emu_harness.cu `LdmatrixHarnessParams`: x (4 matrices of 8 x 8 16-bit values) -> out (32
    /// lanes x 14 registers).
    pub struct LdmatrixHarnessParams {
        pub out: u64,
        pub x: u64,
    }
}

/// The value of `#define name <decimal>` in `source` (a line of its own), at compile time: a
/// constant that Rust and C share is written once, in the C, and Rust reads it from the source
/// it embeds. The build fails when there is no such line.
pub const fn define(source: &str, name: &str) -> u32 {
    const KEY: &[u8] = b"#define ";
    let (s, name) = (source.as_bytes(), name.as_bytes());
    let mut i = 0;
    while i + KEY.len() + name.len() < s.len() {
        let at_line_start = i == 0 || s[i - 1] == b'\n';
        let value = i + KEY.len() + name.len();
        if at_line_start
            && starts_with_at(s, i, KEY)
            && starts_with_at(s, i + KEY.len(), name)
            && s[value] == b' '
        {
            let mut j = value;
            while j < s.len() && s[j] == b' ' {
                j += 1;
            }
            let (mut v, start) = (0u32, j);
            while j < s.len() && s[j].is_ascii_digit() {
                v = v * 10 + (s[j] - b'0') as u32;
                j += 1;
            }
            assert!(j > start, "the #define is not a decimal number");
            return v;
        }
        i += 1;
    }
    panic!("the kernel source has no such #define")
}

/// Whether `s[at..]` starts with `prefix`.
const fn starts_with_at(s: &[u8], at: usize, prefix: &[u8]) -> bool {
    let mut k = 0;
    while k < prefix.len() {
        if at + k >= s.len() || s[at + k] != prefix[k] {
            return false;
        }
        k += 1;
    }
    true
}

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

/// Where the Rust twin `rust` of a C struct differs from the C struct of the same name in
/// `source` (field names, C types, offsets, total size), or `Ok`. The C layout is computed from
/// the declarations with the C rules (each field at a multiple of its alignment, the size a
/// multiple of the largest), for the types our kernels use.
pub fn compare_with_c(source: &str, rust: &StructLayout) -> Result<(), String> {
    let c = c_layout(source, rust.c_name)?;
    let what = rust.c_name;
    let rust_fields: Vec<_> = rust.fields.iter().map(|f| (f.name, f.c_type)).collect();
    let c_fields: Vec<_> = c
        .fields
        .iter()
        .map(|f| (f.name.as_str(), f.c_type.as_str()))
        .collect();
    if rust_fields != c_fields {
        return Err(format!(
            "{what}: Rust has fields {rust_fields:?}, C {c_fields:?}"
        ));
    }
    for (r, f) in rust.fields.iter().zip(&c.fields) {
        if (r.offset, r.size) != (f.offset, f.size) {
            return Err(format!(
                "{what}.{}: Rust puts {} bytes at {}, C {} at {}",
                r.name, r.size, r.offset, f.size, f.offset
            ));
        }
    }
    if rust.size != c.size {
        return Err(format!(
            "{what}: Rust has {} bytes, C {}",
            rust.size, c.size
        ));
    }
    Ok(())
}

/// A C struct as the C compiler lays it out.
struct CLayout {
    fields: Vec<CField>,
    size: usize,
    align: usize,
}

struct CField {
    name: String,
    /// `pointer` for any pointer, else the type as written without `const`.
    c_type: String,
    offset: usize,
    size: usize,
}

/// The layout of `struct name { ... };` in `source`: declarations `type a, *b;` with `//`
/// comments; the field types pointers, the fixed-size scalars or structs defined in `source`.
fn c_layout(source: &str, name: &str) -> Result<CLayout, String> {
    let open = format!("struct {name} {{");
    let start = source
        .lines()
        .position(|l| l.trim_start().starts_with(&open))
        .ok_or_else(|| format!("no `{open}` in the source"))?;
    let mut body = String::new();
    for line in source.lines().skip(start + 1) {
        if line.trim_start().starts_with("};") {
            break;
        }
        body.push_str(line.split("//").next().unwrap_or(""));
        body.push('\n');
    }
    let (mut fields, mut offset, mut align) = (Vec::new(), 0usize, 1usize);
    for decl in body.split(';').map(str::trim).filter(|d| !d.is_empty()) {
        let mut parts = decl.split(',');
        let first = parts.next().unwrap_or("");
        let split = first
            .rfind(|c: char| c.is_whitespace() || c == '*')
            .ok_or_else(|| format!("{name}: cannot read `{decl}`"))?;
        let (ty, first_name) = first.split_at(split + 1);
        let base: Vec<&str> = ty
            .split(|c: char| c.is_whitespace() || c == '*')
            .filter(|w| !w.is_empty() && *w != "const")
            .collect();
        let base = base.join(" ");
        for (i, declarator) in std::iter::once(first_name).chain(parts).enumerate() {
            let pointer = declarator.contains('*') || (i == 0 && ty.contains('*'));
            let field = declarator.trim().trim_start_matches('*').trim().to_string();
            let c_type = if pointer {
                "pointer".to_string()
            } else {
                base.clone()
            };
            let (size, field_align) = match c_type.as_str() {
                "pointer" | "double" | "uint64_t" => (8, 8),
                "uint32_t" | "int32_t" | "float" => (4, 4),
                "unsigned char" => (1, 1),
                other => {
                    let nested = c_layout(source, other)?;
                    (nested.size, nested.align)
                }
            };
            offset = offset.next_multiple_of(field_align);
            align = align.max(field_align);
            fields.push(CField {
                name: field,
                c_type,
                offset,
                size,
            });
            offset += size;
        }
    }
    Ok(CLayout {
        fields,
        size: offset.next_multiple_of(align),
        align,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defines_are_read_by_whole_name_at_the_start_of_a_line() {
        const SRC: &str = "// #define A 1\n#define AB 23\n#define A  4  // comment\n";
        const A: u32 = define(SRC, "A");
        assert_eq!((A, define(SRC, "AB")), (4, 23));
    }

    #[test]
    fn c_layouts_are_compared_field_by_field() {
        let src = "struct HarnessParams {\n    float* y;  // out\n    const float* x;\n    \
                   uint32_t n;\n};\n";
        compare_with_c(src, &HarnessParams::LAYOUT).unwrap();
        let swapped = src.replace(
            "float* y;  // out\n    const float* x;",
            "const float* x;\n    float* y;",
        );
        let e = compare_with_c(&swapped, &HarnessParams::LAYOUT).unwrap_err();
        assert!(e.starts_with("HarnessParams: Rust has fields"), "{e}");
        let narrow = src.replace("uint32_t n;", "unsigned char n;");
        let e = compare_with_c(&narrow, &HarnessParams::LAYOUT).unwrap_err();
        assert!(e.contains("\"unsigned char\""), "{e}");
    }
}

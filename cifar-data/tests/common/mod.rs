//! Helpers shared by the download and archive tests: small synthetic datasets packed into tar.gz
//! archives the tests build, with arbitrary extra entries written unchecked into their headers.

#![allow(dead_code)] // Each test binary uses its own subset.

use std::fs;
use std::path::Path;

use cifar_data::synth::{self, SynthConfig};
use cifar_data::Format;
use flate2::write::GzEncoder;
use flate2::Compression;
use md5::{Digest, Md5};

pub const ARCHIVE: &str = "cifar-100-binary.tar.gz";

pub fn md5_hex(bytes: &[u8]) -> String {
    Md5::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A small synthetic CIFAR-100 directory written by `synth`.
pub fn dataset_dir(dir: &Path, seed: u64) {
    let cfg = SynthConfig {
        seed,
        train: 30,
        test: 10,
    };
    synth::write(dir, &cfg).unwrap();
}

/// An archive entry written byte for byte as given, bypassing the tar crate's path checks.
pub struct Raw<'a> {
    pub name: &'a str,
    pub kind: tar::EntryType,
    pub data: &'a [u8],
    /// The link target of a link entry.
    pub link: &'a str,
    /// The size the header declares; `None` for the data's length.
    pub size: Option<u64>,
}

impl<'a> Raw<'a> {
    /// A regular file.
    pub fn file(name: &'a str, data: &'a [u8]) -> Raw<'a> {
        Raw {
            name,
            kind: tar::EntryType::Regular,
            data,
            link: "",
            size: None,
        }
    }

    /// An entry of `kind` without data.
    pub fn special(name: &'a str, kind: tar::EntryType, link: &'a str) -> Raw<'a> {
        Raw {
            name,
            kind,
            data: &[],
            link,
            size: None,
        }
    }
}

/// Appends `raw` to `tar` with an old-style header holding exactly its name and link name.
pub fn append_raw<W: std::io::Write>(tar: &mut tar::Builder<W>, raw: &Raw) {
    let mut header = tar::Header::new_old();
    header.as_old_mut().name[..raw.name.len()].copy_from_slice(raw.name.as_bytes());
    header.as_old_mut().linkname[..raw.link.len()].copy_from_slice(raw.link.as_bytes());
    header.set_size(raw.size.unwrap_or(raw.data.len() as u64));
    header.set_mode(0o644);
    header.set_entry_type(raw.kind);
    header.set_cksum();
    tar.append(&header, raw.data).unwrap();
}

/// A tar.gz holding `cifar-100-binary/` with the files of a small synthetic dataset, minus
/// `skip`, followed by the `extra` raw entries.
pub fn archive(seed: u64, skip: Option<&str>, extra: &[Raw]) -> Vec<u8> {
    let src = tempfile::tempdir().unwrap();
    dataset_dir(src.path(), seed);
    let mut tar = tar::Builder::new(GzEncoder::new(Vec::new(), Compression::fast()));
    tar.append_dir("cifar-100-binary", src.path()).unwrap();
    for file in Format::Cifar100.all_files() {
        if Some(file) != skip {
            let path = src.path().join(file);
            tar.append_path_with_name(&path, format!("cifar-100-binary/{file}"))
                .unwrap();
        }
    }
    for raw in extra {
        append_raw(&mut tar, raw);
    }
    tar.into_inner().unwrap().finish().unwrap()
}

/// Everything directly inside `dir`, sorted, as names.
pub fn listing(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

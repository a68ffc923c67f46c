//! The bodies of the cargo-fuzz targets in `fuzz/`, kept here so that the stable regression test
//! (`tests/fuzz_regressions.rs`) feeds saved inputs through exactly the code the fuzzer ran.
//!
//! Each function takes arbitrary bytes, runs one parser on them, and panics (a finding) if the
//! parser panics, or if its result breaks an invariant: an `Ok` that is not what the format
//! allows, an `Err` of a kind the parser does not document, a message that does not name the
//! file. Not part of the crate's API.

use std::fs;
use std::io::Write;
use std::path::Path;

use flate2::write::GzEncoder;
use flate2::Compression;

use crate::archive::{unpack, MAX_ENTRIES};
use crate::format::{
    parse_label_names, parse_records_into, Format, Records, CIFAR100_COARSE, IMAGE_BYTES,
};
use crate::Error;

/// The file name the parsers are told they read, so messages can be checked for it.
const NAME: &str = "fuzz-input.bin";

/// Byte budget of the archive target: small, so a gzip bomb costs the fuzzer little.
pub const ARCHIVE_BUDGET: u64 = 1 << 20;

/// A record file of `format` (`train.bin`, `data_batch_1.bin`, ...).
pub fn records(data: &[u8], format: Format) {
    let mut out = Records::default();
    match parse_records_into(data, Path::new(NAME), format, &mut out) {
        Ok(()) => {
            let n = data.len() / format.record_size();
            assert_eq!(n * format.record_size(), data.len());
            assert!(n > 0 && out.len() == n && out.images.len() == n * IMAGE_BYTES);
            assert!(out
                .fine
                .iter()
                .all(|&l| usize::from(l) < format.num_classes()));
            match (format, &out.coarse) {
                (Format::Cifar100, Some(c)) => {
                    assert!(c.len() == n && c.iter().all(|&l| usize::from(l) < CIFAR100_COARSE))
                }
                (Format::Cifar10, None) => {}
                (_, coarse) => panic!("{format:?} with coarse labels {coarse:?}"),
            }
            // The pixels are the records' bytes after the labels, in order.
            let first = &data[format.label_bytes()..format.record_size()];
            assert_eq!(&out.images[..IMAGE_BYTES], first);
        }
        Err(e) => {
            assert!(
                matches!(
                    e,
                    Error::EmptyFile { .. } | Error::RecordSize { .. } | Error::Label { .. }
                ),
                "{e:?}"
            );
            assert!(e.to_string().contains(NAME), "{e}");
            assert_eq!(
                out,
                Records::default(),
                "an error leaves the output as it was"
            );
        }
    }
}

/// A label-name file, read as CIFAR-10's (10 names), CIFAR-100's coarse (20) and fine (100).
pub fn label_names(data: &[u8]) {
    for expected in [10, 20, 100] {
        match parse_label_names(data, Path::new(NAME), expected) {
            Ok(names) => {
                assert_eq!(names.len(), expected);
                for n in &names {
                    assert!(!n.is_empty() && n.trim() == n && !n.contains('\n'), "{n:?}");
                }
            }
            Err(e) => {
                assert!(
                    matches!(e, Error::LabelNames { .. } | Error::Io { .. }),
                    "{e:?}"
                );
                assert!(e.to_string().contains(NAME), "{e}");
            }
        }
    }
}

/// A tar.gz archive, unpacked into a fresh temporary directory with [`ARCHIVE_BUDGET`]. Input
/// that does not start with the gzip magic bytes is a plain tar and is gzipped here first, so
/// the fuzzer's mutations reach the tar headers and the unpacker's checks instead of failing the
/// deflate stream's checksum; input that does exercises the gzip decoder and the byte budget.
/// On success everything unpacked must be a plain file or directory, at most [`MAX_ENTRIES`]
/// files of at most the budget in all, and nothing may appear beside the target directory.
pub fn archive(data: &[u8]) {
    let gzipped;
    let data = if data.starts_with(&[0x1f, 0x8b]) {
        data
    } else {
        let mut gz = GzEncoder::new(Vec::new(), Compression::fast());
        gz.write_all(data).expect("writing to memory");
        gzipped = gz.finish().expect("writing to memory");
        &gzipped
    };
    let root = tempfile::tempdir().expect("a temporary directory");
    let into = root.path().join("out");
    match unpack(data, NAME, &into, ARCHIVE_BUDGET) {
        Ok(()) => {
            let (files, bytes) = walk(&into);
            assert!(files <= MAX_ENTRIES, "{files} files");
            assert!(bytes <= ARCHIVE_BUDGET, "{bytes} bytes");
        }
        Err(e) => {
            assert!(
                matches!(
                    e,
                    Error::Archive { .. } | Error::UnsafeEntry { .. } | Error::Io { .. }
                ),
                "{e:?}"
            );
        }
    }
    let beside: Vec<_> = fs::read_dir(root.path())
        .expect("the temporary directory")
        .map(|e| e.expect("an entry").file_name())
        .collect();
    assert!(beside.len() <= 1, "{beside:?} beside the target directory");
}

/// (files, bytes) under `dir`; panics on anything but plain files and directories.
fn walk(dir: &Path) -> (usize, u64) {
    let (mut files, mut bytes) = (0, 0);
    for entry in fs::read_dir(dir).expect("an unpacked directory") {
        let path = entry.expect("an entry").path();
        let meta = fs::symlink_metadata(&path).expect("metadata");
        if meta.is_dir() {
            let (f, b) = walk(&path);
            files += f;
            bytes += b;
        } else {
            assert!(
                meta.is_file(),
                "{} is {:?}",
                path.display(),
                meta.file_type()
            );
            files += 1;
            bytes += meta.len();
        }
    }
    (files, bytes)
}

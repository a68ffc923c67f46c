//! Installing a local archive (`trainer download --archive FILE`) and the unpacker's refusals,
//! with archives the tests build.

mod common;

use std::fs;
use std::io::Write;
use std::path::Path;
use std::time::Instant;

use cifar_data::archive::{max_unpacked_bytes, unpack, MAX_ENTRIES};
use cifar_data::{install_archive, Dataset, Error, Format};
use common::{append_raw, archive, dataset_dir, listing, md5_hex, Raw, ARCHIVE};
use flate2::write::GzEncoder;
use flate2::Compression;
use tar::EntryType;

/// Writes `bytes` as `dir/ARCHIVE` and installs it into `dir/data` with its own MD5.
fn install(dir: &Path, bytes: &[u8]) -> cifar_data::Result<std::path::PathBuf> {
    let file = dir.join(ARCHIVE);
    fs::write(&file, bytes).unwrap();
    install_archive(Format::Cifar100, &file, &dir.join("data"), &md5_hex(bytes))
}

#[test]
fn installs_a_local_archive_and_leaves_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = archive(1, None, &[]);
    let got = install(dir.path(), &bytes).unwrap();
    assert_eq!(got, dir.path().join("data/cifar-100-binary"));
    assert_eq!(listing(&dir.path().join("data")), vec!["cifar-100-binary"]);
    assert_eq!(fs::read(dir.path().join(ARCHIVE)).unwrap(), bytes);
    let data = Dataset::load(&dir.path().join("data"), Format::Cifar100).unwrap();
    assert_eq!((data.train.len(), data.test.len()), (30, 10));
    // A second install replaces the dataset with the new archive's.
    let bytes = archive(2, None, &[]);
    install(dir.path(), &bytes).unwrap();
    let want = tempfile::tempdir().unwrap();
    dataset_dir(want.path(), 2);
    assert_eq!(
        fs::read(got.join("train.bin")).unwrap(),
        fs::read(want.path().join("train.bin")).unwrap()
    );
    assert_eq!(listing(&dir.path().join("data")), vec!["cifar-100-binary"]);
}

#[test]
fn a_wrong_md5_installs_nothing_and_keeps_the_existing_dataset() {
    let dir = tempfile::tempdir().unwrap();
    let existing = dir.path().join("data/cifar-100-binary");
    dataset_dir(&existing, 5);
    let before = fs::read(existing.join("train.bin")).unwrap();
    let file = dir.path().join(ARCHIVE);
    fs::write(&file, archive(6, None, &[])).unwrap();
    let root = dir.path().join("data");
    // The official MD5, as the trainer passes it: the test's archive cannot have it.
    let err = install_archive(Format::Cifar100, &file, &root, Format::Cifar100.md5()).unwrap_err();
    assert!(matches!(err, Error::ArchiveChecksum { .. }), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains(&file.display().to_string())
            && msg.contains(Format::Cifar100.md5())
            && msg.contains("nothing was unpacked"),
        "{msg}"
    );
    assert_eq!(listing(&root), vec!["cifar-100-binary"]);
    assert_eq!(fs::read(existing.join("train.bin")).unwrap(), before);
}

#[test]
fn a_missing_archive_file_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("nowhere.tar.gz");
    let err =
        install_archive(Format::Cifar10, &file, dir.path(), Format::Cifar10.md5()).unwrap_err();
    assert!(matches!(err, Error::Io { .. }), "{err}");
    assert!(err.to_string().contains("nowhere.tar.gz"), "{err}");
    assert!(listing(dir.path()).is_empty());
}

#[test]
fn a_dot_slash_prefix_is_accepted() {
    // GNU tar run as `tar czf x.tar.gz ./cifar-100-binary` writes `./` before every name.
    let src = tempfile::tempdir().unwrap();
    dataset_dir(src.path(), 3);
    let mut tar = tar::Builder::new(GzEncoder::new(Vec::new(), Compression::fast()));
    for file in Format::Cifar100.all_files() {
        let data = fs::read(src.path().join(file)).unwrap();
        append_raw(
            &mut tar,
            &Raw::file(&format!("./cifar-100-binary/{file}"), &data),
        );
    }
    let bytes = tar.into_inner().unwrap().finish().unwrap();
    let dir = tempfile::tempdir().unwrap();
    install(dir.path(), &bytes).unwrap();
}

/// Installs an archive holding the dataset plus `extra`, expects `Error::UnsafeEntry` whose
/// message contains `why`, and checks that nothing was left behind.
fn refused(extra: &[Raw], why: &str) {
    let dir = tempfile::tempdir().unwrap();
    let err = install(dir.path(), &archive(4, None, extra)).unwrap_err();
    assert!(matches!(err, Error::UnsafeEntry { .. }), "{why}: {err}");
    let msg = err.to_string();
    assert!(
        msg.contains(why) && msg.contains("nothing was unpacked"),
        "{msg}"
    );
    assert!(listing(&dir.path().join("data")).is_empty(), "{why}");
    assert_eq!(listing(dir.path()), vec!["cifar-100-binary.tar.gz", "data"]);
}

#[test]
fn links_are_refused_wherever_they_point() {
    for (kind, link) in [
        (EntryType::Symlink, "/etc/passwd"),
        (EntryType::Symlink, "../../outside"),
        (EntryType::Symlink, "train.bin"),
        (EntryType::Link, "cifar-100-binary/train.bin"),
        (EntryType::Link, "/etc/passwd"),
    ] {
        let name = "cifar-100-binary/extra";
        let why = if kind == EntryType::Symlink {
            "symbolic link"
        } else {
            "hard link"
        };
        refused(&[Raw::special(name, kind, link)], why);
    }
    // A link followed by a file written through it: refused at the link.
    refused(
        &[
            Raw::special("cifar-100-binary/out", EntryType::Symlink, "/tmp"),
            Raw::file("cifar-100-binary/out/evil.txt", b"pwned"),
        ],
        "symbolic link",
    );
}

#[test]
fn devices_and_fifos_are_refused() {
    for (kind, why) in [
        (EntryType::Char, "device file"),
        (EntryType::Block, "device file"),
        (EntryType::Fifo, "FIFO"),
        (
            EntryType::Continuous,
            "neither a regular file nor a directory",
        ),
    ] {
        refused(&[Raw::special("cifar-100-binary/dev", kind, "")], why);
    }
}

#[test]
fn an_entry_may_not_overwrite_one_unpacked_before_it() {
    // A second train.bin after the checked one, a file where a directory was, a directory
    // where a file was.
    refused(
        &[Raw::file("cifar-100-binary/train.bin", b"short")],
        "would overwrite",
    );
    refused(
        &[Raw::file("./cifar-100-binary//test.bin", b"short")],
        "would overwrite",
    );
    refused(&[Raw::file("cifar-100-binary", b"x")], "would replace");
    refused(
        &[Raw::file("cifar-100-binary/train.bin/x", b"x")],
        "would need a directory",
    );
}

#[test]
fn absolute_and_parent_paths_are_refused() {
    for name in ["/tmp/evil.txt", "../evil.txt", "a/../../evil.txt", "."] {
        refused(&[Raw::file(name, b"x")], "outside the target");
    }
}

#[test]
fn an_entry_claiming_more_than_the_dataset_is_refused_before_reading() {
    // The header claims one byte more than CIFAR-100's archive may inflate to; the data is not
    // there at all, so only the header check can stop it without a long read.
    let limit = max_unpacked_bytes(Format::Cifar100);
    assert_eq!(limit, 184_440_000 + (1 << 20));
    let huge = Raw {
        size: Some(limit + 1),
        ..Raw::file("cifar-100-binary/huge.bin", b"")
    };
    let dir = tempfile::tempdir().unwrap();
    let err = install(dir.path(), &archive(4, None, &[huge])).unwrap_err();
    assert!(matches!(err, Error::Archive { .. }), "{err}");
    assert!(err.to_string().contains("declare more than"), "{err}");
    assert!(listing(&dir.path().join("data")).is_empty());
}

/// A tar.gz of `files` (name, bytes) followed, inside the same gzip stream, by `tail` zero bytes.
fn tar_gz_with_tail(files: &[(&str, &[u8])], tail: usize) -> Vec<u8> {
    let mut tar = tar::Builder::new(Vec::new());
    for (name, data) in files {
        append_raw(&mut tar, &Raw::file(name, data));
    }
    let mut gz = GzEncoder::new(Vec::new(), Compression::fast());
    gz.write_all(&tar.into_inner().unwrap()).unwrap();
    gz.write_all(&vec![0u8; tail]).unwrap();
    gz.finish().unwrap()
}

#[test]
fn a_gzip_bomb_is_cut_off_at_the_budget() {
    let into = tempfile::tempdir().unwrap();
    // 8 MB of zeros inflate from about 8 KB; the budget is 1 MB.
    let budget = 1 << 20;
    let bomb = tar_gz_with_tail(&[("a.txt", b"hello")], 8 << 20);
    let start = Instant::now();
    let err = unpack(&bomb[..], "bomb.tar.gz", &into.path().join("x"), budget).unwrap_err();
    assert!(matches!(err, Error::Archive { .. }), "{err}");
    assert!(err.to_string().contains("more than 1048576 bytes"), "{err}");
    // Zeros past the end marker, and a file that is itself too large.
    let big = vec![7u8; (budget + 1) as usize];
    let err = unpack(
        &tar_gz_with_tail(&[("big.bin", &big)], 0)[..],
        "big.tar.gz",
        &into.path().join("y"),
        budget,
    )
    .unwrap_err();
    assert!(err.to_string().contains("declare more than"), "{err}");
    assert!(
        start.elapsed().as_secs() < 10,
        "stopped early, not read to the end"
    );
    // Within the budget the same archive unpacks.
    unpack(
        &tar_gz_with_tail(&[("a.txt", b"hello")], 1000)[..],
        "ok.tar.gz",
        &into.path().join("z"),
        budget,
    )
    .unwrap();
    assert_eq!(fs::read(into.path().join("z/a.txt")).unwrap(), b"hello");
}

#[test]
fn too_many_entries_are_refused() {
    let names: Vec<String> = (0..=MAX_ENTRIES).map(|i| format!("f{i}")).collect();
    let files: Vec<(&str, &[u8])> = names.iter().map(|n| (n.as_str(), &b""[..])).collect();
    let into = tempfile::tempdir().unwrap();
    let err = unpack(
        &tar_gz_with_tail(&files, 0)[..],
        "many",
        into.path(),
        1 << 20,
    )
    .unwrap_err();
    assert!(err.to_string().contains("more than 100 entries"), "{err}");
}

#[test]
fn garbage_and_truncation_are_errors() {
    let into = tempfile::tempdir().unwrap();
    for bytes in [
        &b""[..],
        b"not a gzip stream at all",
        &[0x1f, 0x8b, 8, 0, 0, 0],
    ] {
        let err = unpack(bytes, "junk", into.path(), 1 << 20).unwrap_err();
        assert!(matches!(err, Error::Archive { .. }), "{err}");
    }
    let good = tar_gz_with_tail(&[("a.txt", b"hello")], 0);
    let err = unpack(
        &good[..good.len() - 4],
        "cut",
        &into.path().join("c"),
        1 << 20,
    )
    .unwrap_err();
    assert!(err.to_string().contains("truncated"), "{err}");
}

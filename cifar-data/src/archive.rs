//! Unpacking a tar.gz dataset archive safely: the one implementation behind [`crate::download`]
//! and [`crate::install_archive`], and the target of the `archive` fuzzer.
//!
//! What an archive may hold is what the official releases hold: directories and regular files,
//! under relative paths, a few of them, adding up to about the size of the dataset. Everything
//! else is refused before anything is written for it:
//! - absolute paths and paths with `..` (they would land outside the target directory);
//! - every kind of link, symbolic or hard, wherever it points: the official archives have none,
//!   and refusing them all leaves no way for a later entry to write through one;
//! - device files, FIFOs and any other special entry (sparse, contiguous, volume labels);
//! - an entry whose path repeats one already unpacked, or that puts a file where a directory was
//!   unpacked or the other way round (it would overwrite or redirect a file already written);
//! - more than [`MAX_ENTRIES`] entries, an entry larger than the byte budget, and a gzip stream
//!   that inflates past the budget (a gzip bomb is cut off there, without writing it out).
//!
//! Files are written with fresh permissions; the modes, owners, times and extended attributes
//! stored in the archive are ignored. The caller unpacks into a fresh temporary directory and
//! removes it on any error, so a refused archive leaves nothing behind.

use std::collections::HashSet;
use std::fs::{self, OpenOptions};
use std::io::{self, BufReader, Read};
use std::path::{Component, Path, PathBuf};

use flate2::read::GzDecoder;

use crate::format::Format;
use crate::{Error, Result};

/// Entries an archive may hold. The official archives have 5 (CIFAR-100) and 9 (CIFAR-10).
pub const MAX_ENTRIES: usize = 100;

/// Slack above the record files' size for the label-name files, CIFAR-10's `readme.html`, and
/// the tar headers and padding (512 bytes each, a few dozen in all).
pub const UNPACK_MARGIN: u64 = 1 << 20;

/// The most bytes `format`'s archive may inflate to: the official record files (60,000 records:
/// 184,440,000 bytes for CIFAR-100, 184,380,000 for CIFAR-10, as SPEC gives the file sizes) plus
/// [`UNPACK_MARGIN`].
pub fn max_unpacked_bytes(format: Format) -> u64 {
    const OFFICIAL_RECORDS: u64 = 60_000;
    OFFICIAL_RECORDS * format.record_size() as u64 + UNPACK_MARGIN
}

/// Unpacks the tar.gz stream `archive` into the directory `into` (created if missing), refusing
/// what the module doc lists, and reads the gzip stream to its end so that a truncated archive
/// is caught by its checksum trailer. `name` names the archive in errors; at most `max_bytes`
/// are inflated.
///
/// # Errors
/// [`Error::UnsafeEntry`] naming the entry and why, [`Error::Archive`] for a corrupt, truncated or
/// oversized archive, [`Error::Io`] if a file cannot be written.
pub fn unpack<R: Read>(archive: R, name: &str, into: &Path, max_bytes: u64) -> Result<()> {
    fs::create_dir_all(into).map_err(|e| Error::io(into, e))?;
    let inflated = Budget {
        inner: GzDecoder::new(BufReader::new(archive)),
        left: max_bytes,
        exceeded: false,
    };
    let mut tar = tar::Archive::new(inflated);
    let result = unpack_entries(&mut tar, name, into, max_bytes);
    let mut inflated = tar.into_inner();
    let result = result.and_then(|()| {
        // The tar's end marker may come before the end of the gzip stream: read the rest, so a
        // truncated or corrupted stream fails its CRC here.
        io::copy(&mut inflated, &mut io::sink())
            .map(drop)
            .map_err(|e| corrupt(name, e))
    });
    if inflated.exceeded {
        return Err(Error::Archive {
            archive: name.into(),
            reason: format!(
                "it inflates to more than {max_bytes} bytes, more than the dataset holds (a \
                 corrupt archive or a gzip bomb); nothing was unpacked"
            ),
        });
    }
    result
}

/// Unpacks every entry of `tar`; see [`unpack`].
fn unpack_entries<R: Read>(
    tar: &mut tar::Archive<R>,
    name: &str,
    into: &Path,
    max_bytes: u64,
) -> Result<()> {
    let unsafe_entry = |entry: &Path, reason: String| Error::UnsafeEntry {
        archive: name.into(),
        entry: entry.display().to_string(),
        reason,
    };
    let mut files: HashSet<PathBuf> = HashSet::new();
    let mut dirs: HashSet<PathBuf> = HashSet::new();
    let mut declared = 0u64;
    let mut count = 0usize;
    for entry in tar.entries().map_err(|e| corrupt(name, e))? {
        let mut entry = entry.map_err(|e| corrupt(name, e))?;
        let raw = entry.path().map_err(|e| corrupt(name, e))?.into_owned();
        let kind = entry.header().entry_type();
        if kind == tar::EntryType::XGlobalHeader {
            // pax metadata for the whole archive (`git archive` writes one); nothing to unpack.
            continue;
        }
        count += 1;
        if count > MAX_ENTRIES {
            return Err(Error::Archive {
                archive: name.into(),
                reason: format!("more than {MAX_ENTRIES} entries, the dataset has about 10"),
            });
        }
        let path = relative_inside(&raw).ok_or_else(|| {
            unsafe_entry(
                &raw,
                "has an absolute path, `..` or no name, and would land outside the target \
                 directory"
                    .into(),
            )
        })?;
        if !(kind.is_file() || kind.is_dir()) {
            return Err(unsafe_entry(&raw, format!("is {}", kind_name(kind))));
        }
        if let Some(clash) = clash(&path, kind.is_dir(), &files, &dirs) {
            return Err(unsafe_entry(&raw, clash));
        }
        declared = declared.saturating_add(entry.size());
        if declared > max_bytes {
            return Err(Error::Archive {
                archive: name.into(),
                reason: format!(
                    "its entries declare more than {max_bytes} bytes (entry {} alone {}), more \
                     than the dataset holds; nothing was unpacked",
                    raw.display(),
                    entry.size()
                ),
            });
        }
        let target = into.join(&path);
        if kind.is_dir() {
            fs::create_dir_all(&target).map_err(|e| Error::io(&target, e))?;
        } else {
            if let Some(parent) = target.parent() {
                fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
            }
            // `create_new`: never open a file that is already there.
            let mut out = OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&target)
                .map_err(|e| Error::io(&target, e))?;
            copy_entry(&mut entry, &mut out, &target).map_err(|e| match e {
                Copy::Read(e) => corrupt(name, e),
                Copy::Write(e) => e,
            })?;
        }
        // Every parent now exists as a directory, and so does a directory entry itself.
        let made_dirs = path.ancestors().skip(usize::from(!kind.is_dir()));
        dirs.extend(made_dirs.map(Path::to_path_buf));
        if !kind.is_dir() {
            files.insert(path);
        }
    }
    Ok(())
}

/// Why writing an entry's data failed: reading the archive, or writing the file.
enum Copy {
    Read(io::Error),
    Write(Error),
}

fn copy_entry(
    from: &mut impl Read,
    to: &mut fs::File,
    path: &Path,
) -> std::result::Result<(), Copy> {
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(Copy::Read(e)),
        };
        io::Write::write_all(to, &buf[..n]).map_err(|e| Copy::Write(Error::io(path, e)))?;
    }
}

/// The path made only of its normal components, if it is relative and names something: `.` is
/// dropped, anything else (a root, a prefix, `..`) refuses the path.
fn relative_inside(path: &Path) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::Normal(part) => out.push(part),
            Component::CurDir => {}
            Component::RootDir | Component::Prefix(_) | Component::ParentDir => return None,
        }
    }
    (!out.as_os_str().is_empty()).then_some(out)
}

/// Why `path` (a directory if `is_dir`) may not be unpacked after `files` and `dirs`, if so.
fn clash(
    path: &Path,
    is_dir: bool,
    files: &HashSet<PathBuf>,
    dirs: &HashSet<PathBuf>,
) -> Option<String> {
    if files.contains(path) {
        return Some("would overwrite the file of the same name unpacked before it".into());
    }
    if !is_dir && dirs.contains(path) {
        return Some("would replace the directory of the same name unpacked before it".into());
    }
    path.ancestors()
        .skip(1)
        .find(|a| files.contains(*a))
        .map(|a| {
            format!(
                "would need a directory where the file {} was unpacked",
                a.display()
            )
        })
}

fn kind_name(kind: tar::EntryType) -> &'static str {
    match kind {
        tar::EntryType::Symlink => {
            "a symbolic link (the official archives hold only files and directories)"
        }
        tar::EntryType::Link => {
            "a hard link (the official archives hold only files and directories)"
        }
        tar::EntryType::Char | tar::EntryType::Block => "a device file",
        tar::EntryType::Fifo => "a FIFO",
        _ => "neither a regular file nor a directory",
    }
}

fn corrupt(name: &str, e: io::Error) -> Error {
    Error::Archive {
        archive: name.into(),
        reason: format!("corrupt or truncated: {e}"),
    }
}

/// A reader that fails once more than `left` bytes have come through, and remembers that it did.
struct Budget<R> {
    inner: R,
    left: u64,
    exceeded: bool,
}

impl<R: Read> Read for Budget<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.exceeded {
            return Err(io::Error::other("over the unpacking budget"));
        }
        // Ask for one byte more than the budget allows, to tell "exactly at" from "over".
        let want = buf
            .len()
            .min(usize::try_from(self.left.saturating_add(1)).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..want])?;
        if n as u64 > self.left {
            self.exceeded = true;
            return Err(io::Error::other("over the unpacking budget"));
        }
        self.left -= n as u64;
        Ok(n)
    }
}

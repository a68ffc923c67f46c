//! The official archives, downloaded ([`download`]: HTTPS fetch with a progress bar) or already on
//! disk ([`install_archive`]): MD5 check, safe unpacking ([`crate::archive::unpack`]), then the
//! dataset directory moved into place.
//!
//! Nothing is written outside a temporary directory beside the target until the archive has the
//! expected checksum, unpacked without error and holds every file of the format; only then is the
//! result renamed into place. A failure therefore removes its own files and leaves an existing
//! dataset as it was.

use std::fs::{self, File};
use std::io::{self, BufWriter, IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use md5::{Digest, Md5};
use tempfile::TempDir;

use crate::archive::{max_unpacked_bytes, unpack};
use crate::format::{Format, BASE_URL};
use crate::{Dataset, Error, Result};

/// Where an archive comes from and the MD5 it must have.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Source {
    /// The directory URL; the archive name is appended (`{base_url}/{archive}`).
    pub base_url: String,
    /// Expected MD5 of the archive, hex (either case).
    pub md5: String,
}

impl Source {
    /// The published location and checksum of `format`'s archive.
    pub fn official(format: Format) -> Source {
        Source {
            base_url: BASE_URL.into(),
            md5: format.md5().into(),
        }
    }

    /// The archive's URL.
    pub fn url(&self, format: Format) -> String {
        format!(
            "{}/{}",
            self.base_url.trim_end_matches('/'),
            format.archive_name()
        )
    }
}

/// Downloads `format`'s archive from `source`, checks its MD5 and unpacks it so that
/// `root/<format.dir_name()>` holds the dataset; returns that directory. An existing directory
/// there is replaced only by a complete, verified download.
///
/// # Errors
/// [`Error::Offline`] if the server cannot be reached (the message says where to put the files by
/// hand), [`Error::Http`] on an HTTP error or a broken transfer, [`Error::Checksum`],
/// [`Error::Archive`] for a corrupt, truncated or incomplete archive, [`Error::UnsafeEntry`],
/// [`Error::Io`].
pub fn download(format: Format, root: &Path, source: &Source) -> Result<PathBuf> {
    let work = work_dir(root)?;
    let target = root.join(format.dir_name());
    let url = source.url(format);
    let archive = work.path().join(format.archive_name());
    let md5 = fetch(&url, &archive).map_err(|e| match e {
        Fetch::Unreachable(reason) => Error::Offline {
            url: url.clone(),
            reason,
            format,
            root: root.to_path_buf(),
            expected: target.join(format.train_files()[0]),
        },
        Fetch::Failed(reason) => Error::Http {
            url: url.clone(),
            reason,
        },
        Fetch::Io(e) => e,
    })?;
    if !md5.eq_ignore_ascii_case(source.md5.trim()) {
        return Err(Error::Checksum {
            url,
            got: md5,
            expected: source.md5.clone(),
        });
    }
    unpack_into_place(format, &archive, &url, root, &work)
}

/// Installs `format`'s archive from the local file `archive` (the official
/// `cifar-100-binary.tar.gz` or `cifar-10-binary.tar.gz`, for machines without internet access):
/// checks that its MD5 is `md5` (the trainer passes [`Format::md5`]), then unpacks it exactly as
/// [`download`] does, so that `root/<format.dir_name()>` holds the dataset; returns that directory.
/// An existing directory there is replaced only by a complete, verified archive; `archive` itself
/// is left as it is.
///
/// # Errors
/// [`Error::Io`] if the file cannot be read, [`Error::ArchiveChecksum`] (saying so when the file
/// is the other dataset's archive), [`Error::Archive`], [`Error::UnsafeEntry`].
pub fn install_archive(format: Format, archive: &Path, root: &Path, md5: &str) -> Result<PathBuf> {
    let got = file_md5(archive)?;
    if !got.eq_ignore_ascii_case(md5.trim()) {
        return Err(Error::ArchiveChecksum {
            path: archive.to_path_buf(),
            hint: other_dataset_hint(format, &got),
            got,
            expected: md5.trim().to_lowercase(),
            archive: format.archive_name(),
        });
    }
    let work = work_dir(root)?;
    unpack_into_place(format, archive, &archive.display().to_string(), root, &work)
}

/// If `md5` is the published MD5 of the dataset other than `format`, says so and names the flag
/// that installs it; otherwise empty.
fn other_dataset_hint(format: Format, md5: &str) -> String {
    [Format::Cifar100, Format::Cifar10]
        .into_iter()
        .find(|&other| other != format && other.md5() == md5)
        .map(|other| {
            format!(
                "; it is the {} archive: pass --dataset {}",
                other.name(),
                other.cli_name()
            )
        })
        .unwrap_or_default()
}

/// A temporary directory inside `root` (created if missing) that everything lands in first;
/// dropping it, on any error, removes it.
fn work_dir(root: &Path) -> Result<TempDir> {
    fs::create_dir_all(root).map_err(|e| Error::io(root, e))?;
    tempfile::Builder::new()
        .prefix(".cifar-download-")
        .tempdir_in(root)
        .map_err(|e| Error::io(root, e))
}

/// Unpacks the verified `archive` (named `name` in errors) inside `work`, checks that it holds
/// every file of `format`, and moves the dataset directory to `root/<format.dir_name()>`.
fn unpack_into_place(
    format: Format,
    archive: &Path,
    name: &str,
    root: &Path,
    work: &TempDir,
) -> Result<PathBuf> {
    let unpacked = work.path().join("unpacked");
    let file = File::open(archive).map_err(|e| Error::io(archive, e))?;
    unpack(file, name, &unpacked, max_unpacked_bytes(format))?;
    let fresh = unpacked.join(format.dir_name());
    if !Dataset::is_complete(&fresh, format) {
        return Err(Error::Archive {
            archive: name.into(),
            reason: format!(
                "it does not hold {}/ with {}",
                format.dir_name(),
                format.all_files().join(", ")
            ),
        });
    }
    let target = root.join(format.dir_name());
    replace_dir(&fresh, &target, &work.path().join("previous"))?;
    Ok(target)
}

/// The MD5 of a file's bytes, lowercase hex.
fn file_md5(path: &Path) -> Result<String> {
    let mut file = File::open(path).map_err(|e| Error::io(path, e))?;
    let mut hasher = Md5::new();
    io::copy(&mut file, &mut hasher).map_err(|e| Error::io(path, e))?;
    Ok(hex(&hasher.finalize()))
}

fn hex(digest: &[u8]) -> String {
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// Why a fetch failed: the server was never reached, it was reached but the transfer failed, or a
/// local file could not be written.
enum Fetch {
    Unreachable(String),
    Failed(String),
    Io(Error),
}

/// Streams `url` into `path` with a progress bar on stderr (hidden when stderr is not a
/// terminal) and returns the MD5 of the bytes, lowercase hex.
fn fetch(url: &str, path: &Path) -> std::result::Result<String, Fetch> {
    let agent = ureq::Agent::config_builder()
        .timeout_connect(Some(Duration::from_secs(30)))
        .timeout_recv_response(Some(Duration::from_secs(60)))
        .build()
        .new_agent();
    let response = agent.get(url).call().map_err(|e| match e {
        ureq::Error::StatusCode(code) => Fetch::Failed(format!("the server answered HTTP {code}")),
        ureq::Error::HostNotFound
        | ureq::Error::ConnectionFailed
        | ureq::Error::Timeout(_)
        | ureq::Error::Io(_) => Fetch::Unreachable(e.to_string()),
        other => Fetch::Failed(other.to_string()),
    })?;
    let total = response
        .headers()
        .get("content-length")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let bar = progress_bar(total, url);
    let mut body = response.into_body().into_reader();
    let file = File::create(path).map_err(|e| Fetch::Io(Error::io(path, e)))?;
    let mut out = BufWriter::new(file);
    let mut hasher = Md5::new();
    let mut buf = vec![0u8; 1 << 16];
    let mut received = 0u64;
    loop {
        let n = match body.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                bar.abandon();
                return Err(Fetch::Failed(format!(
                    "the transfer broke after {received} bytes: {e}"
                )));
            }
        };
        hasher.update(&buf[..n]);
        out.write_all(&buf[..n])
            .map_err(|e| Fetch::Io(Error::io(path, e)))?;
        received += n as u64;
        bar.inc(n as u64);
    }
    out.flush().map_err(|e| Fetch::Io(Error::io(path, e)))?;
    bar.finish();
    Ok(hex(&hasher.finalize()))
}

fn progress_bar(total: Option<u64>, url: &str) -> ProgressBar {
    if !io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = match total {
        Some(len) => ProgressBar::new(len).with_style(
            ProgressStyle::with_template(
                "{msg} [{bar:40}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
            )
            .expect("constant template")
            .progress_chars("=> "),
        ),
        None => ProgressBar::new_spinner(),
    };
    bar.with_message(format!("downloading {url}"))
}

/// Renames `fresh` to `target`, moving an existing `target` aside to `aside` first and back again
/// if the second rename fails.
fn replace_dir(fresh: &Path, target: &Path, aside: &Path) -> Result<()> {
    let had_old = target.exists();
    if had_old {
        fs::rename(target, aside).map_err(|e| Error::io(target, e))?;
    }
    if let Err(e) = fs::rename(fresh, target) {
        if had_old {
            // Best effort: put the old dataset back; the first error is the one to report.
            let _ = fs::rename(aside, target);
        }
        return Err(Error::io(target, e));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_other_datasets_archive_is_recognised() {
        let hint = other_dataset_hint(Format::Cifar100, Format::Cifar10.md5());
        assert_eq!(hint, "; it is the CIFAR-10 archive: pass --dataset cifar10");
        let hint = other_dataset_hint(Format::Cifar10, Format::Cifar100.md5());
        assert!(hint.contains("--dataset cifar100"), "{hint}");
        assert_eq!(
            other_dataset_hint(Format::Cifar10, Format::Cifar10.md5()),
            ""
        );
        assert_eq!(other_dataset_hint(Format::Cifar10, "00"), "");
    }
}

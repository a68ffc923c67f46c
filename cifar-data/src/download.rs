//! Download of the official archives: HTTPS fetch with a progress bar, MD5 check, safe unpacking.
//!
//! Nothing is written outside a temporary directory beside the target until the archive has the
//! expected checksum, unpacked without error and holds every file of the format; only then is the
//! result renamed into place. A failed download therefore removes its own files and leaves an
//! existing dataset as it was.

use std::fs::{self, File};
use std::io::{self, BufReader, BufWriter, IsTerminal, Read, Write};
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use flate2::read::GzDecoder;
use indicatif::{ProgressBar, ProgressStyle};
use md5::{Digest, Md5};

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
    fs::create_dir_all(root).map_err(|e| Error::io(root, e))?;
    let target = root.join(format.dir_name());
    // Everything lands in here first; dropping it (on any error) removes it.
    let work = tempfile::Builder::new()
        .prefix(".cifar-download-")
        .tempdir_in(root)
        .map_err(|e| Error::io(root, e))?;
    let url = source.url(format);
    let archive = work.path().join(format.archive_name());
    let md5 = fetch(&url, &archive).map_err(|e| match e {
        Fetch::Unreachable(reason) => Error::Offline {
            url: url.clone(),
            reason,
            archive: format.archive_name(),
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
    let unpacked = work.path().join("unpacked");
    unpack(&archive, &unpacked)?;
    let fresh = unpacked.join(format.dir_name());
    if !Dataset::is_complete(&fresh, format) {
        return Err(Error::Archive {
            archive: url,
            reason: format!(
                "it does not hold {}/ with {}",
                format.dir_name(),
                format.all_files().join(", ")
            ),
        });
    }
    replace_dir(&fresh, &target, &work.path().join("previous"))?;
    Ok(target)
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
    Ok(hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
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

/// Unpacks the tar.gz `archive` into `into`, refusing any entry that is not a plain file or
/// directory with a relative path free of `..`, and reading the gzip stream to its end so a
/// truncated archive is caught by its checksum trailer.
fn unpack(archive: &Path, into: &Path) -> Result<()> {
    let name = archive.display().to_string();
    let corrupt = |e: io::Error| Error::Archive {
        archive: name.clone(),
        reason: format!("corrupt or truncated: {e}"),
    };
    fs::create_dir_all(into).map_err(|e| Error::io(into, e))?;
    let file = File::open(archive).map_err(|e| Error::io(archive, e))?;
    let mut tar = tar::Archive::new(GzDecoder::new(BufReader::new(file)));
    for entry in tar.entries().map_err(corrupt)? {
        let mut entry = entry.map_err(corrupt)?;
        let path = entry.path().map_err(corrupt)?.into_owned();
        let kind = entry.header().entry_type();
        if kind == tar::EntryType::XGlobalHeader {
            continue;
        }
        let safe = (kind.is_file() || kind.is_dir()) && is_relative_inside(&path);
        if !safe || !entry.unpack_in(into).map_err(corrupt)? {
            return Err(Error::UnsafeEntry {
                archive: name.clone(),
                entry: path.display().to_string(),
            });
        }
    }
    let mut gz = tar.into_inner();
    io::copy(&mut gz, &mut io::sink()).map_err(corrupt)?;
    Ok(())
}

/// A non-empty relative path made only of normal components (and `.`).
fn is_relative_inside(path: &Path) -> bool {
    path.components().any(|c| matches!(c, Component::Normal(_)))
        && path
            .components()
            .all(|c| matches!(c, Component::Normal(_) | Component::CurDir))
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

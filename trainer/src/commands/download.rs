//! `trainer download`: fetches the official CIFAR-100 or CIFAR-10 binary release, checks its MD5
//! and unpacks it (see [`cifar_data::download()`]); a complete copy already there is kept. With
//! `--archive FILE` it installs a copy of the release the user already has instead, with the
//! same checks (see [`cifar_data::install_archive`]).

use std::path::{Path, PathBuf};

use anyhow::Context;
use cifar_data::{Dataset, Format, Source};

use crate::cli::DownloadArgs;

pub fn run(args: &DownloadArgs) -> anyhow::Result<()> {
    let format = Format::from(args.dataset);
    let dir = match &args.archive {
        Some(file) => install(args, file, format.md5())?,
        None => fetch(args)?,
    };
    println!(
        "train on it with: trainer train --data {} --dataset {}",
        dir.display(),
        format.cli_name()
    );
    Ok(())
}

/// Downloads the release into `--dir`, unless a complete copy is already there; returns the
/// dataset's directory.
fn fetch(args: &DownloadArgs) -> anyhow::Result<PathBuf> {
    let format = Format::from(args.dataset);
    if Dataset::is_complete(&args.dir, format) {
        let dir = Dataset::resolve_dir(&args.dir, format);
        println!("{} is already in {}", format.name(), dir.display());
        return Ok(dir);
    }
    let source = Source::official(format);
    let dir = cifar_data::download(format, &args.dir, &source).with_context(|| {
        format!(
            "downloading {} from {} into {}",
            format.name(),
            source.url(format),
            args.dir.display()
        )
    })?;
    println!("{} unpacked into {}", format.name(), dir.display());
    Ok(dir)
}

/// `--archive FILE`: checks that `archive` has the MD5 `md5` (the release's, [`Format::md5`],
/// from the command line) and unpacks it into `--dir`, replacing a dataset already there only
/// once the new one is complete; returns the dataset's directory.
///
/// # Errors
/// A missing file, another MD5 (nothing is unpacked), or an archive the unpacker refuses.
pub fn install(args: &DownloadArgs, archive: &Path, md5: &str) -> anyhow::Result<PathBuf> {
    let format = Format::from(args.dataset);
    let dir = cifar_data::install_archive(format, archive, &args.dir, md5).with_context(|| {
        format!(
            "--archive {}: cannot install {} into {}",
            archive.display(),
            format.name(),
            args.dir.display()
        )
    })?;
    println!(
        "{} unpacked from {} into {}",
        format.name(),
        archive.display(),
        dir.display()
    );
    Ok(dir)
}

//! `trainer download`: fetches the official CIFAR-100 or CIFAR-10 binary release, checks its MD5
//! and unpacks it (see [`cifar_data::download()`]); a complete copy already there is kept.

use anyhow::Context;
use cifar_data::{Dataset, Format, Source};

use crate::cli::DownloadArgs;

pub fn run(args: &DownloadArgs) -> anyhow::Result<()> {
    let format = Format::from(args.dataset);
    let dir = if Dataset::is_complete(&args.dir, format) {
        let dir = Dataset::resolve_dir(&args.dir, format);
        println!("{} is already in {}", format.name(), dir.display());
        dir
    } else {
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
        dir
    };
    println!(
        "train on it with: trainer train --data {} --dataset {}",
        dir.display(),
        format.cli_name()
    );
    Ok(())
}

//! `trainer synth`: writes the synthetic dataset (CIFAR-100 layout, 100 classes of drawn shapes
//! and textures) to a directory, for runs that read their data from files.

use anyhow::Context;
use cifar_data::synth::{self, SynthConfig};

use crate::cli::SynthArgs;

pub fn run(args: &SynthArgs) -> anyhow::Result<()> {
    let cfg = SynthConfig {
        seed: args.seed,
        train: args.train,
        test: args.test,
    };
    synth::write(&args.dir, &cfg).with_context(|| {
        format!(
            "--dir {}: cannot write the synthetic dataset",
            args.dir.display()
        )
    })?;
    println!(
        "synthetic dataset (seed {}): {} training and {} test images in {}",
        cfg.seed,
        cfg.train,
        cfg.test,
        args.dir.display()
    );
    println!(
        "train on it with: trainer train --data {} --dataset synthetic",
        args.dir.display()
    );
    Ok(())
}

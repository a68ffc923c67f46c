//! `trainer`: train, evaluate and use the CIFAR-100 residual network. `trainer --help` lists the
//! subcommands; each has its own `--help`.

use clap::Parser;
use trainer::cli::{Cli, Command};
use trainer::commands;

/// Large buffers are reused from step to step instead of going back to the operating system
/// (see `tensor_core::alloc`).
#[global_allocator]
static ALLOCATOR: tensor_core::alloc::CachingAlloc = tensor_core::alloc::CachingAlloc;

fn main() {
    let cli = Cli::parse();
    if let Err(e) = cli
        .validate()
        .map_err(anyhow::Error::from)
        .and_then(|()| run(&cli))
    {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

fn run(cli: &Cli) -> anyhow::Result<()> {
    match &cli.command {
        Command::Train(a) => commands::train::run(a),
        Command::Eval(a) => commands::eval::run(a),
        Command::Predict(a) => commands::predict::run(a),
        Command::Preview(a) => commands::preview::run(a),
        Command::Download(a) => commands::download::run(a),
        Command::Synth(a) => commands::synth::run(a),
        Command::Bench(a) => commands::bench::run(a),
    }
}

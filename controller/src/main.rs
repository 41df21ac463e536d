//! `ambit-controller`: Ambit's control plane. For now, `validate` only.

use std::{io, path::PathBuf, process::ExitCode};

use ambit_controller::{
    input,
    validate::{self, Severity},
};
use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "ambit-controller", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Check Istio manifests and print every problem, with its object, file, document and
    /// field path; exit 1 if there is an error (like `istioctl analyze`).
    Validate {
        /// A manifest file, a folder of `*.yaml`/`*.yml` files (recursively), or `-` for
        /// standard input. Repeatable.
        #[arg(short = 'f', long = "filename", required = true, num_args = 1..)]
        files: Vec<PathBuf>,
    },
}

fn main() -> anyhow::Result<ExitCode> {
    match Cli::parse().command {
        Command::Validate { files } => {
            let manifests = input::read(&files, io::stdin().lock())?;
            let report = validate::validate(&manifests);
            for diagnostic in &report.diagnostics {
                println!("{diagnostic}");
            }
            println!("{}", report.summary());
            Ok(if report.count(Severity::Error) > 0 {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            })
        }
    }
}

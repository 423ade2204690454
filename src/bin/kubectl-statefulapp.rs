//! `kubectl statefulapp`: the `dcos marathon` workflow for StatefulApps.
//! Errors are one clear line on stderr and exit code 1.

use clap::Parser;
use statefulapp_operator::plugin::{Cli, run};

#[tokio::main]
async fn main() {
    if let Err(error) = run(Cli::parse()).await {
        eprintln!("error: {error}");
        std::process::exit(1);
    }
}

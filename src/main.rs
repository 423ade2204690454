//! The operator binary: `controller`, `agent` and `crd` subcommands.

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "statefulapp-operator",
    version,
    about = "Marathon-style stateful services on Kubernetes"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print the StatefulApp CustomResourceDefinition as YAML.
    Crd,
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Crd => print!("{}", statefulapp_operator::crdgen::crd_yaml()?),
    }
    Ok(())
}

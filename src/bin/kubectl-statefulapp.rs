//! `kubectl statefulapp`: the `dcos marathon` workflow for StatefulApps.

use clap::Parser;

#[derive(Parser)]
#[command(
    name = "kubectl-statefulapp",
    version,
    about = "Manage StatefulApps the way `dcos marathon` managed stateful apps"
)]
struct Cli {}

fn main() {
    let _ = Cli::parse();
}

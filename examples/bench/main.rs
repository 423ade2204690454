//! Benchmarks, side by side in one run on one local control plane with 50
//! simulated nodes: the StatefulApp operator against a StatefulSet (same
//! StorageClass and provisioner) and against a plain client creating the same
//! objects directly (the ceiling of this API server).
//!
//! `scripts/bench.sh` (or `cargo run --release --example bench -- --help`).

#[path = "../../tests/support/mod.rs"]
mod support;

mod footprint;
mod report;
mod scenarios;
mod writes;

use clap::Parser;
use report::{Report, Row};
use support::TestCluster;

#[derive(Parser)]
#[command(about = "StatefulApp operator benchmarks against StatefulSet and a direct client")]
struct Args {
    /// Instance counts for cold scale-up and restart.
    #[arg(long, value_delimiter = ',', default_value = "100,500,1000")]
    sizes: Vec<usize>,
    /// Repeats of each measurement (the median is reported); 0 runs only
    /// the footprint scenario.
    #[arg(long, default_value_t = 3)]
    repeats: usize,
    /// Apps x instances for the footprint scenario (0 skips it).
    #[arg(long, default_value_t = 1000)]
    footprint_apps: usize,
    #[arg(long, default_value_t = 5)]
    footprint_instances: usize,
    /// Skip the footprint's StatefulSet peer (a memory-only run).
    #[arg(long)]
    no_footprint_peer: bool,
    /// Where to write the JSON results.
    #[arg(long, default_value = "target/bench/results.json")]
    json: std::path::PathBuf,
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    // SAFETY: set before any other thread reads the environment.
    unsafe {
        std::env::set_var("STATEFULAPP_TESTCLUSTER_NODES", "50");
        std::env::set_var("STATEFULAPP_TESTCLUSTER_AUDIT", "1");
    }
    let cluster = TestCluster::shared();
    let operator = footprint::operator_with_own_identity(cluster).await;
    eprintln!(
        "bench: control plane with {} nodes up in {:.1}s",
        cluster.nodes.len(),
        cluster.startup.as_secs_f64()
    );
    let mut report = Report::new(&cluster.nodes);

    let sizes = if args.repeats == 0 {
        &[][..]
    } else {
        &args.sizes[..]
    };
    for &n in sizes {
        let mut rows = [
            Row::new(format!("cold scale-up 0->{n}")),
            Row::new(format!("restart {n} stopped")),
        ];
        for round in 0..args.repeats {
            eprintln!("bench: n={n} round {}/{}", round + 1, args.repeats);
            let app = scenarios::statefulapp_scale_up_and_restart(cluster, &operator, n).await;
            let peer = scenarios::statefulset_scale_up_and_restart(cluster, n).await;
            let ceiling = scenarios::ceiling_create(cluster, n).await;
            rows[0].add(app.0.elapsed, Some(peer.0.elapsed), Some(ceiling.elapsed));
            rows[1].add(app.1.elapsed, Some(peer.1.elapsed), None);
            let log = writes::audit_log(&cluster.dir);
            let per_instance = |label: &str, phase: &scenarios::Phase| {
                writes::report(label, &writes::count(&log, &phase.window), n)
            };
            rows[0].add_writes(
                per_instance(&format!("cold {n}, StatefulApp"), &app.0),
                Some(per_instance(&format!("cold {n}, StatefulSet"), &peer.0)),
                Some(per_instance(&format!("cold {n}, ceiling"), &ceiling)),
            );
            rows[1].add_writes(
                per_instance(&format!("restart {n}, StatefulApp"), &app.1),
                Some(per_instance(&format!("restart {n}, StatefulSet"), &peer.1)),
                None,
            );
            rows[0].print_progress();
            rows[1].print_progress();
        }
        for row in &rows {
            row.print_progress();
        }
        report.rows.extend(rows);
        let mut wipe = Row::new(format!("wipe {n} instances"));
        for _ in 0..args.repeats {
            wipe.add(
                scenarios::statefulapp_wipe(cluster, &operator, n).await,
                None,
                None,
            );
        }
        wipe.print_progress();
        report.rows.push(wipe);
    }
    if args.footprint_apps > 0 {
        let mut measured = footprint::measure(
            cluster,
            &operator,
            args.footprint_apps,
            args.footprint_instances,
        )
        .await;
        if !args.no_footprint_peer {
            measured.peer_run = true;
            measured.statefulsets_converge_seconds = footprint::statefulsets_converge(
                cluster,
                args.footprint_apps,
                args.footprint_instances,
            )
            .await;
        }
        report.footprint = Some(measured);
    }
    report.print();
    report.write_json(&args.json);
    drop(operator);
}

//! Two controller replicas with leader election: exactly one acts; killing
//! it hands over to the other within the lease time, with no double action.

mod support;

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::PersistentVolumeClaim;
use kube::api::{Api, ListParams};
use support::fixtures::{create_app, postgres, set_instances, wait_for_status};
use support::http::{get, sample};
use support::operator::Operator;
use support::process::free_ports;
use support::{TestCluster, wait_until};

const LEASE_SECONDS: u64 = 6;

async fn is_leader(port: u16) -> Option<bool> {
    let (_, body) = get(port, "/metrics").await?;
    Some(sample(&body, "statefulapp_leader", &[])? == 1.0)
}

#[tokio::test]
async fn one_replica_leads_and_the_other_takes_over_when_it_dies() {
    let cluster = TestCluster::shared();
    let operator = Operator::shared().await;
    operator.stop_controller(); // this binary's replicas are the elected ones
    let client = cluster.client().await;
    let ns = cluster.namespace(&client, "leader").await;

    let ports = free_ports(2);
    let mut replicas = vec![
        (
            operator.start_elected_controller("replica-a", ports[0], LEASE_SECONDS),
            ports[0],
        ),
        (
            operator.start_elected_controller("replica-b", ports[1], LEASE_SECONDS),
            ports[1],
        ),
    ];
    let leader = wait_until(Duration::from_secs(60), "a leader", || async {
        let a = is_leader(ports[0]).await?;
        let b = is_leader(ports[1]).await?;
        match (a, b) {
            (true, false) => Some(0),
            (false, true) => Some(1),
            (true, true) => panic!("two leaders at once"),
            (false, false) => None,
        }
    })
    .await;

    create_app(&client, &ns, postgres(2)).await;
    wait_for_status(&client, &ns, "postgres", operator, "two running", |s| {
        s.running == 2
    })
    .await;

    let (mut dead, _) = replicas.remove(leader);
    let (_standby, standby_port) = &replicas[0];
    dead.kill();
    let killed = Instant::now();
    wait_until(
        Duration::from_secs(LEASE_SECONDS * 4),
        "the standby to lead",
        || async { is_leader(*standby_port).await?.then_some(()) },
    )
    .await;
    let handover = killed.elapsed();
    println!(
        "leader handover after SIGKILL: {:.1}s (lease {LEASE_SECONDS}s)",
        handover.as_secs_f64()
    );
    assert!(
        handover <= Duration::from_secs(LEASE_SECONDS + 5),
        "handover took {handover:?}"
    );

    // The new leader acts, and nothing was done twice.
    set_instances(&client, &ns, "postgres", 3).await;
    let status = wait_for_status(&client, &ns, "postgres", operator, "three running", |s| {
        s.running == 3
    })
    .await;
    assert_eq!(status.instances.len(), 3);
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), &ns);
    assert_eq!(
        claims
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .len(),
        3
    );
}

//! API requests failing and timing out: the controller and the node agents
//! talk to kube-apiserver through a proxy that fails a share of their
//! requests (500s, 429s, dropped connections, responses lost after the
//! write, watch streams cut short). The whole tutorial must still hold:
//! same instances, same data, wipes only where asked, no duplicates.
//!
//! The seed is printed; `STATEFULAPP_FAULT_SEED=<n>` replays a run.

mod support;

use support::TestCluster;
use support::fault_proxy::{Fault, FaultProxy, FaultRates};
use support::operator::{Identity, Operator, install_crd_and_storage_class, operator_binary};

const RATES: FaultRates = FaultRates {
    rate: 0.3,
    cut_watch: 0.5,
};

#[tokio::test]
async fn the_tutorial_holds_when_api_requests_fail() {
    let seed = std::env::var("STATEFULAPP_FAULT_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        });
    eprintln!("fault proxy seed: {seed} (replay with STATEFULAPP_FAULT_SEED={seed})");

    let cluster = TestCluster::shared();
    install_crd_and_storage_class(cluster).await;
    let proxy = FaultProxy::start(cluster.client().await, RATES, seed).await;
    let kubeconfig = proxy.write_kubeconfig(&cluster.dir);
    let operator = Operator::launch(
        cluster,
        operator_binary().as_ref(),
        Identity {
            controller_kubeconfig: kubeconfig.clone(),
            agent_kubeconfig: kubeconfig,
            leader_elect_namespace: None,
            capacity_namespace: None,
        },
    );

    support::tutorial::walk(cluster, &operator).await;

    let counts = proxy.counts();
    eprintln!("requests through the fault proxy (seed {seed}): {counts:?}");
    for fault in [
        Fault::ServerError,
        Fault::Throttled,
        Fault::LostResponse,
        Fault::Timeout,
        Fault::CutWatch,
    ] {
        assert!(
            counts.get(&fault).copied().unwrap_or(0) > 0,
            "no {fault:?} was injected (seed {seed}): the run proves nothing about it"
        );
    }
    assert!(proxy.injected() >= 12, "{counts:?}");
}

//! Safe on shared clusters (kwok nodes, the operator as processes, with
//! disk capacity published and checked as the chart does): the
//! StorageClass makes volumes only for StatefulApps, and says so once on
//! any other claim; volumes are pinned to the hostname label a node
//! carries, which need not be its name, and only nodes with an agent take
//! new instances.

mod support;

use std::time::Duration;

use k8s_openapi::api::core::v1::{Node, PersistentVolume, PersistentVolumeClaim, Pod};
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::api::storage::v1::{CSIDriver, CSIStorageCapacity};
use kube::ResourceExt;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use serde_json::json;
use support::cluster::{NodeCapacity, add_node};
use support::fixtures::{WAIT, create_app, postgres, wait_for_event, wait_for_status};
use support::operator::{
    Identity, Operator, PROVISIONER, STORAGE_CLASS, install_crd_and_storage_class, operator_binary,
};
use support::{TestCluster, wait_until};

/// Where the agents publish their nodes' capacity.
const CAPACITY_NAMESPACE: &str = "default";

/// The operator of this test binary, publishing and checking disk
/// capacity (the chart's default, with its `CSIDriver`).
async fn operator() -> &'static Operator {
    static OPERATOR: tokio::sync::OnceCell<Operator> = tokio::sync::OnceCell::const_new();
    OPERATOR
        .get_or_init(|| async {
            let cluster = TestCluster::shared();
            install_crd_and_storage_class(cluster).await;
            let driver: CSIDriver = serde_json::from_value(json!({
                "metadata": { "name": PROVISIONER },
                "spec": { "storageCapacity": true, "attachRequired": false,
                          "podInfoOnMount": false, "volumeLifecycleModes": ["Persistent"] },
            }))
            .unwrap();
            let client = cluster.client().await;
            match Api::<CSIDriver>::all(client)
                .create(&PostParams::default(), &driver)
                .await
            {
                Ok(_) => {}
                Err(kube::Error::Api(e)) if e.code == 409 => {}
                Err(e) => panic!("create CSIDriver: {e}"),
            }
            let identity = Identity {
                controller_kubeconfig: cluster.kubeconfig.clone(),
                agent_kubeconfig: cluster.kubeconfig.clone(),
                leader_elect_namespace: None,
                capacity_namespace: Some(CAPACITY_NAMESPACE.into()),
            };
            Operator::launch(cluster, operator_binary().as_ref(), identity)
        })
        .await
}

/// The Warning Events of `reason` on the claim `name`.
async fn claim_events(client: &kube::Client, ns: &str, name: &str, reason: &str) -> Vec<Event> {
    let events: Api<Event> = Api::namespaced(client.clone(), ns);
    events
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|e| {
            e.reason.as_deref() == Some(reason)
                && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name)
        })
        .collect()
}

#[tokio::test]
async fn a_claim_that_is_not_a_statefulapps_gets_no_volume_and_one_warning() {
    let cluster = TestCluster::shared();
    let operator = operator().await;
    let client = cluster.client().await;
    let ns = cluster.namespace(&client, "foreign-claim").await;
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), &ns);
    let claim: PersistentVolumeClaim = serde_json::from_value(json!({
        "metadata": { "name": "mine" },
        "spec": { "accessModes": ["ReadWriteOnce"], "storageClassName": STORAGE_CLASS,
                  "resources": { "requests": { "storage": "1Gi" } } },
    }))
    .unwrap();
    claims.create(&PostParams::default(), &claim).await.unwrap();
    let pod: Pod = serde_json::from_value(json!({
        "metadata": { "name": "user" },
        "spec": {
            "containers": [{ "name": "main", "image": "busybox",
                             "volumeMounts": [{ "name": "data", "mountPath": "/data" }] }],
            "volumes": [{ "name": "data", "persistentVolumeClaim": { "claimName": "mine" } }],
        },
    }))
    .unwrap();
    Api::<Pod>::namespaced(client.clone(), &ns)
        .create(&PostParams::default(), &pod)
        .await
        .unwrap();

    let warning = wait_for_event(&client, &ns, "NotAStatefulAppClaim", Some("Warning"), WAIT).await;
    let note = warning.note.unwrap_or_default();
    assert!(note.contains("StatefulApp"), "{note}");
    assert_eq!(
        warning.regarding.and_then(|r| r.name).as_deref(),
        Some("mine")
    );

    // An app's claims in the same namespace are provisioned as ever.
    create_app(&client, &ns, postgres(1)).await;
    wait_for_status(&client, &ns, "postgres", operator, "one running", |s| {
        s.running == 1
    })
    .await;

    // The claim changes, and the controller restarts: no second warning.
    let patch = json!({ "metadata": { "labels": { "touched": "yes" } } });
    claims
        .patch("mine", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    operator.restart_controller();
    tokio::time::sleep(Duration::from_secs(8)).await;
    let events = claim_events(&client, &ns, "mine", "NotAStatefulAppClaim").await;
    assert_eq!(events.len(), 1, "{events:?}");
    assert!(
        events[0].series.is_none(),
        "repeated: {:?}",
        events[0].series
    );

    // No volume was made for it; it waits, unbound.
    let volumes = Api::<PersistentVolume>::all(client.clone())
        .list(&ListParams::default())
        .await
        .unwrap();
    let for_it: Vec<String> = volumes
        .items
        .iter()
        .filter(|pv| {
            pv.spec
                .as_ref()
                .and_then(|s| s.claim_ref.as_ref())
                .is_some_and(|r| {
                    r.namespace.as_deref() == Some(ns.as_str()) && r.name.as_deref() == Some("mine")
                })
        })
        .map(|pv| pv.name_any())
        .collect();
    assert!(for_it.is_empty(), "volumes made for it: {for_it:?}");
    let claim = claims.get("mine").await.unwrap();
    assert_eq!(
        claim.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Pending")
    );
    assert!(
        claim
            .annotations()
            .contains_key("statefulapp.io/provisioning-refused")
    );
}

/// A kwok node `name` whose hostname label is `hostname`, in `pool`.
async fn node_with_hostname(client: &kube::Client, name: &str, hostname: &str, pool: &str) {
    add_node(client, name, NodeCapacity::default())
        .await
        .expect("create node");
    let patch = json!({ "metadata": { "labels": {
        "kubernetes.io/hostname": hostname, "pool": pool,
    }}});
    Api::<Node>::all(client.clone())
        .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("label node");
}

#[tokio::test]
async fn volumes_are_pinned_to_the_hostname_a_node_carries_and_only_agent_nodes_take_them() {
    let cluster = TestCluster::shared();
    let operator = operator().await;
    let client = cluster.client().await;
    let ns = cluster.namespace(&client, "hostname").await;
    let suffix = &ns[ns.len() - 6..];
    // Named like a cloud instance, its hostname something else.
    let with_agent = format!("ip-10-0-0-{suffix}");
    let hostname = format!("db-{suffix}.example");
    node_with_hostname(&client, &with_agent, &hostname, &ns).await;
    operator.restart_agent(&with_agent);
    // A node of the pool without an agent.
    let without_agent = format!("no-agent-{suffix}");
    node_with_hostname(&client, &without_agent, &format!("other-{suffix}"), &ns).await;

    let capacities: Api<CSIStorageCapacity> = Api::namespaced(client.clone(), CAPACITY_NAMESPACE);
    let published = wait_until(WAIT, "the agent's capacity", || {
        let capacities = capacities.clone();
        let name = format!("{STORAGE_CLASS}.{with_agent}");
        async move { capacities.get_opt(&name).await.ok().flatten() }
    })
    .await;
    let topology = published.node_topology.and_then(|t| t.match_labels);
    assert_eq!(
        topology.and_then(|l| l.get("kubernetes.io/hostname").cloned()),
        Some(hostname.clone())
    );

    let mut app = postgres(3);
    app["spec"]["template"]["spec"]["nodeSelector"] = json!({ "pool": ns });
    create_app(&client, &ns, app).await;
    let status = wait_for_status(&client, &ns, "postgres", operator, "3 running", |s| {
        s.running == 3
    })
    .await;
    let volumes: Api<PersistentVolume> = Api::all(client.clone());
    for instance in &status.instances {
        assert_eq!(
            instance.node.as_deref(),
            Some(with_agent.as_str()),
            "{}: only the node with an agent takes volumes",
            instance.id
        );
        let name = instance.volumes[0].persistent_volume.clone().unwrap();
        let pv = volumes.get(&name).await.unwrap();
        let terms = pv.spec.unwrap().node_affinity.unwrap().required.unwrap();
        let pinned = serde_json::to_value(&terms.node_selector_terms).unwrap();
        assert_eq!(
            pinned,
            json!([{ "matchExpressions": [
                { "key": "kubernetes.io/hostname", "operator": "In", "values": [hostname] },
            ]}]),
            "{name}"
        );
    }

    // A stopped instance comes back on its node through its volume's pin.
    let apps: Api<statefulapp_operator::api::StatefulApp> = Api::namespaced(client.clone(), &ns);
    let patch = json!({ "spec": { "instances": 2, "reservation": { "resources": "Release" } } });
    apps.patch("postgres", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    wait_for_status(&client, &ns, "postgres", operator, "one stopped", |s| {
        s.running == 2 && s.stopped == 1
    })
    .await;
    support::fixtures::set_instances(&client, &ns, "postgres", 3).await;
    let restarted = wait_for_status(&client, &ns, "postgres", operator, "3 running again", |s| {
        s.running == 3
    })
    .await;
    let ids = |s: &statefulapp_operator::api::StatefulAppStatus| {
        s.instances.iter().map(|i| i.id.clone()).collect::<Vec<_>>()
    };
    assert_eq!(ids(&restarted), ids(&status), "the same instances");
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    for pod in pods.list(&ListParams::default()).await.unwrap() {
        assert_eq!(
            pod.spec.as_ref().and_then(|s| s.node_name.as_deref()),
            Some(with_agent.as_str()),
            "{}",
            pod.name_any()
        );
    }
}

#[tokio::test]
async fn the_disruption_budget_follows_the_spec_and_refuses_an_eviction_past_it() {
    use k8s_openapi::api::policy::v1::PodDisruptionBudget;
    use kube::api::EvictParams;
    let cluster = TestCluster::shared();
    let operator = operator().await;
    let client = cluster.client().await;
    let ns = cluster.namespace(&client, "budget").await;
    let mut app = postgres(3);
    app["spec"]["disruption"] = json!({ "maxUnavailable": 0 });
    create_app(&client, &ns, app).await;
    wait_for_status(&client, &ns, "postgres", operator, "3 ready", |s| {
        s.ready == 3
    })
    .await;
    let budgets: Api<PodDisruptionBudget> = Api::namespaced(client.clone(), &ns);
    let budget_where = |what: &'static str, accept: fn(&PodDisruptionBudget) -> bool| {
        let budgets = budgets.clone();
        async move {
            // kube-controller-manager's disruption controller learns the
            // StatefulApp kind (installed just before on this fresh plane)
            // only on its 30 s discovery refresh, and looks at a budget it
            // failed to sync again only when the budget or a pod changes:
            // such a budget is touched (an annotation nobody reads).
            wait_until(Duration::from_secs(120), what, move || {
                let budgets = budgets.clone();
                async move {
                    let budget = budgets.get_opt("postgres-budget").await.ok().flatten()?;
                    let failed = budget.status.as_ref().and_then(|s| s.conditions.as_ref());
                    if failed.is_some_and(|cs| cs.iter().any(|c| c.reason == "SyncFailed")) {
                        tokio::time::sleep(Duration::from_secs(3)).await;
                        let touch = json!({ "metadata": { "annotations": {
                            "test.statefulapp.io/touched": unique_now(),
                        }}});
                        let _ = budgets
                            .patch(
                                "postgres-budget",
                                &PatchParams::default(),
                                &Patch::Merge(&touch),
                            )
                            .await;
                    }
                    accept(&budget).then_some(budget)
                }
            })
            .await
        }
    };
    let budget = budget_where("a budget of 3 healthy pods allowing none down", |b| {
        b.status.as_ref().is_some_and(|s| {
            s.expected_pods == 3 && s.current_healthy == 3 && s.disruptions_allowed == 0
        })
    })
    .await;
    let owner = &budget.owner_references()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.controller),
        ("StatefulApp", Some(true))
    );

    // A drain's eviction of an instance pod is refused by the budget.
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let instance_pods = pods
        .list(&ListParams::default().labels("statefulapp.io/app=postgres"))
        .await
        .unwrap();
    assert_eq!(instance_pods.items.len(), 3);
    let name = instance_pods.items[0].name_any();
    let (evicted, said) = evict_with_kubectl(cluster, &ns, &name);
    assert!(
        !evicted,
        "an eviction past the budget must be refused: {said}"
    );
    assert!(
        said.contains("TooManyRequests") && said.contains("disruption budget"),
        "{said}"
    );
    let pod = pods.get(&name).await.unwrap();
    assert!(pod.metadata.deletion_timestamp.is_none(), "still running");

    // The field changes: so does the budget, and one eviction goes through.
    let apps: Api<statefulapp_operator::api::StatefulApp> = Api::namespaced(client.clone(), &ns);
    let patch = json!({ "spec": { "disruption": { "maxUnavailable": 1 } } });
    apps.patch("postgres", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    budget_where("maxUnavailable 1, one disruption allowed", |b| {
        b.spec.as_ref().and_then(|s| s.max_unavailable.clone())
            == Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(1))
            && b.status
                .as_ref()
                .is_some_and(|s| s.disruptions_allowed == 1)
    })
    .await;
    pods.evict(&name, &EvictParams::default())
        .await
        .expect("one eviction fits the budget");
    wait_for_status(&client, &ns, "postgres", operator, "3 ready again", |s| {
        s.ready == 3
    })
    .await;

    // A stopped instance's reservation pod is not counted.
    support::fixtures::set_instances(&client, &ns, "postgres", 2).await;
    wait_for_status(
        &client,
        &ns,
        "postgres",
        operator,
        "one stopped, held",
        |s| {
            s.stopped == 1
                && s.instances.iter().any(|i| {
                    i.reservation.as_ref().is_some_and(|r| {
                        r.state == statefulapp_operator::api::ReservationState::Held
                    })
                })
        },
    )
    .await;
    budget_where("2 expected pods", |b| {
        b.status
            .as_ref()
            .is_some_and(|s| s.expected_pods == 2 && s.current_healthy == 2)
    })
    .await;

    // The field goes: so does the budget.
    let patch = json!({ "spec": { "disruption": null } });
    apps.patch("postgres", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    wait_until(WAIT, "the budget deleted", || {
        let budgets = budgets.clone();
        async move {
            budgets
                .get_opt("postgres-budget")
                .await
                .ok()
                .filter(Option::is_none)
        }
    })
    .await;
}

/// A value that differs on each call: seconds and nanoseconds since the epoch.
fn unique_now() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    format!("{}.{}", now.as_secs(), now.subsec_nanos())
}

/// Evicts `pod` through the Eviction API with kubectl, which (unlike the
/// Rust client) does not retry a refusal (429); returns whether it was
/// evicted and what the server said.
fn evict_with_kubectl(cluster: &TestCluster, ns: &str, pod: &str) -> (bool, String) {
    let body = cluster.dir.join(format!("eviction-{ns}-{pod}.json"));
    let eviction = json!({
        "apiVersion": "policy/v1", "kind": "Eviction",
        "metadata": { "name": pod, "namespace": ns },
    });
    std::fs::write(&body, eviction.to_string()).unwrap();
    let path = format!("/api/v1/namespaces/{ns}/pods/{pod}/eviction");
    let output = cluster
        .kubectl()
        .args(["create", "--raw", &path, "-f"])
        .arg(&body)
        .output()
        .unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), said)
}

//! The invariants I1-I7 of the design, each by a test that fails if it
//! breaks, against the real control plane with the operator as processes.

mod support;

use std::time::Duration;

use k8s_openapi::api::core::v1::{Event, PersistentVolume, PersistentVolumeClaim, Pod};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use kube::{Client, ResourceExt};
use serde_json::json;
use statefulapp_operator::api::{InstanceState, InstanceStatus, StatefulApp, StatefulAppStatus};
use support::fixtures::{
    WAIT, create_app, in_state, postgres, set_instances, wait_for_dir, wait_for_status,
};
use support::operator::Operator;
use support::{TestCluster, wait_until};

struct Scenario {
    client: Client,
    ns: String,
    operator: &'static Operator,
}

impl Scenario {
    async fn new(prefix: &str) -> Scenario {
        let cluster = TestCluster::shared();
        let operator = Operator::shared().await;
        let client = cluster.client().await;
        let ns = cluster.namespace(&client, prefix).await;
        Scenario {
            client,
            ns,
            operator,
        }
    }

    fn apps(&self) -> Api<StatefulApp> {
        Api::namespaced(self.client.clone(), &self.ns)
    }

    async fn wait(
        &self,
        what: &str,
        accept: impl Fn(&StatefulAppStatus) -> bool,
    ) -> StatefulAppStatus {
        wait_for_status(
            &self.client,
            &self.ns,
            "postgres",
            self.operator,
            what,
            accept,
        )
        .await
    }

    /// Creates postgres with `n` running instances and writes a marker file
    /// into each instance's volume; returns the instances.
    async fn running_with_markers(&self, n: i32) -> Vec<InstanceStatus> {
        create_app(&self.client, &self.ns, postgres(n)).await;
        let status = self
            .wait("instances running", |s| s.running == n && s.ready == n)
            .await;
        for instance in &status.instances {
            let dir = self.dir(instance);
            wait_for_dir(&dir).await;
            std::fs::write(dir.join("marker"), &instance.id).unwrap();
        }
        status.instances
    }

    fn dir(&self, instance: &InstanceStatus) -> std::path::PathBuf {
        self.operator.data_dir(
            instance.node.as_deref().expect("placed"),
            &self.ns,
            &instance.volumes[0].persistence_id,
        )
    }

    fn assert_marker(&self, instance: &InstanceStatus) {
        let marker = self.dir(instance).join("marker");
        let content = std::fs::read_to_string(&marker)
            .unwrap_or_else(|e| panic!("data of {} lost ({}): {e}", instance.id, marker.display()));
        assert_eq!(content, instance.id);
    }

    /// Starts the one instance of `before` again and checks that it is the
    /// same instance, on the same node, with its data.
    async fn start_again(&self, what: &str, before: &[InstanceStatus]) {
        set_instances(&self.client, &self.ns, "postgres", 1).await;
        let status = self.wait(what, |st| st.running == 1 && st.ready == 1).await;
        same_instances(&status, before);
        self.assert_marker(&before[0]);
    }

    async fn annotate(&self, key: &str, value: &str) {
        let patch = json!({ "metadata": { "annotations": { key: value } } });
        self.apps()
            .patch("postgres", &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .unwrap();
    }
}

fn same_instances(status: &StatefulAppStatus, before: &[InstanceStatus]) {
    let ids = |list: &[InstanceStatus]| {
        let mut v: Vec<(String, Option<String>, String)> = list
            .iter()
            .map(|i| {
                (
                    i.id.clone(),
                    i.node.clone(),
                    i.volumes[0].persistence_id.clone(),
                )
            })
            .collect();
        v.sort();
        v
    };
    assert_eq!(
        ids(&status.instances),
        ids(before),
        "instances, nodes or persistenceIds changed"
    );
}

/// I1 and self-healing: deleting a pod, a claim or a volume object by hand
/// leads back to the same instance, node and data.
#[tokio::test]
async fn objects_deleted_by_hand_heal_without_losing_data() {
    let s = Scenario::new("heal").await;
    let before = s.running_with_markers(1).await;
    let instance = &before[0];
    let pods: Api<Pod> = Api::namespaced(s.client.clone(), &s.ns);
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(s.client.clone(), &s.ns);
    let volumes: Api<PersistentVolume> = Api::all(s.client.clone());

    // A pod deleted by hand is relaunched as the same instance.
    let pod_name = format!("postgres-{}", &instance.id["postgres.".len()..]);
    let old_uid = pods.get(&pod_name).await.unwrap().uid();
    pods.delete(&pod_name, &DeleteParams::default())
        .await
        .unwrap();
    wait_until(WAIT, "pod relaunched", || {
        let (pods, name, old) = (pods.clone(), pod_name.clone(), old_uid.clone());
        async move {
            let pod = pods.get(&name).await.ok()?;
            let running = pod.status.as_ref()?.phase.as_deref() == Some("Running");
            (pod.uid() != old && running).then_some(())
        }
    })
    .await;
    let status = s
        .wait("running again", |st| st.running == 1 && st.ready == 1)
        .await;
    same_instances(&status, &before);

    // A claim deleted by hand (while stopped) is re-created and re-bound.
    set_instances(&s.client, &s.ns, "postgres", 0).await;
    s.wait("stopped", |st| st.stopped == 1).await;
    let claim = instance.volumes[0].claim.clone();
    let claim_uid = claims.get(&claim).await.unwrap().uid();
    claims
        .delete(&claim, &DeleteParams::default())
        .await
        .unwrap();
    wait_until(WAIT, "claim re-created and bound", || {
        let (claims, claim, old) = (claims.clone(), claim.clone(), claim_uid.clone());
        async move {
            let c = claims.get(&claim).await.ok()?;
            let bound = c.status.as_ref()?.phase.as_deref() == Some("Bound");
            (c.uid() != old && bound).then_some(())
        }
    })
    .await;
    s.assert_marker(instance);

    // A volume object deleted by hand is held (Terminating) by the node
    // agent: the data stays and the instance keeps using it.
    let pv = instance.volumes[0].persistent_volume.clone().unwrap();
    volumes.delete(&pv, &DeleteParams::default()).await.unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let held = volumes
        .get(&pv)
        .await
        .expect("volume object held by the agent's finalizer");
    assert!(held.metadata.deletion_timestamp.is_some());
    assert!(
        held.finalizers()
            .iter()
            .any(|f| f == "statefulapp.io/node-agent")
    );
    s.assert_marker(instance);

    s.start_again("restarted after healing", &before).await;

    // Only a wipe releases it, and then the data goes.
    set_instances(&s.client, &s.ns, "postgres", 0).await;
    s.annotate("statefulapp.io/wipe", &instance.id).await;
    wait_until(WAIT, "held volume released by the wipe", || {
        let (volumes, pv) = (volumes.clone(), pv.clone());
        async move { volumes.get_opt(&pv).await.ok()?.is_none().then_some(()) }
    })
    .await;
    assert!(!s.dir(instance).exists(), "wiped data removed");
}

/// The node agent's finalizer removed by hand: on a live volume object the
/// agent puts it back; on one being deleted the object goes, the data stays,
/// and the provisioner re-creates the object for the claim still bound to
/// it, so the instance comes back with its data.
#[tokio::test]
async fn agent_finalizer_removed_by_hand_loses_no_data() {
    let s = Scenario::new("finalizer").await;
    let before = s.running_with_markers(1).await;
    let instance = &before[0];
    let volumes: Api<PersistentVolume> = Api::all(s.client.clone());
    let pv = instance.volumes[0].persistent_volume.clone().unwrap();
    let has_finalizer = |pv: &PersistentVolume| {
        pv.finalizers()
            .iter()
            .any(|f| f == "statefulapp.io/node-agent")
    };
    let drop_finalizers = || async {
        let patch = json!({ "metadata": { "finalizers": null } });
        volumes
            .patch(&pv, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .unwrap();
    };

    drop_finalizers().await;
    wait_until(WAIT, "finalizer put back by the agent", || {
        let (volumes, pv) = (volumes.clone(), pv.clone());
        async move { has_finalizer(&volumes.get(&pv).await.ok()?).then_some(()) }
    })
    .await;

    set_instances(&s.client, &s.ns, "postgres", 0).await;
    s.wait("stopped", |st| st.stopped == 1).await;
    let old_uid = volumes.get(&pv).await.unwrap().uid();
    volumes.delete(&pv, &DeleteParams::default()).await.unwrap();
    drop_finalizers().await;
    wait_until(WAIT, "volume object re-created for its claim", || {
        let (volumes, pv, old) = (volumes.clone(), pv.clone(), old_uid.clone());
        async move {
            let v = volumes.get(&pv).await.ok()?;
            (v.uid() != old && has_finalizer(&v)).then_some(())
        }
    })
    .await;
    s.assert_marker(instance);

    s.start_again("running again on the re-created volume", &before)
        .await;
}

/// I5: status deleted by hand comes back the same.
#[tokio::test]
async fn deleted_status_is_rebuilt_from_the_cluster() {
    let s = Scenario::new("status").await;
    s.running_with_markers(2).await;
    set_instances(&s.client, &s.ns, "postgres", 1).await;
    let before = s
        .wait("one stopped", |st| st.running == 1 && st.stopped == 1)
        .await;

    let wipe_status = json!({ "status": null });
    s.apps()
        .patch_status(
            "postgres",
            &PatchParams::default(),
            &Patch::Merge(&wipe_status),
        )
        .await
        .unwrap();
    // Nudge a reconcile without changing what is asked for.
    s.annotate("example.com/touch", "1").await;
    let after = s
        .wait("status rebuilt", |st| st.running == 1 && st.stopped == 1)
        .await;
    same_instances(&after, &before.instances);
    assert_eq!(
        in_state(&after, InstanceState::Stopped)[0].id,
        in_state(&before, InstanceState::Stopped)[0].id
    );
}

/// I4: the controller killed (SIGKILL) in the middle of a scale-up and a
/// wipe converges after restart, with no duplicate or lost instance.
#[tokio::test]
async fn controller_killed_mid_operation_converges_without_duplicates() {
    let s = Scenario::new("crash").await;
    let before = s.running_with_markers(1).await;
    for (delay_ms, instances) in [(50u64, 4), (150, 2), (300, 5)] {
        set_instances(&s.client, &s.ns, "postgres", instances).await;
        tokio::time::sleep(Duration::from_millis(delay_ms)).await;
        s.operator.restart_controller();
    }
    let status = s
        .wait("five running after crashes", |st| {
            st.running == 5 && st.ready == 5
        })
        .await;
    assert_eq!(
        status.instances.len(),
        5,
        "no duplicate instances: {status:#?}"
    );
    assert!(status.instances.iter().any(|i| i.id == before[0].id));
    s.assert_marker(&before[0]);

    let claims: Api<PersistentVolumeClaim> = Api::namespaced(s.client.clone(), &s.ns);
    let all = claims.list(&ListParams::default()).await.unwrap().items;
    assert_eq!(all.len(), 5, "one claim per instance and volume");
    assert_one_volume_per_persistence_id_on_its_node(&s, &status).await;

    // A wipe interrupted by a crash resumes.
    let victim = status
        .instances
        .iter()
        .find(|i| i.id != before[0].id)
        .unwrap()
        .clone();
    set_instances(&s.client, &s.ns, "postgres", 4).await;
    s.annotate("statefulapp.io/wipe", &victim.id).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    s.operator.restart_controller();
    let status = s
        .wait("wipe completed after crash", |st| {
            st.instances.len() == 4
                && st.running == 4
                && st.instances.iter().all(|i| i.id != victim.id)
        })
        .await;
    assert!(!s.dir(&victim).exists(), "wiped data removed");
    s.assert_marker(&before[0]);
    assert_eq!(status.instances.len(), 4);
}

/// I2: each persistenceId has exactly one volume object, on its instance's node.
async fn assert_one_volume_per_persistence_id_on_its_node(
    s: &Scenario,
    status: &StatefulAppStatus,
) {
    let volumes: Api<PersistentVolume> = Api::all(s.client.clone());
    let selector = ListParams::default().labels(&format!("statefulapp.io/namespace={}", s.ns));
    let all = volumes.list(&selector).await.unwrap().items;
    for instance in &status.instances {
        for volume in &instance.volumes {
            let matching: Vec<&PersistentVolume> = all
                .iter()
                .filter(|pv| {
                    pv.annotations().get("statefulapp.io/persistence-id")
                        == Some(&volume.persistence_id)
                })
                .collect();
            assert_eq!(
                matching.len(),
                1,
                "volumes of {}: {matching:?}",
                volume.persistence_id
            );
            let node = matching[0].labels().get("statefulapp.io/node");
            assert_eq!(
                node,
                instance.node.as_ref(),
                "{} is not on its instance's node",
                volume.persistence_id
            );
        }
    }
}

/// I6: the operator writes status and its own finalizer, never the spec or
/// the user's annotations (audited through managedFields).
#[tokio::test]
async fn operator_never_writes_spec_or_user_annotations() {
    let s = Scenario::new("owner").await;
    s.running_with_markers(1).await;
    s.annotate("statefulapp.io/wipe-on-delete", "true").await;
    set_instances(&s.client, &s.ns, "postgres", 2).await;
    s.wait("two running", |st| st.running == 2).await;
    let app = s.apps().get("postgres").await.unwrap();
    assert_eq!(app.finalizers(), ["statefulapp.io/cleanup"]);
    for entry in app.metadata.managed_fields.unwrap_or_default() {
        if entry.manager.as_deref() != Some("statefulapp-operator") {
            continue;
        }
        let fields = serde_json::to_value(&entry.fields_v1).unwrap();
        let touched: Vec<&String> = fields
            .as_object()
            .map(|o| o.keys().collect())
            .unwrap_or_default();
        for key in touched {
            assert!(
                key == "f:status" || key == "f:metadata",
                "operator wrote {key}: {fields}"
            );
        }
        if let Some(metadata) = fields.get("f:metadata").and_then(|m| m.as_object()) {
            assert!(
                metadata.keys().all(|k| k == "f:finalizers"),
                "operator wrote metadata other than its finalizer: {fields}"
            );
        }
    }
}

/// I7: a malformed wipe request changes nothing, and says why (Warning
/// Event and Degraded condition).
#[tokio::test]
async fn bad_wipe_annotation_warns_and_destroys_nothing() {
    let s = Scenario::new("badwipe").await;
    let before = s.running_with_markers(2).await;
    let other_app = "mysql.f2419e31-018a-11e6-b721-0261677b407a";
    s.annotate(
        "statefulapp.io/wipe",
        &format!("{},garbage,{other_app}", before[0].id),
    )
    .await;
    let status = s
        .wait("Degraded condition", |st| {
            st.conditions.iter().any(|c| {
                c.type_ == "Degraded" && c.status == "True" && c.reason == "InvalidWipeRequest"
            })
        })
        .await;
    same_instances(&status, &before);
    assert_eq!(status.running, 2);
    for instance in &before {
        s.assert_marker(instance);
    }
    let events: Api<Event> = Api::namespaced(s.client.clone(), &s.ns);
    let warning = wait_until(WAIT, "Warning event", || {
        let events = events.clone();
        async move {
            events
                .list(&ListParams::default())
                .await
                .ok()?
                .items
                .into_iter()
                .find(|e| {
                    e.type_.as_deref() == Some("Warning")
                        && e.reason.as_deref() == Some("InvalidWipeRequest")
                })
        }
    })
    .await;
    let message = warning.message.unwrap_or_default();
    assert!(
        message.contains("garbage") && message.contains("nothing was wiped"),
        "{message}"
    );

    // A well-formed id of this app that names no instance is reported.
    let typo = "postgres.00000000-0000-4000-8000-000000000000";
    s.annotate("statefulapp.io/wipe", typo).await;
    let status = s
        .wait("unknown id reported", |st| {
            st.conditions
                .iter()
                .any(|c| c.type_ == "Degraded" && c.message.contains(typo))
        })
        .await;
    same_instances(&status, &before);
    for instance in &before {
        s.assert_marker(instance);
    }
}

/// A template change relaunches each instance in place: same id, node and
/// data, new pod.
#[tokio::test]
async fn template_change_rolls_instances_in_place() {
    let s = Scenario::new("upgrade").await;
    let before = s.running_with_markers(3).await;
    let patch = json!({ "spec": { "template": { "spec": { "containers": [{
        "name": "postgres", "image": "postgres:9.6",
        "resources": { "requests": { "cpu": "500m", "memory": "256Mi" } },
    }]}}}});
    s.apps()
        .patch("postgres", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    let pods: Api<Pod> = Api::namespaced(s.client.clone(), &s.ns);
    wait_until(WAIT, "all pods on the new image", || {
        let pods = pods.clone();
        async move {
            let list = pods.list(&ListParams::default()).await.ok()?.items;
            let upgraded = list.iter().filter(|p| {
                p.metadata.deletion_timestamp.is_none()
                    && p.spec
                        .as_ref()
                        .is_some_and(|s| s.containers[0].image.as_deref() == Some("postgres:9.6"))
                    && p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
            });
            (upgraded.count() == 3).then_some(())
        }
    })
    .await;
    let status = s
        .wait("upgraded and ready", |st| st.running == 3 && st.ready == 3)
        .await;
    same_instances(&status, &before);
    for instance in &before {
        s.assert_marker(instance);
    }
}

/// Deleting an app with `wipe-on-delete` destroys its volumes and data,
/// even when the annotation comes a moment before the deletion (a GitOps
/// sync that sets it and prunes the app); without it everything is kept
/// (covered by the tutorial test).
#[tokio::test]
async fn wipe_on_delete_destroys_all_volumes_of_the_app() {
    let s = Scenario::new("wipeall").await;
    let before = s.running_with_markers(2).await;
    // Back to back: no time for the controller to see the annotation first.
    s.annotate("statefulapp.io/wipe-on-delete", "true").await;
    s.apps()
        .delete("postgres", &DeleteParams::default())
        .await
        .unwrap();
    let volumes: Api<PersistentVolume> = Api::all(s.client.clone());
    let selector = ListParams::default().labels(&format!("statefulapp.io/namespace={}", s.ns));
    wait_until(WAIT, "app, claims and volumes gone", || {
        let (apps, volumes, selector) = (s.apps(), volumes.clone(), selector.clone());
        async move {
            let gone = apps.get_opt("postgres").await.ok()?.is_none()
                && volumes.list(&selector).await.ok()?.items.is_empty();
            gone.then_some(())
        }
    })
    .await;
    for instance in &before {
        assert!(
            !s.dir(instance).exists(),
            "data of {} should be wiped",
            instance.id
        );
    }
    // A claim being deleted asks nothing of the provisioner: no growth is
    // completed for it (no write to it or its volume, no VolumeGrown Event).
    let events: Api<Event> = Api::namespaced(s.client.clone(), &s.ns);
    let grown: Vec<String> = events
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|e| e.reason.as_deref() == Some("VolumeGrown"))
        .filter_map(|e| e.message)
        .collect();
    assert!(grown.is_empty(), "no volume grew: {grown:?}");
}

/// A node agent killed in the middle of a wipe finishes it after restart;
/// the other instance's data is untouched.
#[tokio::test]
async fn agent_restarted_mid_wipe_finishes_the_wipe() {
    let s = Scenario::new("agentwipe").await;
    let before = s.running_with_markers(2).await;
    set_instances(&s.client, &s.ns, "postgres", 1).await;
    let status = s.wait("one stopped", |st| st.stopped == 1).await;
    let victim = in_state(&status, InstanceState::Stopped)[0].clone();
    let keeper = in_state(&status, InstanceState::Running)[0].clone();
    let node = victim.node.clone().unwrap();

    s.annotate("statefulapp.io/wipe", &victim.id).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    s.operator.restart_agent(&node);
    let volumes: Api<PersistentVolume> = Api::all(s.client.clone());
    let pv = victim.volumes[0].persistent_volume.clone().unwrap();
    wait_until(WAIT, "wiped volume released", || {
        let (volumes, pv) = (volumes.clone(), pv.clone());
        async move { volumes.get_opt(&pv).await.ok()?.is_none().then_some(()) }
    })
    .await;
    assert!(
        !s.dir(&victim).exists(),
        "wipe finished after the agent restart"
    );
    s.assert_marker(&keeper);
    assert_eq!(before.len(), 2);
}

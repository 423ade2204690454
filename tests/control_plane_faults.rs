//! Control-plane faults in the middle of operations: kube-apiserver killed
//! and restarted, etcd killed and restarted, and other clients writing the
//! app meanwhile. Afterwards: no duplicate instances, no lost records (ids,
//! nodes, persistenceIds), no data destroyed without a wipe (marker files in
//! the agents' directories).
//!
//! Every run: a stopped instance started, and stopped instances wiped,
//! through kube-apiserver and etcd restarts, each done within [`RECOVERY`]
//! of the plane answering again. Only instances that already have their
//! node and volume take part, so no volume is provisioned or bound across a
//! fault. Two kube-apiserver restarts: after each, every component resumes
//! its watches after a backoff, which grows with restarts in quick
//! succession.
//!
//! `STATEFULAPP_FAULT_TESTS=1` adds the soak: rounds of scale-ups through a
//! kube-apiserver restart, while the new volumes are provisioned and bound,
//! and of wipes through kube-apiserver and etcd restarts. The binding
//! pipeline (kube-scheduler, the controller-manager's volume binder, the
//! provisioner) waits for each component's watches to come back, and
//! kube-scheduler may hold a pod it found unschedulable mid-outage until an
//! event it recognises, or for up to 5 minutes ([`SOAK_RECOVERY`]).
//!
//! After a fault the tests wait for instances running, not ready: when the
//! controller-manager's watches lag it may mark a node NotReady (20 s grace
//! on this plane), and the node's pods with it, and kwok, unlike a kubelet,
//! never reports them ready again. (API errors, timeouts and cut watches are
//! covered by `tests/api_faults.rs`.)

mod support;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::PersistentVolumeClaim;
use kube::Client;
use kube::api::{Api, ListParams, Patch, PatchParams};
use serde_json::json;
use statefulapp_operator::api::{InstanceState, StatefulApp, StatefulAppStatus};
use support::TestCluster;
use support::fixtures::{
    WAIT, create_app, postgres, set_instances, wait_for_dir, wait_for_status_within,
};
use support::operator::Operator;

/// Bound for an operation interrupted by a fault, from when the restarted
/// component answers again (it takes seconds). Every client resumes a broken
/// watch after a backoff, client-go's and kube-rs's default: up to 30 s,
/// jittered up to twice that; a resumed watch answered 410 Gone costs one
/// more before the relist. Two such waits, and a margin.
const RECOVERY: Duration = Duration::from_secs(180);

/// The soak's bound: kube-scheduler retries a pod left in its unschedulable
/// queue after 5 minutes at the latest (it looks every 30 s).
const SOAK_RECOVERY: Duration = Duration::from_secs(360);

/// Rounds of the soak, three restarts each.
const SOAK_ROUNDS: usize = 3;

/// How long a killed component stays down.
const DOWN_FOR: Duration = Duration::from_secs(3);

/// Both tests restart processes of the one shared plane: one at a time.
static PLANE: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[tokio::test]
async fn faults_on_placed_instances_lose_nothing() {
    let _plane = PLANE.lock().await;
    let cluster = TestCluster::shared();
    let (mut app, placed) = App::start(cluster, 3).await;
    app.set_instances(0).await;
    let stopped = app
        .wait_for(WAIT, "stopped", |s| s.running == 0 && s.stopped == 3)
        .await;
    assert_eq!(records(&stopped), records(&placed), "no lost records");

    // One started again on its node: a pod binding, no volume binding.
    app.set_instances(1).await;
    app.restart_at_once(cluster, "kube-apiserver").await;
    let started = app
        .wait_for(RECOVERY, "started after kube-apiserver restart", |s| {
            s.running == 1 && s.stopped == 2
        })
        .await;
    assert_eq!(records(&started), records(&placed), "no lost records");
    app.assert_data_kept();

    // Two stopped instances wiped: the operator, the node agent and the
    // controller-manager's protection controllers cut short mid-way.
    let wiped = app
        .wipe_stopped_through_restart(cluster, "kube-apiserver", &started)
        .await;
    let wiped = app
        .wipe_stopped_through_restart(cluster, "etcd", &wiped)
        .await;

    app.scale_under_concurrent_writers(&wiped, &[4, 1, 3]).await;
}

#[tokio::test]
async fn soak_restarts_during_volume_binding_lose_nothing() {
    if std::env::var("STATEFULAPP_FAULT_TESTS").as_deref() != Ok("1") {
        eprintln!("skipped: set STATEFULAPP_FAULT_TESTS=1 to run the control-plane fault soak");
        return;
    }
    let _plane = PLANE.lock().await;
    let cluster = TestCluster::shared();
    let (mut app, mut status) = App::start(cluster, 2).await;
    for _ in 0..SOAK_ROUNDS {
        let scaled = app.scale_up_through_restart(cluster, &status, 2).await;
        // Both new instances stopped again, and wiped: the next round
        // starts from running instances only.
        let running = status.running;
        app.set_instances(running).await;
        let stopped = app
            .wait_for(WAIT, "two stopped", |s| {
                s.running == running && s.stopped == 2
            })
            .await;
        assert_eq!(records(&stopped), records(&scaled), "no lost records");
        let wiped = app
            .wipe_stopped_through_restart(cluster, "kube-apiserver", &stopped)
            .await;
        status = app
            .wipe_stopped_through_restart(cluster, "etcd", &wiped)
            .await;
    }
    app.scale_under_concurrent_writers(&status, &[6, 2, 4])
        .await;
}

/// What no fault may change about an instance: its node and the
/// persistenceIds of its volumes.
type Record = (Option<String>, Vec<String>);

/// The record of every instance, by id (each listed once).
fn records(status: &StatefulAppStatus) -> BTreeMap<String, Record> {
    let mut records = BTreeMap::new();
    for instance in &status.instances {
        let volumes = instance
            .volumes
            .iter()
            .map(|v| v.persistence_id.clone())
            .collect();
        let record = (instance.node.clone(), volumes);
        let listed_before = records.insert(instance.id.clone(), record);
        assert!(
            listed_before.is_none(),
            "instance {} listed twice",
            instance.id
        );
    }
    records
}

/// The app under test (`postgres`, in a namespace of its own), and the data
/// directories of its instances, each holding a marker file with the id.
struct App {
    client: Client,
    ns: String,
    operator: &'static Operator,
    data: BTreeMap<String, PathBuf>,
}

impl App {
    /// Creates the app and waits for its `instances`, marked.
    async fn start(cluster: &TestCluster, instances: i32) -> (App, StatefulAppStatus) {
        let operator = Operator::shared().await;
        let client = cluster.client().await;
        let ns = cluster.namespace(&client, "faults").await;
        create_app(&client, &ns, postgres(instances)).await;
        let mut app = App {
            client,
            ns,
            operator,
            data: BTreeMap::new(),
        };
        let placed = app
            .wait_for(WAIT, "placed", |s| {
                s.running == instances && s.ready == instances
            })
            .await;
        app.mark(&placed).await;
        (app, placed)
    }

    fn apps(&self) -> Api<StatefulApp> {
        Api::namespaced(self.client.clone(), &self.ns)
    }

    async fn set_instances(&self, instances: i32) {
        set_instances(&self.client, &self.ns, "postgres", instances).await;
    }

    /// Kills `component` right after the request just made, so that the
    /// operator learns of it only from the restarted plane. (A kill while
    /// pods are deleted or started could also cut kwok short, the simulated
    /// kubelet, which gives up on a pod update that failed with an error it
    /// does not class as retriable and leaves, say, a pod Terminating for
    /// good: a real kubelet retries.)
    async fn restart_at_once(&mut self, cluster: &TestCluster, component: &str) {
        self.restart(cluster, component, Duration::ZERO).await;
    }

    /// Kills `component` while the request just made is carried out, at a
    /// moment 0-99 ms after it that varies from run to run, so that runs
    /// catch the operator before, during and after its writes.
    async fn restart_during(&mut self, cluster: &TestCluster, component: &str) {
        let moment = Duration::from_millis(u64::from(clock_nanos() % 100));
        self.restart(cluster, component, moment).await;
    }

    /// Kills `component` after `moment`, starts it again after [`DOWN_FOR`],
    /// and reconnects.
    async fn restart(&mut self, cluster: &TestCluster, component: &str, moment: Duration) {
        tokio::time::sleep(moment).await;
        eprintln!(
            "{component} killed {} ms after the request",
            moment.as_millis()
        );
        cluster.restart(component, DOWN_FOR).await;
        self.client = cluster.client().await;
    }

    /// Waits for a status (of the app's latest generation) that `accept`s,
    /// and says how long it took.
    async fn wait_for(
        &self,
        within: Duration,
        what: &str,
        accept: impl Fn(&StatefulAppStatus) -> bool,
    ) -> StatefulAppStatus {
        let started = Instant::now();
        let status = wait_for_status_within(
            within,
            &self.client,
            &self.ns,
            "postgres",
            self.operator,
            what,
            accept,
        )
        .await;
        eprintln!("{what}: {:.1}s", started.elapsed().as_secs_f64());
        status
    }

    /// Scales from `before` to `more` running instances more, with
    /// kube-apiserver killed while their volumes are provisioned and bound.
    async fn scale_up_through_restart(
        &mut self,
        cluster: &TestCluster,
        before: &StatefulAppStatus,
        more: i32,
    ) -> StatefulAppStatus {
        let target = before.running + more;
        self.set_instances(target).await;
        self.restart_during(cluster, "kube-apiserver").await;
        let scaled = self
            .wait_for(
                SOAK_RECOVERY,
                "scaled up after kube-apiserver restart",
                |s| s.running == target,
            )
            .await;
        let expected = before.instances.len().max(target as usize);
        assert_eq!(
            scaled.instances.len(),
            expected,
            "stopped instances reused first, none created twice"
        );
        self.assert_kept(before, &scaled);
        self.mark(&scaled).await;
        scaled
    }

    /// Wipes a stopped instance of `before`, with `component` killed while
    /// the operator and the node agent carry the wipe out (no pod is
    /// involved).
    async fn wipe_stopped_through_restart(
        &mut self,
        cluster: &TestCluster,
        component: &str,
        before: &StatefulAppStatus,
    ) -> StatefulAppStatus {
        let victim = before
            .instances
            .iter()
            .find(|i| i.state == InstanceState::Stopped)
            .expect("a stopped instance")
            .id
            .clone();
        let wipe = json!({ "metadata": { "annotations": { "statefulapp.io/wipe": victim } } });
        self.apps()
            .patch("postgres", &PatchParams::default(), &Patch::Merge(&wipe))
            .await
            .expect("request the wipe");
        self.restart_during(cluster, component).await;
        let what = format!("wiped after {component} restart");
        let wiped = self
            .wait_for(RECOVERY, &what, |s| {
                s.running == before.running
                    && s.stopped == before.stopped - 1
                    && s.instances.iter().all(|i| i.id != victim)
            })
            .await;
        self.assert_wiped(&victim, before, &wiped);
        wiped
    }

    /// Writes a marker into the data directory of every instance of `status`.
    async fn mark(&mut self, status: &StatefulAppStatus) {
        for instance in &status.instances {
            let node = instance.node.as_deref().expect("a placed instance");
            let volume = &instance.volumes[0].persistence_id;
            let dir = self.operator.data_dir(node, &self.ns, volume);
            wait_for_dir(&dir).await;
            std::fs::write(dir.join("marker"), &instance.id).unwrap();
            self.data.insert(instance.id.clone(), dir);
        }
    }

    fn assert_data_kept(&self) {
        for (id, dir) in &self.data {
            let marker = std::fs::read_to_string(dir.join("marker"))
                .unwrap_or_else(|e| panic!("data of {id} lost: {e}"));
            assert_eq!(&marker, id);
        }
    }

    /// Every instance of `before` is in `after`, unchanged, with its data.
    fn assert_kept(&self, before: &StatefulAppStatus, after: &StatefulAppStatus) {
        let after = records(after);
        for (id, record) in records(before) {
            assert_eq!(after.get(&id), Some(&record), "record of {id} kept");
        }
        self.assert_data_kept();
    }

    /// The victim and its data are gone; every other instance is kept.
    fn assert_wiped(
        &mut self,
        victim: &str,
        before: &StatefulAppStatus,
        after: &StatefulAppStatus,
    ) {
        let dir = self.data.remove(victim).expect("the victim was marked");
        assert!(!dir.exists(), "the wiped instance's data is gone");
        let mut expected = records(before);
        expected.remove(victim);
        assert_eq!(records(after), expected, "no lost records");
        self.assert_data_kept();
    }

    /// Scales from `before` through `steps` while other clients keep changing
    /// the app's labels and its wipe-on-delete annotation: conflicts are
    /// retried, nothing is done twice.
    async fn scale_under_concurrent_writers(&self, before: &StatefulAppStatus, steps: &[i32]) {
        let writer = tokio::spawn(write_metadata(self.apps(), 40));
        for &instances in steps {
            self.set_instances(instances).await;
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        writer.await.unwrap();
        let last = *steps.last().unwrap();
        let after = self
            .wait_for(RECOVERY, "scaled under concurrent writers", |s| {
                s.running == last
            })
            .await;
        self.assert_kept(before, &after);
        let most = before
            .instances
            .len()
            .max(*steps.iter().max().unwrap() as usize);
        assert!(
            after.instances.len() <= most,
            "at most {most} instances, none created twice: {:?}",
            records(&after)
        );
        let claims: Api<PersistentVolumeClaim> = Api::namespaced(self.client.clone(), &self.ns);
        let claims = claims.list(&ListParams::default()).await.unwrap().items;
        assert_eq!(
            claims.len(),
            after.instances.len(),
            "one claim per instance"
        );
        let app = self.apps().get("postgres").await.unwrap();
        assert_eq!(
            app.metadata.finalizers.unwrap_or_default(),
            ["statefulapp.io/cleanup"],
            "the operator's one finalizer, once"
        );
    }
}

/// Nanoseconds of the wall clock's current second: varies from run to run.
fn clock_nanos() -> u32 {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
    now.expect("clock after 1970").subsec_nanos()
}

/// `rounds` merge patches, 50 ms apart, of a label and of the wipe-on-delete
/// annotation: true, false, true, ... and false in the last round.
async fn write_metadata(apps: Api<StatefulApp>, rounds: usize) {
    for round in 0..rounds {
        let wipe_on_delete = round % 2 == 0 && round + 1 < rounds;
        let patch = json!({ "metadata": {
            "labels": { "example.com/round": round.to_string() },
            "annotations": { "statefulapp.io/wipe-on-delete": wipe_on_delete.to_string() },
        }});
        apps.patch("postgres", &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .expect("patch metadata");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

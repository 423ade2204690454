//! Crash test: a seeded scenario of scale-ups, stops, starts, scale-downs,
//! wipes, template changes, status deletions and app deletions, with the
//! controller killed (SIGKILL) at many points during each step. After every
//! step the cluster converges and the invariants hold, checked on objects and
//! on data (marker files in the volume directories):
//! I1 no data lost without a wipe, I2 one volume per persistenceId on its
//! instance's node, I3 stopped instances keep bound claims and one
//! reservation pod on their node (none beside a running pod), I4 no
//! duplicate or lost instance, I5 status rebuilt after deletion.
//!
//! `STATEFULAPP_CRASH_SEED` picks another scenario; `STATEFULAPP_CRASH_STEPS`
//! makes it longer (a soak).

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use kube::{Client, ResourceExt};
use serde_json::json;
use statefulapp_operator::api::{InstanceState, ReservationState, StatefulApp, StatefulAppStatus};
use support::fixtures::{create_app, postgres, wait_for_dir, wait_for_status};
use support::operator::Operator;
use support::{TestCluster, wait_until};

const KILLS_PER_STEP: usize = 5;

/// A small deterministic generator (xorshift64*), so a seed replays a scenario.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

#[derive(Debug, Clone)]
enum Step {
    Scale(i32),
    Wipe,
    Template,
    DeleteStatus,
    DeleteAndRecreateApp,
}

fn scenario(rng: &mut Rng, steps: usize) -> Vec<Step> {
    let mut plan = vec![Step::Scale(3)];
    while plan.len() < steps {
        plan.push(match rng.below(10) {
            0..=4 => Step::Scale(rng.below(5) as i32),
            5 | 6 => Step::Wipe,
            7 => Step::Template,
            8 => Step::DeleteStatus,
            _ => Step::DeleteAndRecreateApp,
        });
    }
    // Every kind of step happens at least once, whatever the seed.
    for kind in [
        Step::Wipe,
        Step::Template,
        Step::DeleteStatus,
        Step::DeleteAndRecreateApp,
    ] {
        if !plan
            .iter()
            .any(|s| std::mem::discriminant(s) == std::mem::discriminant(&kind))
        {
            plan.push(kind);
        }
    }
    plan
}

struct World<'a> {
    client: Client,
    ns: String,
    operator: &'a Operator,
    desired: i32,
    image: u32,
    /// Instance id -> its data dir, for every instance not wiped.
    live: BTreeMap<String, std::path::PathBuf>,
    wiped: BTreeMap<String, std::path::PathBuf>,
    kills: usize,
}

impl World<'_> {
    fn apps(&self) -> Api<StatefulApp> {
        Api::namespaced(self.client.clone(), &self.ns)
    }

    fn app_json(&self) -> serde_json::Value {
        let mut app = postgres(self.desired);
        app["spec"]["template"]["spec"]["containers"][0]["image"] =
            json!(format!("postgres:9.{}", self.image));
        app
    }

    async fn patch_spec(&self, spec: serde_json::Value) {
        self.apps()
            .patch(
                "postgres",
                &PatchParams::default(),
                &Patch::Merge(&json!({ "spec": spec })),
            )
            .await
            .unwrap();
    }

    /// SIGKILLs and restarts the controller `KILLS_PER_STEP` times at
    /// random moments while the step is being carried out.
    async fn kill_repeatedly(&mut self, rng: &mut Rng) {
        for _ in 0..KILLS_PER_STEP {
            tokio::time::sleep(Duration::from_millis(rng.below(400))).await;
            self.operator.restart_controller();
            self.kills += 1;
        }
    }

    async fn step(&mut self, step: &Step, rng: &mut Rng) {
        match step {
            Step::Scale(n) => {
                self.desired = *n;
                self.patch_spec(json!({ "instances": n })).await;
            }
            Step::Template => {
                self.image += 1;
                self.patch_spec(self.app_json()["spec"].clone()).await;
            }
            Step::Wipe => {
                if self.live.is_empty() {
                    return;
                }
                let ids: Vec<String> = self.live.keys().cloned().collect();
                let victim = ids[rng.below(ids.len() as u64) as usize].clone();
                let dir = self.live.remove(&victim).unwrap();
                self.wiped.insert(victim.clone(), dir);
                let all: Vec<String> = self.wiped.keys().cloned().collect();
                let patch = json!({ "metadata": { "annotations": { "statefulapp.io/wipe": all.join(",") } } });
                self.apps()
                    .patch("postgres", &PatchParams::default(), &Patch::Merge(&patch))
                    .await
                    .unwrap();
            }
            Step::DeleteStatus => {
                let patch = json!({ "status": null });
                self.apps()
                    .patch_status("postgres", &PatchParams::default(), &Patch::Merge(&patch))
                    .await
                    .unwrap();
                // Nudge: a metadata change triggers a reconcile.
                let touch = json!({ "metadata": { "annotations": { "example.com/touch": self.kills.to_string() } } });
                self.apps()
                    .patch("postgres", &PatchParams::default(), &Patch::Merge(&touch))
                    .await
                    .unwrap();
            }
            Step::DeleteAndRecreateApp => {
                self.apps()
                    .delete("postgres", &DeleteParams::default())
                    .await
                    .unwrap();
                let apps = self.apps();
                wait_until(Duration::from_secs(60), "app deleted", || {
                    let apps = apps.clone();
                    async move { apps.get_opt("postgres").await.ok()?.is_none().then_some(()) }
                })
                .await;
                let mut app = self.app_json();
                let wiped: Vec<String> = self.wiped.keys().cloned().collect();
                if !wiped.is_empty() {
                    app["metadata"]["annotations"] =
                        json!({ "statefulapp.io/wipe": wiped.join(",") });
                }
                create_app(&self.client, &self.ns, app).await;
            }
        }
        self.kill_repeatedly(rng).await;
    }

    /// Waits for convergence, then checks every invariant on objects and data.
    async fn converge_and_check(&mut self, what: &str) {
        let desired = self.desired;
        let expected = (self.live.len() as i32).max(desired) as usize;
        let image = format!("postgres:9.{}", self.image);
        let wiped: BTreeSet<String> = self.wiped.keys().cloned().collect();
        let status = wait_for_status(
            &self.client,
            &self.ns,
            "postgres",
            self.operator,
            what,
            |s| {
                s.running == desired
                    && s.ready == desired
                    && s.instances.len() == expected
                    && s.instances
                        .iter()
                        .all(|i| i.state != InstanceState::Wiping && !wiped.contains(&i.id))
                    // Stopped instances hold their resources, running ones
                    // hold no reservation beside their pod.
                    && s.instances.iter().all(|i| match i.state {
                        InstanceState::Stopped => i
                            .reservation
                            .as_ref()
                            .is_some_and(|r| r.state == ReservationState::Held),
                        _ => i.reservation.is_none(),
                    })
            },
        )
        .await;
        // Running pods use the current template.
        let pods: Api<k8s_openapi::api::core::v1::Pod> =
            Api::namespaced(self.client.clone(), &self.ns);
        wait_until(
            Duration::from_secs(60),
            "pods on the current template",
            || {
                let (pods, image) = (pods.clone(), image.clone());
                async move {
                    let list = pods.list(&ListParams::default()).await.ok()?.items;
                    let current = list
                        .iter()
                        .filter(|p| p.metadata.deletion_timestamp.is_none())
                        .filter(|p| !p.labels().contains_key("statefulapp.io/reserved-for"))
                        .all(|p| {
                            p.spec
                                .as_ref()
                                .is_some_and(|s| s.containers[0].image.as_deref() == Some(&image))
                        });
                    current.then_some(())
                }
            },
        )
        .await;
        self.check(&status).await;
    }

    async fn check(&mut self, status: &StatefulAppStatus) {
        let ids: BTreeSet<&String> = status.instances.iter().map(|i| &i.id).collect();
        // I4/I5: every instance known before is still there (none lost).
        for id in self.live.keys() {
            assert!(ids.contains(id), "instance {id} lost: {status:#?}");
        }
        for id in self.wiped.keys() {
            assert!(!ids.contains(id), "wiped instance {id} came back");
        }
        // I1: data of live instances intact; new instances get a marker.
        for instance in &status.instances {
            let node = instance.node.as_deref().expect("placed");
            let dir = self
                .operator
                .data_dir(node, &self.ns, &instance.volumes[0].persistence_id);
            match self.live.get(&instance.id) {
                Some(known) => {
                    assert_eq!(known, &dir, "I2: {} moved", instance.id);
                    let marker = std::fs::read_to_string(dir.join("marker"))
                        .unwrap_or_else(|e| panic!("I1: data of {} lost: {e}", instance.id));
                    assert_eq!(marker, instance.id);
                }
                None => {
                    wait_for_dir(&dir).await;
                    std::fs::write(dir.join("marker"), &instance.id).unwrap();
                    self.live.insert(instance.id.clone(), dir);
                }
            }
        }
        for (id, dir) in &self.wiped {
            assert!(
                !dir.exists(),
                "wiped data of {id} still at {}",
                dir.display()
            );
        }
        // I2: exactly one volume per persistenceId, on the instance's node.
        let volumes: Api<PersistentVolume> = Api::all(self.client.clone());
        let selector =
            ListParams::default().labels(&format!("statefulapp.io/namespace={}", self.ns));
        let all = volumes.list(&selector).await.unwrap().items;
        for instance in &status.instances {
            let pid = &instance.volumes[0].persistence_id;
            let matching: Vec<&PersistentVolume> = all
                .iter()
                .filter(|pv| pv.annotations().get("statefulapp.io/persistence-id") == Some(pid))
                .collect();
            assert_eq!(matching.len(), 1, "I2: volumes of {pid}");
            assert_eq!(
                matching[0].labels().get("statefulapp.io/node"),
                instance.node.as_ref()
            );
        }
        // I3: stopped instances keep their resources on their node (one
        // reservation pod each, none for running instances), and their
        // claims bound.
        let pods: Api<k8s_openapi::api::core::v1::Pod> =
            Api::namespaced(self.client.clone(), &self.ns);
        let reservations = pods
            .list(&ListParams::default().labels("statefulapp.io/reserved-for=postgres"))
            .await
            .unwrap()
            .items;
        let live_reservations: Vec<_> = reservations
            .iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .collect();
        let stopped: Vec<_> = status
            .instances
            .iter()
            .filter(|i| i.state == InstanceState::Stopped)
            .collect();
        assert_eq!(
            live_reservations.len(),
            stopped.len(),
            "I3: one reservation per stopped instance"
        );
        for instance in &stopped {
            let name = &instance.reservation.as_ref().unwrap().pod;
            let pod = live_reservations
                .iter()
                .find(|p| &p.name_any() == name)
                .unwrap_or_else(|| panic!("I3: no reservation pod {name}"));
            assert_eq!(
                pod.spec.as_ref().unwrap().node_name,
                instance.node,
                "I2/I3: {} reserved off its node",
                instance.id
            );
        }
        let claims: Api<PersistentVolumeClaim> = Api::namespaced(self.client.clone(), &self.ns);
        for instance in status
            .instances
            .iter()
            .filter(|i| i.state == InstanceState::Stopped)
        {
            let claim = claims.get(&instance.volumes[0].claim).await.unwrap();
            assert_eq!(
                claim.status.unwrap().phase.as_deref(),
                Some("Bound"),
                "I3: {}",
                instance.id
            );
        }
    }
}

#[tokio::test]
async fn controller_killed_at_many_points_never_loses_or_duplicates() {
    let seed: u64 = std::env::var("STATEFULAPP_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed_5a99);
    let steps: usize = std::env::var("STATEFULAPP_CRASH_STEPS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(12);
    let mut rng = Rng(seed | 1);
    let cluster = TestCluster::shared();
    let operator = Operator::shared().await;
    let client = cluster.client().await;
    let ns = cluster.namespace(&client, "crash").await;
    let mut world = World {
        client: client.clone(),
        ns,
        operator,
        desired: 0,
        image: 5,
        live: BTreeMap::new(),
        wiped: BTreeMap::new(),
        kills: 0,
    };
    create_app(&client, &world.ns, world.app_json()).await;
    let plan = scenario(&mut rng, steps);
    for (i, step) in plan.iter().enumerate() {
        eprintln!("crash: step {i}: {step:?} (kills so far {})", world.kills);
        world.step(step, &mut rng).await;
        world
            .converge_and_check(&format!("convergence after step {i} {step:?}"))
            .await;
    }
    println!(
        "crash: seed {seed:#x}: {} steps, {} SIGKILLs, {} instances kept, {} wiped",
        plan.len(),
        world.kills,
        world.live.len(),
        world.wiped.len()
    );
    assert!(world.kills >= 50, "only {} kill points", world.kills);
}

//! Computes `status` from what was observed and planned. Pure, and a function
//! of the cluster only, so a deleted status comes back the same (I5).
//!
//! The conditions follow kstatus (what Flux waits on): `Reconciling` is True
//! while instances converge, `Stalled` when only a person can help (never
//! both), and both are False once converged; `Ready` says every asked
//! instance runs and is ready; `Degraded` says something is wrong, stuck or
//! not. Each carries the generation it was computed for.

use std::collections::HashSet;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use uuid::Uuid;

use crate::api::{
    InstanceState, InstanceStatus, NodeLossAction, ReservationState, ReservationStatus,
    StatefulAppStatus, VolumeStatus,
};
use crate::controller::model::{InstanceView, Observed};
use crate::controller::plan::{Action, DEFAULT_REPLACE_AFTER_SECONDS, Plan};
use crate::names::{ANNOTATION_WIPE, InstanceId, LABEL_APP, PersistenceId, claim_name};

pub struct StatusInput<'a> {
    pub observed: &'a Observed,
    pub plan: &'a Plan,
    pub generation: Option<i64>,
    pub sizes: &'a [(String, String)],
    /// Problems with the user's input (bad wipe annotation...), if any.
    pub input_errors: &'a [String],
    /// Conditions of the previous status, to keep transition times.
    pub previous: &'a [Condition],
    /// How long the scheduler may find no node for an instance's pod
    /// before the app is `Stalled`.
    pub unschedulable_after: std::time::Duration,
}

pub fn compute_status(input: &StatusInput) -> StatefulAppStatus {
    let observed = input.observed;
    let app = &observed.app.name;
    let mut instances: Vec<&InstanceView> = observed
        .instances
        .values()
        .filter(|i| !i.claims.is_empty() || !i.volumes.is_empty())
        .collect();
    instances.sort_by_key(|i| (i.created.is_none(), i.created, i.uuid));

    let records: Vec<InstanceStatus> = instances
        .iter()
        .map(|i| instance_status(observed, input, i))
        .collect();
    let count = |state| records.iter().filter(|r| r.state == state).count() as i32;
    let running = count(InstanceState::Running);
    let ready = records.iter().filter(|r| r.ready).count() as i32;
    let stopped = count(InstanceState::Stopped);

    let health = health(input, running, ready);
    let conditions = vec![
        condition(
            input,
            "Ready",
            health.ready,
            if health.ready {
                "InstancesReady"
            } else {
                "InstancesNotReady"
            },
            &format!("{ready} of {} instances ready", observed.app.desired),
        ),
        condition(
            input,
            "Reconciling",
            health.reconciling.is_some() && health.stalled.is_none(),
            match (&health.stalled, &health.reconciling) {
                (Some(_), _) => "Stalled",
                (None, Some((reason, _))) => reason,
                (None, None) => "Converged",
            },
            health.reconciling.as_ref().map_or("", |(_, m)| m.as_str()),
        ),
        condition(
            input,
            "Stalled",
            health.stalled.is_some(),
            health.stalled.as_ref().map_or("AsExpected", |(r, _)| r),
            health.stalled.as_ref().map_or("", |(_, m)| m.as_str()),
        ),
        condition(
            input,
            "Degraded",
            health.degraded.is_some(),
            health.degraded.as_ref().map_or("AsExpected", |(r, _)| r),
            health.degraded.as_ref().map_or("", |(_, m)| m.as_str()),
        ),
    ];

    StatefulAppStatus {
        observed_generation: input.generation,
        running,
        stopped,
        ready,
        selector: Some(format!("{LABEL_APP}={app}")),
        instances: records,
        orphaned_volumes: orphaned_volumes(input),
        // Kept by the reconciler, which knows the previous status.
        wiped_instances: Vec::new(),
        conditions,
    }
}

/// The app's health, as its conditions say it; each problem and each kind of
/// work comes with a reason and a message.
struct Health {
    /// Every asked instance runs and is ready.
    ready: bool,
    /// Instances are converging: what is in flight.
    reconciling: Option<(&'static str, String)>,
    /// Something needs a person: the app cannot converge by itself.
    stalled: Option<(&'static str, String)>,
    /// Something is wrong, stuck or not.
    degraded: Option<(&'static str, String)>,
}

/// Instances that are not where the spec wants them yet, by what they wait
/// for, in the order their reason is reported.
#[derive(Default)]
struct InFlight {
    wiping: usize,
    replacing: usize,
    stopping: usize,
    reserving: usize,
    updating: usize,
    growing: usize,
    scaling_up: usize,
    placing: usize,
    starting: usize,
}

impl InFlight {
    /// The reason of the first kind of work in flight, and a message that
    /// counts them all.
    fn describe(&self) -> Option<(&'static str, String)> {
        let kinds = [
            (self.wiping, "Wiping", "wiping"),
            (self.replacing, "Replacing", "to replace after a node loss"),
            (self.stopping, "Stopping", "stopping"),
            (
                self.reserving,
                "Reserving",
                "stopped, their resources not yet held on their node",
            ),
            (
                self.updating,
                "RollingUpdate",
                "to update to the new template",
            ),
            (self.growing, "GrowingVolumes", "with volumes growing"),
            (self.scaling_up, "ScalingUp", "to start"),
            (self.placing, "Placing", "waiting for a node"),
            (self.starting, "Starting", "starting"),
        ];
        let reason = kinds.iter().find(|(n, _, _)| *n > 0)?.1;
        let parts: Vec<String> = kinds
            .iter()
            .filter(|(n, _, _)| *n > 0)
            .map(|(n, _, what)| format!("{n} {what}"))
            .collect();
        Some((reason, parts.join(", ")))
    }
}

fn health(input: &StatusInput, running: i32, ready: i32) -> Health {
    let observed = input.observed;
    let app = &observed.app;
    let plan = input.plan;
    let mut work = InFlight {
        scaling_up: plan.created.len(),
        ..InFlight::default()
    };
    // Instances on a lost node that wait for it (nodeLossPolicy Wait).
    let mut waiting_for_node = Vec::new();
    // Instances whose pod the scheduler has found no node for, for longer
    // than `unschedulable_after`: its message says why.
    let mut unplaceable = Vec::new();
    // Instances with a claim to grow, found in one pass over the plan.
    let grow_asked: HashSet<Uuid> = plan
        .actions
        .iter()
        .filter_map(|a| match a {
            Action::GrowClaim { instance, .. } => Some(*instance),
            _ => None,
        })
        .collect();
    for i in observed.instances.values() {
        if grow_asked.contains(&i.uuid) || i.growing() {
            work.growing += 1;
        }
        let pod = i.pod.as_ref();
        let live_pod = pod.filter(|p| !p.deleting);
        let to_run = plan.to_run.contains(&i.uuid);
        let node_lost = i
            .node
            .as_ref()
            .is_some_and(|n| !observed.ready_nodes.contains(n));
        if i.wiping() || app.wipe_requested.contains(&i.uuid) {
            work.wiping += 1;
        } else if i.orphaning() || (node_lost && (live_pod.is_some() || to_run)) {
            if app.node_loss.action == NodeLossAction::Replace || i.orphaning() {
                work.replacing += 1;
            } else {
                let node = i.node.as_deref().unwrap_or_default();
                waiting_for_node.push(format!(
                    "{} on node {node}",
                    InstanceId::new(&app.name, i.uuid)
                ));
            }
        } else if !to_run {
            let held = i
                .reservation
                .as_ref()
                .is_some_and(|r| r.placed && !r.deleting);
            if pod.is_some() {
                work.stopping += 1;
            } else if app.hold_resources && i.node.is_some() && !held {
                work.reserving += 1;
            }
        } else {
            match pod {
                None => work.scaling_up += 1,
                Some(p) if p.template_hash != app.template_hash => work.updating += 1,
                Some(p) if p.deleting => work.starting += 1,
                Some(p) if p.node.is_none() => {
                    work.placing += 1;
                    if let Some(verdict) = &p.unschedulable
                        && let Some(since) = verdict.since
                        && observed.now.as_second() - since.as_second()
                            >= input.unschedulable_after.as_secs() as i64
                    {
                        unplaceable.push(format!(
                            "{} since {since}: {}",
                            InstanceId::new(&app.name, i.uuid),
                            verdict.message.trim().trim_end_matches('.')
                        ));
                    }
                }
                Some(p) if !(p.running && p.ready) => work.starting += 1,
                Some(_) => {}
            }
        }
    }
    let desired = app.desired as i32;
    let counts = format!("{running} of {desired} instances running, {ready} ready");
    let reconciling = match work.describe() {
        Some((reason, what)) => Some((reason, format!("{what}; {counts}"))),
        // Objects of running instances to re-create or re-bind.
        None if !plan.actions.is_empty() => Some((
            "Repairing",
            format!(
                "{} objects to re-create or re-bind; {counts}",
                plan.actions.len()
            ),
        )),
        None => None,
    };

    let missing = data_missing(observed);
    let stalled = if !input.input_errors.is_empty() {
        Some(("InvalidWipeRequest", listed(input.input_errors, "; ")))
    } else if !missing.is_empty() {
        Some(("DataMissing", listed(&missing, "; ")))
    } else if !waiting_for_node.is_empty() {
        Some((
            "NodeLost",
            format!(
                "{} waiting for a lost node with their data (nodeLossPolicy Wait): {}; set nodeLossPolicy Replace to start new ones elsewhere, or wipe them with the {ANNOTATION_WIPE} annotation",
                instances(waiting_for_node.len()),
                listed(&waiting_for_node, ", ")
            ),
        ))
    } else if !unplaceable.is_empty() {
        unplaceable.sort();
        Some((
            "Unschedulable",
            format!(
                "{} cannot be placed (the scheduler finds no node for {}): {}; make room on the nodes, or change the template's requests, node selector, affinity or tolerations",
                instances(unplaceable.len()),
                if unplaceable.len() == 1 {
                    "its pod"
                } else {
                    "their pods"
                },
                unplaceable.join("; ")
            ),
        ))
    } else {
        None
    };
    let over_size = over_size(input);
    let degraded = stalled.clone().or_else(|| {
        (work.replacing > 0).then(|| {
            let after = app
                .node_loss
                .after_seconds
                .unwrap_or(DEFAULT_REPLACE_AFTER_SECONDS);
            (
                "NodeLost",
                format!(
                    "{} on a lost node, replaced on another node once their node is lost for {after}s (nodeLossPolicy Replace); their volumes are kept",
                    instances(work.replacing)
                ),
            )
        })
    });
    let degraded = degraded
        .or_else(|| (!over_size.is_empty()).then(|| ("VolumeOverSize", listed(&over_size, "; "))));
    Health {
        ready: ready == desired && running == desired,
        reconciling,
        stalled,
        degraded,
    }
}

/// Items a condition message names at most; the rest are counted, so
/// that the status of a large app stays small.
pub const LISTED: usize = 5;

/// The first [`LISTED`] items joined by `separator`, and how many more.
fn listed(items: &[String], separator: &str) -> String {
    let mut message = items[..items.len().min(LISTED)].join(separator);
    if items.len() > LISTED {
        message.push_str(&format!("{separator}and {} more", items.len() - LISTED));
    }
    message
}

/// "1 instance", "2 instances".
fn instances(n: usize) -> String {
    if n == 1 {
        "1 instance".to_string()
    } else {
        format!("{n} instances")
    }
}

/// One message per volume past its size where the size is not enforced
/// (its node agent measures it).
fn over_size(input: &StatusInput) -> Vec<String> {
    let observed = input.observed;
    observed
        .instances
        .values()
        .flat_map(|i| {
            let id = InstanceId::new(&observed.app.name, i.uuid);
            input.sizes.iter().filter_map(move |(name, size)| {
                let volume = i.volumes.get(name)?;
                let used = volume.used?;
                let limit = crate::quantity::bytes(size)?;
                (!volume.size_enforced && used > limit).then(|| {
                    format!(
                        "volume {name} of instance {id} takes {} on node {}, past its size {size} (not enforced: agent.sizeEnforcement none)",
                        crate::quantity::human(used),
                        volume.node.as_deref().unwrap_or("?")
                    )
                })
            })
        })
        .collect()
}

/// One message per instance whose node agent reports a volume's data
/// directory missing: the instance waits instead of starting on empty data.
pub fn data_missing(observed: &Observed) -> Vec<String> {
    observed
        .instances
        .values()
        .flat_map(|i| {
            let id = InstanceId::new(&observed.app.name, i.uuid);
            i.volumes.values().filter_map(move |v| {
                v.data_missing
                    .as_ref()
                    .map(|report| format!("instance {id} does not start: {report}"))
            })
        })
        .collect()
}

fn orphaned_volumes(input: &StatusInput) -> Vec<VolumeStatus> {
    let observed = input.observed;
    observed
        .orphaned_volumes
        .iter()
        .map(|orphan| {
            let id = InstanceId::new(&observed.app.name, orphan.instance);
            VolumeStatus {
                name: orphan.volume.clone(),
                persistence_id: PersistenceId::of(&id, &orphan.volume).to_string(),
                persistent_volume: Some(orphan.object.name.clone()),
                claim: claim_name(&id, &orphan.volume),
                size: input
                    .sizes
                    .iter()
                    .find(|(name, _)| *name == orphan.volume)
                    .map(|(_, size)| size.clone())
                    .unwrap_or_default(),
                used: None,
            }
        })
        .collect()
}

fn instance_status(observed: &Observed, input: &StatusInput, i: &InstanceView) -> InstanceStatus {
    let id = InstanceId::new(&observed.app.name, i.uuid);
    let pod = i.pod.as_ref().filter(|p| !p.deleting);
    let node_lost = i
        .node
        .as_ref()
        .is_some_and(|n| !observed.ready_nodes.contains(n));
    let state = if i.wiping() || observed.app.wipe_requested.contains(&i.uuid) {
        InstanceState::Wiping
    } else if node_lost && (pod.is_some() || input.plan.to_run.contains(&i.uuid)) {
        InstanceState::Unreachable
    } else if pod.is_some_and(|p| p.running) {
        InstanceState::Running
    } else if input.plan.to_run.contains(&i.uuid) {
        InstanceState::Staging
    } else {
        InstanceState::Stopped
    };
    let volumes = input
        .sizes
        .iter()
        .map(|(name, size)| VolumeStatus {
            name: name.clone(),
            persistence_id: PersistenceId::of(&id, name).to_string(),
            persistent_volume: i.volumes.get(name).map(|v| v.name.clone()),
            claim: claim_name(&id, name),
            size: size.clone(),
            used: i
                .volumes
                .get(name)
                .and_then(|v| v.used)
                .map(crate::quantity::human),
        })
        .collect();
    InstanceStatus {
        id: id.to_string(),
        node: i.node.clone(),
        state,
        started_at: pod
            .filter(|p| p.running && state == InstanceState::Running)
            .and_then(|p| p.started_at)
            .map(Time),
        ready: state == InstanceState::Running && pod.is_some_and(|p| p.ready),
        volumes,
        reservation: i.reservation.as_ref().map(|r| ReservationStatus {
            pod: r.name.clone(),
            state: if r.deleting {
                ReservationState::Releasing
            } else if r.placed && r.running {
                ReservationState::Held
            } else {
                ReservationState::Pending
            },
            resources: observed.app.reserved_resources.clone(),
        }),
    }
}

fn condition(
    input: &StatusInput,
    type_: &str,
    status: bool,
    reason: &str,
    message: &str,
) -> Condition {
    let status = if status { "True" } else { "False" }.to_string();
    let previous = input.previous.iter().find(|c| c.type_ == type_);
    // The transition time only moves when the status flips.
    let last_transition_time = match previous {
        Some(p) if p.status == status => p.last_transition_time.clone(),
        _ => Time(input.observed.now),
    };
    Condition {
        type_: type_.to_string(),
        status,
        reason: reason.to_string(),
        message: message.to_string(),
        observed_generation: input.generation,
        last_transition_time,
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::api::NodeLossPolicy;
    use crate::controller::model::Unschedulable;
    use crate::controller::simulation::World;

    const GENERATION: Option<i64> = Some(7);
    const UNSCHEDULABLE_AFTER: std::time::Duration = std::time::Duration::from_secs(60);

    /// The status the reconciler would write now, with `errors` as the
    /// rejected parts of a wipe request.
    fn status_with(world: &mut World, errors: &[String]) -> StatefulAppStatus {
        let plan = world.plan();
        compute_status(&StatusInput {
            observed: &world.observed,
            plan: &plan,
            generation: GENERATION,
            sizes: &[],
            input_errors: errors,
            previous: &[],
            unschedulable_after: UNSCHEDULABLE_AFTER,
        })
    }

    pub(crate) fn status(world: &mut World) -> StatefulAppStatus {
        status_with(world, &[])
    }

    /// (status, reason) of each condition, in order.
    fn conditions(status: &StatefulAppStatus) -> Vec<(&str, &str, &str)> {
        status
            .conditions
            .iter()
            .map(|c| (c.type_.as_str(), c.status.as_str(), c.reason.as_str()))
            .collect()
    }

    fn find<'a>(status: &'a StatefulAppStatus, type_: &str) -> &'a Condition {
        status
            .conditions
            .iter()
            .find(|c| c.type_ == type_)
            .unwrap_or_else(|| panic!("no {type_} condition"))
    }

    pub(crate) fn world_with(instances: usize) -> World {
        let mut world = World::new(3);
        world.observed.app.desired = instances;
        world.converge();
        world
    }

    /// Applies the next plan without letting the cluster move.
    fn apply_plan(world: &mut World) {
        for action in world.plan().actions {
            world.apply(&action);
        }
    }

    #[test]
    fn a_converged_app_is_ready_and_neither_reconciling_nor_stalled() {
        let mut world = world_with(2);
        let status = status(&mut world);
        assert_eq!(
            conditions(&status),
            [
                ("Ready", "True", "InstancesReady"),
                ("Reconciling", "False", "Converged"),
                ("Stalled", "False", "AsExpected"),
                ("Degraded", "False", "AsExpected"),
            ]
        );
        assert!(
            status
                .conditions
                .iter()
                .all(|c| c.observed_generation == GENERATION)
        );
        assert_eq!(status.observed_generation, GENERATION);
    }

    #[test]
    fn a_growing_volume_keeps_the_app_reconciling_until_its_claim_holds_it() {
        let mut world = world_with(1);
        *world.observed.app.volume_sizes.get_mut("pgdata").unwrap() *= 2;
        assert_eq!(
            find(&status(&mut world), "Reconciling").reason,
            "GrowingVolumes"
        );
        world.converge();
        // Asked for, not yet held.
        let instance = world.observed.instances.values_mut().next().unwrap();
        let claim = instance.claims.get_mut("pgdata").unwrap();
        claim.capacity = Some(1 << 30);
        let growing = status(&mut world);
        assert_eq!(find(&growing, "Reconciling").reason, "GrowingVolumes");
        assert_eq!(find(&growing, "Ready").status, "True", "it runs meanwhile");
        let instance = world.observed.instances.values_mut().next().unwrap();
        instance.claims.get_mut("pgdata").unwrap().capacity = Some(2 << 30);
        assert_eq!(find(&status(&mut world), "Reconciling").status, "False");
    }

    #[test]
    fn an_app_stopped_to_zero_is_ready_once_its_pods_are_gone() {
        let mut world = world_with(1);
        world.observed.app.desired = 0;
        let stopping = status(&mut world);
        assert_eq!(find(&stopping, "Reconciling").reason, "Stopping");
        assert_eq!(find(&stopping, "Reconciling").status, "True");
        apply_plan(&mut world);
        // The pod is deleting but not gone: still stopping.
        assert_eq!(find(&status(&mut world), "Reconciling").reason, "Stopping");
        world.converge();
        world.step();
        // Its resources are reserved on its node, then it is stopped.
        assert_eq!(find(&status(&mut world), "Reconciling").reason, "Reserving");
        world.converge();
        let stopped = status(&mut world);
        let reservation = stopped.instances[0].reservation.as_ref().expect("held");
        assert_eq!(reservation.state, ReservationState::Held);
        assert_eq!(stopped.stopped, 1);
        assert_eq!(
            conditions(&stopped)[..3],
            [
                ("Ready", "True", "InstancesReady"),
                ("Reconciling", "False", "Converged"),
                ("Stalled", "False", "AsExpected"),
            ]
        );
    }

    #[test]
    fn scaling_up_reconciles_until_the_new_instance_runs() {
        let mut world = world_with(1);
        let before: Vec<_> = world.observed.instances.keys().copied().collect();
        world.observed.app.desired = 2;
        let asked = status(&mut world);
        let reconciling = find(&asked, "Reconciling");
        assert_eq!(
            (reconciling.status.as_str(), reconciling.reason.as_str()),
            ("True", "ScalingUp")
        );
        assert_eq!(
            reconciling.message,
            "1 to start; 1 of 2 instances running, 1 ready"
        );
        assert_eq!(find(&asked, "Ready").status, "False");
        assert_eq!(find(&asked, "Stalled").status, "False");

        // Claims made, then the pod once they are seen; the scheduler not
        // there yet.
        apply_plan(&mut world);
        apply_plan(&mut world);
        assert_eq!(find(&status(&mut world), "Reconciling").reason, "Placing");

        // Placed and running, not ready yet.
        world.step();
        let pod = world
            .observed
            .instances
            .values_mut()
            .filter(|i| !before.contains(&i.uuid))
            .find_map(|i| i.pod.as_mut())
            .expect("the new instance's pod");
        assert!(pod.running);
        pod.ready = false;
        let starting = status(&mut world);
        assert_eq!(find(&starting, "Reconciling").reason, "Starting");

        world
            .observed
            .instances
            .values_mut()
            .filter_map(|i| i.pod.as_mut())
            .for_each(|p| p.ready = true);
        let done = status(&mut world);
        assert_eq!(find(&done, "Reconciling").status, "False");
        assert_eq!(find(&done, "Ready").status, "True");
    }

    #[test]
    fn a_template_change_is_a_rolling_update() {
        let mut world = world_with(2);
        world.observed.app.template_hash = "v2".into();
        let status = status(&mut world);
        let reconciling = find(&status, "Reconciling");
        assert_eq!(
            (reconciling.status.as_str(), reconciling.reason.as_str()),
            ("True", "RollingUpdate")
        );
        assert!(
            reconciling.message.starts_with("2 to update"),
            "{}",
            reconciling.message
        );
        // The instances still serve: the app stays Ready while it rolls.
        assert_eq!(find(&status, "Ready").status, "True");
        world.converge();
        assert_eq!(
            find(&self::status(&mut world), "Reconciling").status,
            "False"
        );
    }

    #[test]
    fn a_wipe_reconciles_until_the_instance_is_gone() {
        let mut world = world_with(1);
        let uuid = *world.observed.instances.keys().next().unwrap();
        world.observed.app.wipe_requested.insert(uuid);
        world.observed.app.desired = 0;
        assert_eq!(find(&status(&mut world), "Reconciling").reason, "Wiping");
        world.converge();
        world.step();
        assert!(world.observed.instances.is_empty());
        assert_eq!(find(&status(&mut world), "Reconciling").status, "False");
    }

    #[test]
    fn an_invalid_wipe_request_stalls_the_app_and_is_never_reconciling() {
        let mut world = world_with(1);
        world.observed.app.desired = 2; // work in flight too
        let errors = vec!["\"postgres.nope\" is not an instance id".to_string()];
        let status = status_with(&mut world, &errors);
        assert_eq!(
            conditions(&status)[1..],
            [
                ("Reconciling", "False", "Stalled"),
                ("Stalled", "True", "InvalidWipeRequest"),
                ("Degraded", "True", "InvalidWipeRequest"),
            ]
        );
        assert_eq!(find(&status, "Stalled").message, errors[0]);
        // What is in flight is still said.
        assert!(find(&status, "Reconciling").message.contains("1 to start"));
    }

    #[test]
    fn an_instance_the_scheduler_cannot_place_stalls_the_app_after_a_while() {
        let mut world = world_with(1);
        world.observed.app.desired = 2;
        apply_plan(&mut world); // the claims
        apply_plan(&mut world); // the pod
        assert_eq!(find(&status(&mut world), "Reconciling").reason, "Placing");
        let now = world.observed.now;
        let (uuid, pod) = world
            .observed
            .instances
            .iter_mut()
            .find_map(|(uuid, i)| Some((*uuid, i.pod.as_mut().filter(|p| p.node.is_none())?)))
            .expect("the new instance's pod, not placed");
        let message = "0/3 nodes are available: 3 Insufficient cpu.";
        let unschedulable_for = |seconds: i64| Unschedulable {
            since: Some(now - k8s_openapi::jiff::SignedDuration::from_secs(seconds)),
            message: message.into(),
        };

        // Within the patience, the scheduler may still find room.
        pod.unschedulable = Some(unschedulable_for(59));
        let waiting = status(&mut world);
        assert_eq!(
            conditions(&waiting)[1..3],
            [
                ("Reconciling", "True", "Placing"),
                ("Stalled", "False", "AsExpected")
            ]
        );

        let pod = world
            .observed
            .instances
            .get_mut(&uuid)
            .and_then(|i| i.pod.as_mut())
            .unwrap();
        pod.unschedulable = Some(unschedulable_for(60));
        let stalled = status(&mut world);
        assert_eq!(
            conditions(&stalled)[1..],
            [
                ("Reconciling", "False", "Stalled"),
                ("Stalled", "True", "Unschedulable"),
                ("Degraded", "True", "Unschedulable"),
            ]
        );
        let why = &find(&stalled, "Stalled").message;
        let id = InstanceId::new(&world.observed.app.name, uuid).to_string();
        assert!(why.contains(&id), "{why}");
        assert!(why.contains(message.trim_end_matches('.')), "{why}");
    }

    #[test]
    fn missing_data_stalls_the_app() {
        let mut world = world_with(1);
        let volume = world
            .observed
            .instances
            .values_mut()
            .flat_map(|i| i.volumes.values_mut())
            .next()
            .unwrap();
        volume.data_missing = Some("/var/lib/statefulapp/ns/x is missing on node-0".into());
        let status = status(&mut world);
        let stalled = find(&status, "Stalled");
        assert_eq!(
            (stalled.status.as_str(), stalled.reason.as_str()),
            ("True", "DataMissing")
        );
        assert!(stalled.message.contains("is missing on node-0"));
        assert_eq!(find(&status, "Degraded").reason, "DataMissing");
    }

    #[test]
    fn a_volume_past_its_size_degrades_the_app_unless_enforced_and_shows_its_usage() {
        let mut world = world_with(1);
        let volume = world
            .observed
            .instances
            .values_mut()
            .flat_map(|i| i.volumes.values_mut())
            .next()
            .unwrap();
        volume.used = Some(1 << 40);
        let sizes = [
            ("pgdata".to_string(), "1Gi".to_string()),
            ("wal".to_string(), "1Gi".to_string()),
        ];
        let with_sizes = |world: &mut World| {
            let plan = world.plan();
            compute_status(&StatusInput {
                observed: &world.observed,
                plan: &plan,
                generation: GENERATION,
                sizes: &sizes,
                input_errors: &[],
                previous: &[],
                unschedulable_after: UNSCHEDULABLE_AFTER,
            })
        };
        let status = with_sizes(&mut world);
        let degraded = find(&status, "Degraded");
        assert_eq!(
            (degraded.status.as_str(), degraded.reason.as_str()),
            ("True", "VolumeOverSize"),
            "{degraded:?}"
        );
        assert!(
            degraded.message.contains("takes 1Ti"),
            "{}",
            degraded.message
        );
        assert_eq!(find(&status, "Stalled").status, "False");
        let volumes = &status.instances[0].volumes;
        assert!(
            volumes.iter().any(|v| v.used.as_deref() == Some("1Ti")),
            "{volumes:?}"
        );

        let volume = world
            .observed
            .instances
            .values_mut()
            .flat_map(|i| i.volumes.values_mut())
            .next()
            .unwrap();
        volume.size_enforced = true;
        let status = with_sizes(&mut world);
        assert_eq!(find(&status, "Degraded").status, "False");
    }

    #[test]
    fn a_lost_node_stalls_an_app_that_waits_for_it() {
        let mut world = world_with(1);
        let node = world
            .observed
            .instances
            .values()
            .next()
            .unwrap()
            .node
            .clone()
            .unwrap();
        world.lose_node(&node);
        let status = status(&mut world);
        assert_eq!(
            conditions(&status),
            [
                ("Ready", "False", "InstancesNotReady"),
                ("Reconciling", "False", "Stalled"),
                ("Stalled", "True", "NodeLost"),
                ("Degraded", "True", "NodeLost"),
            ]
        );
        assert!(find(&status, "Stalled").message.contains(&node));
    }

    #[test]
    fn a_lost_node_with_replace_is_degraded_and_reconciling_not_stalled() {
        let mut world = world_with(1);
        world.observed.app.node_loss = NodeLossPolicy {
            action: NodeLossAction::Replace,
            after_seconds: Some(60),
        };
        let node = world
            .observed
            .instances
            .values()
            .next()
            .unwrap()
            .node
            .clone()
            .unwrap();
        world.lose_node(&node);
        let waiting = status(&mut world);
        assert_eq!(
            conditions(&waiting)[1..],
            [
                ("Reconciling", "True", "Replacing"),
                ("Stalled", "False", "AsExpected"),
                ("Degraded", "True", "NodeLost"),
            ]
        );
        world.advance(60);
        assert_eq!(find(&status(&mut world), "Reconciling").reason, "Replacing");
        world.converge();
        let replaced = status(&mut world);
        assert_eq!(world.running(), 1);
        assert_eq!(
            conditions(&replaced),
            [
                ("Ready", "True", "InstancesReady"),
                ("Reconciling", "False", "Converged"),
                ("Stalled", "False", "AsExpected"),
                ("Degraded", "False", "AsExpected"),
            ]
        );
    }

    #[test]
    fn a_claim_deleted_under_a_running_instance_is_repaired() {
        let mut world = world_with(1);
        let instance = world.observed.instances.values_mut().next().unwrap();
        instance.claims.remove("pgdata");
        let status = status(&mut world);
        let reconciling = find(&status, "Reconciling");
        assert_eq!(
            (reconciling.status.as_str(), reconciling.reason.as_str()),
            ("True", "Repairing")
        );
        assert_eq!(find(&status, "Ready").status, "True");
    }

    #[test]
    fn a_message_names_a_few_items_and_counts_the_rest() {
        let items: Vec<String> = (0..8).map(|i| format!("i{i}")).collect();
        assert_eq!(listed(&items[..2], ", "), "i0, i1");
        assert_eq!(listed(&items[..LISTED], ", "), "i0, i1, i2, i3, i4");
        assert_eq!(listed(&items, "; "), "i0; i1; i2; i3; i4; and 3 more");
    }

    #[test]
    fn transition_times_move_only_when_a_condition_flips() {
        let mut world = world_with(1);
        let first = status(&mut world);
        world.advance(100);
        world.observed.app.desired = 2;
        let plan = world.plan();
        let later = compute_status(&StatusInput {
            observed: &world.observed,
            plan: &plan,
            generation: GENERATION,
            sizes: &[],
            input_errors: &[],
            previous: &first.conditions,
            unschedulable_after: UNSCHEDULABLE_AFTER,
        });
        let time = |s: &StatefulAppStatus, t: &str| find(s, t).last_transition_time.clone();
        assert_eq!(time(&later, "Stalled"), time(&first, "Stalled"));
        assert_ne!(time(&later, "Reconciling"), time(&first, "Reconciling"));
        assert_ne!(time(&later, "Ready"), time(&first, "Ready"));
    }
}

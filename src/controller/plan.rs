//! The planner: a pure function from the observed state to the actions that
//! move the cluster toward the spec. No I/O, no clock, no randomness (the
//! caller supplies `now` in [`Observed`] and fresh uuids through `new_uuid`).

use std::collections::BTreeSet;

use uuid::Uuid;

use super::model::{InstanceView, Observed, ReservationView};
use crate::api::{KillSelection, NodeLossAction};

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Create the claim of `volume` for an instance, bound to `bind_to` (its
    /// existing persistent volume) when the instance was placed before.
    CreateClaim {
        instance: Uuid,
        volume: String,
        bind_to: Option<String>,
    },
    /// Raise a claim's request to its volume's larger `size`: the
    /// provisioner then grows the volume on its node.
    GrowClaim {
        instance: Uuid,
        claim: String,
        volume: String,
    },
    /// Point an existing persistent volume at its re-created claim.
    RebindVolume {
        volume_object: String,
        claim: String,
    },
    /// Create the instance's pod; bound straight to `node` when its
    /// resources were held there (no scheduling round).
    CreatePod {
        instance: Uuid,
        node: Option<String>,
    },
    /// Hold a stopped instance's resources on its node. `reclaim`: the
    /// kubelet refused the instance's pod for want of them (the reason).
    CreateReservation {
        instance: Uuid,
        node: String,
        reclaim: Option<String>,
    },
    /// Release a reservation (the instance starts, or it is no longer wanted).
    DeleteReservation {
        instance: Uuid,
        pod: String,
    },
    DeletePod {
        instance: Uuid,
        pod: String,
        reason: StopReason,
    },
    /// Put the wipe mark on every claim and volume of the instance. Nothing
    /// is deleted before the marks are stored, so a crash mid-wipe resumes.
    MarkForWipe {
        instance: Uuid,
    },
    /// Put the orphan mark on every claim and volume of an instance being
    /// replaced after a node loss: its volumes are then kept as orphans.
    MarkOrphaned {
        instance: Uuid,
    },
    DeleteClaim {
        instance: Uuid,
        claim: String,
    },
    DeleteVolume {
        instance: Uuid,
        volume_object: String,
    },
}

impl Action {
    /// The instance the action is about (none for a volume re-bind).
    pub fn instance(&self) -> Option<Uuid> {
        match self {
            Action::CreateClaim { instance, .. }
            | Action::GrowClaim { instance, .. }
            | Action::CreatePod { instance, .. }
            | Action::CreateReservation { instance, .. }
            | Action::DeleteReservation { instance, .. }
            | Action::DeletePod { instance, .. }
            | Action::MarkForWipe { instance }
            | Action::MarkOrphaned { instance }
            | Action::DeleteClaim { instance, .. }
            | Action::DeleteVolume { instance, .. } => Some(*instance),
            Action::RebindVolume { .. } => None,
        }
    }

    /// The action's name, for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Action::CreateClaim { .. } => "CreateClaim",
            Action::GrowClaim { .. } => "GrowClaim",
            Action::RebindVolume { .. } => "RebindVolume",
            Action::CreatePod { .. } => "CreatePod",
            Action::CreateReservation { .. } => "CreateReservation",
            Action::DeleteReservation { .. } => "DeleteReservation",
            Action::DeletePod { .. } => "DeletePod",
            Action::MarkForWipe { .. } => "MarkForWipe",
            Action::MarkOrphaned { .. } => "MarkOrphaned",
            Action::DeleteClaim { .. } => "DeleteClaim",
            Action::DeleteVolume { .. } => "DeleteVolume",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopReason {
    /// `instances` went down: the instance stops and stays reserved.
    ScaledDown,
    /// The template changed: the pod is replaced in place.
    Upgrade,
    /// The pod ended; it is replaced.
    Finished,
    Wipe,
    /// Its node is lost: the pod is force-deleted (no kubelet will confirm).
    NodeLost,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct Plan {
    pub actions: Vec<Action>,
    /// Instances that should run (existing ones and the new ones).
    pub to_run: BTreeSet<Uuid>,
    /// Instances created by this plan.
    pub created: Vec<Uuid>,
    /// Instances with a pod of an older template still waiting for the budget.
    pub upgrade_pending: usize,
}

/// Decides what to do. Calling it again on the state the actions produce
/// yields no further actions (the property tests check this).
pub fn plan(observed: &Observed, new_uuid: &mut dyn FnMut() -> Uuid) -> Plan {
    let mut plan = Plan::default();
    let app = &observed.app;

    let (wiping, live): (Vec<&InstanceView>, Vec<&InstanceView>) = observed
        .instances
        .values()
        .partition(|i| app.wipe_all || i.wiping() || app.wipe_requested.contains(&i.uuid));
    for instance in wiping {
        plan_wipe(instance, &mut plan.actions);
    }
    if app.wipe_all {
        return plan;
    }

    // Instances on a node lost for longer than `nodeLossPolicy` allows are
    // replaced: their volumes are detached and kept, never destroyed.
    let (replaced, live): (Vec<&InstanceView>, Vec<&InstanceView>) = live
        .into_iter()
        .partition(|i| i.orphaning() || must_replace(observed, i));
    for instance in replaced {
        plan_replacement(instance, &mut plan.actions);
    }

    // A pod whose instance has neither claims nor volumes left (wiped, or
    // never completed) is only stopped: its instance is not resurrected.
    let (live, remnants): (Vec<&InstanceView>, Vec<&InstanceView>) = live
        .into_iter()
        .partition(|i| !i.claims.is_empty() || !i.volumes.is_empty());
    for instance in remnants {
        if let Some(pod) = instance.pod.as_ref().filter(|p| !p.deleting) {
            plan.actions.push(Action::DeletePod {
                instance: instance.uuid,
                pod: pod.name.clone(),
                reason: StopReason::Wipe,
            });
        }
        release(instance, &mut plan.actions);
    }

    let to_run = choose_instances_to_run(observed, &live);
    for instance in &live {
        ensure_claims(observed, instance, &mut plan.actions);
        let Some(pod) = &instance.pod else {
            if to_run.contains(&instance.uuid) {
                start(observed, instance, &mut plan.actions);
            } else {
                hold(observed, instance, &mut plan.actions);
            }
            continue;
        };
        if pod.deleting {
            continue;
        }
        if !pod.finished {
            // The pod holds the resources now: a reservation beside it
            // would hold them twice.
            release(instance, &mut plan.actions);
        } else if let Some(refused) = &pod.refused
            && to_run.contains(&instance.uuid)
        {
            reclaim(observed, instance, refused, &mut plan.actions);
        }
        let reason = if !to_run.contains(&instance.uuid) {
            Some(StopReason::ScaledDown)
        } else if pod.finished {
            Some(StopReason::Finished)
        } else {
            None
        };
        if let Some(reason) = reason {
            plan.actions.push(Action::DeletePod {
                instance: instance.uuid,
                pod: pod.name.clone(),
                reason,
            });
        }
    }
    plan_rollout(observed, &live, &to_run, &mut plan);

    let missing = app.desired.saturating_sub(to_run.len());
    plan.to_run = to_run;
    for _ in 0..missing {
        // Its claims, then its pod, in the same pass (see `start`).
        let uuid = new_uuid();
        for volume in &app.volumes {
            plan.actions.push(Action::CreateClaim {
                instance: uuid,
                volume: volume.clone(),
                bind_to: None,
            });
        }
        plan.actions.push(Action::CreatePod {
            instance: uuid,
            node: None,
        });
        plan.to_run.insert(uuid);
        plan.created.push(uuid);
    }
    plan
}

fn must_replace(observed: &Observed, instance: &InstanceView) -> bool {
    let policy = &observed.app.node_loss;
    if policy.action != NodeLossAction::Replace {
        return false;
    }
    let Some(node) = &instance.node else {
        return false;
    };
    if observed.ready_nodes.contains(node) {
        return false;
    }
    let grace = policy
        .after_seconds
        .unwrap_or(DEFAULT_REPLACE_AFTER_SECONDS);
    match observed.not_ready_since.get(node) {
        // Not known at all (the cache's list of gone nodes always has
        // the nodes of the app's volumes): nothing will come back.
        None => true,
        Some(since) => observed.now.as_second() - since.as_second() >= grace,
    }
}

/// `nodeLossPolicy.afterSeconds` when `Replace` is chosen without it.
pub const DEFAULT_REPLACE_AFTER_SECONDS: i64 = 300;

fn plan_replacement(instance: &InstanceView, actions: &mut Vec<Action>) {
    let unmarked = instance
        .claims
        .values()
        .any(|c| !c.orphan_marked && !c.deleting)
        || instance
            .volumes
            .values()
            .any(|v| !v.orphan_marked && !v.deleting);
    if unmarked {
        actions.push(Action::MarkOrphaned {
            instance: instance.uuid,
        });
    }
    if let Some(pod) = &instance.pod {
        actions.push(Action::DeletePod {
            instance: instance.uuid,
            pod: pod.name.clone(),
            reason: StopReason::NodeLost,
        });
    }
    release(instance, actions);
    for claim in instance
        .claims
        .values()
        .filter(|c| c.orphan_marked && !c.deleting)
    {
        actions.push(Action::DeleteClaim {
            instance: instance.uuid,
            claim: claim.name.clone(),
        });
    }
}

fn plan_wipe(instance: &InstanceView, actions: &mut Vec<Action>) {
    let unmarked = instance
        .claims
        .values()
        .any(|c| !c.wipe_marked && !c.deleting)
        || instance
            .volumes
            .values()
            .any(|v| !v.wipe_marked && !v.deleting);
    if unmarked {
        actions.push(Action::MarkForWipe {
            instance: instance.uuid,
        });
    }
    if let Some(pod) = instance.pod.as_ref().filter(|p| !p.deleting) {
        actions.push(Action::DeletePod {
            instance: instance.uuid,
            pod: pod.name.clone(),
            reason: StopReason::Wipe,
        });
    }
    release(instance, actions);
    for claim in instance
        .claims
        .values()
        .filter(|c| c.wipe_marked && !c.deleting)
    {
        actions.push(Action::DeleteClaim {
            instance: instance.uuid,
            claim: claim.name.clone(),
        });
    }
    for volume in instance
        .volumes
        .values()
        .filter(|v| v.wipe_marked && !v.deleting)
    {
        actions.push(Action::DeleteVolume {
            instance: instance.uuid,
            volume_object: volume.name.clone(),
        });
    }
}

/// How long a reservation made to win back refused capacity may wait to be
/// placed before the instance's pod tries again without it.
pub const RECLAIM_PATIENCE_SECONDS: i64 = 60;

/// Starts an instance without a pod. Its reservation goes first, and the
/// pod comes once it is gone: the capacity passes from one to the other,
/// never held twice (the kubelet would refuse the pod). The pod is bound
/// straight to the node the reservation held.
///
/// An instance whose claim is being deleted, or re-made, gets its pod
/// only once every claim is seen: the pod must not meet the old claim.
/// A new instance's pod follows its claims in the same pass, as
/// kube-controller-manager's StatefulSet controller does: its claims are
/// applied first, and the pod then reaches kube-scheduler with its claims
/// and lets kube-controller-manager see a consumer for each claim. (Should
/// kube-scheduler meet the pod before a claim, it tries the pod again when
/// the claim arrives.)
fn start(observed: &Observed, instance: &InstanceView, actions: &mut Vec<Action>) {
    let claims_seen = observed
        .app
        .volumes
        .iter()
        .all(|v| instance.claims.get(v).is_some_and(|c| !c.deleting));
    if !claims_seen {
        return;
    }
    match &instance.reservation {
        Some(r) if r.deleting => {}
        Some(r) if r.reclaiming && !r.placed && !reclaim_expired(observed, r) => {}
        Some(r) => {
            actions.push(Action::DeleteReservation {
                instance: instance.uuid,
                pod: r.name.clone(),
            });
            // In the same pass: a reservation is gone once deleted (no
            // grace period), and the pod is applied only after that.
            actions.push(Action::CreatePod {
                instance: instance.uuid,
                node: direct_node(observed, instance),
            });
        }
        None => actions.push(Action::CreatePod {
            instance: instance.uuid,
            node: direct_node(observed, instance),
        }),
    }
}

fn reclaim_expired(observed: &Observed, reservation: &ReservationView) -> bool {
    reservation.created.is_none_or(|created| {
        observed.now.as_second() - created.as_second() >= RECLAIM_PATIENCE_SECONDS
    })
}

/// The node an instance's pod is bound to without kube-scheduler: its own,
/// when its resources were held there and the node takes pods.
fn direct_node(observed: &Observed, instance: &InstanceView) -> Option<String> {
    let node = instance.node.as_ref()?;
    (observed.app.hold_resources && observed.direct_nodes.contains(node)).then(|| node.clone())
}

/// Keeps a stopped instance's resources held on its node (or released,
/// as the app asks); a reservation of an older template is replaced.
fn hold(observed: &Observed, instance: &InstanceView, actions: &mut Vec<Action>) {
    let node = instance
        .node
        .as_ref()
        .filter(|n| observed.app.hold_resources && observed.known_nodes.contains(*n));
    match (&instance.reservation, node) {
        (None, Some(node)) => actions.push(Action::CreateReservation {
            instance: instance.uuid,
            node: node.clone(),
            reclaim: None,
        }),
        (Some(r), Some(_)) if r.hash != observed.app.reservation_hash => release(instance, actions),
        (Some(_), None) => release(instance, actions),
        _ => {}
    }
}

/// The kubelet refused the instance's pod for want of resources (another
/// pod took them in the instant they were free): a reservation wins them
/// back, preempting ordinary pods, and the pod follows once it is placed.
fn reclaim(observed: &Observed, instance: &InstanceView, refused: &str, actions: &mut Vec<Action>) {
    if let Some(node) = instance
        .node
        .as_ref()
        .filter(|_| observed.app.hold_resources)
        && instance.reservation.is_none()
    {
        actions.push(Action::CreateReservation {
            instance: instance.uuid,
            node: node.clone(),
            reclaim: Some(refused.to_string()),
        });
    }
}

fn release(instance: &InstanceView, actions: &mut Vec<Action>) {
    if let Some(r) = instance.reservation.as_ref().filter(|r| !r.deleting) {
        actions.push(Action::DeleteReservation {
            instance: instance.uuid,
            pod: r.name.clone(),
        });
    }
}

/// Running instances stay (minus the ones `killSelection` stops); stopped
/// instances are reused before new ones are created (I3).
fn choose_instances_to_run(observed: &Observed, live: &[&InstanceView]) -> BTreeSet<Uuid> {
    let desired = observed.app.desired;
    let (mut running, mut stopped): (Vec<&InstanceView>, Vec<&InstanceView>) = live
        .iter()
        .partition(|i| i.pod.as_ref().is_some_and(|p| !p.deleting));

    // Oldest first by start (then age, then uuid for a total order).
    running.sort_by_key(|i| {
        let started = i.pod.as_ref().and_then(|p| p.started_at).or(i.created);
        (started.is_none(), started, i.created, i.uuid)
    });
    if observed.app.kill_selection == KillSelection::OldestFirst {
        running.reverse();
    }
    // Running instances listed last are stopped first.
    running.truncate(desired);

    // Reuse stopped instances whose node can take them first, oldest first.
    let reachable = |i: &&InstanceView| {
        i.node
            .as_ref()
            .is_none_or(|n| observed.ready_nodes.contains(n))
    };
    stopped.sort_by_key(|i| (!reachable(i), i.created.is_none(), i.created, i.uuid));
    let room = desired - running.len();
    running
        .into_iter()
        .chain(stopped.into_iter().take(room))
        .map(|i| i.uuid)
        .collect()
}

fn ensure_claims(observed: &Observed, instance: &InstanceView, actions: &mut Vec<Action>) {
    for volume in &observed.app.volumes {
        let existing_volume = instance.volumes.get(volume).filter(|v| !v.deleting);
        match instance.claims.get(volume) {
            None => actions.push(Action::CreateClaim {
                instance: instance.uuid,
                volume: volume.clone(),
                bind_to: existing_volume.map(|v| v.name.clone()),
            }),
            Some(claim) if !claim.deleting => {
                let wanted = observed.app.volume_sizes.get(volume);
                if let (Some(wanted), Some(requested)) = (wanted, claim.requested)
                    && *wanted > requested
                {
                    actions.push(Action::GrowClaim {
                        instance: instance.uuid,
                        claim: claim.name.clone(),
                        volume: volume.clone(),
                    });
                }
                if let Some(v) = existing_volume
                    && v.claim_ref_stale
                    && claim.bound_volume.is_none()
                {
                    actions.push(Action::RebindVolume {
                        volume_object: v.name.clone(),
                        claim: claim.name.clone(),
                    });
                }
            }
            Some(_) => {} // being deleted by someone: re-created once gone
        }
    }
}

/// Replaces pods of an older template in place, never taking more than
/// `1 - minimumHealthCapacity` of the instances down at once.
fn plan_rollout(
    observed: &Observed,
    live: &[&InstanceView],
    to_run: &BTreeSet<Uuid>,
    plan: &mut Plan,
) {
    let app = &observed.app;
    let target = to_run.len();
    let keep_up = (target as f64 * app.minimum_health_capacity).ceil() as usize;
    let mut budget = target.saturating_sub(keep_up);
    if budget == 0 && target > 0 && app.minimum_health_capacity < 1.0 {
        budget = 1;
    }
    let running: Vec<&&InstanceView> = live.iter().filter(|i| to_run.contains(&i.uuid)).collect();
    let down = running
        .iter()
        .filter(|i| !i.pod.as_ref().is_some_and(|p| p.ready && !p.deleting))
        .count()
        + target.saturating_sub(running.len());
    let mut room = budget.saturating_sub(down);

    let outdated = running.iter().filter_map(|i| {
        let pod = i.pod.as_ref()?;
        (!pod.deleting && !pod.finished && pod.template_hash != app.template_hash)
            .then_some((i, pod))
    });
    for (instance, pod) in outdated {
        // A pod that is not ready is down already: replacing it costs nothing.
        if pod.ready {
            if room == 0 {
                plan.upgrade_pending += 1;
                continue;
            }
            room -= 1;
        }
        plan.actions.push(Action::DeletePod {
            instance: instance.uuid,
            pod: pod.name.clone(),
            reason: StopReason::Upgrade,
        });
    }
}

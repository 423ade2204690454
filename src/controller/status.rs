//! Computes `status` from what was observed and planned. Pure, and a function
//! of the cluster only, so a deleted status comes back the same (I5).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

use super::observed::{InstanceView, Observed};
use super::plan::Plan;
use crate::api::{InstanceState, InstanceStatus, StatefulAppStatus, VolumeStatus};
use crate::names::{InstanceId, LABEL_APP, PersistenceId, claim_name};

pub struct StatusInput<'a> {
    pub observed: &'a Observed,
    pub plan: &'a Plan,
    pub generation: Option<i64>,
    pub sizes: &'a [(String, String)],
    /// Problems with the user's input (bad wipe annotation...), if any.
    pub input_errors: &'a [String],
    /// Conditions of the previous status, to keep transition times.
    pub previous: &'a [Condition],
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
    let unreachable = count(InstanceState::Unreachable);

    let desired = observed.app.desired as i32;
    let converged = input.plan.actions.is_empty() && ready == desired && running == desired;
    let mut conditions = Vec::new();
    let (progressing, progress_reason, progress_message) = if converged {
        (
            false,
            "Complete",
            format!("{running} of {desired} instances running"),
        )
    } else if input.plan.upgrade_pending > 0 {
        (
            true,
            "RollingUpdate",
            format!(
                "{} instances wait for the upgrade",
                input.plan.upgrade_pending
            ),
        )
    } else {
        (
            true,
            "Reconciling",
            format!("{running} of {desired} instances running, {ready} ready"),
        )
    };
    conditions.push(condition(
        input,
        "Ready",
        ready >= desired && running == desired,
        if ready >= desired {
            "InstancesReady"
        } else {
            "InstancesNotReady"
        },
        &format!("{ready} of {desired} instances ready"),
    ));
    conditions.push(condition(
        input,
        "Progressing",
        progressing,
        progress_reason,
        &progress_message,
    ));
    let missing = data_missing(observed);
    let (degraded, degraded_reason, degraded_message) = if !input.input_errors.is_empty() {
        (true, "InvalidWipeRequest", input.input_errors.join("; "))
    } else if !missing.is_empty() {
        (true, "DataMissing", missing.join("; "))
    } else if unreachable > 0 {
        (
            true,
            "NodeLost",
            format!(
                "{unreachable} instances are on lost nodes: they keep their data and wait for the node (nodeLossPolicy Wait), or wipe them with the statefulapp.io/wipe annotation"
            ),
        )
    } else {
        (false, "AsExpected", String::new())
    };
    conditions.push(condition(
        input,
        "Degraded",
        degraded,
        degraded_reason,
        &degraded_message,
    ));

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

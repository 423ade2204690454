//! Publishing Events. kube-runtime's `Recorder` folds repeats of an Event
//! into one with a count, from a cache that keeps every Event it published
//! for six minutes and forgets old ones only when it publishes again: after
//! a burst (a thousand apps scaling up) an idle controller held thousands of
//! Events for good, about 6 MB at 1,000 apps x 5 instances.
//!
//! Warnings, the Events that repeat (a failing reconcile, a bad wipe request
//! seen on every pass), keep one recorder. Normal Events (an instance
//! starting, stopping, wiped) go through a recorder that [`Events::renew`]
//! replaces every [`NORMAL_FOLD_WINDOW`], so their repeats fold within that
//! window and nothing outlives it.
//!
//! Every Event's wording is here too, as pure functions (tested below);
//! the reconciler only says which to send.

use std::collections::BTreeMap;
use std::sync::{PoisonError, RwLock};
use std::time::Duration;

use k8s_openapi::api::core::v1::ObjectReference;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::{Client, Resource, ResourceExt};
use uuid::Uuid;

use super::Context;
use super::model::Observed;
use super::plan::{Action, StopReason};
use super::status::data_missing;
use super::wipe_request::WipeRequest;
use crate::api::{InstanceState, StatefulApp, StatefulAppStatus};
use crate::names::{ANNOTATION_ADOPT_NAMESPACE_UID, ANNOTATION_WIPE, InstanceId};

/// How long repeats of a Normal Event fold into one.
pub const NORMAL_FOLD_WINDOW: Duration = Duration::from_secs(60);

pub struct Events {
    client: Client,
    reporter: Reporter,
    warnings: Recorder,
    normal: RwLock<Recorder>,
}

impl Events {
    pub fn new(client: Client, reporter: Reporter) -> Events {
        Events {
            warnings: Recorder::new(client.clone(), reporter.clone()),
            normal: RwLock::new(Recorder::new(client.clone(), reporter.clone())),
            client,
            reporter,
        }
    }

    pub async fn publish(
        &self,
        event: &Event,
        reference: &ObjectReference,
    ) -> Result<(), kube::Error> {
        let recorder = match event.type_ {
            EventType::Warning => self.warnings.clone(),
            EventType::Normal => self
                .normal
                .read()
                .unwrap_or_else(PoisonError::into_inner)
                .clone(),
        };
        recorder.publish(event, reference).await
    }

    /// Starts a new fold window for Normal Events, dropping the old one's
    /// cache (once publishes in flight with it are done).
    pub fn renew(&self) {
        let fresh = Recorder::new(self.client.clone(), self.reporter.clone());
        *self.normal.write().unwrap_or_else(PoisonError::into_inner) = fresh;
    }
}

/// Sends the Events of a reconcile's actions, one per kind of action (not
/// one per action: a scale-up by 500 would otherwise double the API calls
/// it makes).
pub async fn publish_actions(ctx: &Context, app: &StatefulApp, actions: &[Action]) {
    for (reason, note) in summarize(app, actions) {
        emit(ctx, app, EventType::Normal, reason, &note).await;
    }
}

/// The actions' Events, one per reason in the order first seen; each
/// names up to three actions and counts the rest.
pub fn summarize(app: &StatefulApp, actions: &[Action]) -> Vec<(&'static str, String)> {
    let mut by_reason: Vec<(&'static str, Vec<String>)> = Vec::new();
    for action in actions {
        let (reason, note) = describe(app, action);
        match by_reason.iter_mut().find(|(r, _)| *r == reason) {
            Some((_, notes)) => notes.push(note),
            None => by_reason.push((reason, vec![note])),
        }
    }
    by_reason
        .into_iter()
        .map(|(reason, notes)| {
            let note = if notes.len() <= 3 {
                notes.join("; ")
            } else {
                format!("{}; and {} more", notes[..3].join("; "), notes.len() - 3)
            };
            (reason, note)
        })
        .collect()
}

/// Volumes of this app's name from an earlier namespace of the same name:
/// kept and unused, said on every pass (the recorder folds repeats); and
/// the ones a user asked to adopt, said once as they are bound here.
pub async fn report_foreign_volumes(
    ctx: &Context,
    app: &StatefulApp,
    observed: &Observed,
    actions: &[Action],
) {
    for note in foreign_volume_notes(app, observed) {
        warn(ctx, app, "ForeignVolumes", &note).await;
    }
    if let Some(note) = adoption_note(app, observed, actions) {
        emit(ctx, app, EventType::Normal, "AdoptingVolumes", &note).await;
    }
}

/// One note per earlier namespace (uid) whose volumes of this app's name
/// are kept and not used.
pub fn foreign_volume_notes(app: &StatefulApp, observed: &Observed) -> Vec<String> {
    let mut earlier: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for foreign in &observed.foreign_volumes {
        earlier
            .entry(&foreign.namespace_uid)
            .or_default()
            .push(&foreign.name);
    }
    let ns = app.namespace().unwrap_or_default();
    earlier
        .into_iter()
        .map(|(uid, volumes)| {
            format!(
                "{} volumes of an app {} made in an earlier namespace {ns} (uid {uid}) are kept and not used here: \
                 another namespace's data is never adopted by name. To adopt them, annotate the app \
                 {ANNOTATION_ADOPT_NAMESPACE_UID}={uid}; to destroy them, adopt them and wipe their instances. Volumes: {}",
                volumes.len(),
                app.name_any(),
                volumes.join(", ")
            )
        })
        .collect()
}

/// The volumes of an earlier namespace this reconcile binds here, as asked.
pub fn adoption_note(app: &StatefulApp, observed: &Observed, actions: &[Action]) -> Option<String> {
    let adopted: Vec<&str> = actions
        .iter()
        .filter_map(|action| match action {
            Action::RebindVolume { volume_object, .. }
                if observed.adopting.contains(volume_object) =>
            {
                Some(volume_object.as_str())
            }
            _ => None,
        })
        .collect();
    (!adopted.is_empty()).then(|| {
        format!(
            "adopting volumes of an earlier namespace {} as {ANNOTATION_ADOPT_NAMESPACE_UID} asks: {}",
            app.namespace().unwrap_or_default(),
            adopted.join(", ")
        )
    })
}

/// Pods with the app's labels that it does not control.
pub fn lookalike_note(pods: &[String]) -> Option<String> {
    (!pods.is_empty()).then(|| {
        format!(
            "pods with this app's labels that it does not control are left alone (not counted, never stopped): {}",
            pods.join(", ")
        )
    })
}

/// A reconcile that failed (retried).
pub fn reconcile_failed_note(error: &impl std::fmt::Display) -> String {
    format!("reconcile failed, retrying: {error}")
}

/// An instance that turned unreachable: its node `node` is NotReady or gone.
pub fn node_lost_note(instance: &str, node: &str) -> String {
    format!(
        "instance {instance} is unreachable: node {node} is NotReady or gone. Its data stays on that node. \
         Wait for the node (nodeLossPolicy Wait), set nodeLossPolicy Replace to start a new instance elsewhere, \
         or wipe it with the {ANNOTATION_WIPE} annotation"
    )
}

/// A wipe request with parts rejected (`wipe.rejected` not empty): what is
/// ignored, and what is wiped all the same.
pub fn invalid_wipe_note(wipe: &WipeRequest) -> String {
    format!(
        "ignoring part of {ANNOTATION_WIPE}: {}; {}",
        wipe.rejected.join("; "),
        if wipe.valid.is_empty() {
            "nothing was wiped".to_string()
        } else {
            format!(
                "wiping only {}",
                wipe.valid
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        }
    )
}

/// An action's Event: its reason and what it says.
pub fn describe(app: &StatefulApp, action: &Action) -> (&'static str, String) {
    let id = |uuid: &Uuid| InstanceId::new(&app.name_any(), *uuid).to_string();
    match action {
        Action::CreateClaim {
            instance,
            volume,
            bind_to: None,
        } => (
            "ReservingVolume",
            format!("reserving volume {volume} for instance {}", id(instance)),
        ),
        Action::CreateClaim {
            instance,
            volume,
            bind_to: Some(pv),
        } => (
            "ReattachingVolume",
            format!(
                "re-creating the claim of volume {volume} of instance {} on {pv}",
                id(instance)
            ),
        ),
        Action::GrowClaim {
            instance, volume, ..
        } => (
            "GrowingVolume",
            format!(
                "growing volume {volume} of instance {} to {}",
                id(instance),
                app.spec
                    .volumes
                    .iter()
                    .find(|v| &v.name == volume)
                    .map_or("?", |v| v.size.as_str())
            ),
        ),
        Action::RebindVolume {
            volume_object,
            claim,
        } => (
            "ReattachingVolume",
            format!("binding {volume_object} to re-created claim {claim}"),
        ),
        Action::CreatePod {
            instance,
            node: None,
        } => ("Starting", format!("starting instance {}", id(instance))),
        Action::CreatePod {
            instance,
            node: Some(node),
        } => (
            "Starting",
            format!(
                "starting instance {} on {node}, in the resources held for it",
                id(instance)
            ),
        ),
        Action::CreateReservation {
            instance,
            node,
            reclaim: None,
        } => (
            "Reserving",
            format!(
                "holding the resources of stopped instance {} on {node}",
                id(instance)
            ),
        ),
        Action::CreateReservation {
            instance,
            node,
            reclaim: Some(refused),
        } => (
            "Reclaiming",
            format!(
                "the kubelet on {node} refused instance {} ({refused}): reserving its resources again, preempting pods of lower priority if it must",
                id(instance)
            ),
        ),
        Action::DeleteReservation { instance, .. } => (
            "Releasing",
            format!("releasing the reservation of instance {}", id(instance)),
        ),
        Action::DeletePod {
            instance, reason, ..
        } => {
            let why = match reason {
                StopReason::ScaledDown => "scaled down; it keeps its node and volumes",
                StopReason::Upgrade => "relaunching with the new template",
                StopReason::Finished => "its pod ended; relaunching",
                StopReason::Wipe => "wiping",
                StopReason::NodeLost => "its node is lost; replacing it elsewhere",
            };
            (
                "Stopping",
                format!("stopping instance {}: {why}", id(instance)),
            )
        }
        Action::MarkOrphaned { instance } => (
            "ReplacingLostInstance",
            format!(
                "instance {} is on a node lost for longer than nodeLossPolicy allows: starting a new instance elsewhere; its volumes are kept as orphaned (wipe {} to destroy them)",
                id(instance),
                id(instance)
            ),
        ),
        Action::MarkForWipe { instance } => (
            "Wiping",
            format!(
                "wiping instance {}: its volumes and data will be destroyed",
                id(instance)
            ),
        ),
        Action::DeleteClaim { instance, claim } => (
            "Wiping",
            format!("deleting claim {claim} of instance {}", id(instance)),
        ),
        Action::DeleteVolume {
            instance,
            volume_object,
        } => (
            "Wiping",
            format!(
                "destroying volume {volume_object} of instance {}",
                id(instance)
            ),
        ),
    }
}

/// The Events of one pass, sent after its actions are applied and before
/// the status write (which may wait): the actions', missing data, foreign
/// volumes and look-alike pods (said on every pass: the recorder folds
/// repeats).
pub async fn publish_pass(
    ctx: &Context,
    app: &StatefulApp,
    observed: &Observed,
    actions: &[Action],
) {
    publish_actions(ctx, app, actions).await;
    for message in data_missing(observed) {
        warn(ctx, app, "DataMissing", &message).await;
    }
    report_foreign_volumes(ctx, app, observed, actions).await;
    if let Some(note) = lookalike_note(&observed.lookalike_pods) {
        warn(ctx, app, "LookalikePods", &note).await;
    }
}

/// The warnings the new status calls for: each instance that turned
/// unreachable since `previous`, and a wipe request with parts rejected
/// (said on every pass that sees it: the recorder folds repeats into one
/// Event with a count, and the user sees it is current).
pub async fn publish_status(
    ctx: &Context,
    app: &StatefulApp,
    previous: &StatefulAppStatus,
    status: &StatefulAppStatus,
    wipe: &WipeRequest,
) {
    for instance in &status.instances {
        let was_unreachable = previous
            .instances
            .iter()
            .any(|p| p.id == instance.id && p.state == InstanceState::Unreachable);
        if instance.state == InstanceState::Unreachable && !was_unreachable {
            let node = instance.node.as_deref().unwrap_or("?");
            warn(ctx, app, "NodeLost", &node_lost_note(&instance.id, node)).await;
        }
    }
    if !wipe.rejected.is_empty() {
        warn(ctx, app, "InvalidWipeRequest", &invalid_wipe_note(wipe)).await;
    }
}

pub async fn warn(ctx: &Context, app: &StatefulApp, reason: &str, note: &str) {
    emit(ctx, app, EventType::Warning, reason, note).await;
}

pub async fn emit(ctx: &Context, app: &StatefulApp, type_: EventType, reason: &str, note: &str) {
    let event = Event {
        type_,
        reason: reason.into(),
        note: Some(note.into()),
        action: reason.into(),
        secondary: None,
    };
    if let Err(e) = ctx.events.publish(&event, &app.object_ref(&())).await {
        tracing::warn!(error = %e, reason, "could not publish event");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::model::ForeignVolume;
    use crate::controller::simulation::World;

    fn app() -> StatefulApp {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "statefulapp.io/v1alpha1", "kind": "StatefulApp",
            "metadata": { "name": "postgres", "namespace": "shop" },
            "spec": {
                "instances": 1,
                "template": { "spec": { "containers": [{ "name": "db", "image": "db:1" }] } },
                "volumes": [{ "name": "pgdata", "size": "2Gi", "mountPath": "/data" }],
            },
        }))
        .unwrap()
    }

    fn start(n: u128) -> Action {
        Action::CreatePod {
            instance: Uuid::from_u128(n),
            node: None,
        }
    }

    #[test]
    fn one_event_per_reason_names_three_actions_and_counts_the_rest() {
        let grow = Action::GrowClaim {
            instance: Uuid::from_u128(9),
            claim: "c".into(),
            volume: "pgdata".into(),
        };
        let actions = [start(1), grow, start(2), start(3), start(4), start(5)];
        let events = summarize(&app(), &actions);
        assert_eq!(events.len(), 2);
        assert_eq!(events[0].0, "Starting");
        assert!(events[0].1.ends_with("; and 2 more"), "{}", events[0].1);
        assert_eq!(
            events[0].1.matches("starting instance postgres.").count(),
            3
        );
        assert_eq!(
            events[1],
            (
                "GrowingVolume",
                format!(
                    "growing volume pgdata of instance postgres.{} to 2Gi",
                    Uuid::from_u128(9)
                )
            )
        );
    }

    #[test]
    fn foreign_volumes_are_reported_per_earlier_namespace_with_how_to_adopt_them() {
        let mut observed = World::new(1).observed;
        for (name, uid) in [("v1", "old-a"), ("v2", "old-b"), ("v3", "old-a")] {
            observed.foreign_volumes.push(ForeignVolume {
                name: name.into(),
                namespace_uid: uid.into(),
            });
        }
        let notes = foreign_volume_notes(&app(), &observed);
        assert_eq!(notes.len(), 2);
        assert!(notes[0].starts_with(
            "2 volumes of an app postgres made in an earlier namespace shop (uid old-a)"
        ));
        assert!(notes[0].contains("statefulapp.io/adopt-namespace-uid=old-a"));
        assert!(notes[0].ends_with("Volumes: v1, v3"));
        assert!(adoption_note(&app(), &observed, &[]).is_none());
        observed.adopting.insert("v2".into());
        let rebind = Action::RebindVolume {
            volume_object: "v2".into(),
            claim: "c".into(),
        };
        assert_eq!(
            adoption_note(&app(), &observed, &[rebind]).as_deref(),
            Some(
                "adopting volumes of an earlier namespace shop as statefulapp.io/adopt-namespace-uid asks: v2"
            )
        );
    }

    #[test]
    fn lookalike_pods_are_named_only_when_there_are_some() {
        assert_eq!(lookalike_note(&[]), None);
        assert!(
            lookalike_note(&["p1".into(), "p2".into()])
                .unwrap()
                .ends_with(": p1, p2")
        );
    }

    #[test]
    fn a_lost_node_says_where_the_data_is_and_what_to_do() {
        assert_eq!(
            node_lost_note("postgres-1", "node-2"),
            "instance postgres-1 is unreachable: node node-2 is NotReady or gone. Its data stays on that node. \
             Wait for the node (nodeLossPolicy Wait), set nodeLossPolicy Replace to start a new instance elsewhere, \
             or wipe it with the statefulapp.io/wipe annotation"
        );
    }

    #[test]
    fn a_rejected_wipe_request_says_what_is_ignored_and_what_is_wiped() {
        let id = InstanceId::new("postgres", Uuid::from_u128(1));
        let rejected = WipeRequest {
            valid: vec![],
            rejected: vec!["bad 1".into(), "bad 2".into()],
        };
        assert_eq!(
            invalid_wipe_note(&rejected),
            "ignoring part of statefulapp.io/wipe: bad 1; bad 2; nothing was wiped"
        );
        let partly = WipeRequest {
            valid: vec![id.clone()],
            rejected: vec!["bad".into()],
        };
        assert_eq!(
            invalid_wipe_note(&partly),
            format!("ignoring part of statefulapp.io/wipe: bad; wiping only {id}")
        );
    }

    #[test]
    fn a_failed_reconcile_says_it_is_retried() {
        assert_eq!(
            reconcile_failed_note(&"503"),
            "reconcile failed, retrying: 503"
        );
    }
}

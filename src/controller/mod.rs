//! The StatefulApp controller: for each app, observe (its cached pods,
//! claims, volumes and the nodes), plan (pure), apply, then write status. It owns pods
//! and claims of its apps; it never writes an app's spec or annotations (I6)
//! and never touches data (only the node agent does, and only for a wipe).

mod apply;
pub mod cache;
pub mod disruption;
mod events;
mod expectations;
pub mod model;
pub mod observe;
pub mod plan;
pub mod reservation;
pub mod status;
pub mod wipe_request;

#[cfg(test)]
mod plan_tests;
#[cfg(test)]
mod simulation;
#[cfg(test)]
mod status_size;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch};
use kube::runtime::controller::{self, Action as Requeue, Controller};
use kube::runtime::events::Reporter;
use kube::runtime::reflector::ObjectRef;
use kube::{Client, ResourceExt};
use serde_json::json;
use uuid::Uuid;

use self::apply::{Applied, Applier};
pub use self::cache::{Caches, Feeds};
use self::events::{Events, report_foreign_volumes, warn};
use self::expectations::Expectations;
use self::observe::{ClusterObjects, observe};
use self::plan::{Action, plan};
use self::reservation::ReservationConfig;
use self::status::{StatusInput, compute_status, data_missing, failure_conditions};
use self::wipe_request::{check_known, parse_wipe_annotation};
use crate::api::{InstanceState, StatefulApp};
use crate::finalizer;
use crate::metrics::{ActionLabels, ControllerMetrics, ResultLabels};
use crate::names::{
    ANNOTATION_WIPE, ANNOTATION_WIPE_ON_DELETE, FINALIZER_CLEANUP, FINALIZER_WIPE_ON_DELETE,
    InstanceId, LABEL_INSTANCE, patch_params,
};
use crate::{Error, Result};

pub struct Context {
    pub client: Client,
    events: Events,
    pub metrics: Arc<ControllerMetrics>,
    /// StorageClass of the claims the controller creates.
    pub storage_class: String,
    /// What reservation pods of stopped instances are made of.
    pub reservations: ReservationConfig,
    /// Apps reconciled at the same time (bounds memory and API load).
    pub max_concurrent_reconciles: u16,
    /// How long an instance's pod may find no node before its app is
    /// `Stalled`.
    pub unschedulable_after: Duration,
    caches: Caches,
    expectations: Expectations,
    status_writes: StatusWrites,
}

impl Context {
    /// The context, and the watch feeds that [`run`] consumes to keep its
    /// caches up to date.
    pub fn new(
        client: Client,
        storage_class: String,
        metrics: Arc<ControllerMetrics>,
    ) -> (Self, Feeds) {
        let reporter = Reporter {
            controller: "statefulapp-operator".into(),
            instance: std::env::var("POD_NAME").ok(),
        };
        let (caches, feeds) = cache::start(&client);
        let context = Context {
            events: Events::new(client.clone(), reporter),
            metrics,
            client,
            storage_class,
            reservations: ReservationConfig::default(),
            max_concurrent_reconciles: 16,
            unschedulable_after: Duration::from_secs(60),
            caches,
            expectations: Expectations::default(),
            status_writes: StatusWrites::default(),
        };
        (context, feeds)
    }
}

/// Runs the controller until the process is stopped.
pub async fn run(ctx: Arc<Context>, feeds: Feeds) {
    let config = controller::Config::default().concurrency(ctx.max_concurrent_reconciles);
    let renew_events = {
        let ctx = ctx.clone();
        async move {
            let mut every = tokio::time::interval(events::NORMAL_FOLD_WINDOW);
            loop {
                every.tick().await;
                ctx.events.renew();
            }
        }
    };
    let controller = Controller::for_stream(feeds.apps, ctx.caches.apps())
        .with_config(config)
        // By label, not owner: a look-alike pod (our labels, not ours) is
        // reported on its app as soon as it appears.
        .watches_stream(feeds.pods, |pod| app_ref(cache::in_its_namespace(&pod)?))
        .watches_stream(feeds.reservations, |pod| {
            app_ref(cache::reserved_for(&pod)?)
        })
        .watches_stream(feeds.claims, |claim| {
            app_ref(cache::in_its_namespace(&claim)?)
        })
        .watches_stream(feeds.volumes, |pv| {
            app_ref(cache::in_labelled_namespace(&pv)?)
        })
        .watches_stream(feeds.budgets, |budget| {
            app_ref(cache::in_its_namespace(&budget)?)
        })
        // A node turning NotReady (or Ready again) concerns every app that
        // may have instances there; heartbeats that change nothing do not.
        .reconcile_all_on(feeds.node_changes)
        .shutdown_on_signal()
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            if let Err(e) = result {
                tracing::debug!(error = %e, "reconcile failed");
            }
        });
    let namespaces = feeds.namespaces.for_each(|()| async {});
    tokio::select! {
        _ = controller => {}
        _ = renew_events => {}
        _ = namespaces => {}
    }
}

/// The app a claim or volume belongs to, as its caches file it.
fn app_ref((ns, name): cache::AppKey) -> Option<ObjectRef<StatefulApp>> {
    Some(ObjectRef::new(&name).within(&ns))
}

fn error_policy(app: Arc<StatefulApp>, error: &Error, _ctx: Arc<Context>) -> Requeue {
    tracing::warn!(app = %app.name_any(), %error, "reconcile failed, retrying");
    Requeue::requeue(Duration::from_secs(5))
}

/// Times and counts every reconcile.
async fn reconcile(app: Arc<StatefulApp>, ctx: Arc<Context>) -> Result<Requeue> {
    let started = std::time::Instant::now();
    let result = reconcile_app(app.clone(), ctx.clone()).await;
    if let Err(error) = &result {
        report_failure(&ctx, &app, error).await;
    }
    let metrics = &ctx.metrics;
    metrics
        .reconcile_duration
        .observe(started.elapsed().as_secs_f64());
    let outcome = if result.is_ok() { "success" } else { "error" };
    metrics
        .reconciles
        .get_or_create(&ResultLabels {
            result: outcome.into(),
        })
        .inc();
    result
}

async fn reconcile_app(app: Arc<StatefulApp>, ctx: Arc<Context>) -> Result<Requeue> {
    let name = app.name_any();
    let ns = app
        .namespace()
        .ok_or_else(|| Error::Invalid("StatefulApp without namespace".into()))?;
    let apps: Api<StatefulApp> = Api::namespaced(ctx.client.clone(), &ns);
    let deleting = app.metadata.deletion_timestamp.is_some();
    let wipe_on_delete = app
        .annotations()
        .get(ANNOTATION_WIPE_ON_DELETE)
        .is_some_and(|v| v == "true");
    let finalizers = app.finalizers();
    let has = |f: &str| finalizers.iter().any(|g| g == f);
    let key = format!("{ns}/{name}");
    let ours = [FINALIZER_CLEANUP, FINALIZER_WIPE_ON_DELETE];
    if deleting && !(has(FINALIZER_CLEANUP) || has(FINALIZER_WIPE_ON_DELETE)) {
        ctx.metrics.forget_app(&ns, &name);
        ctx.expectations.forget(&key);
        ctx.status_writes.forget(&key);
        return Ok(Requeue::await_change());
    }
    if deleting && !wipe_on_delete {
        // Kept: pods and reservations go with their owner (garbage
        // collection); claims, volumes and data stay for the next app of
        // this name.
        finalizer::replace(&apps, &*app, &ours, &[]).await?;
        ctx.metrics.forget_app(&ns, &name);
        ctx.expectations.forget(&key);
        ctx.status_writes.forget(&key);
        return Ok(Requeue::await_change());
    }
    if !deleting && (!has(FINALIZER_CLEANUP) || has(FINALIZER_WIPE_ON_DELETE)) {
        // Every app carries it, so that a deletion always waits for this
        // controller to read `wipe-on-delete`, even one set a moment before.
        finalizer::replace(
            &apps,
            &*app,
            &[FINALIZER_WIPE_ON_DELETE],
            &[FINALIZER_CLEANUP],
        )
        .await?;
    }

    let Some(objects) = ctx.caches.objects_of(&ns, &name) else {
        return Ok(Requeue::requeue(Duration::from_millis(500)));
    };
    if objects.namespace_uid.is_none() {
        // A namespace made a moment ago: which volumes are this
        // namespace's own is decided once the cache knows it.
        return Ok(Requeue::requeue(Duration::from_millis(500)));
    }
    if ctx.expectations.unmet(&key, &objects) > 0 {
        // The caches have not shown all of this controller's last writes
        // yet; their watch events will bring it back here.
        return Ok(Requeue::requeue(Duration::from_secs(1)));
    }
    let previous = app.status.clone().unwrap_or_default();
    let existing = instance_uuids(&objects);
    let request = parse_wipe_annotation(
        &name,
        app.annotations()
            .get(ANNOTATION_WIPE)
            .map_or("", String::as_str),
    );
    let mut wiped: BTreeSet<Uuid> = previous
        .wiped_instances
        .iter()
        .filter_map(|id| id.parse::<InstanceId>().ok().map(|id| id.uuid))
        .collect();
    // Named by the wipe request, listed last time, gone now: wiped.
    wiped.extend(
        previous
            .instances
            .iter()
            .filter_map(|i| i.id.parse::<InstanceId>().ok())
            .filter(|id| request.valid.contains(id) && !existing.contains(&id.uuid))
            .map(|id| id.uuid),
    );
    let wipe = check_known(request, &existing, &wiped);
    let observed = observe(&app, &wipe, &objects, &ctx.reservations, Timestamp::now());
    let plan = plan(&observed, &mut Uuid::new_v4);

    let applier = Applier {
        client: &ctx.client,
        app: &app,
        observed: &observed,
        storage_class: &ctx.storage_class,
        reservations: &ctx.reservations,
        expectations: &ctx.expectations,
        key: &key,
    };
    // Instances are independent: their action lists run concurrently, each
    // in plan order (claims before the pod, wipe marks before deletions).
    futures::stream::iter(group_by_instance(&plan.actions))
        .map(|actions| apply_in_order(&applier, &ctx, actions))
        .buffer_unordered(APPLY_CONCURRENCY)
        .try_collect::<()>()
        .await?;
    events::publish_actions(&ctx, &app, &plan.actions).await;
    // Said on every pass (the recorder folds repeats), before the status
    // write, which may wait.
    for message in data_missing(&observed) {
        warn(&ctx, &app, "DataMissing", &message).await;
    }
    report_foreign_volumes(&ctx, &app, &observed, &plan.actions).await;
    if let Some(note) = events::lookalike_note(&observed.lookalike_pods) {
        warn(&ctx, &app, "LookalikePods", &note).await;
    }

    if !deleting {
        let budget = ctx.caches.budget(&ns, &disruption::budget_name(&name));
        if let Err(error) = disruption::sync(&ctx.client, &app, budget).await {
            let note = format!("keeping the app's PodDisruptionBudget failed: {error}");
            warn(&ctx, &app, "DisruptionBudget", &note).await;
        }
    }

    if deleting {
        if observed.instances.is_empty() {
            finalizer::replace(&apps, &*app, &ours, &[]).await?;
        }
        return Ok(Requeue::requeue(Duration::from_secs(2)));
    }

    let sizes: Vec<(String, String)> = app
        .spec
        .volumes
        .iter()
        .map(|v| (v.name.clone(), v.size.clone()))
        .collect();
    let mut status = compute_status(&StatusInput {
        observed: &observed,
        plan: &plan,
        generation: app.metadata.generation,
        sizes: &sizes,
        input_errors: &wipe.rejected,
        previous: &previous.conditions,
        unschedulable_after: ctx.unschedulable_after,
    });
    status.wiped_instances = wiped_ids(&name, &previous.wiped_instances, &wiped);
    ctx.metrics.observe_status(&ns, &name, &status);
    let desired = observed.app.desired as i32;
    let converged = plan.actions.is_empty()
        && status.ready == desired
        && status.instances.len() as i32 == desired + status.stopped;
    if app.status.as_ref() != Some(&status) {
        // While instances come and go, progress is written at most once per
        // STATUS_INTERVAL: a status of hundreds of instances rewritten on
        // every pod event costs the API server more than the pods do.
        if let Some(wait) = ctx.status_writes.hold(&key, converged) {
            return Ok(Requeue::requeue(wait));
        }
        let patch = json!({ "status": status });
        apps.patch_status(&name, &patch_params(), &Patch::Merge(&patch))
            .await?;
        ctx.status_writes.wrote(&key);
    }
    for instance in &status.instances {
        let was_unreachable = previous
            .instances
            .iter()
            .any(|p| p.id == instance.id && p.state == InstanceState::Unreachable);
        if instance.state == InstanceState::Unreachable && !was_unreachable {
            let node = instance.node.as_deref().unwrap_or("?");
            warn(&ctx, &app, "NodeLost", &format!(
                "instance {} is unreachable: node {node} is NotReady or gone. Its data stays on that node. \
                 Wait for the node (nodeLossPolicy Wait), set nodeLossPolicy Replace to start a new instance elsewhere, \
                 or wipe it with the {ANNOTATION_WIPE} annotation",
                instance.id
            ))
            .await;
        }
    }

    if !wipe.rejected.is_empty() {
        // Every reconcile that sees it says it again: the recorder folds
        // repeats into one Event with a count, and the user sees it is current.
        warn(
            &ctx,
            &app,
            "InvalidWipeRequest",
            &format!(
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
            ),
        )
        .await;
    }

    // Watches drive the work (apps, pods, claims, volumes, node readiness);
    // the timers are a safety net, and time-based policies (node-loss
    // replacement) need a wake-up.
    let settled = plan.actions.is_empty();
    let unreachable = status
        .instances
        .iter()
        .any(|i| i.state == InstanceState::Unreachable);
    // A pod the scheduler finds no node for turns the app Stalled after
    // `unschedulable_after`, with no event to wake the app then.
    let unplaced = observed
        .instances
        .values()
        .any(|i| i.pod.as_ref().is_some_and(|p| p.unschedulable.is_some()));
    let next = match (settled, unreachable || unplaced) {
        (false, _) => Duration::from_secs(2),
        (true, true) => Duration::from_secs(5),
        (true, false) => SETTLED_RESYNC,
    };
    Ok(Requeue::requeue(next))
}

/// Makes a failed reconcile visible to the user: a Warning Event and the
/// `Degraded` condition, the other conditions untouched: a failure that a
/// retry may clear is no reason to call the app stalled (best effort: the
/// API may be what is failing).
async fn report_failure(ctx: &Context, app: &StatefulApp, error: &Error) {
    let message = format!("reconcile failed, retrying: {error}");
    warn(ctx, app, "ReconcileFailed", &message).await;
    let previous = app.status.clone().unwrap_or_default().conditions;
    let conditions = failure_conditions(
        &previous,
        app.metadata.generation,
        &message,
        Timestamp::now(),
    );
    let patch = json!({ "status": { "conditions": conditions } });
    if let Some(ns) = app.namespace() {
        let apps: Api<StatefulApp> = Api::namespaced(ctx.client.clone(), &ns);
        let _ = apps
            .patch_status(&app.name_any(), &patch_params(), &Patch::Merge(&patch))
            .await;
    }
}

/// Uuids of every instance with a claim, volume or pod in `objects`.
fn instance_uuids(objects: &ClusterObjects) -> BTreeSet<Uuid> {
    let metas = objects
        .pods
        .iter()
        .map(|o| &o.meta)
        .chain(objects.claims.iter().map(|o| &o.meta))
        .chain(objects.volumes.iter().map(|o| &o.meta));
    metas
        .filter_map(|m| m.label(LABEL_INSTANCE))
        .filter_map(|u| Uuid::parse_str(u).ok())
        .collect()
}

/// The wiped-instance record: previous order kept, new ones appended,
/// bounded to the newest 100.
fn wiped_ids(app: &str, previous: &[String], wiped: &BTreeSet<Uuid>) -> Vec<String> {
    let mut ids: Vec<String> = previous.to_vec();
    for uuid in wiped {
        let id = InstanceId::new(app, *uuid).to_string();
        if !ids.contains(&id) {
            ids.push(id);
        }
    }
    let excess = ids.len().saturating_sub(100);
    ids.drain(..excess);
    ids
}

/// Least time between two status writes of an app that is converging.
const STATUS_INTERVAL: Duration = Duration::from_secs(1);

/// When each app's status was last written.
#[derive(Default)]
struct StatusWrites(std::sync::Mutex<std::collections::HashMap<String, std::time::Instant>>);

impl StatusWrites {
    /// How long to hold a write back (`None`: write now). A converged status
    /// is never held: it is what users and tests wait for.
    fn hold(&self, app: &str, converged: bool) -> Option<Duration> {
        let last = *self.0.lock().unwrap_or_else(|e| e.into_inner()).get(app)?;
        let since = last.elapsed();
        (!converged && since < STATUS_INTERVAL).then(|| STATUS_INTERVAL - since)
    }

    fn wrote(&self, app: &str) {
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        map.insert(app.to_string(), std::time::Instant::now());
    }

    fn forget(&self, app: &str) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).remove(app);
    }
}

/// How often a settled app is looked at again without any event.
const SETTLED_RESYNC: Duration = Duration::from_secs(300);

/// Instances whose actions are applied at the same time.
const APPLY_CONCURRENCY: usize = 32;

/// Splits the plan into per-instance lists, keeping the plan's order inside
/// each. Actions without an instance run alone.
fn group_by_instance(actions: &[Action]) -> Vec<Vec<Action>> {
    let mut groups: Vec<Vec<Action>> = Vec::new();
    let mut index: std::collections::HashMap<Uuid, usize> = Default::default();
    for action in actions {
        match action
            .instance()
            .map(|uuid| *index.entry(uuid).or_insert(groups.len()))
        {
            Some(i) if i < groups.len() => groups[i].push(action.clone()),
            _ => groups.push(vec![action.clone()]),
        }
    }
    groups
}

async fn apply_in_order(applier: &Applier<'_>, ctx: &Context, actions: Vec<Action>) -> Result<()> {
    for action in &actions {
        let applied = applier.apply(action).await?;
        ctx.metrics
            .actions
            .get_or_create(&ActionLabels {
                action: action.kind().into(),
            })
            .inc();
        if applied == Applied::Wait {
            break;
        }
    }
    Ok(())
}

//! The StatefulApp controller: for each app, observe (its cached pods,
//! claims, volumes and the nodes), plan (pure), apply, then write status. It owns pods
//! and claims of its apps; it never writes an app's spec or annotations (I6)
//! and never touches data (only the node agent does, and only for a wipe).
//!
//! This file is the wiring ([`Context`], [`run`]) and the reconcile: gate
//! (finalizers), observe ([`observe`], from the [`cache`]s into the
//! [`model`]), [`plan`], [`apply`], [`status`], [`events`], requeue.

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

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::jiff::Timestamp;
use kube::api::Api;
use kube::runtime::controller::{self, Action as Requeue, Controller};
use kube::runtime::events::Reporter;
use kube::runtime::reflector::ObjectRef;
use kube::{Client, ResourceExt};
use uuid::Uuid;

use self::apply::{Applier, apply_plan};
pub use self::cache::{Caches, Feeds};
use self::events::{Events, warn};
use self::expectations::Expectations;
use self::model::Observed;
use self::observe::observe;
use self::plan::{Plan, plan};
use self::reservation::ReservationConfig;
use self::status::{StatusInput, StatusWrites, compute_status, report_failure};
use crate::api::{InstanceState, StatefulApp, StatefulAppStatus};
use crate::finalizer;
use crate::metrics::{ControllerMetrics, ResultLabels};
use crate::names::{
    ANNOTATION_WIPE, ANNOTATION_WIPE_ON_DELETE, FINALIZER_CLEANUP, FINALIZER_WIPE_ON_DELETE,
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

    /// The controller's node cache, for the provisioner beside it.
    pub fn nodes(&self) -> cache::NodeStore {
        self.caches.nodes()
    }

    /// Drops what is kept about app `name` in `ns` once it is gone.
    fn forget(&self, ns: &str, name: &str) {
        let key = format!("{ns}/{name}");
        self.metrics.forget_app(ns, name);
        self.expectations.forget(&key);
        self.status_writes.forget(&key);
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
    let result = crate::worker::on_worker(reconcile_app(app.clone(), ctx.clone())).await;
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
    let key = format!("{ns}/{name}");
    let deleting = app.metadata.deletion_timestamp.is_some();
    if let Gate::Done = gate(&app, &ctx, &apps).await? {
        return Ok(Requeue::await_change());
    }
    let objects = match ctx.caches.objects_of(&ns, &name) {
        // A namespace made a moment ago: which volumes are this
        // namespace's own is decided once the cache knows it.
        Some(objects) if objects.namespace_uid.is_some() => objects,
        _ => return Ok(Requeue::requeue(Duration::from_millis(500))),
    };
    if ctx.expectations.unmet(&key, &objects) > 0 {
        // The caches have not shown all of this controller's last writes
        // yet; their watch events will bring it back here.
        return Ok(Requeue::requeue(Duration::from_secs(1)));
    }

    let previous = app.status.clone().unwrap_or_default();
    let annotation = app.annotations().get(ANNOTATION_WIPE);
    let (wipe, wiped) = wipe_request::resolve(
        &name,
        annotation.map_or("", String::as_str),
        &previous,
        &objects.instance_uuids(),
    );
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
    apply_plan(&applier, &ctx.metrics, &plan.actions).await?;
    events::publish_pass(&ctx, &app, &observed, &plan.actions).await;

    if !deleting {
        let budget = ctx.caches.budget(&ns, &disruption::budget_name(&name));
        if let Err(error) = disruption::sync(&ctx.client, &app, budget).await {
            let note = format!("keeping the app's PodDisruptionBudget failed: {error}");
            warn(&ctx, &app, "DisruptionBudget", &note).await;
        }
    }
    if deleting {
        if observed.instances.is_empty() {
            finalizer::replace(&apps, &*app, &OUR_FINALIZERS, &[]).await?;
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
    status.wiped_instances = status::wiped_ids(&name, &previous.wiped_instances, &wiped);
    ctx.metrics.observe_status(&ns, &name, &status);
    let desired = observed.app.desired as i32;
    let converged = plan.actions.is_empty()
        && status.ready == desired
        && status.instances.len() as i32 == desired + status.stopped;
    let seen = ctx.caches.seen_status(&key);
    if let Some(wait) = status::write(
        &apps,
        &ctx.status_writes,
        &key,
        &app,
        seen,
        &status,
        converged,
    )
    .await?
    {
        return Ok(Requeue::requeue(wait));
    }
    events::publish_status(&ctx, &app, &previous, &status, &wipe).await;
    Ok(Requeue::requeue(next_look(&observed, &plan, &status)))
}

/// Whether the reconcile goes on past the finalizers.
enum Gate {
    Go,
    /// Nothing more to do for this app (it is gone, or let go).
    Done,
}

/// The finalizers: every app carries [`FINALIZER_CLEANUP`]; a deleted app
/// is let go at once unless it asks for `wipe-on-delete`, and is forgotten
/// once it carries none of ours.
async fn gate(app: &StatefulApp, ctx: &Context, apps: &Api<StatefulApp>) -> Result<Gate> {
    let (ns, name) = (app.namespace().unwrap_or_default(), app.name_any());
    let deleting = app.metadata.deletion_timestamp.is_some();
    let wipe_on_delete = app
        .annotations()
        .get(ANNOTATION_WIPE_ON_DELETE)
        .is_some_and(|v| v == "true");
    let finalizers = app.finalizers();
    let has = |f: &str| finalizers.iter().any(|g| g == f);
    if deleting && !(has(FINALIZER_CLEANUP) || has(FINALIZER_WIPE_ON_DELETE)) {
        ctx.forget(&ns, &name);
        return Ok(Gate::Done);
    }
    if deleting && !wipe_on_delete {
        // Kept: pods and reservations go with their owner (garbage
        // collection); claims, volumes and data stay for the next app of
        // this name.
        finalizer::replace(apps, app, &OUR_FINALIZERS, &[]).await?;
        ctx.forget(&ns, &name);
        return Ok(Gate::Done);
    }
    if !deleting && (!has(FINALIZER_CLEANUP) || has(FINALIZER_WIPE_ON_DELETE)) {
        // Every app carries it, so that a deletion always waits for this
        // controller to read `wipe-on-delete`, even one set a moment before.
        finalizer::replace(apps, app, &[FINALIZER_WIPE_ON_DELETE], &[FINALIZER_CLEANUP]).await?;
    }
    Ok(Gate::Go)
}

/// The finalizers this controller puts on apps.
const OUR_FINALIZERS: [&str; 2] = [FINALIZER_CLEANUP, FINALIZER_WIPE_ON_DELETE];

/// When to look at the app again without any event. Watches drive the work
/// (apps, pods, claims, volumes, node readiness); the timers are a safety
/// net, and time-based policies (node-loss replacement) need a wake-up.
fn next_look(observed: &Observed, plan: &Plan, status: &StatefulAppStatus) -> Duration {
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
    match (settled, unreachable || unplaced) {
        (false, _) => Duration::from_secs(2),
        (true, true) => Duration::from_secs(5),
        (true, false) => SETTLED_RESYNC,
    }
}

/// How often a settled app is looked at again without any event.
const SETTLED_RESYNC: Duration = Duration::from_secs(300);

//! The failure condition: what a failed reconcile makes of the app's
//! conditions ([`failure_conditions`], pure), and the Event and status patch
//! that make the failure visible ([`report_failure`]).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use kube::api::{Api, Patch};
use serde_json::json;

use crate::Error;
use crate::api::StatefulApp;
use crate::controller::Context;
use crate::controller::events::{self, warn};
use crate::names::patch_params;

/// Makes a failed reconcile visible to the user: a Warning Event and the
/// `Degraded` condition, the other conditions untouched: a failure that a
/// retry may clear is no reason to call the app stalled (best effort: the
/// API may be what is failing).
pub async fn report_failure(ctx: &Context, app: &StatefulApp, error: &Error) {
    let message = events::reconcile_failed_note(error);
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

/// The conditions after a reconcile failed (the API may be what failed):
/// `Degraded` says so; `Ready`, `Reconciling` and `Stalled` keep what the
/// last completed reconcile found, since a failure that a retry may clear
/// neither stalls the app nor changes its instances.
pub fn failure_conditions(
    previous: &[Condition],
    generation: Option<i64>,
    message: &str,
    now: Timestamp,
) -> Vec<Condition> {
    let last_transition_time = previous
        .iter()
        .find(|c| c.type_ == "Degraded" && c.status == "True")
        .map_or(Time(now), |c| c.last_transition_time.clone());
    let mut conditions: Vec<Condition> = previous
        .iter()
        .filter(|c| c.type_ != "Degraded")
        .cloned()
        .collect();
    conditions.push(Condition {
        type_: "Degraded".into(),
        status: "True".into(),
        reason: "ReconcileFailed".into(),
        message: message.to_string(),
        observed_generation: generation,
        last_transition_time,
    });
    conditions
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::status::compute::tests::{status, world_with};

    #[test]
    fn a_failed_reconcile_only_says_degraded() {
        let mut world = world_with(1);
        world.observed.app.desired = 2;
        let previous = status(&mut world).conditions;
        let now = world.observed.now;
        let later = Timestamp::from_second(now.as_second() + 30).unwrap();
        let failed = failure_conditions(&previous, Some(8), "reconcile failed: 503", later);
        let others = |c: &[Condition]| -> Vec<Condition> {
            c.iter()
                .filter(|c| c.type_ != "Degraded")
                .cloned()
                .collect()
        };
        assert_eq!(
            others(&failed),
            others(&previous),
            "Ready, Reconciling, Stalled untouched"
        );
        let degraded = failed.iter().find(|c| c.type_ == "Degraded").unwrap();
        assert_eq!(
            (
                degraded.status.as_str(),
                degraded.reason.as_str(),
                degraded.message.as_str()
            ),
            ("True", "ReconcileFailed", "reconcile failed: 503")
        );
        assert_eq!(degraded.observed_generation, Some(8));
        assert_eq!(degraded.last_transition_time, Time(later));
        // Failing again keeps the time it first failed.
        let again = failure_conditions(&failed, Some(8), "reconcile failed: 500", now);
        let degraded_again = again.iter().find(|c| c.type_ == "Degraded").unwrap();
        assert_eq!(degraded_again.last_transition_time, Time(later));
        assert_eq!(degraded_again.message, "reconcile failed: 500");
        // No status yet: only Degraded.
        assert_eq!(failure_conditions(&[], None, "x", now).len(), 1);
    }
}

//! The app's PodDisruptionBudget. With `spec.disruption`, the controller
//! keeps one, `<app>-budget`, owned by the app (garbage-collected with it),
//! selecting the app's instance pods only: reservation pods carry
//! `statefulapp.io/reserved-for`, not the app's label, so a drain counts
//! running instances, and stops at most `maxUnavailable` of them at once.
//! Without the field, the budget is deleted. A budget of that name that the
//! app does not own is never touched.

use std::sync::Arc;

use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{Api, DeleteParams, Patch};
use kube::{Client, Resource, ResourceExt};
use serde_json::{Value, json};

use crate::api::StatefulApp;
use crate::names::{FIELD_MANAGER, LABEL_APP, LABEL_INSTANCE, post_params};
use crate::{Error, Result};

/// The name of an app's budget.
pub fn budget_name(app: &str) -> String {
    format!("{app}-budget")
}

/// The budget the app asks for, if any.
pub fn desired(app: &StatefulApp) -> Result<Option<Value>> {
    let Some(disruption) = &app.spec.disruption else {
        return Ok(None);
    };
    let name = app.name_any();
    let owner = app
        .controller_owner_ref(&())
        .ok_or_else(|| Error::Invalid("StatefulApp has no uid".into()))?;
    Ok(Some(json!({
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": {
            "name": budget_name(&name),
            "namespace": app.namespace(),
            "labels": { LABEL_APP: name },
            "ownerReferences": [owner],
        },
        "spec": {
            "maxUnavailable": disruption.max_unavailable,
            "selector": {
                "matchLabels": { LABEL_APP: name },
                "matchExpressions": [{ "key": LABEL_INSTANCE, "operator": "Exists" }],
            },
        },
    })))
}

/// Whether `budget` is the app's own (it controls it).
fn owned(app: &StatefulApp, budget: &PodDisruptionBudget) -> bool {
    let uid = app.uid();
    budget
        .owner_references()
        .iter()
        .any(|o| o.controller == Some(true) && Some(&o.uid) == uid.as_ref())
}

/// Whether `budget` already says what `want` says.
fn current(budget: &PodDisruptionBudget, want: &Value) -> bool {
    let Some(spec) = &budget.spec else {
        return false;
    };
    let max = want["spec"]["maxUnavailable"].as_i64().unwrap_or_default();
    spec.max_unavailable == Some(IntOrString::Int(max as i32))
        && spec.min_available.is_none()
        && serde_json::to_value(&spec.selector).ok().as_ref() == Some(&want["spec"]["selector"])
}

/// Brings the app's budget in line with its spec; `cached` is the budget
/// of its name as the watch last saw it. Writes only what differs.
pub async fn sync(
    client: &Client,
    app: &StatefulApp,
    cached: Option<Arc<PodDisruptionBudget>>,
) -> Result<()> {
    let ns = app.namespace().unwrap_or_default();
    let api: Api<PodDisruptionBudget> = Api::namespaced(client.clone(), &ns);
    let name = budget_name(&app.name_any());
    let theirs = cached.as_ref().is_some_and(|b| !owned(app, b));
    if theirs {
        return Err(Error::Conflict(format!(
            "a PodDisruptionBudget {name} exists that this app does not own: delete or rename it so that the app can keep its own"
        )));
    }
    match (desired(app)?, cached) {
        (Some(want), Some(have)) if current(&have, &want) => Ok(()),
        (Some(want), Some(_)) => {
            let params = kube::api::PatchParams::apply(FIELD_MANAGER).force();
            api.patch(&name, &params, &Patch::Apply(&want)).await?;
            Ok(())
        }
        (Some(want), None) => {
            let budget: PodDisruptionBudget = serde_json::from_value(want)?;
            match api.create(&post_params(), &budget).await {
                Ok(_) => Ok(()),
                // Made a moment ago (the cache will show it), or someone
                // else's: the next pass tells.
                Err(kube::Error::Api(e)) if e.code == 409 => Ok(()),
                Err(e) => Err(e.into()),
            }
        }
        (None, Some(_)) => match api.delete(&name, &DeleteParams::default()).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
            Err(e) => Err(e.into()),
        },
        (None, None) => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn app(disruption: Option<i32>) -> StatefulApp {
        let mut app: StatefulApp = serde_json::from_value(json!({
            "apiVersion": "statefulapp.io/v1alpha1", "kind": "StatefulApp",
            "metadata": { "name": "db", "namespace": "ns", "uid": "u-1" },
            "spec": { "instances": 3, "template": {},
                      "volumes": [{ "name": "data", "size": "1Gi", "mountPath": "/data" }] },
        }))
        .unwrap();
        app.spec.disruption = disruption.map(|n| crate::api::Disruption { max_unavailable: n });
        app
    }

    fn budget(value: Value) -> PodDisruptionBudget {
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn the_budget_selects_instance_pods_and_is_owned_by_the_app() {
        let want = desired(&app(Some(1))).unwrap().unwrap();
        assert_eq!(want["metadata"]["name"], "db-budget");
        assert_eq!(want["spec"]["maxUnavailable"], 1);
        assert_eq!(
            want["spec"]["selector"],
            json!({ "matchLabels": { LABEL_APP: "db" },
                    "matchExpressions": [{ "key": LABEL_INSTANCE, "operator": "Exists" }] })
        );
        assert!(owned(&app(Some(1)), &budget(want.clone())));
        assert!(current(&budget(want.clone()), &want));
        assert!(desired(&app(None)).unwrap().is_none());
    }

    #[test]
    fn a_changed_field_or_a_foreign_budget_is_told_apart() {
        let want = desired(&app(Some(2))).unwrap().unwrap();
        let old = budget(desired(&app(Some(1))).unwrap().unwrap());
        assert!(!current(&old, &want));
        let mut theirs = want.clone();
        theirs["metadata"]["ownerReferences"] = json!([]);
        assert!(!owned(&app(Some(2)), &budget(theirs)));
    }
}

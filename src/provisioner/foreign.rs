//! Claims the operator did not make. The StorageClass is for StatefulApps:
//! a volume made for any other claim would be a directory nobody reclaims
//! (no instance to wipe it). Such a claim gets no volume; a Warning Event
//! on it says to use a StatefulApp, once: the claim is annotated with the
//! refusal, so neither its later updates nor a restarted provisioner
//! repeat it.

use kube::api::{Api, Patch};
use kube::runtime::events::{Event, EventType};
use kube::{Resource, ResourceExt};
use serde_json::json;

use super::Provisioner;
use super::claim::ClaimRequest;
use crate::Result;
use crate::names::{
    ANNOTATION_PERSISTENCE_ID, InstanceId, LABEL_APP, LABEL_INSTANCE, LABEL_VOLUME, PersistenceId,
    claim_name, patch_params,
};

/// Annotation on a claim the provisioner refused: why.
pub const ANNOTATION_REFUSED: &str = "statefulapp.io/provisioning-refused";
const REASON: &str = "NotAStatefulAppClaim";

/// Whether the claim is one the controller makes for an instance volume:
/// its name, labels and persistenceId all derive from the same instance
/// and volume, as [`crate::controller`] writes them.
pub fn is_instance_claim(claim: &ClaimRequest) -> bool {
    let Some(id) = claim
        .annotations()
        .get(ANNOTATION_PERSISTENCE_ID)
        .and_then(|p| p.parse::<PersistenceId>().ok())
    else {
        return false;
    };
    let labels = claim.labels();
    let Some(uuid) = labels
        .get(LABEL_INSTANCE)
        .and_then(|u| uuid::Uuid::parse_str(u).ok())
    else {
        return false;
    };
    let instance = InstanceId::new(&id.app, uuid);
    labels.get(LABEL_APP) == Some(&id.app)
        && labels.get(LABEL_VOLUME) == Some(&id.volume)
        && PersistenceId::of(&instance, &id.volume) == id
        && claim.name_any() == claim_name(&instance, &id.volume)
}

/// Refuses a claim that is not an instance's: marks it and publishes one
/// Warning Event, unless it was refused before.
pub async fn refuse(ctx: &Provisioner, claim: &ClaimRequest) -> Result<()> {
    if claim.annotations().contains_key(ANNOTATION_REFUSED) {
        return Ok(());
    }
    let note = format!(
        "the StorageClass {:?} provisions volumes only for StatefulApps: no volume is made for this claim. Run the workload as a StatefulApp (spec.volumes), or use another StorageClass",
        claim.spec.storage_class_name.as_deref().unwrap_or_default()
    );
    tracing::warn!(claim = %claim.name_any(), namespace = ?claim.namespace(), "{note}");
    let claims: Api<ClaimRequest> =
        Api::namespaced(ctx.client.clone(), &claim.namespace().unwrap_or_default());
    let patch = json!({ "metadata": { "annotations": { ANNOTATION_REFUSED: REASON } } });
    claims
        .patch(&claim.name_any(), &patch_params(), &Patch::Merge(&patch))
        .await?;
    let event = Event {
        type_: EventType::Warning,
        reason: REASON.into(),
        note: Some(note),
        action: "Provision".into(),
        secondary: None,
    };
    if let Err(error) = ctx.recorder.publish(&event, &claim.object_ref(&())).await {
        tracing::warn!(%error, "could not publish event");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    const INSTANCE: &str = "4b7c6d2e-4a1f-4c55-9d0e-6f1e2b3c4d5e";

    fn instance_claim() -> Value {
        let instance = InstanceId::new("db", uuid::Uuid::parse_str(INSTANCE).unwrap());
        json!({
            "metadata": {
                "name": claim_name(&instance, "data"),
                "namespace": "ns",
                "labels": { LABEL_APP: "db", LABEL_INSTANCE: INSTANCE, LABEL_VOLUME: "data" },
                "annotations": {
                    ANNOTATION_PERSISTENCE_ID: PersistenceId::of(&instance, "data").to_string(),
                },
            },
            "spec": { "resources": { "requests": { "storage": "1Gi" } } },
        })
    }

    /// What is changed, and how.
    type Edit = (&'static str, fn(&mut Value));

    fn parse(value: Value) -> ClaimRequest {
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn an_instance_claim_is_ours() {
        assert!(is_instance_claim(&parse(instance_claim())));
    }

    #[test]
    fn a_claim_not_derived_from_one_instance_is_not() {
        let edits: [Edit; 5] = [
            ("no persistenceId", |c| {
                c["metadata"]["annotations"] = json!({});
            }),
            ("another name", |c| {
                c["metadata"]["name"] = json!("my-claim")
            }),
            ("another app label", |c| {
                c["metadata"]["labels"][LABEL_APP] = json!("web");
            }),
            ("another instance", |c| {
                c["metadata"]["labels"][LABEL_INSTANCE] =
                    json!("00000000-0000-4000-8000-000000000000");
            }),
            ("no labels", |c| c["metadata"]["labels"] = json!({})),
        ];
        for (what, edit) in edits {
            let mut claim = instance_claim();
            edit(&mut claim);
            assert!(!is_instance_claim(&parse(claim)), "{what}");
        }
    }
}

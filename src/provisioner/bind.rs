//! Completes the bind of a claim to the volume just provisioned for it, the
//! writes kube-controller-manager's volume binder would make.
//!
//! The binder syncs one claim at a time with four API writes each, so at
//! hundreds of claims provisioned at once it, not provisioning, set the
//! pace: kube-scheduler holds each pod until its claims are bound. The
//! provisioner knows the pair already (the volume is made with its claimRef)
//! and binds them concurrently. The binder then finds the pair bound and
//! writes nothing; if it got there first, these writes change nothing.

use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
use kube::api::{Api, Patch};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};

use super::claim::ClaimRequest;
use crate::names::patch_params;
use crate::{Error, Result};

/// Set on a claim whose bind is complete (as the binder sets it).
const ANNOTATION_BIND_COMPLETED: &str = "pv.kubernetes.io/bind-completed";
/// Set on a claim bound by a controller rather than by its author.
const ANNOTATION_BOUND_BY_CONTROLLER: &str = "pv.kubernetes.io/bound-by-controller";

/// Binds `claim` to `volume`, whose claimRef already names the claim: the
/// volume's phase, and beside it the claim's volumeName then the claim's
/// phase. kube-controller-manager's binder writes the volume's side
/// first; with the claimRef set at creation, it also completes a pair
/// whose claim side or volume side alone was written, so the two sides
/// need not wait for each other. A claim bound meanwhile to another volume
/// is left alone.
pub async fn complete(
    client: &Client,
    claim: &ClaimRequest,
    volume: &PersistentVolume,
) -> Result<()> {
    let volumes: Api<PersistentVolume> = Api::all(client.clone());
    let volume_side = async {
        volumes
            .patch_status(
                &volume.name_any(),
                &patch_params(),
                &Patch::Merge(volume_bound()),
            )
            .await?;
        Ok(())
    };
    futures::try_join!(volume_side, claim_side(client, claim, volume))?;
    Ok(())
}

/// The claim's volumeName, then its phase.
async fn claim_side(
    client: &Client,
    claim: &ClaimRequest,
    volume: &PersistentVolume,
) -> Result<()> {
    let ns = claim.namespace().unwrap_or_default();
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), &ns);
    let bind = claim_bind(claim, &volume.name_any());
    match claims
        .patch(&claim.name_any(), &patch_params(), &Patch::Merge(&bind))
        .await
    {
        Ok(_) => {}
        // Bound to something else meanwhile (volumeName is set once), or
        // gone, or made anew under the same name (the uid precondition):
        // not this volume's claim to complete.
        Err(kube::Error::Api(e)) if [404, 409, 422].contains(&e.code) => return Ok(()),
        Err(e) => return Err(e.into()),
    }
    let status = claim_bound(volume)?;
    claims
        .patch_status(&claim.name_any(), &patch_params(), &Patch::Merge(&status))
        .await?;
    Ok(())
}

fn volume_bound() -> Value {
    json!({ "status": { "phase": "Bound" } })
}

/// The claim's side of the bind; its uid makes the patch apply only to the
/// claim the volume was made for.
fn claim_bind(claim: &ClaimRequest, volume: &str) -> Value {
    json!({
        "metadata": {
            "uid": claim.uid(),
            "annotations": {
                ANNOTATION_BIND_COMPLETED: "yes",
                ANNOTATION_BOUND_BY_CONTROLLER: "yes",
            },
        },
        "spec": { "volumeName": volume },
    })
}

/// What `kubectl get pvc` shows of a bound claim: the volume's capacity and
/// access modes.
fn claim_bound(volume: &PersistentVolume) -> Result<Value> {
    let spec = volume
        .spec
        .as_ref()
        .ok_or_else(|| Error::Invalid("volume without spec".into()))?;
    Ok(json!({
        "status": {
            "phase": "Bound",
            "accessModes": spec.access_modes,
            "capacity": spec.capacity,
        },
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_claim_side_names_the_volume_and_is_bound_to_the_claims_uid() {
        let mut claim = ClaimRequest::default();
        claim.metadata.name = Some("data".into());
        claim.metadata.uid = Some("1234".into());
        let bind = claim_bind(&claim, "pv-1");
        assert_eq!(bind["spec"]["volumeName"], "pv-1");
        assert_eq!(bind["metadata"]["uid"], "1234");
        assert_eq!(
            bind["metadata"]["annotations"][ANNOTATION_BIND_COMPLETED],
            "yes"
        );
    }

    #[test]
    fn a_bound_claim_shows_the_volumes_capacity_and_access_modes() {
        let volume: PersistentVolume = serde_json::from_value(json!({
            "metadata": { "name": "pv-1" },
            "spec": { "capacity": { "storage": "100Mi" }, "accessModes": ["ReadWriteOnce"] },
        }))
        .unwrap();
        let status = claim_bound(&volume).unwrap();
        assert_eq!(status["status"]["phase"], "Bound");
        assert_eq!(status["status"]["capacity"]["storage"], "100Mi");
        assert_eq!(status["status"]["accessModes"][0], "ReadWriteOnce");
    }
}

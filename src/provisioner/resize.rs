//! Growing a bound volume when its claim asks for more (the StatefulApp's
//! volume `size` raised): the provisioner acts as the external resizer
//! kube-controller-manager waits for ("waiting for an external controller
//! to expand this PVC").
//!
//! 1. The node must hold the extra bytes (checked as for a new volume, one
//!    claim per node at a time); if not, a Warning Event, tried again.
//! 2. The volume's capacity is raised, with Kubernetes' pre-resize
//!    annotation holding the old size: until the growth is done, the
//!    persistent volume controller keeps the claim's capacity at it.
//! 3. Where the size is enforced (`image`), the node's agent grows the
//!    volume's filesystem while mounted and records what it spans.
//! 4. The pre-resize annotation goes, then the claim's capacity (what
//!    `kubectl get pvc` shows) is set to the new size: the last write.
//!
//! Each step reads what the one before left, so a crash anywhere resumes.
//! The kubelet does nothing: it expands on the node only for claims whose
//! resize status asks it to, and none is set here.

use std::time::Duration;

use k8s_openapi::api::core::v1::PersistentVolume;
use kube::api::{Api, Patch};
use kube::runtime::controller::Action as Requeue;
use kube::runtime::events::{Event, EventType};
use kube::{Resource, ResourceExt};
use serde_json::json;

use super::claim::ClaimRequest;
use super::{Fit, Provisioner, fits, warn};
use crate::Result;
use crate::capacity::volume_size;
use crate::names::{
    ANNOTATION_FILESYSTEM_SIZE, ANNOTATION_SIZE_ENFORCEMENT, LABEL_NODE, SizeEnforcement,
    patch_params,
};
use crate::quantity::human;

/// Kubernetes' annotation on a volume being grown: the claim's capacity
/// until the growth is done.
pub const ANNOTATION_PRE_RESIZE_CAPACITY: &str = "volume.alpha.kubernetes.io/pre-resize-capacity";

/// How often a growth waiting for the node's agent looks again.
const AGENT_PATIENCE: Duration = Duration::from_secs(2);
/// How often a growth the node has no room for is tried again.
const ROOM_PATIENCE: Duration = Duration::from_secs(60);

pub(super) async fn grow_if_asked(claim: &ClaimRequest, ctx: &Provisioner) -> Result<Requeue> {
    let asked = claim.spec.resources.requests.storage.as_ref();
    let (Some(asked), Some(request), Some(volume_name)) = (
        asked,
        claim.spec.resources.requests.bytes(),
        claim.spec.volume_name.as_deref(),
    ) else {
        return Ok(Requeue::await_change());
    };
    if claim.at_rest() {
        return Ok(Requeue::await_change());
    }
    let capacity = claim.status.capacity.bytes().unwrap_or(0);
    let volumes: Api<PersistentVolume> = Api::all(ctx.client.clone());
    let Some(mut pv) = volumes.get_opt(volume_name).await? else {
        return Ok(Requeue::await_change());
    };
    let ours = pv
        .annotations()
        .get("pv.kubernetes.io/provisioned-by")
        .is_some_and(|p| ctx.is_ours(p));
    let claim_ref_uid = pv
        .spec
        .as_ref()
        .and_then(|s| s.claim_ref.as_ref())
        .and_then(|r| r.uid.as_deref());
    if !ours || claim_ref_uid != claim.metadata.uid.as_deref() {
        return Ok(Requeue::await_change());
    }
    let size = volume_size(&pv);
    if size < request {
        let node = pv.labels().get(LABEL_NODE).cloned().unwrap_or_default();
        // In the ledger until the new capacity is written, as a volume
        // being made (its own name: the list shows the volume's old size).
        let mut _growing = None;
        if let Some(namespace) = &ctx.capacity_namespace {
            let (entry, others) =
                ctx.in_flight
                    .enter(&node, &format!("{volume_name} (growing)"), request - size);
            _growing = Some(entry);
            let class = claim.spec.storage_class_name.clone().unwrap_or_else(|| {
                pv.spec
                    .as_ref()
                    .and_then(|s| s.storage_class_name.clone())
                    .unwrap_or_default()
            });
            if let Fit::Refused(refusal) =
                fits(ctx, namespace, &class, &node, None, &others, request - size).await?
            {
                let note = format!(
                    "volume {volume_name} cannot grow from {} to {}: {refusal} more; tried again every minute",
                    human(size),
                    human(request)
                );
                warn(ctx, &claim.object_ref(&()), "NotEnoughDiskSpace", note).await;
                return Ok(Requeue::requeue(ROOM_PATIENCE));
            }
        }
        let pre_resize = match pv.annotations().get(ANNOTATION_PRE_RESIZE_CAPACITY) {
            Some(first) => first.clone(), // grown again before done
            None => pv
                .spec
                .as_ref()
                .and_then(|s| s.capacity.as_ref())
                .and_then(|c| c.get("storage"))
                .map_or_else(|| size.to_string(), |q| q.0.clone()),
        };
        let patch = json!({
            "metadata": {
                "resourceVersion": pv.resource_version(),
                "annotations": { ANNOTATION_PRE_RESIZE_CAPACITY: pre_resize },
            },
            "spec": { "capacity": { "storage": asked } },
        });
        pv = volumes
            .patch(volume_name, &patch_params(), &Patch::Merge(&patch))
            .await?;
        tracing::info!(volume = volume_name, %node, from = size, to = request, "volume capacity raised");
    }
    let enforced = pv
        .annotations()
        .get(ANNOTATION_SIZE_ENFORCEMENT)
        .is_some_and(|m| m == SizeEnforcement::Image.as_str());
    if enforced {
        let spans = pv
            .annotations()
            .get(ANNOTATION_FILESYSTEM_SIZE)
            .and_then(|b| b.parse::<u64>().ok())
            .unwrap_or(0);
        if spans < request {
            return Ok(Requeue::requeue(AGENT_PATIENCE)); // the agent grows it
        }
    }
    // The annotation goes first: the claim's new capacity is the last
    // write, so whoever sees it sees a growth that is done.
    let cleared =
        json!({ "metadata": { "annotations": { ANNOTATION_PRE_RESIZE_CAPACITY: null } } });
    volumes
        .patch(volume_name, &patch_params(), &Patch::Merge(&cleared))
        .await?;
    let claims: Api<ClaimRequest> =
        Api::namespaced(ctx.client.clone(), &claim.namespace().unwrap_or_default());
    let done = json!({ "status": {
        "capacity": { "storage": asked },
        "allocatedResources": { "storage": asked },
    }});
    claims
        .patch_status(&claim.name_any(), &patch_params(), &Patch::Merge(&done))
        .await?;
    let note = format!(
        "volume {volume_name} grown from {} to {}",
        human(capacity),
        human(request)
    );
    tracing::info!(claim = %claim.name_any(), "{note}");
    let event = Event {
        type_: EventType::Normal,
        reason: "VolumeGrown".into(),
        note: Some(note),
        action: "Resize".into(),
        secondary: None,
    };
    if let Err(error) = ctx.recorder.publish(&event, &claim.object_ref(&())).await {
        tracing::warn!(%error, "could not publish event");
    }
    Ok(Requeue::await_change())
}

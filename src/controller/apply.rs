//! Executes planned actions. Each action is idempotent (deterministic names,
//! "already exists" and "not found" are success), so a crash between two
//! actions is repaired by the next reconcile (I4).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    PersistentVolume, PersistentVolumeClaim, PersistentVolumeClaimVolumeSource, Pod, Volume,
    VolumeMount,
};
use kube::api::{Api, DeleteParams, ObjectMeta, Patch};
use kube::{Resource, ResourceExt};
use serde_json::json;
use uuid::Uuid;

use super::expectations::{Effect, Expectations, Kind};
use super::model::Observed;
use super::model::{ClaimView, VolumeView};
use super::plan::{Action, StopReason};
use super::reservation::{ReservationConfig, reservation_spec};
use crate::api::StatefulApp;
use crate::names::{
    ANNOTATION_NAMESPACE_UID, ANNOTATION_ORPHAN_MARK, ANNOTATION_PERSISTENCE_ID,
    ANNOTATION_RECLAIMING, ANNOTATION_RESERVATION_HASH, ANNOTATION_TEMPLATE_HASH,
    ANNOTATION_WIPE_MARK, InstanceId, LABEL_APP, LABEL_INSTANCE, LABEL_RESERVED_FOR, LABEL_VOLUME,
    NODE_KEEPING_ANNOTATIONS, PersistenceId, claim_name, patch_params, pod_name, pod_volume_name,
    post_params, reservation_pod_name,
};
use crate::{Error, Result};

pub struct Applier<'a> {
    pub client: &'a kube::Client,
    pub app: &'a StatefulApp,
    pub observed: &'a Observed,
    pub storage_class: &'a str,
    pub reservations: &'a ReservationConfig,
    /// Where each write's effect is recorded, under `key` (`namespace/app`).
    pub expectations: &'a Expectations,
    pub key: &'a str,
}

/// Instances whose actions are applied at the same time: as many as the
/// API server serves at once on the controller's connection (100 HTTP/2
/// streams; the client queues the rest in order). An instance's next
/// action (its pod after its claims, or after its reservation is deleted)
/// then follows its answer at once. With more, every instance's first
/// request queued ahead of any second one: a restart of 500 deleted all
/// its reservations before it created the first pod.
const APPLY_CONCURRENCY: usize = 100;

/// Applies a plan's actions. Instances are independent: their action lists
/// run concurrently, each in plan order (claims before the pod, wipe marks
/// before deletions), and stop at an action that must be waited for.
/// Counts each action applied.
pub async fn apply_plan(
    applier: &Applier<'_>,
    metrics: &crate::metrics::ControllerMetrics,
    actions: &[Action],
) -> Result<()> {
    use futures::{StreamExt, TryStreamExt};
    futures::stream::iter(group_by_instance(actions))
        .map(|actions| apply_in_order(applier, metrics, actions))
        .buffer_unordered(APPLY_CONCURRENCY)
        .try_collect::<()>()
        .await
}

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

async fn apply_in_order(
    applier: &Applier<'_>,
    metrics: &crate::metrics::ControllerMetrics,
    actions: Vec<Action>,
) -> Result<()> {
    for action in &actions {
        let applied = applier.apply(action).await?;
        metrics
            .actions
            .get_or_create(&crate::metrics::ActionLabels {
                action: action.kind().into(),
            })
            .inc();
        if applied == Applied::Wait {
            break;
        }
    }
    Ok(())
}

impl Applier<'_> {
    fn namespace(&self) -> String {
        self.app.namespace().unwrap_or_default()
    }

    fn instance(&self, uuid: Uuid) -> InstanceId {
        InstanceId::new(&self.app.name_any(), uuid)
    }

    fn labels(&self, uuid: Uuid, volume: Option<&str>) -> BTreeMap<String, String> {
        let mut labels = BTreeMap::from([
            (LABEL_APP.to_string(), self.app.name_any()),
            (LABEL_INSTANCE.to_string(), uuid.hyphenated().to_string()),
        ]);
        if let Some(volume) = volume {
            labels.insert(LABEL_VOLUME.to_string(), volume.to_string());
        }
        labels
    }

    fn expect(&self, kind: Kind, name: &str, effect: Effect) {
        self.expectations.expect(self.key, kind, name, effect);
    }

    pub async fn apply(&self, action: &Action) -> Result<Applied> {
        let ns = self.namespace();
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), &ns);
        let claims: Api<PersistentVolumeClaim> = Api::namespaced(self.client.clone(), &ns);
        let volumes: Api<PersistentVolume> = Api::all(self.client.clone());
        match action {
            Action::CreateClaim {
                instance,
                volume,
                bind_to,
            } => {
                let claim = self.claim(*instance, volume, bind_to.clone())?;
                if created(claims.create(&post_params(), &claim).await)? {
                    self.expect(Kind::Claim, &claim.name_any(), Effect::Present);
                }
            }
            Action::GrowClaim { claim, volume, .. } => {
                // Idempotent: planned again before the cache shows it, the
                // same patch changes nothing.
                let size = self
                    .app
                    .spec
                    .volumes
                    .iter()
                    .find(|v| &v.name == volume)
                    .map(|v| v.size.clone())
                    .ok_or_else(|| Error::Invalid(format!("no volume {volume:?} in spec")))?;
                let patch = json!({ "spec": { "resources": { "requests": { "storage": size } } } });
                ignore_missing(
                    claims
                        .patch(claim, &patch_params(), &Patch::Merge(&patch))
                        .await,
                )?;
            }
            Action::RebindVolume {
                volume_object,
                claim,
            } => {
                // Bound again in this namespace object: record it (an
                // adopted volume belongs to this namespace from now on).
                let patch = json!({
                    "metadata": { "annotations": {
                        ANNOTATION_NAMESPACE_UID: self.observed.namespace_uid,
                    }},
                    "spec": { "claimRef": {
                        "apiVersion": "v1", "kind": "PersistentVolumeClaim",
                        "namespace": ns, "name": claim, "uid": null, "resourceVersion": null,
                    }},
                });
                ignore_missing(
                    volumes
                        .patch(volume_object, &patch_params(), &Patch::Merge(&patch))
                        .await,
                )?;
                self.expect(Kind::Volume, volume_object, Effect::ClaimRef(claim.clone()));
            }
            Action::CreatePod { instance, node } => {
                let mut pod = self.pod(*instance)?;
                if let Some(spec) = pod.spec.as_mut() {
                    spec.node_name = node.clone();
                }
                if created(pods.create(&post_params(), &pod).await)? {
                    self.expect(Kind::Pod, &pod.name_any(), Effect::Present);
                }
            }
            Action::CreateReservation {
                instance,
                node,
                reclaim,
            } => {
                let pod = self.reservation(*instance, node, reclaim.as_deref())?;
                if created(pods.create(&post_params(), &pod).await)? {
                    self.expect(Kind::Reservation, &pod.name_any(), Effect::Present);
                }
            }
            Action::DeleteReservation { pod, .. } => {
                // A reservation has no grace period: it is gone when the
                // API server answers, and its instance's pod may take its
                // place at once (the kubelet sees the deletion first).
                let still_there = match pods.delete(pod, &DeleteParams::default()).await {
                    Ok(answer) => answer.left().is_some_and(|pod| still_terminating(&pod)),
                    Err(kube::Error::Api(e)) if e.code == 404 => false,
                    Err(e) => return Err(e.into()),
                };
                self.expect(Kind::Reservation, pod, Effect::Gone);
                if still_there {
                    return Ok(Applied::Wait);
                }
            }
            Action::DeletePod { pod, reason, .. } => {
                // No kubelet will confirm the deletion of a pod on a lost node.
                let params = match reason {
                    StopReason::NodeLost => DeleteParams::default().grace_period(0),
                    _ => DeleteParams::default(),
                };
                ignore_missing(pods.delete(pod, &params).await.map(|_| ()))?;
                self.expect(Kind::Pod, pod, Effect::Gone);
            }
            Action::MarkOrphaned { instance } => {
                let id = self.instance(*instance).to_string();
                let patch =
                    json!({ "metadata": { "annotations": { ANNOTATION_ORPHAN_MARK: id } } });
                self.mark(
                    *instance,
                    ANNOTATION_ORPHAN_MARK,
                    &patch,
                    |c| c.orphan_marked,
                    |v| v.orphan_marked,
                )
                .await?;
            }
            Action::MarkForWipe { instance } => {
                let patch =
                    json!({ "metadata": { "annotations": { ANNOTATION_WIPE_MARK: "true" } } });
                self.mark(
                    *instance,
                    ANNOTATION_WIPE_MARK,
                    &patch,
                    |c| c.wipe_marked,
                    |v| v.wipe_marked,
                )
                .await?;
            }
            Action::DeleteClaim { claim, .. } => {
                ignore_missing(
                    claims
                        .delete(claim, &DeleteParams::default())
                        .await
                        .map(|_| ()),
                )?;
                self.expect(Kind::Claim, claim, Effect::Gone);
            }
            Action::DeleteVolume { volume_object, .. } => {
                ignore_missing(
                    volumes
                        .delete(volume_object, &DeleteParams::default())
                        .await
                        .map(|_| ()),
                )?;
                self.expect(Kind::Volume, volume_object, Effect::Gone);
            }
        }
        Ok(Applied::Done)
    }

    /// Patches the claims and volumes of an instance not yet `marked`.
    async fn mark(
        &self,
        instance: Uuid,
        annotation: &'static str,
        patch: &serde_json::Value,
        claim_marked: fn(&ClaimView) -> bool,
        volume_marked: fn(&VolumeView) -> bool,
    ) -> Result<()> {
        let Some(view) = self.observed.instances.get(&instance) else {
            return Ok(());
        };
        let ns = self.namespace();
        let claims: Api<PersistentVolumeClaim> = Api::namespaced(self.client.clone(), &ns);
        let volumes: Api<PersistentVolume> = Api::all(self.client.clone());
        let params = patch_params();
        for claim in view.claims.values().filter(|c| !claim_marked(c)) {
            ignore_missing(
                claims
                    .patch(&claim.name, &params, &Patch::Merge(patch))
                    .await,
            )?;
            self.expect(Kind::Claim, &claim.name, Effect::Annotated(annotation));
        }
        for pv in view.volumes.values().filter(|v| !volume_marked(v)) {
            ignore_missing(volumes.patch(&pv.name, &params, &Patch::Merge(patch)).await)?;
            self.expect(Kind::Volume, &pv.name, Effect::Annotated(annotation));
        }
        Ok(())
    }

    fn claim(
        &self,
        uuid: Uuid,
        volume: &str,
        bind_to: Option<String>,
    ) -> Result<PersistentVolumeClaim> {
        let instance = self.instance(uuid);
        let spec = self
            .app
            .spec
            .volumes
            .iter()
            .find(|v| v.name == volume)
            .ok_or_else(|| Error::Invalid(format!("no volume {volume:?} in spec")))?;
        let claim = json!({
            "metadata": {
                "name": claim_name(&instance, volume),
                "namespace": self.namespace(),
                "labels": self.labels(uuid, Some(volume)),
                "annotations": {
                    ANNOTATION_PERSISTENCE_ID: PersistenceId::of(&instance, volume).to_string(),
                    // The provisioner copies it onto the volume.
                    ANNOTATION_NAMESPACE_UID: self.observed.namespace_uid,
                },
            },
            "spec": {
                "accessModes": ["ReadWriteOnce"],
                "storageClassName": self.storage_class,
                "resources": { "requests": { "storage": spec.size } },
                "volumeName": bind_to,
            },
        });
        Ok(serde_json::from_value(claim)?)
    }

    /// The pod that holds a stopped instance's resources on `node`.
    fn reservation(&self, uuid: Uuid, node: &str, reclaim: Option<&str>) -> Result<Pod> {
        let instance = self.instance(uuid);
        let template = self.app.spec.template.get().spec.unwrap_or_default();
        let owner = self
            .app
            .controller_owner_ref(&())
            .ok_or_else(|| Error::Invalid("StatefulApp has no uid".into()))?;
        let mut annotations = BTreeMap::from([(
            ANNOTATION_RESERVATION_HASH.to_string(),
            self.observed.app.reservation_hash.clone(),
        )]);
        if let Some(reason) = reclaim {
            annotations.insert(ANNOTATION_RECLAIMING.to_string(), reason.to_string());
        }
        annotations.extend(
            NODE_KEEPING_ANNOTATIONS.map(|(key, value)| (key.to_string(), value.to_string())),
        );
        Ok(Pod {
            metadata: ObjectMeta {
                name: Some(reservation_pod_name(&instance)),
                namespace: Some(self.namespace()),
                owner_references: Some(vec![owner]),
                labels: Some(BTreeMap::from([
                    (LABEL_RESERVED_FOR.to_string(), self.app.name_any()),
                    (LABEL_INSTANCE.to_string(), uuid.hyphenated().to_string()),
                ])),
                annotations: Some(annotations),
                ..Default::default()
            },
            spec: Some(reservation_spec(&template, node, self.reservations)),
            status: None,
        })
    }

    fn pod(&self, uuid: Uuid) -> Result<Pod> {
        let instance = self.instance(uuid);
        let template = self.app.spec.template.get();
        let mut metadata = template.metadata.unwrap_or_default();
        metadata
            .labels
            .get_or_insert_default()
            .extend(self.labels(uuid, None));
        let annotations = metadata.annotations.get_or_insert_default();
        annotations.insert(
            ANNOTATION_TEMPLATE_HASH.to_string(),
            self.observed.app.template_hash.clone(),
        );
        for (key, value) in NODE_KEEPING_ANNOTATIONS {
            // A user's own choice in the template stands.
            annotations
                .entry(key.to_string())
                .or_insert_with(|| value.to_string());
        }
        let mut spec = template
            .spec
            .ok_or_else(|| Error::Invalid("spec.template.spec is missing".into()))?;
        for volume in &self.app.spec.volumes {
            let pod_volume = pod_volume_name(&volume.name);
            spec.volumes.get_or_insert_default().push(Volume {
                name: pod_volume.clone(),
                persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                    claim_name: claim_name(&instance, &volume.name),
                    read_only: None,
                }),
                ..Default::default()
            });
            for container in spec.containers.iter_mut() {
                let wanted = volume
                    .containers
                    .as_ref()
                    .is_none_or(|names| names.contains(&container.name));
                if wanted {
                    container
                        .volume_mounts
                        .get_or_insert_default()
                        .push(VolumeMount {
                            name: pod_volume.clone(),
                            mount_path: volume.mount_path.clone(),
                            ..Default::default()
                        });
                }
            }
        }
        let owner = self
            .app
            .controller_owner_ref(&())
            .ok_or_else(|| Error::Invalid("StatefulApp has no uid".into()))?;
        Ok(Pod {
            metadata: ObjectMeta {
                name: Some(pod_name(&instance)),
                namespace: Some(self.namespace()),
                owner_references: Some(vec![owner]),
                labels: metadata.labels,
                annotations: metadata.annotations,
                ..Default::default()
            },
            spec: Some(spec),
            status: None,
        })
    }
}

/// Whether a create made the object. "Already exists" is no error (the
/// name is deterministic), but it is no write to wait for either: the
/// object may be one on its way out, which the cache will never show anew.
fn created<T>(result: kube::Result<T>) -> Result<bool> {
    match result {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// Whether a pod the API server answered a DELETE with is still there. A
/// Status answer means gone; so does the pod itself, which pods' store
/// returns also when it removed the pod at once (no grace period and no
/// finalizer left). Only a pod with time to terminate, or finalizers to wait
/// for, is still there.
fn still_terminating(pod: &Pod) -> bool {
    pod.metadata.deletion_grace_period_seconds != Some(0)
        || pod
            .metadata
            .finalizers
            .as_ref()
            .is_some_and(|f| !f.is_empty())
}

/// What applying an action left for the instance's next actions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Applied {
    Done,
    /// An object is still going away: the instance's next actions wait
    /// for the next pass.
    Wait,
}

fn ignore_missing<T>(result: kube::Result<T>) -> Result<()> {
    match result {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(grace: Option<i64>, finalizers: &[&str]) -> Pod {
        let mut pod = Pod::default();
        pod.metadata.deletion_grace_period_seconds = grace;
        pod.metadata.finalizers = Some(finalizers.iter().map(ToString::to_string).collect());
        pod
    }

    #[test]
    fn a_pod_deleted_without_grace_or_finalizers_is_gone_when_the_answer_comes() {
        assert!(!still_terminating(&answer(Some(0), &[])));
    }

    #[test]
    fn a_pod_with_time_to_terminate_or_finalizers_is_still_there() {
        assert!(still_terminating(&answer(Some(30), &[])));
        assert!(still_terminating(&answer(Some(0), &["example.com/hold"])));
        assert!(still_terminating(&answer(None, &[])));
    }
}

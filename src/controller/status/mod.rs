//! The app's `status`: computing it from what was observed and planned
//! ([`compute`], pure), throttling its writes while the app converges
//! ([`throttle`]), the failure condition of a failed reconcile
//! ([`failure`]), and the patch that writes it ([`write`]).

mod compute;
mod failure;
mod throttle;

use std::collections::BTreeSet;
use std::time::Duration;

use kube::ResourceExt;
use kube::api::{Api, Patch};
use serde_json::json;
use uuid::Uuid;

use crate::Result;
use crate::api::{StatefulApp, StatefulAppStatus};
use crate::names::{InstanceId, patch_params};

pub use self::compute::{LISTED, StatusInput, compute_status, data_missing};
pub use self::failure::{failure_conditions, report_failure};
pub use self::throttle::{StatusWrites, digest};

/// Writes `status` to `app` unless the API server already shows it
/// (`seen`: the digest of the status it showed last). While instances
/// come and go, progress is written at most once per interval, a second
/// per 100 instances (see [`throttle`]): a status of hundreds of instances
/// rewritten on every pod event costs the API server more than the pods
/// do. `Some(wait)`: held back, to be written after `wait`.
pub async fn write(
    apps: &Api<StatefulApp>,
    writes: &StatusWrites,
    key: &str,
    app: &StatefulApp,
    seen: Option<u64>,
    status: &StatefulAppStatus,
    converged: bool,
) -> Result<Option<Duration>> {
    let digest = digest(status);
    if seen == Some(digest) || writes.just_wrote(key, digest) {
        return Ok(None);
    }
    if let Some(wait) = writes.hold(key, converged, status.instances.len()) {
        return Ok(Some(wait));
    }
    let patch = json!({ "status": status });
    apps.patch_status(&app.name_any(), &patch_params(), &Patch::Merge(&patch))
        .await?;
    writes.wrote(key, digest);
    Ok(None)
}

/// The wiped-instance record: previous order kept, new ones appended,
/// bounded to the newest 100.
pub fn wiped_ids(app: &str, previous: &[String], wiped: &BTreeSet<Uuid>) -> Vec<String> {
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

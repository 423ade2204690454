//! Rendering: tables like `dcos marathon`'s, and `task show` documents.

use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use serde_json::{Value, json};

use crate::api::{InstanceState, InstanceStatus, ReservationState, StatefulApp};

/// Left-aligned columns separated by two spaces, like kubectl's tables.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            widths[i] = widths[i].max(cell.len());
        }
    }
    let line = |cells: Vec<&str>| {
        let padded: Vec<String> = cells
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<w$}", w = widths[i]))
            .collect();
        padded.join("  ").trim_end().to_string()
    };
    let mut out = line(header.to_vec());
    for row in rows {
        out.push('\n');
        out.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    out.push('\n');
    out
}

/// `app list`: one line per app.
pub fn app_table(apps: &[StatefulApp], now: Timestamp, with_namespace: bool, wide: bool) -> String {
    let mut header = vec!["APP", "INSTANCES", "RUNNING", "STOPPED", "READY", "AGE"];
    if with_namespace {
        header.insert(0, "NAMESPACE");
    }
    if wide {
        header.extend(["RECONCILING", "STALLED"]);
    }
    let rows: Vec<Vec<String>> = apps
        .iter()
        .map(|app| {
            let status = app.status.clone().unwrap_or_default();
            let mut row = vec![
                format!("/{}", app.name_any()),
                app.spec.instances.to_string(),
                status.running.to_string(),
                status.stopped.to_string(),
                format!("{}/{}", status.ready, app.spec.instances),
                age(app.metadata.creation_timestamp.as_ref().map(|t| t.0), now),
            ];
            if with_namespace {
                row.insert(0, app.namespace().unwrap_or_default());
            }
            if wide {
                let condition = |type_: &str| {
                    status
                        .conditions
                        .iter()
                        .find(|c| c.type_ == type_ && c.status == "True")
                        .map_or("-".to_string(), |c| c.reason.clone())
                };
                row.extend([condition("Reconciling"), condition("Stalled")]);
            }
            row
        })
        .collect();
    table(&header, &rows)
}

/// `task list`: the tutorial's columns, stopped instances included.
pub fn task_table(apps: &[StatefulApp], with_namespace: bool, wide: bool) -> String {
    // ID stays last, as in Marathon's `task list`.
    let mut header = vec![
        "APP", "HEALTHY", "STARTED", "HOST", "STATE", "RESERVED", "ID",
    ];
    if with_namespace {
        header.insert(0, "NAMESPACE");
    }
    if wide {
        header.extend(["VOLUMES", "PERSISTENCE IDS"]);
    }
    let mut rows = Vec::new();
    for app in apps {
        for instance in app.status.iter().flat_map(|s| &s.instances) {
            let mut row = vec![
                format!("/{}", app.name_any()),
                if instance.ready { "True" } else { "False" }.to_string(),
                instance
                    .started_at
                    .as_ref()
                    .map_or("N/A".to_string(), |t| t.0.to_string()),
                instance.node.clone().unwrap_or_else(|| "N/A".into()),
                format!("{:?}", instance.state),
                reserved(instance),
                instance.id.clone(),
            ];
            if with_namespace {
                row.insert(0, app.namespace().unwrap_or_default());
            }
            if wide {
                let join = |f: fn(&crate::api::VolumeStatus) -> String| {
                    instance.volumes.iter().map(f).collect::<Vec<_>>().join(",")
                };
                row.push(join(|v| {
                    v.persistent_volume.clone().unwrap_or_else(|| "-".into())
                }));
                row.push(join(|v| v.persistence_id.clone()));
            }
            rows.push(row);
        }
    }
    table(&header, &rows)
}

/// What a stopped instance holds on its node: `cpu=1,memory=512Mi`, with
/// the reservation's state unless it is held; `-` for none.
fn reserved(instance: &InstanceStatus) -> String {
    let Some(reservation) = &instance.reservation else {
        return "-".into();
    };
    let resources: Vec<String> = reservation
        .resources
        .iter()
        .map(|(name, quantity)| format!("{name}={quantity}"))
        .collect();
    let resources = if resources.is_empty() {
        "a pod slot".to_string()
    } else {
        resources.join(",")
    };
    match reservation.state {
        ReservationState::Held => resources,
        state => format!("{resources} ({state:?})"),
    }
}

/// `task show`: the tutorial's document for one instance.
pub fn task_document(app: &StatefulApp, instance: &InstanceStatus) -> Value {
    let local_volumes: Vec<Value> = instance
        .volumes
        .iter()
        .map(|v| {
            let container_path = app
                .spec
                .volumes
                .iter()
                .find(|s| s.name == v.name)
                .map(|s| s.mount_path.clone())
                .unwrap_or_default();
            json!({
                "containerPath": container_path,
                "persistenceId": v.persistence_id,
                "persistentVolume": v.persistent_volume,
                "claim": v.claim,
                "size": v.size,
                "used": v.used,
            })
        })
        .collect();
    let mut doc = json!({
        "appId": format!("/{}", app.name_any()),
        "namespace": app.namespace(),
        "host": instance.node,
        "id": instance.id,
        "state": instance.state,
        "healthy": instance.ready,
        "localVolumes": local_volumes,
    });
    if let Some(reservation) = &instance.reservation {
        doc["reservation"] = json!(reservation);
    }
    if instance.state == InstanceState::Running
        && let Some(started) = &instance.started_at
    {
        doc["startedAt"] = json!(started.0.to_string());
    }
    doc
}

fn age(created: Option<Timestamp>, now: Timestamp) -> String {
    let Some(created) = created else {
        return "<unknown>".into();
    };
    let seconds = (now.as_second() - created.as_second()).max(0);
    match seconds {
        s if s < 120 => format!("{s}s"),
        s if s < 7200 => format!("{}m", s / 60),
        s if s < 172_800 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86_400),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn app() -> StatefulApp {
        serde_json::from_value(json!({
            "apiVersion": "statefulapp.io/v1alpha1", "kind": "StatefulApp",
            "metadata": { "name": "postgres", "namespace": "db", "creationTimestamp": "2016-04-13T17:25:00Z" },
            "spec": { "instances": 1, "template": { "spec": { "containers": [{ "name": "pg", "image": "postgres" }] } },
                      "volumes": [{ "name": "pgdata", "size": "100Mi", "mountPath": "/var/lib/postgresql/data" }] },
            "status": { "running": 1, "stopped": 1, "ready": 1, "instances": [
                { "id": "postgres.f2419e31-018a-11e6-b721-0261677b407a", "node": "10.0.1.223", "state": "Running",
                  "startedAt": "2016-04-13T17:25:08Z", "ready": true,
                  "volumes": [{ "name": "pgdata", "persistenceId": "postgres#pgdata#f2415010-018a-11e6-b721-0261677b407a",
                                "persistentVolume": "sapp-f2415010-018a-11e6-b721-0261677b407a",
                                "claim": "postgres-f2419e31-018a-11e6-b721-0261677b407a-pgdata", "size": "100Mi" }] },
                { "id": "postgres.53ab8733-fd96-11e5-8e70-76a1c19f8c3d", "node": "10.0.1.224", "state": "Stopped",
                  "ready": false, "volumes": [],
                  "reservation": { "pod": "postgres-53ab8733-fd96-11e5-8e70-76a1c19f8c3d-reserved", "state": "Held",
                                   "resources": { "cpu": "1", "memory": "512Mi" } } },
            ]},
        }))
        .unwrap()
    }

    #[test]
    fn task_list_matches_the_tutorial_with_stopped_instances() {
        let text = task_table(&[app()], false, false);
        assert_eq!(
            text,
            "APP        HEALTHY  STARTED               HOST        STATE    RESERVED            ID\n\
             /postgres  True     2016-04-13T17:25:08Z  10.0.1.223  Running  -                   postgres.f2419e31-018a-11e6-b721-0261677b407a\n\
             /postgres  False    N/A                   10.0.1.224  Stopped  cpu=1,memory=512Mi  postgres.53ab8733-fd96-11e5-8e70-76a1c19f8c3d\n"
        );
    }

    #[test]
    fn app_list_shows_counts_and_age() {
        let now = Timestamp::from_second(1_460_568_300 + 3600).unwrap();
        let text = app_table(&[app()], now, true, false);
        assert_eq!(
            text,
            "NAMESPACE  APP        INSTANCES  RUNNING  STOPPED  READY  AGE\n\
             db         /postgres  1          1        1        1/1    60m\n"
        );
    }

    #[test]
    fn task_show_has_the_tutorial_fields() {
        let app = app();
        let status = app.status.clone().unwrap();
        let running = task_document(&app, &status.instances[0]);
        assert_eq!(running["appId"], "/postgres");
        assert_eq!(running["host"], "10.0.1.223");
        assert_eq!(
            running["localVolumes"][0]["containerPath"],
            "/var/lib/postgresql/data"
        );
        assert_eq!(
            running["localVolumes"][0]["persistenceId"],
            "postgres#pgdata#f2415010-018a-11e6-b721-0261677b407a"
        );
        assert_eq!(running["startedAt"], "2016-04-13T17:25:08Z");
        let stopped = task_document(&app, &status.instances[1]);
        assert!(
            stopped.get("startedAt").is_none(),
            "stopped instances have no startedAt"
        );
    }
}

//! Import of Marathon app definitions (JSON) as StatefulApps, for teams
//! leaving DC/OS. Pure: text in, a StatefulApp and warnings out.

mod app;
mod constraints;
mod convert;

use crate::api::StatefulApp;

pub struct Imported {
    pub app: StatefulApp,
    /// Fields that were approximated or have no equivalent, each named.
    pub warnings: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("not a Marathon app definition: {0}")]
    Json(#[from] serde_json::Error),
    #[error(
        "app id {0:?}: its last segment must be a DNS label of at most 40 characters starting with a letter"
    )]
    InvalidId(String),
    #[error(
        "a StatefulApp needs at least one persistent volume (container.volumes[].persistent); use a Deployment for stateless apps"
    )]
    NoPersistentVolume,
    #[error("cannot import: {0}")]
    Unsupported(String),
}

/// Converts one Marathon app definition into a StatefulApp in `namespace`.
pub fn import_app(json: &str, namespace: Option<&str>) -> Result<Imported, ImportError> {
    let app: app::MarathonApp = serde_json::from_str(json)?;
    convert::convert(app, namespace)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{KillSelection, NodeLossAction};
    use proptest::prelude::*;
    use serde_json::json;

    fn import(value: serde_json::Value) -> Imported {
        import_app(&value.to_string(), Some("db")).unwrap_or_else(|e| panic!("{e}"))
    }

    fn error(value: serde_json::Value) -> String {
        match import_app(&value.to_string(), None) {
            Ok(_) => panic!("imported"),
            Err(e) => e.to_string(),
        }
    }

    /// The tutorial's postgres.marathon.json.
    fn postgres() -> serde_json::Value {
        json!({
            "id": "/postgres",
            "cpus": 1, "instances": 1, "mem": 512,
            "container": {
                "type": "DOCKER",
                "volumes": [
                    { "containerPath": "pgdata", "mode": "RW", "persistent": { "size": 100 } },
                    { "containerPath": "/var/lib/postgresql/data", "hostPath": "pgdata", "mode": "RW" }
                ],
                "docker": { "image": "postgres:9.5", "network": "BRIDGE",
                            "portMappings": [{ "containerPort": 5432, "hostPort": 0, "protocol": "tcp", "name": "postgres" }] }
            },
            "env": { "POSTGRES_PASSWORD": "password", "PGDATA": "/mnt/mesos/sandbox/pgdata" },
            "residency": { "taskLostBehavior": "WAIT_FOREVER" },
            "upgradeStrategy": { "maximumOverCapacity": 0, "minimumHealthCapacity": 0 },
            "healthChecks": [{ "protocol": "TCP", "portIndex": 0, "gracePeriodSeconds": 300, "intervalSeconds": 60, "maxConsecutiveFailures": 3 }]
        })
    }

    #[test]
    fn the_tutorial_postgres_app_imports() {
        let imported = import(postgres());
        let app = &imported.app;
        assert_eq!(app.metadata.name.as_deref(), Some("postgres"));
        assert_eq!(app.metadata.namespace.as_deref(), Some("db"));
        assert_eq!(app.spec.instances, 1);
        let volume = &app.spec.volumes[0];
        assert_eq!(
            (volume.name.as_str(), volume.size.as_str()),
            ("pgdata", "100Mi")
        );
        assert_eq!(
            volume.mount_path, "/var/lib/postgresql/data",
            "the hostPath trick"
        );
        assert_eq!(app.spec.upgrade_strategy.minimum_health_capacity, 0.0);
        assert_eq!(app.spec.node_loss_policy.action, NodeLossAction::Wait);
        let container = &app.spec.template.spec.as_ref().unwrap().containers[0];
        assert_eq!(container.image.as_deref(), Some("postgres:9.5"));
        let resources = serde_json::to_value(&container.resources).unwrap();
        assert_eq!(resources["requests"]["cpu"], "1000m");
        assert_eq!(resources["requests"]["memory"], "512Mi");
        assert_eq!(container.ports.as_ref().unwrap()[0].container_port, 5432);
        let probe = container.liveness_probe.as_ref().unwrap();
        assert_eq!(probe.initial_delay_seconds, Some(300));
        assert_eq!(probe.failure_threshold, Some(3));
        assert!(
            imported.warnings.iter().any(|w| w.contains("network")),
            "{:?}",
            imported.warnings
        );
    }

    #[test]
    fn mysql_with_unique_hosts_and_http_check() {
        let imported = import(json!({
            "id": "/prod/db/mysql", "instances": 3, "cpus": 0.5, "mem": 1024,
            "cmd": "mysqld --datadir=/data",
            "container": { "type": "MESOS", "docker": { "image": "mysql:8" },
                "volumes": [{ "containerPath": "/data", "mode": "RW", "persistent": { "size": 2048, "type": "mount" } }],
                "portMappings": [{ "containerPort": 3306 }, { "containerPort": 8080, "name": "admin" }] },
            "constraints": [["hostname", "UNIQUE"]],
            "healthChecks": [{ "protocol": "MESOS_HTTP", "path": "/health", "portIndex": 1 }],
            "killSelection": "OLDEST_FIRST",
            "labels": { "team": "data", "HAPROXY_GROUP": "external" }
        }));
        let app = &imported.app;
        assert_eq!(app.metadata.name.as_deref(), Some("mysql"));
        assert_eq!(
            app.metadata.annotations.as_ref().unwrap()["statefulapp.io/marathon-group"],
            "prod/db"
        );
        assert_eq!(app.spec.kill_selection, KillSelection::OldestFirst);
        assert_eq!(app.spec.volumes[0].mount_path, "/data");
        assert_eq!(app.spec.volumes[0].name, "data");
        let pod = app.spec.template.spec.as_ref().unwrap();
        let anti = serde_json::to_value(&pod.affinity).unwrap();
        assert_eq!(
            anti["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][0]["topologyKey"],
            "kubernetes.io/hostname"
        );
        let container = &pod.containers[0];
        assert_eq!(
            container.command.as_ref().unwrap()[2],
            "mysqld --datadir=/data"
        );
        let probe = serde_json::to_value(&container.liveness_probe).unwrap();
        assert_eq!(probe["httpGet"]["port"], 8080);
        assert!(
            imported
                .warnings
                .iter()
                .any(|w| w.contains("type \"mount\""))
        );
    }

    #[test]
    fn cassandra_with_group_by_and_max_per() {
        let imported = import(json!({
            "id": "cassandra", "instances": 6,
            "container": { "docker": { "image": "cassandra:4" },
                "volumes": [{ "containerPath": "data", "persistent": { "size": 10240 } },
                            { "containerPath": "commitlog", "persistent": { "size": 1024 } }] },
            "constraints": [["rack", "GROUP_BY", "3"], ["hostname", "MAX_PER", "2"], ["zone", "LIKE", "a|b"]]
        }));
        let app = &imported.app;
        assert_eq!(app.spec.volumes.len(), 2);
        assert_eq!(
            app.spec.volumes[1].mount_path,
            "/mnt/mesos/sandbox/commitlog"
        );
        let pod = serde_json::to_value(app.spec.template.spec.as_ref().unwrap()).unwrap();
        assert_eq!(pod["topologySpreadConstraints"][0]["topologyKey"], "rack");
        assert_eq!(pod["topologySpreadConstraints"][1]["maxSkew"], 2);
        let term = &pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
            ["nodeSelectorTerms"][0]["matchExpressions"][0];
        assert_eq!(term["values"], json!(["a", "b"]));
        assert!(imported.warnings.iter().any(|w| w.contains("MAX_PER")));
    }

    #[test]
    fn residency_relaunch_becomes_replace() {
        let mut app = postgres();
        app["residency"] = json!({ "taskLostBehavior": "RELAUNCH_AFTER_TIMEOUT", "relaunchEscalationTimeoutSeconds": 600 });
        let imported = import(app);
        assert_eq!(
            imported.app.spec.node_loss_policy.action,
            NodeLossAction::Replace
        );
        assert_eq!(imported.app.spec.node_loss_policy.after_seconds, Some(600));
    }

    #[test]
    fn unknown_and_runtime_fields_are_reported_not_dropped() {
        let mut app = postgres();
        app["fetch"] = json!([{ "uri": "https://example.com/x.tgz" }]);
        app["dependencies"] = json!(["/other"]);
        app["acceptedResourceRoles"] = json!(["slave_public"]);
        app["disk"] = json!(100);
        app["user"] = json!("postgres");
        let imported = import(app);
        for field in [
            "fetch",
            "dependencies",
            "acceptedResourceRoles",
            "disk",
            "user",
        ] {
            assert!(
                imported
                    .warnings
                    .iter()
                    .any(|w| w.starts_with(field) || w.contains(&format!("{field} "))),
                "{field} not reported: {:?}",
                imported.warnings
            );
        }
    }

    #[test]
    fn what_cannot_be_honoured_is_refused_with_a_reason() {
        let mut no_volume = postgres();
        no_volume["container"]["volumes"] = json!([]);
        assert!(error(no_volume).contains("at least one persistent volume"));

        let mut regex = postgres();
        regex["constraints"] = json!([["hostname", "LIKE", "10\\.0\\.[0-9]+"]]);
        assert!(error(regex).contains("regular expressions"));

        let mut external = postgres();
        external["container"]["volumes"]
            .as_array_mut()
            .unwrap()
            .push(json!({ "containerPath": "ext", "external": { "name": "vol", "provider": "dvdi" } }));
        assert!(error(external).contains("external volume"));

        let mut host = postgres();
        host["container"]["volumes"]
            .as_array_mut()
            .unwrap()
            .push(json!({ "containerPath": "/logs", "hostPath": "/var/log", "mode": "RW" }));
        assert!(error(host).contains("not portable"));

        let mut bad_id = postgres();
        bad_id["id"] = json!("/9lives");
        assert!(error(bad_id).contains("DNS label"));

        let mut secret = postgres();
        secret["env"]["PASSWORD"] = json!({ "secret": "pw" });
        assert!(error(secret).contains("Secret"));

        let mut no_image = postgres();
        no_image["container"] = json!({ "volumes": postgres()["container"]["volumes"] });
        assert!(error(no_image).contains("image"));
    }

    #[test]
    fn imported_apps_round_trip_and_respect_the_crd_rules() {
        let imported = import(postgres());
        let text = serde_json::to_string(&imported.app).unwrap();
        let back: StatefulApp = serde_json::from_str(&text).unwrap();
        assert_eq!(back, imported.app);
        for volume in &back.spec.volumes {
            assert!(crate::names::is_dns_label(&volume.name) && volume.name.len() <= 32);
            assert!(volume.mount_path.starts_with('/'));
        }
    }

    proptest! {
        #[test]
        fn never_panics_on_arbitrary_text(text in ".{0,300}") {
            let _ = import_app(&text, None);
        }

        #[test]
        fn never_panics_on_arbitrary_app_shapes(
            id in "[/a-zA-Z0-9._-]{0,50}",
            size in proptest::option::of(-5.0f64..1e7),
            path in "[/a-zA-Z0-9._ -]{0,40}",
            cpus in proptest::option::of(-1.0f64..64.0),
            constraint in prop::collection::vec("[A-Za-z_|.]{0,12}", 0..4),
        ) {
            let app = json!({
                "id": id, "cpus": cpus,
                "container": { "docker": { "image": "x" },
                    "volumes": [{ "containerPath": path, "persistent": { "size": size } }] },
                "constraints": [constraint],
            });
            if let Ok(imported) = import_app(&app.to_string(), None) {
                for volume in &imported.app.spec.volumes {
                    prop_assert!(crate::names::is_dns_label(&volume.name));
                    prop_assert!(volume.mount_path.starts_with('/'));
                }
            }
        }
    }
}

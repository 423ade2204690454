//! I7: bad StatefulApps are rejected by the API server itself (OpenAPI schema
//! and CEL rules of the CRD), with a message that says what is wrong.

mod support;

use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use statefulapp_operator::api::StatefulApp;
use support::TestCluster;
use support::fixtures::postgres;
use support::operator::Operator;

/// What is wrong, how to break the tutorial's app, expected message part.
type Case = (&'static str, Box<dyn Fn(&mut Value)>, &'static str);

fn invalid_apps() -> Vec<Case> {
    vec![
        (
            "negative instances",
            Box::new(|a| a["spec"]["instances"] = json!(-1)),
            "should be greater than or equal to 0",
        ),
        (
            "absurd instances",
            Box::new(|a| a["spec"]["instances"] = json!(1_000_000)),
            "should be less than or equal to 1000",
        ),
        (
            "too many volumes in all",
            Box::new(|a| {
                a["spec"]["instances"] = json!(63);
                let volumes: Vec<Value> = (0..16)
                    .map(|v| json!({ "name": format!("v{v}"), "size": "1Gi", "mountPath": format!("/v{v}") }))
                    .collect();
                a["spec"]["volumes"] = json!(volumes);
            }),
            "instances x volumes must be at most 1000",
        ),
        (
            "instances as text",
            Box::new(|a| a["spec"]["instances"] = json!("two")),
            ".spec.instances: expected numeric",
        ),
        (
            "no volumes",
            Box::new(|a| a["spec"]["volumes"] = json!([])),
            "should have at least 1 items",
        ),
        (
            "missing volumes",
            Box::new(|a| {
                a["spec"].as_object_mut().unwrap().remove("volumes");
            }),
            "spec.volumes: Required value",
        ),
        (
            "duplicate volume names",
            Box::new(|a| {
                let v = a["spec"]["volumes"][0].clone();
                a["spec"]["volumes"].as_array_mut().unwrap().push(v);
            }),
            "volume names must be unique",
        ),
        (
            "upper-case volume name",
            Box::new(|a| a["spec"]["volumes"][0]["name"] = json!("PgData")),
            "spec.volumes[0].name",
        ),
        (
            "volume name with a slash",
            Box::new(|a| a["spec"]["volumes"][0]["name"] = json!("../etc")),
            "spec.volumes[0].name",
        ),
        (
            "overlong volume name",
            Box::new(|a| a["spec"]["volumes"][0]["name"] = json!("v".repeat(33))),
            "spec.volumes[0].name",
        ),
        (
            "relative mount path",
            Box::new(|a| a["spec"]["volumes"][0]["mountPath"] = json!("pgdata")),
            "mountPath must be an absolute path",
        ),
        (
            "mount path escaping",
            Box::new(|a| a["spec"]["volumes"][0]["mountPath"] = json!("/data/../etc")),
            "mountPath must not contain '..'",
        ),
        (
            "size not a quantity",
            Box::new(|a| a["spec"]["volumes"][0]["size"] = json!("lots")),
            "size must be a quantity",
        ),
        (
            "zero size",
            Box::new(|a| a["spec"]["volumes"][0]["size"] = json!("0")),
            "size must be a quantity",
        ),
        (
            "negative size",
            Box::new(|a| a["spec"]["volumes"][0]["size"] = json!("-1Gi")),
            "size must be a quantity",
        ),
        (
            "huge size",
            Box::new(|a| a["spec"]["volumes"][0]["size"] = json!("2Pi")),
            "size must be a quantity",
        ),
        (
            "missing size",
            Box::new(|a| {
                a["spec"]["volumes"][0]
                    .as_object_mut()
                    .unwrap()
                    .remove("size");
            }),
            "spec.volumes[0].size: Required value",
        ),
        (
            "unknown kill selection",
            Box::new(|a| a["spec"]["killSelection"] = json!("RandomFirst")),
            "spec.killSelection",
        ),
        (
            "health capacity above 1",
            Box::new(|a| a["spec"]["upgradeStrategy"] = json!({ "minimumHealthCapacity": 1.5 })),
            "minimumHealthCapacity",
        ),
        (
            "negative health capacity",
            Box::new(|a| a["spec"]["upgradeStrategy"] = json!({ "minimumHealthCapacity": -0.1 })),
            "minimumHealthCapacity",
        ),
        (
            "unknown node loss action",
            Box::new(|a| a["spec"]["nodeLossPolicy"] = json!({ "action": "Panic" })),
            "spec.nodeLossPolicy.action",
        ),
        (
            "negative node loss delay",
            Box::new(|a| {
                a["spec"]["nodeLossPolicy"] = json!({ "action": "Replace", "afterSeconds": -5 })
            }),
            "afterSeconds",
        ),
        (
            "overlong app name",
            Box::new(|a| a["metadata"]["name"] = json!("a".repeat(41))),
            "at most 40 characters",
        ),
        (
            "app name starting with a digit",
            Box::new(|a| a["metadata"]["name"] = json!("9lives")),
            "DNS label starting with a letter",
        ),
        (
            "app name with a dot",
            Box::new(|a| a["metadata"]["name"] = json!("pg.main")),
            "DNS label starting with a letter",
        ),
        (
            "missing template",
            Box::new(|a| {
                a["spec"].as_object_mut().unwrap().remove("template");
            }),
            "spec.template: Required value",
        ),
        (
            "container without a name",
            Box::new(|a| {
                a["spec"]["template"]["spec"]["containers"][0]
                    .as_object_mut()
                    .unwrap()
                    .remove("name");
            }),
            "name: Required value",
        ),
        (
            "empty volume name",
            Box::new(|a| a["spec"]["volumes"][0]["name"] = json!("")),
            "spec.volumes[0].name",
        ),
        (
            "volume name ending in a dash",
            Box::new(|a| a["spec"]["volumes"][0]["name"] = json!("data-")),
            "spec.volumes[0].name",
        ),
        (
            "volume name with an underscore",
            Box::new(|a| a["spec"]["volumes"][0]["name"] = json!("pg_data")),
            "spec.volumes[0].name",
        ),
        (
            "root mount path",
            Box::new(|a| a["spec"]["volumes"][0]["mountPath"] = json!("/")),
            "spec.volumes[0].mountPath",
        ),
        (
            "overlong mount path",
            Box::new(|a| {
                a["spec"]["volumes"][0]["mountPath"] = json!(format!("/{}", "d".repeat(1100)))
            }),
            "spec.volumes[0].mountPath",
        ),
        (
            "duplicate mount paths",
            Box::new(|a| {
                a["spec"]["volumes"].as_array_mut().unwrap().push(json!({ "name": "wal", "size": "1Gi", "mountPath": "/var/lib/postgresql/data" }));
            }),
            "volume mountPaths must be unique",
        ),
        (
            "size with a space",
            Box::new(|a| a["spec"]["volumes"][0]["size"] = json!("1 Gi")),
            "size must be a quantity",
        ),
        (
            "empty size",
            Box::new(|a| a["spec"]["volumes"][0]["size"] = json!("")),
            "spec.volumes[0].size",
        ),
        (
            "size with an unknown unit",
            Box::new(|a| a["spec"]["volumes"][0]["size"] = json!("10GB")),
            "size must be a quantity",
        ),
        (
            "too many container names",
            Box::new(|a| {
                let names: Vec<String> = (0..33).map(|i| format!("c{i}")).collect();
                a["spec"]["volumes"][0]["containers"] = json!(names);
            }),
            "must have at most 32 items",
        ),
        (
            "fractional instances",
            Box::new(|a| a["spec"]["instances"] = json!(1.5)),
            "spec.instances",
        ),
        (
            "lower-case kill selection",
            Box::new(|a| a["spec"]["killSelection"] = json!("youngestFirst")),
            "spec.killSelection",
        ),
        (
            "node loss delay over 30 days",
            Box::new(|a| {
                a["spec"]["nodeLossPolicy"] =
                    json!({ "action": "Replace", "afterSeconds": 2_592_001 })
            }),
            "afterSeconds",
        ),
        (
            "upper-case app name",
            Box::new(|a| a["metadata"]["name"] = json!("Postgres")),
            "RFC 1123",
        ),
        (
            "volumes as an object",
            Box::new(|a| a["spec"]["volumes"] = json!({ "name": "pgdata" })),
            "spec.volumes",
        ),
        (
            "too many volumes",
            Box::new(|a| {
                let vols: Vec<Value> = (0..17).map(|i| json!({ "name": format!("v{i}"), "size": "1Gi", "mountPath": format!("/v{i}") })).collect();
                a["spec"]["volumes"] = json!(vols);
            }),
            "must have at most 16 items",
        ),
    ]
}

#[tokio::test]
async fn invalid_apps_are_rejected_with_a_clear_message() {
    let cluster = TestCluster::shared();
    Operator::shared().await; // installs the CRD
    let client = cluster.client().await;
    let ns = cluster.namespace(&client, "invalid").await;
    let apps: Api<StatefulApp> = Api::namespaced(client.clone(), &ns);
    let mut failures = Vec::new();
    let cases = invalid_apps();
    for (what, break_it, expected) in &cases {
        let mut app = postgres(1);
        break_it(&mut app);
        // Server-side apply sends the object untyped, as kubectl does.
        let name = app["metadata"]["name"]
            .as_str()
            .unwrap_or("postgres")
            .to_string();
        let result = apps
            .patch(
                &name,
                &PatchParams::apply("validation-test"),
                &Patch::Apply(&app),
            )
            .await;
        match result {
            Ok(_) => failures.push(format!("{what}: accepted")),
            // 422 Invalid; a value of the wrong type fails earlier, when
            // server-side apply builds its typed patch (reported as a 500).
            Err(kube::Error::Api(e))
                if (e.code == 422 || e.message.contains("failed to create typed patch"))
                    && e.message.contains(expected) => {}
            Err(e) => failures.push(format!("{what}: expected {expected:?}, got {e}")),
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases wrong:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

#[tokio::test]
async fn huge_objects_are_refused() {
    let cluster = TestCluster::shared();
    Operator::shared().await;
    let client = cluster.client().await;
    let ns = cluster.namespace(&client, "huge").await;
    let apps: Api<StatefulApp> = Api::namespaced(client.clone(), &ns);
    let mut app = postgres(1);
    app["spec"]["template"]["spec"]["containers"][0]["env"] =
        json!([{ "name": "BLOB", "value": "x".repeat(4 * 1024 * 1024) }]);
    let err = apps
        .patch(
            "postgres",
            &PatchParams::apply("validation-test"),
            &Patch::Apply(&app),
        )
        .await
        .expect_err("a 4 MiB object was accepted");
    let message = err.to_string();
    assert!(
        message.contains("too large") || message.contains("413"),
        "{message}"
    );
}

#[tokio::test]
async fn volumes_may_only_grow_after_creation() {
    let cluster = TestCluster::shared();
    Operator::shared().await;
    let client = cluster.client().await;
    let ns = cluster.namespace(&client, "immutable").await;
    let apps: Api<StatefulApp> = Api::namespaced(client.clone(), &ns);
    let app: StatefulApp = serde_json::from_value(postgres(0)).unwrap();
    apps.create(&PostParams::default(), &app).await.unwrap();
    let volume = |name: &str, size: &str, path: &str| json!({ "spec": { "volumes": [{ "name": name, "size": size, "mountPath": path }] } });
    let data = "/var/lib/postgresql/data";
    for (change, refusal) in [
        (volume("other", "100Mi", data), "volumes are immutable"),
        (volume("pgdata", "100Mi", "/data"), "volumes are immutable"),
        (volume("pgdata", "50Mi", data), "may grow, never shrink"),
        (
            json!({ "spec": { "volumes": [
                { "name": "pgdata", "size": "100Mi", "mountPath": data },
                { "name": "wal", "size": "100Mi", "mountPath": "/wal" },
            ] } }),
            "volumes are immutable",
        ),
        (
            json!({ "spec": { "volumes": [
                { "name": "pgdata", "size": "100Mi", "mountPath": data, "containers": ["db"] },
            ] } }),
            "volumes are immutable",
        ),
    ] {
        let err = apps
            .patch("postgres", &PatchParams::default(), &Patch::Merge(&change))
            .await
            .expect_err("volume change accepted");
        assert!(err.to_string().contains(refusal), "{change}: {err}");
    }
    // A volume grows (in another unit, too); everything else may change.
    for size in ["200Mi", "1Gi", "1073741825"] {
        apps.patch(
            "postgres",
            &PatchParams::default(),
            &Patch::Merge(&volume("pgdata", size, data)),
        )
        .await
        .unwrap();
    }
    let err = apps
        .patch(
            "postgres",
            &PatchParams::default(),
            &Patch::Merge(&volume("pgdata", "1Gi", data)),
        )
        .await
        .expect_err("a volume shrank by a byte");
    assert!(err.to_string().contains("never shrink"), "{err}");
    let fine = json!({ "spec": { "instances": 3, "killSelection": "OldestFirst" } });
    apps.patch("postgres", &PatchParams::default(), &Patch::Merge(&fine))
        .await
        .unwrap();
}

//! Unit and property tests of the importer: the tutorial's app, ports,
//! the sandbox, constraints, the rest of a real app, group exports.

use super::*;
use crate::api::{KillSelection, NodeLossAction};
use proptest::prelude::*;
use serde_json::json;

fn options() -> Options {
    Options {
        namespace: Some("db".into()),
        ..Default::default()
    }
}

fn import_with(value: &Value, options: &Options) -> ImportedApp {
    import_app(&value.to_string(), options).unwrap_or_else(|e| panic!("{e}"))
}

fn import_one(value: Value) -> ImportedApp {
    import_with(&value, &options())
}

fn refusal(value: Value) -> String {
    match import_app(&value.to_string(), &options()) {
        Ok(_) => panic!("imported"),
        Err(e) => e.to_string(),
    }
}

fn pod(imported: &ImportedApp) -> Value {
    serde_json::to_value(imported.app.spec.template.get().spec.as_ref().unwrap()).unwrap()
}

fn env_of(pod: &Value) -> BTreeMap<String, Value> {
    pod["containers"][0]["env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let value = e
                .get("value")
                .cloned()
                .unwrap_or_else(|| e["valueFrom"].clone());
            (e["name"].as_str().unwrap().to_string(), value)
        })
        .collect()
}

fn entry<'a>(imported: &'a ImportedApp, field: &str) -> &'a report::Entry {
    imported
        .report
        .entries
        .iter()
        .find(|e| e.field == field)
        .unwrap_or_else(|| panic!("no entry for {field}: {:#?}", imported.report.entries))
}

/// The tutorial's postgres.marathon.json, as DC/OS published it.
fn postgres() -> Value {
    json!({
        "id": "/postgres",
        "cpus": 1, "instances": 1, "mem": 512,
        "container": {
            "type": "DOCKER",
            "volumes": [{ "containerPath": "pgdata", "mode": "RW", "persistent": { "size": 100 } }],
            "docker": { "image": "postgres:latest", "network": "BRIDGE",
                        "portMappings": [{ "containerPort": 5432, "hostPort": 0, "protocol": "tcp", "name": "postgres" }] }
        },
        "env": { "POSTGRES_PASSWORD": "password", "PGDATA": "pgdata" },
        "residency": { "taskLostBehavior": "WAIT_FOREVER" },
        "upgradeStrategy": { "maximumOverCapacity": 0, "minimumHealthCapacity": 0 }
    })
}

#[test]
fn the_tutorial_app_keeps_its_data_path_in_the_volume() {
    let imported = import_one(postgres());
    let app = &imported.app;
    assert_eq!(app.metadata.name.as_deref(), Some("postgres"));
    assert_eq!(app.metadata.namespace.as_deref(), Some("db"));
    let volume = &app.spec.volumes[0];
    assert_eq!(
        (volume.name.as_str(), volume.size.as_str()),
        ("pgdata", "100Mi")
    );
    assert_eq!(
        volume.mount_path, "/mnt/mesos/sandbox/pgdata",
        "where Mesos mounted it"
    );
    let pod = pod(&imported);
    let container = &pod["containers"][0];
    assert_eq!(container["workingDir"], "/mnt/mesos/sandbox");
    let env = env_of(&pod);
    assert_eq!(env["MESOS_SANDBOX"], "/mnt/mesos/sandbox");
    assert_eq!(
        env["PGDATA"], "/mnt/mesos/sandbox/pgdata",
        "inside the volume"
    );
    assert_eq!(entry(&imported, "env.PGDATA").outcome, Outcome::Rewritten);
    assert!(
        entry(&imported, "env.PGDATA")
            .detail
            .contains("inside volume pgdata")
    );
    assert_eq!(env["PORT0"], "5432");
    assert_eq!(env["PORT_POSTGRES"], "5432");
    assert_eq!(env["PORT_5432"], "5432");
    assert_eq!(
        env["MESOS_TASK_ID"],
        "postgres.$(STATEFULAPP_INSTANCE_UUID)"
    );
    assert_eq!(env["MARATHON_APP_RESOURCE_CPUS"], "1.0");
    assert_eq!(env["MARATHON_APP_RESOURCE_MEM"], "512.0");
    assert_eq!(env["MARATHON_APP_DOCKER_IMAGE"], "postgres:latest");
    assert_eq!(app.spec.node_loss_policy.action, NodeLossAction::Wait);
    assert_eq!(app.spec.upgrade_strategy.minimum_health_capacity, 0.0);
    assert_eq!(imported.report.verdict(), Verdict::WithRewrites);
}

#[test]
fn an_uppercase_id_is_lowercased_and_says_so() {
    let mut app = postgres();
    app["id"] = json!("/Prod/PostgreSQL");
    let imported = import_one(app);
    assert_eq!(imported.app.metadata.name.as_deref(), Some("postgresql"));
    assert_eq!(entry(&imported, "id").outcome, Outcome::Rewritten);
    assert_eq!(entry(&import_one(postgres()), "id").outcome, Outcome::Exact);
}

#[test]
fn the_host_path_trick_mounts_the_volume_in_the_sandbox_too() {
    let mut app = postgres();
    app["container"]["volumes"].as_array_mut().unwrap().push(
        json!({ "containerPath": "/var/lib/postgresql/data", "hostPath": "pgdata", "mode": "RW" }),
    );
    app["env"]["PGDATA"] = json!("/var/lib/postgresql/data/pgdata");
    let imported = import_one(app);
    assert_eq!(
        imported.app.spec.volumes[0].mount_path,
        "/var/lib/postgresql/data"
    );
    let pod = pod(&imported);
    assert_eq!(
        pod["containers"][0]["volumeMounts"],
        json!([{ "name": crate::names::pod_volume_name("pgdata"), "mountPath": "/mnt/mesos/sandbox/pgdata" }])
    );
    assert_eq!(entry(&imported, "env.PGDATA").outcome, Outcome::Exact);
    assert_eq!(
        entry(&imported, "container.volumes[1]").outcome,
        Outcome::Exact
    );
}

#[test]
fn sandbox_references_in_env_resolve_into_the_volume() {
    let mut app = postgres();
    app["env"] = json!({
        "A": "$MESOS_SANDBOX/pgdata/x", "B": "${MESOS_SANDBOX}/other",
        "C": "/mnt/mesos/sandbox/pgdata", "D": "./pgdata/sub", "E": "pgdataX", "F": "plain"
    });
    let imported = import_one(app);
    let env = env_of(&pod(&imported));
    assert_eq!(env["A"], "/mnt/mesos/sandbox/pgdata/x");
    assert_eq!(env["B"], "/mnt/mesos/sandbox/other");
    assert_eq!(env["C"], "/mnt/mesos/sandbox/pgdata");
    assert_eq!(env["D"], "/mnt/mesos/sandbox/pgdata/sub");
    assert_eq!(env["E"], "pgdataX", "not a path of the volume");
    assert_eq!(env["F"], "plain");
    assert_eq!(entry(&imported, "env.C").outcome, Outcome::Exact);
    assert_eq!(entry(&imported, "env.F").outcome, Outcome::Exact);
}

#[test]
fn port_definitions_with_port_zero_and_a_mesos_http_check_import() {
    let imported = import_one(json!({
        "id": "/kv", "instances": 2, "cpus": 0.2, "mem": 128,
        "cmd": "./kv --port $PORT0 --admin $PORT_ADMIN --data data",
        "container": { "type": "MESOS", "docker": { "image": "kv:1" },
            "volumes": [{ "containerPath": "data", "mode": "RW", "persistent": { "size": 512 } }] },
        "portDefinitions": [
            { "port": 0, "protocol": "tcp", "name": "http" },
            { "port": 0, "name": "admin" },
            { "port": 10105, "name": "peer", "labels": { "VIP_0": "/kv-peers:7000" } }
        ],
        "healthChecks": [{ "protocol": "MESOS_HTTP", "path": "/health", "portIndex": 0 },
                         { "protocol": "MESOS_TCP", "port": 10105 }]
    }));
    let pod = pod(&imported);
    let ports: Vec<i64> = pod["containers"][0]["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["containerPort"].as_i64().unwrap())
        .collect();
    assert_eq!(ports, vec![31000, 31001, 10105], "0 ports chosen in order");
    let env = env_of(&pod);
    assert_eq!(env["PORT0"], "31000");
    assert_eq!(env["PORT1"], "31001");
    assert_eq!(env["PORT_ADMIN"], "31001");
    assert_eq!(env["PORT"], "31000");
    assert_eq!(env["PORTS"], "31000,31001,10105");
    let probe = &pod["containers"][0]["livenessProbe"];
    assert_eq!(probe["httpGet"]["port"], 31000);
    assert_eq!(
        pod["containers"][0]["readinessProbe"]["httpGet"]["path"],
        "/health"
    );
    assert_eq!(
        entry(&imported, "healthChecks[1]").outcome,
        Outcome::Dropped
    );
    let names: Vec<&str> = imported
        .services
        .iter()
        .map(|s| s["metadata"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        vec!["kv", "kv-peers"],
        "one for the service port, one for the VIP"
    );
    assert_eq!(imported.services[1]["spec"]["ports"][0]["port"], 7000);
    assert_eq!(
        imported.services[1]["spec"]["ports"][0]["targetPort"],
        10105
    );
    assert_eq!(
        imported.services[0]["spec"]["selector"]["statefulapp.io/app"],
        "kv"
    );
}

#[test]
fn checks_map_to_probes_by_index_port_and_name() {
    let mut app = postgres();
    app["container"]["docker"]["portMappings"] = json!([
        { "containerPort": 8080, "name": "web", "servicePort": 10001 },
        { "containerPort": 0, "hostPort": 0, "name": "metrics" }
    ]);
    app["healthChecks"] = json!([{ "protocol": "COMMAND", "command": { "value": "pg_isready" },
        "gracePeriodSeconds": 30, "intervalSeconds": 10, "timeoutSeconds": 5, "maxConsecutiveFailures": 2 }]);
    app["readinessChecks"] =
        json!([{ "name": "ready", "protocol": "HTTPS", "path": "/ready", "portName": "metrics" }]);
    let imported = import_one(app);
    let pod = pod(&imported);
    let container = &pod["containers"][0];
    assert_eq!(
        container["livenessProbe"]["exec"]["command"][2],
        "pg_isready"
    );
    assert_eq!(container["livenessProbe"]["initialDelaySeconds"], 30);
    assert_eq!(container["livenessProbe"]["failureThreshold"], 2);
    assert_eq!(container["readinessProbe"]["httpGet"]["port"], 31000);
    assert_eq!(container["readinessProbe"]["httpGet"]["scheme"], "HTTPS");
    assert_eq!(imported.services[0]["spec"]["ports"][0]["port"], 10001);

    let mut no_port = postgres();
    no_port["container"]["docker"]["portMappings"] = json!([]);
    no_port["healthChecks"] = json!([{ "protocol": "TCP", "portIndex": 1 }]);
    assert!(refusal(no_port).contains("portIndex 1 but the app has 0 port(s)"));
}

#[test]
fn constraints_become_affinity_and_spread() {
    let mut app = postgres();
    app["instances"] = json!(6);
    app["constraints"] = json!([
        ["hostname", "UNIQUE"],
        ["rack", "GROUP_BY", "3"],
        ["@zone", "GROUP_BY"],
        ["hostname", "MAX_PER", "2"],
        ["@region", "LIKE", "eu-(west|central)-1"],
        ["@hostname", "UNLIKE", "node-[0-9]"],
        ["disk", "IS", "ssd"],
        ["@region", "CLUSTER"]
    ]);
    let imported = import_one(app);
    let pod = pod(&imported);
    let affinity = &pod["affinity"];
    assert_eq!(
        affinity["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][0]["topologyKey"],
        "kubernetes.io/hostname"
    );
    assert_eq!(
        affinity["podAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][0]["topologyKey"],
        "topology.kubernetes.io/region"
    );
    let terms = &affinity["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
        [0]["matchExpressions"];
    assert_eq!(terms[0]["values"], json!(["eu-central-1", "eu-west-1"]));
    assert_eq!(terms[1]["operator"], "NotIn");
    assert_eq!(terms[1]["values"].as_array().unwrap().len(), 10);
    assert_eq!(
        terms[2],
        json!({ "key": "disk", "operator": "In", "values": ["ssd"] })
    );
    let spread = &pod["topologySpreadConstraints"];
    assert_eq!(spread[0]["minDomains"], 3);
    assert_eq!(spread[1]["topologyKey"], "topology.kubernetes.io/zone");
    assert_eq!(spread[2]["maxSkew"], 2);
    assert_eq!(
        entry(&imported, "constraints[3]").outcome,
        Outcome::Approximated
    );
    assert_eq!(entry(&imported, "constraints[0]").outcome, Outcome::Exact);
    assert_eq!(
        entry(&imported, "constraints[6]").outcome,
        Outcome::Rewritten,
        "a plain label"
    );
}

#[test]
fn a_like_regex_on_zones_uses_the_live_nodes_or_says_the_rewrite() {
    let mut app = postgres();
    app["constraints"] = json!([["@zone", "LIKE", "us-east-.*"]]);
    let offline = refusal(app.clone());
    assert!(
        offline.contains("[\"@zone\", \"LIKE\", \"<value>|<value>|...\"]"),
        "{offline}"
    );
    let nodes = ["us-east-1a", "us-east-2b", "eu-west-1a"]
        .iter()
        .map(|z| BTreeMap::from([("topology.kubernetes.io/zone".to_string(), z.to_string())]))
        .collect();
    let imported = import_with(
        &app,
        &Options {
            nodes: Some(nodes),
            ..options()
        },
    );
    let terms = &pod(&imported)["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
        ["nodeSelectorTerms"][0]["matchExpressions"][0];
    assert_eq!(terms["values"], json!(["us-east-1a", "us-east-2b"]));
    assert!(
        entry(&imported, "constraints[0]")
            .detail
            .contains("eu-west-1a"),
        "says what it saw"
    );
}

#[test]
fn the_rest_of_a_real_app() {
    let mut app = postgres();
    app["user"] = json!("postgres");
    app["secrets"] =
        json!({ "pw": { "source": "/db/postgres/password" }, "tls": { "source": "db/tls-key" } });
    app["env"]["POSTGRES_PASSWORD"] = json!({ "secret": "pw" });
    app["container"]["volumes"]
        .as_array_mut()
        .unwrap()
        .push(json!({ "containerPath": "tls.key", "secret": "tls" }));
    app["args"] = json!(["-c", "max_connections=50"]);
    app["taskKillGracePeriodSeconds"] = json!(30);
    app["unreachableStrategy"] =
        json!({ "inactiveAfterSeconds": 600, "expungeAfterSeconds": 1200 });
    app["dependencies"] = json!(["/db/etcd"]);
    app["labels"] = json!({ "team": "data", "HAPROXY_0_PATH": "/api" });
    app["acceptedResourceRoles"] = json!(["*"]);
    app["networks"] = json!([{ "mode": "container/bridge" }]);
    app["killSelection"] = json!("OLDEST_FIRST");
    let text = app.to_string();
    let refused = refusal(app.clone());
    assert!(refused.contains("--uid postgres=<uid>"), "{refused}");
    let imported = import_with(
        &app,
        &Options {
            users: BTreeMap::from([("postgres".into(), 999)]),
            ..options()
        },
    );
    let spec = &imported.app.spec;
    assert_eq!(spec.kill_selection, KillSelection::OldestFirst);
    assert_eq!(spec.node_loss_policy.action, NodeLossAction::Replace);
    assert_eq!(spec.node_loss_policy.after_seconds, Some(600));
    let pod = pod(&imported);
    assert_eq!(
        pod["securityContext"],
        json!({ "runAsUser": 999, "fsGroup": 999 })
    );
    assert_eq!(pod["terminationGracePeriodSeconds"], 30);
    assert_eq!(
        pod["containers"][0]["args"],
        json!(["-c", "max_connections=50"])
    );
    let env = env_of(&pod);
    assert_eq!(
        env["POSTGRES_PASSWORD"],
        json!({ "secretKeyRef": { "name": "db-postgres-password", "key": "value" } })
    );
    assert_eq!(pod["volumes"][0]["secret"]["secretName"], "db-tls-key");
    assert!(
        pod["containers"][0]["volumeMounts"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["mountPath"] == "/mnt/mesos/sandbox/tls.key" && m["subPath"] == "value")
    );
    let annotations = imported.app.metadata.annotations.as_ref().unwrap();
    assert_eq!(
        annotations["statefulapp.io/marathon-dependencies"],
        "/db/etcd"
    );
    assert!(annotations["statefulapp.io/marathon-labels"].contains("/api"));
    assert_eq!(
        entry(&imported, "residency").outcome,
        Outcome::Dropped,
        "superseded"
    );
    let output = serde_json::to_string(&imported.app).unwrap();
    assert!(
        !output.contains("\"password\""),
        "no secret value: {output}"
    );
    assert!(text.contains("/db/postgres/password"));
}

#[test]
fn fetch_uris_need_an_image_to_download_them() {
    let mut app = postgres();
    app["fetch"] = json!([{ "uri": "https://example.com/tools.tgz", "extract": true }, { "uri": "https://example.com/run.sh", "executable": true }]);
    assert!(refusal(app.clone()).contains("--fetch-image"));
    let imported = import_with(
        &app,
        &Options {
            fetch_image: Some("busybox:1".into()),
            ..options()
        },
    );
    let pod = pod(&imported);
    let script = pod["initContainers"][0]["command"][2].as_str().unwrap();
    assert!(
        script.contains("tar xf 'tools.tgz'") && script.contains("chmod +x 'run.sh'"),
        "{script}"
    );
    assert_eq!(
        pod["volumes"][0],
        json!({ "name": "mesos-sandbox", "emptyDir": {} })
    );
}

#[test]
fn persistent_types_sizes_and_profiles() {
    let mut app = postgres();
    app["container"]["volumes"][0]["persistent"] =
        json!({ "size": 100, "type": "mount", "maxSize": 200 });
    let imported = import_one(app.clone());
    assert_eq!(
        entry(&imported, "container.volumes[0].persistent.type").outcome,
        Outcome::Approximated
    );
    assert_eq!(
        entry(&imported, "container.volumes[0].persistent.maxSize").outcome,
        Outcome::Dropped
    );
    app["container"]["volumes"][0]["persistent"]["profileName"] = json!("fast-ssd");
    assert!(refusal(app).contains("profileName"));
}

#[test]
fn every_field_of_the_input_has_an_entry() {
    let mut app = postgres();
    app["someFutureField"] = json!({ "nested": [1, 2] });
    app["backoffSeconds"] = json!(1);
    let imported = import_one(app.clone());
    let fields: Vec<&str> = imported
        .report
        .entries
        .iter()
        .map(|e| e.field.as_str())
        .collect();
    assert!(fields.contains(&"someFutureField.nested[1]"), "{fields:?}");
    let mut leaves = Vec::new();
    collect_leaves(&app, String::new(), &mut leaves);
    for leaf in leaves {
        assert!(
            fields.iter().any(|f| leaf == *f
                || leaf.starts_with(&format!("{f}."))
                || leaf.starts_with(&format!("{f}["))),
            "{leaf} has no entry"
        );
    }
}

fn collect_leaves(value: &Value, path: String, out: &mut Vec<String>) {
    match value {
        Value::Object(m) if !m.is_empty() => m.iter().for_each(|(k, v)| {
            collect_leaves(
                v,
                if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                },
                out,
            )
        }),
        Value::Array(a) if !a.is_empty() => a
            .iter()
            .enumerate()
            .for_each(|(i, v)| collect_leaves(v, format!("{path}[{i}]"), out)),
        _ => out.push(path),
    }
}

#[test]
fn what_cannot_be_honoured_is_refused_with_a_reason() {
    let mut no_volume = postgres();
    no_volume["container"]["volumes"] = json!([]);
    assert!(refusal(no_volume).contains("not resident"));

    let mut external = postgres();
    external["container"]["volumes"]
        .as_array_mut()
        .unwrap()
        .push(json!({ "containerPath": "ext", "external": { "name": "vol", "provider": "dvdi" } }));
    assert!(refusal(external).contains("external volume"));

    let mut host = postgres();
    host["container"]["volumes"]
        .as_array_mut()
        .unwrap()
        .push(json!({ "containerPath": "/logs", "hostPath": "/var/log", "mode": "RW" }));
    assert!(refusal(host).contains("not portable"));

    let mut bad_id = postgres();
    bad_id["id"] = json!("/9lives");
    assert!(refusal(bad_id).contains("DNS label"));

    let mut unknown_secret = postgres();
    unknown_secret["env"]["PASSWORD"] = json!({ "secret": "pw" });
    assert!(refusal(unknown_secret).contains("which secrets does not define"));

    let mut no_image = postgres();
    no_image["container"]["docker"] = json!({});
    assert!(refusal(no_image).contains("image"));

    let mut both = postgres();
    both["cmd"] = json!("x");
    both["args"] = json!(["y"]);
    assert!(refusal(both).contains("both cmd and args"));
}

#[test]
fn a_group_export_imports_to_namespaces_per_group() {
    let export = json!({
        "id": "/",
        "apps": [postgres()],
        "groups": [
            { "id": "/prod", "apps": [], "groups": [
                { "id": "/prod/db", "apps": [
                    { "id": "/prod/db/mysql", "container": { "docker": { "image": "mysql:8" },
                        "volumes": [{ "containerPath": "data", "persistent": { "size": 1024 } }] } },
                    { "id": "/prod/db/web", "container": { "docker": { "image": "nginx" } } }
                ] }
            ] }
        ]
    });
    let mut export = export;
    export["groups"][0]["dependencies"] = json!(["/infra"]);
    export["groups"][0]["enforceRole"] = json!(false);
    let result = import(&export.to_string(), &Options::default()).unwrap();
    let groups: Vec<(&str, usize)> = result
        .groups
        .iter()
        .map(|g| (g.app.as_str(), g.entries.len()))
        .collect();
    assert_eq!(groups, vec![("/", 3), ("/prod", 5), ("/prod/db", 2)]);
    assert_eq!(
        result.groups[1].verdict(),
        Verdict::WithRewrites,
        "dependencies dropped"
    );
    let kinds: Vec<(&str, &str)> = result
        .objects
        .iter()
        .map(|o| {
            (
                o["kind"].as_str().unwrap(),
                o["metadata"]["name"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        kinds,
        vec![
            ("Namespace", "prod-db"),
            ("StatefulApp", "postgres"),
            ("StatefulApp", "mysql")
        ]
    );
    assert_eq!(result.objects[2]["metadata"]["namespace"], "prod-db");
    assert!(result.objects[1]["metadata"].get("namespace").is_none());
    assert_eq!(result.skipped.len(), 1);
    assert_eq!(result.skipped[0].app, "/prod/db/web");
    assert_eq!(
        result.counts()["withRewrites"],
        1,
        "postgres: PGDATA, ports"
    );
    assert_eq!(result.counts()["exact"], 1, "mysql: nothing to rewrite");

    let mapped = import(
        &export.to_string(),
        &Options {
            namespace_map: BTreeMap::from([("/prod".into(), "databases".into())]),
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(mapped.objects[2]["metadata"]["namespace"], "databases");

    // On request, the stateless app becomes a Deployment.
    let with_deployments = import(
        &export.to_string(),
        &Options {
            deployments: true,
            ..Default::default()
        },
    )
    .unwrap();
    assert!(with_deployments.skipped.is_empty());
    let deployment = with_deployments
        .objects
        .iter()
        .find(|o| o["kind"] == "Deployment")
        .expect("a Deployment");
    assert_eq!(deployment["metadata"]["name"], "web");
    assert_eq!(
        deployment["spec"]["selector"]["matchLabels"]["app.kubernetes.io/name"],
        "web"
    );
    assert_eq!(
        deployment["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/name"],
        "web"
    );
    assert_eq!(
        deployment["spec"]["template"]["spec"]["containers"][0]["image"],
        "nginx"
    );
}

#[test]
fn commands_and_env_reach_the_shell_as_marathon_gave_them() {
    let mut app = postgres();
    app["cmd"] = json!("echo $(date) $$ $PORT0 $(PORT0)");
    app["env"]["PRICE"] = json!("$$5 $(HOME)");
    let imported = import_one(app);
    let pod = pod(&imported);
    // The kubelet turns `$$` into `$` and leaves other text alone.
    assert_eq!(
        pod["containers"][0]["command"][2],
        "echo $$(date) $$$ $PORT0 $$(PORT0)"
    );
    assert_eq!(env_of(&pod)["PRICE"], "$$$5 $$(HOME)");
}

#[test]
fn imported_apps_round_trip_and_respect_the_crd_rules() {
    let imported = import_one(postgres());
    let text = serde_json::to_string(&imported.app).unwrap();
    let back: StatefulApp = serde_json::from_str(&text).unwrap();
    assert_eq!(back, imported.app);
    for volume in &back.spec.volumes {
        assert!(crate::names::is_dns_label(&volume.name) && volume.name.len() <= 32);
        assert!(volume.mount_path.starts_with('/'));
    }
}

/// Any JSON value at a top-level field of a real app: an error, a
/// refusal or an import, never a panic; and a report that covers every
/// field of the input.
fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        (-2i64..70000).prop_map(Value::from),
        "[a-z$/.{}()|*-]{0,12}".prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
            prop::collection::btree_map("[a-zA-Z]{1,8}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    #[test]
    fn any_field_value_is_imported_refused_or_an_error_and_always_reported(
        field in prop::sample::select(vec![
            "env", "labels", "portDefinitions", "healthChecks", "readinessChecks", "constraints",
            "secrets", "fetch", "unreachableStrategy", "residency", "networks", "user", "args",
            "upgradeStrategy", "dependencies", "acceptedResourceRoles", "somethingNew",
        ]),
        value in any_json(),
    ) {
        let mut app = postgres();
        app[field] = value;
        match import_app(&app.to_string(), &Options::default()) {
            Ok(imported) => {
                let mut leaves = Vec::new();
                collect_leaves(&app, String::new(), &mut leaves);
                for leaf in leaves {
                    prop_assert!(imported.report.entries.iter().any(|e| leaf == e.field
                        || leaf.starts_with(&format!("{}.", e.field))
                        || leaf.starts_with(&format!("{}[", e.field))), "{} has no entry", leaf);
                }
            }
            Err(ImportError::Refused(report)) => prop_assert!(!report.refusals().is_empty()),
            Err(ImportError::Json(_)) => {}
            Err(other) => prop_assert!(false, "{}", other),
        }
    }
}

proptest! {
    #[test]
    fn group_exports_of_any_shape_never_panic_and_account_for_every_app(
        apps in prop::collection::vec(any_json(), 0..3),
        nested in any_json(),
    ) {
        let mut apps = apps;
        apps.push(postgres());
        let export = json!({ "id": "/", "apps": apps, "groups": [{ "id": "/g", "apps": [nested], "groups": [] }] });
        if let Ok(result) = import(&export.to_string(), &Options::default()) {
            // Every app is imported, skipped or refused: none vanishes.
            let imported = result.objects.iter().filter(|o| o["kind"] == "StatefulApp").count();
            prop_assert_eq!(imported + result.skipped.len() + result.refused.len(), apps.len() + 1);
        }
    }

    #[test]
    fn never_panics_on_arbitrary_text(text in ".{0,300}") {
        let _ = import(&text, &Options::default());
    }

    #[test]
    fn never_panics_on_arbitrary_app_shapes(
        id in "[/a-zA-Z0-9._-]{0,50}",
        size in proptest::option::of(-5.0f64..1e7),
        path in "[/a-zA-Z0-9._ -]{0,40}",
        env in "[$/a-zA-Z0-9._{}-]{0,30}",
        cpus in proptest::option::of(-1.0f64..64.0),
        port in proptest::option::of(-1i32..70000),
        index in proptest::option::of(0usize..4),
        constraint in prop::collection::vec("[A-Za-z_|.*@()\\[\\]-]{0,12}", 0..4),
    ) {
        let app = json!({
            "id": id, "cpus": cpus, "env": { "X": env },
            "container": { "docker": { "image": "x", "portMappings": [{ "containerPort": port }] },
                "volumes": [{ "containerPath": path, "persistent": { "size": size } }] },
            "healthChecks": [{ "protocol": "MESOS_TCP", "portIndex": index }],
            "constraints": [constraint],
        });
        if let Ok(imported) = import_app(&app.to_string(), &Options::default()) {
            for volume in &imported.app.spec.volumes {
                prop_assert!(crate::names::is_dns_label(&volume.name));
                prop_assert!(volume.mount_path.starts_with('/'));
            }
        }
    }
}

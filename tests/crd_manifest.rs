//! The CRD in `crds/` is the one the Rust types print, and the API server
//! accepts it the way users install it.

mod support;

use std::time::Duration;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::Api;
use statefulapp_operator::crdgen;
use support::{TestCluster, wait_until};

const CRD_FILE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/crds/statefulapp.io_statefulapps.yaml"
);

#[test]
fn crds_dir_matches_the_rust_types() {
    let on_disk = std::fs::read_to_string(CRD_FILE).expect("read crds/ file");
    let generated = crdgen::crd_yaml().unwrap();
    assert!(
        on_disk == generated,
        "crds/ is stale: run `cargo run -- crd > crds/statefulapp.io_statefulapps.yaml`"
    );
}

#[tokio::test]
async fn crd_installs_with_client_side_kubectl_apply_and_is_established() {
    let cluster = TestCluster::shared();
    let output = cluster
        .kubectl()
        .args(["apply", "-f", CRD_FILE])
        .output()
        .expect("run kubectl");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );

    let client = cluster.client().await;
    let crds: Api<CustomResourceDefinition> = Api::all(client);
    wait_until(Duration::from_secs(30), "CRD Established", || {
        let crds = crds.clone();
        async move {
            let crd = crds.get("statefulapps.statefulapp.io").await.ok()?;
            let established = crd
                .status?
                .conditions?
                .into_iter()
                .any(|c| c.type_ == "Established" && c.status == "True");
            established.then_some(())
        }
    })
    .await;
}

//! Metrics and health endpoints of the controller reflect what it does.

mod support;

use support::fixtures::{create_app, postgres, set_instances, wait_for_status};
use support::http::{get, sample};
use support::operator::Operator;
use support::{TestCluster, wait_until};

#[tokio::test]
async fn metrics_report_reconciles_actions_and_instances_by_state() {
    let cluster = TestCluster::shared();
    let operator = Operator::shared().await;
    let client = cluster.client().await;
    let ns = cluster.namespace(&client, "metrics").await;
    let port = operator.metrics_port;

    create_app(&client, &ns, postgres(2)).await;
    wait_for_status(&client, &ns, "postgres", operator, "two running", |s| {
        s.running == 2
    })
    .await;
    set_instances(&client, &ns, "postgres", 1).await;
    wait_for_status(&client, &ns, "postgres", operator, "one stopped", |s| {
        s.stopped == 1
    })
    .await;

    let app = [
        format!("namespace=\"{ns}\""),
        "app=\"postgres\"".to_string(),
    ];
    let exposition = wait_until(
        support::fixtures::WAIT,
        "metrics with the app's states",
        || async {
            let (status, body) = get(port, "/metrics").await?;
            let running = sample(
                &body,
                "statefulapp_instances",
                &[&app[0], &app[1], "state=\"Running\""],
            )?;
            let stopped = sample(
                &body,
                "statefulapp_instances",
                &[&app[0], &app[1], "state=\"Stopped\""],
            )?;
            (status == 200 && running == 1.0 && stopped == 1.0).then_some(body)
        },
    )
    .await;
    let reconciles = sample(
        &exposition,
        "statefulapp_reconciles_total",
        &["result=\"success\""],
    )
    .unwrap();
    assert!(reconciles >= 1.0, "{exposition}");
    for action in ["CreateClaim", "CreatePod", "DeletePod"] {
        let label = format!("action=\"{action}\"");
        let count = sample(&exposition, "statefulapp_actions_total", &[&label]).unwrap_or(0.0);
        assert!(count >= 1.0, "no {action} counted:\n{exposition}");
    }
    let provisioned = sample(&exposition, "statefulapp_volumes_provisioned_total", &[]).unwrap();
    assert!(provisioned >= 2.0, "{exposition}");
    assert!(exposition.contains("statefulapp_reconcile_duration_seconds_bucket"));

    assert_eq!(get(port, "/healthz").await.map(|r| r.0), Some(200));
    assert_eq!(get(port, "/readyz").await.map(|r| r.0), Some(200));
}

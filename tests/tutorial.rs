//! The DC/OS stateful-service tutorial end to end, against the real control
//! plane with the operator and node agents running as processes.

mod support;

use support::TestCluster;
use support::operator::Operator;

#[tokio::test]
async fn the_dcos_stateful_service_tutorial_end_to_end() {
    support::tutorial::walk(TestCluster::shared(), Operator::shared().await).await;
}

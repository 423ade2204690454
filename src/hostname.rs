//! A node's identity as kube-scheduler matches it. A volume's node
//! affinity and a published capacity's topology select nodes by label,
//! never by name, and the label that tells one node from another is
//! `kubernetes.io/hostname`. The kubelet sets it to the machine's hostname,
//! which is not always the node's name (a cloud provider may name the node
//! after its instance, or the label may be set otherwise at registration):
//! so the value pinned is the one the node carries, read from its Node.

use k8s_openapi::api::core::v1::Node;
use kube::{Api, Client, ResourceExt};

use crate::Result;

/// The label kube-scheduler matches volume affinities and capacity
/// topologies against.
pub const LABEL_HOSTNAME: &str = "kubernetes.io/hostname";

/// The value that selects `node`: its hostname label, or its name if it
/// carries none.
pub fn of(node: &Node) -> String {
    node.labels()
        .get(LABEL_HOSTNAME)
        .cloned()
        .unwrap_or_else(|| node.name_any())
}

/// The value that selects the node named `name`, read from the API
/// server; its name if the node is gone (nothing else is known of it).
pub async fn lookup(client: &Client, name: &str) -> Result<String> {
    let node = Api::<Node>::all(client.clone()).get_opt(name).await?;
    Ok(node.as_ref().map_or_else(|| name.to_string(), of))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn node(labels: serde_json::Value) -> Node {
        serde_json::from_value(
            json!({ "metadata": { "name": "ip-10-0-0-7.ec2.internal", "labels": labels } }),
        )
        .unwrap()
    }

    #[test]
    fn a_node_is_selected_by_the_hostname_it_carries() {
        let overridden = node(json!({ LABEL_HOSTNAME: "db-7" }));
        assert_eq!(of(&overridden), "db-7");
    }

    #[test]
    fn a_node_without_the_label_is_selected_by_name() {
        assert_eq!(of(&node(json!({}))), "ip-10-0-0-7.ec2.internal");
    }
}

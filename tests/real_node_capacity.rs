//! Disk capacity and volume sizes on real nodes: each node's data disk is
//! a filesystem of its own (an ext4 image mounted at the agent's base dir
//! inside the node, 1 GiB on `real-node-0`, 3 GiB on `real-node-1`), the
//! chart runs with `agent.sizeEnforcement=image` (a filesystem per volume),
//! its agents publish what is left on each node, and the stock
//! kube-scheduler and the provisioner place volumes only where they fit.

mod support;

use std::time::Duration;

use k8s_openapi::api::core::v1::{PersistentVolume, Pod};
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::api::storage::v1::CSIStorageCapacity;
use kube::api::{Api, ListParams};
use kube::{Client, ResourceExt};
use serde_json::json;
use statefulapp_operator::api::InstanceState;
use statefulapp_operator::capacity::{ANNOTATION_RESERVED, ANNOTATION_ROOM, ANNOTATION_USED};
use statefulapp_operator::names::{LABEL_APP, LABEL_NODE};
use statefulapp_operator::quantity;
use support::TestCluster;
use support::chart::{ChartRelease, RELEASE_NAMESPACE};
use support::fixtures::{busybox_app, create_app, in_state, wait_for_status};
use support::wait::wait_until;
use tokio::sync::OnceCell;

const WAIT: Duration = Duration::from_secs(120);
const MI: u64 = 1 << 20;
/// Each node's data disk, in MiB.
const DISKS: [(&str, u64); 2] = [("real-node-0", 1024), ("real-node-1", 3072)];

/// The data disks mounted, then the chart installed, once for this binary.
async fn release() -> &'static ChartRelease {
    static RELEASE: OnceCell<ChartRelease> = OnceCell::const_new();
    RELEASE
        .get_or_init(|| async {
            tokio::task::spawn_blocking(|| {
                let cluster = TestCluster::shared_real();
                for (name, mib) in DISKS {
                    let node = cluster.real_nodes.iter().find(|n| n.name == name).unwrap();
                    let image = node.dir.join("data-disk.img");
                    let status = std::process::Command::new("mkfs.ext4")
                        .args(["-q", "-F", "-m", "0"])
                        .arg(&image)
                        .arg(format!("{mib}M"))
                        .status()
                        .expect("run mkfs.ext4");
                    assert!(status.success(), "mkfs.ext4 {}", image.display());
                    node.shell(&format!(
                        "mount -o loop {} /var/lib/statefulapp",
                        image.display()
                    ));
                }
                ChartRelease::install(cluster, &["agent.sizeEnforcement=image"])
            })
            .await
            .expect("install the chart")
        })
        .await
}

/// The capacity the agent of `node` published: (room, reserved, capacity).
async fn published(client: &Client, node: &str) -> Option<(u64, u64, u64)> {
    let api: Api<CSIStorageCapacity> = Api::namespaced(client.clone(), RELEASE_NAMESPACE);
    let object = api
        .get_opt(&format!("statefulapp-local.{node}"))
        .await
        .ok()??;
    let number = |key| object.annotations().get(key)?.parse::<u64>().ok();
    Some((
        number(ANNOTATION_ROOM)?,
        number(ANNOTATION_RESERVED)?,
        quantity::bytes(&object.capacity.as_ref()?.0)?,
    ))
}

/// Sizes of the volumes on `node`, in bytes.
async fn reserved_on(client: &Client, node: &str) -> Vec<u64> {
    let pvs: Api<PersistentVolume> = Api::all(client.clone());
    let list = pvs
        .list(&ListParams::default().labels(&format!("{LABEL_NODE}={node}")))
        .await
        .unwrap();
    list.items
        .iter()
        .map(|pv| {
            let size = &pv.spec.as_ref().unwrap().capacity.as_ref().unwrap()["storage"];
            quantity::bytes(&size.0).unwrap()
        })
        .collect()
}

async fn pods_of(client: &Client, ns: &str, app: &str) -> Vec<Pod> {
    Api::<Pod>::namespaced(client.clone(), ns)
        .list(&ListParams::default().labels(&format!("{LABEL_APP}={app}")))
        .await
        .unwrap()
        .items
}

/// The notes of the Events in `ns` with `reason` about objects whose name
/// starts with `about`.
async fn event_notes(client: &Client, ns: &str, reason: &str, about: &str) -> Vec<String> {
    Api::<Event>::namespaced(client.clone(), ns)
        .list(&Default::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|e| e.reason.as_deref() == Some(reason))
        .filter(|e| {
            e.regarding
                .as_ref()
                .and_then(|r| r.name.as_deref())
                .is_some_and(|name| name.starts_with(about))
        })
        .filter_map(|e| e.note)
        .collect()
}

#[tokio::test]
async fn each_agent_publishes_its_disk_for_the_scheduler() {
    let release = release().await;
    let cluster = TestCluster::shared_real();
    let client = cluster.client().await;
    for (node, mib) in DISKS {
        let (room, _, capacity) =
            wait_until(WAIT, "a published capacity", || published(&client, node)).await;
        eprintln!(
            "{node}: {mib} MiB disk, room for volumes {} MiB, capacity {} MiB",
            room / MI,
            capacity / MI
        );
        // The filesystem's own metadata takes a little of the disk.
        assert!(
            room <= mib * MI && room > mib * MI * 9 / 10,
            "{node}: room {room}"
        );
    }
    let (ok, yaml) = {
        let output = release
            .kubectl()
            .args(["get", "csidriver", "local.statefulapp.io", "-o", "yaml"])
            .output()
            .unwrap();
        (
            output.status.success(),
            String::from_utf8_lossy(&output.stdout).into_owned(),
        )
    };
    assert!(ok && yaml.contains("storageCapacity: true"), "{yaml}");
}

#[tokio::test]
async fn a_full_node_is_skipped_and_a_node_is_never_overcommitted() {
    let release = release().await;
    let cluster = TestCluster::shared_real();
    let client = cluster.client().await;
    let ns = cluster.namespace(&client, "capacity").await;
    let (room0, _, _) = wait_until(WAIT, "capacity of real-node-0", || {
        published(&client, "real-node-0")
    })
    .await;

    // Two apps pinned to real-node-0 at once, each with 60% of its room:
    // the scheduler sees room for both (the capacity is republished only
    // after the first volume is made), so the provisioner must refuse one.
    let each = format!("{}", room0 * 6 / 10);
    create_app(
        &client,
        &ns,
        busybox_app("first", 1, &each, Some("real-node-0")),
    )
    .await;
    create_app(
        &client,
        &ns,
        busybox_app("second", 1, &each, Some("real-node-0")),
    )
    .await;
    let running = wait_until(WAIT, "one of the two apps running", || async {
        let mut running = Vec::new();
        for name in ["first", "second"] {
            if pods_of(&client, &ns, name)
                .await
                .iter()
                .any(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
            {
                running.push(name);
            }
        }
        (!running.is_empty()).then_some(running)
    })
    .await;
    // Long enough for the other to be provisioned, were it to be.
    tokio::time::sleep(Duration::from_secs(15)).await;
    let reserved: u64 = reserved_on(&client, "real-node-0").await.iter().sum();
    assert!(
        reserved <= room0,
        "real-node-0 overcommitted: {reserved} reserved of {room0}"
    );
    assert_eq!(running.len(), 1, "only one fits: {running:?}");
    let refused = event_notes(&client, &ns, "NotEnoughDiskSpace", "").await;
    eprintln!("provisioner refusals: {refused:?}");
    let other = if running[0] == "first" {
        "second"
    } else {
        "first"
    };
    for pod in pods_of(&client, &ns, other).await {
        assert!(pod.spec.unwrap().node_name.is_none(), "{other} was placed");
    }
    let (_, _, left) = wait_until(WAIT, "real-node-0 republished", || async {
        let published = published(&client, "real-node-0").await?;
        (published.1 > 0).then_some(published)
    })
    .await;
    assert!(left < 500 * MI, "real-node-0 has {left} left");

    // real-node-0 is full for 500Mi volumes: three land on real-node-1.
    create_app(&client, &ns, busybox_app("small", 3, "500Mi", None)).await;
    let status = wait_for_status(&client, &ns, "small", release, "3 running", |s| {
        in_state(s, InstanceState::Running).len() == 3
    })
    .await;
    for instance in &status.instances {
        assert_eq!(
            instance.node.as_deref(),
            Some("real-node-1"),
            "{instance:?}"
        );
    }

    // Larger than any node's room: it waits, and the scheduler says why.
    create_app(&client, &ns, busybox_app("huge", 1, "4Gi", None)).await;
    let why = wait_until(WAIT, "huge unschedulable for storage", || async {
        event_notes(&client, &ns, "FailedScheduling", "huge-")
            .await
            .into_iter()
            .find(|n| n.contains("2 node(s) did not have enough free storage"))
    })
    .await;
    eprintln!("huge: {why}");
    assert!(
        reserved_on(&client, "real-node-1")
            .await
            .iter()
            .all(|s| *s < 4 << 30)
    );
}

/// Free bytes of `node`'s data disk, as the node sees it.
fn disk_free(node: &str) -> u64 {
    let cluster = TestCluster::shared_real();
    let node = cluster.real_nodes.iter().find(|n| n.name == node).unwrap();
    let out = node.shell("df -B1 --output=avail /var/lib/statefulapp | tail -n1");
    out.trim().parse().unwrap_or_else(|_| panic!("df: {out}"))
}

#[tokio::test]
async fn a_write_past_the_size_fails_inside_the_container_and_nowhere_else() {
    let release = release().await;
    let cluster = TestCluster::shared_real();
    let client = cluster.client().await;
    let ns = cluster.namespace(&client, "sizes").await;
    let mut writer = busybox_app("writer", 1, "64Mi", Some("real-node-1"));
    writer["spec"]["volumes"] = json!([
        { "name": "a", "size": "64Mi", "mountPath": "/a" },
        { "name": "b", "size": "64Mi", "mountPath": "/b" },
    ]);
    writer["spec"]["template"]["spec"]["containers"][0]["command"] = json!([
        "sh",
        "-c",
        "echo kept > /b/kept; trap 'exit 0' TERM; while true; do sleep 1; done"
    ]);
    create_app(&client, &ns, writer).await;
    let status = wait_for_status(&client, &ns, "writer", release, "writer running", |s| {
        in_state(s, InstanceState::Running).len() == 1
    })
    .await;
    let (app_name, uuid) = status.instances[0].id.split_once('.').unwrap();
    let pod = format!("{app_name}-{uuid}");
    wait_until(WAIT, "the container wrote /b/kept", || async {
        release
            .exec(&ns, &pod, "cat /b/kept")
            .1
            .contains("kept")
            .then_some(())
    })
    .await;
    let (_, df) = release.exec(&ns, &pod, "df -k /a /b");
    eprintln!("inside the container:\n{df}");
    let free_before = disk_free("real-node-1");

    let (ok, out) = release.exec(
        &ns,
        &pod,
        "dd if=/dev/zero of=/a/fill bs=1M count=100 conv=fsync",
    );
    eprintln!("dd of 100 MiB into the 64Mi volume: {out}");
    assert!(!ok, "a write past the size succeeded: {out}");
    assert!(out.contains("No space left on device"), "{out}");
    let (_, size) = release.exec(&ns, &pod, "du -k /a/fill | cut -f1");
    let written: u64 = size.trim().parse().unwrap();
    assert!(
        written * 1024 <= 64 * MI,
        "{written} KiB written into a 64Mi volume"
    );
    let free_after = disk_free("real-node-1");
    let taken = free_before.saturating_sub(free_after);
    eprintln!(
        "node disk: {} MiB taken by the write (the volume's file holds {} MiB)",
        taken / MI,
        written / 1024
    );
    assert!(taken <= 72 * MI, "the node's disk lost {taken} bytes");

    // The agent records what the full volume takes on the node.
    let volume_a = &status.instances[0]
        .volumes
        .iter()
        .find(|v| v.name == "a")
        .unwrap()
        .persistent_volume;
    let pvs: Api<PersistentVolume> = Api::all(client.clone());
    let used = wait_until(WAIT, "the usage of volume a recorded", || async {
        let pv = pvs.get(volume_a.as_deref()?).await.ok()?;
        let used: u64 = pv.annotations().get(ANNOTATION_USED)?.parse().ok()?;
        (used >= 50 * MI).then_some(used)
    })
    .await;
    eprintln!("volume a: statefulapp.io/used-bytes {} MiB", used / MI);
    let status = wait_for_status(&client, &ns, "writer", release, "usage in status", |s| {
        s.instances[0]
            .volumes
            .iter()
            .any(|v| v.name == "a" && v.used.as_deref().and_then(quantity::bytes) >= Some(50 * MI))
    })
    .await;
    eprintln!(
        "status.instances[0].volumes: {:?}",
        status.instances[0].volumes
    );

    // The other volume is untouched and still takes writes.
    let (ok, out) = release.exec(
        &ns,
        &pod,
        "cat /b/kept && echo more >> /b/kept && cat /b/kept",
    );
    assert!(ok && out == "kept\nkept\nmore\n", "{out}");
    // The full volume works again once space is freed.
    let (ok, out) = release.exec(
        &ns,
        &pod,
        "rm /a/fill && echo fine > /a/after && cat /a/after",
    );
    assert!(ok && out.trim() == "fine", "{out}");
}

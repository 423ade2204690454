//! Unit and property tests of the planner, on the simulated cluster.

use proptest::prelude::*;
use uuid::Uuid;

use super::plan::{Action, StopReason};
use super::simulation::World;
use crate::api::KillSelection;

fn world_with(instances: usize) -> World {
    let mut world = World::new(3);
    world.observed.app.desired = instances;
    world.converge();
    world
}

fn destroys_data(action: &Action) -> bool {
    matches!(
        action,
        Action::MarkForWipe { .. } | Action::DeleteClaim { .. } | Action::DeleteVolume { .. }
    )
}

#[test]
fn a_new_app_gets_its_instances_with_every_volume() {
    let world = world_with(2);
    assert_eq!(world.running(), 2);
    for instance in world.observed.instances.values() {
        assert_eq!(instance.claims.len(), 2);
        assert_eq!(instance.volumes.len(), 2);
    }
}

#[test]
fn a_new_instances_pod_follows_its_claims_in_the_same_pass() {
    let mut world = World::new(3);
    world.observed.app.desired = 1;
    let first = world.plan();
    assert_eq!(first.to_run.len(), 1);
    assert!(
        matches!(
            first.actions[..],
            [
                Action::CreateClaim { .. },
                Action::CreateClaim { .. },
                Action::CreatePod { node: None, .. }
            ]
        ),
        "{:?}",
        first.actions
    );
    let instance = first.actions[0].instance();
    assert!(first.actions.iter().all(|a| a.instance() == instance));
    for action in &first.actions {
        world.apply(action);
    }
    let second = world.plan();
    assert!(second.actions.is_empty(), "{:?}", second.actions);
}

#[test]
fn a_re_made_claims_pod_waits_until_the_claim_is_seen() {
    let mut world = world_with(1);
    let uuid = *world.observed.instances.keys().next().unwrap();
    world.observed.app.desired = 0;
    world.converge();
    // A claim of the stopped instance is gone (deleted by hand).
    let view = world.observed.instances.get_mut(&uuid).unwrap();
    let volume = view.claims.keys().next().unwrap().clone();
    view.claims.remove(&volume);
    world.observed.app.desired = 1;
    let restart = world.plan();
    assert!(
        restart
            .actions
            .iter()
            .any(|a| matches!(a, Action::CreateClaim { volume: v, .. } if *v == volume)),
        "{:?}",
        restart.actions
    );
    assert!(
        !restart
            .actions
            .iter()
            .any(|a| matches!(a, Action::CreatePod { .. })),
        "{:?}",
        restart.actions
    );
}

#[test]
fn stopped_instance_keeps_node_and_volumes() {
    let mut world = world_with(1);
    let before = world.observed.instances.clone();
    world.observed.app.desired = 0;
    world.converge();
    assert_eq!(world.running(), 0);
    let after = &world.observed.instances;
    assert_eq!(
        after.keys().collect::<Vec<_>>(),
        before.keys().collect::<Vec<_>>()
    );
    for (uuid, instance) in after {
        assert_eq!(instance.node, before[uuid].node);
        assert_eq!(instance.volumes.len(), 2);
        assert!(instance.claims.values().all(|c| c.bound_volume.is_some()));
    }
}

#[test]
fn scale_up_reuses_stopped_instances_before_creating_new_ones() {
    let mut world = world_with(2);
    world.observed.app.desired = 0;
    world.converge();
    world.observed.app.desired = 3;
    let plan = world.plan();
    assert_eq!(
        plan.created.len(),
        1,
        "only one new instance: two stopped ones are reused"
    );
    world.converge();
    assert_eq!(world.running(), 3);
    assert_eq!(world.observed.instances.len(), 3);
}

#[test]
fn scale_down_stops_the_youngest_first_by_default() {
    let mut world = world_with(1);
    let oldest = *world.observed.instances.keys().next().unwrap();
    world.observed.app.desired = 2;
    world.converge();
    world.observed.app.desired = 1;
    let plan = world.plan();
    let stopped: Vec<Uuid> = plan
        .actions
        .iter()
        .filter_map(|a| match a {
            Action::DeletePod {
                instance,
                reason: StopReason::ScaledDown,
                ..
            } => Some(*instance),
            _ => None,
        })
        .collect();
    assert_eq!(stopped.len(), 1);
    assert_ne!(stopped[0], oldest);
}

#[test]
fn oldest_first_kill_selection_stops_the_oldest() {
    let mut world = world_with(1);
    let oldest = *world.observed.instances.keys().next().unwrap();
    world.observed.app.desired = 2;
    world.converge();
    world.observed.app.kill_selection = KillSelection::OldestFirst;
    world.observed.app.desired = 1;
    world.converge();
    let pod = world.observed.instances[&oldest].pod.clone();
    assert!(pod.is_none(), "the oldest instance should be stopped");
}

#[test]
fn wipe_marks_before_it_deletes_and_removes_the_instance() {
    let mut world = world_with(2);
    let victim = *world.observed.instances.keys().next().unwrap();
    world.observed.app.desired = 1;
    world.observed.app.wipe_requested.insert(victim);
    let first = world.plan();
    assert!(
        first
            .actions
            .contains(&Action::MarkForWipe { instance: victim })
    );
    assert!(
        !first
            .actions
            .iter()
            .any(|a| matches!(a, Action::DeleteClaim { .. } | Action::DeleteVolume { .. })),
        "nothing is deleted before the wipe marks are stored: {:?}",
        first.actions
    );
    world.converge();
    assert!(!world.observed.instances.contains_key(&victim));
    assert_eq!(world.running(), 1);
    assert!(
        world
            .destroyed
            .iter()
            .all(|(uuid, by_wipe)| *uuid == victim && *by_wipe)
    );
}

#[test]
fn template_change_replaces_pods_within_the_health_budget() {
    let mut world = world_with(4);
    world.observed.app.template_hash = "v2".into();
    let plan = world.plan();
    let upgrades = plan
        .actions
        .iter()
        .filter(|a| {
            matches!(
                a,
                Action::DeletePod {
                    reason: StopReason::Upgrade,
                    ..
                }
            )
        })
        .count();
    assert_eq!(
        upgrades, 2,
        "minimumHealthCapacity 0.5 of 4 allows 2 down at once"
    );
    assert_eq!(plan.upgrade_pending, 2);
    world.converge();
    let hashes: Vec<_> = world
        .observed
        .instances
        .values()
        .map(|i| i.pod.as_ref().unwrap().template_hash.clone())
        .collect();
    assert_eq!(hashes, vec!["v2"; 4]);
    assert_eq!(
        world.observed.instances.len(),
        4,
        "upgrades relaunch in place"
    );
}

#[test]
fn a_lost_claim_is_recreated_and_bound_to_its_volume() {
    let mut world = world_with(1);
    let uuid = *world.observed.instances.keys().next().unwrap();
    let instance = world.observed.instances.get_mut(&uuid).unwrap();
    instance.claims.remove("pgdata");
    let pv = instance.volumes["pgdata"].name.clone();
    let plan = world.plan();
    assert!(plan.actions.contains(&Action::CreateClaim {
        instance: uuid,
        volume: "pgdata".into(),
        bind_to: Some(pv),
    }));
    assert!(plan.created.is_empty());
}

#[test]
fn node_loss_with_wait_keeps_the_instance_reserved() {
    let mut world = world_with(1);
    let (uuid, node) = {
        let i = world.observed.instances.values().next().unwrap();
        (i.uuid, i.node.clone().unwrap())
    };
    world.lose_node(&node);
    world.advance(3600);
    let plan = world.plan();
    assert!(plan.created.is_empty(), "Wait never replaces: {plan:?}");
    assert!(!plan.actions.iter().any(destroys_data));
    assert!(world.observed.instances.contains_key(&uuid));
}

#[test]
fn node_loss_with_replace_starts_a_new_instance_and_keeps_the_old_volumes() {
    let mut world = world_with(1);
    world.observed.app.node_loss = crate::api::NodeLossPolicy {
        action: crate::api::NodeLossAction::Replace,
        after_seconds: Some(60),
    };
    let (old, node) = {
        let i = world.observed.instances.values().next().unwrap();
        (i.uuid, i.node.clone().unwrap())
    };
    world.lose_node(&node);
    world.advance(30);
    assert!(world.plan().actions.is_empty(), "too early to replace");
    world.advance(31);
    world.converge();
    assert!(!world.observed.instances.contains_key(&old));
    assert_eq!(world.running(), 1);
    let new = world.observed.instances.values().next().unwrap();
    assert_ne!(new.node.as_deref(), Some(node.as_str()));
    let orphans: Vec<_> = world
        .observed
        .orphaned_volumes
        .iter()
        .map(|o| o.instance)
        .collect();
    assert_eq!(
        orphans,
        vec![old, old],
        "both volumes of the lost instance are kept"
    );
    assert!(world.destroyed.is_empty(), "no data destroyed");
}

fn app_size(world: &World, volume: &str) -> Option<u64> {
    world.observed.app.volume_sizes.get(volume).copied()
}

#[test]
fn a_larger_size_grows_the_claims_of_running_and_stopped_instances() {
    let mut world = world_with(3);
    world.observed.app.desired = 1;
    world.converge();
    *world.observed.app.volume_sizes.get_mut("pgdata").unwrap() *= 2;
    let grown: Vec<Uuid> = world
        .plan()
        .actions
        .iter()
        .filter_map(|a| match a {
            Action::GrowClaim {
                instance, volume, ..
            } if volume == "pgdata" => Some(*instance),
            Action::GrowClaim { .. } => panic!("{a:?}: wal did not grow"),
            _ => None,
        })
        .collect();
    assert_eq!(grown.len(), 3, "one claim per instance, stopped ones too");
    world.converge();
    assert_eq!(world.running(), 1, "growing stops and starts nothing");
    for instance in world.observed.instances.values() {
        assert_eq!(
            instance.claims["pgdata"].requested,
            app_size(&world, "pgdata")
        );
    }
}

#[test]
fn a_claim_larger_than_the_size_is_never_shrunk() {
    let mut world = world_with(1);
    for instance in world.observed.instances.values_mut() {
        for claim in instance.claims.values_mut() {
            claim.requested = claim.requested.map(|r| r * 4);
        }
    }
    assert!(world.plan().actions.is_empty());
}

#[test]
fn the_claims_of_an_instance_being_wiped_do_not_grow() {
    let mut world = world_with(1);
    let uuid = *world.observed.instances.keys().next().unwrap();
    world.observed.app.wipe_requested.insert(uuid);
    *world.observed.app.volume_sizes.get_mut("pgdata").unwrap() *= 2;
    let plan = world.plan();
    assert!(
        !plan
            .actions
            .iter()
            .any(|a| matches!(a, Action::GrowClaim { .. })),
        "{:?}",
        plan.actions
    );
}

fn reservation_actions(world: &mut World) -> Vec<Action> {
    world
        .plan()
        .actions
        .into_iter()
        .filter(|a| {
            matches!(
                a,
                Action::CreateReservation { .. }
                    | Action::DeleteReservation { .. }
                    | Action::CreatePod { .. }
            )
        })
        .collect()
}

/// One instance, run once and then stopped (its reservation held): the
/// world, the instance and its node.
fn one_stopped() -> (World, Uuid, String) {
    let mut world = world_with(1);
    let uuid = *world.observed.instances.keys().next().unwrap();
    let node = world.observed.instances[&uuid].node.clone().unwrap();
    world.observed.app.desired = 0;
    world.converge();
    (world, uuid, node)
}

#[test]
fn a_stopped_instance_holds_its_resources_on_its_node() {
    let (world, uuid, node) = one_stopped();
    let instance = &world.observed.instances[&uuid];
    assert!(instance.pod.is_none());
    let reservation = instance.reservation.as_ref().expect("a reservation");
    assert!(reservation.placed && !reservation.deleting);
    assert_eq!(instance.node.as_ref(), Some(&node));
}

#[test]
fn a_restart_releases_the_reservation_then_binds_the_pod_to_its_node() {
    let (mut world, uuid, node) = one_stopped();
    world.observed.app.desired = 1;
    let first = world.plan();
    assert!(first.created.is_empty(), "the stopped instance is reused");
    let reservation = world.observed.instances[&uuid]
        .reservation
        .as_ref()
        .unwrap()
        .name
        .clone();
    assert_eq!(
        first.actions,
        [
            Action::DeleteReservation {
                instance: uuid,
                pod: reservation
            },
            Action::CreatePod {
                instance: uuid,
                node: Some(node)
            }
        ],
        "the reservation goes, then the pod takes its place on its node in the same pass, \
         no scheduling round"
    );
    for action in &first.actions {
        world.apply(action);
    }
    world.step();
    world.converge();
    assert_eq!(world.running(), 1);
    assert!(world.observed.instances[&uuid].reservation.is_none());
}

#[test]
fn release_keeps_only_the_volumes_and_a_changed_setting_releases() {
    let mut world = world_with(2);
    world.observed.app.desired = 0;
    world.converge();
    assert!(
        world
            .observed
            .instances
            .values()
            .all(|i| i.reservation.is_some())
    );
    world.observed.app.hold_resources = false;
    world.converge();
    for instance in world.observed.instances.values() {
        assert!(instance.reservation.is_none());
        assert_eq!(instance.volumes.len(), 2, "the volumes stay");
    }
    // Without held resources, a restart goes through kube-scheduler.
    world.observed.app.desired = 1;
    let plan = world.plan();
    assert!(
        plan.actions
            .iter()
            .any(|a| matches!(a, Action::CreatePod { node: None, .. }))
    );
}

#[test]
fn a_reservation_of_other_requests_is_replaced() {
    let mut world = world_with(1);
    world.observed.app.desired = 0;
    world.converge();
    world.observed.app.reservation_hash = "r2".into();
    let plan = world.plan();
    assert!(matches!(
        plan.actions[..],
        [Action::DeleteReservation { .. }]
    ));
    world.converge();
    let instance = world.observed.instances.values().next().unwrap();
    assert_eq!(instance.reservation.as_ref().unwrap().hash, "r2");
}

#[test]
fn wiping_a_stopped_instance_releases_its_reservation() {
    let (mut world, uuid, _) = one_stopped();
    world.observed.app.wipe_requested.insert(uuid);
    let plan = world.plan();
    assert!(plan.actions.contains(&Action::DeleteReservation {
        instance: uuid,
        pod: format!("reservation-{uuid}"),
    }));
    world.converge();
    assert!(world.observed.instances.is_empty());
}

#[test]
fn capacity_refused_by_the_kubelet_is_won_back_by_a_reservation() {
    let (mut world, uuid, node) = one_stopped();
    world.observed.app.desired = 1;
    world.refuse_next = 1;
    // In one pass the reservation goes and the pod is bound; the kubelet
    // refuses it (OutOfcpu).
    for action in world.plan().actions {
        world.apply(&action);
    }
    world.step();
    // The node stays full until the reservation has preempted its way in.
    world.full_nodes.insert(node.clone());
    world.step();
    let plan = world.plan();
    assert!(
        plan.actions.contains(&Action::CreateReservation {
            instance: uuid,
            node: node.clone(),
            reclaim: Some("OutOfcpu".into()),
        }),
        "{:?}",
        plan.actions
    );
    for action in &plan.actions {
        world.apply(action);
    }
    world.step();
    // Waiting to be placed: the pod does not try again meanwhile.
    assert!(reservation_actions(&mut world).is_empty());
    world.full_nodes.clear();
    world.step();
    world.converge();
    assert_eq!(world.running(), 1);
    let instance = &world.observed.instances[&uuid];
    assert_eq!(instance.pod.as_ref().unwrap().node.as_ref(), Some(&node));
    assert!(instance.reservation.is_none());
}

#[test]
fn a_reclaim_that_cannot_be_placed_gives_way_after_a_while() {
    let (mut world, uuid, node) = one_stopped();
    world.observed.app.desired = 1;
    world.refuse_next = 1;
    world.full_nodes.insert(node);
    for _ in 0..4 {
        for action in world.plan().actions {
            world.apply(&action);
        }
        world.step();
    }
    assert!(
        world.observed.instances[&uuid]
            .reservation
            .as_ref()
            .unwrap()
            .reclaiming
    );
    assert!(reservation_actions(&mut world).is_empty());
    world.advance(super::plan::RECLAIM_PATIENCE_SECONDS);
    assert!(matches!(
        reservation_actions(&mut world)[..],
        [Action::DeleteReservation { .. }, Action::CreatePod { .. }]
    ));
}

#[derive(Clone, Debug)]
enum Change {
    Scale(usize),
    Wipe(usize),
    Template(u8),
    KillSelection(bool),
    HoldResources(bool),
    Requests(u8),
    /// The kubelet refuses the next pods bound to it.
    Refuse(usize),
    /// `pgdata` grows by this many MiB.
    Grow(u64),
}

fn change() -> impl Strategy<Value = Change> {
    prop_oneof![
        4 => (0usize..6).prop_map(Change::Scale),
        1 => (0usize..8).prop_map(Change::Wipe),
        1 => (0u8..3).prop_map(Change::Template),
        1 => any::<bool>().prop_map(Change::KillSelection),
        1 => any::<bool>().prop_map(Change::HoldResources),
        1 => (0u8..3).prop_map(Change::Requests),
        1 => (1usize..3).prop_map(Change::Refuse),
        1 => (1u64..64).prop_map(Change::Grow),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    /// After any sequence of spec changes, with the operator crashing after
    /// a random prefix of each plan, the cluster converges to the spec; no
    /// instance is duplicated (I4), moved (I2, checked in `step`) or loses
    /// data without a wipe (I1); stopped instances are reused (I3).
    #[test]
    fn converges_without_duplicates_or_data_loss(
        changes in prop::collection::vec(change(), 1..12),
        crash_points in prop::collection::vec(0usize..8, 12),
    ) {
        let mut world = World::new(3);
        for (change, crash_after) in changes.iter().zip(crash_points) {
            let mut wiped = None;
            match change {
                Change::Scale(n) => world.observed.app.desired = *n,
                Change::Template(v) => world.observed.app.template_hash = format!("v{v}"),
                Change::KillSelection(oldest) => world.observed.app.kill_selection =
                    if *oldest { KillSelection::OldestFirst } else { KillSelection::YoungestFirst },
                Change::HoldResources(hold) => world.observed.app.hold_resources = *hold,
                Change::Requests(v) => world.observed.app.reservation_hash = format!("r{v}"),
                Change::Refuse(n) => world.refuse_next = *n,
                Change::Grow(mib) => {
                    *world.observed.app.volume_sizes.get_mut("pgdata").unwrap() += mib << 20;
                }
                Change::Wipe(i) => {
                    let live = world.live();
                    if !live.is_empty() {
                        let victim = live[i % live.len()];
                        world.observed.app.wipe_requested.insert(victim);
                        wiped = Some(victim);
                    }
                }
            }
            let known_before = world.live().len();
            // The operator dies after `crash_after` actions of its plan.
            let plan = world.plan();
            for action in plan.actions.iter().take(crash_after) {
                world.apply(action);
            }
            world.step();
            let plan_after_crash = world.plan();
            for action in &plan_after_crash.actions {
                if destroys_data(action) {
                    let target = match action {
                        Action::MarkForWipe { instance }
                        | Action::DeleteClaim { instance, .. }
                        | Action::DeleteVolume { instance, .. } => *instance,
                        _ => unreachable!(),
                    };
                    prop_assert!(world.observed.app.wipe_requested.contains(&target)
                        || world.observed.instances[&target].wiping(),
                        "destructive {action:?} without a wipe request");
                }
            }
            world.converge();
            prop_assert!(world.plan().actions.is_empty(), "a settled world plans nothing");

            let desired = world.observed.app.desired;
            prop_assert_eq!(world.running(), desired);
            let live = world.live().len();
            let expected = if wiped.is_some() {
                // The wiped instance went; a fresh one replaces it if needed.
                known_before.saturating_sub(1).max(desired)
            } else {
                known_before.max(desired)
            };
            prop_assert_eq!(live, expected, "instances are kept, reused, never duplicated");
            if let Some(victim) = wiped {
                prop_assert!(!world.observed.instances.contains_key(&victim));
                world.observed.app.wipe_requested.clear();
            }
            for (uuid, by_wipe) in &world.destroyed {
                prop_assert!(*by_wipe, "data of {} destroyed without a wipe", uuid);
            }
            // Every claim of a live instance, running or stopped, asks
            // for its volume's size.
            for instance in world.observed.instances.values() {
                for (volume, claim) in &instance.claims {
                    prop_assert_eq!(claim.requested, app_size(&world, volume));
                }
            }
            // Reservations (I3): every stopped instance holds its resources
            // on its node when the app asks, with the current requests; no
            // running instance holds them twice.
            let app = &world.observed.app;
            for instance in world.observed.instances.values() {
                let running = instance.pod.as_ref().is_some_and(|p| p.running && !p.deleting);
                match &instance.reservation {
                    Some(r) => {
                        prop_assert!(!running, "{} runs beside its reservation", instance.uuid);
                        prop_assert!(app.hold_resources && r.placed && r.hash == app.reservation_hash);
                    }
                    None => prop_assert!(running || !app.hold_resources,
                        "stopped {} holds nothing", instance.uuid),
                }
            }
        }
    }
}

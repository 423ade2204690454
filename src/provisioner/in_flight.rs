//! The volumes this provisioner is making, per node, until the API server
//! holds them: what a capacity check adds to the node's volumes it lists.
//!
//! Claims of one node used to be checked and made one at a time, each
//! waiting for three requests of the one before: ten claims of a node
//! placed at once took seconds. Now each claim enters the ledger and takes
//! a snapshot of the others there in one step, then lists and creates
//! concurrently with them. For any two claims of a node, the later to
//! enter finds the earlier either in its snapshot or, once the earlier's
//! volume exists, in its list: the one that may not fit always counts the
//! other (a claim refused while another's creation fails is only
//! conservative).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

/// Per node, the volumes in flight: name and size in bytes.
#[derive(Default)]
pub struct InFlight(Arc<Mutex<HashMap<String, BTreeMap<String, u64>>>>);

/// A volume in the ledger; leaves it when dropped (after its creation
/// returned, whatever the result).
pub struct Entry {
    ledger: Arc<Mutex<HashMap<String, BTreeMap<String, u64>>>>,
    node: String,
    volume: String,
}

impl InFlight {
    /// Enters volume `volume` of `bytes` on `node`; with it, the other
    /// volumes in flight on the node at that moment.
    pub fn enter(&self, node: &str, volume: &str, bytes: u64) -> (Entry, BTreeMap<String, u64>) {
        let mut ledger = lock(&self.0);
        let on_node = ledger.entry(node.to_string()).or_default();
        let others = on_node.clone();
        on_node.insert(volume.to_string(), bytes);
        let entry = Entry {
            ledger: self.0.clone(),
            node: node.to_string(),
            volume: volume.to_string(),
        };
        (entry, others)
    }
}

impl Drop for Entry {
    fn drop(&mut self) {
        let mut ledger = lock(&self.ledger);
        if let Some(on_node) = ledger.get_mut(&self.node) {
            on_node.remove(&self.volume);
            if on_node.is_empty() {
                ledger.remove(&self.node);
            }
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// What a node's volumes reserve: those listed (name and reservation) and
/// those in flight that the list does not show yet.
pub fn reservations(
    listed: impl IntoIterator<Item = (String, u64)>,
    in_flight: &BTreeMap<String, u64>,
) -> Vec<u64> {
    let listed: BTreeMap<String, u64> = listed.into_iter().collect();
    let unlisted = in_flight
        .iter()
        .filter(|(name, _)| !listed.contains_key(*name))
        .map(|(_, bytes)| *bytes);
    listed.values().copied().chain(unlisted).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_claim_sees_those_in_flight_before_it_and_they_leave_when_done() {
        let ledger = InFlight::default();
        let (a, before_a) = ledger.enter("n1", "pv-a", 10);
        assert!(before_a.is_empty());
        let (_b, before_b) = ledger.enter("n1", "pv-b", 20);
        assert_eq!(before_b, BTreeMap::from([("pv-a".to_string(), 10)]));
        let (_c, other_node) = ledger.enter("n2", "pv-c", 30);
        assert!(other_node.is_empty(), "per node");
        drop(a);
        let (_d, before_d) = ledger.enter("n1", "pv-d", 40);
        assert_eq!(before_d, BTreeMap::from([("pv-b".to_string(), 20)]));
    }

    #[test]
    fn an_empty_node_leaves_the_ledger() {
        let ledger = InFlight::default();
        drop(ledger.enter("n1", "pv-a", 10));
        assert!(lock(&ledger.0).is_empty());
    }

    #[test]
    fn a_volume_listed_and_in_flight_counts_once() {
        let in_flight = BTreeMap::from([("pv-a".to_string(), 10), ("pv-b".to_string(), 20)]);
        let listed = [("pv-a".to_string(), 15), ("pv-x".to_string(), 5)];
        let mut all = reservations(listed, &in_flight);
        all.sort();
        assert_eq!(all, vec![5, 15, 20]);
    }
}

//! Whether the base dir is this node's data disk.
//!
//! A data disk that did not mount at boot leaves an empty directory where
//! the volumes should be; an agent that created each volume's directory
//! there would start every instance on empty data. So the agent writes a
//! marker file into the base dir the first time it uses it, and a base dir
//! without the marker, while this node has volumes whose directories were
//! made before and none of them is there, is not the disk that holds them:
//! the agent then creates nothing in it and reports.

use std::path::{Path, PathBuf};

use crate::{Error, Result};

/// The marker file in the base dir.
pub const MARKER: &str = ".statefulapp-disk";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Disk {
    /// The base dir holds (or may start holding) this node's volumes.
    Ours,
    /// The base dir is not the disk the node's volumes were made on.
    NotMounted,
}

/// Checks `base`, given the data directories of the node's volumes that
/// were made before (`made`). Writes the marker on first use, and on a disk
/// of an earlier agent that holds some of them.
pub fn check(base: &Path, node: &str, made: &[PathBuf]) -> Result<Disk> {
    let marker = base.join(MARKER);
    if marker.exists() {
        return Ok(Disk::Ours);
    }
    if !made.is_empty() && !made.iter().any(|dir| dir.is_dir()) {
        return Ok(Disk::NotMounted);
    }
    std::fs::write(&marker, format!("data disk of node {node}\n")).map_err(|source| Error::Io {
        path: marker,
        source,
    })?;
    Ok(Disk::Ours)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fresh_base_dir_is_taken_and_marked() {
        let base = tempfile::tempdir().unwrap();
        assert_eq!(check(base.path(), "n1", &[]).unwrap(), Disk::Ours);
        assert!(base.path().join(MARKER).exists());
    }

    #[test]
    fn an_empty_base_dir_with_known_volumes_is_not_the_disk() {
        let base = tempfile::tempdir().unwrap();
        let made = [base.path().join("ns/app#data#1")];
        assert_eq!(check(base.path(), "n1", &made).unwrap(), Disk::NotMounted);
        assert!(!base.path().join(MARKER).exists(), "nothing written");
    }

    #[test]
    fn a_disk_of_an_earlier_agent_holding_its_volumes_is_adopted() {
        let base = tempfile::tempdir().unwrap();
        let made = [
            base.path().join("ns/app#data#1"),
            base.path().join("ns/app#data#2"),
        ];
        std::fs::create_dir_all(&made[0]).unwrap();
        assert_eq!(check(base.path(), "n1", &made).unwrap(), Disk::Ours);
        assert!(base.path().join(MARKER).exists());
    }

    #[test]
    fn a_marked_disk_stays_ours_even_with_a_directory_missing() {
        let base = tempfile::tempdir().unwrap();
        std::fs::write(base.path().join(MARKER), "x").unwrap();
        let made = [base.path().join("ns/app#data#1")];
        assert_eq!(check(base.path(), "n1", &made).unwrap(), Disk::Ours);
    }
}

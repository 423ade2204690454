//! Where a volume's data lives under the agent's base dir. Every path the
//! agent creates or removes goes through [`data_dir`], which refuses anything
//! that could leave the base dir.

use std::path::{Path, PathBuf};

use crate::{Error, Result};

/// A path component the provisioner can produce: namespace, persistenceId
/// (`app#volume#uuid`) or `claim-uid`. No separators, no dot-names.
fn is_safe_component(part: &str) -> bool {
    !part.is_empty()
        && part.len() <= 253
        && !part.starts_with('.')
        && part.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'-' | b'#' | b'.')
        })
}

/// `base/<namespace>/<name>` for a volume's `statefulapp.io/directory`
/// annotation `<namespace>/<name>`; an error for anything else.
pub fn data_dir(base: &Path, relative: &str) -> Result<PathBuf> {
    let parts: Vec<&str> = relative.split('/').collect();
    if parts.len() != 2 || !parts.iter().all(|p| is_safe_component(p)) {
        return Err(Error::Agent(format!(
            "refusing data directory {relative:?}: expected <namespace>/<name> of safe characters"
        )));
    }
    let path = base.join(parts[0]).join(parts[1]);
    debug_assert!(path.starts_with(base));
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn accepts_the_directories_the_provisioner_makes() {
        let base = Path::new("/var/lib/statefulapp");
        let dir = data_dir(
            base,
            "default/postgres#pgdata#f2415010-018a-11e6-b721-0261677b407a",
        )
        .unwrap();
        assert_eq!(
            dir,
            base.join("default")
                .join("postgres#pgdata#f2415010-018a-11e6-b721-0261677b407a")
        );
    }

    #[test]
    fn refuses_paths_that_could_escape_the_base_dir() {
        let base = Path::new("/var/lib/statefulapp");
        for bad in [
            "",
            "..",
            "../etc",
            "default/..",
            "default/../../etc",
            "/etc/passwd",
            "default/a/b",
            "default/.hidden",
            "default/",
            "/default/x",
            "default/x\0y",
            "default/A",
        ] {
            assert!(data_dir(base, bad).is_err(), "{bad:?} accepted");
        }
    }

    proptest! {
        #[test]
        fn every_accepted_path_stays_under_the_base_dir(relative in ".{0,80}") {
            let base = Path::new("/base");
            if let Ok(dir) = data_dir(base, &relative) {
                prop_assert!(dir.starts_with(base));
                prop_assert!(dir.components().all(|c| matches!(c, std::path::Component::RootDir | std::path::Component::Normal(_))));
            }
        }
    }
}

//! Finding instances by id, unique id prefix or uuid, as `dcos` accepted.

use crate::api::{InstanceStatus, StatefulApp};

use super::PluginError;

/// An instance and the app that holds it.
pub struct Found<'a> {
    pub app: &'a StatefulApp,
    pub instance: &'a InstanceStatus,
    /// The query was the whole id or uuid, not a prefix.
    pub exact: bool,
}

/// Finds the one instance whose id (`<app>.<uuid>`) or uuid starts with `query`.
pub fn find_instance<'a>(apps: &'a [StatefulApp], query: &str) -> Result<Found<'a>, PluginError> {
    let query = query.trim();
    if query.is_empty() {
        return Err(PluginError::Usage("an instance id is required".into()));
    }
    let mut matches = Vec::new();
    for app in apps {
        for instance in app.status.iter().flat_map(|s| &s.instances) {
            let uuid = instance.id.rsplit_once('.').map_or("", |(_, u)| u);
            if instance.id == query || uuid == query {
                return Ok(Found {
                    app,
                    instance,
                    exact: true,
                });
            }
            if instance.id.starts_with(query) || uuid.starts_with(query) {
                matches.push(Found {
                    app,
                    instance,
                    exact: false,
                });
            }
        }
    }
    match matches.len() {
        1 => Ok(matches.remove(0)),
        0 => Err(PluginError::NotFound(format!(
            "no instance matches {query:?}"
        ))),
        _ => Err(PluginError::Ambiguous(format!(
            "{query:?} matches {} instances: {}",
            matches.len(),
            matches
                .iter()
                .map(|m| m.instance.id.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}

/// Parses `instances=N` (the `dcos marathon app update` syntax).
pub fn parse_instances_setting(setting: &str) -> Result<i32, PluginError> {
    let (key, value) = setting
        .split_once('=')
        .ok_or_else(|| PluginError::Usage(format!("expected instances=N, got {setting:?}")))?;
    if key.trim() != "instances" {
        return Err(PluginError::Usage(format!(
            "only `instances=N` can be updated here, not {key:?}; edit the StatefulApp for other changes"
        )));
    }
    let n: i32 = value.trim().parse().map_err(|_| {
        PluginError::Usage(format!("instances must be a whole number, got {value:?}"))
    })?;
    if n < 0 {
        return Err(PluginError::Usage("instances must be 0 or more".into()));
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn reads_the_dcos_syntax() {
        assert_eq!(parse_instances_setting("instances=2").unwrap(), 2);
        assert_eq!(parse_instances_setting(" instances = 0 ").unwrap(), 0);
        for bad in [
            "instances",
            "cpus=2",
            "instances=-1",
            "instances=two",
            "instances=1.5",
        ] {
            assert!(parse_instances_setting(bad).is_err(), "{bad}");
        }
    }

    proptest! {
        #[test]
        fn accepts_exactly_the_non_negative_counts(text in ".{0,40}", n in any::<i64>()) {
            let _ = parse_instances_setting(&text);
            let parsed = parse_instances_setting(&format!("instances={n}"));
            prop_assert_eq!(parsed.is_ok(), (0..=i32::MAX as i64).contains(&n));
        }
    }
}

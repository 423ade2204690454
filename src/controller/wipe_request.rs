//! Parsing of the `statefulapp.io/wipe` annotation: which instances the user
//! asked to wipe, and what in the value is wrong (reported, never acted on).

use std::collections::BTreeSet;

use uuid::Uuid;

use crate::api::StatefulAppStatus;
use crate::names::InstanceId;

#[derive(Clone, Debug, Default, PartialEq)]
pub struct WipeRequest {
    /// Well-formed ids of this app.
    pub valid: Vec<InstanceId>,
    /// Entries that are malformed or name another app, with the reason.
    pub rejected: Vec<String>,
}

/// Parses a comma-separated list of instance ids of `app`. An invalid entry
/// rejects the whole request (nothing is wiped on a typo).
pub fn parse_wipe_annotation(app: &str, value: &str) -> WipeRequest {
    let mut request = WipeRequest::default();
    for entry in value.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        match entry.parse::<InstanceId>() {
            Ok(id) if id.app == app => request.valid.push(id),
            Ok(id) => request.rejected.push(format!(
                "{entry:?} is an instance of app {:?}, not of {app:?}",
                id.app
            )),
            Err(e) => request.rejected.push(e.to_string()),
        }
    }
    if !request.rejected.is_empty() {
        request.valid.clear();
    }
    request
}

/// Reports ids that name no instance and were not wiped before (a typo, or
/// a completed wipe whose record was lost with the status). They match
/// nothing, so nothing is destroyed for them, and they do not block the other
/// ids of the request: an annotation kept by GitOps never stalls later wipes.
pub fn check_known(
    mut request: WipeRequest,
    existing: &BTreeSet<Uuid>,
    wiped: &BTreeSet<Uuid>,
) -> WipeRequest {
    let unknown: Vec<String> = request
        .valid
        .iter()
        .filter(|id| !existing.contains(&id.uuid) && !wiped.contains(&id.uuid))
        .map(|id| format!("{id} is not an instance of this app (nothing to wipe)"))
        .collect();
    request.rejected.extend(unknown);
    request
}

/// The wipe asked for now, checked against the instances that exist, and
/// every instance known wiped: those the previous status recorded, and
/// those the request names that were listed last time and are gone now.
/// `annotation` is the `statefulapp.io/wipe` value ("" if none).
pub fn resolve(
    app: &str,
    annotation: &str,
    previous: &StatefulAppStatus,
    existing: &BTreeSet<Uuid>,
) -> (WipeRequest, BTreeSet<Uuid>) {
    let request = parse_wipe_annotation(app, annotation);
    let mut wiped: BTreeSet<Uuid> = previous
        .wiped_instances
        .iter()
        .filter_map(|id| id.parse::<InstanceId>().ok().map(|id| id.uuid))
        .collect();
    // Named by the wipe request, listed last time, gone now: wiped.
    wiped.extend(
        previous
            .instances
            .iter()
            .filter_map(|i| i.id.parse::<InstanceId>().ok())
            .filter(|id| request.valid.contains(id) && !existing.contains(&id.uuid))
            .map(|id| id.uuid),
    );
    (check_known(request, existing, &wiped), wiped)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const ID: &str = "postgres.f2419e31-018a-11e6-b721-0261677b407a";

    #[test]
    fn accepts_a_list_of_ids_of_the_app() {
        let other = "postgres.53ab8733-fd96-11e5-8e70-76a1c19f8c3d";
        let request = parse_wipe_annotation("postgres", &format!(" {ID}, {other} ,"));
        assert_eq!(request.valid.len(), 2);
        assert!(request.rejected.is_empty());
    }

    #[test]
    fn any_bad_entry_rejects_the_whole_request() {
        for value in [
            "garbage".to_string(),
            format!("{ID},garbage"),
            "mysql.f2419e31-018a-11e6-b721-0261677b407a".to_string(),
            format!("{ID};{ID}"),
        ] {
            let request = parse_wipe_annotation("postgres", &value);
            assert!(
                request.valid.is_empty(),
                "{value:?} wiped {:?}",
                request.valid
            );
            assert!(!request.rejected.is_empty(), "{value:?} not reported");
        }
    }

    #[test]
    fn unknown_ids_are_reported_and_completed_wipes_are_not() {
        let id: InstanceId = ID.parse().unwrap();
        let other: InstanceId = "postgres.53ab8733-fd96-11e5-8e70-76a1c19f8c3d"
            .parse()
            .unwrap();
        let request = parse_wipe_annotation("postgres", &format!("{ID},{other}"));
        let existing = BTreeSet::from([id.uuid]);
        let checked = check_known(request.clone(), &existing, &BTreeSet::new());
        assert!(
            checked.rejected[0].contains("not an instance"),
            "{checked:?}"
        );
        assert!(
            checked.valid.contains(&id),
            "a typo does not block the other ids"
        );
        let done = check_known(request, &existing, &BTreeSet::from([other.uuid]));
        assert!(done.rejected.is_empty(), "a completed wipe is not an error");
    }

    proptest! {
        #[test]
        fn never_panics_and_only_yields_ids_of_the_app(value in ".{0,200}") {
            let request = parse_wipe_annotation("postgres", &value);
            prop_assert!(request.valid.iter().all(|id| id.app == "postgres"));
        }
    }
}

//! The registry's request parser on arbitrary input, `METHOD PATH[?QUERY]` as on a
//! request line: it never panics, it accepts only registry paths, and whatever it
//! accepts has a valid repository name (also for a mount's source) and a bounded
//! route label.

#![no_main]

use berth_oci::request::{registry_request, Resource};
use berth_oci::{Action, RepoName};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(line) = std::str::from_utf8(data) else {
        return;
    };
    let (method, target) = line.split_once(' ').unwrap_or(("GET", line));
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let parsed = Action::parse(method, path, query);
    let Some(Ok(action)) = registry_request(method, path, query) else {
        assert!(
            parsed.is_err(),
            "{path:?} parsed but is no registry request"
        );
        return;
    };
    assert_eq!(parsed.as_ref(), Ok(&action));
    if let Some(name) = action.repository() {
        assert!(
            RepoName::parse(name).is_ok(),
            "{name:?} escaped the grammar"
        );
    }
    for need in action.requires() {
        if let Resource::Repository(name, _) = need {
            assert!(
                RepoName::parse(name).is_ok(),
                "{name:?} escaped the grammar"
            );
        }
    }
    assert!(action.route().starts_with("/v2/"));
});

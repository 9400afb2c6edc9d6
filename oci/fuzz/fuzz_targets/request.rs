//! The registry's request parser on arbitrary input, `METHOD PATH[?QUERY]` as on a
//! request line: it never panics, and whatever it accepts is a registry path with a
//! valid repository name (also for a mount's source) and a bounded route label.

#![no_main]

use berth_oci::request::{is_registry_path, Resource};
use berth_oci::{Action, RepoName};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(line) = std::str::from_utf8(data) else {
        return;
    };
    let (method, target) = line.split_once(' ').unwrap_or(("GET", line));
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let Ok(action) = Action::parse(method, path, query) else {
        return;
    };
    assert!(is_registry_path(path), "{path:?} parsed but is no registry path");
    if let Some(name) = action.repository() {
        assert!(RepoName::parse(name).is_ok(), "{name:?} escaped the grammar");
    }
    for need in action.requires() {
        if let Resource::Repository(name, _) = need {
            assert!(RepoName::parse(name).is_ok(), "{name:?} escaped the grammar");
        }
    }
    assert!(action.route().starts_with("/v2/"));
});

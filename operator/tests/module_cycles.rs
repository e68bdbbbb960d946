//! The operator's modules import each other without cycles, so each can be read (and moved)
//! on its own: a folder's name tells what lives there and what it may use.
//!
//! A module is a file (`foo.rs` or `foo/mod.rs`). An edge is a path in a `use` declaration or in
//! code (`crate::a::b::Item`, `super::b::Item`, `self::b`, or a child module's name) that reaches
//! another module: to the deepest module the path names, so using an item a parent re-exports is
//! an edge to the parent. Declaring a child (`mod b;`) is not an edge. Test modules (`*_tests.rs`,
//! `*_tests/`, inline `#[cfg(test)]` modules, fixtures) are left out.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use rcluster_e2e::module_graph::{Module, cycles, describe, graph};

#[test]
fn the_operator_has_no_import_cycles() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let edges = graph(&src);
    assert!(edges.len() > 40, "every module was read: {}", edges.len());
    // The checker sees the edges it must: a shard's step of the controller uses the coordinator
    // runtime.
    let step = vec!["controller".to_string(), "shard_step".to_string()];
    assert!(edges[&step].contains(&vec!["coordinator".to_string()]));
    let found = describe(&cycles(&edges));
    assert!(found.is_empty(), "import cycles: {found:#?}");
}

#[test]
fn a_cycle_is_found() {
    let m = |s: &str| -> Module { s.split("::").map(String::from).collect() };
    let mut edges = BTreeMap::new();
    edges.insert(m("a"), BTreeSet::from([m("a::b")]));
    edges.insert(m("a::b"), BTreeSet::from([m("c")]));
    edges.insert(m("c"), BTreeSet::from([m("a")]));
    edges.insert(m("d"), BTreeSet::from([m("a")]));
    let found = cycles(&edges);
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].len(), 3);
}

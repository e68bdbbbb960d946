//! The node's modules import each other without cycles, so each can be read (and moved) on its
//! own: the replication core (`replication`) is pure and uses neither the engine nor the
//! shipper; the engine drives it; the shipper uses the engine's narrow API, never the reverse.
//!
//! Modules and edges are read as in `operator/tests/module_cycles.rs`: a module is a file (`foo.rs`,
//! `foo/mod.rs`, or a file a `#[path]` attribute names); an edge is a path in a `use` declaration or
//! in code that reaches another module, to the deepest module the path names. Declaring a child is
//! not an edge. Test modules are left out. Cycles are checked between modules and between the
//! crate's top-level modules (a folder and everything in it).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use rcluster_e2e::module_graph::{Module, cycles, describe, graph, name, top_level};

fn node_graph() -> BTreeMap<Module, BTreeSet<Module>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let edges = graph(&src);
    assert!(edges.len() > 30, "every module was read: {}", edges.len());
    edges
}

/// Cycles between a folder's `mod.rs` and its own files, left from before this check; none may
/// be added, and one that goes is simply no longer found.
const KNOWN: &[&[&str]] = &[
    &["connection", "connection::io"],
    &["wal", "wal::recover"],
    &["api", "api::request", "api::routes"],
];

#[test]
fn the_node_has_no_import_cycles() {
    let edges = node_graph();
    let found = describe(&cycles(&top_level(&edges)));
    assert!(
        found.is_empty(),
        "import cycles between folders: {found:#?}"
    );
    let new: Vec<Vec<Module>> = cycles(&edges)
        .into_iter()
        .filter(|c| {
            let mut names: Vec<String> = c.iter().map(name).collect();
            names.sort();
            !KNOWN.iter().any(|k| names == *k)
        })
        .collect();
    assert!(new.is_empty(), "import cycles: {:#?}", describe(&new));
}

#[test]
fn the_replication_core_uses_neither_the_engine_nor_the_shipper() {
    let top = top_level(&node_graph());
    let m = |s: &str| vec![s.to_string()];
    // The checker sees the edges it must.
    assert!(top[&m("engine")].contains(&m("replication")));
    assert!(top[&m("shipper")].contains(&m("engine")));
    for below in ["engine", "shipper", "api", "server"] {
        assert!(
            !top[&m("replication")].contains(&m(below)),
            "replication uses {below}"
        );
    }
    assert!(!top[&m("engine")].contains(&m("shipper")));
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

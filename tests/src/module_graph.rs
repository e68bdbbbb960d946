//! The import graph of a crate's modules, read from its sources, and the cycles in it: the
//! node's and the operator's `module_cycles` tests check their crates with it.
//!
//! A module is a file (`foo.rs` or `foo/mod.rs`, or whatever a `#[path]` attribute names). An
//! edge is a path in a `use` declaration or in code (`crate::a::b::Item`, `super::b::Item`,
//! `self::b`, or a child module's name) that reaches another module: to the deepest module the
//! path names, so using an item a parent re-exports is an edge to the parent. Declaring a child
//! (`mod b;`) is not an edge. Test modules (`*_tests.rs`, `*_tests/`, inline `#[cfg(test)]`
//! modules, fixtures) and binaries (`src/bin`) are left out.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use regex::Regex;

/// A module's path below `src` (`["api", "routes"]`).
pub type Module = Vec<String>;

pub fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read src").flatten() {
        let path = entry.path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

pub fn module_of(src: &Path, file: &Path) -> Module {
    let rel = file
        .strip_prefix(src)
        .expect("under src")
        .with_extension("");
    let mut parts: Module = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if parts.last().is_some_and(|p| p == "mod") {
        parts.pop();
    }
    if parts == ["lib"] || parts == ["main"] {
        parts.clear();
    }
    parts
}

pub fn is_test(m: &Module) -> bool {
    m.iter()
        .any(|p| p.ends_with("_tests") || p == "tests" || p == "fixtures")
}

/// `a::{b, c::{d, e}}` → `a::b`, `a::c::d`, `a::c::e`.
pub fn expand(tree: &str, out: &mut Vec<String>) {
    let tree: String = tree.chars().filter(|c| !c.is_whitespace()).collect();
    fn rec(prefix: &str, t: &str, out: &mut Vec<String>) {
        let Some(open) = t.find('{') else {
            for part in t.split(',').filter(|p| !p.is_empty()) {
                let name = part.split(" as ").next().unwrap_or(part);
                out.push(format!("{prefix}{name}"));
            }
            return;
        };
        let head = &t[..open];
        let (mut depth, mut close) = (0, t.len());
        for (i, ch) in t.char_indices().skip(open) {
            match ch {
                '{' => depth += 1,
                '}' => {
                    depth -= 1;
                    if depth == 0 {
                        close = i;
                        break;
                    }
                }
                _ => {}
            }
        }
        let (mut depth, mut start) = (0, open + 1);
        for (i, ch) in t[..close].char_indices().skip(open + 1) {
            match ch {
                '{' => depth += 1,
                '}' => depth -= 1,
                ',' if depth == 0 => {
                    rec(&format!("{prefix}{head}"), &t[start..i], out);
                    start = i + 1;
                }
                _ => {}
            }
        }
        rec(&format!("{prefix}{head}"), &t[start..close], out);
    }
    rec("", &tree, out);
}

/// The deepest module `path` reaches from `from`, if it names one.
pub fn resolve(modules: &BTreeSet<Module>, from: &Module, path: &[&str]) -> Option<Module> {
    let (mut at, rest): (Module, &[&str]) = match path.first()? {
        &"crate" => (Vec::new(), &path[1..]),
        &"self" => (from.clone(), &path[1..]),
        &"super" => {
            let mut at = from.clone();
            let mut rest = path;
            while rest.first() == Some(&"super") {
                at.pop();
                rest = &rest[1..];
            }
            (at, rest)
        }
        first => {
            let mut child = from.clone();
            child.push(first.to_string());
            if !modules.contains(&child) {
                return None;
            }
            (from.clone(), path)
        }
    };
    for seg in rest {
        let mut next = at.clone();
        next.push(seg.to_string());
        if !modules.contains(&next) {
            break;
        }
        at = next;
    }
    Some(at)
}

/// Files that a `#[path = "…"] mod name;` declaration makes a module of another name.
pub fn path_attributes(src: &Path, files: &[PathBuf]) -> BTreeMap<PathBuf, Module> {
    let decl =
        Regex::new(r#"#\[path\s*=\s*"([^"]+)"\]\s*(?:pub(?:\([a-z]+\))?\s+)?mod\s+(\w+)\s*;"#)
            .unwrap();
    let mut out = BTreeMap::new();
    for file in files {
        let text = std::fs::read_to_string(file).expect("read module");
        let parent = module_of(src, file);
        for c in decl.captures_iter(&text) {
            let target = file.parent().expect("in a folder").join(&c[1]);
            let mut m = parent.clone();
            m.push(c[2].to_string());
            out.insert(target, m);
        }
    }
    out
}

pub fn graph(src: &Path) -> BTreeMap<Module, BTreeSet<Module>> {
    let mut files = Vec::new();
    rust_files(src, &mut files);
    let renamed = path_attributes(src, &files);
    let files: Vec<(Module, PathBuf)> = files
        .into_iter()
        .map(|f| {
            (
                renamed
                    .get(&f)
                    .cloned()
                    .unwrap_or_else(|| module_of(src, &f)),
                f,
            )
        })
        .filter(|(m, f)| !is_test(m) && !f.to_string_lossy().ends_with("_tests.rs"))
        // The binaries are crates of their own.
        .filter(|(m, _)| m.first().is_none_or(|p| p != "bin"))
        .collect();
    let modules: BTreeSet<Module> = files.iter().map(|(m, _)| m.clone()).collect();
    let uses = Regex::new(r"\buse\s+([^;]+);").unwrap();
    let inline = Regex::new(r"\b((?:crate|super|self)(?:::[A-Za-z_][A-Za-z0-9_]*)+)").unwrap();
    let comment = Regex::new(r"//[^\n]*").unwrap();
    let inline_tests = Regex::new(r"#\[cfg\(test\)\]\s*mod \w+ \{").unwrap();
    let mut edges = BTreeMap::new();
    for (m, file) in &files {
        let text = std::fs::read_to_string(file).expect("read module");
        let code = match inline_tests.find(&text) {
            Some(t) => &text[..t.start()],
            None => &text[..],
        };
        let code = comment.replace_all(code, "");
        let mut paths = Vec::new();
        for u in uses.captures_iter(&code) {
            expand(u[1].trim_start_matches("pub "), &mut paths);
        }
        paths.extend(inline.captures_iter(&code).map(|c| c[1].to_string()));
        let targets: BTreeSet<Module> = paths
            .iter()
            .filter_map(|p| {
                let mut segs: Vec<&str> = p.split("::").filter(|s| !s.is_empty()).collect();
                // `use a::b::{self, ..}` names `a::b`.
                if segs.len() > 1 && segs.last() == Some(&"self") {
                    segs.pop();
                }
                resolve(&modules, m, &segs)
            })
            .filter(|t| t != m)
            .collect();
        edges.insert(m.clone(), targets);
    }
    edges
}

/// Strongly connected components with more than one module (Tarjan).
pub fn cycles(edges: &BTreeMap<Module, BTreeSet<Module>>) -> Vec<Vec<Module>> {
    struct State<'a> {
        edges: &'a BTreeMap<Module, BTreeSet<Module>>,
        index: BTreeMap<&'a Module, usize>,
        low: BTreeMap<&'a Module, usize>,
        stack: Vec<&'a Module>,
        found: Vec<Vec<Module>>,
    }
    fn visit<'a>(s: &mut State<'a>, v: &'a Module) {
        let i = s.index.len();
        s.index.insert(v, i);
        s.low.insert(v, i);
        s.stack.push(v);
        for w in s.edges.get(v).into_iter().flatten() {
            if !s.index.contains_key(w) {
                visit(s, w);
                let lw = s.low[w];
                s.low.entry(v).and_modify(|l| *l = (*l).min(lw));
            } else if s.stack.contains(&w) {
                let iw = s.index[w];
                s.low.entry(v).and_modify(|l| *l = (*l).min(iw));
            }
        }
        if s.low[v] == s.index[v] {
            let mut comp = Vec::new();
            while let Some(w) = s.stack.pop() {
                comp.push(w.clone());
                if w == v {
                    break;
                }
            }
            if comp.len() > 1 {
                s.found.push(comp);
            }
        }
    }
    let mut s = State {
        edges,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        found: Vec::new(),
    };
    for v in edges.keys() {
        if !s.index.contains_key(v) {
            visit(&mut s, v);
        }
    }
    s.found
}

pub fn name(m: &Module) -> String {
    if m.is_empty() {
        "crate".into()
    } else {
        m.join("::")
    }
}

pub fn describe(found: &[Vec<Module>]) -> Vec<String> {
    found
        .iter()
        .map(|c| c.iter().map(name).collect::<Vec<_>>().join(" <-> "))
        .collect()
}

/// The same graph between top-level modules: `a::b -> c::d` is `a -> c`.
pub fn top_level(edges: &BTreeMap<Module, BTreeSet<Module>>) -> BTreeMap<Module, BTreeSet<Module>> {
    let top = |m: &Module| -> Module { m.iter().take(1).cloned().collect() };
    let mut out: BTreeMap<Module, BTreeSet<Module>> = BTreeMap::new();
    for (from, targets) in edges {
        let from = top(from);
        let set = out.entry(from.clone()).or_default();
        set.extend(
            targets
                .iter()
                .map(top)
                .filter(|t| *t != from && !t.is_empty()),
        );
    }
    out
}

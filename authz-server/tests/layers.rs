//! The crate's modules depend on each other without cycles: state, errors, request extraction,
//! routing and serving are separate layers, endpoints (`endpoints::*`) depend on the shared
//! modules and never the other way round. A `crate::x` path outside comments and test modules
//! is a dependency of the file's module on `x` (`endpoints::x` for endpoints, `storage` for its
//! submodules).
#![allow(clippy::unwrap_used, clippy::indexing_slicing, reason = "tests")]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The module a file belongs to, at the granularity the layers are checked at.
fn module_of(src: &Path, file: &Path) -> String {
    let rel = file.strip_prefix(src).unwrap().with_extension("");
    let mut parts: Vec<String> = rel.iter().map(|p| p.to_string_lossy().into_owned()).collect();
    if parts.last().is_some_and(|p| p == "mod" || p == "lib") {
        parts.pop();
    }
    if parts.first().is_some_and(|p| p == "storage") {
        parts.truncate(1);
    }
    if parts.first().is_some_and(|p| p == "endpoints") {
        parts.truncate(2);
    }
    parts.join("::")
}

/// The modules `text` names with `crate::` paths, outside comments and test modules.
fn dependencies(text: &str) -> BTreeSet<String> {
    let code = text.split("#[cfg(test)]\nmod tests").next().unwrap_or(text);
    let mut deps = BTreeSet::new();
    for line in code.lines().filter(|l| !l.trim_start().starts_with("//")) {
        let mut rest = line;
        while let Some(i) = rest.find("crate::") {
            rest = &rest[i + "crate::".len()..];
            let ident = |s: &str| -> String { s.chars().take_while(|c| c.is_ascii_lowercase() || *c == '_').collect() };
            let first = ident(rest);
            let dep = if first == "endpoints" {
                let after = rest.get(first.len() + 2..).unwrap_or("");
                match ident(after) {
                    sub if !sub.is_empty() && rest[first.len()..].starts_with("::") => format!("endpoints::{sub}"),
                    _ => first,
                }
            } else {
                first
            };
            if !dep.is_empty() && dep != "test_support" {
                deps.insert(dep);
            }
        }
    }
    deps
}

/// The strongly connected components with more than one module (Tarjan).
fn cycles(graph: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    struct T<'g> {
        graph: &'g BTreeMap<String, BTreeSet<String>>,
        index: BTreeMap<&'g str, usize>,
        low: BTreeMap<&'g str, usize>,
        stack: Vec<&'g str>,
        next: usize,
        out: Vec<Vec<String>>,
    }
    fn visit<'g>(t: &mut T<'g>, v: &'g str) {
        t.index.insert(v, t.next);
        t.low.insert(v, t.next);
        t.next += 1;
        t.stack.push(v);
        for w in t.graph[v].iter().filter(|w| t.graph.contains_key(*w)) {
            let w = t.graph.get_key_value(w).unwrap().0.as_str();
            if !t.index.contains_key(w) {
                visit(t, w);
                let lw = t.low[w];
                t.low.insert(v, t.low[v].min(lw));
            } else if t.stack.contains(&w) {
                let iw = t.index[w];
                t.low.insert(v, t.low[v].min(iw));
            }
        }
        if t.low[v] == t.index[v] {
            let mut comp = Vec::new();
            while let Some(w) = t.stack.pop() {
                comp.push(w.to_owned());
                if w == v {
                    break;
                }
            }
            if comp.len() > 1 {
                comp.sort();
                t.out.push(comp);
            }
        }
    }
    let mut t = T {
        graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        next: 0,
        out: Vec::new(),
    };
    for v in graph.keys() {
        if !t.index.contains_key(v.as_str()) {
            visit(&mut t, v);
        }
    }
    t.out
}

fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for f in files {
        let module = module_of(&src, &f);
        if module.is_empty() || module == "main" {
            continue;
        }
        let mut deps = dependencies(&std::fs::read_to_string(&f).unwrap());
        deps.remove(&module);
        graph.entry(module).or_default().extend(deps);
    }
    graph
}

#[test]
fn modules_form_no_cycle() {
    let g = graph();
    assert!(g.contains_key("endpoints::token") && g.contains_key("state"), "{g:?}");
    let found = cycles(&g);
    assert!(found.is_empty(), "module cycles: {found:?}");
}

#[test]
fn shared_layers_never_depend_on_endpoints_routing_or_serving() {
    let g = graph();
    for (module, deps) in &g {
        if module.starts_with("endpoints") || ["routes", "serve", "ops"].contains(&module.as_str()) {
            continue;
        }
        let upward: Vec<&String> = deps
            .iter()
            .filter(|d| d.starts_with("endpoints") || *d == "routes" || *d == "serve")
            .collect();
        assert!(upward.is_empty(), "{module} depends on {upward:?}");
    }
    // Endpoints do not use each other, except revocation finding tokens as introspection does.
    for (module, deps) in g.iter().filter(|(m, _)| m.starts_with("endpoints::")) {
        for d in deps.iter().filter(|d| d.starts_with("endpoints::")) {
            assert_eq!(
                (module.as_str(), d.as_str()),
                ("endpoints::revoke", "endpoints::introspect")
            );
        }
    }
}

/// The check itself sees a cycle when there is one.
#[test]
fn a_cycle_is_found() {
    let mut g: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    g.insert("a".into(), ["b".to_owned()].into());
    g.insert("b".into(), ["c".to_owned()].into());
    g.insert("c".into(), ["a".to_owned()].into());
    g.insert("d".into(), ["a".to_owned()].into());
    assert_eq!(cycles(&g), [vec!["a".to_owned(), "b".into(), "c".into()]]);
    assert_eq!(
        dependencies("use crate::state::App;\n// crate::serve\nfn f() { crate::endpoints::token::x(); }"),
        ["endpoints::token".to_owned(), "state".into()].into()
    );
}

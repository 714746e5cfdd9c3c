//! The modules import each other one way only. Two checks, both part of `make lint`:
//! - layers: a room imports only rooms of its own layer or of the layers below it, in the
//!   order of [`LAYERS`] (docs/layout.md says what each layer holds);
//! - no import cycle between the rooms of src/, also inside one layer.
//!
//! A room is a module file, or a folder's module, one or two levels deep: src/cli.rs is
//! `cli`, src/cmd/trace/mod.rs is `cmd/trace`, src/sink/prom/http.rs is `sink/prom`. Its
//! layer is its first component. An edge is any `crate::` path in a room's files that names
//! another room.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

fn rooms(dir: &Path, prefix: &[String], out: &mut BTreeMap<String, String>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .expect("read src")
        .map(|e| e.expect("dir entry").path())
        .collect();
    entries.sort();
    for p in entries {
        let name = p.file_stem().unwrap().to_string_lossy().to_string();
        if p.is_dir() {
            if prefix.is_empty() && name == "bin" {
                continue;
            }
            let mut next = prefix.to_vec();
            next.push(name);
            rooms(&p, &next, out);
        } else if p.extension().is_some_and(|e| e == "rs") {
            let mut parts = prefix.to_vec();
            if name != "mod" {
                parts.push(name);
            }
            if parts.is_empty() || parts == ["main"] || parts == ["lib"] {
                continue;
            }
            parts.truncate(2);
            let text = std::fs::read_to_string(&p).expect("read a source file");
            out.entry(parts.join("/")).or_default().push_str(&text);
        }
    }
}

/// The `crate::` paths of a text, with `{a, b}` groups expanded one level.
fn crate_paths(text: &str) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    for line in text.lines() {
        let code = line.split("//").next().unwrap_or("");
        let mut rest = code;
        while let Some(i) = rest.find("crate::") {
            rest = &rest[i + "crate::".len()..];
            let end = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':' || c == '{'))
                .unwrap_or(rest.len());
            let path = &rest[..end];
            let segs: Vec<String> = path
                .split("::")
                .filter(|s| !s.is_empty() && !s.starts_with('{'))
                .map(str::to_string)
                .collect();
            if let Some(g) = path.find('{') {
                let group = rest[g + 1..].split('}').next().unwrap_or("");
                for item in group.split(',') {
                    let first = item
                        .trim()
                        .split("::")
                        .next()
                        .unwrap_or("")
                        .trim()
                        .to_string();
                    let mut p = segs.clone();
                    if !first.is_empty() {
                        p.push(first);
                    }
                    out.push(p);
                }
            } else {
                out.push(segs);
            }
        }
    }
    out
}

/// Strongly connected groups of more than one room (Tarjan).
fn cycles(edges: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    struct T<'a> {
        e: &'a BTreeMap<String, BTreeSet<String>>,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on: BTreeSet<&'a str>,
        out: Vec<Vec<String>>,
    }
    fn visit<'a>(t: &mut T<'a>, v: &'a str) {
        let n = t.index.len();
        t.index.insert(v, n);
        t.low.insert(v, n);
        t.stack.push(v);
        t.on.insert(v);
        let next: Vec<&'a str> = t.e[v].iter().map(String::as_str).collect();
        for w in next {
            if !t.index.contains_key(w) {
                visit(t, w);
                let lw = t.low[w];
                let lv = t.low.get_mut(v).unwrap();
                *lv = (*lv).min(lw);
            } else if t.on.contains(w) {
                let iw = t.index[w];
                let lv = t.low.get_mut(v).unwrap();
                *lv = (*lv).min(iw);
            }
        }
        if t.low[v] == t.index[v] {
            let mut comp = Vec::new();
            while let Some(w) = t.stack.pop() {
                t.on.remove(w);
                comp.push(w.to_string());
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
        e: edges,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on: BTreeSet::new(),
        out: Vec::new(),
    };
    for v in edges.keys() {
        if !t.index.contains_key(v.as_str()) {
            visit(&mut t, v);
        }
    }
    t.out
}

/// The layers, lowest first: each may import the ones before it. `error`, `runloop` and
/// `traffic` import nothing of the crate, so everything may use them.
const LAYERS: &[&[&str]] = &[
    &["error", "runloop", "traffic"],
    &["bpf"],
    &["kernel"],
    &["cli"],
    &["events"],
    &["stats"],
    &["join"],
    &["sink"],
    &["cmd"],
];

fn layer_of(room: &str) -> Option<usize> {
    let top = room.split('/').next().unwrap_or(room);
    LAYERS.iter().position(|l| l.contains(&top))
}

/// The import edges between the rooms of src/.
fn src_edges() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut texts = BTreeMap::new();
    rooms(&src, &[], &mut texts);
    let names: BTreeSet<String> = texts.keys().cloned().collect();
    let mut edges: BTreeMap<String, BTreeSet<String>> =
        names.iter().map(|n| (n.clone(), BTreeSet::new())).collect();
    for (room, text) in &texts {
        for p in crate_paths(text) {
            let two = p.iter().take(2).cloned().collect::<Vec<_>>().join("/");
            let one = p.first().cloned().unwrap_or_default();
            let target = if names.contains(&two) { two } else { one };
            if names.contains(&target) && &target != room {
                edges.get_mut(room).unwrap().insert(target);
            }
        }
    }
    edges
}

/// Every edge that goes up (or sideways into another layer), and every room of no layer.
fn layer_violations(edges: &BTreeMap<String, BTreeSet<String>>) -> Vec<String> {
    let mut out = Vec::new();
    for (room, targets) in edges {
        let Some(from) = layer_of(room) else {
            out.push(format!(
                "{room}: in no layer; add its folder to LAYERS (tests/layers.rs) and docs/layout.md"
            ));
            continue;
        };
        for t in targets {
            let same_folder = t.split('/').next() == room.split('/').next();
            match layer_of(t) {
                Some(to) if to < from || same_folder => {}
                _ => out.push(format!("{room} imports {t}, which is not in a layer below")),
            }
        }
    }
    out
}

#[test]
fn each_layer_imports_only_the_layers_below() {
    let bad = layer_violations(&src_edges());
    assert!(bad.is_empty(), "layer order broken:\n{}", bad.join("\n"));
}

#[test]
fn no_import_cycles_between_modules() {
    let edges = src_edges();
    let found = cycles(&edges);
    let detail: Vec<String> = found
        .iter()
        .flat_map(|c| {
            c.iter().map(|r| {
                let to: Vec<&String> = edges[r].iter().filter(|t| c.contains(t)).collect();
                format!("{r} -> {to:?}")
            })
        })
        .collect();
    assert!(
        found.is_empty(),
        "import cycles: {found:?}\n{}",
        detail.join("\n")
    );
}

#[test]
fn the_check_sees_a_cycle() {
    let mut e: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (a, b) in [("x", "y"), ("y", "z"), ("z", "x"), ("z", "w")] {
        e.entry(a.into()).or_default().insert(b.into());
        e.entry(b.into()).or_default();
    }
    assert_eq!(cycles(&e), [["x", "y", "z"]]);
    assert_eq!(
        crate_paths("use crate::a::{b, c::d};\nlet x = crate::e::f(); // crate::g"),
        [vec!["a", "b"], vec!["a", "c"], vec!["e", "f"]]
    );
}

#[test]
fn the_check_sees_an_upward_import() {
    fn edge(e: &mut BTreeMap<String, BTreeSet<String>>, a: &str, b: &str) {
        e.entry(a.into()).or_default().insert(b.into());
    }
    let mut e = BTreeMap::new();
    edge(&mut e, "cmd/trace", "join/rx");
    edge(&mut e, "cmd/trace", "cmd/serve");
    edge(&mut e, "join/rx", "stats/hist");
    assert!(layer_violations(&e).is_empty());
    edge(&mut e, "join/rx", "sink/prom");
    edge(&mut e, "error", "runloop");
    edge(&mut e, "gadgets/x", "error");
    assert_eq!(
        layer_violations(&e),
        [
            "error imports runloop, which is not in a layer below",
            "gadgets/x: in no layer; add its folder to LAYERS (tests/layers.rs) and docs/layout.md",
            "join/rx imports sink/prom, which is not in a layer below",
        ]
    );
}

//! The modules import each other one way only: no import cycle between the rooms of src/ (a
//! room is a module file, or a folder's module, one or two levels deep: src/trace.rs is
//! `trace`, src/marker/pair.rs is `marker/pair`). An edge is any `crate::` path in a room's
//! files that names another room. Also part of `make lint`.

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

#[test]
fn no_import_cycles_between_modules() {
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

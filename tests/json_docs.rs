//! docs/json.md is the JSON contract of `trace --json`: every field it lists must appear in
//! real output, and every field of real output must be listed. The field names come from
//! the first column of the tables under each heading (backticked names; a cell may list
//! several, as in `min_ns`, `max_ns`), so a new field needs one table line in the docs and
//! nothing here.

mod common;

use std::collections::{BTreeMap, BTreeSet};

use common::*;
use serde_json::Value;

type Names = BTreeSet<String>;

/// The `trace` part of docs/json.md (up to the next command's `# ` heading): per `##` or
/// `###` heading, the names in the first column of its tables.
fn documented() -> BTreeMap<String, Names> {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/json.md"))
        .expect("docs/json.md");
    let mut out: BTreeMap<String, Names> = BTreeMap::new();
    let mut heading = String::new();
    for (i, line) in text.lines().enumerate() {
        if line.starts_with("# ") && i > 0 {
            break;
        }
        if let Some(h) = line.strip_prefix("## ").or(line.strip_prefix("### ")) {
            heading = h.trim().to_string();
            continue;
        }
        let Some(first) = line.strip_prefix("| ").and_then(|l| l.split(" |").next()) else {
            continue;
        };
        // Backticked names only: the header row ("field") and separators have none.
        let names = first.split('`').skip(1).step_by(2);
        out.entry(heading.clone())
            .or_default()
            .extend(names.map(str::to_string));
    }
    out
}

/// The names documented under the heading that contains `key`.
fn section<'a>(docs: &'a BTreeMap<String, Names>, key: &str) -> &'a Names {
    let hits: Vec<_> = docs.iter().filter(|(h, _)| h.contains(key)).collect();
    assert_eq!(
        hits.len(),
        1,
        "docs/json.md: one heading containing {key:?} wanted, found {:?}",
        hits.iter().map(|h| h.0).collect::<Vec<_>>()
    );
    hits[0].1
}

fn keys<'a>(objects: impl IntoIterator<Item = &'a Value>) -> Names {
    objects
        .into_iter()
        .filter_map(Value::as_object)
        .flat_map(|o| o.keys().cloned())
        .collect()
}

/// Both ways: a documented name missing from the output, or an output name not documented.
fn same(what: &str, docs: &Names, real: &Names, problems: &mut Vec<String>) {
    assert!(!real.is_empty(), "{what}: no output to compare");
    let missing: Vec<_> = docs.difference(real).collect();
    let undocumented: Vec<_> = real.difference(docs).collect();
    if !missing.is_empty() {
        problems.push(format!(
            "{what}: in docs/json.md, not in the output: {missing:?}"
        ));
    }
    if !undocumented.is_empty() {
        problems.push(format!(
            "{what}: in the output, not in docs/json.md: {undocumented:?}"
        ));
    }
}

#[test]
#[ignore = "needs root (BPF, namespaces): make test runs it with --include-ignored"]
fn trace_json_fields_are_the_documented_ones() {
    common::require_root();
    let t = Topo::new();
    let (na, nb) = (t.netns_path(&t.a), t.netns_path(&t.b));
    // Both namespaces: the sender's TX and the receiver's RX, so every object has rows.
    let p = tool(&[
        "trace", "--json", "--events", "--netns", &na, "--netns", &nb, "--port", "9240",
    ]);
    udp_exchange(&t, &t.server(false, 9240), 5, 10);
    delayed_exchange(&t, "tcp", &t.server(false, 9240), 5, 0, 10);
    // At least one interval line.
    std::thread::sleep(std::time::Duration::from_millis(1200));
    p.signal(libc::SIGINT);
    let (code, out, err) = p.finish(std::time::Duration::from_secs(20));
    assert_eq!(code, Some(0), "trace: {err}");
    let lines: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let of = |ty: &'static str| lines.iter().filter(move |v| v["type"] == ty);
    let s = summary_of(&out);
    let conns = s["connections"].as_array().expect("connections");
    let spans: Vec<&Value> = s["spans"]
        .as_array()
        .into_iter()
        .flatten()
        .chain(
            conns
                .iter()
                .flat_map(|c| c["spans"].as_array().into_iter().flatten()),
        )
        .collect();
    let events: Vec<&Value> = of("event").collect();
    for dir in ["rx", "tx"] {
        assert!(
            events.iter().any(|e| e["direction"] == dir),
            "no {dir} event in: {out}"
        );
        assert!(
            conns.iter().any(|c| c["direction"] == dir),
            "no {dir} connection in: {s}"
        );
    }

    let docs = documented();
    let mut problems = Vec::new();
    let checks: [(&str, Names); 8] = [
        ("{\"type\":\"interval\"}", keys(of("interval"))),
        ("{\"type\":\"summary\"}", keys([&s])),
        ("span object", keys(spans)),
        ("connection object", keys(conns)),
        ("join", keys([&s["join"]])),
        ("kernel", keys([&s["kernel"]])),
        ("hook object", keys(s["hooks"].as_array().expect("hooks"))),
        ("{\"type\":\"event\"}", keys(events.iter().copied())),
    ];
    for (heading, real) in &checks {
        same(heading, section(&docs, heading), real, &mut problems);
    }
    // The points tables name every point a summary's hooks list, and no other.
    let points: Names = s["hooks"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|h| h["point"].as_str().map(str::to_string))
        .collect();
    same(
        "points",
        section(&docs, "Points and spans"),
        &points,
        &mut problems,
    );
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

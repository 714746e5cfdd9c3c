//! `netstack-lat correlate` on hand-made marker CSV files: exact statistics, missing and
//! out-of-order intervals, --csv rows, --offset-ns, and one-line errors. No root needed.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use serde_json::{json, Value};

const TOOL: &str = env!("CARGO_BIN_EXE_netstack-lat");
const HEADER: &str = "timestamp_ns,point,iface,direction,src,sport,dst,dport,interval_id,position";
const BASE: u64 = 1_700_000_000_000_000_000;
const MS: u64 = 1_000_000;
const A_POINT: &str = "veth0:egress@a";
const B_POINT: &str = "eth0:ingress@b";

/// A fresh directory per test, removed when the test ends (even by a failed assertion).
struct TempDir(PathBuf);

impl TempDir {
    fn new(test: &str) -> TempDir {
        let d = std::env::temp_dir().join(format!("nsl-correlate-{}-{test}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).expect("create temp dir");
        TempDir(d)
    }

    fn write(&self, name: &str, text: &str) -> String {
        let p = self.0.join(name);
        std::fs::write(&p, text).expect("write csv");
        p.display().to_string()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A row in the column order `marker` writes.
fn row(ts: u64, point: &str, id: u64, position: Option<u64>) -> String {
    let pos = position.map(|p| p.to_string()).unwrap_or_default();
    format!("{ts},{point},veth0,egress,10.0.0.1,8000,10.0.0.2,41000,{id},{pos}\n")
}

/// T2 - T1 of interval `id` in ms: 1 ms for id 2, ... 9 ms for id 10, and 10 ms for id 1,
/// which is overtaken by ids 2-5 (id 6 only ties its T2).
fn lat_ms(id: u64) -> u64 {
    if id == 1 {
        10
    } else {
        id - 1
    }
}

fn t1(id: u64) -> u64 {
    BASE + id * MS
}

fn t2(id: u64) -> u64 {
    t1(id) + lat_ms(id) * MS
}

/// The first point's rows: ids 1-10, 11 and 14 (never at B), a later repeat of id 5.
fn a_rows() -> String {
    let mut s = String::new();
    for id in (1..=10).chain([11, 14]) {
        s += &row(t1(id), A_POINT, id, Some(id * 100));
    }
    s += &row(BASE + 500 * MS, A_POINT, 5, Some(1));
    s
}

/// The second point's rows: ids 1-10 and 12 (never at A), a later repeat of id 3.
fn b_rows() -> String {
    let mut s = String::new();
    for id in 1..=10 {
        s += &row(t2(id), B_POINT, id, None);
    }
    s += &row(BASE + 50 * MS, B_POINT, 12, None);
    s += &row(BASE + 900 * MS, B_POINT, 3, None);
    s
}

/// A.csv as marker writes it (with a comment), B.csv with its columns reordered, an extra
/// column and blank lines.
fn two_files(d: &TempDir) -> (String, String) {
    let a = d.write("A.csv", &format!("# host a\n{HEADER}\n{}", a_rows()));
    let mut b = String::from("interval_id,note,timestamp_ns,point\n\n");
    for line in b_rows().lines() {
        let f: Vec<&str> = line.split(',').collect();
        b += &format!("{},x,{},{}\n\n", f[8], f[0], f[1]);
    }
    (a, d.write("B.csv", &b))
}

fn run(args: &[&str]) -> Output {
    Command::new(TOOL)
        .arg("correlate")
        .args(args)
        .output()
        .expect("spawn netstack-lat")
}

/// Exit 0 and exactly one JSON line on stdout.
fn summary(args: &[&str]) -> (String, Value) {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    let out = run(&all);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(stdout.lines().count(), 1, "one line expected: {stdout}");
    let v: Value = serde_json::from_str(stdout.trim()).expect("JSON summary");
    (stdout, v)
}

/// Exit 2 and one line on stderr holding `needle`.
fn user_error(args: &[&str], needle: &str) {
    let out = run(args);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "one line expected: {err}");
    assert!(
        lines[0].contains(needle),
        "{needle:?} not in {:?}",
        lines[0]
    );
    assert!(out.stdout.is_empty());
}

#[test]
fn two_files_give_exact_statistics() {
    let d = TempDir::new("two");
    let (a, b) = two_files(&d);
    let (line, v) = summary(&[&a, &b]);
    assert!(
        line.starts_with(
            r#"{"type":"summary","count":10,"min_ns":1000000,"avg_ns":5500000,"p50_ns":5000000,"p90_ns":9000000,"p99_ns":10000000,"max_ns":10000000,"missing":[11,12,14],"out_of_order":[2,3,4,5],"#
        ),
        "{line}"
    );
    assert_eq!(v["from"], A_POINT);
    assert_eq!(v["to"], B_POINT);
    assert_eq!(v["offset_ns"], 0);
    assert_eq!(v["negative"], 0);
    assert_eq!(v["duplicates_from"], 1);
    assert_eq!(v["duplicates_to"], 1);
    assert_eq!(v["missing_at_to"], json!([11, 14]));
    assert_eq!(v["missing_at_from"], json!([12]));

    // The table: points, counts, lists and the note about two clocks.
    let out = run(&[&a, &b]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for want in [
        "veth0:egress@a -> eth0:ingress@b  (offset 0 ns)",
        "count 10  min 1.00ms  avg 5.50ms  p50 5.00ms  p90 9.00ms  p99 10.0ms  max 10.0ms",
        "latency:",
        "missing (3): 11,12,14  [2 not seen at to, 1 not seen at from]",
        "out of order (4): 2-5",
        "note: the two files' clocks may differ",
    ] {
        assert!(text.contains(want), "{want:?} not in:\n{text}");
    }
}

#[test]
fn one_file_with_two_points() {
    let d = TempDir::new("one");
    let c = d.write("C.csv", &format!("{HEADER}\n{}{}", a_rows(), b_rows()));
    // Points in order of first appearance: the same pair as from two files.
    let (_, v) = summary(&[&c]);
    assert_eq!(
        (v["count"].clone(), v["avg_ns"].clone()),
        (json!(10), json!(5_500_000))
    );
    assert_eq!(v["p50_ns"], 5 * MS);
    assert_eq!(v["p99_ns"], 10 * MS);
    assert_eq!(v["missing"], json!([11, 12, 14]));
    assert_eq!(v["out_of_order"], json!([2, 3, 4, 5]));
    assert_eq!(v["from"], A_POINT);

    // Reversed: every latency negative; the mean floors, nearest rank picks from the bottom.
    let (_, v) = summary(&[&c, "--from", B_POINT, "--to", A_POINT]);
    assert_eq!(v["count"], 10);
    assert_eq!(v["min_ns"], -10 * MS as i64);
    assert_eq!(v["avg_ns"], -5_500_000);
    assert_eq!(v["p50_ns"], -6 * MS as i64);
    assert_eq!(v["p90_ns"], -2 * MS as i64);
    assert_eq!(v["p99_ns"], -(MS as i64));
    assert_eq!(v["max_ns"], -(MS as i64));
    assert_eq!(v["negative"], 10);
    assert_eq!(v["missing_at_to"], json!([12]));
    assert_eq!(v["missing_at_from"], json!([11, 14]));
    // By B's times id 1 (T1 +11 ms) comes after ids 2-5 but reaches A first.
    assert_eq!(v["out_of_order"], json!([1]));

    // One file, one clock: no note.
    let out = run(&[&c]);
    assert!(!String::from_utf8_lossy(&out.stdout).contains("note:"));
}

#[test]
fn csv_rows_are_exact() {
    let d = TempDir::new("csv");
    let (a, b) = two_files(&d);
    let out = run(&["--csv", &a, &b]);
    assert!(out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    let mut want = String::from("interval_id,position,t1_ns,t2_ns,latency_ns,from,to\n");
    for id in 1..=10 {
        want += &format!(
            "{id},{},{},{},{},{A_POINT},{B_POINT}\n",
            id * 100,
            t1(id),
            t2(id),
            lat_ms(id) * MS
        );
    }
    assert_eq!(stdout, want);
    assert!(stdout.contains(
        "\n1,100,1700000000001000000,1700000000011000000,10000000,veth0:egress@a,eth0:ingress@b\n"
    ));
    // The table goes to stderr.
    assert!(String::from_utf8_lossy(&out.stderr).contains("count 10  min 1.00ms"));
}

#[test]
fn offset_is_taken_out_of_t2() {
    let d = TempDir::new("offset");
    let (a, b) = two_files(&d);
    // B's clock 5 us behind: latency = (T2 + 5000) - T1.
    let (_, v) = summary(&[&a, &b, "--offset-ns", "-5000"]);
    assert_eq!(v["offset_ns"], -5000);
    assert_eq!(v["min_ns"], 1_005_000);
    assert_eq!(v["avg_ns"], 5_505_000);
    assert_eq!(v["p50_ns"], 5_005_000);
    assert_eq!(v["p90_ns"], 9_005_000);
    assert_eq!(v["max_ns"], 10_005_000);
    assert_eq!(v["out_of_order"], json!([2, 3, 4, 5]));
    let out = run(&[&a, &b, "--offset-ns", "-5000"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("(offset -5000 ns)"), "{text}");
    assert!(!text.contains("note:"), "{text}");
}

#[test]
fn malformed_row_names_file_and_line() {
    let d = TempDir::new("bad");
    let (a, _) = two_files(&d);
    let b = d.write(
        "B.csv",
        &format!(
            "{HEADER}\n{}{}{}",
            row(t2(1), B_POINT, 1, None),
            row(t2(2), B_POINT, 2, None),
            row(t2(3), B_POINT, 3, None).replace(",3,", ",three,")
        ),
    );
    user_error(
        &[&a, &b],
        "B.csv:4: interval_id 'three' is not a whole number",
    );
    let short = d.write("B.csv", &format!("{HEADER}\n\n\n1,2,3\n"));
    user_error(&[&a, &short], "B.csv:4: 3 fields, the header has 10");
}

#[test]
fn missing_file_is_one_line() {
    let d = TempDir::new("missing");
    let (a, _) = two_files(&d);
    let nowhere = Path::new(&d.0).join("nowhere.csv").display().to_string();
    user_error(&[&a, &nowhere], "cannot read");
    user_error(&[&nowhere], "nowhere.csv");
    // Two points in one file of a two-file join need --from.
    let c = d.write("C.csv", &format!("{HEADER}\n{}{}", a_rows(), b_rows()));
    user_error(
        &[&c, &a],
        "holds 2 capture points (veth0:egress@a, eth0:ingress@b): choose one with --from",
    );
}

/// `--follow` against files written as it runs: intervals 30 ms apart at B, one malformed
/// line (counted, not fatal), A truncated and B rotated half way; the histogram on /metrics
/// and the last JSON line count every interval once.
#[test]
fn follow_joins_live_files_across_truncation_and_rotation() {
    use std::io::Write as _;
    const N: u64 = 40;
    let d = TempDir::new("follow");
    let a = d.write("a.csv", &format!("{HEADER}\n"));
    let b = d.write("b.csv", &format!("{HEADER}\n"));
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let listen = format!("127.0.0.1:{port}");
    let child = Command::new(TOOL)
        .args([
            "correlate",
            "--follow",
            &a,
            &b,
            "--json",
            "--interval",
            "200ms",
            "--duration",
            "6s",
            "--prometheus",
            &listen,
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn correlate --follow");
    let append = |path: &str, text: &str| {
        let mut f = std::fs::OpenOptions::new().append(true).open(path).unwrap();
        f.write_all(text.as_bytes()).unwrap();
    };
    std::thread::sleep(Duration::from_millis(300));
    for id in 1..=N {
        let t = BASE + id * 20 * MS;
        append(&a, &row(t, A_POINT, id, None));
        append(&b, &row(t + 30 * MS, B_POINT, id, None));
        if id == 10 {
            append(&b, "this,is,not,a,row\n");
        }
        if id == 20 {
            // copytruncate of A, rotation of B: both start again with their header.
            std::thread::sleep(Duration::from_millis(300));
            std::fs::write(&a, format!("{HEADER}\n")).unwrap();
            std::fs::rename(&b, format!("{b}.1")).unwrap();
            std::fs::write(&b, format!("{HEADER}\n")).unwrap();
        }
        std::thread::sleep(Duration::from_millis(30));
    }
    std::thread::sleep(Duration::from_millis(700));
    let (status, metrics) = common::get(&listen, "/metrics");
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let last: Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    assert_eq!(last["type"], "summary", "{stdout}");
    assert_eq!(last["count"], N, "{last}");
    assert_eq!(last["errors"], 1, "{last}");
    assert_eq!(last["reopened"], 2, "{last}");
    assert_eq!(last["missing_to"], 0, "{last}");
    assert_eq!(last["out_of_order"], 0, "{last}");
    assert_eq!(last["p50_ns"].as_u64().unwrap() / MS, 30, "{last}");
    assert!(
        stdout
            .lines()
            .filter(|l| l.contains("\"interval\""))
            .count()
            >= 5
    );
    assert_eq!(status, 200);
    let sample = |needle: &str| -> f64 {
        metrics
            .lines()
            .find(|l| l.starts_with(needle))
            .and_then(|l| l.rsplit(' ').next()?.parse().ok())
            .unwrap_or_else(|| panic!("no {needle} in {metrics}"))
    };
    assert_eq!(
        sample("netstack_lat_marker_latency_seconds_count"),
        N as f64
    );
    // Every T2 - T1 is 30 ms: none at or below 25 ms, all at or below 50 ms.
    assert_eq!(
        sample(&format!("netstack_lat_marker_latency_seconds_bucket{{from=\"{A_POINT}\",to=\"{B_POINT}\",le=\"0.025\"}}")),
        0.0
    );
    assert_eq!(
        sample(&format!("netstack_lat_marker_latency_seconds_bucket{{from=\"{A_POINT}\",to=\"{B_POINT}\",le=\"0.05\"}}")),
        N as f64
    );
    assert_eq!(
        sample(&format!(
            "netstack_lat_correlate_errors_total{{file=\"{b}\"}}"
        )),
        1.0
    );
}

#[test]
fn follow_bad_input_is_one_line() {
    let d = TempDir::new("follow-bad");
    let (a, _) = two_files(&d);
    let nowhere = Path::new(&d.0).join("nowhere.csv").display().to_string();
    user_error(&["--follow", &a, &nowhere], "cannot read");
    user_error(&["--follow"], "required arguments were not provided");
    user_error(
        &["--follow", &a],
        "--follow with one file needs --from POINT and --to POINT",
    );
    user_error(&[&a, "--prometheus", "127.0.0.1:0"], "--follow");
}

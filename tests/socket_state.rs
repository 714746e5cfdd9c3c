//! Per-socket BPF state ends with its socket: under connection churn (`make soak` runs
//! hundreds of connections a second for an hour) no entry per closed connection may stay
//! behind in the tool's maps. Needs root (BPF, namespaces).
mod common;

use std::time::Duration;

use common::*;
use libbpf_rs::{MapCore, MapHandle};

/// Entries now in the BPF map `name` that process `pid` holds (found through its own fds,
/// so no other program's map of that name counts).
fn map_entries(pid: u32, name: &str) -> Option<usize> {
    for fd in std::fs::read_dir(format!("/proc/{pid}/fdinfo")).ok()? {
        let text = std::fs::read_to_string(fd.ok()?.path()).unwrap_or_default();
        let Some(id) = text
            .lines()
            .find_map(|l| l.strip_prefix("map_id:"))
            .and_then(|v| v.trim().parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(map) = MapHandle::from_map_id(id) else {
            continue;
        };
        if map.name().to_str() == Some(name) {
            return Some(map.keys().count());
        }
    }
    None
}

/// N connections, each a request and a reply then closed: every socket wrote, so each had
/// a tx_socks entry while open; once all are closed, (almost) none is left. Before the
/// close hook every one stayed until the LRU pushed it out.
#[test]
#[ignore = "needs root (BPF, namespaces): make test runs it with --include-ignored"]
fn tx_socket_state_goes_with_the_socket() {
    require_root();
    const N: u64 = 300;
    let before = bpf_state();
    let t = Topo::new();
    let (na, nb) = (t.netns_path(&t.a), t.netns_path(&t.b));
    let tr = tool(&[
        "trace", "--netns", &na, "--netns", &nb, "--port", "9450", "--json",
    ]);
    let n = N.to_string();
    let to = t.server(false, 9450);
    let mut srv = load_in(&t.b, &["tcp-rr-many-server", "--bind", &to, "--conns", &n]);
    wait_ready(&mut srv);
    let cli = load_in(&t.a, &["tcp-rr-many-client", "--to", &to, "--conns", &n]);
    for (p, what) in [(cli, "client"), (srv, "server")] {
        let (code, _, err) = p.finish(Duration::from_secs(60));
        assert_eq!(code, Some(0), "{what}: {err}");
    }
    // The last server socket reaches TCP_CLOSE when the client's ACK of its FIN is in.
    std::thread::sleep(Duration::from_millis(300));
    let left = map_entries(tr.pid(), "tx_socks").expect("the tool holds a tx_socks map");
    let v = stop_summary(tr);
    // Not vacuous: the tool traced every connection's writes (a request and a reply each).
    let writes = span_count(&v, "tx_send->tx_transport");
    assert!(
        writes >= 2 * N,
        "{writes} TCP writes traced of {}: {v}",
        2 * N
    );
    assert!(
        left <= 4,
        "{left} tx_socks entries left after {N} connections (2 x {N} sockets) closed"
    );
    drop(t);
    assert_no_new_bpf(&before, "tx socket state");
}

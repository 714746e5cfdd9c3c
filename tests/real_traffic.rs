//! Traffic shaped like a real host's, against ground truth the test controls: bursts through
//! a NAPI receiver (native XDP + threaded NAPI: the list path), hundreds of short-lived
//! request/reply connections (also from one reused port, and a real HTTP server and
//! client), sockets closed and reopened on one port with data unread, and a UDP sender
//! whose sends mix with file writes, failing sends, sendmmsg batches and CPU moves.
//! Run serially (`--test-threads=1`): they share the kernel.

mod common;

use std::time::Duration;

use common::*;
use serde_json::Value;

fn json_line(out: &str) -> Value {
    let line = out
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .unwrap_or_else(|| panic!("no JSON line in: {out}"));
    serde_json::from_str(line).expect("JSON")
}

fn finish_json(p: Proc, what: &str) -> Value {
    let (code, out, err) = p.finish(Duration::from_secs(60));
    assert_eq!(code, Some(0), "{what}: {err}");
    json_line(&out)
}

fn u(v: &Value, k: &str) -> u64 {
    v[k].as_u64().unwrap_or_else(|| panic!("{k} missing: {v}"))
}

fn span_u(v: &Value, name: &str, k: &str) -> u64 {
    span(v, name)
        .and_then(|s| s[k].as_u64())
        .unwrap_or_else(|| panic!("span {name} has no {k}: {}", v["spans"]))
}

/// The receiving veth end runs NAPI in its own thread with a native XDP program: the
/// stack then gets several packets per poll, through napi_gro_receive and the list path.
/// Returns the XDP holder (detached when dropped).
fn batched_receiver(t: &Topo) -> Proc {
    let mut xdp = load_in(&t.b, &["xdp-pass", "--dev", &t.vb, "--seconds", "25"]);
    wait_ready(&mut xdp);
    sh(&[
        "ip",
        "netns",
        "exec",
        &t.b,
        "sh",
        "-c",
        &format!("echo 1 > /sys/class/net/{}/threaded", t.vb),
    ]);
    xdp
}

/// A UDP reader in `b` on `port` that reports each read's wait since the kernel's stamp.
fn stamp_recv(t: &Topo, port: u16, count: u64, rcvbuf: u64) -> Proc {
    let (k, buf) = (count.to_string(), rcvbuf.to_string());
    let to = t.server(false, port);
    let mut p = load_in(
        &t.b,
        &[
            "udp-stamp-recv",
            "--bind",
            &to,
            "--count",
            &k,
            "--rcvbuf",
            &buf,
        ],
    );
    wait_ready(&mut p);
    p
}

/// NAPI polls in network namespace `ns` (its veth end is the only NAPI device there) that
/// took more than one packet, from netstack-lat softirq's summary: per-CPU rows and their
/// total alike, since only whether any did matters. By namespace, not by name: a poll
/// can be seen before the device's name is.
fn multi_packet_polls(v: &Value, ns: &str) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let ino = std::fs::metadata(ns).expect("netns file").ino();
    v["napi"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|r| r["netns"].as_u64() == Some(ino))
        .filter_map(|r| r["batch"]["buckets"].as_array())
        .flat_map(|b| b.iter().skip(2).filter_map(Value::as_u64))
        .sum()
}

/// Bursts of 100 datagrams, then a bulk TCP stream, into a batched receiver: every read
/// has its whole chain, and rx_driver->rx_netif (one NAPI poll) stays short.
#[test]
#[ignore = "needs root (BPF, namespaces): make test runs it with --include-ignored"]
fn batched_receive_keeps_every_chain() {
    common::require_root();
    const K: u64 = 400;
    let before = bpf_state();
    let t = Topo::new();
    let _xdp = batched_receiver(&t);
    let netns = t.netns_path(&t.b);
    let sirq = tool(&["softirq", "--json"]);
    let tr = tool(&["trace", "--netns", &netns, "--port", "9411", "--json"]);
    let srv = stamp_recv(&t, 9411, K, 4000000);
    let cli = load_in(
        &t.a,
        &[
            "udp-burst",
            "--to",
            &t.server(false, 9411),
            "--count",
            &K.to_string(),
            "--burst",
            "100",
            "--gap-ms",
            "30",
        ],
    );
    finish_json(cli, "udp-burst");
    let got = finish_json(srv, "udp-stamp-recv");
    let v = stop_summary(tr);
    let s = stop_summary(sirq);
    let batched = multi_packet_polls(&s, &netns);
    assert!(
        batched > 0,
        "no NAPI poll of {} took more than one packet: the test did not batch: {}",
        t.vb,
        s["napi"]
    );
    assert_eq!(u(&got, "reads"), K);
    assert_eq!(
        span_count(&v, "rx_netif->rx_read"),
        K,
        "every read has its chain ({batched} multi-packet polls): {v}"
    );
    assert_eq!(span_count(&v, "rx_sockq->rx_read"), K, "{v}");
    assert_eq!(span_count(&v, "rx_driver->rx_netif"), K, "{v}");
    let p50 = span_u(&v, "rx_driver->rx_netif", "p50_ns");
    assert!(p50 < 2_000_000, "rx_driver->rx_netif p50 {p50} ns: {v}");
    // rx_sockq->rx_read against the kernel's own stamp: the reader never waits long.
    let max_read = span_u(&v, "rx_sockq->rx_read", "max_ns");
    let truth = u(&got, "max_wait_ns");
    assert!(
        max_read <= truth + 2_000_000,
        "rx_sockq->rx_read max {max_read} ns, the reader's own max wait {truth} ns: {v}"
    );

    // A bulk TCP stream through the same receiver: every data skb read has its full chain.
    let tr = tool(&["trace", "--netns", &netns, "--port", "9412", "--json"]);
    tcp_stream(&t, &t.server(false, 9412), 2000, 8192, 0);
    let v = stop_summary(tr);
    let read = span_count(&v, "rx_sockq->rx_read");
    let full = span_count(&v, "rx_netif->rx_read");
    assert!(read > 100, "{v}");
    // Segments that waited in the socket's backlog (the reader held the socket) are taken
    // up again where the backlog is processed; what still misses its chain is counted
    // (sockq_unjoined: the TCP backlog merges segments, and the reader can take the socket
    // between rx_transport and TCP's own look at it). Runs here gave 60% to 99.6% full
    // chains: the bound is half, the accounting exact.
    let k = &v["kernel"];
    let unjoined = k["sockq_unjoined"].as_u64().unwrap_or(0);
    assert!(
        k["rx_backlog_taken"].as_u64().unwrap_or(0) > 0 || unjoined == 0,
        "the reader held the socket, yet no chain came back from the backlog: {k}"
    );
    assert!(
        full * 2 >= read && full + unjoined + 16 >= read,
        "{full} full chains, {unjoined} unjoined, of {read} reads of data: {k}"
    );
    drop(_xdp);
    drop(t);
    assert_no_new_bpf(&before, "batched receive");
}

/// Hundreds of connections, each a 100-byte request read by the server and a 1000-byte
/// reply read by the client, then closed: every rx_sockq->rx_read within the readers' own
/// SO_TIMESTAMPNS-to-return waits, and one sample per read.
fn short_lived(client_port: Option<u16>) {
    const N: u64 = 200;
    let before = bpf_state();
    let t = Topo::new();
    let (na, nb) = (t.netns_path(&t.a), t.netns_path(&t.b));
    let tr = tool(&[
        "trace", "--netns", &na, "--netns", &nb, "--port", "9420", "--json",
    ]);
    let n = N.to_string();
    let mut srv = load_in(
        &t.b,
        &[
            "tcp-rr-many-server",
            "--bind",
            &t.server(false, 9420),
            "--conns",
            &n,
        ],
    );
    wait_ready(&mut srv);
    let to = t.server(false, 9420);
    let mut args = vec!["tcp-rr-many-client", "--to", &to, "--conns", &n];
    let cp = client_port.map(|p| p.to_string());
    if let Some(p) = cp.as_deref() {
        args.extend(["--client-port", p]);
    }
    let cli = load_in(&t.a, &args);
    let c = finish_json(cli, "client");
    let s = finish_json(srv, "server");
    let v = stop_summary(tr);
    let reads = u(&c, "reads") + u(&s, "reads");
    assert_eq!(reads, 2 * N, "client {c}, server {s}");
    assert_eq!(
        span_count(&v, "rx_sockq->rx_read"),
        reads,
        "one sample per read: {v}"
    );
    let truth = u(&c, "max_wait_ns").max(u(&s, "max_wait_ns"));
    let max = span_u(&v, "rx_sockq->rx_read", "max_ns");
    assert!(
        max <= truth + 2_000_000,
        "rx_sockq->rx_read max {max} ns, the readers' own max wait {truth} ns: {v}"
    );
    let closed = v["join"]["sockets_closed"].as_u64().unwrap_or(0);
    assert!(
        closed >= N,
        "{closed} sockets ended at close, {N} connections: {v}"
    );
    drop(t);
    assert_no_new_bpf(&before, "short-lived connections");
}

#[test]
#[ignore = "needs root (BPF, namespaces): make test runs it with --include-ignored"]
fn short_lived_tcp_connections() {
    common::require_root();
    short_lived(None);
}

/// The same 4-tuple reborn 200 times (one client port, reset at close).
#[test]
#[ignore = "needs root (BPF, namespaces): make test runs it with --include-ignored"]
fn short_lived_tcp_connections_from_one_port() {
    common::require_root();
    short_lived(Some(45_123));
}

/// A real HTTP server and client on loopback: python3's http.server and curl, 50 requests.
#[test]
#[ignore = "needs root (BPF, namespaces): make test runs it with --include-ignored"]
fn http_server_and_curl() {
    common::require_root();
    let before = bpf_state();
    let t = Topo::new();
    let netns = t.netns_path(&t.b);
    let dir = std::env::temp_dir().join(format!("nsl-http-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("index.html"), "x".repeat(2000)).unwrap();
    let mut server = std::process::Command::new("ip")
        .args([
            "netns",
            "exec",
            &t.b,
            "python3",
            "-m",
            "http.server",
            "9430",
        ])
        .args(["--bind", "127.0.0.1", "--directory"])
        .arg(&dir)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("python3 http.server");
    let tr = tool(&["trace", "--netns", &netns, "--port", "9430", "--json"]);
    // Wait for the server to listen.
    let mut up = false;
    for _ in 0..100 {
        let ok = std::process::Command::new("ip")
            .args(["netns", "exec", &t.b, "curl", "-sf", "-o", "/dev/null"])
            .arg("http://127.0.0.1:9430/index.html")
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        if ok {
            up = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(up, "http.server did not answer");
    let mut args = Vec::new();
    for _ in 0..50 {
        args.extend(["-o", "/dev/null", "http://127.0.0.1:9430/index.html"]);
    }
    let st = std::process::Command::new("ip")
        .args(["netns", "exec", &t.b, "curl", "-sf"])
        .args(&args)
        .status()
        .expect("curl");
    assert!(st.success());
    let v = stop_summary(tr);
    let _ = server.kill();
    let _ = server.wait();
    let _ = std::fs::remove_dir_all(&dir);
    let n = span_count(&v, "rx_sockq->rx_read");
    assert!(n >= 100, "{n} samples for 51 requests and replies: {v}");
    let p99 = span_u(&v, "rx_sockq->rx_read", "p99_ns");
    assert!(
        p99 < 5_000_000,
        "rx_sockq->rx_read p99 {p99} ns on loopback HTTP: a sample crossed sockets? {v}"
    );
    drop(t);
    assert_no_new_bpf(&before, "http");
}

/// Sockets closed with data unread and reopened on the same port at once: no sample joins
/// one socket's read to another's data (that would be >= the 20 ms pause between rounds).
#[test]
#[ignore = "needs root (BPF, namespaces): make test runs it with --include-ignored"]
fn udp_socket_reuse_never_crosses_sockets() {
    common::require_root();
    let before = bpf_state();
    let t = Topo::new();
    let netns = t.netns_path(&t.b);
    let tr = tool(&["trace", "--netns", &netns, "--port", "9440", "--json"]);
    let mut p = load_in(
        &t.b,
        &[
            "udp-reuse",
            "--port",
            "9440",
            "--rounds",
            "30",
            "--per-round",
            "5",
            "--read",
            "2",
        ],
    );
    wait_ready(&mut p);
    let got = finish_json(p, "udp-reuse");
    let v = stop_summary(tr);
    let reads = u(&got, "reads");
    assert_eq!(reads, 29 * 2 + 5);
    assert_eq!(span_count(&v, "rx_sockq->rx_read"), reads, "{v}");
    let max = span_u(&v, "rx_sockq->rx_read", "max_ns");
    let truth = u(&got, "max_wait_ns");
    assert!(
        max <= truth + 2_000_000,
        "rx_sockq->rx_read max {max} ns vs the reader's own max wait {truth} ns: a read \
         took another socket's datagram: {v}"
    );
    drop(t);
    assert_no_new_bpf(&before, "udp reuse");
}

/// A UDP sender mixing file writes, failing sendmsg calls, sendmmsg batches and CPU moves:
/// with --pid, every datagram is kept with its owner and a send time from its own call.
#[test]
#[ignore = "needs root (BPF, namespaces): make test runs it with --include-ignored"]
fn udp_sender_owner_and_send_time() {
    common::require_root();
    const ROUNDS: u64 = 20;
    const BATCH: u64 = 4;
    let before = bpf_state();
    let t = Topo::new();
    let netns = t.netns_path(&t.a);
    let mut sink = load_in(
        &t.b,
        &[
            "udp-sink",
            "--bind",
            &t.server(false, 9450),
            "--seconds",
            "8",
        ],
    );
    wait_ready(&mut sink);
    // The sender starts first (its pid is the filter); it waits for "go" on a pause.
    let file = std::env::temp_dir().join(format!("nsl-mixed-{}", std::process::id()));
    let sender = std::process::Command::new("ip")
        .args(["netns", "exec", &t.a, LOAD, "--timeout", "30"])
        .args(["udp-mixed-send", "--to", &t.server(false, 9450)])
        .args([
            "--rounds",
            &ROUNDS.to_string(),
            "--batch",
            &BATCH.to_string(),
        ])
        .arg("--file")
        .arg(&file)
        .arg("--start-after-ms")
        .arg("1500")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("sender");
    let pid = sender.id().to_string();
    let sender = Proc {
        child: sender,
        what: "udp-mixed-send".into(),
        out: None,
        err: None,
    };
    let tr = tool(&["trace", "--netns", &netns, "--pid", &pid, "--tx", "--json"]);
    let sent = finish_json(sender, "udp-mixed-send");
    let _ = sink.finish(Duration::from_secs(20));
    let v = stop_summary(tr);
    assert_eq!(u(&sent, "sent"), ROUNDS * (BATCH + 1));
    let n = span_count(&v, "tx_send->tx_transport");
    assert_eq!(
        n,
        ROUNDS * (BATCH + 1),
        "every datagram keeps its sender: {v}"
    );
    let max = span_u(&v, "tx_send->tx_transport", "max_ns");
    assert!(
        max < 2_000_000,
        "tx_send->tx_transport max {max} ns: a send time from another call: {v}"
    );
    drop(t);
    assert_no_new_bpf(&before, "udp mixed send");
}

/// BIG TCP (IPv6: packets over 64 KiB carry a hop-by-hop jumbo header and a 0 payload
/// length; IPv4, Linux 6.3+: a 0 total length): every byte written is counted once on TX
/// and once on RX, and no segment is taken for a retransmission.
#[test]
#[ignore = "needs root (BPF, namespaces): make test runs it with --include-ignored"]
fn big_tcp_ipv6_lengths_and_no_false_retransmits() {
    common::require_root();
    big_tcp(true);
}

#[test]
#[ignore = "needs root (BPF, namespaces): make test runs it with --include-ignored"]
fn big_tcp_ipv4_lengths_and_no_false_retransmits() {
    common::require_root();
    big_tcp(false);
}

fn big_tcp(v6: bool) {
    // Writes larger than 64 KiB, so that TCP builds segments that large.
    const N: u64 = 50;
    const SIZE: u64 = 262_144;
    let before = bpf_state();
    let t = Topo::new();
    if v6 {
        sh(&[
            "ip",
            "-n",
            &t.a,
            "link",
            "set",
            &t.va,
            "gso_max_size",
            "185000",
        ]);
        sh(&[
            "ip",
            "-n",
            &t.b,
            "link",
            "set",
            &t.vb,
            "gro_max_size",
            "185000",
        ]);
    } else {
        // iproute2 before 6.3 has no gso_ipv4_max_size: set it over rtnetlink.
        for (ns, dev) in [(&t.a, &t.va), (&t.b, &t.vb)] {
            let p = load_in(ns, &["big-tcp4", "--dev", dev, "--size", "185000"]);
            let (code, _, err) = p.finish(Duration::from_secs(10));
            assert_eq!(code, Some(0), "big-tcp4: {err}");
        }
    }
    let (na, nb) = (t.netns_path(&t.a), t.netns_path(&t.b));
    let tr = tool(&[
        "trace", "--netns", &na, "--netns", &nb, "--port", "9460", "--json",
    ]);
    tcp_stream(&t, &t.server(v6, 9460), N, SIZE, 0);
    let v = stop_summary(tr);
    let row = |dir: &str| {
        v["connections"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|c| c["direction"] == dir && c["dport"] == 9460)
            .unwrap_or_else(|| panic!("no {dir} row to 9460: {v}"))
    };
    // The test did send BIG TCP: segments larger than an IP length field can say.
    let tx = row("tx");
    assert!(
        u(tx, "bytes") / u(tx, "packets").max(1) > 65535,
        "no segment over 64 KiB: BIG TCP not in use: {tx}"
    );
    assert_eq!(u(row("tx"), "bytes"), N * SIZE, "TX bytes: {}", row("tx"));
    // RX: no length wraps (a 0 length field read as is would add ~4 GB). Data a reader
    // queued from the TCP backlog without its skb chain carries no length (counted in
    // sockq_unjoined), so the sum may fall short, never over.
    let rx = u(row("rx"), "bytes");
    assert!(
        rx <= N * SIZE && rx * 2 >= N * SIZE,
        "RX bytes {rx} of {}: {}",
        N * SIZE,
        row("rx")
    );
    assert_eq!(u(&v["join"], "tx_retransmits"), 0, "{}", v["join"]);
    drop(t);
    assert_no_new_bpf(&before, "big tcp");
}

/// `netstack_lat_tx_in_flight{place}` from a /metrics body.
fn in_flight(body: &str, place: &str) -> Option<f64> {
    let key = format!("netstack_lat_tx_in_flight{{place=\"{place}\"}} ");
    body.lines()
        .find_map(|l| l.strip_prefix(&key))
        .and_then(|v| v.trim().parse().ok())
}

/// `serve` under mixed traffic for SECS seconds (UDP bursts, short TCP connections, a TBF
/// qdisc that parks chains): while it runs, chains are in flight; once traffic stops, the
/// parked and cached TX entries return to zero. `make soak` runs the long version.
#[test]
#[ignore = "needs root (BPF, namespaces): make test runs it with --include-ignored"]
fn serve_in_flight_entries_return_to_zero() {
    common::require_root();
    let secs: u64 = std::env::var("NSL_SERVE_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20);
    let before = bpf_state();
    let t = Topo::new();
    // A TBF on the sender: its chains park for the qdisc.
    sh(&[
        "ip", "netns", "exec", &t.a, "tc", "qdisc", "add", "dev", &t.va, "root", "tbf", "rate",
        "20mbit", "burst", "32kbit", "latency", "400ms",
    ]);
    let (na, nb) = (t.netns_path(&t.a), t.netns_path(&t.b));
    let listen = format!("127.0.0.1:{}", free_port());
    let serve = tool(&["serve", "--listen", &listen, "--netns", &na, "--netns", &nb]);
    let end = std::time::Instant::now() + Duration::from_secs(secs);
    let mut peak = 0.0f64;
    let mut round = 0u16;
    while std::time::Instant::now() < end {
        let port = 9470 + round % 20;
        let mut srv = load_in(
            &t.b,
            &[
                "tcp-rr-many-server",
                "--bind",
                &t.server(false, port),
                "--conns",
                "20",
            ],
        );
        wait_ready(&mut srv);
        let mut usrv = load_in(
            &t.b,
            &[
                "udp-sink",
                "--bind",
                &t.server(false, port + 100),
                "--seconds",
                "1.5",
            ],
        );
        wait_ready(&mut usrv);
        let udp = load_in(
            &t.a,
            &[
                "udp-burst",
                "--to",
                &t.server(false, port + 100),
                "--count",
                "500",
                "--burst",
                "100",
                "--gap-ms",
                "5",
                "--size",
                "512",
            ],
        );
        let tcp = load_in(
            &t.a,
            &[
                "tcp-rr-many-client",
                "--to",
                &t.server(false, port),
                "--conns",
                "20",
            ],
        );
        let (_, body) = get(&listen, "/metrics");
        peak = peak.max(in_flight(&body, "parked").unwrap_or(0.0));
        for (p, what) in [
            (tcp, "tcp"),
            (srv, "tcp server"),
            (udp, "udp"),
            (usrv, "udp sink"),
        ] {
            let (code, _, err) = p.finish(Duration::from_secs(30));
            assert_eq!(code, Some(0), "{what}: {err}");
        }
        round += 1;
    }
    // Traffic stopped: the exporter publishes once a second. Chains normally finish at
    // once; one whose completion never came (rare: a dequeue the kernel does not report)
    // is swept as stale after 10 s, so zero must come within that.
    let deadline = std::time::Instant::now() + Duration::from_secs(13);
    let (parked, cached, body) = loop {
        std::thread::sleep(Duration::from_millis(500));
        let (status, body) = get(&listen, "/metrics");
        assert_eq!(status, 200);
        let parked = in_flight(&body, "parked").expect("tx_in_flight parked");
        let cached = in_flight(&body, "cached").expect("tx_in_flight cached");
        if (parked, cached) == (0.0, 0.0) || std::time::Instant::now() > deadline {
            break (parked, cached, body);
        }
    };
    assert_eq!(
        (parked, cached),
        (0.0, 0.0),
        "after {round} rounds (peak parked {peak}):\n{body}"
    );
    serve.signal(libc::SIGINT);
    let (code, _, err) = serve.finish(Duration::from_secs(20));
    assert_eq!(code, Some(0), "serve: {err}");
    drop(t);
    assert_no_new_bpf(&before, "serve under mixed traffic");
}

/// Two senders on two CPUs into one UDP socket: the kernel's per-NUMA receive queue lets
/// one CPU move the other's datagram to the socket and call sk_data_ready once for both.
/// The FIFO join must stay aligned: one sample per read, none longer than the reader's
/// own wait (a misaligned FIFO pairs reads with later datagrams: negative or short waits
/// would pass, so the count and the upper bound are both checked), and every datagram
/// whose chain the other CPU could not see is counted.
#[test]
#[ignore = "needs root (BPF, namespaces): make test runs it with --include-ignored"]
fn udp_two_cpus_one_socket() {
    common::require_root();
    const K: u64 = 8000;
    let before = bpf_state();
    let t = Topo::new();
    let netns = t.netns_path(&t.b);
    let tr = tool(&["trace", "--netns", &netns, "--port", "9480", "--json"]);
    let srv = stamp_recv(&t, 9480, K, 8000000);
    let to = t.server(false, 9480);
    let senders: Vec<Proc> = (0..2)
        .map(|cpu| {
            let child = std::process::Command::new("ip")
                .args([
                    "netns",
                    "exec",
                    &t.a,
                    "taskset",
                    "-c",
                    &cpu.to_string(),
                    LOAD,
                ])
                .args(["udp-burst", "--to", &to, "--count", &(K / 2).to_string()])
                .args(["--burst", "200", "--gap-ms", "2"])
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .expect("sender");
            Proc {
                child,
                what: format!("sender on CPU {cpu}"),
                out: None,
                err: None,
            }
        })
        .collect();
    for s in senders {
        finish_json(s, "udp-burst");
    }
    let got = finish_json(srv, "udp-stamp-recv");
    let v = stop_summary(tr);
    assert_eq!(u(&got, "reads"), K);
    assert_eq!(span_count(&v, "rx_sockq->rx_read"), K, "{}", v["kernel"]);
    let max = span_u(&v, "rx_sockq->rx_read", "max_ns");
    let truth = u(&got, "max_wait_ns");
    assert!(
        max <= truth + 2_000_000,
        "rx_sockq->rx_read max {max} ns vs the reader's own {truth} ns: {}",
        v["kernel"]
    );
    let full = span_count(&v, "rx_netif->rx_read");
    let k = &v["kernel"];
    let unjoined = k["sockq_unjoined"].as_u64().unwrap_or(0);
    assert!(
        full + unjoined >= K,
        "{full} full chains and {unjoined} counted without their skb, of {K}: {k}"
    );
    drop(t);
    assert_no_new_bpf(&before, "udp two cpus");
}

/// The veth's own count of transmits it dropped (its peer's backlog was full): the kernel's
/// ground truth for NET_XMIT_DROP.
fn veth_tx_dropped(ns: &str, dev: &str) -> u64 {
    let out = std::process::Command::new("ip")
        .args(["-n", ns, "-j", "-s", "link", "show", dev])
        .output()
        .expect("ip -s link");
    let v: Value = serde_json::from_slice(&out.stdout).expect("ip -j output");
    v[0]["stats64"]["tx"]["dropped"].as_u64().unwrap_or(0)
}

/// A veth whose peer runs NAPI (XDP, threaded) takes skbs into a 256-slot ring: a burst
/// larger than the ring makes the driver return NET_XMIT_DROP for what does not fit. Every datagram still has its chain, the dropped ones
/// end at once as drops (nothing waits in the cache for a completion that never comes), and
/// their number is the veth's own drop count.
#[test]
#[ignore = "needs root (BPF, namespaces): make test runs it with --include-ignored"]
fn driver_drops_end_their_chains() {
    common::require_root();
    const N: u64 = 2000;
    let t = Topo::new();
    let _xdp = batched_receiver(&t);
    let port = 9490u16;
    let na = t.netns_path(&t.a);
    let tr = tool(&[
        "trace",
        "--tx",
        "--netns",
        &na,
        "--port",
        &port.to_string(),
        "--json",
    ]);
    let server = t.server(false, port);
    let mut sink = load_in(&t.b, &["udp-sink", "--bind", &server, "--seconds", "3"]);
    wait_ready(&mut sink);
    let dropped0 = veth_tx_dropped(&t.a, &t.va);
    let cli = load_in(
        &t.a,
        &[
            "udp-burst",
            "--to",
            &server,
            "--count",
            &N.to_string(),
            "--burst",
            "1000",
            "--gap-ms",
            "50",
        ],
    );
    let (code, _, err) = cli.finish(Duration::from_secs(30));
    assert_eq!(code, Some(0), "udp-burst: {err}");
    let got = finish_json(sink, "udp-sink");
    let dropped = veth_tx_dropped(&t.a, &t.va) - dropped0;
    std::thread::sleep(Duration::from_millis(300));
    let v = stop_summary(tr);
    let (k, j) = (&v["kernel"], &v["join"]);
    assert!(dropped > 0, "the burst overflowed the peer's ring: {got}");
    assert_eq!(j["tx_chains"], N, "every datagram has its chain: {j}");
    // The driver freed each inside its xmit (a drop) and said so (NET_XMIT_DROP): both
    // counters hold every one of the veth's drops.
    assert_eq!(
        (k["tx_dropped"].as_u64(), k["tx_xmit_failed"].as_u64()),
        (Some(dropped), Some(dropped)),
        "chains ended as drops = the veth's drops; kernel {k}, sink {got}"
    );
    assert_eq!(
        (k["tx_parked"].as_u64(), k["tx_cached"].as_u64()),
        (Some(0), Some(0)),
        "nothing left waiting: {k}"
    );
    assert!(
        got["received"].as_u64().unwrap() + dropped <= N,
        "sink {got}, veth drops {dropped}"
    );
}

/// SO_RCVLOWAT: TCP calls sk_data_ready only once LOWAT bytes are in, so the segments
/// before the last of each group reach the socket queue unannounced. What the tool makes of
/// it, against the reader's own stamps: one rx_sockq->rx_read per read, timed from the
/// segment that completed the group (when the application could first read: its wait,
/// about D), and the earlier segments' chains counted, not lost silently. Their own time in
/// the queue (D plus the gaps between segments) is not measured: the kernel gives no event
/// for their queueing.
#[test]
#[ignore = "needs root (BPF, namespaces): make test runs it with --include-ignored"]
fn rcvlowat_reads_are_timed_from_the_completing_segment() {
    common::require_root();
    const GROUPS: u64 = 8;
    const LOWAT: u64 = 3;
    const D_MS: u64 = 10;
    const GAP_MS: u64 = 30;
    let t = Topo::new();
    let port = 9491u16;
    let nb = t.netns_path(&t.b);
    let tr = tool(&[
        "trace",
        "--rx",
        "--netns",
        &nb,
        "--port",
        &port.to_string(),
        "--json",
    ]);
    let server = t.server(false, port);
    let n = (GROUPS * LOWAT).to_string();
    let mut srv = load_in(
        &t.b,
        &[
            "tcp-stamp-recv",
            "--bind",
            &server,
            "--count",
            &n,
            "--size",
            "100",
            "--lowat",
            &LOWAT.to_string(),
            "--delay-ms",
            &D_MS.to_string(),
        ],
    );
    wait_ready(&mut srv);
    let cli = load_in(
        &t.a,
        &[
            "tcp-send",
            "--to",
            &server,
            "--count",
            &n,
            "--size",
            "100",
            "--interval-ms",
            &GAP_MS.to_string(),
        ],
    );
    let (code, _, err) = cli.finish(Duration::from_secs(30));
    assert_eq!(code, Some(0), "tcp-send: {err}");
    let got = finish_json(srv, "tcp-stamp-recv");
    std::thread::sleep(Duration::from_millis(200));
    let v = stop_summary(tr);
    assert_eq!(got["reads"], GROUPS, "{got}");
    let read = span(&v, "rx_sockq->rx_read").unwrap_or_else(|| panic!("no reads: {v}"));
    assert_eq!(
        read["count"], GROUPS,
        "one per read: {read}; join {}",
        v["join"]
    );
    let d = (D_MS * 1_000_000) as f64;
    let p50 = read["p50_ns"].as_u64().unwrap() as f64;
    assert!(
        (0.9 * d..=1.5 * d).contains(&p50),
        "timed from the completing segment, about D: {read}"
    );
    // The reader's stamp is the last segment's too: the two agree.
    let theirs = got["p50_wait_ns"].as_u64().unwrap() as f64;
    let full = span(&v, "rx_netif->rx_read").unwrap();
    let ours = full["p50_ns"].as_u64().unwrap() as f64;
    assert!(
        (ours - theirs).abs() <= 0.1 * theirs,
        "rx_netif->rx_read p50 {ours} vs SO_TIMESTAMPNS {theirs}"
    );
    // The unannounced segments are not lost silently, but not told apart either: each
    // ends as a chain without a socket, or is taken for a TCP backlog hand-over (a segment
    // queued without sk_data_ready looks like one), and the counters show both.
    let k = &v["kernel"];
    let unannounced =
        k["chains_without_socket"].as_u64().unwrap() + k["rx_backlog"].as_u64().unwrap();
    assert!(
        unannounced >= GROUPS * (LOWAT - 1),
        "the unannounced segments are counted: {k}"
    );
    assert_eq!(v["join"]["reads_unmatched"], 0, "{}", v["join"]);
}

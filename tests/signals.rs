//! `netstack-lat signals` and the congestion-signals library against ground truths the tests
//! control: DROP-ed packets, a closed port, a full receive buffer, bytes written, a reader
//! that stops reading, a TBF burst.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use common::{assert_no_new_bpf, bpf_state, load_in, sh, stop_summary, tool, Topo};
use serde_json::Value;

fn reason(v: &Value, name: &str) -> u64 {
    v["drops_by_reason"][name].as_u64().unwrap_or(0)
}

fn set_rcvbuf(s: &UdpSocket, bytes: libc::c_int) {
    // SAFETY: a valid socket and an int option of the right size.
    let r = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            (&bytes as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    assert_eq!(r, 0, "SO_RCVBUF");
}

/// K packets matched by an iptables DROP rule: K drops, reason NETFILTER_DROP.
#[test]
#[ignore = "needs root (BPF, namespaces): make test runs it with --include-ignored"]
fn netfilter_drop_rule_gives_its_count() {
    common::require_root();
    const K: u64 = 37;
    let before = bpf_state();
    let t = Topo::new();
    let port = 9431;
    sh(&[
        "ip", "netns", "exec", &t.b, "iptables", "-A", "INPUT", "-p", "udp", "--dport", "9431",
        "-j", "DROP",
    ]);
    let p = tool(&["signals", "--json", "--interval", "200ms", "--port", "9431"]);
    common::udp_send(&t.a, &t.server(false, port), K, 2);
    std::thread::sleep(Duration::from_millis(300));
    let v = stop_summary(p);
    assert_eq!(reason(&v, "NETFILTER_DROP"), K, "{v}");
    assert_eq!(v["drops"], K, "only the DROP-ed packets: {v}");
    drop(t);
    assert_no_new_bpf(&before, "signals");
}

/// UDP to a closed port: one NO_SOCKET drop each. A receiver with a tiny buffer that does
/// not read: SOCKET_RCVBUFF drops = sent - arrived.
#[test]
#[ignore = "needs root (BPF, namespaces): make test runs it with --include-ignored"]
fn closed_port_and_full_receive_buffer() {
    common::require_root();
    let closed = {
        let s = UdpSocket::bind("127.0.0.1:0").unwrap();
        s.local_addr().unwrap().port()
    };
    let p = tool(&["signals", "--json", "--port", &closed.to_string()]);
    let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
    for _ in 0..25 {
        tx.send_to(b"nobody", ("127.0.0.1", closed)).unwrap();
    }
    std::thread::sleep(Duration::from_millis(300));
    let v = stop_summary(p);
    assert_eq!(reason(&v, "NO_SOCKET"), 25, "{v}");

    let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
    set_rcvbuf(&rx, 2048); // the kernel doubles it: a handful of datagrams fit
    let port = rx.local_addr().unwrap().port();
    let p = tool(&["signals", "--json", "--port", &port.to_string()]);
    const SENT: u64 = 200;
    for _ in 0..SENT {
        tx.send_to(&[7u8; 512], ("127.0.0.1", port)).unwrap();
    }
    std::thread::sleep(Duration::from_millis(300));
    let v = stop_summary(p);
    rx.set_nonblocking(true).unwrap();
    let mut arrived = 0u64;
    let mut buf = [0u8; 1024];
    while rx.recv(&mut buf).is_ok() {
        arrived += 1;
    }
    assert!(arrived > 0 && arrived < SENT, "arrived {arrived}");
    assert_eq!(reason(&v, "SOCKET_RCVBUFF"), SENT - arrived, "{v}");
}

/// Bytes the sender wrote, exactly (the test's own writes, all returned in full).
#[test]
#[ignore = "needs root (BPF, namespaces): make test runs it with --include-ignored"]
fn send_bytes_match_what_was_written() {
    common::require_root();
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let p = tool(&["signals", "--json", "--port", &port.to_string()]);
    let reader = std::thread::spawn(move || {
        let (mut s, _) = l.accept().unwrap();
        let mut n = 0u64;
        let mut buf = vec![0u8; 65536];
        loop {
            match s.read(&mut buf) {
                Ok(0) => break n,
                Ok(k) => n += k as u64,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => panic!("{e}"),
            }
        }
    });
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let chunk = vec![1u8; 10_000];
    let mut written = 0u64;
    for _ in 0..500 {
        s.write_all(&chunk).unwrap();
        written += chunk.len() as u64;
    }
    drop(s);
    assert_eq!(reader.join().unwrap(), written);
    // Connected: the socket names the filtered port.
    let _sink = UdpSocket::bind(("127.0.0.1", port)).unwrap();
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    udp.connect(("127.0.0.1", port)).unwrap();
    for _ in 0..10 {
        udp.send(&[0u8; 300]).unwrap();
    }
    std::thread::sleep(Duration::from_millis(300));
    let v = stop_summary(p);
    let tcp = v["tcp_send_bytes"].as_u64().unwrap();
    let diff = tcp.abs_diff(written) as f64 / written as f64;
    assert!(diff <= 0.01, "TCP {tcp} vs written {written}: {v}");
    assert_eq!(v["udp_send_bytes"], 3000, "{v}");
}

/// A sender whose reader stops reading fills its send buffer; a reading peer keeps it low.
#[test]
#[ignore = "needs root (BPF, namespaces): make test runs it with --include-ignored"]
fn wmem_pressure_follows_the_reader() {
    common::require_root();
    for stalled in [true, false] {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let p = tool(&["signals", "--json", "--port", &port.to_string()]);
        let reader = std::thread::spawn(move || {
            let (mut s, _) = l.accept().unwrap();
            if stalled {
                std::thread::sleep(Duration::from_millis(1500));
                return;
            }
            let mut buf = vec![0u8; 1 << 16];
            while s.read(&mut buf).map(|n| n > 0).unwrap_or(false) {}
        });
        let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.set_nonblocking(true).unwrap();
        let chunk = vec![2u8; 16384];
        let until = Instant::now() + Duration::from_millis(800);
        let mut eagain = 0;
        while Instant::now() < until {
            match s.write(&chunk) {
                Ok(_) => {}
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    eagain += 1;
                    std::thread::sleep(Duration::from_millis(2));
                }
                Err(e) => panic!("{e}"),
            }
            if !stalled {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        let v = stop_summary(p);
        drop(s);
        reader.join().unwrap();
        let max = v["max_wmem_pressure"].as_f64().unwrap();
        if stalled {
            assert!(eagain > 0, "the buffer never filled");
            assert!(max >= 0.9, "stalled reader: max pressure {max}: {v}");
        } else {
            assert!(max < 0.5, "reading peer: max pressure {max}: {v}");
        }
    }
}

/// A burst into a TBF qdisc: backlog above zero while it drains, zero after.
#[test]
#[ignore = "needs root (BPF, namespaces): make test runs it with --include-ignored"]
fn qdisc_backlog_during_a_tbf_burst() {
    common::require_root();
    // Qdisc rows are keyed by ifindex alone, and a fresh namespace's veth would share its
    // index with a host device: one no host device has keeps the check on the test's own.
    let t = Topo::with_ifindex(700_000 + std::process::id() % 100_000 * 2);
    let va_index = u64::from(700_000 + std::process::id() % 100_000 * 2);
    // 1 Mbit/s: 100 datagrams of 1000 bytes take about 0.8 s to leave.
    sh(&[
        "ip", "netns", "exec", &t.a, "tc", "qdisc", "add", "dev", &t.va, "root", "tbf", "rate",
        "1mbit", "burst", "5kb", "latency", "3s",
    ]);
    let p = tool(&["signals", "--json", "--interval", "100ms"]);
    let cli = load_in(
        &t.a,
        &[
            "udp-send",
            "--to",
            &t.server(false, 9433),
            "--count",
            "100",
            "--size",
            "1000",
        ],
    );
    assert_eq!(cli.finish(Duration::from_secs(30)).0, Some(0));
    std::thread::sleep(Duration::from_millis(1800));
    p.signal(libc::SIGINT);
    let (code, out, _) = p.finish(Duration::from_secs(20));
    assert_eq!(code, Some(0));
    let lines: Vec<Value> = out
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .filter(|v: &Value| v["type"] == "interval")
        .collect();
    let ours = |v: &Value| -> Option<Value> {
        v["qdisc"]
            .as_array()?
            .iter()
            .find(|q| q["ifindex"].as_u64() == Some(va_index))
            .cloned()
    };
    let peak = lines
        .iter()
        .filter_map(ours)
        .map(|q| q["peak_bytes"].as_u64().unwrap_or(0))
        .max()
        .unwrap_or(0);
    // The 100 datagrams leave the sender at once; the TBF bucket (5 kB) lets about five
    // through, the rest queues: the peak is most of the ~104 kB (1042 bytes a frame).
    assert!(
        (80_000..=100 * 1042).contains(&peak),
        "backlog peak {peak} on {} during the burst: {out}",
        t.va
    );
    // Drained: the last interval's row of va (present while the qdisc had a backlog, or
    // gone) holds nothing.
    let last = lines.last().expect("interval lines");
    let left = ours(last).map_or(0, |q| q["bytes"].as_u64().unwrap_or(0));
    assert_eq!(left, 0, "drained: {last}");
}

/// The library example (the seed's usage made real) runs and reports the bytes it sent.
#[test]
#[ignore = "needs root (BPF, namespaces): make test runs it with --include-ignored"]
fn library_example_runs() {
    common::require_root();
    let exe = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/target/release/examples/signals"
    );
    assert!(
        std::path::Path::new(exe).exists(),
        "{exe}: build the examples first (make test runs cargo build --release --examples)"
    );
    let out = std::process::Command::new(exe)
        .args(["--self-test"])
        .output()
        .expect("run the example");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("self-test ok"), "{stdout}");
}

//! The metrics endpoint keeps answering while 1,000 connections sit idle, others trickle
//! bytes, send garbage or oversized heads (issue 21). In-process through the library: no
//! root, no BPF, loopback only. Every client is bounded in count and time.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use netstack_lat::sink::prom::registry::{Endpoint, Exporter};

const IDLE: usize = 1000;
const TRICKLE: usize = 50;
const GARBAGE: usize = 50;
const OVERSIZED: usize = 50;
const SCRAPES: usize = 20;
/// The endpoint's head deadline (docs/http.md).
const DEADLINE: Duration = Duration::from_secs(5);

fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.set_write_timeout(Some(Duration::from_secs(10))).unwrap();
    s
}

/// One response on `s`: status and body (by Content-Length).
fn response(s: &mut TcpStream) -> (u16, String) {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(s.read(&mut byte).unwrap(), 1, "EOF in a response head");
        head.push(byte[0]);
    }
    let head = String::from_utf8(head).unwrap();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    let len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("Content-Length: "))
        .unwrap()
        .parse()
        .unwrap();
    let mut body = vec![0u8; len];
    s.read_exact(&mut body).unwrap();
    (status, String::from_utf8(body).unwrap())
}

fn scrape(s: &mut TcpStream) -> (u16, String, Duration) {
    let t0 = Instant::now();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: t\r\nAccept: text/plain\r\n\r\n")
        .unwrap();
    let (status, body) = response(s);
    (status, body, t0.elapsed())
}

fn sample(body: &str, series: &str) -> f64 {
    body.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no {series} in\n{body}"))
        .parse()
        .unwrap()
}

fn dropped(body: &str, reason: &str) -> f64 {
    sample(
        body,
        &format!("netstack_lat_http_connections_dropped_total{{reason=\"{reason}\"}}"),
    )
}

/// The server closed it: EOF (or a reset) and nothing else.
fn closed(s: &mut TcpStream) -> bool {
    let mut out = Vec::new();
    match s.read_to_end(&mut out) {
        Ok(_) => out.is_empty(),
        Err(_) => true,
    }
}

#[test]
fn scrapes_answer_within_a_second_under_hostile_clients() {
    let endpoint = Endpoint::start("127.0.0.1:0", Exporter::new()).unwrap();
    let addr = endpoint.addr;
    let t_start = Instant::now();

    let mut idle: Vec<TcpStream> = (0..IDLE).map(|_| connect(addr)).collect();

    // Trickle: a valid request line, then a header byte every 100 ms, never the blank line.
    let stop = Arc::new(AtomicBool::new(false));
    let trickle = {
        let stop = stop.clone();
        let mut socks: Vec<TcpStream> = (0..TRICKLE).map(|_| connect(addr)).collect();
        for s in &mut socks {
            s.write_all(b"GET /metrics HTTP/1.1\r\nX-Slow: ").unwrap();
        }
        thread::spawn(move || {
            let t0 = Instant::now();
            let mut cut = 0;
            let mut open = vec![true; socks.len()];
            // Bounded: until every one is cut off, or 3 deadlines.
            while cut < socks.len() && t0.elapsed() < 3 * DEADLINE && !stop.load(Ordering::Relaxed)
            {
                for (s, o) in socks.iter_mut().zip(open.iter_mut()) {
                    if *o && s.write_all(b"a").is_err() {
                        *o = false;
                        cut += 1;
                    }
                }
                thread::sleep(Duration::from_millis(100));
            }
            (cut, socks)
        })
    };

    // Garbage and oversized heads: each answered (400, 431) and closed.
    for i in 0..GARBAGE {
        let mut s = connect(addr);
        let raw: &[u8] = if i % 2 == 0 {
            b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"
        } else {
            b"BLAH BLAH BLAH BLAH\r\n\r\n"
        };
        s.write_all(raw).unwrap();
        assert_eq!(response(&mut s).0, 400);
        assert!(closed(&mut s));
    }
    for _ in 0..OVERSIZED {
        let mut s = connect(addr);
        let mut req = b"GET /metrics HTTP/1.1\r\nX-Big: ".to_vec();
        req.extend(std::iter::repeat_n(b'b', 16 * 1024));
        req.extend_from_slice(b"\r\n\r\n");
        // The answer may come before all is sent; the server then stops reading.
        let _ = s.write_all(&req);
        assert_eq!(response(&mut s).0, 431);
    }

    // 20 scrapes while all that is open: half on one kept-alive connection, half fresh.
    let mut kept = connect(addr);
    let mut times = Vec::new();
    let mut last = String::new();
    for i in 0..SCRAPES {
        let (status, body, took) = if i % 2 == 0 {
            scrape(&mut kept)
        } else {
            scrape(&mut connect(addr))
        };
        assert_eq!(status, 200, "{body}");
        assert!(took < Duration::from_secs(1), "scrape {i} took {took:?}");
        times.push(took);
        last = body;
        thread::sleep(Duration::from_millis(50));
    }
    assert!(
        t_start.elapsed() < DEADLINE,
        "the scrapes must happen while the idle clients are open"
    );
    // The idle and trickling clients, and this scrape's connection at least.
    let open = sample(&last, "netstack_lat_http_open_connections");
    assert!(open >= (IDLE + TRICKLE + 1) as f64, "{open}");
    times.sort();
    eprintln!(
        "scrape latency with {IDLE} idle, {TRICKLE} trickling: median {:?}, max {:?}",
        times[SCRAPES / 2],
        times[SCRAPES - 1]
    );

    // Past the deadline every idle and trickling client is cut off, and counted exactly.
    thread::sleep(
        (t_start + DEADLINE + Duration::from_millis(500)).saturating_duration_since(Instant::now()),
    );
    for s in &mut idle {
        assert!(closed(s), "an idle client was not cut off");
    }
    let (cut, _socks) = trickle.join().unwrap();
    stop.store(true, Ordering::Relaxed);
    assert_eq!(cut, TRICKLE, "every trickling client was cut off");
    let (status, body, _) = scrape(&mut connect(addr));
    assert_eq!(status, 200);
    assert_eq!(
        dropped(&body, "deadline"),
        (IDLE + TRICKLE) as f64,
        "{body}"
    );
    assert_eq!(dropped(&body, "garbage"), GARBAGE as f64);
    assert_eq!(dropped(&body, "oversized"), OVERSIZED as f64);
    assert_eq!(dropped(&body, "cap"), 0.0);
    assert_eq!(dropped(&body, "busy"), 0.0);
    drop(endpoint);
}

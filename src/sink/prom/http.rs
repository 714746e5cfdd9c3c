//! A small synchronous HTTP/1.x server for the Prometheus `/metrics` endpoint.
//!
//! Std only: one acceptor thread feeds a fixed pool of workers through a bounded
//! queue, so a flood of clients costs at most `WORKERS` threads and `QUEUE` sockets;
//! beyond that the acceptor answers 503 itself. Every connection carries one request
//! and is closed after the response (no keep-alive).

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::os::fd::AsRawFd;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crossbeam_channel::TrySendError;

use crate::error::UserError;

/// Worker threads serving connections.
const WORKERS: usize = 8;
/// Accepted connections waiting for a worker; more are refused with 503.
const QUEUE: usize = 64;
/// Largest request head (request line + headers + blank line).
const MAX_HEAD: usize = 8 * 1024;
/// Default time a client has to send its request head, and per write.
const IO_TIMEOUT: Duration = Duration::from_secs(5);
/// How often the acceptor looks at the stop flag.
const TURN: Duration = Duration::from_millis(100);
/// After an error response, how long to read what the client still sends, and how much.
const LINGER: Duration = Duration::from_millis(500);
const LINGER_BYTES: usize = 64 * 1024;

const TEXT: &str = "text/plain; charset=utf-8";

/// What a handler answers.
pub struct Response {
    pub status: u16,
    pub content_type: &'static str,
    pub body: Vec<u8>,
}

/// Called with the request path (query string removed) and the Accept header ("" when
/// there is none), which picks the exposition format.
pub type Handler = Arc<dyn Fn(&str, &str) -> Response + Send + Sync>;

/// A bound listener, not yet serving.
pub struct Server {
    listener: TcpListener,
    addr: SocketAddr,
    timeout: Duration,
}

impl Server {
    /// Bind now, so a bad address or a port in use is reported before anything else starts.
    pub fn bind(addr: &str) -> Result<Server, UserError> {
        let invalid = || {
            UserError::new(format!(
                "invalid --listen address '{addr}': give IP:PORT such as 0.0.0.0:2112 or 127.0.0.1:9100"
            ))
        };
        // Resolve first so "cannot parse" and "cannot bind" get different advice.
        let addrs: Vec<SocketAddr> = addr.to_socket_addrs().map_err(|_| invalid())?.collect();
        if addrs.is_empty() {
            return Err(invalid());
        }
        let cannot = |e: io::Error| {
            UserError::new(format!(
                "cannot listen on {addr}: {e} (choose another address or port with --listen)"
            ))
        };
        let listener = TcpListener::bind(&addrs[..]).map_err(cannot)?;
        // Nonblocking so a racing reset between poll and accept cannot stall the stop check.
        listener.set_nonblocking(true).map_err(cannot)?;
        let addr = listener.local_addr().map_err(cannot)?;
        Ok(Server {
            listener,
            addr,
            timeout: IO_TIMEOUT,
        })
    }

    /// Replace the 5 s read/write timeout (tests use a short one).
    pub fn with_timeout(mut self, timeout: Duration) -> Server {
        self.timeout = timeout;
        self
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Serve until `stop` is set (checked at least every 100 ms); returns the acceptor thread.
    pub fn spawn(self, handler: Handler, stop: Arc<AtomicBool>) -> JoinHandle<()> {
        thread::Builder::new()
            .name("http-accept".into())
            .spawn(move || self.run(handler, stop))
            .expect("cannot start the HTTP acceptor thread")
    }

    fn run(self, handler: Handler, stop: Arc<AtomicBool>) {
        let (tx, rx) = crossbeam_channel::bounded::<TcpStream>(QUEUE);
        let workers: Vec<JoinHandle<()>> = (0..WORKERS)
            .filter_map(|i| {
                let (rx, handler, stop, timeout) =
                    (rx.clone(), handler.clone(), stop.clone(), self.timeout);
                let work = move || {
                    // Ends when the acceptor drops the sender; connections still queued
                    // at stop are dropped unanswered.
                    for stream in rx {
                        if stop.load(Ordering::Relaxed) {
                            break;
                        }
                        serve(stream, &handler, timeout);
                    }
                };
                // A worker that cannot start only shrinks the pool.
                thread::Builder::new()
                    .name(format!("http-{i}"))
                    .spawn(work)
                    .ok()
            })
            .collect();
        drop(rx);

        while !stop.load(Ordering::Relaxed) {
            wait_readable(&self.listener, TURN);
            match self.listener.accept() {
                Ok((stream, _)) => match tx.try_send(stream) {
                    Ok(()) => {}
                    Err(TrySendError::Full(s) | TrySendError::Disconnected(s)) => refuse(s),
                },
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                // EMFILE and the like: the connection stays pending, so don't spin on it.
                Err(_) => thread::sleep(Duration::from_millis(10)),
            }
        }
        drop(tx);
        for w in workers {
            let _ = w.join();
        }
    }
}

/// Sleep until a connection is pending or `timeout` passes.
fn wait_readable(listener: &TcpListener, timeout: Duration) {
    let mut pfd = libc::pollfd {
        fd: listener.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd that lives across the call. The result is not needed:
    // the nonblocking accept that follows tells.
    unsafe { libc::poll(&mut pfd, 1, timeout.as_millis() as libc::c_int) };
}

/// The queue is full: answer 503 from the acceptor without ever blocking it.
fn refuse(mut stream: TcpStream) {
    // A fresh socket's send buffer takes this short answer in one nonblocking write.
    let _ = stream.set_nonblocking(true);
    let _ = write_response(&mut stream, &plain(503), false, "Retry-After: 1\r\n");
    let _ = stream.shutdown(Shutdown::Write);
    // Take what already arrived: closing with unread data sends a reset, which can
    // destroy the answer before the client reads it.
    let _ = stream.read(&mut [0u8; MAX_HEAD]);
}

/// One connection: read the head, answer, close.
fn serve(mut stream: TcpStream, handler: &Handler, timeout: Duration) {
    if stream.set_nonblocking(false).is_err() || stream.set_write_timeout(Some(timeout)).is_err() {
        return;
    }
    // One deadline for the whole head, so a client trickling bytes (slowloris) cannot
    // renew the timeout with every read.
    let head = match read_head(&mut stream, Instant::now() + timeout) {
        Head::Complete(head) => head,
        Head::TooLarge => return reject(stream, 431, ""),
        Head::Truncated => return reject(stream, 400, ""),
        Head::Gone => return,
    };
    let Some((method, path)) = request_line(&head) else {
        return reject(stream, 400, "");
    };
    if method != "GET" && method != "HEAD" {
        return reject(stream, 405, "Allow: GET, HEAD\r\n");
    }
    // A panicking handler answers 500 instead of costing the pool a worker.
    let accept = header_value(&head, "accept").unwrap_or("");
    let resp =
        catch_unwind(AssertUnwindSafe(|| handler(path, accept))).unwrap_or_else(|_| plain(500));
    let _ = write_response(&mut stream, &resp, method == "HEAD", "");
}

enum Head {
    /// Everything up to and including the blank line.
    Complete(Vec<u8>),
    TooLarge,
    /// The client closed its side mid-head.
    Truncated,
    /// Closed before sending anything, reset, or too slow: nobody to answer.
    Gone,
}

fn read_head(stream: &mut TcpStream, deadline: Instant) -> Head {
    let mut buf = vec![0u8; MAX_HEAD];
    let mut len = 0;
    loop {
        if let Some(end) = head_end(&buf[..len]) {
            buf.truncate(end);
            return Head::Complete(buf);
        }
        if len == MAX_HEAD {
            return Head::TooLarge;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        // set_read_timeout rejects zero.
        if left.is_zero() || stream.set_read_timeout(Some(left)).is_err() {
            return Head::Gone;
        }
        match stream.read(&mut buf[len..]) {
            Ok(0) if len == 0 => return Head::Gone,
            Ok(0) => return Head::Truncated,
            Ok(n) => len += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return Head::Gone,
        }
    }
}

/// Length of the head through its blank line; bare LF line ends are accepted too.
fn head_end(buf: &[u8]) -> Option<usize> {
    let pos = |pat: &[u8]| {
        buf.windows(pat.len())
            .position(|w| w == pat)
            .map(|p| p + pat.len())
    };
    match (pos(b"\r\n\r\n"), pos(b"\n\n")) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// Method and path (query removed) from `METHOD TARGET HTTP/1.x`; None if malformed.
fn request_line(head: &[u8]) -> Option<(&str, &str)> {
    let line = head.split(|&b| b == b'\n').next()?;
    let line = std::str::from_utf8(line.strip_suffix(b"\r").unwrap_or(line)).ok()?;
    let mut parts = line.split(' ');
    let (method, target, version) = (parts.next()?, parts.next()?, parts.next()?);
    let valid = parts.next().is_none()
        && !method.is_empty()
        && method.bytes().all(|b| b.is_ascii_alphabetic())
        && target.starts_with('/')
        && version.starts_with("HTTP/1.");
    valid.then(|| (method, target.split('?').next().unwrap_or(target)))
}

/// The value of the first header `name` (lowercase), if the head has it.
fn header_value<'a>(head: &'a [u8], name: &str) -> Option<&'a str> {
    let text = std::str::from_utf8(head).ok()?;
    text.lines().skip(1).find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// Answer an error, then linger briefly: closing with unread request bytes sends a
/// reset that can wipe out the answer before the client reads it.
fn reject(mut stream: TcpStream, status: u16, extra: &str) {
    if write_response(&mut stream, &plain(status), false, extra).is_err() {
        return;
    }
    let _ = stream.shutdown(Shutdown::Write);
    let deadline = Instant::now() + LINGER;
    let mut sink = [0u8; 4096];
    let mut left = LINGER_BYTES;
    while left > 0 {
        let t = deadline.saturating_duration_since(Instant::now());
        if t.is_zero() || stream.set_read_timeout(Some(t)).is_err() {
            break;
        }
        match stream.read(&mut sink) {
            Ok(0) | Err(_) => break,
            Ok(n) => left = left.saturating_sub(n),
        }
    }
}

fn write_response(
    stream: &mut TcpStream,
    resp: &Response,
    head_only: bool,
    extra: &str,
) -> io::Result<()> {
    let mut out = format!(
        "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n{extra}\r\n",
        resp.status,
        reason(resp.status),
        resp.content_type,
        resp.body.len(),
    )
    .into_bytes();
    if !head_only {
        out.extend_from_slice(&resp.body);
    }
    // One buffer, one write_all: head and body in separate writes can stall on Nagle.
    stream.write_all(&out)?;
    stream.flush()
}

/// A short plain-text answer for the server's own errors.
fn plain(status: u16) -> Response {
    Response {
        status,
        content_type: TEXT,
        body: format!("{}\n", reason(status)).into_bytes(),
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        204 => "No Content",
        301 => "Moved Permanently",
        302 => "Found",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// ~100 KB, so the response takes more than one write on the socket.
    fn big_body() -> Vec<u8> {
        (0..100_000u32).map(|i| b'a' + (i % 26) as u8).collect()
    }

    fn metrics_handler() -> Handler {
        let body = big_body();
        Arc::new(move |path: &str, _accept: &str| match path {
            "/metrics" => Response {
                status: 200,
                content_type: "text/plain; version=0.0.4",
                body: body.clone(),
            },
            "/panic" => panic!("handler bug"),
            _ => plain(404),
        })
    }

    struct Running {
        addr: SocketAddr,
        stop: Arc<AtomicBool>,
        thread: Option<JoinHandle<()>>,
    }

    impl Drop for Running {
        fn drop(&mut self) {
            self.stop.store(true, Ordering::Relaxed);
            if let Some(t) = self.thread.take() {
                let _ = t.join();
            }
        }
    }

    fn start(timeout: Duration) -> Running {
        let server = Server::bind("127.0.0.1:0").unwrap().with_timeout(timeout);
        let addr = server.local_addr();
        let stop = Arc::new(AtomicBool::new(false));
        let thread = Some(server.spawn(metrics_handler(), stop.clone()));
        Running { addr, stop, thread }
    }

    fn connect(addr: SocketAddr) -> TcpStream {
        let s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.set_write_timeout(Some(Duration::from_secs(10))).unwrap();
        s
    }

    /// Send `raw`, read to EOF, split into (head, body).
    fn exchange(addr: SocketAddr, raw: &[u8]) -> (String, Vec<u8>) {
        let mut s = connect(addr);
        s.write_all(raw).unwrap();
        let mut out = Vec::new();
        s.read_to_end(&mut out).unwrap();
        split(&out)
    }

    fn split(out: &[u8]) -> (String, Vec<u8>) {
        let end = head_end(out).expect("response has a complete head");
        (
            String::from_utf8(out[..end].to_vec()).unwrap(),
            out[end..].to_vec(),
        )
    }

    fn status(head: &str) -> u16 {
        head.split(' ').nth(1).unwrap().parse().unwrap()
    }

    fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
        head.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }

    fn check_common(head: &str, body_len: usize) {
        assert!(header(head, "Content-Type").is_some(), "{head}");
        assert_eq!(header(head, "Connection"), Some("close"), "{head}");
        let len: usize = header(head, "Content-Length").unwrap().parse().unwrap();
        assert_eq!(len, body_len, "{head}");
    }

    #[test]
    fn get_metrics_returns_body() {
        let srv = start(IO_TIMEOUT);
        let (head, body) = exchange(srv.addr, b"GET /metrics?x=1 HTTP/1.1\r\nHost: a\r\n\r\n");
        assert_eq!(status(&head), 200, "{head}");
        assert_eq!(
            header(&head, "Content-Type"),
            Some("text/plain; version=0.0.4")
        );
        check_common(&head, body.len());
        assert_eq!(body, big_body());

        let (head, body) = exchange(srv.addr, b"GET /nope HTTP/1.0\n\n");
        assert_eq!(status(&head), 404, "{head}");
        check_common(&head, body.len());
    }

    #[test]
    fn head_has_no_body() {
        let srv = start(IO_TIMEOUT);
        let (head, body) = exchange(srv.addr, b"HEAD /metrics HTTP/1.1\r\n\r\n");
        assert_eq!(status(&head), 200, "{head}");
        assert!(body.is_empty());
        let len: usize = header(&head, "Content-Length").unwrap().parse().unwrap();
        assert_eq!(len, big_body().len());
    }

    #[test]
    fn post_gets_405() {
        let srv = start(IO_TIMEOUT);
        let req = b"POST /metrics HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello";
        let (head, body) = exchange(srv.addr, req);
        assert_eq!(status(&head), 405, "{head}");
        assert_eq!(header(&head, "Allow"), Some("GET, HEAD"));
        check_common(&head, body.len());
    }

    #[test]
    fn garbage_gets_400() {
        let srv = start(IO_TIMEOUT);
        for raw in [
            &b"hello\r\n\r\n"[..],
            b"GET metrics HTTP/1.1\r\n\r\n",
            b"GET /metrics HTTP/2.0\r\n\r\n",
            b"GET  /metrics HTTP/1.1\r\n\r\n",
            b"\xff\xfe /x HTTP/1.1\r\n\r\n",
        ] {
            let (head, body) = exchange(srv.addr, raw);
            assert_eq!(status(&head), 400, "{raw:?} -> {head}");
            check_common(&head, body.len());
        }
        // Half a request, then the client closes its side.
        let mut s = connect(srv.addr);
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost:").unwrap();
        s.shutdown(Shutdown::Write).unwrap();
        let mut out = Vec::new();
        s.read_to_end(&mut out).unwrap();
        assert_eq!(status(&split(&out).0), 400);
    }

    #[test]
    fn handler_panic_gets_500() {
        let srv = start(IO_TIMEOUT);
        let (head, _) = exchange(srv.addr, b"GET /panic HTTP/1.1\r\n\r\n");
        assert_eq!(status(&head), 500, "{head}");
        // The worker survived.
        let (head, _) = exchange(srv.addr, b"GET /metrics HTTP/1.1\r\n\r\n");
        assert_eq!(status(&head), 200, "{head}");
    }

    #[test]
    fn oversized_head_gets_431() {
        let srv = start(IO_TIMEOUT);
        let mut req = b"GET /metrics HTTP/1.1\r\nX-Big: ".to_vec();
        req.extend(std::iter::repeat_n(b'a', MAX_HEAD + 1000));
        req.extend_from_slice(b"\r\n\r\n");
        let (head, body) = exchange(srv.addr, &req);
        assert_eq!(status(&head), 431, "{head}");
        check_common(&head, body.len());
    }

    #[test]
    fn fifty_concurrent_clients_get_full_body() {
        let srv = start(IO_TIMEOUT);
        let addr = srv.addr;
        let clients: Vec<_> = (0..50)
            .map(|_| thread::spawn(move || exchange(addr, b"GET /metrics HTTP/1.1\r\n\r\n")))
            .collect();
        let want = big_body();
        for c in clients {
            let (head, body) = c.join().unwrap();
            assert_eq!(status(&head), 200, "{head}");
            check_common(&head, body.len());
            assert!(body == want, "body differs");
        }
    }

    #[test]
    fn idle_clients_do_not_block_others() {
        let timeout = Duration::from_millis(300);
        let srv = start(timeout);
        // Occupy every worker with a client that never sends anything.
        let idle: Vec<TcpStream> = (0..WORKERS).map(|_| connect(srv.addr)).collect();
        thread::sleep(Duration::from_millis(50));
        let t0 = Instant::now();
        let (head, body) = exchange(srv.addr, b"GET /metrics HTTP/1.1\r\n\r\n");
        assert_eq!(status(&head), 200, "{head}");
        assert_eq!(body.len(), big_body().len());
        assert!(t0.elapsed() < Duration::from_secs(3), "{:?}", t0.elapsed());
        // The idle ones were closed without an answer.
        for mut s in idle {
            let mut out = Vec::new();
            s.read_to_end(&mut out).unwrap();
            assert!(out.is_empty());
        }
    }

    #[test]
    fn slowloris_is_cut_off() {
        let srv = start(Duration::from_millis(300));
        let mut s = connect(srv.addr);
        s.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
        s.write_all(b"GET /metrics HTTP/1.1\r\n").unwrap();
        let t0 = Instant::now();
        // One header line every 50 ms never completes the head; the deadline must end it.
        loop {
            assert!(
                t0.elapsed() < Duration::from_secs(3),
                "server still reading"
            );
            if s.write_all(b"X: y\r\n").is_err() {
                break;
            }
            match s.read(&mut [0u8; 64]) {
                Ok(0) => break,
                Ok(_) => panic!("unexpected answer"),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == io::ErrorKind::TimedOut => {}
                Err(_) => break,
            }
        }
    }

    #[test]
    fn full_queue_gets_503() {
        let srv = start(Duration::from_secs(2));
        // Every worker blocked on a silent client, then the queue filled.
        let mut silent: Vec<TcpStream> = (0..WORKERS).map(|_| connect(srv.addr)).collect();
        thread::sleep(Duration::from_millis(200));
        silent.extend((0..QUEUE).map(|_| connect(srv.addr)));
        thread::sleep(Duration::from_millis(200));
        let (head, body) = exchange(srv.addr, b"GET /metrics HTTP/1.1\r\n\r\n");
        assert_eq!(status(&head), 503, "{head}");
        check_common(&head, body.len());
    }

    #[test]
    fn port_in_use_is_one_line() {
        let first = Server::bind("127.0.0.1:0").unwrap();
        let addr = first.local_addr().to_string();
        let err = Server::bind(&addr).err().expect("second bind must fail").0;
        assert!(
            err.starts_with(&format!("cannot listen on {addr}: ")),
            "{err}"
        );
        assert!(
            err.ends_with("(choose another address or port with --listen)"),
            "{err}"
        );
        assert!(!err.contains('\n'));
    }

    #[test]
    fn bad_address_is_one_line() {
        for bad in ["nonsense", "127.0.0.1", "127.0.0.1:99999", "", ":2112x"] {
            let err = Server::bind(bad).err().expect("must fail").0;
            assert_eq!(
                err,
                format!(
                    "invalid --listen address '{bad}': give IP:PORT such as 0.0.0.0:2112 or 127.0.0.1:9100"
                )
            );
        }
    }

    #[test]
    fn host_names_and_ipv6_parse() {
        assert!(Server::bind("localhost:0").is_ok());
        // IPv6 may be disabled here; it must at least parse.
        if let Err(e) = Server::bind("[::1]:0") {
            assert!(e.0.starts_with("cannot listen on [::1]:0"), "{e}");
        }
    }

    #[test]
    fn stop_ends_the_acceptor_quickly() {
        let server = Server::bind("127.0.0.1:0").unwrap();
        let addr = server.local_addr();
        let stop = Arc::new(AtomicBool::new(false));
        let thread = server.spawn(metrics_handler(), stop.clone());
        let (head, _) = exchange(addr, b"GET /metrics HTTP/1.1\r\n\r\n");
        assert_eq!(status(&head), 200);
        let t0 = Instant::now();
        stop.store(true, Ordering::Relaxed);
        while !thread.is_finished() {
            assert!(
                t0.elapsed() < Duration::from_secs(1),
                "acceptor still running"
            );
            thread::sleep(Duration::from_millis(10));
        }
        thread.join().unwrap();
    }
}

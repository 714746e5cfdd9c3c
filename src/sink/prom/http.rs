//! A small synchronous HTTP/1.x server for the Prometheus `/metrics` endpoint.
//!
//! One thread runs a poll(2) reactor over nonblocking sockets, so an idle, slow or hostile
//! client costs a descriptor and a few bytes, never a thread: each connection has a
//! deadline for its request head, heads are capped at 8 KiB, connections are capped (the
//! one waiting longest for its head makes room for a newcomer) and so is the response data
//! waiting for slow readers. Requests are answered in turn on that thread, which suits a
//! handler that renders in milliseconds. Connections are kept alive between requests.
//! What the server cuts off is counted in [`Stats`].

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::os::fd::AsRawFd;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crate::error::UserError;

/// Largest request head (request line + headers + blank line); more gets 431.
const MAX_HEAD: usize = 8 * 1024;
/// Default time a client has to send a request head, and to take each part of an answer.
const IO_TIMEOUT: Duration = Duration::from_secs(5);
/// How often the reactor looks at the stop flag.
const TURN: Duration = Duration::from_millis(100);
/// After an error answer, how long to read what the client still sends, and how much.
const LINGER: Duration = Duration::from_millis(500);
const LINGER_BYTES: usize = 64 * 1024;
/// Open connections at most (fewer when the descriptor limit is low).
const MAX_CONNECTIONS: usize = 4096;
/// Answer bytes waiting for slow readers, over all connections; beyond it requests get 503.
const MAX_OUTPUT: usize = 64 << 20;
/// Pending connections the kernel queues for us (capped by net.core.somaxconn).
const BACKLOG: libc::c_int = 4096;
/// Connections accepted per turn, so a flood of newcomers cannot starve those already in.
const ACCEPT_BURST: usize = 256;
/// Bytes read from a socket at once.
const CHUNK: usize = 4096;

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

/// Why the server closed a connection it did not (fully) serve.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dropped {
    /// No complete request head in time, or an answer not taken in time.
    Deadline,
    /// A request head over 8 KiB (answered 431).
    Oversized,
    /// Not an HTTP/1.x request, or a head cut short (answered 400).
    Garbage,
    /// At the connection cap: closed to make room for a newer one, or refused with 503.
    Cap,
    /// Too much answer data already waiting for slow readers (answered 503).
    Busy,
}

impl Dropped {
    pub const ALL: [Dropped; 5] = [
        Dropped::Deadline,
        Dropped::Oversized,
        Dropped::Garbage,
        Dropped::Cap,
        Dropped::Busy,
    ];

    /// The `reason` label.
    pub fn label(self) -> &'static str {
        match self {
            Dropped::Deadline => "deadline",
            Dropped::Oversized => "oversized",
            Dropped::Garbage => "garbage",
            Dropped::Cap => "cap",
            Dropped::Busy => "busy",
        }
    }
}

/// The server's own counters, shared with whoever exports them.
#[derive(Debug, Default)]
pub struct Stats {
    open: AtomicU64,
    dropped: [AtomicU64; Dropped::ALL.len()],
}

impl Stats {
    /// Connections open now.
    pub fn open(&self) -> u64 {
        self.open.load(Ordering::Relaxed)
    }

    /// Connections closed for `why` since the server started.
    pub fn dropped(&self, why: Dropped) -> u64 {
        self.dropped[why as usize].load(Ordering::Relaxed)
    }

    fn count(&self, why: Dropped) {
        self.dropped[why as usize].fetch_add(1, Ordering::Relaxed);
    }
}

/// A bound listener, not yet serving.
pub struct Server {
    listener: TcpListener,
    addr: SocketAddr,
    timeout: Duration,
    max_connections: usize,
    max_output: usize,
    stats: Arc<Stats>,
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
        listener.set_nonblocking(true).map_err(cannot)?;
        // std listens with a short backlog; listen again on the bound socket to lengthen it,
        // so a burst of connections waits in the kernel instead of being reset.
        // SAFETY: a valid listening socket; listen only changes its backlog.
        unsafe { libc::listen(listener.as_raw_fd(), BACKLOG) };
        let addr = listener.local_addr().map_err(cannot)?;
        Ok(Server {
            listener,
            addr,
            timeout: IO_TIMEOUT,
            max_connections: connection_cap(raise_nofile()),
            max_output: MAX_OUTPUT,
            stats: Arc::default(),
        })
    }

    /// Replace the 5 s head and write deadline (tests use a short one).
    pub fn with_timeout(mut self, timeout: Duration) -> Server {
        self.timeout = timeout;
        self
    }

    /// Replace the connection cap and the bound on waiting answer bytes (tests use small ones).
    pub fn with_limits(mut self, max_connections: usize, max_output: usize) -> Server {
        self.max_connections = max_connections.max(1);
        self.max_output = max_output;
        self
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The counters of what this server cuts off, live while it serves.
    pub fn stats(&self) -> Arc<Stats> {
        Arc::clone(&self.stats)
    }

    /// Serve until `stop` is set (checked at least every 100 ms); returns the server thread.
    pub fn spawn(self, handler: Handler, stop: Arc<AtomicBool>) -> JoinHandle<()> {
        thread::Builder::new()
            .name("http".into())
            .spawn(move || {
                Reactor {
                    server: self,
                    handler,
                    conns: Vec::new(),
                    accept_paused_until: None,
                }
                .run(&stop)
            })
            .expect("cannot start the HTTP server thread")
    }
}

/// Raise the soft descriptor limit to the hard one (idle clients each hold one); the
/// resulting soft limit.
fn raise_nofile() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid rlimit struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 1024;
        }
        if lim.rlim_cur < lim.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: lim.rlim_max,
                rlim_max: lim.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                lim = raised;
            }
        }
    }
    lim.rlim_cur
}

/// At most half the descriptors, so clients can never take those BPF maps and links need.
fn connection_cap(nofile: u64) -> usize {
    usize::try_from(nofile / 2)
        .unwrap_or(usize::MAX)
        .clamp(1, MAX_CONNECTIONS)
}

/// Where a request head stands after the bytes seen so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Progress {
    More,
    /// Complete: its length through the blank line.
    Done(usize),
    TooLarge,
    /// The request line is not `METHOD /target HTTP/1.x` (or cannot become one).
    Malformed,
}

/// Collects a request head from bytes as they arrive, split anywhere, in at most
/// MAX_HEAD bytes. Each byte is examined once, so a trickling client costs linear time.
#[derive(Debug, Default)]
struct HeadReader {
    buf: Vec<u8>,
    /// Bytes already examined.
    scanned: usize,
    /// The request line is complete and valid.
    line_ok: bool,
}

impl HeadReader {
    /// Bytes the caller may still read: nothing past the cap is ever stored.
    fn room(&self) -> usize {
        MAX_HEAD - self.buf.len()
    }

    fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// Take bytes (those beyond `room` are ignored) and say where the head stands.
    fn feed(&mut self, data: &[u8]) -> Progress {
        let data = &data[..data.len().min(self.room())];
        if !data.is_empty() {
            // Grow in powers of two up to the cap, never beyond it.
            let want = (self.buf.len() + data.len())
                .next_power_of_two()
                .min(MAX_HEAD);
            self.buf.reserve_exact(want - self.buf.len());
            self.buf.extend_from_slice(data);
        }
        self.progress()
    }

    fn progress(&mut self) -> Progress {
        let buf = &self.buf;
        if !self.line_ok {
            let new = &buf[self.scanned..];
            match new.iter().position(|&b| b == b'\n') {
                Some(i) => {
                    if request_line(&buf[..self.scanned + i]).is_none() {
                        return Progress::Malformed;
                    }
                    self.line_ok = true;
                }
                // Reject what can never become a request line at once (binary, TLS), not
                // after 8 KiB or 5 s.
                None if !new.iter().all(|&b| line_byte(b)) => return Progress::Malformed,
                None => {
                    self.scanned = buf.len();
                    return self.full_or_more();
                }
            }
        }
        // The blank line ends with a '\n' at most two bytes before anything new.
        let from = self.scanned.saturating_sub(2);
        if let Some(end) = blank_line_end(&buf[from..]) {
            return Progress::Done(from + end);
        }
        self.scanned = buf.len();
        self.full_or_more()
    }

    fn full_or_more(&self) -> Progress {
        if self.buf.len() == MAX_HEAD {
            Progress::TooLarge
        } else {
            Progress::More
        }
    }

    /// The head of `Done(end)`; what followed it stays for the next request.
    fn take_head(&mut self, end: usize) -> Vec<u8> {
        let rest = self.buf.split_off(end);
        self.scanned = 0;
        self.line_ok = false;
        std::mem::replace(&mut self.buf, rest)
    }
}

/// A byte a request line may hold (printable ASCII or space; '\r' before the '\n').
fn line_byte(b: u8) -> bool {
    b == b'\r' || (0x20..0x7f).contains(&b)
}

/// Just past the first empty line ("\n\n" or "\n\r\n"): bare LF line ends are accepted.
fn blank_line_end(s: &[u8]) -> Option<usize> {
    s.iter()
        .enumerate()
        .filter(|&(_, &b)| b == b'\n')
        .find_map(|(i, _)| match (s.get(i + 1), s.get(i + 2)) {
            (Some(b'\n'), _) => Some(i + 2),
            (Some(b'\r'), Some(b'\n')) => Some(i + 3),
            _ => None,
        })
}

/// The request line of a complete head.
struct RequestLine<'a> {
    method: &'a str,
    /// Without the query string.
    path: &'a str,
    version: &'a str,
}

/// `METHOD /target HTTP/1.x` (the line without its '\n'); None if malformed.
fn request_line(line: &[u8]) -> Option<RequestLine<'_>> {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    if !line.iter().all(|&b| (0x20..0x7f).contains(&b)) {
        return None;
    }
    let line = std::str::from_utf8(line).ok()?;
    let mut parts = line.split(' ');
    let (method, target, version) = (parts.next()?, parts.next()?, parts.next()?);
    let valid = parts.next().is_none()
        && !method.is_empty()
        && method.bytes().all(|b| b.is_ascii_alphabetic())
        && target.starts_with('/')
        && version.starts_with("HTTP/1.");
    valid.then(|| RequestLine {
        method,
        path: target.split('?').next().unwrap_or(target),
        version,
    })
}

/// The value of the first header `name` (any case), if the head has it in UTF-8.
fn header_value<'a>(head: &'a [u8], name: &str) -> Option<&'a str> {
    head.split(|&b| b == b'\n').skip(1).find_map(|line| {
        let colon = line.iter().position(|&b| b == b':')?;
        let key = std::str::from_utf8(&line[..colon]).ok()?;
        if !key.trim().eq_ignore_ascii_case(name) {
            return None;
        }
        std::str::from_utf8(&line[colon + 1..]).ok().map(str::trim)
    })
}

/// Whether the connection stays open after this request: HTTP/1.1 unless the client says
/// close, HTTP/1.0 only when it asks; never when a body follows (bodies are not read).
fn keep_alive(head: &[u8], version: &str) -> bool {
    let has = |token: &str| {
        header_value(head, "connection")
            .is_some_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
    };
    let body = header_value(head, "transfer-encoding").is_some()
        || header_value(head, "content-length").is_some_and(|v| v != "0");
    let wanted = if version == "HTTP/1.0" {
        has("keep-alive")
    } else {
        !has("close")
    };
    wanted && !body
}

/// The response bytes, head and body in one buffer: separate writes can stall on Nagle.
fn response_bytes(
    resp: &Response,
    head_only: bool,
    keep: Option<Duration>,
    extra: &str,
) -> Vec<u8> {
    let connection = match keep {
        Some(t) => format!("keep-alive\r\nKeep-Alive: timeout={}", t.as_secs().max(1)),
        None => "close".to_string(),
    };
    let mut out = format!(
        "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: {connection}\r\n{extra}\r\n",
        resp.status,
        reason(resp.status),
        resp.content_type,
        resp.body.len(),
    )
    .into_bytes();
    if !head_only {
        out.extend_from_slice(&resp.body);
    }
    out
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

/// Where a connection stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Waiting for (the rest of) a request head.
    Head,
    /// Sending `out`; then Drain if `close`, else Head for the next request.
    Write,
    /// Answered and shut down our side; reading what the client still sends, since closing
    /// with unread bytes sends a reset that can destroy the answer before it is read.
    Drain,
    Closed,
}

struct Conn {
    stream: TcpStream,
    phase: Phase,
    reader: HeadReader,
    out: Vec<u8>,
    sent: usize,
    close: bool,
    deadline: Instant,
    /// When it began waiting for its head: the longest waiting makes room at the cap.
    since: Instant,
    served: u64,
    /// Already counted in [`Stats`], so a later deadline does not count it twice.
    counted: bool,
    drain_left: usize,
}

/// What the connections share during a turn.
struct Ctx<'a> {
    handler: &'a Handler,
    stats: &'a Stats,
    timeout: Duration,
    max_output: usize,
    /// Answer bytes waiting in `out` over all connections.
    buffered: usize,
}

impl Conn {
    fn new(stream: TcpStream, now: Instant, timeout: Duration) -> Conn {
        Conn {
            stream,
            phase: Phase::Head,
            reader: HeadReader::default(),
            out: Vec::new(),
            sent: 0,
            close: false,
            deadline: now + timeout,
            since: now,
            served: 0,
            counted: false,
            drain_left: 0,
        }
    }

    fn pending(&self) -> usize {
        if self.phase == Phase::Write {
            self.out.len() - self.sent
        } else {
            0
        }
    }

    fn events(&self) -> libc::c_short {
        if self.phase == Phase::Write {
            libc::POLLOUT
        } else {
            libc::POLLIN
        }
    }

    /// The socket is ready (or failed) for what the phase waits on.
    fn ready(&mut self, ctx: &mut Ctx<'_>, now: Instant) {
        match self.phase {
            Phase::Head => self.read_head(ctx, now),
            Phase::Write => self.advance(ctx, now),
            Phase::Drain => self.drain(),
            Phase::Closed => {}
        }
    }

    fn read_head(&mut self, ctx: &mut Ctx<'_>, now: Instant) {
        let mut chunk = [0u8; CHUNK];
        let room = self.reader.room().min(CHUNK);
        if room == 0 {
            return self.advance(ctx, now);
        }
        match self.stream.read(&mut chunk[..room]) {
            // Gone between requests: nothing to answer.
            Ok(0) if self.reader.is_empty() => self.phase = Phase::Closed,
            Ok(0) => {
                self.reject(ctx, now, 400, "", Some(Dropped::Garbage));
                self.advance(ctx, now);
            }
            Ok(n) => {
                self.reader.feed(&chunk[..n]);
                self.advance(ctx, now);
            }
            Err(e) if retry(&e) => {}
            Err(_) => self.phase = Phase::Closed,
        }
    }

    /// Go through the phases as far as the socket allows without waiting (several
    /// requests may have arrived in one read).
    fn advance(&mut self, ctx: &mut Ctx<'_>, now: Instant) {
        loop {
            match self.phase {
                Phase::Head => match self.reader.progress() {
                    Progress::More => return,
                    Progress::Done(end) => {
                        let head = self.reader.take_head(end);
                        self.answer(&head, ctx, now);
                    }
                    Progress::TooLarge => self.reject(ctx, now, 431, "", Some(Dropped::Oversized)),
                    Progress::Malformed => self.reject(ctx, now, 400, "", Some(Dropped::Garbage)),
                },
                Phase::Write => {
                    if !self.flush(now, ctx.timeout) {
                        return;
                    }
                    self.out = Vec::new();
                    self.sent = 0;
                    if self.close {
                        let _ = self.stream.shutdown(Shutdown::Write);
                        self.phase = Phase::Drain;
                        self.deadline = now + LINGER;
                        self.drain_left = LINGER_BYTES;
                    } else {
                        self.phase = Phase::Head;
                        self.deadline = now + ctx.timeout;
                        self.since = now;
                    }
                }
                Phase::Drain | Phase::Closed => return,
            }
        }
    }

    fn answer(&mut self, head: &[u8], ctx: &mut Ctx<'_>, now: Instant) {
        let first = head.split(|&b| b == b'\n').next().unwrap_or(head);
        // The reader let only a valid request line through.
        let Some(line) = request_line(first) else {
            return self.reject(ctx, now, 400, "", Some(Dropped::Garbage));
        };
        if line.method != "GET" && line.method != "HEAD" {
            return self.reject(ctx, now, 405, "Allow: GET, HEAD\r\n", None);
        }
        if ctx.buffered >= ctx.max_output {
            return self.reject(ctx, now, 503, "Retry-After: 1\r\n", Some(Dropped::Busy));
        }
        let keep = keep_alive(head, line.version).then_some(ctx.timeout);
        let accept = header_value(head, "accept").unwrap_or("");
        // A panicking handler answers 500 instead of taking the server down.
        let resp = catch_unwind(AssertUnwindSafe(|| (ctx.handler)(line.path, accept)))
            .unwrap_or_else(|_| plain(500));
        self.served += 1;
        let out = response_bytes(&resp, line.method == "HEAD", keep, "");
        self.start(out, keep.is_none(), now, ctx.timeout);
    }

    /// Answer an error and close.
    fn reject(
        &mut self,
        ctx: &mut Ctx<'_>,
        now: Instant,
        status: u16,
        extra: &str,
        why: Option<Dropped>,
    ) {
        if let Some(why) = why {
            ctx.stats.count(why);
            self.counted = true;
        }
        self.reader = HeadReader::default();
        let out = response_bytes(&plain(status), false, None, extra);
        self.start(out, true, now, ctx.timeout);
    }

    fn start(&mut self, out: Vec<u8>, close: bool, now: Instant, timeout: Duration) {
        self.out = out;
        self.sent = 0;
        self.close = close;
        self.phase = Phase::Write;
        self.deadline = now + timeout;
    }

    /// Write what the socket takes; true once everything is sent. Each bit of progress
    /// renews the deadline, so only a reader that stalls is cut off.
    fn flush(&mut self, now: Instant, timeout: Duration) -> bool {
        while self.sent < self.out.len() {
            match self.stream.write(&self.out[self.sent..]) {
                Ok(0) => break,
                Ok(n) => {
                    self.sent += n;
                    self.deadline = now + timeout;
                }
                Err(e) if retry(&e) => return false,
                Err(_) => break,
            }
        }
        if self.sent < self.out.len() {
            self.phase = Phase::Closed;
            return false;
        }
        true
    }

    fn drain(&mut self) {
        let mut sink = [0u8; CHUNK];
        match self.stream.read(&mut sink) {
            Ok(n) if n > 0 && n < self.drain_left => self.drain_left -= n,
            Err(e) if retry(&e) => {}
            _ => self.phase = Phase::Closed,
        }
    }

    /// Close at the deadline; count it unless this is a kept-alive connection idle
    /// between requests (normal) or an error answer already counted.
    fn expire(&mut self, now: Instant, stats: &Stats) {
        if self.phase == Phase::Closed || now < self.deadline {
            return;
        }
        let cut_off = match self.phase {
            Phase::Head => self.served == 0 || !self.reader.is_empty(),
            Phase::Write => true,
            Phase::Drain | Phase::Closed => false,
        };
        if cut_off && !self.counted {
            stats.count(Dropped::Deadline);
        }
        self.phase = Phase::Closed;
    }
}

/// Not an error: try again when poll says so.
fn retry(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
    )
}

struct Reactor {
    server: Server,
    handler: Handler,
    conns: Vec<Conn>,
    /// Out of descriptors and nobody to evict: stop polling the listener briefly.
    accept_paused_until: Option<Instant>,
}

impl Reactor {
    fn run(mut self, stop: &AtomicBool) {
        let timeout = self.server.timeout;
        let mut pfds: Vec<libc::pollfd> = Vec::new();
        while !stop.load(Ordering::Relaxed) {
            let now = Instant::now();
            let listening = self.accept_paused_until.is_none_or(|t| now >= t);
            pfds.clear();
            pfds.push(libc::pollfd {
                // A negative fd is skipped by poll.
                fd: if listening {
                    self.server.listener.as_raw_fd()
                } else {
                    -1
                },
                events: libc::POLLIN,
                revents: 0,
            });
            pfds.extend(self.conns.iter().map(|c| libc::pollfd {
                fd: c.stream.as_raw_fd(),
                events: c.events(),
                revents: 0,
            }));
            let mut wait = self
                .conns
                .iter()
                .map(|c| c.deadline.saturating_duration_since(now))
                .fold(TURN, Duration::min);
            if let Some(t) = self.accept_paused_until {
                wait = wait.min(t.saturating_duration_since(now));
            }
            // Round up, so a deadline 0.3 ms away does not spin through zero-length polls.
            let ms = wait.as_micros().div_ceil(1000) as libc::c_int;
            // SAFETY: pfds is a valid array of pfds.len() pollfds for the whole call.
            unsafe { libc::poll(pfds.as_mut_ptr(), pfds.len() as libc::nfds_t, ms) };

            let now = Instant::now();
            let mut ctx = Ctx {
                handler: &self.handler,
                stats: &self.server.stats,
                timeout,
                max_output: self.server.max_output,
                buffered: self.conns.iter().map(Conn::pending).sum(),
            };
            for (c, p) in self.conns.iter_mut().zip(&pfds[1..]) {
                if p.revents != 0 {
                    let before = c.pending();
                    c.ready(&mut ctx, now);
                    ctx.buffered = ctx.buffered - before + c.pending();
                }
            }
            for c in &mut self.conns {
                c.expire(now, &self.server.stats);
            }
            self.conns.retain(|c| c.phase != Phase::Closed);
            if pfds[0].revents != 0 {
                self.accept(now);
            }
            self.server
                .stats
                .open
                .store(self.conns.len() as u64, Ordering::Relaxed);
        }
    }

    fn accept(&mut self, now: Instant) {
        self.accept_paused_until = None;
        for _ in 0..ACCEPT_BURST {
            match self.server.listener.accept() {
                Ok((stream, _)) => {
                    if stream.set_nonblocking(true).is_err() {
                        continue;
                    }
                    if self.conns.len() >= self.server.max_connections && !self.evict() {
                        self.server.stats.count(Dropped::Cap);
                        refuse(stream);
                        continue;
                    }
                    self.conns.push(Conn::new(stream, now, self.server.timeout));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::ConnectionAborted => {}
                // Out of descriptors (EMFILE/ENFILE): the connection stays pending. Free
                // one held by an idle client, else listen again shortly instead of spinning.
                Err(_) => {
                    if !self.evict() {
                        self.accept_paused_until = Some(now + Duration::from_millis(10));
                        return;
                    }
                }
            }
        }
    }

    /// Close the connection waiting longest for its head; false if none is waiting.
    fn evict(&mut self) -> bool {
        let oldest = self
            .conns
            .iter()
            .enumerate()
            .filter(|(_, c)| c.phase == Phase::Head)
            .min_by_key(|(_, c)| c.since)
            .map(|(i, _)| i);
        match oldest {
            Some(i) => {
                self.conns.swap_remove(i);
                self.server.stats.count(Dropped::Cap);
                true
            }
            None => false,
        }
    }
}

/// At the cap with every connection busy: answer 503 at once, without ever blocking.
fn refuse(mut stream: TcpStream) {
    // A fresh socket's send buffer takes this short answer in one nonblocking write.
    let out = response_bytes(&plain(503), false, None, "Retry-After: 1\r\n");
    let _ = stream.write_all(&out);
    let _ = stream.shutdown(Shutdown::Write);
    // Take what already arrived: closing with unread data sends a reset, which can
    // destroy the answer before the client reads it.
    let _ = stream.read(&mut [0u8; CHUNK]);
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// ~100 KB, so the response takes more than one write on the socket.
    fn big_body() -> Vec<u8> {
        (0..100_000u32).map(|i| b'a' + (i % 26) as u8).collect()
    }

    /// /huge is 32 MiB: more than loopback buffers hold, so a client that does not read
    /// keeps it waiting in the server.
    const HUGE: usize = 32 << 20;

    fn metrics_handler() -> Handler {
        let body = big_body();
        Arc::new(move |path: &str, _accept: &str| match path {
            "/metrics" => Response {
                status: 200,
                content_type: "text/plain; version=0.0.4",
                body: body.clone(),
            },
            "/huge" => Response {
                status: 200,
                content_type: TEXT,
                body: vec![b'x'; HUGE],
            },
            "/panic" => panic!("handler bug"),
            _ => plain(404),
        })
    }

    struct Running {
        addr: SocketAddr,
        stats: Arc<Stats>,
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

    fn start_server(server: Server) -> Running {
        let addr = server.local_addr();
        let stats = server.stats();
        let stop = Arc::new(AtomicBool::new(false));
        let thread = Some(server.spawn(metrics_handler(), stop.clone()));
        Running {
            addr,
            stats,
            stop,
            thread,
        }
    }

    fn start(timeout: Duration) -> Running {
        start_server(Server::bind("127.0.0.1:0").unwrap().with_timeout(timeout))
    }

    fn connect(addr: SocketAddr) -> TcpStream {
        let s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.set_write_timeout(Some(Duration::from_secs(10))).unwrap();
        s
    }

    /// Read one response: its head, and a body of its Content-Length.
    fn read_response(s: &mut TcpStream) -> (String, Vec<u8>) {
        let mut raw = Vec::new();
        let mut byte = [0u8; 1];
        while blank_line_end(&raw).is_none() {
            assert_eq!(s.read(&mut byte).unwrap(), 1, "EOF inside a response head");
            raw.push(byte[0]);
        }
        let head = String::from_utf8(raw).unwrap();
        let len: usize = header(&head, "Content-Length").unwrap().parse().unwrap();
        let mut body = vec![0u8; len];
        s.read_exact(&mut body).unwrap();
        (head, body)
    }

    /// Send `raw`, read one response (the body by Content-Length).
    fn exchange(addr: SocketAddr, raw: &[u8]) -> (String, Vec<u8>) {
        let mut s = connect(addr);
        s.write_all(raw).unwrap();
        read_response(&mut s)
    }

    /// Nothing more comes: the server closed the connection.
    fn closed(s: &mut TcpStream) -> bool {
        matches!(s.read(&mut [0u8; 64]), Ok(0) | Err(_))
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

    fn check_common(head: &str, body_len: usize, connection: &str) {
        assert!(header(head, "Content-Type").is_some(), "{head}");
        assert_eq!(header(head, "Connection"), Some(connection), "{head}");
        let len: usize = header(head, "Content-Length").unwrap().parse().unwrap();
        assert_eq!(len, body_len, "{head}");
    }

    fn dropped(srv: &Running) -> [u64; 5] {
        Dropped::ALL.map(|d| srv.stats.dropped(d))
    }

    /// Wait (bounded) until the server's counters reach `want`.
    fn wait_dropped(srv: &Running, want: [u64; 5]) {
        let t0 = Instant::now();
        while dropped(srv) != want && t0.elapsed() < Duration::from_secs(5) {
            thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(
            dropped(srv),
            want,
            "deadline, oversized, garbage, cap, busy"
        );
    }

    #[test]
    fn get_metrics_keeps_the_connection_alive() {
        let srv = start(IO_TIMEOUT);
        let mut s = connect(srv.addr);
        s.write_all(b"GET /metrics?x=1 HTTP/1.1\r\nHost: a\r\n\r\n")
            .unwrap();
        let (head, body) = read_response(&mut s);
        assert_eq!(status(&head), 200, "{head}");
        assert_eq!(
            header(&head, "Content-Type"),
            Some("text/plain; version=0.0.4")
        );
        check_common(&head, body.len(), "keep-alive");
        assert_eq!(body, big_body());
        // Same connection, HTTP/1.0 without keep-alive: answered, then closed.
        s.write_all(b"GET /nope HTTP/1.0\n\n").unwrap();
        let (head, body) = read_response(&mut s);
        assert_eq!(status(&head), 404, "{head}");
        check_common(&head, body.len(), "close");
        assert!(closed(&mut s));
        wait_dropped(&srv, [0; 5]);
    }

    #[test]
    fn pipelined_requests_are_answered_in_order() {
        let srv = start(IO_TIMEOUT);
        let mut s = connect(srv.addr);
        s.write_all(
            b"GET /a HTTP/1.1\r\n\r\nHEAD /metrics HTTP/1.1\r\n\r\nGET /metrics HTTP/1.1\r\nConnection: close\r\n\r\n",
        )
        .unwrap();
        let (head, _) = read_response(&mut s);
        assert_eq!(status(&head), 404, "{head}");
        let (head, body) = {
            // HEAD: the length of the body it would have, but no body.
            let mut raw = Vec::new();
            let mut byte = [0u8; 1];
            while blank_line_end(&raw).is_none() {
                s.read_exact(&mut byte).unwrap();
                raw.push(byte[0]);
            }
            (String::from_utf8(raw).unwrap(), Vec::<u8>::new())
        };
        assert_eq!(status(&head), 200, "{head}");
        assert!(body.is_empty());
        let len: usize = header(&head, "Content-Length").unwrap().parse().unwrap();
        assert_eq!(len, big_body().len());
        let (head, body) = read_response(&mut s);
        assert_eq!(status(&head), 200, "{head}");
        check_common(&head, body.len(), "close");
        assert_eq!(body, big_body());
        assert!(closed(&mut s));
    }

    #[test]
    fn post_gets_405_and_close() {
        let srv = start(IO_TIMEOUT);
        let req = b"POST /metrics HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello";
        let (head, body) = exchange(srv.addr, req);
        assert_eq!(status(&head), 405, "{head}");
        assert_eq!(header(&head, "Allow"), Some("GET, HEAD"));
        check_common(&head, body.len(), "close");
        // A method the server does not serve is no attack.
        wait_dropped(&srv, [0; 5]);
    }

    #[test]
    fn garbage_gets_400_and_is_counted() {
        let srv = start(IO_TIMEOUT);
        let garbage: [&[u8]; 7] = [
            b"hello\r\n\r\n",
            b"GET metrics HTTP/1.1\r\n\r\n",
            b"GET /metrics HTTP/2.0\r\n\r\n",
            b"GET  /metrics HTTP/1.1\r\n\r\n",
            b"\xff\xfe /x HTTP/1.1\r\n\r\n",
            // A TLS ClientHello: refused at its first byte, without waiting for a line end.
            b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
            b"\r\n\r\n",
        ];
        for raw in garbage {
            let mut s = connect(srv.addr);
            s.write_all(raw).unwrap();
            let (head, body) = read_response(&mut s);
            assert_eq!(status(&head), 400, "{raw:?} -> {head}");
            check_common(&head, body.len(), "close");
            assert!(closed(&mut s));
        }
        // Half a request, then the client closes its side.
        let mut s = connect(srv.addr);
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost:").unwrap();
        s.shutdown(Shutdown::Write).unwrap();
        assert_eq!(status(&read_response(&mut s).0), 400);
        wait_dropped(&srv, [0, 0, 8, 0, 0]);
    }

    #[test]
    fn handler_panic_gets_500() {
        let srv = start(IO_TIMEOUT);
        let (head, _) = exchange(srv.addr, b"GET /panic HTTP/1.1\r\n\r\n");
        assert_eq!(status(&head), 500, "{head}");
        // The server survived.
        let (head, _) = exchange(srv.addr, b"GET /metrics HTTP/1.1\r\n\r\n");
        assert_eq!(status(&head), 200, "{head}");
    }

    #[test]
    fn oversized_head_gets_431_and_is_counted() {
        let srv = start(IO_TIMEOUT);
        let mut req = b"GET /metrics HTTP/1.1\r\nX-Big: ".to_vec();
        req.extend(std::iter::repeat_n(b'a', MAX_HEAD + 1000));
        req.extend_from_slice(b"\r\n\r\n");
        let (head, body) = exchange(srv.addr, &req);
        assert_eq!(status(&head), 431, "{head}");
        check_common(&head, body.len(), "close");
        // Exactly at the cap is still fine.
        let mut req = b"GET /metrics HTTP/1.1\r\nX-Big: ".to_vec();
        req.extend(std::iter::repeat_n(b'a', MAX_HEAD - req.len() - 4));
        req.extend_from_slice(b"\r\n\r\n");
        assert_eq!(req.len(), MAX_HEAD);
        let (head, _) = exchange(srv.addr, &req);
        assert_eq!(status(&head), 200, "{head}");
        wait_dropped(&srv, [0, 1, 0, 0, 0]);
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
            check_common(&head, body.len(), "keep-alive");
            assert!(body == want, "body differs");
        }
    }

    #[test]
    fn idle_clients_do_not_block_others_and_are_cut_off() {
        let timeout = Duration::from_millis(500);
        let srv = start(timeout);
        // Far more silent clients than the old server had workers and queue slots.
        let mut idle: Vec<TcpStream> = (0..300).map(|_| connect(srv.addr)).collect();
        thread::sleep(Duration::from_millis(50));
        let t0 = Instant::now();
        let (head, body) = exchange(srv.addr, b"GET /metrics HTTP/1.1\r\n\r\n");
        assert_eq!(status(&head), 200, "{head}");
        assert_eq!(body.len(), big_body().len());
        assert!(
            t0.elapsed() < Duration::from_millis(400),
            "{:?}",
            t0.elapsed()
        );
        // The idle ones were closed without an answer.
        for s in &mut idle {
            let mut out = Vec::new();
            s.read_to_end(&mut out).unwrap();
            assert!(out.is_empty());
        }
        // The scrape's own connection, idle after its answer, is not counted.
        thread::sleep(timeout);
        wait_dropped(&srv, [300, 0, 0, 0, 0]);
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
        assert!(t0.elapsed() >= Duration::from_millis(250));
        wait_dropped(&srv, [1, 0, 0, 0, 0]);
    }

    #[test]
    fn at_the_cap_the_longest_idle_makes_room() {
        let srv = start_server(
            Server::bind("127.0.0.1:0")
                .unwrap()
                .with_limits(4, MAX_OUTPUT),
        );
        let mut idle = Vec::new();
        for _ in 0..4 {
            idle.push(connect(srv.addr));
            // Distinct arrival times, so "longest waiting" is the first.
            thread::sleep(Duration::from_millis(20));
        }
        let (head, _) = exchange(srv.addr, b"GET /metrics HTTP/1.0\r\n\r\n");
        assert_eq!(status(&head), 200, "{head}");
        assert!(closed(&mut idle[0]), "the oldest idle client was closed");
        idle[1]
            .set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        assert!(
            matches!(idle[1].read(&mut [0u8; 1]), Err(ref e) if e.kind() == io::ErrorKind::WouldBlock),
            "the next one is still open"
        );
        wait_dropped(&srv, [0, 0, 0, 1, 0]);
    }

    /// Ask for /huge and never read: the answer stays in the server.
    fn stuck_reader(addr: SocketAddr) -> TcpStream {
        let mut s = connect(addr);
        s.write_all(b"GET /huge HTTP/1.1\r\n\r\n").unwrap();
        s
    }

    #[test]
    fn at_the_cap_with_nobody_idle_newcomers_get_503() {
        let srv = start_server(
            Server::bind("127.0.0.1:0")
                .unwrap()
                .with_limits(2, 4 * HUGE),
        );
        let _a = stuck_reader(srv.addr);
        let _b = stuck_reader(srv.addr);
        thread::sleep(Duration::from_millis(300));
        let (head, body) = exchange(srv.addr, b"GET /metrics HTTP/1.1\r\n\r\n");
        assert_eq!(status(&head), 503, "{head}");
        assert_eq!(header(&head, "Retry-After"), Some("1"));
        check_common(&head, body.len(), "close");
        wait_dropped(&srv, [0, 0, 0, 1, 0]);
    }

    #[test]
    fn too_much_waiting_output_gets_503_busy() {
        let srv = start_server(
            Server::bind("127.0.0.1:0")
                .unwrap()
                .with_limits(16, HUGE / 2),
        );
        let _a = stuck_reader(srv.addr);
        thread::sleep(Duration::from_millis(300));
        let (head, _) = exchange(srv.addr, b"GET /metrics HTTP/1.1\r\n\r\n");
        assert_eq!(status(&head), 503, "{head}");
        wait_dropped(&srv, [0, 0, 0, 0, 1]);
    }

    #[test]
    fn a_reader_that_stalls_is_cut_off() {
        let srv = start(Duration::from_millis(300));
        let mut s = stuck_reader(srv.addr);
        thread::sleep(Duration::from_millis(800));
        wait_dropped(&srv, [1, 0, 0, 0, 0]);
        // What the socket had taken arrives, then the end: never the whole body.
        let mut got = 0;
        let mut buf = vec![0u8; 1 << 20];
        loop {
            match s.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => got += n,
            }
        }
        assert!(got < HUGE, "{got}");
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
    fn stop_ends_the_server_quickly() {
        let server = Server::bind("127.0.0.1:0").unwrap();
        let addr = server.local_addr();
        let stop = Arc::new(AtomicBool::new(false));
        let thread = server.spawn(metrics_handler(), stop.clone());
        let (head, _) = exchange(addr, b"GET /metrics HTTP/1.1\r\n\r\n");
        assert_eq!(status(&head), 200);
        let _idle = connect(addr);
        let t0 = Instant::now();
        stop.store(true, Ordering::Relaxed);
        while !thread.is_finished() {
            assert!(
                t0.elapsed() < Duration::from_secs(1),
                "server still running"
            );
            thread::sleep(Duration::from_millis(10));
        }
        thread.join().unwrap();
    }

    #[test]
    fn connection_cap_leaves_half_the_descriptors() {
        assert_eq!(connection_cap(0), 1);
        assert_eq!(connection_cap(1024), 512);
        assert_eq!(connection_cap(20_000), MAX_CONNECTIONS);
        assert_eq!(connection_cap(u64::MAX), MAX_CONNECTIONS);
    }

    #[test]
    fn keep_alive_follows_version_and_connection_header() {
        let ka = |head: &str, v| keep_alive(head.as_bytes(), v);
        assert!(ka("GET / HTTP/1.1\r\n\r\n", "HTTP/1.1"));
        assert!(!ka(
            "GET / HTTP/1.1\r\nConnection: Close\r\n\r\n",
            "HTTP/1.1"
        ));
        assert!(!ka(
            "GET / HTTP/1.1\r\nconnection: foo, close\r\n\r\n",
            "HTTP/1.1"
        ));
        assert!(!ka("GET / HTTP/1.0\r\n\r\n", "HTTP/1.0"));
        assert!(ka(
            "GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
            "HTTP/1.0"
        ));
        // A body would have to be read past: close after answering instead.
        assert!(!ka(
            "GET / HTTP/1.1\r\nContent-Length: 3\r\n\r\n",
            "HTTP/1.1"
        ));
        assert!(ka(
            "GET / HTTP/1.1\r\nContent-Length: 0\r\n\r\n",
            "HTTP/1.1"
        ));
        assert!(!ka(
            "GET / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
            "HTTP/1.1"
        ));
    }

    #[test]
    fn request_line_and_headers_parse() {
        let l = request_line(b"GET /metrics?a=b HTTP/1.1\r").unwrap();
        assert_eq!(
            (l.method, l.path, l.version),
            ("GET", "/metrics", "HTTP/1.1")
        );
        for bad in [
            &b""[..],
            b"GET",
            b"GET /",
            b"GET / HTTP/1.1 x",
            b"G1T / HTTP/1.1",
            b"GET /a\rb HTTP/1.1",
            b"GET /\xc3\xa9 HTTP/1.1",
            b"GET / HTTP/1.1\r\r",
        ] {
            assert!(request_line(bad).is_none(), "{bad:?}");
        }
        let head = b"GET / HTTP/1.1\r\nAccept : text/plain \r\nX: \xff\r\nACCEPT: other\r\n\r\n";
        assert_eq!(header_value(head, "accept"), Some("text/plain"));
        assert_eq!(header_value(head, "x"), None);
        assert_eq!(header_value(head, "host"), None);
    }

    fn feed_all(chunks: &[&[u8]]) -> (Progress, HeadReader) {
        let mut r = HeadReader::default();
        let mut p = r.progress();
        for c in chunks {
            p = r.feed(c);
            if p != Progress::More {
                break;
            }
        }
        (p, r)
    }

    #[test]
    fn head_reader_finds_the_end_in_any_split() {
        let req = b"GET / HTTP/1.1\r\nHost: a\r\n\r\nGET /next";
        let end = req.len() - 9;
        for i in 0..req.len() {
            for j in i..req.len() {
                let (p, mut r) = feed_all(&[&req[..i], &req[i..j], &req[j..]]);
                assert_eq!(p, Progress::Done(end), "split {i} {j}");
                assert_eq!(r.take_head(end), &req[..end]);
                assert_eq!(r.progress(), Progress::More);
            }
        }
        assert_eq!(feed_all(&[b"GET / HTTP/1.0\n\n"]).0, Progress::Done(16));
        assert_eq!(
            feed_all(&[b"GET / HTTP/1.0\nA: b\n\r\n"]).0,
            Progress::Done(22)
        );
        assert_eq!(feed_all(&[b"GET / HTTP/1.0\r\n"]).0, Progress::More);
    }

    #[test]
    fn head_reader_refuses_early_and_caps() {
        assert_eq!(feed_all(&[b"\x16\x03"]).0, Progress::Malformed);
        assert_eq!(feed_all(&[b"GET /", b"\x00"]).0, Progress::Malformed);
        assert_eq!(feed_all(&[b"hello\n"]).0, Progress::Malformed);
        assert_eq!(feed_all(&[b"\n"]).0, Progress::Malformed);
        // A request line that never ends is too large at the cap, not before.
        let long = vec![b'a'; MAX_HEAD + 10];
        let (p, r) = feed_all(&[&long[..MAX_HEAD - 1]]);
        assert_eq!(p, Progress::More);
        assert_eq!(r.room(), 1);
        assert_eq!(feed_all(&[&long]).0, Progress::TooLarge);
    }

    /// The same answer computed at once on everything, the simplest way.
    fn reference(all: &[u8]) -> Progress {
        let p = &all[..all.len().min(MAX_HEAD)];
        match p.iter().position(|&b| b == b'\n') {
            Some(nl) if request_line(&p[..nl]).is_none() => return Progress::Malformed,
            None if !p.iter().all(|&b| line_byte(b)) => return Progress::Malformed,
            _ => {}
        }
        for i in 0..p.len() {
            if p[i..].starts_with(b"\n\n") {
                return Progress::Done(i + 2);
            }
            if p[i..].starts_with(b"\n\r\n") {
                return Progress::Done(i + 3);
            }
        }
        if p.len() == MAX_HEAD {
            Progress::TooLarge
        } else {
            Progress::More
        }
    }

    /// Pieces that make heads likely (and long runs, to reach the cap cheaply).
    fn piece() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            Just(b"GET /metrics HTTP/1.1".to_vec()),
            Just(b"\r\n".to_vec()),
            Just(b"\n".to_vec()),
            Just(b"\r".to_vec()),
            Just(b"Accept: text/plain".to_vec()),
            Just(b"Connection: close".to_vec()),
            Just(b" ".to_vec()),
            prop::collection::vec(any::<u8>(), 0..16),
            (any::<u8>(), 0..10_000usize).prop_map(|(b, n)| vec![b; n]),
        ]
    }

    proptest! {
        /// Arbitrary bytes split anywhere: never a panic, never more than MAX_HEAD held,
        /// and the same answer as all the bytes at once, whatever the split.
        #[test]
        fn fuzz_head_reader(
            pieces in prop::collection::vec(piece(), 0..12),
            cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..8),
        ) {
            let all: Vec<u8> = pieces.concat();
            let mut at: Vec<usize> = cuts.iter().map(|c| c.index(all.len() + 1)).collect();
            at.extend([0, all.len()]);
            at.sort_unstable();
            let mut r = HeadReader::default();
            let mut p = Progress::More;
            for w in at.windows(2) {
                // As the server reads: never more than the room left.
                let chunk = &all[w[0]..w[1]];
                let mut off = 0;
                while p == Progress::More && off < chunk.len() {
                    let n = r.room().min(chunk.len() - off);
                    p = r.feed(&chunk[off..off + n]);
                    off += n;
                }
                prop_assert!(r.buf.len() <= MAX_HEAD && r.buf.capacity() <= MAX_HEAD);
            }
            prop_assert_eq!(p, reference(&all));
            if let Progress::Done(end) = p {
                let head = r.take_head(end);
                prop_assert_eq!(&head[..], &all[..end]);
                let first = head.split(|&b| b == b'\n').next().unwrap();
                prop_assert!(request_line(first).is_some());
                let _ = keep_alive(&head, "HTTP/1.1");
                let _ = header_value(&head, "accept");
                // What followed is the start of the next request.
                let next = r.progress();
                prop_assert_eq!(next, reference(&all[end..end + r.buf.len()]));
            }
        }
    }
}

//! `nsl-load`: a small, bounded traffic generator for netstack-lat's privileged
//! integration tests and benchmarks (usually run via `ip netns exec NS nsl-load ...`).
//!
//! Receivers print `READY` once their socket is bound/listening so a test can start
//! the sender without racing; every mode prints one JSON line on success.
//! Every mode is bounded by a count and by `--timeout` (default 30 s).
//!
//! Exit codes: 0 success, 2 any error (bad arguments, socket failures), 3 timeout.

use std::io::{self, ErrorKind, Read, Write};
use std::net::{Ipv4Addr, Ipv6Addr, Shutdown, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::AsRawFd;
use std::process::ExitCode;
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use clap::{Parser, Subcommand};
use netstack_lat::traffic::loopback::wait_readable;
use serde_json::json;

mod shapes;
mod soak;

const EXIT_ERROR: u8 = 2;
const EXIT_TIMEOUT: i32 = 3;

/// Largest UDP payload for each address family (65535 minus IP and UDP headers).
const MAX_UDP4_PAYLOAD: usize = 65_507;
const MAX_UDP6_PAYLOAD: usize = 65_527;
/// Cap on TCP message sizes so a typo cannot allocate gigabytes.
const MAX_TCP_MSG: usize = 16 << 20;

/// Largest HTTP request/response head the SSE modes accept.
const MAX_HEAD: usize = 8 << 10;
const HEAD_END: &[u8] = b"\r\n\r\n";
const EVENT_END: &[u8] = b"\n\n";
const SSE_REQUEST: &[u8] =
    b"GET /events HTTP/1.1\r\nHost: relay\r\nAccept: text/event-stream\r\n\r\n";
const SSE_RESPONSE: &[u8] =
    b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n\r\n";

#[derive(Parser)]
#[command(
    name = "nsl-load",
    version,
    about = "Bounded traffic generator for netstack-lat tests"
)]
struct Cli {
    /// Give up after this many seconds (fractions allowed) and exit with code 3.
    #[arg(long, global = true, value_name = "SECS", default_value = "30", value_parser = parse_secs)]
    timeout: Duration,

    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Receive COUNT UDP datagrams, sleeping DELAY ms after each one is queued.
    UdpRecv {
        #[arg(long, value_name = "ADDR")]
        bind: SocketAddr,
        #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
        count: u64,
        #[arg(long = "delay-ms", value_name = "MS", default_value_t = 0)]
        delay_ms: u64,
    },
    /// Accept one TCP connection and read COUNT messages of MSG_SIZE bytes.
    TcpRecv {
        #[arg(long, value_name = "ADDR")]
        bind: SocketAddr,
        #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
        count: u64,
        #[arg(long = "delay-ms", value_name = "MS", default_value_t = 0)]
        delay_ms: u64,
        #[arg(long = "msg-size", value_name = "BYTES", default_value_t = 64)]
        msg_size: usize,
    },
    /// Send COUNT UDP datagrams of SIZE bytes.
    UdpSend {
        #[arg(long, value_name = "ADDR")]
        to: SocketAddr,
        #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
        count: u64,
        #[arg(long = "interval-ms", value_name = "MS", default_value_t = 0)]
        interval_ms: u64,
        #[arg(long, value_name = "BYTES", default_value_t = 64)]
        size: usize,
        /// Local address to send from (default: any address, ephemeral port).
        #[arg(long, value_name = "ADDR")]
        bind: Option<SocketAddr>,
    },
    /// Connect over TCP and send COUNT messages of SIZE bytes.
    TcpSend {
        #[arg(long, value_name = "ADDR")]
        to: SocketAddr,
        #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
        count: u64,
        #[arg(long = "interval-ms", value_name = "MS", default_value_t = 0)]
        interval_ms: u64,
        #[arg(long, value_name = "BYTES", default_value_t = 64)]
        size: usize,
        /// Leave Nagle's algorithm on (no TCP_NODELAY)
        #[arg(long)]
        nagle: bool,
    },
    /// Serve ROUNDS requests on one TCP connection: read 2 x SIZE bytes, answer REPLY bytes.
    TcpRrServer {
        #[arg(long, value_name = "ADDR")]
        bind: SocketAddr,
        #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
        rounds: u64,
        #[arg(long, value_name = "BYTES", default_value_t = 100)]
        size: usize,
        #[arg(long, value_name = "BYTES", default_value_t = 100)]
        reply: usize,
    },
    /// ROUNDS x (write SIZE, write SIZE, read REPLY): the pattern Nagle + delayed ACK stalls.
    TcpRrClient {
        #[arg(long, value_name = "ADDR")]
        to: SocketAddr,
        #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
        rounds: u64,
        #[arg(long, value_name = "BYTES", default_value_t = 100)]
        size: usize,
        #[arg(long, value_name = "BYTES", default_value_t = 100)]
        reply: usize,
        /// Set TCP_NODELAY (default: Nagle on)
        #[arg(long)]
        nodelay: bool,
        /// Send the first write with MSG_MORE and wait this long before the second (cork)
        #[arg(long = "more-gap-ms", value_name = "MS")]
        more_gap_ms: Option<u64>,
    },
    /// Create tun device NAME, print READY, read COUNT packets, sleeping DELAY ms once each
    /// is queued (the device exists only while this runs).
    TunSink {
        #[arg(long, value_name = "NAME")]
        name: String,
        #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
        count: u64,
        #[arg(long = "delay-ms", value_name = "MS", default_value_t = 0)]
        delay_ms: u64,
    },
    /// Send UDP datagrams as fast as possible for SECONDS or MAX_PACKETS attempts.
    UdpFlood {
        #[arg(long, value_name = "ADDR")]
        to: SocketAddr,
        #[arg(long, value_name = "SECS", value_parser = parse_secs)]
        seconds: Duration,
        #[arg(long, value_name = "BYTES", default_value_t = 64)]
        size: usize,
        #[arg(long = "max-packets", value_name = "N", default_value_t = 50_000_000,
              value_parser = clap::value_parser!(u64).range(1..))]
        max_packets: u64,
    },
    /// Count UDP datagrams for SECONDS, starting at the first one received.
    UdpSink {
        #[arg(long, value_name = "ADDR")]
        bind: SocketAddr,
        #[arg(long, value_name = "SECS", value_parser = parse_secs)]
        seconds: Duration,
    },
    /// Serve one HTTP client COUNT server-sent events, one every MS ms
    /// (`data: {"KEY": ID, "position": ID*P}`).
    SseSource {
        #[arg(long, value_name = "ADDR")]
        bind: SocketAddr,
        #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
        count: u64,
        #[arg(long = "interval-ms", value_name = "MS")]
        interval_ms: u64,
        #[arg(long = "start-id", value_name = "K", default_value_t = 1)]
        start_id: u64,
        #[arg(long, value_name = "NAME", default_value = "interval_id")]
        key: String,
        #[arg(long = "position-step", value_name = "P", default_value_t = 960)]
        position_step: u64,
    },
    /// Relay COUNT server-sent events from UPSTREAM to one client, each DELAY ms after it
    /// arrived.
    SseRelay {
        #[arg(long, value_name = "ADDR")]
        from: SocketAddr,
        #[arg(long, value_name = "ADDR")]
        bind: SocketAddr,
        #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
        count: u64,
        #[arg(long = "delay-ms", value_name = "MS")]
        delay_ms: u64,
    },
    /// Request an event stream and read COUNT server-sent events.
    SseClient {
        #[arg(long, value_name = "ADDR")]
        to: SocketAddr,
        #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
        count: u64,
    },
    /// Connect over TCP and send each TEXT as its own write, MS ms apart
    /// (TEXT may use the escapes \n \r \t \\).
    TcpScript {
        #[arg(long, value_name = "ADDR")]
        to: SocketAddr,
        #[arg(
            long = "write",
            value_name = "TEXT",
            required = true,
            allow_hyphen_values = true
        )]
        writes: Vec<String>,
        #[arg(long = "gap-ms", value_name = "MS", default_value_t = 50)]
        gap_ms: u64,
    },
    /// Accept one TCP connection and count the bytes read until EOF.
    TcpSink {
        #[arg(long, value_name = "ADDR")]
        bind: SocketAddr,
    },
    /// Attach a native XDP_PASS program to DEV for SECONDS (a veth peer then runs NAPI).
    XdpPass {
        #[arg(long)]
        dev: String,
        #[arg(long, value_parser = parse_secs, default_value = "20")]
        seconds: Duration,
    },
    /// Send COUNT UDP datagrams in bursts of BURST back to back, GAP ms apart.
    UdpBurst {
        #[arg(long, value_name = "ADDR")]
        to: SocketAddr,
        #[arg(long)]
        count: u64,
        #[arg(long, default_value_t = 100)]
        burst: u64,
        #[arg(long, default_value_t = 20)]
        gap_ms: u64,
        #[arg(long, default_value_t = 64)]
        size: usize,
    },
    /// Set DEV's IPv4 BIG TCP limits (gso_ipv4_max_size, gro_ipv4_max_size) over rtnetlink:
    /// iproute2 before 6.3 cannot.
    BigTcp4 {
        #[arg(long)]
        dev: String,
        #[arg(long)]
        size: u32,
    },
    /// Hold COUNT netfilter links on PRE_ROUTING (IPv4) at the priorities from the first
    /// on, in this namespace, for SECONDS: another BPF user that leaves no room there.
    NfHold {
        #[arg(long, default_value_t = 64)]
        count: i32,
        #[arg(long, default_value_t = 30)]
        seconds: u64,
    },
    /// Read COUNT UDP datagrams, reporting each read's wait since the kernel's receive stamp.
    UdpStampRecv {
        #[arg(long, value_name = "ADDR")]
        bind: SocketAddr,
        #[arg(long)]
        count: u64,
        #[arg(long)]
        rcvbuf: Option<usize>,
        /// Once data is readable, sleep this long before the read (the wait to measure)
        #[arg(long = "delay-ms", value_name = "MS", default_value_t = 0)]
        delay_ms: u64,
    },
    /// Accept one TCP connection and read COUNT messages of SIZE bytes, each after
    /// sleeping DELAY once data is readable, reporting each read's wait since the kernel's
    /// receive stamp.
    TcpStampRecv {
        #[arg(long, value_name = "ADDR")]
        bind: SocketAddr,
        #[arg(long)]
        count: u64,
        #[arg(long, default_value_t = 64)]
        size: usize,
        #[arg(long = "delay-ms", value_name = "MS", default_value_t = 0)]
        delay_ms: u64,
        /// SO_RCVLOWAT of SIZE x LOWAT bytes: the socket is readable only once LOWAT
        /// messages are in, and each read takes them all (COUNT / LOWAT reads)
        #[arg(long, default_value_t = 1)]
        lowat: usize,
    },
    /// Serve CONNS short connections one by one: read REQ bytes, answer REPLY, await close.
    TcpRrManyServer {
        #[arg(long, value_name = "ADDR")]
        bind: SocketAddr,
        #[arg(long)]
        conns: u64,
        #[arg(long, default_value_t = 100)]
        req: usize,
        #[arg(long, default_value_t = 1000)]
        reply: usize,
    },
    /// CONNS short connections: connect, write REQ bytes, read REPLY bytes, close.
    TcpRrManyClient {
        #[arg(long, value_name = "ADDR")]
        to: SocketAddr,
        #[arg(long)]
        conns: u64,
        #[arg(long, default_value_t = 100)]
        req: usize,
        #[arg(long, default_value_t = 1000)]
        reply: usize,
        /// Connect from this local port every time (closing with a reset).
        #[arg(long)]
        client_port: Option<u16>,
    },
    /// ROUNDS sockets on 127.0.0.1:PORT in turn, each sent PER_ROUND datagrams and closed
    /// after reading READ of them (the last reads all).
    UdpReuse {
        #[arg(long)]
        port: u16,
        #[arg(long, default_value_t = 20)]
        rounds: u64,
        #[arg(long, default_value_t = 5)]
        per_round: u64,
        #[arg(long, default_value_t = 3)]
        read: u64,
    },
    /// ROUNDS x (write to FILE, a failing sendmsg, sendmmsg of BATCH, a CPU move, a send).
    UdpMixedSend {
        #[arg(long, value_name = "ADDR")]
        to: SocketAddr,
        #[arg(long, default_value_t = 20)]
        rounds: u64,
        #[arg(long, default_value_t = 4)]
        batch: usize,
        #[arg(long)]
        file: String,
        /// Wait this long before the first send (a tracer may attach by pid meanwhile).
        #[arg(long, default_value_t = 0)]
        start_after_ms: u64,
    },
    /// For SECONDS: UDP_PPS datagrams/s of SIZE bytes, plus CONNS_PER_S short TCP
    /// connections/s (every other one from a pool of PORTS local ports from PORT_BASE,
    /// closed with a reset) each followed by a one-datagram UDP socket (the soak run).
    SoakSend {
        #[arg(long, value_name = "ADDR")]
        to: SocketAddr,
        #[arg(long, value_name = "SECS", value_parser = parse_secs)]
        seconds: Duration,
        #[arg(long = "udp-pps", default_value_t = 45_000,
              value_parser = clap::value_parser!(u64).range(0..=10_000_000))]
        udp_pps: u64,
        #[arg(long = "conns-per-s", default_value_t = 300,
              value_parser = clap::value_parser!(u64).range(0..=100_000))]
        conns_per_s: u64,
        #[arg(long, value_name = "BYTES", default_value_t = 64)]
        size: usize,
        #[arg(long, value_name = "BYTES", default_value_t = 64)]
        req: usize,
        #[arg(long, value_name = "BYTES", default_value_t = 256)]
        reply: usize,
        /// Above the default ephemeral range (32768-60999): connect() would take pool
        /// ports for its own connections and leave them in TIME_WAIT
        #[arg(long = "port-base", default_value_t = 61_000)]
        port_base: u16,
        #[arg(long, default_value_t = 64)]
        ports: u16,
    },
    /// For SECONDS after READY: count UDP datagrams on ADDR and serve soak-send's TCP
    /// connections on the same port (read REQ bytes, answer REPLY, await the close).
    SoakSink {
        #[arg(long, value_name = "ADDR")]
        bind: SocketAddr,
        #[arg(long, value_name = "SECS", value_parser = parse_secs)]
        seconds: Duration,
        #[arg(long, value_name = "BYTES", default_value_t = 64)]
        req: usize,
        #[arg(long, value_name = "BYTES", default_value_t = 256)]
        reply: usize,
    },
}

/// Positive, finite seconds; checked here because `Duration::from_secs_f64` panics.
fn parse_secs(s: &str) -> std::result::Result<Duration, String> {
    let v: f64 = s.parse().map_err(|_| format!("'{s}' is not a number"))?;
    if !(v.is_finite() && v > 0.0) {
        return Err(format!("'{s}' must be a positive number of seconds"));
    }
    Duration::try_from_secs_f64(v).map_err(|e| format!("'{s}': {e}"))
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return clap_error(e),
    };
    if let Err(e) = start_watchdog(cli.timeout) {
        eprintln!("nsl-load: error: {e:#}");
        return ExitCode::from(EXIT_ERROR);
    }
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("nsl-load: error: {e:#}");
            ExitCode::from(EXIT_ERROR)
        }
    }
}

/// Help/version go to stdout as usual; usage errors become one line on stderr.
fn clap_error(e: clap::Error) -> ExitCode {
    use clap::error::ErrorKind as K;
    if !e.use_stderr() {
        let _ = e.print();
        return ExitCode::SUCCESS;
    }
    if e.kind() == K::DisplayHelpOnMissingArgumentOrSubcommand {
        let _ = e.print();
        return ExitCode::from(EXIT_ERROR);
    }
    let text = e.render().to_string();
    let line = text
        .lines()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("invalid arguments");
    let line = line.strip_prefix("error: ").unwrap_or(line);
    eprintln!("nsl-load: error: {line} (see --help)");
    ExitCode::from(EXIT_ERROR)
}

/// A detached thread bounds every blocking call (accept, connect, recv) at once,
/// instead of threading deadlines through each of them.
fn start_watchdog(timeout: Duration) -> Result<()> {
    thread::Builder::new()
        .name("watchdog".into())
        .spawn(move || {
            thread::sleep(timeout);
            eprintln!(
                "nsl-load: error: timed out after {:.3} s",
                timeout.as_secs_f64()
            );
            std::process::exit(EXIT_TIMEOUT);
        })
        .context("cannot start the timeout thread")?;
    Ok(())
}

fn run(cli: Cli) -> Result<()> {
    match cli.cmd {
        Cmd::UdpRecv {
            bind,
            count,
            delay_ms,
        } => udp_recv(bind, count, delay_ms),
        Cmd::TcpRecv {
            bind,
            count,
            delay_ms,
            msg_size,
        } => {
            check_tcp_size(msg_size, "--msg-size")?;
            tcp_recv(bind, count, delay_ms, msg_size)
        }
        Cmd::UdpSend {
            to,
            count,
            interval_ms,
            size,
            bind,
        } => {
            check_udp_size(size, &to)?;
            udp_send(to, count, interval_ms, size, bind)
        }
        Cmd::TcpSend {
            to,
            count,
            interval_ms,
            size,
            nagle,
        } => {
            check_tcp_size(size, "--size")?;
            tcp_send(to, count, interval_ms, size, nagle)
        }
        Cmd::TcpRrServer {
            bind,
            rounds,
            size,
            reply,
        } => {
            check_tcp_size(size, "--size")?;
            check_tcp_size(reply, "--reply")?;
            tcp_rr_server(bind, rounds, size, reply)
        }
        Cmd::TcpRrClient {
            to,
            rounds,
            size,
            reply,
            nodelay,
            more_gap_ms,
        } => {
            check_tcp_size(size, "--size")?;
            check_tcp_size(reply, "--reply")?;
            tcp_rr_client(to, rounds, size, reply, nodelay, more_gap_ms)
        }
        Cmd::TunSink {
            name,
            count,
            delay_ms,
        } => tun_sink(&name, count, delay_ms),
        Cmd::UdpFlood {
            to,
            seconds,
            size,
            max_packets,
        } => {
            check_udp_size(size, &to)?;
            check_within_timeout(seconds, cli.timeout)?;
            udp_flood(to, seconds, size, max_packets)
        }
        Cmd::UdpSink { bind, seconds } => {
            check_within_timeout(seconds, cli.timeout)?;
            udp_sink(bind, seconds)
        }
        Cmd::SseSource {
            bind,
            count,
            interval_ms,
            start_id,
            key,
            position_step,
        } => {
            let last = start_id.checked_add(count - 1);
            if last.and_then(|id| id.checked_mul(position_step)).is_none() {
                bail!("--start-id, --count and --position-step overflow 64-bit ids/positions");
            }
            sse_source(bind, count, interval_ms, start_id, &key, position_step)
        }
        Cmd::SseRelay {
            from,
            bind,
            count,
            delay_ms,
        } => sse_relay(from, bind, count, delay_ms),
        Cmd::SseClient { to, count } => sse_client(to, count),
        Cmd::TcpScript { to, writes, gap_ms } => {
            let mut texts = Vec::new();
            for w in &writes {
                let bytes = unescape(w).map_err(|e| anyhow!("--write {w:?}: {e}"))?;
                if bytes.is_empty() {
                    bail!("--write must not be empty");
                }
                texts.push(bytes);
            }
            tcp_script(to, &texts, gap_ms)
        }
        Cmd::TcpSink { bind } => tcp_sink(bind),
        Cmd::XdpPass { dev, seconds } => {
            check_within_timeout(seconds, cli.timeout)?;
            shapes::xdp_pass(&dev, seconds)
        }
        Cmd::UdpBurst {
            to,
            count,
            burst,
            gap_ms,
            size,
        } => {
            check_udp_size(size, &to)?;
            shapes::udp_burst(to, count, burst.max(1), gap_ms, size)
        }
        Cmd::BigTcp4 { dev, size } => shapes::big_tcp4(&dev, size),
        Cmd::NfHold { count, seconds } => shapes::nf_hold(count, Duration::from_secs(seconds)),
        Cmd::UdpStampRecv {
            bind,
            count,
            rcvbuf,
            delay_ms,
        } => shapes::udp_stamp_recv(bind, count, rcvbuf, delay_ms),
        Cmd::TcpStampRecv {
            bind,
            count,
            size,
            delay_ms,
            lowat,
        } => shapes::tcp_stamp_recv(bind, count, size, delay_ms, lowat.max(1)),
        Cmd::TcpRrManyServer {
            bind,
            conns,
            req,
            reply,
        } => {
            check_tcp_size(req, "--req")?;
            check_tcp_size(reply, "--reply")?;
            shapes::tcp_rr_many_server(bind, conns, req, reply)
        }
        Cmd::TcpRrManyClient {
            to,
            conns,
            req,
            reply,
            client_port,
        } => {
            check_tcp_size(req, "--req")?;
            check_tcp_size(reply, "--reply")?;
            shapes::tcp_rr_many_client(to, conns, req, reply, client_port)
        }
        Cmd::UdpReuse {
            port,
            rounds,
            per_round,
            read,
        } => shapes::udp_reuse(port, rounds, per_round, read.min(per_round)),
        Cmd::UdpMixedSend {
            to,
            rounds,
            batch,
            file,
            start_after_ms,
        } => {
            if batch == 0 || batch > 64 {
                bail!("--batch must be between 1 and 64, got {batch}");
            }
            sleep_ms(start_after_ms);
            shapes::udp_mixed_send(to, rounds, batch, &file)
        }
        Cmd::SoakSend {
            to,
            seconds,
            udp_pps,
            conns_per_s,
            size,
            req,
            reply,
            port_base,
            ports,
        } => {
            check_udp_size(size, &to)?;
            check_tcp_size(req, "--req")?;
            check_tcp_size(reply, "--reply")?;
            check_within_timeout(seconds, cli.timeout)?;
            if port_base.checked_add(ports).is_none() {
                bail!("--port-base {port_base} + --ports {ports} runs past port 65535");
            }
            let mix = soak::Mix {
                udp_pps,
                conns_per_s,
                size,
                req,
                reply,
                port_base,
                ports,
            };
            soak::soak_send(to, seconds, mix)
        }
        Cmd::SoakSink {
            bind,
            seconds,
            req,
            reply,
        } => {
            check_tcp_size(req, "--req")?;
            check_tcp_size(reply, "--reply")?;
            check_within_timeout(seconds, cli.timeout)?;
            soak::soak_sink(bind, seconds, req, reply)
        }
    }
}

fn check_udp_size(size: usize, to: &SocketAddr) -> Result<()> {
    let max = if to.is_ipv4() {
        MAX_UDP4_PAYLOAD
    } else {
        MAX_UDP6_PAYLOAD
    };
    if size > max {
        bail!("--size {size} exceeds the largest UDP payload for {to} ({max})");
    }
    Ok(())
}

fn check_tcp_size(size: usize, flag: &str) -> Result<()> {
    if size == 0 || size > MAX_TCP_MSG {
        bail!("{flag} must be between 1 and {MAX_TCP_MSG}, got {size}");
    }
    Ok(())
}

/// Otherwise the watchdog would kill a long run before it prints anything useful.
fn check_within_timeout(seconds: Duration, timeout: Duration) -> Result<()> {
    if seconds >= timeout {
        bail!(
            "--seconds {} must be less than --timeout {}",
            seconds.as_secs_f64(),
            timeout.as_secs_f64()
        );
    }
    Ok(())
}

/// One line on stdout; errors (e.g. a closed pipe) are reported, not panicked on.
fn emit(line: &str) -> Result<()> {
    let mut out = io::stdout().lock();
    writeln!(out, "{line}")
        .and_then(|()| out.flush())
        .context("cannot write to stdout")
}

fn ready() -> Result<()> {
    emit("READY")
}

fn payload(size: usize) -> Vec<u8> {
    (0..size).map(|i| (i % 256) as u8).collect()
}

fn any_addr(like: &SocketAddr) -> SocketAddr {
    match like {
        SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
    }
}

/// One message header per buffer, for sendmmsg and recvmmsg.
fn mmsg_headers(iovs: &mut [libc::iovec]) -> Vec<libc::mmsghdr> {
    iovs.iter_mut()
        .map(|iov| {
            // SAFETY: mmsghdr is plain C data; all-zero is a valid (empty) value.
            let mut h: libc::mmsghdr = unsafe { std::mem::zeroed() };
            h.msg_hdr.msg_iov = iov;
            h.msg_hdr.msg_iovlen = 1;
            h
        })
        .collect()
}

fn sleep_ms(ms: u64) {
    if ms > 0 {
        thread::sleep(Duration::from_millis(ms));
    }
}

fn rate(n: u64, secs: f64) -> f64 {
    if secs > 0.0 {
        n as f64 / secs
    } else {
        0.0
    }
}

fn udp_recv(bind: SocketAddr, count: u64, delay_ms: u64) -> Result<()> {
    let sock = UdpSocket::bind(bind).with_context(|| format!("cannot bind UDP {bind}"))?;
    ready()?;
    let mut buf = vec![0u8; 65536];
    let mut bytes = 0u64;
    for _ in 0..count {
        wait_readable(sock.as_raw_fd())?;
        sleep_ms(delay_ms);
        let n = sock.recv(&mut buf).context("UDP recv")?;
        bytes += n as u64;
    }
    emit(&json!({ "received": count, "bytes": bytes }).to_string())
}

fn tcp_recv(bind: SocketAddr, count: u64, delay_ms: u64, msg_size: usize) -> Result<()> {
    let listener =
        TcpListener::bind(bind).with_context(|| format!("cannot listen on TCP {bind}"))?;
    ready()?;
    let (mut stream, _peer) = listener.accept().context("TCP accept")?;
    let mut buf = vec![0u8; msg_size];
    for i in 0..count {
        wait_readable(stream.as_raw_fd())?;
        sleep_ms(delay_ms);
        stream.read_exact(&mut buf).map_err(|e| {
            if e.kind() == ErrorKind::UnexpectedEof {
                anyhow::anyhow!("peer closed the connection after {i} of {count} messages")
            } else {
                anyhow::Error::new(e).context("TCP read")
            }
        })?;
    }
    let bytes = count * msg_size as u64;
    emit(&json!({ "received": count, "bytes": bytes }).to_string())
}

fn udp_send(
    to: SocketAddr,
    count: u64,
    interval_ms: u64,
    size: usize,
    bind: Option<SocketAddr>,
) -> Result<()> {
    let local = bind.unwrap_or_else(|| any_addr(&to));
    let sock = UdpSocket::bind(local).with_context(|| format!("cannot bind UDP {local}"))?;
    let data = payload(size);
    for i in 0..count {
        if i > 0 {
            sleep_ms(interval_ms);
        }
        sock.send_to(&data, to)
            .with_context(|| format!("UDP send to {to}"))?;
    }
    emit(&json!({ "sent": count }).to_string())
}

/// The server may still be starting (e.g. in another namespace), so retry refusals.
fn connect_with_retry(to: SocketAddr) -> Result<TcpStream> {
    const BUDGET: Duration = Duration::from_secs(5);
    const RETRY: Duration = Duration::from_millis(50);
    let deadline = Instant::now() + BUDGET;
    loop {
        let left = deadline
            .saturating_duration_since(Instant::now())
            .max(RETRY);
        match TcpStream::connect_timeout(&to, left) {
            Ok(s) => return Ok(s),
            Err(e)
                if e.kind() == ErrorKind::ConnectionRefused
                    && Instant::now() + RETRY < deadline =>
            {
                thread::sleep(RETRY);
            }
            Err(e) => return Err(e).with_context(|| format!("cannot connect to TCP {to}")),
        }
    }
}

/// Each message goes out with as few write calls as the kernel allows; the bytes each
/// call took are printed (`writes`), the ground truth for per-write attribution.
fn tcp_send(to: SocketAddr, count: u64, interval_ms: u64, size: usize, nagle: bool) -> Result<()> {
    let mut stream = connect_with_retry(to)?;
    stream.set_nodelay(!nagle).context("TCP_NODELAY")?;
    let data = payload(size);
    let mut writes = Vec::new();
    for i in 0..count {
        if i > 0 {
            sleep_ms(interval_ms);
        }
        let mut off = 0;
        while off < data.len() {
            match stream.write(&data[off..]) {
                Ok(0) => bail!("TCP write of message {i}: peer closed"),
                Ok(n) => {
                    off += n;
                    writes.push(n);
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(e).with_context(|| format!("TCP write of message {i}")),
            }
        }
    }
    stream.shutdown(Shutdown::Write).context("TCP shutdown")?;
    drain_until_close(&mut stream, Duration::from_secs(2));
    emit(&json!({ "sent": count, "writes": writes }).to_string())
}

fn tcp_rr_server(bind: SocketAddr, rounds: u64, size: usize, reply: usize) -> Result<()> {
    let listener =
        TcpListener::bind(bind).with_context(|| format!("cannot listen on TCP {bind}"))?;
    ready()?;
    let (mut stream, _peer) = listener.accept().context("TCP accept")?;
    let mut req = vec![0u8; 2 * size];
    let answer = payload(reply);
    for i in 0..rounds {
        stream
            .read_exact(&mut req)
            .with_context(|| format!("reading request {i}"))?;
        stream
            .write_all(&answer)
            .with_context(|| format!("answering request {i}"))?;
    }
    emit(&json!({ "rounds": rounds }).to_string())
}

fn tcp_rr_client(
    to: SocketAddr,
    rounds: u64,
    size: usize,
    reply: usize,
    nodelay: bool,
    more_gap_ms: Option<u64>,
) -> Result<()> {
    let mut stream = connect_with_retry(to)?;
    stream.set_nodelay(nodelay).context("TCP_NODELAY")?;
    let data = payload(size);
    let mut answer = vec![0u8; reply];
    let started = Instant::now();
    for i in 0..rounds {
        match more_gap_ms {
            Some(gap) => {
                send_more(&stream, &data)?;
                sleep_ms(gap);
            }
            None => stream.write_all(&data).context("first write")?,
        }
        stream.write_all(&data).context("second write")?;
        stream
            .read_exact(&mut answer)
            .with_context(|| format!("reading answer {i}"))?;
    }
    let ms = started.elapsed().as_secs_f64() * 1000.0 / rounds as f64;
    emit(&json!({ "rounds": rounds, "ms_per_round": ms }).to_string())
}

/// One send(2) with MSG_MORE: the kernel may hold the data for what follows (like a cork).
fn send_more(stream: &TcpStream, data: &[u8]) -> Result<()> {
    // SAFETY: the buffer is valid for its length; the fd is an open TCP socket.
    let n = unsafe {
        libc::send(
            stream.as_raw_fd(),
            data.as_ptr().cast(),
            data.len(),
            libc::MSG_MORE,
        )
    };
    if n < 0 {
        return Err(io::Error::last_os_error()).context("send with MSG_MORE");
    }
    if n as usize != data.len() {
        bail!("send with MSG_MORE took {n} of {} bytes", data.len());
    }
    Ok(())
}

/// A tun device's transmit completes when its reader takes the packet: a driver whose
/// TX completion (the skb's free) the test controls.
fn tun_sink(name: &str, count: u64, delay_ms: u64) -> Result<()> {
    const TUNSETIFF: libc::c_ulong = 0x4004_54ca;
    const IFF_TUN: libc::c_short = 0x0001;
    const IFF_NO_PI: libc::c_short = 0x1000;
    if name.is_empty() || name.len() >= libc::IFNAMSIZ {
        bail!("--name must be 1 to 15 bytes");
    }
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/net/tun")
        .context("cannot open /dev/net/tun (needs root and the tun module)")?;
    // SAFETY: ifreq is plain old data; zeroed is a valid value.
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, s) in ifr.ifr_name.iter_mut().zip(name.bytes()) {
        *d = s as libc::c_char;
    }
    ifr.ifr_ifru.ifru_flags = IFF_TUN | IFF_NO_PI;
    // SAFETY: TUNSETIFF reads and writes one ifreq, which outlives the call.
    if unsafe { libc::ioctl(f.as_raw_fd(), TUNSETIFF, &mut ifr) } < 0 {
        return Err(io::Error::last_os_error()).with_context(|| format!("TUNSETIFF {name}"));
    }
    ready()?;
    let mut f = f;
    let mut buf = vec![0u8; 65_536];
    let mut bytes = 0u64;
    for _ in 0..count {
        wait_readable(f.as_raw_fd())?;
        sleep_ms(delay_ms);
        bytes += f.read(&mut buf).context("tun read")? as u64;
    }
    emit(&json!({ "received": count, "bytes": bytes }).to_string())
}

/// Wait (bounded) for the peer's FIN so our data is delivered before we exit;
/// a slow or resetting peer is not an error for the sender.
fn drain_until_close(stream: &mut TcpStream, limit: Duration) {
    let deadline = Instant::now() + limit;
    let mut buf = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() || stream.set_read_timeout(Some(left)).is_err() {
            return;
        }
        match stream.read(&mut buf) {
            Ok(0) => return,
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => return,
        }
    }
}

fn udp_flood(to: SocketAddr, seconds: Duration, size: usize, max_packets: u64) -> Result<()> {
    // Checking the clock once per batch keeps it out of the hot loop.
    const BATCH: u64 = 64;
    let local = any_addr(&to);
    let sock = UdpSocket::bind(local).with_context(|| format!("cannot bind UDP {local}"))?;
    sock.connect(to)
        .with_context(|| format!("cannot connect UDP to {to}"))?;
    let data = payload(size);
    let (mut sent, mut errors, mut attempts) = (0u64, 0u64, 0u64);
    let start = Instant::now();
    let deadline = start + seconds;
    while attempts < max_packets {
        let batch = (max_packets - attempts).min(BATCH);
        for _ in 0..batch {
            match sock.send(&data) {
                Ok(_) => sent += 1,
                // Full qdisc/socket buffer, or ICMP unreachable from an absent sink:
                // expected under flood, so count rather than abort.
                Err(e) if matches!(e.raw_os_error(), Some(libc::ENOBUFS | libc::ECONNREFUSED)) => {
                    errors += 1
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => errors += 1,
                Err(e) => return Err(e).with_context(|| format!("UDP send to {to}")),
            }
        }
        attempts += batch;
        if Instant::now() >= deadline {
            break;
        }
    }
    let secs = start.elapsed().as_secs_f64();
    let out = json!({ "sent": sent, "errors": errors, "seconds": secs, "pps": rate(sent, secs) });
    emit(&out.to_string())
}

fn udp_sink(bind: SocketAddr, seconds: Duration) -> Result<()> {
    // 64 KiB split into 2 KiB slots for recvmmsg; larger datagrams are truncated,
    // which is fine because the sink only counts them.
    const SLOTS: usize = 32;
    const SLOT_LEN: usize = 2048;
    let sock = UdpSocket::bind(bind).with_context(|| format!("cannot bind UDP {bind}"))?;
    // Lets a blocked receive return so the deadline is checked even when idle.
    let mut tick = Duration::from_millis(100);
    sock.set_read_timeout(Some(tick)).context("SO_RCVTIMEO")?;

    let mut buf = vec![0u8; SLOTS * SLOT_LEN];
    let mut iovs: Vec<libc::iovec> = buf
        .chunks_mut(SLOT_LEN)
        .map(|c| libc::iovec {
            iov_base: c.as_mut_ptr().cast(),
            iov_len: c.len(),
        })
        .collect();
    let mut hdrs = mmsg_headers(&mut iovs);

    ready()?;
    let ready_at = Instant::now();
    let mut first: Option<Instant> = None;
    let mut received = 0u64;
    loop {
        // SAFETY: `hdrs` holds SLOTS headers whose iovecs point into `buf`, and both
        // outlive the call; a null timeout makes SO_RCVTIMEO the only limit.
        let r = unsafe {
            libc::recvmmsg(
                sock.as_raw_fd(),
                hdrs.as_mut_ptr(),
                SLOTS as libc::c_uint,
                libc::MSG_WAITFORONE,
                std::ptr::null_mut(),
            )
        };
        let now = Instant::now();
        if r > 0 {
            received += r as u64;
            first.get_or_insert(now);
        } else if r < 0 {
            let err = io::Error::last_os_error();
            if !matches!(
                err.kind(),
                ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
            ) {
                return Err(err).context("UDP recvmmsg");
            }
        }
        let left = seconds.saturating_sub(now.duration_since(first.unwrap_or(ready_at)));
        if left.is_zero() {
            break;
        }
        // Shrink the timeout near the end so an idle tail does not stretch the
        // window (and deflate pps) by up to a whole tick; 2 ms slack limits syscalls.
        if left + Duration::from_millis(2) < tick {
            tick = left.max(Duration::from_millis(1));
            sock.set_read_timeout(Some(tick)).context("SO_RCVTIMEO")?;
        }
    }
    let secs = first.unwrap_or(ready_at).elapsed().as_secs_f64();
    let out = json!({ "received": received, "seconds": secs, "pps": rate(received, secs) });
    emit(&out.to_string())
}

/// Sleeps until `offset` after `t0`; measuring from a fixed instant keeps a schedule
/// from drifting (and cannot overflow, unlike adding to an `Instant`).
fn sleep_until(t0: Instant, offset: Duration) {
    thread::sleep(offset.saturating_sub(t0.elapsed()));
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// `read` that retries EINTR (std's `read` does not).
fn read_some(stream: &mut TcpStream, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        match stream.read(buf) {
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            r => return r,
        }
    }
}

/// Reads an HTTP head up to its blank line and returns the bytes that followed it.
fn read_head(stream: &mut TcpStream, what: &str) -> Result<Vec<u8>> {
    let mut buf = Vec::with_capacity(MAX_HEAD);
    loop {
        if let Some(i) = find(&buf, HEAD_END) {
            return Ok(buf.split_off(i + HEAD_END.len()));
        }
        if buf.len() == MAX_HEAD {
            bail!("the {what} head is longer than {MAX_HEAD} bytes");
        }
        // Reading at most up to the cap bounds the head without a second buffer.
        let old = buf.len();
        buf.resize(MAX_HEAD, 0);
        let n = read_some(stream, &mut buf[old..])
            .with_context(|| format!("reading the {what} head"))?;
        buf.truncate(old + n);
        if n == 0 {
            bail!("peer closed the connection before the end of the {what} head");
        }
    }
}

/// Splits a byte stream into server-sent events, each ending in "\n\n"; the bytes of
/// an unfinished event are kept for the next `push`.
#[derive(Default)]
struct EventSplitter {
    pending: Vec<u8>,
}

impl EventSplitter {
    /// Appends `data` and returns the events it completed, terminator included.
    fn push(&mut self, data: &[u8]) -> Vec<Vec<u8>> {
        // One byte back: the previous push may have ended with the first "\n".
        let mut from = self.pending.len().saturating_sub(1);
        self.pending.extend_from_slice(data);
        let mut events = Vec::new();
        while let Some(i) = find(&self.pending[from..], EVENT_END) {
            let rest = self.pending.split_off(from + i + EVENT_END.len());
            events.push(std::mem::replace(&mut self.pending, rest));
            from = 0;
        }
        events
    }
}

/// Decodes the escapes \n \r \t \\ in a command-line argument.
fn unescape(text: &str) -> std::result::Result<Vec<u8>, String> {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        out.push(match chars.next() {
            Some('n') => '\n',
            Some('r') => '\r',
            Some('t') => '\t',
            Some('\\') => '\\',
            Some(other) => return Err(format!("unsupported escape '\\{other}'")),
            None => return Err("a trailing '\\' escapes nothing".into()),
        });
    }
    Ok(out.into_bytes())
}

fn sse_source(
    bind: SocketAddr,
    count: u64,
    interval_ms: u64,
    start_id: u64,
    key: &str,
    position_step: u64,
) -> Result<()> {
    let listener =
        TcpListener::bind(bind).with_context(|| format!("cannot listen on TCP {bind}"))?;
    ready()?;
    let (mut stream, _peer) = listener.accept().context("TCP accept")?;
    read_head(&mut stream, "request")?;
    stream.set_nodelay(true).context("TCP_NODELAY")?;
    stream
        .write_all(SSE_RESPONSE)
        .context("writing the response head")?;
    // JSON-quoted so any key keeps the event valid JSON and on one line.
    let key = serde_json::Value::from(key).to_string();
    let start = Instant::now();
    for i in 0..count {
        sleep_until(start, Duration::from_millis(interval_ms.saturating_mul(i)));
        let id = start_id + i;
        let pos = id * position_step;
        let event = format!("data: {{{key}: {id}, \"position\": {pos}}}\n\n");
        stream
            .write_all(event.as_bytes())
            .with_context(|| format!("writing event {i}"))?;
    }
    stream.shutdown(Shutdown::Write).context("TCP shutdown")?;
    drain_until_close(&mut stream, Duration::from_secs(2));
    emit(&json!({ "mode": "sse-source", "events": count, "first_id": start_id }).to_string())
}

/// What the upstream reader hands the relay: one event and when its last byte arrived.
type TimedEvent = io::Result<(Vec<u8>, Instant)>;

fn sse_relay(from: SocketAddr, bind: SocketAddr, count: u64, delay_ms: u64) -> Result<()> {
    let listener =
        TcpListener::bind(bind).with_context(|| format!("cannot listen on TCP {bind}"))?;
    ready()?;
    let (mut down, _peer) = listener.accept().context("TCP accept")?;
    read_head(&mut down, "client request")?;
    let mut up = connect_with_retry(from)?;
    up.set_nodelay(true).context("TCP_NODELAY")?;
    up.write_all(SSE_REQUEST)
        .context("sending the upstream request")?;
    let rest = read_head(&mut up, "upstream response")?;
    let rest_at = Instant::now();
    down.set_nodelay(true).context("TCP_NODELAY")?;
    down.write_all(SSE_RESPONSE)
        .context("writing the response head")?;

    // A separate reader timestamps each event as it arrives, even while the main
    // thread sleeps on an earlier one, so delays do not add up.
    let (tx, rx) = mpsc::channel();
    thread::Builder::new()
        .name("upstream".into())
        .spawn(move || read_events(up, rest, rest_at, count, tx))
        .context("cannot start the upstream reader")?;
    let delay = Duration::from_millis(delay_ms);
    for forwarded in 0..count {
        let (event, at) = match rx.recv() {
            Ok(Ok(timed)) => timed,
            Ok(Err(e)) => {
                return Err(e).with_context(|| {
                    format!("upstream read after forwarding {forwarded} of {count} events")
                })
            }
            Err(_) => bail!("upstream closed after {forwarded} of {count} events were forwarded"),
        };
        sleep_until(at, delay);
        down.write_all(&event)
            .with_context(|| format!("forwarding event {forwarded}"))?;
    }
    down.shutdown(Shutdown::Write).context("TCP shutdown")?;
    drain_until_close(&mut down, Duration::from_secs(2));
    emit(&json!({ "mode": "sse-relay", "events": count, "delay_ms": delay_ms }).to_string())
}

/// Sends up to COUNT events, each stamped with the return of the read that completed
/// it; dropping `tx` (on EOF) tells the relay upstream closed.
fn read_events(
    mut up: TcpStream,
    rest: Vec<u8>,
    rest_at: Instant,
    count: u64,
    tx: mpsc::Sender<TimedEvent>,
) {
    let mut splitter = EventSplitter::default();
    let mut events = splitter.push(&rest);
    let mut at = rest_at;
    let mut sent = 0;
    let mut buf = [0u8; 4096];
    loop {
        for event in events.into_iter().take((count - sent) as usize) {
            if tx.send(Ok((event, at))).is_err() {
                return;
            }
            sent += 1;
        }
        if sent == count {
            return;
        }
        let n = match read_some(&mut up, &mut buf) {
            Ok(0) => return,
            Ok(n) => n,
            Err(e) => {
                let _ = tx.send(Err(e));
                return;
            }
        };
        at = Instant::now();
        events = splitter.push(&buf[..n]);
    }
}

fn sse_client(to: SocketAddr, count: u64) -> Result<()> {
    let mut stream = connect_with_retry(to)?;
    stream
        .write_all(SSE_REQUEST)
        .context("sending the request")?;
    let rest = read_head(&mut stream, "response")?;
    let mut splitter = EventSplitter::default();
    let mut got = splitter.push(&rest).len() as u64;
    let mut buf = [0u8; 4096];
    while got < count {
        let n = read_some(&mut stream, &mut buf).context("TCP read")?;
        if n == 0 {
            bail!("peer closed the connection after {got} of {count} events");
        }
        got += splitter.push(&buf[..n]).len() as u64;
    }
    drop(stream);
    emit(&json!({ "mode": "sse-client", "events": count }).to_string())
}

fn tcp_script(to: SocketAddr, texts: &[Vec<u8>], gap_ms: u64) -> Result<()> {
    let mut stream = connect_with_retry(to)?;
    stream.set_nodelay(true).context("TCP_NODELAY")?;
    for (i, text) in texts.iter().enumerate() {
        if i > 0 {
            sleep_ms(gap_ms);
        }
        stream
            .write_all(text)
            .with_context(|| format!("TCP write {i}"))?;
    }
    stream.shutdown(Shutdown::Write).context("TCP shutdown")?;
    drain_until_close(&mut stream, Duration::from_secs(2));
    let bytes: usize = texts.iter().map(Vec::len).sum();
    emit(&json!({ "mode": "tcp-script", "writes": texts.len(), "bytes": bytes }).to_string())
}

fn tcp_sink(bind: SocketAddr) -> Result<()> {
    let listener =
        TcpListener::bind(bind).with_context(|| format!("cannot listen on TCP {bind}"))?;
    ready()?;
    let (mut stream, _peer) = listener.accept().context("TCP accept")?;
    let bytes = io::copy(&mut stream, &mut io::sink()).context("TCP read")?;
    emit(&json!({ "mode": "tcp-sink", "bytes": bytes }).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unescape_decodes_the_four_escapes() {
        assert_eq!(unescape(r"a\nb\r\tc\\d").unwrap(), b"a\nb\r\tc\\d");
        assert_eq!(unescape("plain é").unwrap(), "plain é".as_bytes());
    }

    #[test]
    fn unescape_rejects_unknown_and_trailing_backslash() {
        assert!(unescape(r"x\q").unwrap_err().contains(r"'\q'"));
        assert!(unescape(r"x\").is_err());
    }

    #[test]
    fn splitter_joins_an_event_split_across_reads() {
        let mut s = EventSplitter::default();
        assert!(s.push(b"data: 1").is_empty());
        assert!(s.push(b"\n").is_empty());
        assert_eq!(s.push(b"\ndata: 2"), vec![b"data: 1\n\n".to_vec()]);
        assert_eq!(s.push(b"\n\n"), vec![b"data: 2\n\n".to_vec()]);
    }

    #[test]
    fn splitter_splits_several_events_in_one_read() {
        let mut s = EventSplitter::default();
        let events = s.push(b"data: 1\n\ndata: 2\n\ndata: 3");
        assert_eq!(
            events,
            vec![b"data: 1\n\n".to_vec(), b"data: 2\n\n".to_vec()]
        );
        assert_eq!(s.push(b"\n\n"), vec![b"data: 3\n\n".to_vec()]);
    }
}

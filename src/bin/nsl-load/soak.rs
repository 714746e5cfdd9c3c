//! The soak run's traffic (scripts/soak.sh): UDP datagrams at a steady rate beside short
//! TCP connections (half from a small pool of reused ports, closed with a reset; half from
//! ephemeral ports, closed gracefully) and one-datagram UDP sockets, for a fixed time; and
//! the sink that counts what arrived. Paced, not flat out: an hour at one rate says more
//! about growth than an hour of whatever a shared machine has left, and the sink's counts
//! are the ground truth the tool's own counts are checked against.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context, Result};
use serde_json::json;

use super::shapes::connect_from;
use super::{any_addr, emit, mmsg_headers, payload, rate, ready};

/// How often the pacers wake: at 50k datagrams/s, about 50 per wake.
const TICK: Duration = Duration::from_millis(1);
/// Bounds one connection's connect, reads and close wait: a stall costs one connection.
const CONN_LIMIT: Duration = Duration::from_secs(1);

/// What one soak sender does per second.
pub struct Mix {
    pub udp_pps: u64,
    pub conns_per_s: u64,
    pub size: usize,
    pub req: usize,
    pub reply: usize,
    pub port_base: u16,
    pub ports: u16,
}

/// How many sends are due now on a schedule of `rate` per second, `done` already sent or
/// skipped: (to send now, to skip). A sender that fell more than `slack` behind (a stalled
/// CPU) skips the excess rather than bursting it into the receiver's buffer.
pub fn due(rate: u64, elapsed: Duration, done: u64, slack: u64) -> (u64, u64) {
    let target = (rate as u128 * elapsed.as_nanos() / 1_000_000_000) as u64;
    let owed = target.saturating_sub(done);
    let skip = owed.saturating_sub(slack);
    (owed - skip, skip)
}

/// The local port of connection `i` that comes from the pool (odd `i`), or None for an
/// ephemeral one (even `i`).
pub fn pool_port(i: u64, base: u16, ports: u16) -> Option<u16> {
    (i % 2 == 1 && ports > 0).then(|| base + ((i / 2) % ports as u64) as u16)
}

/// Sends the mix to `to` for `seconds`; one JSON line with what was sent.
pub fn soak_send(to: SocketAddr, seconds: Duration, mix: Mix) -> Result<()> {
    let start = Instant::now();
    let udp = {
        let (size, pps) = (mix.size, mix.udp_pps);
        thread::Builder::new()
            .name("udp".into())
            .spawn(move || udp_paced(to, seconds, pps, size))
            .context("cannot start the UDP sender")?
    };
    let tcp = tcp_churn(to, seconds, &mix)?;
    let (sent, errors, skipped) = udp
        .join()
        .map_err(|_| anyhow!("the UDP sender panicked"))??;
    let secs = start.elapsed().as_secs_f64();
    let out = json!({
        "mode": "soak-send", "seconds": secs,
        "udp_sent": sent, "udp_errors": errors, "udp_skipped": skipped,
        "udp_pps": rate(sent, secs),
        "conns_ok": tcp.ok, "conns_failed": tcp.failed, "conns_per_s": rate(tcp.ok, secs),
        "udp_churn_sent": tcp.churn_sent, "conn_errors": tcp.why,
    });
    emit(&out.to_string())
}

fn udp_paced(to: SocketAddr, seconds: Duration, pps: u64, size: usize) -> Result<(u64, u64, u64)> {
    let sock = UdpSocket::bind(any_addr(&to)).context("bind the UDP sender")?;
    sock.connect(to)
        .with_context(|| format!("cannot connect UDP to {to}"))?;
    let data = payload(size);
    let (mut sent, mut errors, mut skipped, mut done) = (0u64, 0u64, 0u64, 0u64);
    let slack = (pps / 20).max(1);
    let t0 = Instant::now();
    while t0.elapsed() < seconds {
        let (n, skip) = due(pps, t0.elapsed(), done, slack);
        skipped += skip;
        done += skip + n;
        for _ in 0..n {
            match sock.send(&data) {
                Ok(_) => sent += 1,
                // A full qdisc or an ICMP error from a sink not yet bound: counted.
                Err(e) if matches!(e.raw_os_error(), Some(libc::ENOBUFS | libc::ECONNREFUSED)) => {
                    errors += 1
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => errors += 1,
                Err(e) => return Err(e).with_context(|| format!("UDP send to {to}")),
            }
        }
        thread::sleep(TICK);
    }
    Ok((sent, errors, skipped))
}

#[derive(Default)]
struct Churned {
    ok: u64,
    failed: u64,
    churn_sent: u64,
    /// Failures by error, so a failing kind of connection shows.
    why: std::collections::BTreeMap<String, u64>,
}

fn tcp_churn(to: SocketAddr, seconds: Duration, mix: &Mix) -> Result<Churned> {
    let req = payload(mix.req);
    let dgram = payload(mix.size);
    let mut reply = vec![0u8; mix.reply];
    let mut c = Churned::default();
    let mut done = 0u64;
    let t0 = Instant::now();
    while t0.elapsed() < seconds {
        let (n, skip) = due(mix.conns_per_s, t0.elapsed(), done, mix.conns_per_s.max(1));
        done += skip;
        for _ in 0..n {
            let port = pool_port(done, mix.port_base, mix.ports);
            done += 1;
            match one_conn(to, port, &req, &mut reply) {
                Ok(()) => c.ok += 1,
                Err(e) => {
                    c.failed += 1;
                    let kind = if port.is_some() {
                        "pool port"
                    } else {
                        "ephemeral"
                    };
                    *c.why.entry(format!("{kind}: {e:#}")).or_default() += 1;
                }
            }
            // A socket opened for one datagram and closed, as a DNS client does.
            let s = UdpSocket::bind(any_addr(&to)).context("bind a one-shot UDP socket")?;
            if s.send_to(&dgram, to).is_ok() {
                c.churn_sent += 1;
            }
        }
        thread::sleep(TICK);
    }
    Ok(c)
}

/// Connect (from `port` if given), send the request, read the reply, close: with a reset
/// from a pool port (so the 4-tuple is free again at once), else with a FIN.
fn one_conn(to: SocketAddr, port: Option<u16>, req: &[u8], reply: &mut [u8]) -> Result<()> {
    let mut s = match port {
        Some(p) => connect_from(to, p)?,
        None => TcpStream::connect_timeout(&to, CONN_LIMIT).context("connect")?,
    };
    s.set_nodelay(true)?;
    s.set_read_timeout(Some(CONN_LIMIT))?;
    s.set_write_timeout(Some(CONN_LIMIT))?;
    s.write_all(req).context("request")?;
    s.read_exact(reply).context("reply")?;
    if port.is_some() {
        set_linger_zero(&s);
    }
    Ok(())
}

fn set_linger_zero(s: &TcpStream) {
    let l = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: a valid socket and option value.
    unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&l as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    };
}

/// Counts UDP datagrams on `bind` and serves TCP connections on the same port (read
/// `req` bytes, answer `reply`, wait for the close) for `seconds` after READY.
pub fn soak_sink(bind: SocketAddr, seconds: Duration, req: usize, reply: usize) -> Result<()> {
    let udp = UdpSocket::bind(bind).with_context(|| format!("cannot bind UDP {bind}"))?;
    let listener =
        TcpListener::bind(bind).with_context(|| format!("cannot listen on TCP {bind}"))?;
    listener.set_nonblocking(true).context("O_NONBLOCK")?;
    let received = Arc::new(AtomicU64::new(0));
    ready()?;
    let t0 = Instant::now();
    let rx = {
        let received = Arc::clone(&received);
        thread::Builder::new()
            .name("udp".into())
            .spawn(move || udp_count(udp, t0 + seconds, &received))
            .context("cannot start the UDP receiver")?
    };
    let answer = payload(reply);
    let mut buf = vec![0u8; req];
    let (mut served, mut failed) = (0u64, 0u64);
    while t0.elapsed() < seconds {
        match listener.accept() {
            Ok((s, _)) => match serve_one(s, &mut buf, &answer) {
                Ok(()) => served += 1,
                Err(_) => failed += 1,
            },
            Err(e) if e.kind() == ErrorKind::WouldBlock => poll_in(listener.as_raw_fd(), 100),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            // The peer gave up before the accept (ECONNABORTED): its connection only.
            Err(e) if e.kind() == ErrorKind::ConnectionAborted => failed += 1,
            Err(e) => return Err(e).context("TCP accept"),
        }
    }
    rx.join()
        .map_err(|_| anyhow!("the UDP receiver panicked"))??;
    let secs = t0.elapsed().as_secs_f64();
    let udp_received = received.load(Ordering::Relaxed);
    let out = json!({
        "mode": "soak-sink", "seconds": secs,
        "udp_received": udp_received, "udp_pps": rate(udp_received, secs),
        "conns_served": served, "conns_failed": failed,
    });
    emit(&out.to_string())
}

fn serve_one(mut s: TcpStream, buf: &mut [u8], answer: &[u8]) -> Result<()> {
    s.set_nonblocking(false)?;
    s.set_read_timeout(Some(CONN_LIMIT))?;
    s.set_write_timeout(Some(CONN_LIMIT))?;
    s.read_exact(buf)?;
    s.write_all(answer)?;
    // The client closes first (a FIN or a reset); either ends the connection.
    let mut rest = [0u8; 64];
    loop {
        match s.read(&mut rest) {
            Ok(0) => return Ok(()),
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::ConnectionReset => return Ok(()),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e.into()),
        }
    }
}

fn poll_in(fd: i32, ms: i32) {
    let mut p = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd; an error or timeout only means "look again".
    unsafe { libc::poll(&mut p, 1, ms) };
}

fn udp_count(sock: UdpSocket, until: Instant, received: &AtomicU64) -> Result<()> {
    const SLOTS: usize = 32;
    const SLOT_LEN: usize = 2048;
    sock.set_read_timeout(Some(Duration::from_millis(100)))
        .context("SO_RCVTIMEO")?;
    let mut buf = vec![0u8; SLOTS * SLOT_LEN];
    let mut iovs: Vec<libc::iovec> = buf
        .chunks_mut(SLOT_LEN)
        .map(|c| libc::iovec {
            iov_base: c.as_mut_ptr().cast(),
            iov_len: c.len(),
        })
        .collect();
    let mut hdrs = mmsg_headers(&mut iovs);
    while Instant::now() < until {
        // SAFETY: `hdrs` holds SLOTS headers whose iovecs point into `buf`, and both
        // outlive the call; SO_RCVTIMEO bounds the wait.
        let r = unsafe {
            libc::recvmmsg(
                sock.as_raw_fd(),
                hdrs.as_mut_ptr(),
                SLOTS as libc::c_uint,
                libc::MSG_WAITFORONE,
                std::ptr::null_mut(),
            )
        };
        if r > 0 {
            received.fetch_add(r as u64, Ordering::Relaxed);
        } else if r < 0 {
            let err = std::io::Error::last_os_error();
            if !matches!(
                err.kind(),
                ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
            ) {
                return Err(err).context("UDP recvmmsg");
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn due_follows_the_schedule() {
        assert_eq!(due(50_000, Duration::from_millis(1), 0, 2500), (50, 0));
        assert_eq!(due(50_000, Duration::from_millis(2), 50, 2500), (50, 0));
        // Ahead of the schedule: nothing due.
        assert_eq!(due(1000, Duration::from_millis(5), 9, 50), (0, 0));
    }

    #[test]
    fn due_skips_what_is_beyond_the_slack() {
        // One second behind at 1000/s with 50 of slack: 50 now, 950 skipped.
        assert_eq!(due(1000, Duration::from_secs(2), 1000, 50), (50, 950));
    }

    #[test]
    fn pool_ports_alternate_with_ephemeral_and_wrap() {
        assert_eq!(pool_port(0, 42000, 4), None);
        assert_eq!(pool_port(1, 42000, 4), Some(42000));
        assert_eq!(pool_port(3, 42000, 4), Some(42001));
        assert_eq!(pool_port(9, 42000, 4), Some(42000));
        assert_eq!(pool_port(9, 42000, 0), None);
    }
}

//! Traffic shaped like a real host's: bursts through a NAPI receiver, hundreds of short
//! request/reply connections, sockets closed and reopened on the same port, UDP senders
//! that mix writes to files, failed sends, sendmmsg batches and CPU moves. Receivers
//! report the kernel's own receive timestamp (SO_TIMESTAMPNS) against the read's return:
//! the ground truth of rx_sockq->rx_read.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::json;

use netstack_lat::traffic::loopback::wait_readable;

use super::{any_addr, emit, mmsg_headers, payload, ready, sleep_ms};

/// Attach a native XDP_PASS program to `dev` (in this namespace) and hold it for `seconds`;
/// the link goes with the process.
pub fn xdp_pass(dev: &str, seconds: Duration) -> Result<()> {
    use libbpf_rs::skel::{OpenSkel, SkelBuilder};
    use netstack_lat::bpf::xdp_pass::XdpPassSkelBuilder;
    let ifindex = nix_ifindex(dev)?;
    let mut obj = std::mem::MaybeUninit::uninit();
    let open = XdpPassSkelBuilder::default()
        .open(&mut obj)
        .context("opening the XDP object")?;
    let skel = open.load().context("loading the XDP program")?;
    let _link = skel
        .progs
        .xdp_pass
        .attach_xdp(ifindex)
        .with_context(|| format!("attaching XDP to {dev}"))?;
    ready()?;
    std::thread::sleep(seconds);
    Ok(())
}

/// `count` netfilter links at PRE_ROUTING priorities first, first + 1, ... (IPv4).
pub fn nf_hold(count: i32, seconds: Duration) -> Result<()> {
    use libbpf_rs::skel::{OpenSkel, SkelBuilder};
    use netstack_lat::bpf::xdp_pass::XdpPassSkelBuilder;
    let mut obj = std::mem::MaybeUninit::uninit();
    let open = XdpPassSkelBuilder::default()
        .open(&mut obj)
        .context("opening the test object")?;
    let skel = open.load().context("loading the netfilter program")?;
    let mut links = Vec::new();
    for k in 0..count {
        let opts = libbpf_rs::NetfilterOpts {
            protocol_family: libc::NFPROTO_IPV4,
            hooknum: libbpf_rs::NF_INET_PRE_ROUTING,
            priority: netstack_lat::cmd::trace::NF_FIRST + k,
            ..Default::default()
        };
        links.push(
            skel.progs
                .nf_accept
                .attach_netfilter_with_opts(opts)
                .with_context(|| format!("netfilter link {k}"))?,
        );
    }
    ready()?;
    std::thread::sleep(seconds);
    Ok(())
}

/// RTM_NEWLINK with IFLA_GSO_IPV4_MAX_SIZE (63) and IFLA_GRO_IPV4_MAX_SIZE (64), Linux 6.3+.
pub fn big_tcp4(dev: &str, size: u32) -> Result<()> {
    const IFLA_GSO_IPV4_MAX_SIZE: u16 = 63;
    const IFLA_GRO_IPV4_MAX_SIZE: u16 = 64;
    let index = nix_ifindex(dev)?;
    let mut msg = Vec::new();
    // nlmsghdr: length (patched below), type, flags, seq, pid.
    msg.extend(0u32.to_ne_bytes());
    msg.extend(libc::RTM_NEWLINK.to_ne_bytes());
    msg.extend(((libc::NLM_F_REQUEST | libc::NLM_F_ACK) as u16).to_ne_bytes());
    msg.extend(1u32.to_ne_bytes());
    msg.extend(0u32.to_ne_bytes());
    // ifinfomsg: family, pad, type, index, flags, change.
    msg.extend([libc::AF_UNSPEC as u8, 0]);
    msg.extend(0u16.to_ne_bytes());
    msg.extend(index.to_ne_bytes());
    msg.extend(0u32.to_ne_bytes());
    msg.extend(0u32.to_ne_bytes());
    for attr in [IFLA_GSO_IPV4_MAX_SIZE, IFLA_GRO_IPV4_MAX_SIZE] {
        msg.extend(8u16.to_ne_bytes());
        msg.extend(attr.to_ne_bytes());
        msg.extend(size.to_ne_bytes());
    }
    let len = msg.len() as u32;
    msg[..4].copy_from_slice(&len.to_ne_bytes());
    // SAFETY: a netlink socket, sent one complete message and read into a local buffer.
    unsafe {
        let fd = libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            libc::NETLINK_ROUTE,
        );
        if fd < 0 {
            bail!("netlink socket: {}", std::io::Error::last_os_error());
        }
        let sent = libc::send(fd, msg.as_ptr().cast(), msg.len(), 0);
        let mut ack = [0u8; 256];
        let got = libc::recv(fd, ack.as_mut_ptr().cast(), ack.len(), 0);
        libc::close(fd);
        if sent < 0 || got < 20 {
            bail!("netlink: {}", std::io::Error::last_os_error());
        }
        // NLMSG_ERROR: the error code follows the 16-byte header; 0 is the ACK.
        let err = i32::from_ne_bytes([ack[16], ack[17], ack[18], ack[19]]);
        if err != 0 {
            bail!(
                "setting IPv4 BIG TCP on {dev}: {} (Linux 6.3+)",
                std::io::Error::from_raw_os_error(-err)
            );
        }
    }
    Ok(())
}

fn nix_ifindex(dev: &str) -> Result<i32> {
    let name = std::ffi::CString::new(dev).context("device name")?;
    // SAFETY: a NUL-terminated name.
    let i = unsafe { libc::if_nametoindex(name.as_ptr()) };
    if i == 0 {
        bail!("no device {dev} in this namespace");
    }
    Ok(i as i32)
}

/// `count` datagrams in bursts of `burst` sent back to back, `gap_ms` between bursts.
pub fn udp_burst(to: SocketAddr, count: u64, burst: u64, gap_ms: u64, size: usize) -> Result<()> {
    let sock = UdpSocket::bind(any_addr(&to)).context("bind")?;
    sock.connect(to).context("connect")?;
    let data = payload(size);
    let mut sent = 0;
    while sent < count {
        for _ in 0..burst.min(count - sent) {
            sock.send(&data).context("send")?;
            sent += 1;
        }
        sleep_ms(gap_ms);
    }
    emit(&json!({ "sent": sent }).to_string())
}

/// CLOCK_REALTIME now, in ns (the clock of SO_TIMESTAMPNS).
fn realtime_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid out-pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_REALTIME, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

fn set_timestamps(fd: i32) -> Result<()> {
    let one: libc::c_int = 1;
    // SAFETY: a valid socket and option value.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_TIMESTAMPNS,
            (&one as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        bail!("SO_TIMESTAMPNS: {}", std::io::Error::last_os_error());
    }
    Ok(())
}

/// One recvmsg: bytes read (0 at EOF) and the wait from the kernel's receive stamp to
/// this return, in ns (None without a stamp).
fn recv_stamped(fd: i32, buf: &mut [u8]) -> Result<(usize, Option<u64>)> {
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    let mut cbuf = [0u64; 16];
    // SAFETY: msghdr is plain C data; zero is a valid start.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cbuf.as_mut_ptr().cast();
    msg.msg_controllen = std::mem::size_of_val(&cbuf) as _;
    loop {
        // SAFETY: msg points at live buffers of the sizes given.
        let n = unsafe { libc::recvmsg(fd, &mut msg, 0) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == ErrorKind::Interrupted {
                continue;
            }
            return Err(e).context("recvmsg");
        }
        let now = realtime_ns();
        let mut wait = None;
        // SAFETY: the CMSG macros walk the control buffer the kernel filled.
        unsafe {
            let mut c = libc::CMSG_FIRSTHDR(&msg);
            while !c.is_null() {
                if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_TIMESTAMPNS {
                    let ts: libc::timespec = std::ptr::read_unaligned(libc::CMSG_DATA(c).cast());
                    let stamp = ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64;
                    wait = Some(now.saturating_sub(stamp));
                }
                c = libc::CMSG_NXTHDR(&msg, c);
            }
        }
        return Ok((n as usize, wait));
    }
}

/// Waits of reads, summarised for the JSON line.
#[derive(Default)]
struct Waits {
    reads: u64,
    stamped: Vec<u64>,
}

impl Waits {
    fn add(&mut self, wait: Option<u64>) {
        self.reads += 1;
        self.stamped.extend(wait);
    }

    fn json(&mut self) -> serde_json::Value {
        self.stamped.sort_unstable();
        let at = |q: f64| {
            let n = self.stamped.len();
            (n > 0).then(|| self.stamped[((n as f64 * q).ceil() as usize).clamp(1, n) - 1])
        };
        json!({
            "reads": self.reads,
            "stamped": self.stamped.len(),
            "max_wait_ns": self.stamped.last(),
            "p50_wait_ns": at(0.5),
            "p99_wait_ns": at(0.99),
        })
    }
}

/// Read `count` datagrams as they come, each stamped by the kernel.
pub fn udp_stamp_recv(
    bind: SocketAddr,
    count: u64,
    rcvbuf: Option<usize>,
    delay_ms: u64,
) -> Result<()> {
    let sock = UdpSocket::bind(bind).with_context(|| format!("cannot bind UDP {bind}"))?;
    let fd = sock.as_raw_fd();
    set_timestamps(fd)?;
    if let Some(b) = rcvbuf {
        let v = b as libc::c_int;
        // SAFETY: a valid socket and option value.
        unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_RCVBUF,
                (&v as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
    }
    ready()?;
    let mut buf = vec![0u8; 65536];
    let mut w = Waits::default();
    while w.reads < count {
        if delay_ms > 0 {
            wait_readable(fd)?;
            sleep_ms(delay_ms);
        }
        let (_, wait) = recv_stamped(fd, &mut buf)?;
        w.add(wait);
    }
    emit(&w.json().to_string())
}

/// One connection, `count` messages of `size` bytes, read `lowat` at a time, each read
/// `delay_ms` after its data became readable (with SO_RCVLOWAT when `lowat` > 1: only once
/// all of them are in), stamped by the kernel.
pub fn tcp_stamp_recv(
    bind: SocketAddr,
    count: u64,
    size: usize,
    delay_ms: u64,
    lowat: usize,
) -> Result<()> {
    let l = TcpListener::bind(bind).with_context(|| format!("cannot listen on {bind}"))?;
    // On the listener, so the accepted socket has both before its first segment arrives.
    set_timestamps(l.as_raw_fd())?;
    if lowat > 1 {
        let v = (size * lowat) as libc::c_int;
        // SAFETY: a valid socket and option value.
        let rc = unsafe {
            libc::setsockopt(
                l.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVLOWAT,
                (&v as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            bail!("SO_RCVLOWAT: {}", std::io::Error::last_os_error());
        }
    }
    ready()?;
    let (mut s, _) = l.accept().context("accept")?;
    let mut w = Waits::default();
    for i in 0..count / lowat as u64 {
        wait_readable(s.as_raw_fd())?;
        sleep_ms(delay_ms);
        if !read_exact_stamped(&mut s, size * lowat, &mut w)? {
            bail!("EOF after {i} reads");
        }
    }
    emit(&w.json().to_string())
}

/// Read exactly `n` bytes of a TCP stream, each read stamped; false at an early EOF.
fn read_exact_stamped(s: &mut TcpStream, n: usize, w: &mut Waits) -> Result<bool> {
    let mut buf = vec![0u8; n];
    let mut got = 0;
    while got < n {
        let (k, wait) = recv_stamped(s.as_raw_fd(), &mut buf[got..])?;
        if k == 0 {
            return Ok(false);
        }
        w.add(wait);
        got += k;
    }
    Ok(true)
}

/// Serve `conns` connections one after another: read a `req`-byte request, answer `reply`
/// bytes, wait for the client's close, close.
pub fn tcp_rr_many_server(bind: SocketAddr, conns: u64, req: usize, reply: usize) -> Result<()> {
    let l = TcpListener::bind(bind).with_context(|| format!("cannot listen on {bind}"))?;
    ready()?;
    let answer = payload(reply);
    let mut w = Waits::default();
    for i in 0..conns {
        let (mut s, _) = l.accept().with_context(|| format!("accept {i}"))?;
        set_timestamps(s.as_raw_fd())?;
        if !read_exact_stamped(&mut s, req, &mut w)? {
            bail!("connection {i}: EOF before the request");
        }
        s.write_all(&answer).context("reply")?;
        let mut rest = [0u8; 64];
        loop {
            match s.read(&mut rest) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) if e.kind() == ErrorKind::ConnectionReset => break,
                Err(e) => return Err(e).context("waiting for the close"),
            }
        }
    }
    emit(&w.json().to_string())
}

/// `conns` connections, each: connect, write `req` bytes, read the `reply`, close. With
/// `port`, every connection comes from that one local port (SO_REUSEADDR, and a reset at
/// close so no TIME_WAIT holds the 4-tuple): the same connection, reborn each time.
pub fn tcp_rr_many_client(
    to: SocketAddr,
    conns: u64,
    req: usize,
    reply: usize,
    port: Option<u16>,
) -> Result<()> {
    let data = payload(req);
    let mut w = Waits::default();
    for i in 0..conns {
        let mut s = match port {
            Some(p) => connect_from(to, p),
            None => TcpStream::connect(to).map_err(Into::into),
        }
        .with_context(|| format!("connect {i} to {to}"))?;
        s.set_nodelay(true).context("TCP_NODELAY")?;
        set_timestamps(s.as_raw_fd())?;
        s.write_all(&data).context("request")?;
        if !read_exact_stamped(&mut s, reply, &mut w)? {
            bail!("connection {i}: EOF before the reply");
        }
        if port.is_some() {
            // SO_LINGER 0: close with a reset, leaving no TIME_WAIT behind.
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
    }
    emit(&w.json().to_string())
}

/// A TCP connection to `to` from local port `port`.
pub fn connect_from(to: SocketAddr, port: u16) -> Result<TcpStream> {
    use std::os::fd::FromRawFd;
    let domain = if to.is_ipv4() {
        libc::AF_INET
    } else {
        libc::AF_INET6
    };
    // SAFETY: plain socket calls on a descriptor owned here; addresses are built in place.
    unsafe {
        let fd = libc::socket(domain, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            bail!("socket: {}", std::io::Error::last_os_error());
        }
        let s = TcpStream::from_raw_fd(fd);
        let one: libc::c_int = 1;
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_REUSEADDR,
            (&one as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
        let (local, len) = sockaddr(any_addr(&to), port);
        if libc::bind(fd, (&local as *const libc::sockaddr_storage).cast(), len) != 0 {
            bail!("bind to port {port}: {}", std::io::Error::last_os_error());
        }
        let (remote, len) = sockaddr(to, to.port());
        if libc::connect(fd, (&remote as *const libc::sockaddr_storage).cast(), len) != 0 {
            bail!("connect: {}", std::io::Error::last_os_error());
        }
        Ok(s)
    }
}

fn sockaddr(a: SocketAddr, port: u16) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: sockaddr_storage is plain data, large enough for either family.
    let mut ss: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let len = match a {
        SocketAddr::V4(v4) => {
            // SAFETY: sockaddr_in fits in sockaddr_storage.
            let sin = unsafe { &mut *(&mut ss as *mut _ as *mut libc::sockaddr_in) };
            sin.sin_family = libc::AF_INET as libc::sa_family_t;
            sin.sin_port = port.to_be();
            sin.sin_addr.s_addr = u32::from_ne_bytes(v4.ip().octets());
            std::mem::size_of::<libc::sockaddr_in>()
        }
        SocketAddr::V6(v6) => {
            // SAFETY: sockaddr_in6 fits in sockaddr_storage.
            let sin6 = unsafe { &mut *(&mut ss as *mut _ as *mut libc::sockaddr_in6) };
            sin6.sin6_family = libc::AF_INET6 as libc::sa_family_t;
            sin6.sin6_port = port.to_be();
            sin6.sin6_addr.s6_addr = v6.ip().octets();
            std::mem::size_of::<libc::sockaddr_in6>()
        }
    };
    (ss, len as libc::socklen_t)
}

/// Sockets closed and reopened on one port, with data left unread: per round a new
/// socket on 127.0.0.1:`port` gets `per_round` datagrams from a sender socket of this
/// process, reads `read` of them and closes; the last round reads all. On one CPU, the
/// freed socket's memory is the next one's (the slab's last freed object).
pub fn udp_reuse(port: u16, rounds: u64, per_round: u64, read: u64) -> Result<()> {
    let at: SocketAddr = ([127, 0, 0, 1], port).into();
    let tx = UdpSocket::bind(any_addr(&at)).context("bind the sender")?;
    let mut w = Waits::default();
    let mut buf = vec![0u8; 2048];
    pin_cpu(0)?;
    ready()?;
    for r in 0..rounds {
        let sock = UdpSocket::bind(at).with_context(|| format!("round {r}: bind {at}"))?;
        set_timestamps(sock.as_raw_fd())?;
        for _ in 0..per_round {
            tx.send_to(&payload(64), at).context("send")?;
        }
        let want = if r + 1 == rounds { per_round } else { read };
        for _ in 0..want {
            let (_, wait) = recv_stamped(sock.as_raw_fd(), &mut buf)?;
            w.add(wait);
        }
        // What is left unread goes with the socket; a pause makes a wrongly joined read
        // stand out by its length.
        std::thread::sleep(Duration::from_millis(20));
    }
    emit(&w.json().to_string())
}

fn pin_cpu(cpu: usize) -> Result<()> {
    // SAFETY: cpu_set_t is plain data; the calls only read it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            bail!("sched_setaffinity: {}", std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// A UDP sender whose send syscalls are mixed with what used to confuse the owner join:
/// per round a write() to a file, a sendmsg that fails before it reaches the socket, a
/// pause, a sendmmsg of `batch` datagrams, a move to the other CPU, one send(). Every
/// datagram leaves inside its own send call.
pub fn udp_mixed_send(to: SocketAddr, rounds: u64, batch: usize, file: &str) -> Result<()> {
    let sock = UdpSocket::bind(any_addr(&to)).context("bind")?;
    sock.connect(to).context("connect")?;
    let fd = sock.as_raw_fd();
    let mut f = std::fs::File::create(file).with_context(|| format!("create {file}"))?;
    let data = payload(100);
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut sent = 0u64;
    let start = Instant::now();
    for r in 0..rounds {
        pin_cpu(r as usize % cpus)?;
        f.write_all(b"not a socket\n").context("file write")?;
        // EFAULT while copying the message header: the socket never sees this call.
        // SAFETY: the kernel checks the pointer and fails; nothing is dereferenced here.
        let rc = unsafe { libc::sendmsg(fd, 8 as *const libc::msghdr, 0) };
        if rc >= 0 {
            bail!("a sendmsg with a bad header succeeded");
        }
        sleep_ms(5);
        let mut iovs: Vec<libc::iovec> = (0..batch)
            .map(|_| libc::iovec {
                iov_base: data.as_ptr() as *mut _,
                iov_len: data.len(),
            })
            .collect();
        let mut hdrs = mmsg_headers(&mut iovs);
        // SAFETY: hdrs point at live iovecs over `data`.
        let n = unsafe { libc::sendmmsg(fd, hdrs.as_mut_ptr(), batch as u32, 0) };
        if n != batch as i32 {
            bail!("sendmmsg sent {n} of {batch}");
        }
        sent += batch as u64;
        pin_cpu((r as usize + 1) % cpus)?;
        sleep_ms(2);
        sock.send(&data).context("send")?;
        sent += 1;
        sleep_ms(5);
    }
    let _ = std::fs::remove_file(file);
    emit(&json!({ "sent": sent, "seconds": start.elapsed().as_secs_f64() }).to_string())
}

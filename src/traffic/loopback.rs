//! Loopback traffic with a known ground truth: a reader that lets each message wait in
//! its socket queue for a chosen time before reading it (used by `selftest` and nsl-load).

use std::io::{self, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::{AsRawFd, RawFd};
use std::thread;
use std::time::Duration;

use anyhow::{bail, Context, Result};

/// Block until `fd` is readable, so the data is already queued when the reader then
/// sleeps: the sleep is what shows up as socket-queue latency in the tracer.
pub fn wait_readable(fd: RawFd) -> Result<()> {
    let mut pfd = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    loop {
        // SAFETY: `pfd` is a valid pollfd and we pass a count of exactly 1.
        let r = unsafe { libc::poll(&mut pfd, 1, -1) };
        if r > 0 {
            if pfd.revents & libc::POLLNVAL != 0 {
                bail!("poll: invalid socket");
            }
            return Ok(());
        }
        if r < 0 {
            let err = io::Error::last_os_error();
            if err.kind() != ErrorKind::Interrupted {
                return Err(err).context("poll");
            }
        }
    }
}

/// A UDP and a TCP socket bound to the same loopback port, so one `--port` covers both.
pub struct Pair {
    pub udp: UdpSocket,
    pub tcp: TcpListener,
    pub port: u16,
}

impl Pair {
    pub fn bind_loopback() -> Result<Pair> {
        for _ in 0..64 {
            let tcp = TcpListener::bind("127.0.0.1:0").context("binding a TCP listener")?;
            let port = tcp.local_addr()?.port();
            if let Ok(udp) = UdpSocket::bind(("127.0.0.1", port)) {
                return Ok(Pair { udp, tcp, port });
            }
        }
        bail!("no loopback port free for both UDP and TCP")
    }
}

/// What an exchange did: messages read, and the sender's port (which tells its flow apart).
#[derive(Debug, Clone, Copy)]
pub struct Sent {
    pub messages: u32,
    pub from_port: u16,
}

/// `count` messages of `size` bytes, `gap` apart, each read `delay` after it was queued.
pub fn delayed_udp(
    rx: &UdpSocket,
    count: u32,
    size: usize,
    delay: Duration,
    gap: Duration,
) -> Result<Sent> {
    let to: SocketAddr = rx.local_addr()?;
    let reader = rx.try_clone()?;
    reader.set_read_timeout(Some(Duration::from_secs(30)))?;
    let r = thread::spawn(move || -> Result<u32> {
        let mut buf = vec![0u8; 65536];
        for i in 0..count {
            wait_readable(reader.as_raw_fd())?;
            thread::sleep(delay);
            reader
                .recv(&mut buf)
                .with_context(|| format!("UDP read of message {i}"))?;
        }
        Ok(count)
    });
    let tx = UdpSocket::bind("127.0.0.1:0").context("binding the UDP sender")?;
    let from_port = tx.local_addr()?.port();
    let data = vec![0x5au8; size];
    for i in 0..count {
        if i > 0 {
            thread::sleep(gap);
        }
        tx.send_to(&data, to).context("UDP send")?;
    }
    let messages = r
        .join()
        .map_err(|_| anyhow::anyhow!("UDP reader panicked"))??;
    Ok(Sent {
        messages,
        from_port,
    })
}

/// As `delayed_udp`, over one TCP connection to `listener` (TCP_NODELAY, one write each).
pub fn delayed_tcp(
    listener: &TcpListener,
    count: u32,
    size: usize,
    delay: Duration,
    gap: Duration,
) -> Result<Sent> {
    let to = listener.local_addr()?;
    let mut tx = TcpStream::connect_timeout(&to, Duration::from_secs(10))
        .with_context(|| format!("connecting to {to}"))?;
    tx.set_nodelay(true)?;
    let (mut rx, _) = listener.accept().context("TCP accept")?;
    rx.set_read_timeout(Some(Duration::from_secs(30)))?;
    let r = thread::spawn(move || -> Result<u32> {
        let mut buf = vec![0u8; size];
        for i in 0..count {
            wait_readable(rx.as_raw_fd())?;
            thread::sleep(delay);
            rx.read_exact(&mut buf)
                .with_context(|| format!("TCP read of message {i}"))?;
        }
        Ok(count)
    });
    let data = vec![0xa5u8; size];
    for i in 0..count {
        if i > 0 {
            thread::sleep(gap);
        }
        tx.write_all(&data).context("TCP write")?;
    }
    finish_tcp(r, &tx)
}

/// `count` rounds over one TCP connection (TCP_NODELAY): a write with MSG_MORE, which the
/// kernel holds in the socket for what follows, then after `hold` a plain write that sends
/// both. The first write's bytes wait `hold` between send and transmit.
pub fn corked_tcp(listener: &TcpListener, count: u32, size: usize, hold: Duration) -> Result<Sent> {
    let to = listener.local_addr()?;
    let tx = TcpStream::connect_timeout(&to, Duration::from_secs(10))
        .with_context(|| format!("connecting to {to}"))?;
    tx.set_nodelay(true)?;
    let (mut rx, _) = listener.accept().context("TCP accept")?;
    rx.set_read_timeout(Some(Duration::from_secs(30)))?;
    let r = thread::spawn(move || -> Result<u32> {
        let mut buf = vec![0u8; 2 * size];
        for i in 0..count {
            rx.read_exact(&mut buf)
                .with_context(|| format!("TCP read of round {i}"))?;
        }
        Ok(count)
    });
    let data = vec![0x3cu8; size];
    for _ in 0..count {
        // SAFETY: the buffer is valid for its length; the fd is an open TCP socket.
        let n = unsafe {
            libc::send(
                tx.as_raw_fd(),
                data.as_ptr().cast(),
                data.len(),
                libc::MSG_MORE,
            )
        };
        if n != data.len() as isize {
            bail!("send with MSG_MORE: {}", io::Error::last_os_error());
        }
        thread::sleep(hold);
        (&tx).write_all(&data).context("TCP write")?;
    }
    finish_tcp(r, &tx)
}

/// `count` one-byte UDP datagrams to `rx`, `gap` apart; `rx` reads them.
pub fn udp_paced(rx: &UdpSocket, count: u32, gap: Duration) -> Result<Sent> {
    let to = rx.local_addr()?;
    let tx = UdpSocket::bind("127.0.0.1:0").context("binding the UDP sender")?;
    let from_port = tx.local_addr()?.port();
    rx.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut buf = [0u8; 16];
    for i in 0..count {
        if i > 0 {
            thread::sleep(gap);
        }
        tx.send_to(b"x", to).context("UDP send")?;
        rx.recv(&mut buf)
            .with_context(|| format!("UDP read of datagram {i}"))?;
    }
    Ok(Sent {
        messages: count,
        from_port,
    })
}

/// Wait for the reader, then close the sender: what a TCP exchange did.
fn finish_tcp(reader: thread::JoinHandle<Result<u32>>, tx: &TcpStream) -> Result<Sent> {
    let messages = reader
        .join()
        .map_err(|_| anyhow::anyhow!("TCP reader panicked"))??;
    let from_port = tx.local_addr()?.port();
    let _ = tx.shutdown(std::net::Shutdown::Both);
    Ok(Sent {
        messages,
        from_port,
    })
}

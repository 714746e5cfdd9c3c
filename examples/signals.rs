//! The congestion-signals library as a rate controller would use it: read every 200 ms and
//! feed the governor. Run as root: `cargo run --release --example signals [-- --port 4433]`.
//! `--self-test` sends known traffic on loopback and checks what the collector saw.

use std::net::UdpSocket;
use std::time::Duration;

use anyhow::{bail, Result};
use netstack_lat::cmd::signals::{CongestionCollector, CongestionSignals};

/// Stand-in for the QUIC governor of the seed: it only prints what it would act on.
fn governor_update(s: &CongestionSignals) {
    println!("{}", netstack_lat::cmd::signals::line(s.interval_s, s));
}

fn self_test() -> Result<()> {
    let rx = UdpSocket::bind("127.0.0.1:0")?;
    let port = rx.local_addr()?.port();
    let mut collector = CongestionCollector::builder().port(port).build()?;
    // Connected, so the socket itself names the port the collector filters on.
    let tx = UdpSocket::bind("127.0.0.1:0")?;
    tx.connect(("127.0.0.1", port))?;
    for _ in 0..10 {
        tx.send(&[0u8; 100])?;
    }
    let s = collector.next_interval(Duration::from_millis(200))?;
    governor_update(&s);
    if s.udp_send_bytes != 1000 || s.send_packets != 10 {
        bail!("expected 1000 bytes in 10 sends, saw {s:?}");
    }
    println!("self-test ok");
    Ok(())
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--self-test") {
        return self_test();
    }
    let mut builder = CongestionCollector::builder();
    if let Some(i) = args.iter().position(|a| a == "--port") {
        builder = builder.port(args.get(i + 1).map_or(Ok(0), |p| p.parse())?);
    }
    let mut collector = builder.build()?;
    loop {
        let signals = collector.next_interval(Duration::from_millis(200))?;
        governor_update(&signals);
    }
}

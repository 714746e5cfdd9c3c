//! Ring-buffer bytes -> typed events. The layouts are the skeleton's generated types
//! (from bpf/netstack.h); this module only turns them into plain Rust values.

pub mod marker_record;

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use serde::Serialize;

use crate::bpf::rx::types;
use crate::bpf::tx::types as txt;

pub const AF_INET: u8 = 2;
pub const AF_INET6: u8 = 10;
pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_UDP: u8 = 17;

/// Receive points in path order; `rx_read` is stamped by the frontend's join.
pub const RX_POINTS: [&str; 6] = [
    "rx_driver",
    "rx_netif",
    "rx_ip",
    "rx_transport",
    "rx_sockq",
    "rx_read",
];
/// Transmit points in path order; in span ids they follow the receive points.
pub const TX_POINTS: [&str; 8] = [
    "tx_send",
    "tx_transport",
    "tx_nf_done",
    "tx_qdisc_enq",
    "tx_qdisc_deq",
    "tx_driver",
    "tx_done",
    "tx_free",
];
/// Index of the first TX point in the combined point list (see `point_name`).
pub const TX_BASE: usize = RX_POINTS.len();
pub const TX_SEND: usize = txt::tx_point::TX_SEND.0 as usize;
pub const TX_TRANSPORT: usize = txt::tx_point::TX_TRANSPORT.0 as usize;
pub const TX_DONE: usize = txt::tx_point::TX_DONE.0 as usize;
pub const TX_NPOINTS: usize = txt::tx_point::TX_NPOINTS.0 as usize;

pub const TXF_TASK: u32 = txt::tx_flags::TXF_TASK.0;
pub const TXF_EVICTED: u32 = txt::tx_flags::TXF_EVICTED.0;
pub const TXF_DROPPED: u32 = txt::tx_flags::TXF_DROPPED.0;
pub const TXF_AT_EXIT: u32 = txt::tx_flags::TXF_AT_EXIT.0;
pub const TXF_QUEUED: u32 = txt::tx_flags::TXF_QUEUED.0;

/// The NET_RX softirq run that processed an RX packet: its first raise and its start.
/// They are context, not path points: their span stands beside the path's spans.
pub const RX_SIRQ_RAISE: usize = TX_BASE + TX_NPOINTS;
pub const RX_SIRQ_ENTRY: usize = RX_SIRQ_RAISE + 1;
/// The netfilter split, also beside the path: where the first hook's functions end and
/// the second's begin (RX: PRE_ROUTING, LOCAL_IN; TX: LOCAL_OUT, POST_ROUTING).
pub const RX_NF_PRE_DONE: usize = RX_SIRQ_ENTRY + 1;
pub const RX_NF_IN: usize = RX_SIRQ_ENTRY + 2;
pub const TX_NF_OUT_DONE: usize = RX_SIRQ_ENTRY + 3;
pub const TX_NF_POST: usize = RX_SIRQ_ENTRY + 4;

/// Name of a point by its index in the combined list: RX points, TX points, then the
/// softirq context points.
pub fn point_name(i: usize) -> &'static str {
    match i {
        _ if i < TX_BASE => RX_POINTS[i],
        _ if i < RX_SIRQ_RAISE => TX_POINTS[i - TX_BASE],
        RX_SIRQ_RAISE => "rx_softirq_raise",
        RX_SIRQ_ENTRY => "rx_softirq_entry",
        RX_NF_PRE_DONE => "rx_nf_pre_done",
        RX_NF_IN => "rx_nf_in",
        TX_NF_OUT_DONE => "tx_nf_out_done",
        TX_NF_POST => "tx_nf_post",
        _ => "?",
    }
}

pub const RX_DRIVER: usize = types::rx_point::RX_DRIVER.0 as usize;
pub const RX_IP: usize = types::rx_point::RX_IP.0 as usize;
pub const RX_TRANSPORT: usize = types::rx_point::RX_TRANSPORT.0 as usize;
pub const TX_NF_DONE: usize = txt::tx_point::TX_NF_DONE.0 as usize;
pub const RX_NETIF: usize = types::rx_point::RX_NETIF.0 as usize;
pub const RX_SOCKQ: usize = types::rx_point::RX_SOCKQ.0 as usize;
pub const RX_READ: usize = RX_SOCKQ + 1;
const RX_KERNEL_POINTS: usize = types::rx_point::RX_NPOINTS.0 as usize;

pub const CHAIN_FROM_SOCK: u32 = types::chain_flags::CHAIN_FROM_SOCK.0;
pub const CHAIN_FLUSHED: u32 = types::chain_flags::CHAIN_FLUSHED.0;
pub const CHAIN_AT_EXIT: u32 = types::chain_flags::CHAIN_AT_EXIT.0;
pub const CHAIN_PLACEHOLDER: u32 = types::chain_flags::CHAIN_PLACEHOLDER.0;
pub const CHAIN_SEQ_FLAG: u32 = types::chain_flags::CHAIN_SEQ_FLAG.0;

/// A 5-tuple in packet direction (for RX: source = remote peer, destination = local).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Flow {
    pub proto: u8,
    pub saddr: IpAddr,
    pub sport: u16,
    pub daddr: IpAddr,
    pub dport: u16,
}

impl Flow {
    pub fn proto_name(&self) -> &'static str {
        proto_name(self.proto)
    }
}

impl fmt::Display for Flow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} -> {}",
            self.proto_name(),
            sockaddr(self.saddr, self.sport),
            sockaddr(self.daddr, self.dport)
        )
    }
}

pub fn proto_name(proto: u8) -> &'static str {
    match proto {
        IPPROTO_TCP => "tcp",
        IPPROTO_UDP => "udp",
        _ => "other",
    }
}

fn sockaddr(a: IpAddr, port: u16) -> String {
    match a {
        IpAddr::V4(a) => format!("{a}:{port}"),
        IpAddr::V6(a) => format!("[{a}]:{port}"),
    }
}

fn addr(family: u8, raw: &[u8; 16]) -> IpAddr {
    if family == AF_INET6 {
        IpAddr::V6(Ipv6Addr::from(*raw))
    } else {
        IpAddr::V4(Ipv4Addr::new(raw[0], raw[1], raw[2], raw[3]))
    }
}

/// What an RX chain knows beside its path points: the NET_RX softirq delay and the
/// netfilter split stamps.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Context {
    pub sirq: Option<u64>,
    pub nf_mid: [u64; 2],
}

/// An skb's receive timeline up to the socket queue. `ts[i]` is 0 where point i was not seen.
#[derive(Debug, Clone, PartialEq)]
pub struct Chain {
    pub ts: [u64; 6],
    pub sk: u64,
    pub flow: Flow,
    pub ifindex: u32,
    pub netns: u32,
    pub payload: u32,
    pub seq_end: u32,
    pub flags: u32,
    pub cpu: u32,
    /// The NET_RX run that processed it (0 = unknown).
    pub sirq_raise: u64,
    pub sirq_entry: u64,
    /// The netfilter split: last PRE_ROUTING and first LOCAL_IN priority (0 = not seen).
    pub nf_mid: [u64; 2],
}

impl Chain {
    /// The spans beside the path that this chain can give.
    pub fn context(&self) -> Context {
        Context {
            sirq: self.softirq_delay(),
            nf_mid: self.nf_mid,
        }
    }

    /// raise -> entry of the NET_RX run that processed the packet.
    pub fn softirq_delay(&self) -> Option<u64> {
        (self.sirq_raise != 0 && self.sirq_entry >= self.sirq_raise)
            .then(|| self.sirq_entry - self.sirq_raise)
    }
}

/// The process that read or wrote a flow's data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Owner {
    pub tgid: u32,
    pub comm: Comm,
}

/// A task's command name as the kernel keeps it: fixed size, so decoding a read event
/// allocates nothing.
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Comm(pub [u8; 16]);

impl Comm {
    pub fn from_raw(raw: &[i8; 16]) -> Self {
        Comm(raw.map(|c| c as u8))
    }
}

impl From<&str> for Comm {
    fn from(s: &str) -> Self {
        let mut c = [0u8; 16];
        for (d, b) in c.iter_mut().take(15).zip(s.bytes()) {
            *d = b;
        }
        Comm(c)
    }
}

impl fmt::Display for Comm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&comm_str(&self.0))
    }
}

impl fmt::Debug for Comm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.to_string())
    }
}

impl Serialize for Comm {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

/// One application read (recvmsg/recvfrom/read) on an inet socket.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Read {
    pub ts: u64,
    pub sk: u64,
    pub pid: u32,
    pub tgid: u32,
    pub bytes: i32,
    pub copied_seq: u32,
    pub proto: u8,
    pub comm: Comm,
}

/// An skb's transmit timeline from LOCAL_OUT to completion. `ts[i]` is 0 where point i
/// was not seen; `ts[TX_SEND]` is set by BPF for UDP and by the join for TCP.
#[derive(Debug, Clone, PartialEq)]
pub struct TxChain {
    pub ts: [u64; 8],
    pub skb: u64,
    pub sk: u64,
    pub flow: Flow,
    pub ifindex: u32,
    pub netns: u32,
    pub payload: u32,
    pub seq: u32,
    pub flags: u32,
    /// The sender, when the packet left inside its send call (UDP).
    pub tgid: u32,
    pub comm: Comm,
    pub cpu: u32,
    /// The netfilter split: last LOCAL_OUT and first POST_ROUTING priority (0 = not seen).
    pub nf_mid: [u64; 2],
}

/// A TCP write started: its data begins at sequence number `seq`.
#[derive(Debug, Clone, PartialEq)]
pub struct TxSend {
    pub ts: u64,
    pub sk: u64,
    pub flow: Flow,
    pub seq: u32,
    pub msg_flags: u32,
    pub pid: u32,
    pub tgid: u32,
    pub comm: Comm,
}

/// Why data of a write stayed in the socket after the write returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum HeldReason {
    Nagle,
    Cork,
    /// A reason this build does not know (a newer BPF object).
    Other,
}

impl HeldReason {
    pub fn from_raw(r: u32) -> Self {
        if r == txt::tx_held_reason::HELD_NAGLE.0 {
            HeldReason::Nagle
        } else if r == txt::tx_held_reason::HELD_CORK.0 {
            HeldReason::Cork
        } else {
            HeldReason::Other
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            HeldReason::Nagle => "nagle",
            HeldReason::Cork => "cork",
            HeldReason::Other => "held",
        }
    }
}

/// A TCP write returned with bytes from `snd_nxt` to `seq_end` not yet sent.
#[derive(Debug, Clone, PartialEq)]
pub struct TxHeld {
    pub ts: u64,
    pub sk: u64,
    /// First sequence number of the write (write_seq at the end minus the bytes taken).
    pub seq: u32,
    pub seq_end: u32,
    pub snd_nxt: u32,
    pub packets_out: u32,
    pub reason: HeldReason,
    pub nonagle: u32,
    pub msg_flags: u32,
}

/// A TCP socket reached TCP_CLOSE: what the joins keep for it ends.
#[derive(Debug, Clone, PartialEq)]
pub struct SockClose {
    pub ts: u64,
    pub sk: u64,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    Chain(Chain),
    Read(Read),
    TxChain(TxChain),
    TxSend(TxSend),
    TxHeld(TxHeld),
    SockClose(SockClose),
}

impl Event {
    /// When the event was emitted: the time order the join needs across CPUs.
    pub fn order_ts(&self) -> u64 {
        match self {
            Event::Chain(c) if c.ts[RX_SOCKQ] != 0 => c.ts[RX_SOCKQ],
            Event::Chain(c) => c.ts.iter().copied().max().unwrap_or(0),
            Event::Read(r) => r.ts,
            Event::TxChain(c) => c.ts.iter().copied().max().unwrap_or(0),
            Event::TxSend(s) => s.ts,
            Event::TxHeld(h) => h.ts,
            Event::SockClose(c) => c.ts,
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
pub enum DecodeError {
    Short { kind: u32, len: usize },
    UnknownKind(u32),
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::Short { kind, len } => {
                write!(f, "event kind {kind}: {len} bytes is short")
            }
            DecodeError::UnknownKind(k) => write!(f, "unknown event kind {k}"),
        }
    }
}

pub fn comm_str(raw: &[u8]) -> String {
    let end = raw.iter().position(|&b| b == 0).unwrap_or(raw.len());
    String::from_utf8_lossy(&raw[..end]).into_owned()
}

pub fn flow_of(
    family: u8,
    proto: u8,
    saddr: &[u8; 16],
    sport: u16,
    daddr: &[u8; 16],
    dport: u16,
) -> Flow {
    Flow {
        proto,
        saddr: addr(family, saddr),
        sport,
        daddr: addr(family, daddr),
        dport,
    }
}

impl From<&txt::tx_chain_event> for TxChain {
    fn from(e: &txt::tx_chain_event) -> Self {
        let f = &e.flow;
        TxChain {
            ts: e.ts,
            skb: e.skb,
            sk: e.sk,
            flow: flow_of(f.family, f.proto, &f.saddr, f.sport, &f.daddr, f.dport),
            ifindex: e.ifindex,
            netns: e.netns,
            payload: e.payload,
            seq: e.seq,
            flags: e.flags,
            tgid: e.tgid,
            comm: Comm::from_raw(&e.comm),
            cpu: e.cpu,
            nf_mid: e.nf_mid,
        }
    }
}

fn copy<T: plain::Plain + Default>(kind: u32, data: &[u8]) -> Result<T, DecodeError> {
    let mut e = T::default();
    plain::copy_from_bytes(&mut e, data).map_err(|_| DecodeError::Short {
        kind,
        len: data.len(),
    })?;
    Ok(e)
}

impl From<&types::rx_chain_event> for Chain {
    fn from(e: &types::rx_chain_event) -> Self {
        let mut ts = [0u64; 6];
        ts[..RX_KERNEL_POINTS].copy_from_slice(&e.ts);
        Chain {
            ts,
            sk: e.sk,
            flow: Flow {
                proto: e.flow.proto,
                saddr: addr(e.flow.family, &e.flow.saddr),
                sport: e.flow.sport,
                daddr: addr(e.flow.family, &e.flow.daddr),
                dport: e.flow.dport,
            },
            ifindex: e.ifindex,
            netns: e.netns,
            payload: e.payload,
            seq_end: e.seq_end,
            flags: e.flags,
            cpu: e.cpu,
            sirq_raise: e.sirq_raise,
            sirq_entry: e.sirq_entry,
            nf_mid: e.nf_mid,
        }
    }
}

/// Decode one ring-buffer record.
pub fn decode(data: &[u8]) -> Result<Event, DecodeError> {
    let mut kind = 0u32;
    plain::copy_from_bytes(&mut kind, data).map_err(|_| DecodeError::Short {
        kind: 0,
        len: data.len(),
    })?;
    match kind {
        k if k == types::event_kind::EV_RX_CHAIN.0 => {
            let mut e = types::rx_chain_event::default();
            plain::copy_from_bytes(&mut e, data).map_err(|_| DecodeError::Short {
                kind,
                len: data.len(),
            })?;
            Ok(Event::Chain(Chain::from(&e)))
        }
        k if k == types::event_kind::EV_RX_READ.0 => {
            let mut e = types::rx_read_event::default();
            plain::copy_from_bytes(&mut e, data).map_err(|_| DecodeError::Short {
                kind,
                len: data.len(),
            })?;
            Ok(Event::Read(Read {
                ts: e.ts,
                sk: e.sk,
                pid: e.pid,
                tgid: e.tgid,
                bytes: e.bytes,
                copied_seq: e.copied_seq,
                proto: e.proto,
                comm: Comm::from_raw(&e.comm),
            }))
        }
        k if k == types::event_kind::EV_TX_CHAIN.0 => {
            let e: txt::tx_chain_event = copy(kind, data)?;
            Ok(Event::TxChain(TxChain::from(&e)))
        }
        k if k == types::event_kind::EV_TX_SEND.0 => {
            let e: txt::tx_send_event = copy(kind, data)?;
            let f = &e.flow;
            Ok(Event::TxSend(TxSend {
                ts: e.ts,
                sk: e.sk,
                flow: flow_of(f.family, f.proto, &f.saddr, f.sport, &f.daddr, f.dport),
                seq: e.seq,
                msg_flags: e.msg_flags,
                pid: e.pid,
                tgid: e.tgid,
                comm: Comm::from_raw(&e.comm),
            }))
        }
        k if k == types::event_kind::EV_TX_HELD.0 => {
            let e: txt::tx_send_event = copy(kind, data)?;
            Ok(Event::TxHeld(TxHeld {
                ts: e.ts,
                sk: e.sk,
                seq: e.seq,
                seq_end: e.seq_end,
                snd_nxt: e.snd_nxt,
                packets_out: e.packets_out,
                reason: HeldReason::from_raw(e.reason),
                nonagle: e.nonagle,
                msg_flags: e.msg_flags,
            }))
        }
        k if k == types::event_kind::EV_SOCK_CLOSE.0 => {
            let e: types::sock_close_event = copy(kind, data)?;
            Ok(Event::SockClose(SockClose { ts: e.ts, sk: e.sk }))
        }
        k => Err(DecodeError::UnknownKind(k)),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub fn raw_chain(family: u8, proto: u8) -> types::rx_chain_event {
        let mut e = types::rx_chain_event {
            kind: types::event_kind::EV_RX_CHAIN.0,
            cpu: 1,
            ts: [100, 200, 300, 400, 500],
            sk: 0xffff_8880_0000_1000,
            ifindex: 7,
            netns: 4026531840,
            payload: 64,
            seq_end: 1000,
            ..Default::default()
        };
        e.flow.family = family;
        e.flow.proto = proto;
        e.flow.sport = 40000;
        e.flow.dport = 9000;
        e.flow.saddr[..4].copy_from_slice(&[10, 0, 0, 1]);
        e.flow.daddr[..4].copy_from_slice(&[10, 0, 0, 2]);
        if family == AF_INET6 {
            e.flow.saddr = Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 1).octets();
            e.flow.daddr = Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 2).octets();
        }
        e
    }

    fn bytes_of<T: Copy>(v: &T) -> Vec<u8> {
        // SAFETY: T is a generated repr(C) type of integers; reading its bytes is sound.
        unsafe { std::slice::from_raw_parts(v as *const T as *const u8, std::mem::size_of::<T>()) }
            .to_vec()
    }

    #[test]
    fn decodes_ipv4_chain() {
        let e = raw_chain(AF_INET, IPPROTO_UDP);
        let Event::Chain(c) = decode(&bytes_of(&e)).unwrap() else {
            panic!("not a chain")
        };
        assert_eq!(c.ts, [100, 200, 300, 400, 500, 0]);
        assert_eq!(c.flow.to_string(), "udp 10.0.0.1:40000 -> 10.0.0.2:9000");
        assert_eq!(c.payload, 64);
    }

    #[test]
    fn decodes_ipv6_chain() {
        let e = raw_chain(AF_INET6, IPPROTO_TCP);
        let Event::Chain(c) = decode(&bytes_of(&e)).unwrap() else {
            panic!("not a chain")
        };
        assert_eq!(c.flow.to_string(), "tcp [fd00::1]:40000 -> [fd00::2]:9000");
    }

    #[test]
    fn decodes_read() {
        let mut e = types::rx_read_event {
            kind: types::event_kind::EV_RX_READ.0,
            ts: 5,
            sk: 9,
            pid: 11,
            tgid: 10,
            bytes: 64,
            proto: IPPROTO_TCP,
            ..Default::default()
        };
        for (d, s) in e.comm.iter_mut().zip(b"server\0") {
            *d = *s as _;
        }
        let Event::Read(r) = decode(&bytes_of(&e)).unwrap() else {
            panic!("not a read")
        };
        assert_eq!(
            (r.tgid, r.pid, r.bytes, r.comm.to_string().as_str()),
            (10, 11, 64, "server")
        );
    }

    #[test]
    fn rejects_short_and_unknown() {
        assert!(matches!(decode(&[1, 0]), Err(DecodeError::Short { .. })));
        let e = raw_chain(AF_INET, IPPROTO_UDP);
        let b = bytes_of(&e);
        assert!(matches!(
            decode(&b[..20]),
            Err(DecodeError::Short { kind: 1, .. })
        ));
        assert_eq!(decode(&[9, 0, 0, 0]), Err(DecodeError::UnknownKind(9)));
    }

    #[test]
    fn decodes_tx_chain_send_and_held() {
        let mut c = txt::tx_chain_event {
            kind: types::event_kind::EV_TX_CHAIN.0,
            ts: [10, 20, 30, 40, 40, 50, 60, 0],
            sk: 7,
            payload: 100,
            seq: 1000,
            flags: TXF_TASK,
            tgid: 42,
            ..Default::default()
        };
        c.flow.family = AF_INET;
        c.flow.proto = IPPROTO_UDP;
        c.flow.sport = 5000;
        c.flow.dport = 9000;
        c.flow.saddr[..4].copy_from_slice(&[10, 0, 0, 1]);
        c.flow.daddr[..4].copy_from_slice(&[10, 0, 0, 2]);
        for (d, s) in c.comm.iter_mut().zip(b"sender\0") {
            *d = *s as _;
        }
        let Event::TxChain(t) = decode(&bytes_of(&c)).unwrap() else {
            panic!("not a TX chain")
        };
        assert_eq!(t.flow.to_string(), "udp 10.0.0.1:5000 -> 10.0.0.2:9000");
        assert_eq!((t.ts[TX_DONE], t.seq, t.tgid), (60, 1000, 42));
        assert_eq!(t.comm.to_string(), "sender");
        assert_eq!(Event::TxChain(t).order_ts(), 60);

        let s = txt::tx_send_event {
            kind: types::event_kind::EV_TX_SEND.0,
            ts: 5,
            sk: 7,
            seq: 77,
            ..Default::default()
        };
        let Event::TxSend(w) = decode(&bytes_of(&s)).unwrap() else {
            panic!("not a TX send")
        };
        assert_eq!((w.ts, w.sk, w.seq), (5, 7, 77));
        let h = txt::tx_send_event {
            kind: types::event_kind::EV_TX_HELD.0,
            ts: 9,
            reason: txt::tx_held_reason::HELD_CORK.0,
            ..Default::default()
        };
        let Event::TxHeld(h) = decode(&bytes_of(&h)).unwrap() else {
            panic!("not a TX held")
        };
        assert_eq!(h.reason, HeldReason::Cork);
        assert_eq!(h.reason.name(), "cork");
        assert!(matches!(
            decode(&bytes_of(&c)[..40]),
            Err(DecodeError::Short { kind: 3, .. })
        ));
    }
}

#[cfg(test)]
mod fuzz {
    use super::*;
    use proptest::prelude::*;
    use std::mem::size_of;

    /// The record size each known kind needs; None for a kind decode must refuse.
    fn needed(kind: u32) -> Option<usize> {
        use types::event_kind as k;
        [
            (k::EV_RX_CHAIN.0, size_of::<types::rx_chain_event>()),
            (k::EV_RX_READ.0, size_of::<types::rx_read_event>()),
            (k::EV_TX_CHAIN.0, size_of::<txt::tx_chain_event>()),
            (k::EV_TX_SEND.0, size_of::<txt::tx_send_event>()),
            (k::EV_TX_HELD.0, size_of::<txt::tx_send_event>()),
            (k::EV_SOCK_CLOSE.0, size_of::<types::sock_close_event>()),
        ]
        .into_iter()
        .find(|&(id, _)| id == kind)
        .map(|(_, n)| n)
    }

    fn largest() -> usize {
        (0..16).filter_map(needed).max().unwrap_or(0)
    }

    proptest! {
        #![proptest_config(ProptestConfig { failure_persistence: None, ..ProptestConfig::default() })]

        /// Any kind (every small one, and any u32), any length from empty to twice the
        /// largest record: decode answers the kind's event exactly when the record is long
        /// enough, Short when it is not, UnknownKind otherwise; never a panic.
        #[test]
        fn fuzz_events_decode(
            kind in prop_oneof![0u32..16, any::<u32>()],
            body in proptest::collection::vec(any::<u8>(), 0..2 * largest()),
            cut in any::<prop::sample::Index>(),
        ) {
            let mut raw = kind.to_ne_bytes().to_vec();
            raw.extend_from_slice(&body);
            // Truncated anywhere, including inside the kind itself.
            let raw = &raw[..cut.index(raw.len() + 1)];
            let got = decode(raw);
            if raw.len() < 4 {
                prop_assert_eq!(got, Err(DecodeError::Short { kind: 0, len: raw.len() }));
                return Ok(());
            }
            match needed(kind) {
                None => prop_assert_eq!(got, Err(DecodeError::UnknownKind(kind))),
                Some(n) if raw.len() < n => {
                    prop_assert_eq!(got, Err(DecodeError::Short { kind, len: raw.len() }))
                }
                Some(_) => {
                    let ev = got.map_err(|e| TestCaseError::fail(e.to_string()))?;
                    use types::event_kind as k;
                    let want = match &ev {
                        Event::Chain(_) => k::EV_RX_CHAIN.0,
                        Event::Read(_) => k::EV_RX_READ.0,
                        Event::TxChain(_) => k::EV_TX_CHAIN.0,
                        Event::TxSend(_) => k::EV_TX_SEND.0,
                        Event::TxHeld(_) => k::EV_TX_HELD.0,
                        Event::SockClose(_) => k::EV_SOCK_CLOSE.0,
                    };
                    prop_assert_eq!(want, kind);
                    // What the frontend then does with any decoded event must not panic.
                    let _ = ev.order_ts();
                    if let Event::Chain(c) = &ev {
                        let _ = (c.flow.to_string(), c.context());
                    }
                }
            }
            if let Err(e) = decode(raw) {
                prop_assert!(!e.to_string().contains('\n'));
            }
        }
    }
}

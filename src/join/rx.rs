//! The frontend's join: chains (kernel timeline per skb, up to the socket queue) meet
//! application reads by socket. UDP sockets are FIFO queues of datagrams, one per read;
//! TCP data is matched by sequence number (rcv_nxt when queued vs copied_seq after the
//! read), so GRO and coalescing in the receive queue cannot break the join.
//!
//! A socket is known by its id (BPF's sock_id: the socket cookie), never by its address
//! alone: the kernel reuses a closed socket's address at once, and a new socket must not
//! inherit the old one's queued data or sequence space. State ends at TCP_CLOSE, or when
//! idle past the age limit (UDP sockets have no close event).

use std::collections::{BTreeMap, VecDeque};

use crate::events::{
    point_name, Chain, Context, Flow, HeldReason, Read, SockClose, CHAIN_FROM_SOCK,
    CHAIN_PLACEHOLDER, CHAIN_SEQ_FLAG, IPPROTO_TCP, RX_IP, RX_NETIF, RX_NF_IN, RX_NF_PRE_DONE,
    RX_READ, RX_SIRQ_ENTRY, RX_SIRQ_RAISE, RX_SOCKQ, RX_TRANSPORT,
};
use crate::stats::prom_hist::PromHist;
// Fx: fast, not DoS-resistant; fine for per-event maps keyed by kernel addresses and
// 5-tuples, not attacker-chosen strings.
use rustc_hash::FxHashMap;

/// Where a packet passed: (ifindex, netns inode); (0, 0) when unknown.
pub type Place = (u32, u32);
/// A labelled span series: span, protocol, ifindex, netns.
pub type LabelKey = (SpanId, u8, u32, u32);
use crate::stats::hist::Hist;

/// Keeps the series whose namespace `keep` accepts, and those of no known namespace (0).
pub fn retain_netns(series: &mut FxHashMap<LabelKey, PromHist>, keep: impl Fn(u32) -> bool) {
    series.retain(|k, _| k.3 == 0 || keep(k.3));
}

/// A span between two points, as indices into the combined point list (RX, then TX).
pub type SpanId = (usize, usize);

pub fn span_name(id: SpanId) -> String {
    format!("{}->{}", point_name(id.0), point_name(id.1))
}

/// Which way the packets of a connection row go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Dir {
    Rx,
    Tx,
}

/// A connection row: the direction and the 5-tuple in packet direction.
pub type ConnKey = (Dir, Flow);

/// Spans of a timeline: between each pair of consecutive points it passed, plus the
/// total rx_netif->rx_read when both ends are known.
pub fn spans_of(ts: &[u64; 6]) -> Vec<(SpanId, u64)> {
    let mut out = Vec::with_capacity(6);
    let mut prev: Option<usize> = None;
    for (i, &t) in ts.iter().enumerate() {
        if t == 0 {
            continue;
        }
        if let Some(p) = prev {
            out.push(((p, i), t.saturating_sub(ts[p])));
        }
        prev = Some(i);
    }
    if ts[RX_NETIF] != 0 && ts[RX_READ] != 0 && prev == Some(RX_READ) {
        out.push((
            (RX_NETIF, RX_READ),
            ts[RX_READ].saturating_sub(ts[RX_NETIF]),
        ));
    }
    out
}

/// A chain's spans: its path spans plus, when known, the context spans beside the path
/// (softirq delay, netfilter split).
pub fn chain_spans(ts: &[u64; 6], ctx: &Context) -> Vec<(SpanId, u64)> {
    let mut s = spans_of(ts);
    if let Some(d) = ctx.sirq {
        s.push(((RX_SIRQ_RAISE, RX_SIRQ_ENTRY), d));
    }
    s.extend(nf_split([
        (RX_IP, ts[RX_IP]),
        (RX_NF_PRE_DONE, ctx.nf_mid[0]),
        (RX_NF_IN, ctx.nf_mid[1]),
        (RX_TRANSPORT, ts[RX_TRANSPORT]),
    ]));
    s
}

/// The netfilter split of a stretch bracketed by two hooks, from (point, time) of: the first
/// hook's start, its end, the second hook's start, its end. A span for each neighbouring
/// pair seen in order; nothing without the middle stamps (split off, or not traced).
pub fn nf_split(p: [(usize, u64); 4]) -> Vec<(SpanId, u64)> {
    if p[1].1 == 0 && p[2].1 == 0 {
        return Vec::new();
    }
    p.windows(2)
        .filter(|w| w[0].1 != 0 && w[1].1 >= w[0].1)
        .map(|w| ((w[0].0, w[1].0), w[1].1 - w[0].1))
        .collect()
}

/// TCP sequence order with wrap-around: is `a` at or before `b`?
pub fn seq_le(a: u32, b: u32) -> bool {
    (b.wrapping_sub(a) as i32) >= 0
}

pub use crate::events::Owner;

#[derive(Debug, Default)]
pub struct Conn {
    pub owner: Option<Owner>,
    /// Network namespace inode (the first one seen; 0 while unknown).
    pub netns: u32,
    pub packets: u64,
    pub bytes: u64,
    pub spans: BTreeMap<SpanId, Hist>,
    /// TX: writes whose data waited in the socket, by reason, with the wait per segment.
    pub held: BTreeMap<HeldReason, Held>,
}

#[derive(Debug, Default, Clone)]
pub struct Held {
    /// Writes that returned with data held for this reason.
    pub writes: u64,
    /// tx_send->tx_transport of the segments that carried held data.
    pub wait: Hist,
}

/// Where the join loses or drops data; every field is shown to the user.
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize)]
pub struct JoinStats {
    pub chains: u64,
    pub reads: u64,
    /// Reads on sockets with no queued data we saw (data queued before the tool started).
    pub reads_unmatched: u64,
    /// Queued data never read before it aged out, or still unread at exit.
    pub unread: u64,
    /// Per-socket queue overflow (the application is far behind).
    pub queue_evicted: u64,
    /// Timelines not kept because their owner did not match --pid/--comm/--cgroup.
    pub owner_filtered: u64,
    /// Connections beyond the tracked limit, folded out of the per-connection table.
    pub conns_dropped: u64,
    /// TX: transmit chains (skbs from LOCAL_OUT on).
    pub tx_chains: u64,
    /// TX: TCP writes seen starting.
    pub tx_writes: u64,
    /// TX: TCP writes that returned with data held, by reason.
    pub tx_held_nagle: u64,
    pub tx_held_cork: u64,
    /// TX: TCP segments resending data already sent (no tx_send: the write is long gone).
    pub tx_retransmits: u64,
    /// TX: TCP data segments whose write was not seen (written before the tool started).
    pub tx_unattributed: u64,
    /// TX: chains that ended before the driver finished: dropped on the way.
    pub tx_dropped: u64,
    /// RX: chains still in the per-CPU chain cache when the tool stopped (reported with
    /// the points they passed).
    pub rx_at_exit: u64,
    /// TX: chains still queued or awaiting completion when the tool stopped (reported with
    /// the points they passed).
    pub tx_at_exit: u64,
    /// TCP sockets whose join state ended at TCP_CLOSE.
    pub sockets_closed: u64,
    /// Data queued outside the softirq chain while --iface was set: kept in its socket's
    /// queue so later reads pair with the right data, but not counted.
    pub placeholders: u64,
}

struct Pending {
    ts: [u64; 6],
    ctx: Context,
    place: Place,
    flow: Flow,
    /// TCP: the sequence number after the data (a FIN's number left out: it is never read).
    end_seq: u32,
    payload: u32,
    /// Chain spans already recorded (owner known or no owner filter) at queue time.
    recorded: bool,
    /// Keeps a place in the queue, never counted (CHAIN_PLACEHOLDER).
    placeholder: bool,
}

#[derive(Default)]
struct Sock {
    proto: u8,
    owner: Option<Owner>,
    queue: VecDeque<Pending>,
    last_seen: u64,
}

/// A completed packet timeline, for `--events`.
#[derive(Debug, Clone)]
pub struct Timeline {
    pub dir: Dir,
    /// (point index in the combined list, timestamp), for the points passed.
    pub points: Vec<(usize, u64)>,
    pub spans: Vec<(SpanId, u64)>,
    pub flow: Flow,
    pub owner: Option<Owner>,
    pub payload: u32,
    pub flags: Vec<&'static str>,
    /// The skb's kernel address (as pwru and bpftrace print it); 0 when not known.
    pub skb: u64,
    /// Network namespace inode where it passed; 0 when not known.
    pub netns: u32,
}

pub struct Limits {
    pub queue_per_socket: usize,
    pub sockets: usize,
    pub conns: usize,
    /// Queued data older than this (ns) is counted unread and dropped.
    pub max_age_ns: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            queue_per_socket: 65536,
            sockets: 65536,
            conns: 4096,
            max_age_ns: 30_000_000_000,
        }
    }
}

/// Joins events into span histograms, overall and per connection.
pub struct Correlator {
    /// Only keep timelines read by this owner (set when --pid/--comm/--cgroup is given:
    /// the BPF side then only reports reads of matching processes).
    pub(crate) owner_filter: bool,
    pub(crate) limits: Limits,
    socks: FxHashMap<u64, Sock>,
    pub(crate) tx_socks: FxHashMap<u64, crate::join::txsock::TxSock>,
    pub spans: BTreeMap<SpanId, Hist>,
    /// Spans per (span, protocol, ifindex, netns), when the exporter asked for them.
    pub labelled: Option<FxHashMap<LabelKey, PromHist>>,
    pub conns: FxHashMap<ConnKey, Conn>,
    pub stats: JoinStats,
    /// Completed timelines, drained by the caller when it wants `--events`.
    pub timelines: Option<Vec<Timeline>>,
}

impl Correlator {
    pub fn new(owner_filter: bool, limits: Limits, keep_timelines: bool) -> Self {
        Correlator {
            owner_filter,
            limits,
            socks: FxHashMap::default(),
            tx_socks: FxHashMap::default(),
            spans: BTreeMap::new(),
            conns: FxHashMap::default(),
            stats: JoinStats::default(),
            timelines: keep_timelines.then(Vec::new),
            labelled: None,
        }
    }

    /// Also keep span histograms per protocol, interface and namespace, in Prometheus
    /// buckets (for the exporter; off otherwise: it costs a hash lookup per span).
    pub fn keep_labelled(&mut self) {
        self.labelled = Some(FxHashMap::default());
    }

    /// Forget the labelled series of namespaces that went away: a host that creates and
    /// deletes namespaces all day would otherwise keep every one's series, in memory and
    /// on /metrics (the soak run saw both grow without end).
    pub fn forget_netns(&mut self, gone: &[u32]) {
        if let Some(l) = self.labelled.as_mut().filter(|_| !gone.is_empty()) {
            retain_netns(l, |n| !gone.contains(&n));
        }
    }

    /// Record spans overall and on the connection row; `packet` counts it as a packet
    /// (a read completing a packet already counted does not). Returns the row, if kept.
    pub(crate) fn record(
        &mut self,
        key: ConnKey,
        place: Place,
        owner: Option<&Owner>,
        spans: &[(SpanId, u64)],
        payload: u32,
        packet: bool,
    ) -> Option<&mut Conn> {
        for &(id, v) in spans {
            self.spans.entry(id).or_default().record(v);
        }
        if let Some(l) = self.labelled.as_mut() {
            for &(id, v) in spans {
                l.entry((id, key.1.proto, place.0, place.1))
                    .or_default()
                    .record(v);
            }
        }
        if !self.conns.contains_key(&key) && self.conns.len() >= self.limits.conns {
            self.stats.conns_dropped += 1;
            return None;
        }
        let c = self.conns.entry(key).or_default();
        if c.netns == 0 {
            c.netns = place.1;
        }
        if let Some(o) = owner {
            c.owner = Some(*o);
        }
        for &(id, v) in spans {
            c.spans.entry(id).or_default().record(v);
        }
        if packet {
            c.packets += 1;
            c.bytes += payload as u64;
        }
        Some(c)
    }

    fn record_rx(
        &mut self,
        flow: &Flow,
        place: Place,
        owner: Option<&Owner>,
        spans: &[(SpanId, u64)],
        payload: u32,
    ) {
        let packet = spans.iter().any(|(id, _)| id.1 != RX_READ) || spans.is_empty();
        self.record((Dir::Rx, *flow), place, owner, spans, payload, packet);
    }

    fn push_timeline(
        &mut self,
        ts: [u64; 6],
        ctx: Context,
        flow: Flow,
        owner: Option<Owner>,
        payload: u32,
        netns: u32,
    ) {
        if let Some(t) = self.timelines.as_mut() {
            t.push(Timeline {
                dir: Dir::Rx,
                points: ts
                    .iter()
                    .enumerate()
                    .filter(|(_, &v)| v != 0)
                    .map(|(i, &v)| (i, v))
                    .collect(),
                spans: chain_spans(&ts, &ctx),
                flow,
                owner,
                payload,
                flags: Vec::new(),
                skb: 0,
                netns,
            });
        }
    }

    /// The last reader of a socket, if a read of traced data was seen.
    pub(crate) fn socks_owner(&self, sk: u64) -> Option<Owner> {
        self.socks.get(&sk).and_then(|s| s.owner)
    }

    /// Feed one event, in the order the reorder stage releases them.
    pub fn on_event(&mut self, ev: &crate::events::Event) {
        use crate::events::Event;
        match ev {
            Event::Chain(c) => self.on_chain(c),
            Event::Read(r) => self.on_read(r),
            Event::TxChain(c) => self.on_tx_chain(c),
            Event::TxSend(s) => self.on_tx_send(s),
            Event::TxHeld(h) => self.on_tx_held(h),
            Event::SockClose(c) => self.on_close(c),
        }
    }

    pub fn on_chain(&mut self, c: &Chain) {
        let placeholder = c.flags & CHAIN_PLACEHOLDER != 0;
        if placeholder {
            self.stats.placeholders += 1;
            self.queue(c, false, true);
            return;
        }
        self.stats.chains += 1;
        let queued = c.sk != 0 && c.ts[RX_SOCKQ] != 0;
        let owner = if queued {
            self.socks.get(&c.sk).and_then(|s| s.owner)
        } else {
            self.conns.get(&(Dir::Rx, c.flow)).and_then(|k| k.owner)
        };
        let record_now = !self.owner_filter || owner.is_some();
        if record_now {
            let spans = chain_spans(&c.ts, &c.context());
            self.record_rx(
                &c.flow,
                (c.ifindex, c.netns),
                owner.as_ref(),
                &spans,
                c.payload,
            );
        }
        // No data, nothing for a read to wait for (a FIN, an empty datagram): the chain's
        // kernel spans are all it has.
        let data = c.payload > 0 || c.flags & CHAIN_FROM_SOCK != 0;
        if !queued || !data {
            if record_now {
                self.push_timeline(c.ts, c.context(), c.flow, owner, c.payload, c.netns);
            } else {
                self.stats.owner_filtered += 1;
            }
            return;
        }
        self.queue(c, record_now, false);
    }

    /// Put queued data on its socket's queue, for the read that takes it.
    fn queue(&mut self, c: &Chain, recorded: bool, placeholder: bool) {
        if !self.socks.contains_key(&c.sk) && self.socks.len() >= self.limits.sockets {
            self.evict_idlest_socket();
        }
        let sock = self.socks.entry(c.sk).or_default();
        sock.proto = c.flow.proto;
        sock.last_seen = c.ts[RX_SOCKQ];
        // A FIN after the data takes a sequence number that no read copies.
        let fin = c.flags & CHAIN_SEQ_FLAG != 0 && c.payload > 0;
        let end_seq = c.seq_end.wrapping_sub(u32::from(fin));
        // TCP data already queued (a second sk_data_ready for it) is not new data.
        if sock.proto == IPPROTO_TCP && sock.queue.back().is_some_and(|p| p.end_seq == end_seq) {
            return;
        }
        if sock.queue.len() >= self.limits.queue_per_socket {
            sock.queue.pop_front();
            self.stats.queue_evicted += 1;
        }
        sock.queue.push_back(Pending {
            ts: c.ts,
            ctx: c.context(),
            place: (c.ifindex, c.netns),
            flow: c.flow,
            end_seq,
            payload: c.payload,
            recorded,
            placeholder,
        });
    }

    /// A TCP socket closed: its queued data was never read, and its id will not come back.
    pub fn on_close(&mut self, c: &SockClose) {
        if let Some(s) = self.socks.remove(&c.sk) {
            self.stats.sockets_closed += 1;
            self.stats.unread += s.queue.iter().filter(|p| !p.placeholder).count() as u64;
        }
        self.tx_socks.remove(&c.sk);
    }

    fn evict_idlest_socket(&mut self) {
        if let Some((&sk, _)) = self.socks.iter().min_by_key(|(_, s)| s.last_seen) {
            if let Some(s) = self.socks.remove(&sk) {
                self.stats.unread += s.queue.iter().filter(|p| !p.placeholder).count() as u64;
            }
        }
    }

    pub fn on_read(&mut self, r: &Read) {
        self.stats.reads += 1;
        let Some(sock) = self.socks.get_mut(&r.sk) else {
            self.stats.reads_unmatched += 1;
            return;
        };
        let owner = Owner {
            tgid: r.tgid,
            comm: r.comm,
        };
        sock.owner = Some(owner);
        sock.last_seen = r.ts;
        let mut done = Vec::new();
        if sock.proto == IPPROTO_TCP {
            while sock
                .queue
                .front()
                .is_some_and(|p| seq_le(p.end_seq, r.copied_seq))
            {
                done.extend(sock.queue.pop_front());
            }
        } else {
            done.extend(sock.queue.pop_front());
        }
        if done.is_empty() {
            self.stats.reads_unmatched += 1;
        }
        for mut p in done.into_iter().filter(|p| !p.placeholder) {
            p.ts[RX_READ] = r.ts;
            let spans = chain_spans(&p.ts, &p.ctx);
            if p.recorded {
                let read_spans: Vec<_> = spans
                    .into_iter()
                    .filter(|(id, _)| id.1 == RX_READ)
                    .collect();
                self.record_rx(&p.flow, p.place, Some(&owner), &read_spans, p.payload);
            } else {
                self.record_rx(&p.flow, p.place, Some(&owner), &spans, p.payload);
            }
            self.push_timeline(p.ts, p.ctx, p.flow, Some(owner), p.payload, p.place.1);
        }
    }

    /// Drop queued data older than the age limit (now and ts in the BPF clock).
    pub fn expire(&mut self, now: u64) {
        let max_age = self.limits.max_age_ns;
        let mut unread = 0;
        self.socks.retain(|_, s| {
            while s
                .queue
                .front()
                .is_some_and(|p| now.saturating_sub(p.ts[RX_SOCKQ]) > max_age)
            {
                if s.queue.pop_front().is_some_and(|p| !p.placeholder) {
                    unread += 1;
                }
            }
            !(s.queue.is_empty() && now.saturating_sub(s.last_seen) > max_age)
        });
        self.stats.unread += unread;
        self.expire_tx(now);
    }

    /// At exit: data still queued is unread; chains not yet recorded are attributed if we can.
    pub fn finish(&mut self) {
        let socks: Vec<Sock> = self.socks.drain().map(|(_, s)| s).collect();
        for s in socks {
            for p in s.queue.into_iter().filter(|p| !p.placeholder) {
                self.stats.unread += 1;
                if !p.recorded {
                    match &s.owner {
                        Some(o) => {
                            let spans = chain_spans(&p.ts, &p.ctx);
                            let o = *o;
                            self.record_rx(&p.flow, p.place, Some(&o), &spans, p.payload);
                        }
                        None => self.stats.owner_filtered += 1,
                    }
                }
            }
        }
    }

    pub fn pending(&self) -> usize {
        self.socks.values().map(|s| s.queue.len()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn series_of_gone_namespaces_are_forgotten() {
        let mut c = Correlator::new(false, Limits::default(), false);
        c.keep_labelled();
        let l = c.labelled.as_mut().unwrap();
        for netns in [0, 7, 8, 9] {
            l.insert(((0, 1), 17, 2, netns), PromHist::default());
        }
        c.forget_netns(&[8]);
        let mut left: Vec<u32> = c.labelled.as_ref().unwrap().keys().map(|k| k.3).collect();
        left.sort();
        assert_eq!(left, vec![0, 7, 9]);
        let l = c.labelled.as_mut().unwrap();
        retain_netns(l, |n| n == 9);
        let mut left: Vec<u32> = l.keys().map(|k| k.3).collect();
        left.sort();
        assert_eq!(left, vec![0, 9], "unknown (0) stays");
    }
    use crate::events::Comm;
    use crate::events::{IPPROTO_UDP, RX_DRIVER};
    use std::net::{IpAddr, Ipv4Addr};

    fn flow(proto: u8, sport: u16) -> Flow {
        Flow {
            proto,
            saddr: IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)),
            sport,
            daddr: IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2)),
            dport: 9000,
        }
    }

    fn chain(proto: u8, sk: u64, t0: u64, seq_end: u32) -> Chain {
        Chain {
            ts: [t0 + 1000, t0 + 1010, t0 + 1030, t0 + 1060, t0 + 1100, 0],
            sk,
            flow: flow(proto, 40000),
            ifindex: 2,
            netns: 1,
            payload: 100,
            seq_end,
            flags: 0,
            cpu: 0,
            sirq_raise: t0 + 400,
            sirq_entry: t0 + 500,
            nf_mid: [0; 2],
        }
    }

    fn read(sk: u64, ts: u64, copied_seq: u32, tgid: u32) -> Read {
        Read {
            ts,
            sk,
            pid: tgid,
            tgid,
            bytes: 100,
            copied_seq,
            proto: 0,
            comm: Comm::from(format!("p{tgid}").as_str()),
        }
    }

    fn count(c: &Correlator, a: usize, b: usize) -> u64 {
        c.spans.get(&(a, b)).map_or(0, |h| h.count())
    }

    #[test]
    fn spans_skip_missing_points() {
        let ts = [0, 100, 0, 150, 200, 1200];
        let s = spans_of(&ts);
        assert_eq!(
            s,
            vec![((1, 3), 50), ((3, 4), 50), ((4, 5), 1000), ((1, 5), 1100)]
        );
        assert_eq!(span_name((4, 5)), "rx_sockq->rx_read");
    }

    #[test]
    fn seq_compare_wraps() {
        assert!(seq_le(5, 5));
        assert!(seq_le(u32::MAX - 2, 3));
        assert!(!seq_le(3, u32::MAX - 2));
    }

    #[test]
    fn udp_reads_pop_one_datagram_each() {
        let mut c = Correlator::new(false, Limits::default(), true);
        for i in 0..3 {
            c.on_chain(&chain(IPPROTO_UDP, 7, 1000 * i, 0));
        }
        c.on_read(&read(7, 5000, 0, 42));
        c.on_read(&read(7, 6000, 0, 42));
        assert_eq!(count(&c, RX_SOCKQ, RX_READ), 2);
        assert_eq!(count(&c, RX_DRIVER, RX_NETIF), 3);
        // FIFO: the first datagram (queued at 1100) was read at 5000.
        assert_eq!(c.spans[&(RX_SOCKQ, RX_READ)].max(), 3900);
        assert_eq!(c.pending(), 1);
        c.finish();
        assert_eq!(c.stats.unread, 1);
        let tl = c.timelines.unwrap();
        assert_eq!(tl.len(), 2);
        assert_eq!(tl[0].owner.as_ref().unwrap().tgid, 42);
    }

    #[test]
    fn tcp_read_completes_all_segments_below_copied_seq() {
        let mut c = Correlator::new(false, Limits::default(), false);
        c.on_chain(&chain(IPPROTO_TCP, 9, 0, 1100));
        c.on_chain(&chain(IPPROTO_TCP, 9, 1000, 1200));
        c.on_chain(&chain(IPPROTO_TCP, 9, 2000, 1300));
        // One read copies up to 1200: two segments done, coalesced or not.
        c.on_read(&read(9, 10_000, 1200, 1));
        assert_eq!(count(&c, RX_SOCKQ, RX_READ), 2);
        assert_eq!(count(&c, RX_NETIF, RX_READ), 2);
        // A partial read that does not finish the third segment completes nothing.
        c.on_read(&read(9, 11_000, 1250, 1));
        assert_eq!(count(&c, RX_SOCKQ, RX_READ), 2);
        c.on_read(&read(9, 12_000, 1300, 1));
        assert_eq!(count(&c, RX_SOCKQ, RX_READ), 3);
        assert_eq!(c.spans[&(RX_SOCKQ, RX_READ)].max(), 12_000 - 3100);
    }

    #[test]
    fn owner_filter_defers_until_a_matching_read() {
        let mut c = Correlator::new(true, Limits::default(), false);
        c.on_chain(&chain(IPPROTO_UDP, 7, 0, 0));
        c.on_chain(&chain(IPPROTO_UDP, 8, 0, 0)); // another process's socket: never read here
        assert!(c.spans.is_empty());
        c.on_read(&read(7, 500, 0, 42));
        assert_eq!(count(&c, RX_DRIVER, RX_NETIF), 1);
        assert_eq!(count(&c, RX_SOCKQ, RX_READ), 1);
        c.finish();
        assert_eq!(c.stats.owner_filtered, 1);
        assert_eq!(count(&c, RX_DRIVER, RX_NETIF), 1);
        let conn = &c.conns[&(Dir::Rx, flow(IPPROTO_UDP, 40000))];
        assert_eq!(conn.owner.as_ref().unwrap().comm.to_string(), "p42");
        assert_eq!(conn.packets, 1);
    }

    #[test]
    fn unqueued_chains_count_but_wait_for_nothing() {
        let mut c = Correlator::new(false, Limits::default(), false);
        let mut ch = chain(IPPROTO_TCP, 0, 0, 0);
        ch.ts[RX_SOCKQ] = 0;
        c.on_chain(&ch);
        assert_eq!(count(&c, 2, 3), 1);
        assert_eq!(c.pending(), 0);
    }

    #[test]
    fn queues_are_bounded_and_aged() {
        let limits = Limits {
            queue_per_socket: 2,
            max_age_ns: 1000,
            ..Limits::default()
        };
        let mut c = Correlator::new(false, limits, false);
        for i in 0..4 {
            c.on_chain(&chain(IPPROTO_UDP, 7, i, 0));
        }
        assert_eq!(c.stats.queue_evicted, 2);
        c.expire(20_000);
        assert_eq!(c.stats.unread, 2);
        assert_eq!(c.pending(), 0);
        c.on_read(&read(7, 20_001, 0, 1));
        assert_eq!(c.stats.reads_unmatched, 1);
    }

    #[test]
    fn connection_table_is_bounded() {
        let limits = Limits {
            conns: 1,
            ..Limits::default()
        };
        let mut c = Correlator::new(false, limits, false);
        let mut a = chain(IPPROTO_UDP, 7, 0, 0);
        c.on_chain(&a);
        a.flow.sport = 1;
        c.on_chain(&a);
        assert_eq!(c.conns.len(), 1);
        assert_eq!(c.stats.conns_dropped, 1);
        assert_eq!(count(&c, RX_DRIVER, RX_NETIF), 2);
    }

    #[test]
    fn softirq_context_span_per_packet() {
        let mut c = Correlator::new(false, Limits::default(), false);
        c.on_chain(&chain(IPPROTO_UDP, 7, 0, 0));
        let mut unknown = chain(IPPROTO_UDP, 7, 1000, 0);
        unknown.sirq_raise = 0;
        c.on_chain(&unknown);
        let id = (RX_SIRQ_RAISE, RX_SIRQ_ENTRY);
        assert_eq!(span_name(id), "rx_softirq_raise->rx_softirq_entry");
        assert_eq!(c.spans[&id].count(), 1);
        assert_eq!(c.spans[&id].max(), 100);
        let conn = &c.conns[&(Dir::Rx, flow(IPPROTO_UDP, 40000))];
        assert_eq!(conn.spans[&id].count(), 1);
    }

    #[test]
    fn netfilter_split_needs_its_middle_stamps_and_order() {
        let p = |t: [u64; 4]| {
            nf_split([
                (RX_IP, t[0]),
                (RX_NF_PRE_DONE, t[1]),
                (RX_NF_IN, t[2]),
                (RX_TRANSPORT, t[3]),
            ])
        };
        assert_eq!(
            p([100, 150, 170, 400]),
            vec![
                ((RX_IP, RX_NF_PRE_DONE), 50),
                ((RX_NF_PRE_DONE, RX_NF_IN), 20),
                ((RX_NF_IN, RX_TRANSPORT), 230)
            ]
        );
        assert!(p([100, 0, 0, 400]).is_empty(), "split off: no spans");
        // LOCAL_IN's start not seen (the packet was forwarded, say): PRE_ROUTING's alone.
        assert_eq!(p([100, 150, 0, 0]), vec![((RX_IP, RX_NF_PRE_DONE), 50)]);
        // A stamp out of order (another CPU's clock) gives no negative span.
        assert_eq!(p([100, 90, 170, 400]).len(), 2);
        let mut c = chain(IPPROTO_UDP, 7, 0, 0);
        c.nf_mid = [c.ts[RX_IP] + 5, c.ts[RX_IP] + 7];
        let names: Vec<String> = chain_spans(&c.ts, &c.context())
            .into_iter()
            .map(|(id, _)| span_name(id))
            .collect();
        assert!(
            names.contains(&"rx_nf_pre_done->rx_nf_in".to_string()),
            "{names:?}"
        );
    }
}

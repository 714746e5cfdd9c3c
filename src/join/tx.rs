//! The transmit join. From LOCAL_OUT on, BPF follows each skb by pointer and hands over a
//! finished chain. What BPF cannot know is which write a TCP segment's bytes came from: a
//! write may become many segments and many writes one segment. Writes report their first
//! sequence number when they start, so a segment's oldest byte falls in exactly one write,
//! the latest that started at or before it; that write's start is the segment's tx_send.

use crate::events::{
    HeldReason, TxChain, TxHeld, TxSend, IPPROTO_TCP, TXF_AT_EXIT, TXF_DROPPED, TXF_EVICTED,
    TXF_QUEUED, TXF_TASK, TX_BASE, TX_DONE, TX_NF_DONE, TX_NF_OUT_DONE, TX_NF_POST, TX_SEND,
    TX_TRANSPORT,
};
use crate::join::rx::{nf_split, Correlator, Dir, Owner, SpanId, Timeline};
pub use crate::join::txsock::TxSock;
use crate::join::txsock::Write;

/// What the write join says about one segment.
#[derive(Default)]
struct Attribution {
    owner: Option<Owner>,
    /// Why its oldest byte waited in the socket, if it did.
    held: Option<HeldReason>,
    retransmit: bool,
}

/// Spans of a TX timeline: between consecutive points passed, plus the total
/// tx_send->tx_done when points lie between them.
pub fn tx_spans_of(ts: &[u64; 8]) -> Vec<(SpanId, u64)> {
    let mut out = Vec::with_capacity(8);
    let mut prev: Option<usize> = None;
    for (i, &t) in ts.iter().enumerate() {
        if t == 0 {
            continue;
        }
        if let Some(p) = prev {
            out.push(((TX_BASE + p, TX_BASE + i), t.saturating_sub(ts[p])));
        }
        prev = Some(i);
    }
    let between = ts[TX_SEND + 1..TX_DONE].iter().any(|&t| t != 0);
    if ts[TX_SEND] != 0 && ts[TX_DONE] != 0 && between {
        out.push((
            (TX_BASE + TX_SEND, TX_BASE + TX_DONE),
            ts[TX_DONE].saturating_sub(ts[TX_SEND]),
        ));
    }
    out
}

fn chain_flags(flags: u32) -> Vec<&'static str> {
    [
        (TXF_DROPPED, "dropped"),
        (TXF_EVICTED, "evicted"),
        (TXF_AT_EXIT, "at_exit"),
        (TXF_QUEUED, "queued"),
    ]
    .iter()
    .filter(|(f, _)| flags & f != 0)
    .map(|&(_, n)| n)
    .collect()
}

impl Correlator {
    pub fn on_tx_send(&mut self, s: &TxSend) {
        self.stats.tx_writes += 1;
        if !self.tx_socks.contains_key(&s.sk) && self.tx_socks.len() >= self.limits.sockets {
            if let Some((&sk, _)) = self.tx_socks.iter().min_by_key(|(_, t)| t.last_seen) {
                self.tx_socks.remove(&sk);
            }
        }
        let owner = Owner {
            tgid: s.tgid,
            comm: s.comm,
        };
        let sock = self.tx_socks.entry(s.sk).or_default();
        sock.owner = Some(owner);
        sock.flow = Some(s.flow);
        sock.last_seen = s.ts;
        let start = sock.unwrap(s.seq);
        // A write that took no bytes (EAGAIN) shares its start with the next one.
        if sock.writes.back().is_some_and(|w| w.start == start) {
            sock.writes.pop_back();
        }
        if sock.writes.len() >= self.limits.queue_per_socket {
            sock.writes.pop_front();
            self.stats.queue_evicted += 1;
        }
        sock.writes.push_back(Write {
            start,
            ts: s.ts,
            owner,
            held: None,
        });
    }

    pub fn on_tx_held(&mut self, h: &TxHeld) {
        match h.reason {
            HeldReason::Nagle => self.stats.tx_held_nagle += 1,
            HeldReason::Cork => self.stats.tx_held_cork += 1,
            HeldReason::Other => {}
        }
        let Some(sock) = self.tx_socks.get_mut(&h.sk) else {
            return;
        };
        let (start, first_held) = (sock.unwrap(h.seq), sock.unwrap(h.snd_nxt));
        let Some(w) = sock.writes.iter_mut().rev().find(|w| w.start == start) else {
            return;
        };
        w.held = Some((h.reason, first_held));
        let owner = w.owner;
        if let Some(flow) = sock.flow {
            if let Some(conn) = self.record((Dir::Tx, flow), (0, 0), Some(&owner), &[], 0, false) {
                conn.held.entry(h.reason).or_default().writes += 1;
            }
        }
    }

    /// Give a TCP data segment the tx_send of the write holding its oldest byte.
    fn attribute(&mut self, c: &TxChain, ts: &mut [u64; 8]) -> Attribution {
        let mut a = Attribution::default();
        let Some(sock) = self.tx_socks.get_mut(&c.sk) else {
            if c.payload > 0 {
                self.stats.tx_unattributed += 1;
            }
            return a;
        };
        sock.last_seen = sock.last_seen.max(ts[TX_TRANSPORT]);
        a.owner = sock.owner;
        if c.payload == 0 {
            return a;
        }
        let start = sock.unwrap(c.seq);
        let end = start + c.payload as u64;
        if sock.was_sent(start) {
            // Its oldest byte went out before (RTO, TLP, fast retransmit): no new wait.
            self.stats.tx_retransmits += 1;
            a.retransmit = true;
            sock.mark_sent(start, end);
            return a;
        }
        sock.mark_sent(start, end);
        // The latest write that started at or before the oldest byte.
        let i = sock.writes.partition_point(|w| w.start <= start);
        let Some(w) = i.checked_sub(1).and_then(|i| sock.writes.get(i)) else {
            self.stats.tx_unattributed += 1;
            return a;
        };
        ts[TX_SEND] = w.ts;
        a.owner = Some(w.owner);
        a.held = w
            .held
            .filter(|&(_, first_held)| first_held <= start)
            .map(|(r, _)| r);
        sock.prune();
        a
    }

    pub fn on_tx_chain(&mut self, c: &TxChain) {
        self.stats.tx_chains += 1;
        if c.flags & TXF_DROPPED != 0 {
            self.stats.tx_dropped += 1;
        }
        if c.flags & TXF_AT_EXIT != 0 {
            self.stats.tx_at_exit += 1;
        }
        let mut ts = c.ts;
        let task = (c.flags & TXF_TASK != 0).then_some(Owner {
            tgid: c.tgid,
            comm: c.comm,
        });
        let a = if c.flow.proto == IPPROTO_TCP {
            self.attribute(c, &mut ts)
        } else {
            Attribution::default()
        };
        // A socket that only receives (its TX is ACKs) is owned by its reader.
        let reader = || self.socks_owner(c.sk);
        let (owner, held) = (a.owner.or(task).or_else(reader), a.held);
        if self.owner_filter && owner.is_none() {
            self.stats.owner_filtered += 1;
            return;
        }
        let mut spans = tx_spans_of(&ts);
        spans.extend(nf_split([
            (TX_BASE + TX_TRANSPORT, ts[TX_TRANSPORT]),
            (TX_NF_OUT_DONE, c.nf_mid[0]),
            (TX_NF_POST, c.nf_mid[1]),
            (TX_BASE + TX_NF_DONE, ts[TX_NF_DONE]),
        ]));
        if let Some(conn) = self.record(
            (Dir::Tx, c.flow),
            (c.ifindex, c.netns),
            owner.as_ref(),
            &spans,
            c.payload,
            true,
        ) {
            if let Some(r) = held {
                let wait = ts[TX_TRANSPORT].saturating_sub(ts[TX_SEND]);
                conn.held.entry(r).or_default().wait.record(wait);
            }
        }
        if let Some(t) = self.timelines.as_mut() {
            let mut flags = chain_flags(c.flags);
            flags.extend(held.map(HeldReason::name));
            if a.retransmit {
                flags.push("retransmit");
            }
            t.push(Timeline {
                dir: Dir::Tx,
                points: ts
                    .iter()
                    .enumerate()
                    .filter(|(_, &v)| v != 0)
                    .map(|(i, &v)| (TX_BASE + i, v))
                    .collect(),
                spans,
                flow: c.flow,
                owner,
                payload: c.payload,
                flags,
                skb: c.skb,
                netns: c.netns,
            });
        }
    }

    /// Forget sockets idle for longer than the age limit.
    pub(crate) fn expire_tx(&mut self, now: u64) {
        let max_age = self.limits.max_age_ns;
        self.tx_socks
            .retain(|_, s| now.saturating_sub(s.last_seen) <= max_age);
    }

    /// TCP writes not yet fully sent.
    pub fn tx_pending_writes(&self) -> usize {
        self.tx_socks.values().map(|s| s.writes.len()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::Flow;
    use crate::events::{Comm, IPPROTO_UDP};
    use crate::join::rx::Limits;
    use std::net::{IpAddr, Ipv4Addr};

    fn flow(proto: u8) -> Flow {
        Flow {
            proto,
            saddr: IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)),
            sport: 40000,
            daddr: IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2)),
            dport: 9000,
        }
    }

    fn send(sk: u64, ts: u64, seq: u32) -> TxSend {
        TxSend {
            ts,
            sk,
            flow: flow(IPPROTO_TCP),
            seq,
            msg_flags: 0,
            pid: 5,
            tgid: 5,
            comm: Comm::from("client"),
        }
    }

    /// A segment leaving at `t` (LOCAL_OUT) through a noqueue device.
    fn seg(sk: u64, t: u64, seq: u32, payload: u32) -> TxChain {
        TxChain {
            ts: [0, t, t + 10, t + 20, t + 20, t + 30, t + 40, 0],
            skb: 1,
            sk,
            flow: flow(IPPROTO_TCP),
            ifindex: 2,
            netns: 1,
            payload,
            seq,
            flags: 0,
            tgid: 0,
            comm: Comm::default(),
            cpu: 0,
            nf_mid: [t + 4, t + 6],
        }
    }

    fn send_span(c: &Correlator) -> Vec<u64> {
        let id = (TX_BASE + TX_SEND, TX_BASE + TX_TRANSPORT);
        let h = &c.spans[&id];
        vec![h.count(), h.min(), h.max()]
    }

    #[test]
    fn spans_follow_the_points_passed() {
        let s = tx_spans_of(&[100, 150, 160, 170, 170, 200, 210, 0]);
        assert_eq!(s.len(), 7);
        assert_eq!(s[0], ((TX_BASE, TX_BASE + 1), 50));
        assert_eq!(*s.last().unwrap(), ((TX_BASE, TX_BASE + TX_DONE), 110));
        assert_eq!(
            crate::join::rx::span_name((TX_BASE + 3, TX_BASE + 4)),
            "tx_qdisc_enq->tx_qdisc_deq"
        );
        // Without tx_send there is no total.
        assert_eq!(tx_spans_of(&[0, 150, 160, 0, 0, 0, 210, 0]).len(), 2);
    }

    #[test]
    fn a_large_write_gives_every_segment_its_start() {
        let mut c = Correlator::new(false, Limits::default(), false);
        c.on_tx_send(&send(7, 1_000, 100));
        // Four segments of write 1 (bytes 100..4100), sent over time.
        for i in 0..4u32 {
            c.on_tx_chain(&seg(7, 2_000 + i as u64 * 1_000, 100 + i * 1000, 1000));
        }
        // The next write starts at 4100, a pause later.
        c.on_tx_send(&send(7, 50_000, 4100));
        c.on_tx_chain(&seg(7, 51_000, 4100, 500));
        assert_eq!(send_span(&c), vec![5, 1_000, 4_000]);
        assert_eq!(c.tx_pending_writes(), 1);
    }

    #[test]
    fn many_writes_in_one_segment_take_the_oldest_byte() {
        let mut c = Correlator::new(false, Limits::default(), false);
        c.on_tx_send(&send(7, 1_000, 100));
        c.on_tx_send(&send(7, 2_000, 110));
        c.on_tx_send(&send(7, 3_000, 120));
        c.on_tx_chain(&seg(7, 10_000, 100, 30));
        assert_eq!(send_span(&c), vec![1, 9_000, 9_000]);
        // Resending those bytes is a retransmission, not a new wait.
        c.on_tx_chain(&seg(7, 20_000, 100, 30));
        assert_eq!(c.stats.tx_retransmits, 1);
        assert_eq!(send_span(&c)[0], 1);
    }

    #[test]
    fn held_writes_flag_the_connection_with_their_wait() {
        let mut c = Correlator::new(false, Limits::default(), false);
        c.on_tx_send(&send(7, 1_000, 100));
        c.on_tx_chain(&seg(7, 1_500, 100, 10));
        c.on_tx_send(&send(7, 2_000, 110));
        c.on_tx_held(&TxHeld {
            ts: 2_100,
            sk: 7,
            seq: 110,
            seq_end: 120,
            snd_nxt: 110,
            packets_out: 1,
            reason: HeldReason::Nagle,
            nonagle: 0,
            msg_flags: 0,
        });
        c.on_tx_chain(&seg(7, 42_000_000, 110, 10));
        assert_eq!(c.stats.tx_held_nagle, 1);
        let conn = &c.conns[&(Dir::Tx, flow(IPPROTO_TCP))];
        let held = &conn.held[&HeldReason::Nagle];
        assert_eq!(held.writes, 1);
        assert_eq!(held.wait.count(), 1);
        assert_eq!(held.wait.max(), 42_000_000 - 2_000);
        assert_eq!(conn.owner.unwrap().tgid, 5);
    }

    #[test]
    fn udp_chains_carry_their_sender() {
        let mut c = Correlator::new(true, Limits::default(), true);
        let mut ch = seg(0, 1_000, 0, 64);
        ch.flow = flow(IPPROTO_UDP);
        ch.ts[TX_SEND] = 900;
        c.on_tx_chain(&ch); // no sender: dropped by the owner filter
        assert_eq!(c.stats.owner_filtered, 1);
        ch.flags = TXF_TASK;
        ch.tgid = 9;
        c.on_tx_chain(&ch);
        assert_eq!(send_span(&c), vec![1, 100, 100]);
        let t = c.timelines.take().unwrap();
        assert_eq!(t.len(), 1);
        assert_eq!(t[0].owner.unwrap().tgid, 9);
        assert_eq!(t[0].dir, Dir::Tx);
    }

    #[test]
    fn segments_out_of_order_are_not_resends() {
        let mut c = Correlator::new(false, Limits::default(), false);
        c.on_tx_send(&send(7, 1_000, 100));
        // The softirq's segment (bytes 1100..2100) reaches the join before the writer's.
        c.on_tx_chain(&seg(7, 3_000, 1100, 1000));
        c.on_tx_chain(&seg(7, 2_000, 100, 1000));
        assert_eq!(c.stats.tx_retransmits, 0);
        assert_eq!(send_span(&c), vec![2, 1_000, 2_000]);
        // A real resend of the first bytes is one.
        c.on_tx_chain(&seg(7, 9_000, 100, 500));
        assert_eq!(c.stats.tx_retransmits, 1);
    }

    #[test]
    fn sequence_numbers_wrap() {
        let mut c = Correlator::new(false, Limits::default(), false);
        c.on_tx_send(&send(7, 1_000, u32::MAX - 99));
        c.on_tx_chain(&seg(7, 2_000, u32::MAX - 99, 100));
        c.on_tx_send(&send(7, 5_000, 0));
        c.on_tx_chain(&seg(7, 6_000, 0, 100));
        assert_eq!(send_span(&c), vec![2, 1_000, 1_000]);
        assert_eq!(c.stats.tx_retransmits + c.stats.tx_unattributed, 0);
        assert_eq!(c.tx_pending_writes(), 1);
    }
}

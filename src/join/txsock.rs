//! A socket's transmit state for the TCP write join (join/tx.rs): its writes not yet all
//! sent, and which bytes went out.

use std::collections::VecDeque;

use crate::events::{Flow, HeldReason, Owner};

pub(crate) struct Write {
    /// First byte, as an unwrapped (64-bit) sequence number.
    pub(crate) start: u64,
    pub(crate) ts: u64,
    pub(crate) owner: Owner,
    /// Why the write's tail stayed in the socket, and the first byte that stayed.
    pub(crate) held: Option<(HeldReason, u64)>,
}

/// Most sent ranges kept per socket; sends are contiguous, so a handful is plenty.
const MAX_RANGES: usize = 32;

/// Per-socket TX state: writes whose bytes have not all been sent yet, and which bytes
/// have been sent. Segments may reach the join slightly out of order (two CPUs transmit
/// for one socket: the writer, and the softirq that processes its ACKs), so a segment is
/// a resend only if its oldest byte was sent before, not merely if a later one was.
#[derive(Default)]
pub struct TxSock {
    pub(crate) writes: VecDeque<Write>,
    /// Disjoint, sorted [lo, hi) ranges of bytes sent at least once.
    pub(crate) sent: Vec<(u64, u64)>,
    /// The last unwrapped sequence number seen: 32-bit numbers are unwrapped around it.
    pub(crate) last: Option<u64>,
    pub(crate) flow: Option<Flow>,
    pub(crate) owner: Option<Owner>,
    pub(crate) last_seen: u64,
}

impl TxSock {
    /// The 64-bit sequence number nearest to the last one seen.
    pub(crate) fn unwrap(&mut self, seq: u32) -> u64 {
        let v = match self.last {
            // Start high enough that going backwards never goes below zero.
            None => (1u64 << 32) + seq as u64,
            Some(last) => {
                let d = seq.wrapping_sub(last as u32) as i32 as i64;
                (last as i64 + d) as u64
            }
        };
        self.last = Some(v);
        v
    }

    pub(crate) fn was_sent(&self, seq: u64) -> bool {
        self.sent.iter().any(|&(lo, hi)| lo <= seq && seq < hi)
    }

    pub(crate) fn mark_sent(&mut self, lo: u64, hi: u64) {
        let (mut lo, mut hi) = (lo, hi);
        self.sent.retain(|&(a, b)| {
            let touches = a <= hi && lo <= b;
            if touches {
                lo = lo.min(a);
                hi = hi.max(b);
            }
            !touches
        });
        let at = self.sent.partition_point(|&(a, _)| a < lo);
        self.sent.insert(at, (lo, hi));
        if self.sent.len() > MAX_RANGES {
            self.sent.remove(0);
        }
    }

    /// Drop writes all of whose bytes were sent; the newest write always stays.
    pub(crate) fn prune(&mut self) {
        while self.writes.len() > 1 {
            let (a, b) = (self.writes[0].start, self.writes[1].start);
            let covered = self.sent.iter().any(|&(lo, hi)| lo <= a && b <= hi);
            if !covered {
                break;
            }
            self.writes.pop_front();
        }
    }
}

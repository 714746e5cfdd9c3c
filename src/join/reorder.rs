//! Merge per-CPU ring buffers back into time order. Each CPU's buffer is in order, but a
//! read on one CPU can be consumed before the chain it completes from another; events
//! wait here until they are older than a watermark, then leave oldest first.

use std::collections::VecDeque;

use crate::events::Event;

/// How long an event waits for older ones from other CPUs (ns). BPF programs take
/// microseconds between reading the clock and submitting; this leaves a wide margin.
pub const HOLD_NS: u64 = 5_000_000;

/// Events waiting for release, one queue per ring. Each CPU emits in time order (for every
/// event the join depends on: chains at the socket queue, reads), so releasing is a k-way
/// merge of the queue fronts: held events are never sorted or moved again, however often
/// the loop runs. (A flushed chain is stamped before it is emitted and may leave a little
/// late; it is never queued to a socket, so order does not matter for it.)
#[derive(Default)]
pub struct Reorder {
    queues: Vec<VecDeque<(u64, Event)>>,
}

impl Reorder {
    pub fn new(rings: usize) -> Self {
        Reorder {
            queues: (0..rings.max(1)).map(|_| VecDeque::new()).collect(),
        }
    }

    pub fn push(&mut self, ring: usize, ev: Event) {
        if ring >= self.queues.len() {
            self.queues.resize_with(ring + 1, VecDeque::new);
        }
        self.queues[ring].push_back((ev.order_ts(), ev));
    }

    /// Hand every event at or before `watermark` to `f`, oldest first across rings.
    pub fn release(&mut self, watermark: u64, mut f: impl FnMut(Event)) {
        loop {
            let mut best: Option<(u64, usize)> = None;
            for (i, q) in self.queues.iter().enumerate() {
                if let Some(&(ts, _)) = q.front() {
                    if ts <= watermark && best.is_none_or(|(b, _)| ts < b) {
                        best = Some((ts, i));
                    }
                }
            }
            let Some((_, i)) = best else { return };
            if let Some((_, ev)) = self.queues[i].pop_front() {
                f(ev);
            }
        }
    }

    pub fn len(&self) -> usize {
        self.queues.iter().map(VecDeque::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.queues.iter().all(VecDeque::is_empty)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::Read;

    fn read(ts: u64) -> Event {
        Event::Read(Read {
            ts,
            sk: 1,
            pid: 1,
            tgid: 1,
            bytes: 1,
            copied_seq: 0,
            proto: 17,
            comm: Default::default(),
        })
    }

    #[test]
    fn releases_in_time_order_up_to_the_watermark() {
        let mut r = Reorder::new(2);
        // Two CPUs, each in order, interleaved in time.
        for (ring, ts) in [(0, 10), (0, 30), (0, 50), (1, 20), (1, 40)] {
            r.push(ring, read(ts));
        }
        let mut out = Vec::new();
        r.release(35, |e| out.push(e.order_ts()));
        assert_eq!(out, [10, 20, 30]);
        assert_eq!(r.len(), 2);
        r.release(u64::MAX, |e| out.push(e.order_ts()));
        assert_eq!(out, [10, 20, 30, 40, 50]);
        assert!(r.is_empty());
    }

    #[test]
    fn a_late_ring_is_waited_for_by_the_watermark() {
        let mut r = Reorder::new(2);
        r.push(1, read(100));
        let mut out = Vec::new();
        r.release(50, |e| out.push(e.order_ts()));
        assert!(out.is_empty(), "nothing is old enough yet");
        r.push(0, read(60)); // consumed later, but older
        r.release(200, |e| out.push(e.order_ts()));
        assert_eq!(out, [60, 100]);
    }

    #[test]
    fn equal_timestamps_keep_arrival_order() {
        let mut r = Reorder::new(1);
        let mut a = read(5);
        if let Event::Read(x) = &mut a {
            x.sk = 7;
        }
        r.push(0, a);
        r.push(0, read(5));
        let mut sks = Vec::new();
        r.release(5, |e| {
            if let Event::Read(x) = e {
                sks.push(x.sk)
            }
        });
        assert_eq!(sks, [7, 1]);
    }
}

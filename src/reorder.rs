//! Merge per-CPU ring buffers back into time order. Each CPU's buffer is in order, but a
//! read on one CPU can be consumed before the chain it completes from another; events
//! wait here until they are older than a watermark, then leave oldest first.

use crate::events::Event;

/// How long an event waits for older ones from other CPUs (ns). BPF programs take
/// microseconds between reading the clock and submitting; this leaves a wide margin.
pub const HOLD_NS: u64 = 5_000_000;

/// Events waiting for release. A batch sort, not a heap: each CPU's buffer arrives in
/// order, so the batch is a few sorted runs, which the standard (run-detecting, stable)
/// sort merges in about linear time.
#[derive(Default)]
pub struct Reorder {
    pending: Vec<(u64, Event)>,
}

impl Reorder {
    pub fn push(&mut self, ev: Event) {
        self.pending.push((ev.order_ts(), ev));
    }

    /// Hand every event at or before `watermark` to `f`, oldest first (ties keep arrival order).
    pub fn release(&mut self, watermark: u64, mut f: impl FnMut(Event)) {
        // Often already in order (one busy CPU): checking is far cheaper than moving events.
        if !self.pending.is_sorted_by_key(|e| e.0) {
            self.pending.sort_by_key(|e| e.0);
        }
        let n = self.pending.partition_point(|e| e.0 <= watermark);
        for (_, ev) in self.pending.drain(..n) {
            f(ev);
        }
    }

    pub fn len(&self) -> usize {
        self.pending.len()
    }

    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
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
            cgroup: 0,
            netns: 0,
            proto: 17,
            comm: Default::default(),
        })
    }

    #[test]
    fn releases_in_time_order_up_to_the_watermark() {
        let mut r = Reorder::default();
        for ts in [30, 10, 20, 50, 40] {
            r.push(read(ts));
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
    fn equal_timestamps_keep_arrival_order() {
        let mut r = Reorder::default();
        let mut a = read(5);
        if let Event::Read(x) = &mut a {
            x.sk = 7;
        }
        r.push(a);
        r.push(read(5));
        let mut sks = Vec::new();
        r.release(5, |e| {
            if let Event::Read(x) = e {
                sks.push(x.sk)
            }
        });
        assert_eq!(sks, [7, 1]);
    }
}

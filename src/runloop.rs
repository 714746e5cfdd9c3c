//! The shape every command's main loop shares: run until `--duration` ends or SIGINT /
//! SIGTERM arrives, waking at least every 100 ms to do its work.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

/// Longest sleep between two turns of a loop.
const TURN: Duration = Duration::from_millis(100);

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Keep going; wait at most this long for work.
    Wait(Duration),
    /// `--duration` is over.
    Done,
    /// SIGINT or SIGTERM.
    Interrupted,
}

/// A run's clock and its stop flag, set by SIGINT and SIGTERM.
pub struct RunLoop {
    started: Instant,
    duration: Option<Duration>,
    stop: Arc<AtomicBool>,
}

impl RunLoop {
    pub fn start(duration: Option<Duration>) -> Result<RunLoop> {
        let stop = Arc::new(AtomicBool::new(false));
        for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
            signal_hook::flag::register(sig, Arc::clone(&stop))
                .context("installing signal handlers")?;
        }
        Ok(RunLoop {
            started: Instant::now(),
            duration,
            stop,
        })
    }

    pub fn started(&self) -> Instant {
        self.started
    }

    pub fn step(&self) -> Step {
        next_step(
            self.duration,
            self.started.elapsed(),
            self.stop.load(Ordering::Relaxed),
        )
    }
}

/// The decision, as a pure function of the duration, the time elapsed and the flag.
pub fn next_step(duration: Option<Duration>, elapsed: Duration, stopped: bool) -> Step {
    let remaining = duration.map(|d| d.saturating_sub(elapsed));
    if remaining == Some(Duration::ZERO) {
        Step::Done
    } else if stopped {
        Step::Interrupted
    } else {
        Step::Wait(remaining.map_or(TURN, |r| r.min(TURN)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps() {
        let s = Duration::from_secs;
        assert_eq!(next_step(None, s(5), false), Step::Wait(TURN));
        assert_eq!(next_step(Some(s(2)), s(2), true), Step::Done);
        assert_eq!(next_step(Some(s(2)), s(1), true), Step::Interrupted);
        assert_eq!(
            next_step(Some(Duration::from_millis(1050)), s(1), false),
            Step::Wait(Duration::from_millis(50))
        );
    }
}

//! Where the timed training steps' time goes: waiting for a batch, forward with loss, backward,
//! the gradient allreduce, the optimizer, and the loop's own bookkeeping (loss sums, logging,
//! step hooks), recorded in run_summary.json (`train_steady.step_profile`) so the next speed
//! change is chosen from figures.
//!
//! CPU only: there every libtorch call returns when its work is done, so wall-clock marks between
//! phases measure the phases. On CUDA kernels run asynchronously and a mark would time only their
//! launch; synchronising at every mark would slow the run it measures, so no profile is taken.

use std::time::Instant;

use serde::Serialize;

/// Seconds per phase over the timed (post-warm-up) steps; they add up to about the steady
/// clock's `timed_seconds`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct StepProfile {
    /// Waiting for the prefetch thread's next batch (tokens assembled, padded, made tensors) and
    /// moving it to the device.
    pub batch_wait_s: f64,
    /// The model's forward pass and the loss.
    pub forward_s: f64,
    /// Backward through the loss.
    pub backward_s: f64,
    /// Averaging gradients across data-parallel workers (0 for one process).
    pub allreduce_s: f64,
    /// Gradient clipping, the AdamW update, zeroing the gradients.
    pub optimizer_s: f64,
    /// Loss bookkeeping, logging and step hooks (e.g. checkpoints).
    pub other_s: f64,
}

/// One phase of a training step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    BatchWait,
    Forward,
    Backward,
    AllReduce,
    Optimizer,
    Other,
}

/// Charges the wall time between consecutive marks to the phase each mark ends.
pub(crate) struct PhaseTimer {
    enabled: bool,
    last: Instant,
    profile: StepProfile,
}

impl PhaseTimer {
    /// A timer that records only when `enabled` (the CPU; see the module notes).
    pub fn new(enabled: bool) -> Self {
        Self {
            enabled,
            last: Instant::now(),
            profile: StepProfile::default(),
        }
    }

    /// Ends `phase` now; the time since the previous mark counts when `timed` (the steady clock
    /// is past its warm-up).
    pub fn mark(&mut self, phase: Phase, timed: bool) {
        let now = Instant::now();
        if self.enabled && timed {
            let seconds = now.duration_since(self.last).as_secs_f64();
            let p = &mut self.profile;
            match phase {
                Phase::BatchWait => p.batch_wait_s += seconds,
                Phase::Forward => p.forward_s += seconds,
                Phase::Backward => p.backward_s += seconds,
                Phase::AllReduce => p.allreduce_s += seconds,
                Phase::Optimizer => p.optimizer_s += seconds,
                Phase::Other => p.other_s += seconds,
            }
        }
        self.last = now;
    }

    /// Starts afresh without charging anything (after an evaluation, which is not a step).
    pub fn restart(&mut self) {
        self.last = Instant::now();
    }

    /// The profile, or `None` where none was taken (CUDA, or no timed step).
    pub fn finish(self, timed_steps: u64) -> Option<StepProfile> {
        (self.enabled && timed_steps > 0).then_some(self.profile)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn marks_charge_the_phase_they_end_and_only_while_timed() {
        let mut timer = PhaseTimer::new(true);
        std::thread::sleep(Duration::from_millis(20));
        timer.mark(Phase::Forward, false); // warm-up: not charged
        std::thread::sleep(Duration::from_millis(20));
        timer.mark(Phase::Backward, true);
        std::thread::sleep(Duration::from_millis(50));
        timer.restart(); // an evaluation: not charged
        std::thread::sleep(Duration::from_millis(10));
        timer.mark(Phase::Optimizer, true);
        let p = timer.finish(1).unwrap();
        assert_eq!(p.forward_s, 0.0);
        assert!(p.backward_s >= 0.02 && p.backward_s < 0.045, "{p:?}");
        assert!(p.optimizer_s >= 0.01 && p.optimizer_s < 0.045, "{p:?}");
        assert_eq!(p.batch_wait_s + p.allreduce_s + p.other_s, 0.0);
    }

    #[test]
    fn no_profile_where_disabled_or_nothing_was_timed() {
        let mut off = PhaseTimer::new(false);
        off.mark(Phase::Forward, true);
        assert_eq!(off.finish(5), None);
        assert_eq!(PhaseTimer::new(true).finish(0), None);
    }
}

//! Learning-rate schedules with Hugging Face semantics.
//!
//! The factor for optimizer step `k` (0-based, the step about to be taken) is what
//! `get_linear_schedule_with_warmup` / `get_constant_schedule_with_warmup` return for `k`: so with
//! warm-up the very first update uses a learning rate of 0, exactly as the `Trainer` does (its
//! scheduler is stepped after each optimizer step). Warm-up length: `warmup_steps` when > 0, else
//! `ceil(warmup_ratio * total_steps)`.

use crate::hyperparams::LrSchedule;

/// A learning-rate schedule: base rate times a factor depending on the optimizer step.
#[derive(Debug, Clone, PartialEq)]
pub struct LrScheduler {
    base_lr: f64,
    kind: LrSchedule,
    warmup_steps: u64,
    total_steps: u64,
}

/// Warm-up length as the `Trainer` resolves it: explicit steps win, else a ratio of the total.
pub fn resolve_warmup_steps(warmup_steps: u64, warmup_ratio: f64, total_steps: u64) -> u64 {
    if warmup_steps > 0 {
        warmup_steps
    } else {
        (warmup_ratio.max(0.0) * total_steps as f64).ceil() as u64
    }
}

impl LrScheduler {
    /// A schedule for `total_steps` optimizer steps.
    pub fn new(base_lr: f64, kind: LrSchedule, warmup_steps: u64, total_steps: u64) -> Self {
        Self {
            base_lr,
            kind,
            warmup_steps,
            total_steps,
        }
    }

    /// The multiplier of the base rate for optimizer step `step` (0-based).
    pub fn factor(&self, step: u64) -> f64 {
        if step < self.warmup_steps {
            return step as f64 / self.warmup_steps.max(1) as f64;
        }
        match self.kind {
            LrSchedule::Constant => 1.0,
            LrSchedule::Linear => {
                let remaining = self.total_steps.saturating_sub(step) as f64;
                let span = self.total_steps.saturating_sub(self.warmup_steps).max(1) as f64;
                (remaining / span).max(0.0)
            }
        }
    }

    /// The learning rate for optimizer step `step` (0-based).
    pub fn lr(&self, step: u64) -> f64 {
        self.base_lr * self.factor(step)
    }

    /// Total optimizer steps the schedule decays over.
    pub fn total_steps(&self) -> u64 {
        self.total_steps
    }

    /// Resolved warm-up length.
    pub fn warmup_steps(&self) -> u64 {
        self.warmup_steps
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Reference points follow the HF lambdas written out by hand:
    // linear: k < w -> k/w ; else max(0, (T-k)/(T-w)).
    #[test]
    fn linear_with_warmup_matches_hf_formula_points() {
        let s = LrScheduler::new(1e-4, LrSchedule::Linear, 10, 110);
        assert_eq!(s.lr(0), 0.0);
        assert!((s.lr(5) - 0.5e-4).abs() < 1e-15);
        assert!((s.lr(10) - 1e-4).abs() < 1e-15);
        assert!((s.lr(60) - 0.5e-4).abs() < 1e-15);
        assert!((s.lr(109) - 1e-6).abs() < 1e-15);
        assert_eq!(s.lr(110), 0.0);
        assert_eq!(s.lr(500), 0.0);
    }

    #[test]
    fn linear_without_warmup_starts_at_base_rate() {
        let s = LrScheduler::new(5e-5, LrSchedule::Linear, 0, 4);
        let lrs: Vec<f64> = (0..5).map(|k| s.lr(k)).collect();
        let want = [5e-5, 3.75e-5, 2.5e-5, 1.25e-5, 0.0];
        for (got, want) in lrs.iter().zip(want) {
            assert!((got - want).abs() < 1e-18, "{lrs:?}");
        }
    }

    #[test]
    fn constant_with_warmup_plateaus() {
        let s = LrScheduler::new(2.0, LrSchedule::Constant, 4, 100);
        assert_eq!(s.lr(0), 0.0);
        assert_eq!(s.lr(2), 1.0);
        assert_eq!(s.lr(4), 2.0);
        assert_eq!(s.lr(99), 2.0);
    }

    #[test]
    fn warmup_ratio_rounds_up_and_steps_win() {
        assert_eq!(resolve_warmup_steps(0, 0.1, 95), 10);
        assert_eq!(resolve_warmup_steps(0, 0.0, 95), 0);
        assert_eq!(resolve_warmup_steps(7, 0.5, 95), 7);
    }
}

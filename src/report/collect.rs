//! What the report needs from a live run and the trainer does not keep: the training loss and
//! learning rate by logged step (read through a [`StepHook`] wrapped around the job's own), and
//! misclassified evaluation texts from the predictions of one pass with the final weights
//! ([`crate::train::predict_rows`], the loop evaluation runs). No tch types here.

use std::collections::HashMap;

use super::inputs::{EvalExamples, Example, LogRecord};
use crate::train::{HookAction, ResumePoint, StepContext, StepHook, TrainState};

/// Evaluation rows predicted to find examples: bounds the extra pass on very large sets.
pub const MAX_SCANNED_ROWS: usize = 20_000;
/// Examples kept per (true, predicted) pair, and in all.
pub const PER_PAIR_LIMIT: usize = 3;
pub const MAX_EXAMPLES: usize = 600;
/// Characters kept of each example text.
const MAX_TEXT_CHARS: usize = 240;

/// Wraps the job's hook and records a [`LogRecord`] whenever the trainer folded a logging
/// window into its running loss sum (every `logging_steps`, and once at the end).
pub struct HistoryRecorder<'a> {
    inner: &'a mut dyn StepHook,
    steps_per_epoch: u64,
    seen_sum: f64,
    seen_rows: u64,
    last_lr: f64,
    records: Vec<LogRecord>,
}

impl<'a> HistoryRecorder<'a> {
    /// `resume`: a resumed run's earlier loss sums are not a window of this run.
    pub fn new(
        inner: &'a mut dyn StepHook,
        steps_per_epoch: u64,
        resume: Option<&ResumePoint>,
    ) -> Self {
        let (seen_sum, seen_rows) = resume.map_or((0.0, 0), |r| {
            (r.state.train_loss_sum, r.state.train_loss_rows)
        });
        Self {
            inner,
            steps_per_epoch: steps_per_epoch.max(1),
            seen_sum,
            seen_rows,
            last_lr: 0.0,
            records: Vec::new(),
        }
    }

    fn observe(&mut self, state: &TrainState) {
        if state.train_loss_rows <= self.seen_rows {
            return;
        }
        let rows = state.train_loss_rows - self.seen_rows;
        let loss = (state.train_loss_sum - self.seen_sum) / rows as f64;
        self.seen_sum = state.train_loss_sum;
        self.seen_rows = state.train_loss_rows;
        self.records.push(LogRecord {
            step: state.global_step,
            epoch: state.global_step as f64 / self.steps_per_epoch as f64,
            loss,
            learning_rate: self.last_lr,
        });
    }

    /// The records, with the final partial window `fit` folds in after the last hook call.
    pub fn finish(mut self, state: &TrainState) -> Vec<LogRecord> {
        self.observe(state);
        self.records
    }
}

impl StepHook for HistoryRecorder<'_> {
    fn after_step(&mut self, ctx: &StepContext<'_>) -> Result<HookAction, String> {
        // The rate of the step just taken (the schedule has already advanced past it).
        self.last_lr = ctx.scheduler.lr(ctx.state.scheduler_step.saturating_sub(1));
        self.observe(ctx.state);
        self.inner.after_step(ctx)
    }
}

/// Keeps up to [`PER_PAIR_LIMIT`] misclassified texts per (true, predicted) pair from the rows
/// `predicted` covers (the first [`MAX_SCANNED_ROWS`] of the evaluation set, predicted with
/// [`crate::train::predict_rows`]). `texts[i]` and `truth[i]` are row `i`'s text and label id.
pub fn misclassified(
    predicted: &[usize],
    truth: &[u32],
    texts: &[String],
    labels: &[String],
) -> EvalExamples {
    let scanned = predicted.len().min(truth.len()).min(texts.len());
    let mut kept: HashMap<(u32, u32), usize> = HashMap::new();
    let mut misclassified = Vec::new();
    for row in 0..scanned {
        let (t, p) = (truth[row], predicted[row] as u32);
        let slot = kept.entry((t, p)).or_default();
        if t == p || *slot >= PER_PAIR_LIMIT || misclassified.len() >= MAX_EXAMPLES {
            continue;
        }
        *slot += 1;
        let name = |id: u32| labels.get(id as usize).cloned().unwrap_or_default();
        misclassified.push(Example {
            row,
            text: texts[row].chars().take(MAX_TEXT_CHARS).collect(),
            true_label: name(t),
            predicted_label: name(p),
        });
    }
    EvalExamples {
        eval_rows: truth.len(),
        rows_scanned: scanned,
        per_pair_limit: PER_PAIR_LIMIT,
        misclassified,
    }
}

//! The training loop.
//!
//! Invariants:
//! - The host never waits on the device inside a step, except to decide whether an fp16 step is
//!   skipped (as PyTorch's `GradScaler` does). Loss sums and the non-finite check stay on the
//!   device and are read at logging steps, evaluations and epoch ends.
//! - Epoch `e`'s batch order depends only on `(seed, e)` and dropout is reseeded from
//!   `(seed, epoch, batch)` before every micro-batch, so a CPU run is bit-for-bit reproducible and
//!   a run resumed from a [`TrainState`] continues exactly as an uninterrupted one would.
//! - One optimizer step = `gradient_accumulation_steps` consecutive batches of the epoch plan (the
//!   last group of an epoch may be shorter); each micro-batch's mean loss is weighted by its share
//!   of the group's rows, so 2 x 4 rows equals 1 x 8 rows.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use indicatif::{ProgressBar, ProgressStyle};
use serde::{Deserialize, Serialize};
use tch::{nn, Device, Kind, Reduction, TchError, Tensor};

use super::amp::{GradScaler, Precision};
use super::device::{TensorBatch, PREFETCH_DEPTH};
use super::distributed::{DataParallel, ReduceOp};
use super::error::TrainError;
use super::evaluate::{evaluate_shared, EvalOptions, Evaluation};
use super::optim::{AdamW, AdamWConfig, AdamWState};
use super::schedule::{resolve_warmup_steps, LrScheduler};
use super::step_profile::{Phase, PhaseTimer, StepProfile};
use crate::hyperparams::{ClassWeights, Hyperparameters};
use crate::metrics::{self, ClassificationReport, EvalRecord};
use crate::model::ClassifierModel;
use crate::tokenize::batch::{plan_epoch, prefetch, PaddingStats, TokenizedSet};

/// fp16: this many skipped steps in a row means the loss itself is broken, not the scale.
const MAX_CONSECUTIVE_SKIPS: u32 = 25;

/// How the training length resolves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepPlan {
    pub batches_per_epoch: usize,
    pub steps_per_epoch: u64,
    pub total_steps: u64,
    pub warmup_steps: u64,
}

/// Training length as HF resolves it: `max_steps` when set, else `ceil(epochs * steps_per_epoch)`,
/// where an epoch has `ceil(batches / gradient_accumulation_steps)` optimizer steps.
pub fn plan_steps(hp: &Hyperparameters, train_rows: usize) -> StepPlan {
    let batches_per_epoch = train_rows.div_ceil(hp.train_batch_size.max(1));
    let accum = hp.gradient_accumulation_steps.max(1);
    let steps_per_epoch = (batches_per_epoch.div_ceil(accum) as u64).max(1);
    let total_steps = match hp.max_steps {
        Some(n) if n > 0 => n,
        _ => ((hp.epochs * steps_per_epoch as f64).ceil() as u64).max(1),
    };
    StepPlan {
        batches_per_epoch,
        steps_per_epoch,
        total_steps,
        warmup_steps: resolve_warmup_steps(hp.warmup_steps, hp.warmup_ratio, total_steps),
    }
}

/// Where a run stands; everything needed (with the optimizer state and weights) to resume it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainState {
    /// Current epoch, 0-based.
    pub epoch: u64,
    /// Batches of the current epoch's plan already consumed.
    pub batch_in_epoch: usize,
    /// Optimizer steps taken (skipped fp16 steps included, as HF counts them).
    pub global_step: u64,
    /// Steps the learning-rate schedule has advanced (skipped fp16 steps excluded).
    pub scheduler_step: u64,
    pub seed: u64,
    pub total_steps: u64,
    pub best_metric: Option<f64>,
    pub best_step: Option<u64>,
    pub evals_without_improvement: u32,
    /// fp16 loss scale and growth count.
    pub loss_scale: Option<f64>,
    pub scale_growth: i64,
    /// Sum and count behind the reported mean training loss.
    pub train_loss_sum: f64,
    pub train_loss_rows: u64,
    pub history: Vec<EvalRecord>,
}

/// Model weights as CPU tensors keyed by variable name.
pub type WeightSnapshot = Vec<(String, Tensor)>;

/// What a resumed run starts from (the checkpoint helper reads it from storage).
#[derive(Debug)]
pub struct ResumePoint {
    pub state: TrainState,
    pub optimizer: AdamWState,
    /// The best weights so far, if the checkpoint kept them.
    pub best_weights: Option<WeightSnapshot>,
}

/// Settings of one [`fit`] call besides the hyperparameters.
#[derive(Debug)]
pub struct FitOptions {
    /// Name of each class id, in id order.
    pub label_names: Vec<String>,
    pub pad_id: u32,
    pub device: Device,
    /// The caller has already set the model's compute kind to match.
    pub precision: Precision,
    pub resume: Option<ResumePoint>,
    /// Set (e.g. by a SIGTERM handler) to stop between steps.
    pub stop: Option<Arc<AtomicBool>>,
    /// Data-parallel training: `hp.train_batch_size` is then the *global* batch, which this rank
    /// computes its share of; gradients, losses and evaluations are reduced over the group, and
    /// rank 0's weights, hook decisions and stop flag are everyone's (see [`DataParallel`]).
    pub data_parallel: Option<DataParallel>,
    /// Keep the final evaluation's probabilities in [`TrainOutcome::final_probabilities`]
    /// (single-process runs; the job's blend reads them instead of predicting the rows again).
    pub keep_eval_probabilities: bool,
}

impl FitOptions {
    /// fp32 on `device`, pad id 0, fresh start, no stop flag.
    pub fn new(label_names: Vec<String>, device: Device) -> Self {
        Self {
            label_names,
            pad_id: 0,
            device,
            precision: Precision::Fp32,
            resume: None,
            stop: None,
            data_parallel: None,
            keep_eval_probabilities: false,
        }
    }
}

/// What a hook wants after it ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HookAction {
    Continue,
    Stop,
}

/// What a [`StepHook`] sees.
pub struct StepContext<'a> {
    pub state: &'a TrainState,
    vars: &'a nn::VarStore,
    pub optimizer: &'a AdamW,
    pub scheduler: &'a LrScheduler,
    /// True when this step closed an epoch (and the epoch's evaluation, if any, ran).
    pub epoch_end: bool,
    pub best_weights: Option<&'a WeightSnapshot>,
}

impl StepContext<'_> {
    /// The model's variables, every weight current (the optimizer's lazy rows caught up).
    pub fn vars(&self) -> &nn::VarStore {
        self.optimizer.sync_params();
        self.vars
    }
}

/// Called after each optimizer step (checkpointing, custom stopping). A hook error ends training.
pub trait StepHook {
    fn after_step(&mut self, ctx: &StepContext<'_>) -> Result<HookAction, String>;
}

/// A hook that does nothing.
impl StepHook for () {
    fn after_step(&mut self, _ctx: &StepContext<'_>) -> Result<HookAction, String> {
        Ok(HookAction::Continue)
    }
}

/// Why training ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StopReason {
    Completed,
    EarlyStopped,
    /// The stop flag was set; the state is resumable.
    Interrupted,
    /// A hook asked to stop.
    Hook,
}

/// The best evaluation seen.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BestModel {
    pub step: u64,
    pub metric: String,
    pub value: f64,
}

/// The result of [`fit`].
#[derive(Debug)]
pub struct TrainOutcome {
    pub state: TrainState,
    pub stop_reason: StopReason,
    /// Evaluation of the weights the model holds now (the best ones when they were restored).
    pub final_report: Option<ClassificationReport>,
    /// The evaluation rows' probabilities under those weights, when
    /// [`FitOptions::keep_eval_probabilities`] asked for them (and the run was one process).
    pub final_probabilities: Option<Vec<f32>>,
    pub best: Option<BestModel>,
    pub restored_best: bool,
    /// Mean training loss over all rows seen.
    pub train_loss: f64,
    pub runtime_s: f64,
    pub samples_per_second: f64,
    pub padding_efficiency: f64,
    /// Throughput after the warm-up steps with evaluation time left out (see [`SteadyClock`]).
    pub steady: SteadyThroughput,
    /// Where the loop's wall time went (evaluations, checkpoint hooks), for run_summary.json.
    pub timings: LoopTimings,
}

/// Wall seconds spent inside [`fit`] outside the training steps themselves.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct LoopTimings {
    /// Each evaluation in order, as `(global step, seconds)`; the final one included.
    pub evaluations: Vec<(u64, f64)>,
    /// Step hooks (checkpoint saves, the report's history) summed.
    pub hooks_seconds: f64,
}

/// Training throughput over the optimizer steps after a warm-up, evaluation time excluded; the
/// rates are 0 when no step was timed (runs of one step).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct SteadyThroughput {
    /// Optimizer steps left out at the start (`min(20, total_steps / 10)`, at least 1).
    pub warmup_steps_excluded: u64,
    pub timed_steps: u64,
    pub timed_seconds: f64,
    pub samples_per_second: f64,
    /// Attention-mask ones per second.
    pub real_tokens_per_second: f64,
    /// Batch rows x batch width per second.
    pub padded_tokens_per_second: f64,
    /// Where the timed steps' seconds went (CPU runs; `None` on CUDA).
    pub step_profile: Option<StepProfile>,
}

/// Times optimizer steps after a warm-up, as the Python references do: the clock starts at the end
/// of step `warmup` (counted from this run's first step) and pauses across evaluations. On CUDA
/// the device is synchronised only where the clock starts, pauses and stops, so steps stay
/// asynchronous in between.
struct SteadyClock {
    device: Device,
    warmup: u64,
    steps: u64,
    running_since: Option<Instant>,
    seconds: f64,
    timed_steps: u64,
    rows: u64,
    real: u64,
    padded: u64,
    phases: PhaseTimer,
}

impl SteadyClock {
    fn new(device: Device, total_steps: u64) -> Self {
        Self {
            device,
            warmup: (total_steps / 10).clamp(1, 20),
            steps: 0,
            running_since: None,
            seconds: 0.0,
            timed_steps: 0,
            rows: 0,
            real: 0,
            padded: 0,
            phases: PhaseTimer::new(device == Device::Cpu),
        }
    }

    /// Ends a phase of the current step (profiled once the warm-up is over).
    fn mark(&mut self, phase: Phase) {
        let timed = self.timing();
        self.phases.mark(phase, timed);
    }

    fn sync(&self) {
        if let Device::Cuda(i) = self.device {
            tch::Cuda::synchronize(i as i64);
        }
    }

    /// True while the steps being run are timed (their batches count).
    fn timing(&self) -> bool {
        self.steps >= self.warmup
    }

    /// Counts one micro-batch of the current optimizer step.
    fn add_batch(&mut self, rows: usize, real: usize, padded: usize) {
        if self.timing() {
            self.rows += rows as u64;
            self.real += real as u64;
            self.padded += padded as u64;
        }
    }

    /// Marks the end of an optimizer step.
    fn step_done(&mut self) {
        if self.timing() {
            self.timed_steps += 1;
        }
        self.steps += 1;
        if self.steps == self.warmup {
            self.sync();
            self.running_since = Some(Instant::now());
        }
    }

    /// Stops the clock (before an evaluation or at the end).
    fn pause(&mut self) {
        if let Some(t) = self.running_since.take() {
            self.sync();
            self.seconds += t.elapsed().as_secs_f64();
        }
    }

    /// Restarts the clock after [`SteadyClock::pause`] once the warm-up is over.
    fn resume(&mut self) {
        if self.timing() && self.running_since.is_none() {
            self.running_since = Some(Instant::now());
        }
        self.phases.restart();
    }

    fn finish(mut self) -> SteadyThroughput {
        self.pause();
        let rate = |n: u64| {
            if self.seconds > 0.0 && self.timed_steps > 0 {
                n as f64 / self.seconds
            } else {
                0.0
            }
        };
        SteadyThroughput {
            warmup_steps_excluded: self.warmup,
            timed_steps: self.timed_steps,
            timed_seconds: self.seconds,
            samples_per_second: rate(self.rows),
            real_tokens_per_second: rate(self.real),
            padded_tokens_per_second: rate(self.padded),
            step_profile: self.phases.finish(self.timed_steps),
        }
    }
}

/// Mixes seed, epoch and batch into a libtorch seed (SplitMix64 finaliser).
fn mix_seed(seed: u64, epoch: u64, batch: usize) -> i64 {
    let mut z = seed
        ^ epoch.wrapping_mul(0x9E37_79B9_7F4A_7C15)
        ^ (batch as u64).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    ((z ^ (z >> 31)) >> 1) as i64
}

/// The loss weight of each class under `choice` for training `labels`, or `None` (all 1).
pub fn class_weight_values(
    choice: ClassWeights,
    labels: &[u32],
    num_labels: usize,
) -> Option<Vec<f32>> {
    match choice {
        ClassWeights::None => None,
        ClassWeights::Balanced => Some(balanced_weights(labels, num_labels)),
    }
}

/// scikit-learn "balanced" weights `n / (k * count)`; classes absent from training get 1.
fn balanced_weights(labels: &[u32], num_labels: usize) -> Vec<f32> {
    let mut counts = vec![0usize; num_labels];
    for &l in labels {
        counts[l as usize] += 1;
    }
    let present = counts.iter().filter(|&&c| c > 0).count().max(1);
    counts
        .iter()
        .map(|&c| {
            if c == 0 {
                1.0
            } else {
                (labels.len() as f64 / (present as f64 * c as f64)) as f32
            }
        })
        .collect()
}

fn check_labels(
    set: &TokenizedSet,
    name: &'static str,
    num_labels: usize,
) -> Result<(), TrainError> {
    match set.labels().iter().position(|&l| l as usize >= num_labels) {
        Some(row) => Err(TrainError::LabelOutOfRange {
            set: name,
            row,
            id: set.labels()[row],
            num_labels,
        }),
        None => Ok(()),
    }
}

/// Resolves `metric_for_best_model` (with or without the `eval_` prefix, as HF accepts).
fn resolve_metric(name: &str) -> Result<String, TrainError> {
    let full = if name.starts_with("eval_") {
        name.to_string()
    } else {
        format!("eval_{name}")
    };
    let probe = metrics::classification_report(&[0], &[0], &["x".to_string()], Some(0.0))?;
    let known: Vec<String> = probe.scalars("eval").into_iter().map(|(k, _)| k).collect();
    if known.contains(&full) {
        Ok(full)
    } else {
        Err(TrainError::UnknownMetric {
            name: name.to_string(),
            known: known.join(", "),
        })
    }
}

fn snapshot(vs: &nn::VarStore) -> Result<WeightSnapshot, TchError> {
    let _guard = tch::no_grad_guard();
    let mut out: WeightSnapshot = Vec::new();
    for (name, t) in vs.variables() {
        let mut cpu = Tensor::f_zeros(t.size(), (t.f_kind()?, Device::Cpu))?;
        cpu.f_copy_(&t)?;
        out.push((name, cpu));
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

fn restore(vs: &nn::VarStore, snap: &WeightSnapshot) -> Result<(), TchError> {
    let vars = vs.variables();
    let _guard = tch::no_grad_guard();
    for (name, saved) in snap {
        if let Some(var) = vars.get(name) {
            let mut var = var.shallow_clone();
            var.f_copy_(saved)?;
        }
    }
    Ok(())
}

/// What rank 0 decided after a step: its hook asked to stop, its stop flag was set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct StopVote {
    hook: bool,
    flag: bool,
}

impl StopVote {
    /// Everyone takes rank 0's decision (one tiny broadcast per step), so all ranks stop after
    /// the same step: only rank 0 checkpoints and only its stop flag counts.
    fn agree(self, dp: Option<&DataParallel>, step: u64) -> Result<Self, TrainError> {
        let Some(dp) = dp else { return Ok(self) };
        let code = i64::from(self.hook) | (i64::from(self.flag) << 1);
        let phase = format!("stop decision after step {step}");
        let code = dp.group().broadcast_values(&[code], 0, &phase)?[0];
        Ok(Self {
            hook: code & 1 != 0,
            flag: code & 2 != 0,
        })
    }
}

/// Device-side running sums between two reads.
struct DeviceSums {
    loss_rows: Tensor,
    /// First optimizer step (1-based) with a non-finite micro-batch loss, or -1.
    first_bad: Tensor,
}

/// Host-side counters for throughput between two log lines.
#[derive(Default)]
struct Window {
    rows: u64,
    padding: PaddingStats,
    started: Option<Instant>,
}

/// Trains `model` on `train`, evaluating on `eval` (skipped when `eval` is empty), and returns
/// when the planned steps are done, early stopping triggers, a hook stops it or `opts.stop` is set.
pub fn fit<M: ClassifierModel>(
    model: &mut M,
    train: &TokenizedSet,
    eval: &TokenizedSet,
    hp: &Hyperparameters,
    opts: FitOptions,
    hook: &mut dyn StepHook,
) -> Result<TrainOutcome, TrainError> {
    let outcome = fit_loop(model, train, eval, hp, opts, hook);
    // The loop may have switched the lookup to sparse gradients for its optimizer.
    model.set_sparse_input_grad(false);
    outcome
}

fn fit_loop<M: ClassifierModel>(
    model: &mut M,
    train: &TokenizedSet,
    eval: &TokenizedSet,
    hp: &Hyperparameters,
    opts: FitOptions,
    hook: &mut dyn StepHook,
) -> Result<TrainOutcome, TrainError> {
    let FitOptions {
        label_names,
        pad_id,
        device,
        precision,
        resume,
        stop,
        data_parallel,
        keep_eval_probabilities,
    } = opts;
    let dp = data_parallel.as_ref();
    let eval_options = EvalOptions {
        batch_size: hp.eval_batch_size,
        pad_id,
        device,
        keep_probabilities: keep_eval_probabilities,
    };
    let num_labels = label_names.len();
    if train.is_empty() {
        return Err(TrainError::EmptyTrain);
    }
    check_labels(train, "train", num_labels)?;
    check_labels(eval, "evaluation", num_labels)?;
    let metric_name = resolve_metric(&hp.metric_for_best_model)?;
    let greater_is_better = !metric_name.ends_with("loss");
    if let Some(n) = hp.num_threads {
        tch::set_num_threads(n as i32);
    }

    let plan = plan_steps(hp, train.len());
    let accum = hp.gradient_accumulation_steps.max(1);
    let batch_size = hp.train_batch_size.max(1);
    let scheduler = LrScheduler::new(
        hp.learning_rate,
        hp.lr_scheduler_type,
        plan.warmup_steps,
        plan.total_steps,
    );
    let mut optimizer = AdamW::new(
        model.var_store(),
        AdamWConfig {
            beta1: hp.adam_beta1,
            beta2: hp.adam_beta2,
            eps: hp.adam_epsilon,
            weight_decay: hp.weight_decay,
            head_lr_scale: hp
                .classifier_learning_rate
                .map_or(1.0, |head| head / hp.learning_rate),
        },
    )?;
    if let Some(dp) = dp {
        optimizer.broadcast_params(dp.group(), 0, "broadcasting rank 0's initial weights")?;
    }
    let host_class_weights = class_weight_values(hp.class_weights, train.labels(), num_labels);
    let class_weights = match &host_class_weights {
        None => None,
        Some(w) => Some(Tensor::f_from_slice(w)?.f_to_device(device)?),
    };
    // Data-parallel: a global batch's loss normaliser (its rows, or their class weights), so
    // each rank's summed loss over its share adds up to the global batch's mean.
    let global_denominator = |rows: &[usize]| -> f64 {
        match &host_class_weights {
            None => rows.len() as f64,
            Some(w) => rows
                .iter()
                .map(|&r| f64::from(w[train.labels()[r] as usize]))
                .sum(),
        }
    };

    let mut best_weights: Option<WeightSnapshot> = None;
    let mut best_report: Option<Evaluation> = None;
    let mut last_report: Option<Evaluation> = None;
    let mut state = match resume {
        Some(point) => {
            if point.state.seed != hp.seed || point.state.total_steps != plan.total_steps {
                return Err(TrainError::Resume(format!(
                    "checkpoint has seed {} and {} total steps, this job seed {} and {}; resume with the same hyperparameters or start fresh",
                    point.state.seed, point.state.total_steps, hp.seed, plan.total_steps
                )));
            }
            optimizer.import_state(&point.optimizer)?;
            best_weights = point.best_weights;
            point.state
        }
        None => TrainState {
            epoch: 0,
            batch_in_epoch: 0,
            global_step: 0,
            scheduler_step: 0,
            seed: hp.seed,
            total_steps: plan.total_steps,
            best_metric: None,
            best_step: None,
            evals_without_improvement: 0,
            loss_scale: None,
            scale_growth: 0,
            train_loss_sum: 0.0,
            train_loss_rows: 0,
            history: Vec::new(),
        },
    };
    // On the CPU the word embeddings are updated row-lazily from sparse gradients: a batch of
    // short texts touches a few hundred of their rows (see optim's `lazy` module).
    if let Some(table) = model.input_table() {
        if optimizer.make_lazy(&table)? {
            model.set_sparse_input_grad(true);
        }
    }
    let mut scaler = match precision {
        Precision::Fp16 => Some(GradScaler::with_scale(
            device,
            state.loss_scale.unwrap_or(65536.0),
            state.scale_growth as i32,
        )?),
        _ => None,
    };

    let progress = if std::io::stderr().is_terminal() {
        let bar = ProgressBar::new(plan.total_steps);
        if let Ok(style) =
            ProgressStyle::with_template("{bar:40} {pos}/{len} steps {elapsed}<{eta} {msg}")
        {
            bar.set_style(style);
        }
        bar.set_position(state.global_step);
        bar
    } else {
        ProgressBar::hidden()
    };
    tracing::info!(
        "training: rows={}; epochs={}; steps_per_epoch={}; total_steps={}; warmup_steps={}; batch_size={}; gradient_accumulation_steps={}; precision={:?}; device={:?};",
        train.len(),
        hp.epochs,
        plan.steps_per_epoch,
        plan.total_steps,
        plan.warmup_steps,
        batch_size,
        accum,
        precision,
        device
    );

    let lengths = train.lengths();
    let float_opts = (Kind::Float, device);
    let mut sums = DeviceSums {
        loss_rows: Tensor::f_zeros([], float_opts)?,
        first_bad: Tensor::f_full([], -1, (Kind::Int64, device))?,
    };
    let mut window = Window::default();
    let mut total_padding = PaddingStats::default();
    let mut last_norm: Option<Tensor> = None;
    let mut consecutive_skips = 0u32;
    let mut last_eval_step: Option<u64> = None;
    let mut timings = LoopTimings::default();
    let mut stop_reason = StopReason::Completed;
    let run_start = Instant::now();
    let start_step = state.global_step;
    let mut rows_seen = 0u64;
    let mut steady = SteadyClock::new(device, plan.total_steps);

    // Fails when a loss was non-finite (fp16 leaves that to the scaler).
    let check_finite = |sums: &DeviceSums| -> Result<(), TrainError> {
        let mut bad = sums.first_bad.f_int64_value(&[])?;
        if let Some(dp) = dp {
            // The earliest bad step on any rank (-1 = none travels as i64::MAX).
            let mine = if bad < 0 { i64::MAX } else { bad };
            let earliest =
                dp.group()
                    .reduce_values(&[mine], ReduceOp::Min, "non-finite loss check")?;
            bad = match earliest[0] {
                i64::MAX => -1,
                b => b,
            };
        }
        if bad >= 0 && precision != Precision::Fp16 {
            return Err(TrainError::NonFinite { step: bad as u64 });
        }
        Ok(())
    };
    // Reads the device loss sum into the state and returns the window's mean loss.
    let drain = |sums: &mut DeviceSums,
                 state: &mut TrainState,
                 window_rows: u64|
     -> Result<f64, TrainError> {
        check_finite(sums)?;
        let mut sum = sums.loss_rows.f_double_value(&[])?;
        if let Some(dp) = dp {
            sum = dp.group().sum_f64(sum, "training loss reduction")?;
        }
        let _ = sums.loss_rows.f_zero_()?;
        let mean = if window_rows == 0 {
            0.0
        } else {
            sum / window_rows as f64
        };
        if sum.is_finite() {
            state.train_loss_sum += sum;
            state.train_loss_rows += window_rows;
        }
        Ok(mean)
    };

    'epochs: while state.global_step < plan.total_steps {
        let epoch = state.epoch;
        let epoch_plan = plan_epoch(&lengths, batch_size, hp.seed, epoch, hp.group_by_length);
        // This rank's share of each (global) batch; the whole batch without data parallelism.
        let rank_plan: Vec<Vec<usize>> = match dp {
            Some(dp) => epoch_plan.iter().map(|b| dp.shard(b).to_vec()).collect(),
            None => epoch_plan.clone(),
        };
        let start_batch = state.batch_in_epoch.min(epoch_plan.len());
        let mut epoch_padding = PaddingStats::default();
        let mut finished_epoch = true;
        let mut eval_now = false;

        let loop_result = std::thread::scope(|scope| -> Result<Option<StopReason>, TrainError> {
            let rx = prefetch(
                scope,
                rank_plan[start_batch..].to_vec(),
                PREFETCH_DEPTH,
                |rows| TensorBatch::from_host(&train.assemble(rows, pad_id), device),
            );
            for (i, item) in rx.iter().enumerate() {
                let batch_index = start_batch + i;
                let group_start = batch_index / accum * accum;
                let group_end = (group_start + accum).min(epoch_plan.len());
                let group_rows: usize = epoch_plan[group_start..group_end]
                    .iter()
                    .map(Vec::len)
                    .sum();
                let b = item?.to_device(device)?;
                steady.mark(Phase::BatchWait);
                window.started.get_or_insert_with(Instant::now);
                // The rows the whole group computes for this batch (this rank's alone without
                // data parallelism).
                let global_rows = epoch_plan[batch_index].len();

                // A short last batch may leave a rank no rows: it only joins the allreduce.
                if b.rows > 0 {
                    let rank_salt = dp.map_or(0, |dp| dp.rank() as u64);
                    tch::manual_seed(mix_seed(
                        hp.seed ^ rank_salt.wrapping_mul(0xD6E8_FEB8_6659_FD93),
                        epoch,
                        batch_index,
                    ));
                    optimizer.prepare_rows(&b.input_ids)?;
                    let logits = model
                        .forward_t(
                            &b.input_ids,
                            &b.attention_mask,
                            b.token_type_ids.as_ref(),
                            true,
                        )
                        .f_to_kind(Kind::Float)?;
                    let (loss, share) = match dp {
                        None => (
                            logits.f_cross_entropy_loss(
                                &b.labels,
                                class_weights.as_ref(),
                                Reduction::Mean,
                                -100,
                                hp.label_smoothing,
                            )?,
                            b.rows as f64 / group_rows as f64,
                        ),
                        Some(_) => (
                            logits
                                .f_cross_entropy_loss(
                                    &b.labels,
                                    class_weights.as_ref(),
                                    Reduction::Sum,
                                    -100,
                                    hp.label_smoothing,
                                )?
                                .f_div_scalar(global_denominator(&epoch_plan[batch_index]))?,
                            global_rows as f64 / group_rows as f64,
                        ),
                    };
                    let mut scaled = loss.f_mul_scalar(share)?;
                    if let Some(s) = scaler.as_ref() {
                        scaled = s.scale_loss(&scaled)?;
                    }
                    steady.mark(Phase::Forward);
                    optimizer.backward(&scaled)?;
                    steady.mark(Phase::Backward);
                    {
                        let _guard = tch::no_grad_guard();
                        let detached = loss.f_detach()?;
                        let rows = if dp.is_some() { global_rows } else { b.rows };
                        sums.loss_rows =
                            sums.loss_rows.f_add(&detached.f_mul_scalar(rows as f64)?)?;
                        let bad = detached
                            .f_isfinite()?
                            .f_logical_not()?
                            .f_logical_and(&sums.first_bad.f_lt(0)?)?;
                        sums.first_bad = sums.first_bad.f_where_scalarother(
                            &bad.f_logical_not()?,
                            (state.global_step + 1) as i64,
                        )?;
                    }
                }
                window.rows += global_rows as u64;
                rows_seen += global_rows as u64;
                window.padding.add(b.real_tokens, b.padded_tokens);
                epoch_padding.add(b.real_tokens, b.padded_tokens);
                total_padding.add(b.real_tokens, b.padded_tokens);
                steady.add_batch(b.rows, b.real_tokens, b.padded_tokens);
                steady.mark(Phase::Other);
                state.batch_in_epoch = batch_index + 1;
                if batch_index + 1 != group_end {
                    continue;
                }

                // ---- optimizer step ----
                if let Some(dp) = dp {
                    let phase = format!("gradient allreduce at step {}", state.global_step + 1);
                    optimizer.all_reduce_gradients(dp.group(), &phase)?;
                    steady.mark(Phase::AllReduce);
                }
                let lr = scheduler.lr(state.scheduler_step);
                let mut skipped = false;
                let mut found_inf = None;
                if let Some(s) = scaler.as_ref() {
                    let inf = s.unscale(&optimizer.gradients()?)?;
                    skipped = inf.f_double_value(&[0])? > 0.0;
                    found_inf = Some(inf);
                }
                last_norm = Some(optimizer.clip_grad_norm(hp.max_grad_norm)?);
                if !skipped {
                    optimizer.step(lr)?;
                    state.scheduler_step += 1;
                    consecutive_skips = 0;
                } else {
                    consecutive_skips += 1;
                }
                if let (Some(s), Some(inf)) = (scaler.as_mut(), found_inf.as_ref()) {
                    s.update(inf)?;
                }
                optimizer.zero_grad()?;
                steady.mark(Phase::Optimizer);
                state.global_step += 1;
                steady.step_done();
                progress.set_position(state.global_step);
                if consecutive_skips >= MAX_CONSECUTIVE_SKIPS {
                    return Err(TrainError::ScalingFailed {
                        step: state.global_step,
                        skips: consecutive_skips,
                    });
                }

                let step = state.global_step;
                if hp.logging_steps > 0 && step % hp.logging_steps == 0 {
                    let loss = drain(&mut sums, &mut state, window.rows)?;
                    let secs = window
                        .started
                        .map(|t| t.elapsed().as_secs_f64())
                        .unwrap_or(0.0)
                        .max(1e-9);
                    let norm = match last_norm.as_ref() {
                        Some(n) => n.f_double_value(&[])?,
                        None => 0.0,
                    };
                    let done = (step - start_step) as f64;
                    let eta = run_start.elapsed().as_secs_f64() / done.max(1.0)
                        * (plan.total_steps - step) as f64;
                    let mut pairs = vec![
                        (
                            "epoch".to_string(),
                            step as f64 / plan.steps_per_epoch as f64,
                        ),
                        ("step".to_string(), step as f64),
                        ("loss".to_string(), loss),
                        ("learning_rate".to_string(), lr),
                        ("grad_norm".to_string(), norm),
                        ("samples_per_second".to_string(), window.rows as f64 / secs),
                        (
                            "tokens_per_second".to_string(),
                            window.padding.real_tokens as f64 / secs,
                        ),
                        (
                            "padded_tokens_per_second".to_string(),
                            window.padding.padded_tokens as f64 / secs,
                        ),
                        ("eta_seconds".to_string(), eta.round()),
                    ];
                    if let Some(s) = scaler.as_ref() {
                        pairs.push(("loss_scale".to_string(), s.scale_value()?));
                    }
                    let line = metrics::log_line(&pairs);
                    progress.set_message(format!("loss={loss:.4}"));
                    progress.suspend(|| tracing::info!("{line}"));
                    window = Window::default();
                }
                let epoch_end = batch_index + 1 == epoch_plan.len();
                let periodic = hp.eval_steps.is_some_and(|n| n > 0 && step % n == 0);
                if periodic && !epoch_end {
                    eval_now = true;
                }
                if step >= plan.total_steps || epoch_end || eval_now {
                    // The epoch-end (or final / periodic) evaluation happens outside the prefetch
                    // scope; the hook for this step runs after it.
                    finished_epoch = epoch_end;
                    return Ok(None);
                }
                let ctx = StepContext {
                    state: &state,
                    vars: model.var_store(),
                    optimizer: &optimizer,
                    scheduler: &scheduler,
                    epoch_end: false,
                    best_weights: best_weights.as_ref(),
                };
                let vote = StopVote {
                    hook: hook
                        .after_step(&ctx)
                        .map_err(|message| TrainError::Hook { step, message })?
                        == HookAction::Stop,
                    flag: stop.as_ref().is_some_and(|f| f.load(Ordering::Relaxed)),
                }
                .agree(dp, step)?;
                if vote.hook {
                    return Ok(Some(StopReason::Hook));
                }
                if vote.flag {
                    return Ok(Some(StopReason::Interrupted));
                }
                steady.mark(Phase::Other);
            }
            finished_epoch = true;
            Ok(None)
        });
        if let Some(reason) = loop_result? {
            stop_reason = reason;
            break 'epochs;
        }

        let step = state.global_step;
        let epoch_end = finished_epoch && state.batch_in_epoch >= epoch_plan.len();
        if epoch_end {
            check_finite(&sums)?;
            tracing::info!(
                "{}",
                metrics::log_line(&[
                    ("epoch".to_string(), (epoch + 1) as f64),
                    ("step".to_string(), step as f64),
                    ("padding_efficiency".to_string(), epoch_padding.efficiency()),
                ])
            );
        }
        let mut early_stop = false;
        let should_eval = !eval.is_empty()
            && last_eval_step != Some(step)
            && (epoch_end || eval_now || step >= plan.total_steps);
        if should_eval {
            steady.pause();
            let eval_started = Instant::now();
            optimizer.sync_params();
            let evaluation = evaluate_shared(&*model, eval, eval_options, &label_names, dp)?;
            let report = &evaluation.report;
            last_eval_step = Some(step);
            timings
                .evaluations
                .push((step, eval_started.elapsed().as_secs_f64()));
            let mut pairs = vec![
                (
                    "epoch".to_string(),
                    step as f64 / plan.steps_per_epoch as f64,
                ),
                ("step".to_string(), step as f64),
            ];
            pairs.extend(report.scalars("eval"));
            progress.suspend(|| tracing::info!("{}", metrics::log_line(&pairs)));
            state.history.push(EvalRecord {
                epoch: step as f64 / plan.steps_per_epoch as f64,
                step,
                metrics: report.scalars("eval"),
            });
            let value = report.scalar("eval", &metric_name).unwrap_or(f64::NAN);
            let improved = match state.best_metric {
                None => value.is_finite(),
                Some(best) if greater_is_better => value > best,
                Some(best) => value < best,
            };
            if improved {
                state.best_metric = Some(value);
                state.best_step = Some(step);
                state.evals_without_improvement = 0;
                // Only a restorable best is ever reported as final (probabilities and all).
                if hp.load_best_model_at_end {
                    best_weights = Some(snapshot(model.var_store())?);
                    best_report = Some(evaluation.clone());
                }
            } else {
                state.evals_without_improvement += 1;
            }
            if let Some(patience) = hp.early_stopping_patience {
                early_stop = patience > 0 && state.evals_without_improvement >= patience;
            }
            last_report = Some(evaluation);
            steady.resume();
        }
        if epoch_end {
            state.epoch += 1;
            state.batch_in_epoch = 0;
        }
        if let Some(s) = scaler.as_ref() {
            state.loss_scale = Some(s.scale_value()?);
            state.scale_growth = s.growth_value()?;
        }
        let ctx = StepContext {
            state: &state,
            vars: model.var_store(),
            optimizer: &optimizer,
            scheduler: &scheduler,
            epoch_end,
            best_weights: best_weights.as_ref(),
        };
        let hook_started = Instant::now();
        let action = hook
            .after_step(&ctx)
            .map_err(|message| TrainError::Hook { step, message })?;
        timings.hooks_seconds += hook_started.elapsed().as_secs_f64();
        let vote = StopVote {
            hook: action == HookAction::Stop,
            flag: stop.as_ref().is_some_and(|f| f.load(Ordering::Relaxed)),
        }
        .agree(dp, step)?;
        if vote.hook {
            stop_reason = StopReason::Hook;
            break;
        }
        if early_stop {
            tracing::info!(
                "early stopping: {metric_name} did not improve for {} evaluations; step={step};",
                state.evals_without_improvement
            );
            stop_reason = StopReason::EarlyStopped;
            break;
        }
        if vote.flag {
            stop_reason = StopReason::Interrupted;
            break;
        }
    }
    progress.finish_and_clear();
    optimizer.sync_params();
    let steady = steady.finish();
    // Rows of a partial window still count toward the mean training loss.
    let pending_rows = window.rows;
    drain(&mut sums, &mut state, pending_rows)?;
    if let Some(s) = scaler.as_ref() {
        state.loss_scale = Some(s.scale_value()?);
        state.scale_growth = s.growth_value()?;
    }

    let mut restored_best = false;
    let mut final_report = None;
    if stop_reason != StopReason::Interrupted && !eval.is_empty() {
        let current_evaluated = last_eval_step == Some(state.global_step);
        // The current weights are from `global_step`; the best ones may be older.
        let best_elsewhere =
            state.best_step.is_some() && state.best_step != Some(state.global_step);
        match best_weights.as_ref() {
            Some(snap) if hp.load_best_model_at_end && best_elsewhere => {
                restore(model.var_store(), snap)?;
                restored_best = true;
                final_report = best_report.take();
            }
            _ if current_evaluated => final_report = last_report.take(),
            _ => {}
        }
        if final_report.is_none() {
            let eval_started = Instant::now();
            final_report = Some(evaluate_shared(
                &*model,
                eval,
                eval_options,
                &label_names,
                dp,
            )?);
            timings
                .evaluations
                .push((state.global_step, eval_started.elapsed().as_secs_f64()));
        }
    }
    let runtime_s = run_start.elapsed().as_secs_f64();
    let train_loss = if state.train_loss_rows == 0 {
        0.0
    } else {
        state.train_loss_sum / state.train_loss_rows as f64
    };
    let best = state
        .best_step
        .zip(state.best_metric)
        .map(|(step, value)| BestModel {
            step,
            metric: metric_name.clone(),
            value,
        });
    tracing::info!(
        "{}",
        metrics::log_line(&[
            ("step".to_string(), state.global_step as f64),
            ("train_loss".to_string(), train_loss),
            ("train_runtime".to_string(), runtime_s),
            (
                "train_samples_per_second".to_string(),
                rows_seen as f64 / runtime_s.max(1e-9)
            ),
            ("padding_efficiency".to_string(), total_padding.efficiency()),
            (
                "train_steady_samples_per_second".to_string(),
                steady.samples_per_second
            ),
            (
                "train_steady_real_tokens_per_second".to_string(),
                steady.real_tokens_per_second
            ),
            (
                "train_steady_padded_tokens_per_second".to_string(),
                steady.padded_tokens_per_second
            ),
        ])
    );
    let (final_report, final_probabilities) = match final_report {
        Some(e) => (Some(e.report), e.probabilities),
        None => (None, None),
    };
    Ok(TrainOutcome {
        stop_reason,
        final_report,
        final_probabilities,
        best,
        restored_best,
        train_loss,
        runtime_s,
        samples_per_second: rows_seen as f64 / runtime_s.max(1e-9),
        padding_efficiency: total_padding.efficiency(),
        steady,
        timings,
        state,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn step_plan_matches_hf_rounding() {
        let mut hp = Hyperparameters {
            train_batch_size: 8,
            epochs: 3.0,
            ..Hyperparameters::default()
        };
        // 100 rows -> 13 batches -> 13 steps per epoch.
        assert_eq!(plan_steps(&hp, 100).total_steps, 39);
        hp.gradient_accumulation_steps = 4; // 13 batches -> 4 steps (last group of 1 batch)
        assert_eq!(plan_steps(&hp, 100).steps_per_epoch, 4);
        hp.epochs = 1.5;
        assert_eq!(plan_steps(&hp, 100).total_steps, 6);
        hp.max_steps = Some(7);
        hp.warmup_ratio = 0.1;
        let p = plan_steps(&hp, 100);
        assert_eq!((p.total_steps, p.warmup_steps), (7, 1));
    }

    #[test]
    fn balanced_weights_follow_sklearn() {
        // counts 3,1 over 2 present classes: 4/(2*3), 4/(2*1); absent class 2 -> 1.
        let w = balanced_weights(&[0, 0, 0, 1], 3);
        assert!((w[0] - 4.0 / 6.0).abs() < 1e-6 && (w[1] - 2.0).abs() < 1e-6 && w[2] == 1.0);
    }

    #[test]
    fn metric_names_resolve_with_or_without_prefix() {
        assert_eq!(resolve_metric("f1_macro").unwrap(), "eval_f1_macro");
        assert_eq!(resolve_metric("eval_loss").unwrap(), "eval_loss");
        assert!(matches!(
            resolve_metric("bleu"),
            Err(TrainError::UnknownMetric { .. })
        ));
    }
}

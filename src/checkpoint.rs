//! Resumable training state under the checkpoint directory (`/opt/ml/checkpoints`, which
//! SageMaker syncs to S3 and restores when a spot job restarts).
//!
//! Layout of one checkpoint, `<dir>/checkpoint-<global_step>/`:
//! - `model.safetensors`: every variable of the model's `VarStore`, Hugging Face names.
//! - `optimizer.safetensors`: AdamW moments as `exp_avg.<name>` / `exp_avg_sq.<name>`; the step
//!   count in the metadata.
//! - `best_model.safetensors`: the best weights so far, when `load_best_model_at_end` kept them.
//! - `trainer_state.json`: the loop's [`TrainState`] (epoch, batch position in the epoch's order,
//!   scheduler step, seed, loss scale, best metric, history) plus the exact bits of its floats.
//! - `label_map.json`: `id2label` / `label2id`.
//! - `fingerprint.json`: what must match for a job to resume from it ([`Fingerprint`]).
//! - `manifest.json`, written last: every file above with its size.
//!
//! Invariants:
//! - A checkpoint is written into `checkpoint-<N>.tmp-<pid>`, every file and the folder are
//!   fsynced, and only then is the folder renamed to `checkpoint-<N>`; a reader ignores `.tmp-`
//!   folders and any checkpoint whose manifest is missing or disagrees with the files (a torn S3
//!   sync), falling back to the next older one.
//! - The RNG state is the seed: the loop derives each epoch's data order from `(seed, epoch)` and
//!   reseeds dropout from `(seed, epoch, batch)`, so `TrainState` alone positions the streams.
//! - An incompatible newest checkpoint is an error naming every field that differs, never a
//!   silent fresh start (unless `resume=never`).
//! - `save_total_limit` never deletes the checkpoint just written.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use safetensors::tensor::{Dtype, SafeTensors, View};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tch::{nn, Device, Kind, TchError, Tensor};

use crate::hyperparams::{Hyperparameters, ResumePolicy, SaveStrategy};
use crate::metrics::EvalRecord;
use crate::train::optim::{AdamWState, OptimError, VarState};
use crate::train::{HookAction, ResumePoint, StepContext, StepHook, TrainState, WeightSnapshot};

/// Folder name prefix of a checkpoint: `checkpoint-<global_step>`.
pub const CHECKPOINT_PREFIX: &str = "checkpoint-";
/// Marks a checkpoint still being written: `checkpoint-<N>.tmp-<pid>`.
const TMP_MARK: &str = ".tmp-";
pub const WEIGHTS_FILE: &str = "model.safetensors";
pub const OPTIMIZER_FILE: &str = "optimizer.safetensors";
pub const BEST_WEIGHTS_FILE: &str = "best_model.safetensors";
pub const STATE_FILE: &str = "trainer_state.json";
pub const LABELS_FILE: &str = "label_map.json";
pub const FINGERPRINT_FILE: &str = "fingerprint.json";
pub const MANIFEST_FILE: &str = "manifest.json";
/// Bumped when the layout changes incompatibly.
const FORMAT_VERSION: u32 = 1;

/// Hyperparameters that change the course of a run; a checkpoint resumes only when all match.
/// (Logging, saving, device and thread settings are left out: they do not change the result.)
pub const RUN_KEYS: &[&str] = &[
    "adam_beta1",
    "adam_beta2",
    "adam_epsilon",
    "bf16",
    "class_weights",
    "early_stopping_patience",
    "epochs",
    "eval_steps",
    "fp16",
    "gradient_accumulation_steps",
    "group_by_length",
    "label_smoothing",
    "learning_rate",
    "load_best_model_at_end",
    "lr_scheduler_type",
    "max_grad_norm",
    "max_length",
    "max_steps",
    "metric_for_best_model",
    "seed",
    "train_batch_size",
    "validation_split",
    "warmup_ratio",
    "warmup_steps",
    "weight_decay",
];

/// Failures writing, finding or reading checkpoints. Each message is one line.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("checkpoint: cannot {action} {path}: {source}; check that the checkpoint directory is writable and the disk has space")]
    Io {
        action: &'static str,
        path: String,
        #[source]
        source: io::Error,
    },
    #[error("checkpoint {path} is unreadable: {reason}; delete it to resume from an older checkpoint or set resume=never")]
    Corrupt { path: String, reason: String },
    #[error("checkpoint {path} belongs to a different run ({differences}); to start over set resume=never or clear {dir} (and its checkpoint S3 prefix)")]
    Incompatible {
        path: String,
        dir: String,
        differences: String,
    },
    #[error("resume=must but {dir} holds no complete checkpoint; check the checkpoint S3 URI / checkpoint_dir, or set resume=auto")]
    NothingToResume { dir: String },
    #[error("checkpoint weights {path} do not fit the model: {reason}; the checkpoint belongs to another model, clear the checkpoint directory or set resume=never")]
    WeightsMismatch { path: String, reason: String },
    #[error("checkpoint: libtorch failed on {path}: {source}")]
    Torch {
        path: String,
        #[source]
        source: TchError,
    },
    #[error("checkpoint: reading the optimizer state failed: {0}")]
    Optimizer(#[from] OptimError),
}

fn io_err<'a>(
    action: &'static str,
    path: &'a Path,
) -> impl FnOnce(io::Error) -> CheckpointError + 'a {
    move |source| CheckpointError::Io {
        action,
        path: path.display().to_string(),
        source,
    }
}

fn torch_err(path: &Path) -> impl FnOnce(TchError) -> CheckpointError + '_ {
    move |source| CheckpointError::Torch {
        path: path.display().to_string(),
        source,
    }
}

fn corrupt(path: &Path, reason: impl Into<String>) -> CheckpointError {
    CheckpointError::Corrupt {
        path: path.display().to_string(),
        reason: reason.into(),
    }
}

// ---------------------------------------------------------------------------------------------
// Fingerprint

/// Identity of the pretrained model a run started from (content hashes, not paths, so the same
/// files under another path or channel still match).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelIdentity {
    /// Where it came from, for people; not compared.
    pub source: String,
    /// SHA-256 of `config.json`, when there is one.
    pub config_sha256: Option<String>,
    pub weights_bytes: u64,
    pub weights_sha256: String,
}

impl ModelIdentity {
    /// Hashes the initial model's `config.json` (if given) and weights file.
    pub fn from_files(
        source: &str,
        config: Option<&Path>,
        weights: &Path,
    ) -> Result<Self, CheckpointError> {
        let config_sha256 = config.map(|p| sha256_file(p).map(|(h, _)| h)).transpose()?;
        let (weights_sha256, weights_bytes) = sha256_file(weights)?;
        Ok(Self {
            source: source.to_string(),
            config_sha256,
            weights_bytes,
            weights_sha256,
        })
    }
}

impl ModelIdentity {
    /// Hashes the weights as loaded (sorted names, kinds, shapes and bytes); call it before
    /// training changes them. `weights_bytes` is the total tensor size.
    pub fn from_var_store(source: &str, vs: &nn::VarStore) -> Result<Self, CheckpointError> {
        let mut vars: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
        vars.sort_by(|a, b| a.0.cmp(&b.0));
        let mut hasher = Sha256::new();
        let mut total = 0u64;
        let here = Path::new(source);
        for (name, t) in &vars {
            let host = HostTensor::from_tensor(t).map_err(torch_err(here))?;
            hasher.update((name.len() as u64).to_le_bytes());
            hasher.update(name.as_bytes());
            hasher.update(format!("{:?}{:?}", host.dtype, host.shape).as_bytes());
            hasher.update(host.bytes());
            total += host.len as u64;
        }
        Ok(Self {
            source: source.to_string(),
            config_sha256: None,
            weights_bytes: total,
            weights_sha256: hex(&hasher.finalize()),
        })
    }
}

fn sha256_file(path: &Path) -> Result<(String, u64), CheckpointError> {
    let mut file = fs::File::open(path).map_err(io_err("open", path))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0u64;
    loop {
        let n = file.read(&mut buf).map_err(io_err("read", path))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        total += n as u64;
    }
    Ok((hex(&hasher.finalize()), total))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The training and evaluation rows, as row counts and order-sensitive hashes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataFingerprint {
    pub train_rows: usize,
    pub train_sha256: String,
    pub eval_rows: usize,
    pub eval_sha256: String,
}

impl DataFingerprint {
    /// Hashes texts and class ids in order (the order decides the batches).
    pub fn of(
        train_texts: &[String],
        train_label_ids: &[usize],
        eval_texts: &[String],
        eval_label_ids: &[usize],
    ) -> Self {
        Self {
            train_rows: train_texts.len(),
            train_sha256: hash_rows(train_texts, train_label_ids),
            eval_rows: eval_texts.len(),
            eval_sha256: hash_rows(eval_texts, eval_label_ids),
        }
    }
}

fn hash_rows(texts: &[String], ids: &[usize]) -> String {
    let mut hasher = Sha256::new();
    // Length prefixes keep ("ab","c") and ("a","bc") apart.
    hasher.update((texts.len() as u64).to_le_bytes());
    for (i, text) in texts.iter().enumerate() {
        hasher.update((text.len() as u64).to_le_bytes());
        hasher.update(text.as_bytes());
        let id = ids.get(i).map_or(u64::MAX, |&id| id as u64);
        hasher.update(id.to_le_bytes());
    }
    hex(&hasher.finalize())
}

/// Everything that must match for a job to resume from a checkpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fingerprint {
    pub format_version: u32,
    pub model: ModelIdentity,
    /// Class names in id order.
    pub labels: Vec<String>,
    pub data: DataFingerprint,
    /// The [`RUN_KEYS`] values, as the resolved-hyperparameter log prints them.
    pub hyperparameters: BTreeMap<String, String>,
}

impl Fingerprint {
    pub fn new(
        model: ModelIdentity,
        labels: Vec<String>,
        data: DataFingerprint,
        hp: &Hyperparameters,
    ) -> Self {
        let hyperparameters = hp
            .resolved_pairs()
            .into_iter()
            .filter(|(k, _)| RUN_KEYS.contains(&k.as_str()))
            .collect();
        Self {
            format_version: FORMAT_VERSION,
            model,
            labels,
            data,
            hyperparameters,
        }
    }

    /// One entry per differing field: `field: checkpoint X, this job Y`. Empty when compatible.
    pub fn differences(&self, job: &Fingerprint) -> Vec<String> {
        let mut out = Vec::new();
        let mut cmp = |field: &str, saved: String, now: String| {
            if saved != now {
                out.push(format!("{field}: checkpoint {saved}, this job {now}"));
            }
        };
        cmp(
            "format_version",
            self.format_version.to_string(),
            job.format_version.to_string(),
        );
        let short = |h: &Option<String>| {
            h.as_deref()
                .map_or("none".into(), |h| h[..h.len().min(12)].to_string())
        };
        cmp(
            "model.config_sha256",
            short(&self.model.config_sha256),
            short(&job.model.config_sha256),
        );
        cmp(
            "model.weights_bytes",
            self.model.weights_bytes.to_string(),
            job.model.weights_bytes.to_string(),
        );
        cmp(
            "model.weights_sha256",
            short(&Some(self.model.weights_sha256.clone())),
            short(&Some(job.model.weights_sha256.clone())),
        );
        if self.labels != job.labels {
            let only = |a: &[String], b: &[String]| -> Vec<String> {
                a.iter().filter(|l| !b.contains(l)).cloned().collect()
            };
            let (gone, new) = (
                only(&self.labels, &job.labels),
                only(&job.labels, &self.labels),
            );
            let detail = if gone.is_empty() && new.is_empty() {
                "same names in another order".to_string()
            } else {
                format!(
                    "only in checkpoint [{}], only in this job [{}]",
                    gone.join(", "),
                    new.join(", ")
                )
            };
            out.push(format!(
                "labels: checkpoint {} classes, this job {} ({detail})",
                self.labels.len(),
                job.labels.len()
            ));
        }
        let mut cmp = |field: &str, saved: String, now: String| {
            if saved != now {
                out.push(format!("{field}: checkpoint {saved}, this job {now}"));
            }
        };
        cmp(
            "data.train_rows",
            self.data.train_rows.to_string(),
            job.data.train_rows.to_string(),
        );
        cmp(
            "data.train_sha256",
            short(&Some(self.data.train_sha256.clone())),
            short(&Some(job.data.train_sha256.clone())),
        );
        cmp(
            "data.eval_rows",
            self.data.eval_rows.to_string(),
            job.data.eval_rows.to_string(),
        );
        cmp(
            "data.eval_sha256",
            short(&Some(self.data.eval_sha256.clone())),
            short(&Some(job.data.eval_sha256.clone())),
        );
        let keys: std::collections::BTreeSet<&String> = self
            .hyperparameters
            .keys()
            .chain(job.hyperparameters.keys())
            .collect();
        for key in keys {
            let get = |m: &BTreeMap<String, String>| {
                m.get(key).cloned().unwrap_or_else(|| "unset".into())
            };
            cmp(
                &format!("hyperparameters.{key}"),
                get(&self.hyperparameters),
                get(&job.hyperparameters),
            );
        }
        out
    }
}

// ---------------------------------------------------------------------------------------------
// Save policy and the hook

/// When the hook writes checkpoints (from `save_strategy`, `save_steps`, `save_total_limit`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SavePolicy {
    pub strategy: SaveStrategy,
    pub save_steps: Option<u64>,
    /// Keep at most this many checkpoints (newest by step); `None` keeps all.
    pub total_limit: Option<usize>,
}

impl SavePolicy {
    pub fn from_hyperparameters(hp: &Hyperparameters) -> Self {
        Self {
            strategy: hp.save_strategy,
            save_steps: hp.save_steps,
            total_limit: hp.save_total_limit,
        }
    }

    /// Whether a checkpoint is due after `step`: every `save_steps` (steps) or at each epoch end
    /// (epoch), and at the last step for either, as HF's Trainer does.
    pub fn due(&self, step: u64, epoch_end: bool, total_steps: u64) -> bool {
        match self.strategy {
            SaveStrategy::No => false,
            SaveStrategy::Epoch => epoch_end || step >= total_steps,
            SaveStrategy::Steps => {
                self.save_steps
                    .is_some_and(|n| n > 0 && step.is_multiple_of(n))
                    || step >= total_steps
            }
        }
    }
}

/// Why a checkpoint was written (recorded in `trainer_state.json`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SaveReason {
    Scheduled,
    Interrupted,
}

/// A [`StepHook`] that writes checkpoints on the [`SavePolicy`] and when a stop signal arrives.
///
/// Wiring: `let hook = CheckpointHook::new(..)?.stop_on(signals::install()?);` then pass
/// `hook.stop_flag()` as `FitOptions::stop`. The hook reads the signal flag once per step; when
/// it is set, the hook writes a checkpoint of the step just finished and only then sets the flag
/// `fit` polls, so `fit` never stops on a step that was not saved (no race with the signal).
#[derive(Debug)]
pub struct CheckpointHook {
    dir: PathBuf,
    policy: SavePolicy,
    fingerprint: Fingerprint,
    label_names: Vec<String>,
    signal: Option<Arc<AtomicBool>>,
    fit_stop: Arc<AtomicBool>,
    last_saved: Option<PathBuf>,
    interrupted_at: Option<u64>,
}

impl CheckpointHook {
    /// A hook writing under `dir` (created on the first save). Removes `.tmp-` folders that a
    /// killed run left behind.
    pub fn new(
        dir: &Path,
        policy: SavePolicy,
        fingerprint: Fingerprint,
        label_names: Vec<String>,
    ) -> Result<Self, CheckpointError> {
        remove_torn(dir)?;
        Ok(Self {
            dir: dir.to_path_buf(),
            policy,
            fingerprint,
            label_names,
            signal: None,
            fit_stop: Arc::new(AtomicBool::new(false)),
            last_saved: None,
            interrupted_at: None,
        })
    }

    /// Watches `signal` (from [`crate::signals::install`]): when set, the hook saves and stops.
    pub fn stop_on(mut self, signal: Arc<AtomicBool>) -> Self {
        self.signal = Some(signal);
        self
    }

    /// The flag to pass as `FitOptions::stop`; set only after an interruption checkpoint.
    pub fn stop_flag(&self) -> Arc<AtomicBool> {
        Arc::clone(&self.fit_stop)
    }

    /// The checkpoint written last by this hook.
    pub fn last_saved(&self) -> Option<&Path> {
        self.last_saved.as_deref()
    }

    /// The step after which a stop signal was honoured.
    pub fn interrupted_at(&self) -> Option<u64> {
        self.interrupted_at
    }

    /// Writes `checkpoint-<global_step>` for `ctx` atomically, then prunes to the limit.
    pub fn save(
        &mut self,
        ctx: &StepContext<'_>,
        reason: SaveReason,
    ) -> Result<PathBuf, CheckpointError> {
        let started = std::time::Instant::now();
        let step = ctx.state.global_step;
        let final_dir = self.dir.join(format!("{CHECKPOINT_PREFIX}{step}"));
        let tmp = self.dir.join(format!(
            "{CHECKPOINT_PREFIX}{step}{TMP_MARK}{}",
            std::process::id()
        ));
        fs::create_dir_all(&self.dir).map_err(io_err("create", &self.dir))?;
        if tmp.exists() {
            fs::remove_dir_all(&tmp).map_err(io_err("remove", &tmp))?;
        }
        fs::create_dir(&tmp).map_err(io_err("create", &tmp))?;
        let written = self.write_contents(&tmp, ctx, reason);
        if let Err(e) = written {
            let _ = fs::remove_dir_all(&tmp);
            return Err(e);
        }
        sync_dir(&tmp)?;
        if final_dir.exists() {
            fs::remove_dir_all(&final_dir).map_err(io_err("replace", &final_dir))?;
        }
        fs::rename(&tmp, &final_dir).map_err(io_err("rename into", &final_dir))?;
        sync_dir(&self.dir)?;
        tracing::info!(
            "checkpoint saved: path={}; step={step}; epoch={}; reason={reason:?}; seconds={:.2};",
            final_dir.display(),
            ctx.state.epoch,
            started.elapsed().as_secs_f64()
        );
        self.last_saved = Some(final_dir.clone());
        if let Some(limit) = self.policy.total_limit {
            prune(&self.dir, limit, step)?;
        }
        Ok(final_dir)
    }

    fn write_contents(
        &self,
        tmp: &Path,
        ctx: &StepContext<'_>,
        reason: SaveReason,
    ) -> Result<(), CheckpointError> {
        let mut sizes = BTreeMap::new();
        let mut record = |name: &str| -> Result<(), CheckpointError> {
            let path = tmp.join(name);
            let len = fs::metadata(&path).map_err(io_err("stat", &path))?.len();
            sizes.insert(name.to_string(), len);
            Ok(())
        };

        // Weights, by HF variable name.
        let path = tmp.join(WEIGHTS_FILE);
        let mut weights: Vec<(String, HostTensor)> = Vec::new();
        for (name, t) in ctx.vars().variables() {
            weights.push((name, HostTensor::from_tensor(&t).map_err(torch_err(&path))?));
        }
        write_safetensors(&path, weights, BTreeMap::new())?;
        record(WEIGHTS_FILE)?;

        let optimizer = ctx
            .optimizer
            .state_views()
            .map_err(|e| corrupt(tmp, format!("exporting the optimizer state failed: {e}")))?;
        let path = tmp.join(OPTIMIZER_FILE);
        let mut moments = Vec::with_capacity(optimizer.vars.len() * 2);
        for v in &optimizer.vars {
            moments.push((
                format!("exp_avg.{}", v.name),
                HostTensor::from_tensor(&v.exp_avg).map_err(torch_err(&path))?,
            ));
            moments.push((
                format!("exp_avg_sq.{}", v.name),
                HostTensor::from_tensor(&v.exp_avg_sq).map_err(torch_err(&path))?,
            ));
        }
        let meta = BTreeMap::from([("step".to_string(), optimizer.step.to_string())]);
        write_safetensors(&path, moments, meta)?;
        record(OPTIMIZER_FILE)?;

        if let Some(best) = ctx.best_weights {
            let path = tmp.join(BEST_WEIGHTS_FILE);
            let mut tensors = Vec::with_capacity(best.len());
            for (name, t) in best {
                tensors.push((
                    name.clone(),
                    HostTensor::from_tensor(t).map_err(torch_err(&path))?,
                ));
            }
            write_safetensors(&path, tensors, BTreeMap::new())?;
            record(BEST_WEIGHTS_FILE)?;
        }

        write_json_synced(&tmp.join(STATE_FILE), &StateFile::new(ctx.state, reason))?;
        record(STATE_FILE)?;
        write_json_synced(&tmp.join(LABELS_FILE), &label_map_json(&self.label_names))?;
        record(LABELS_FILE)?;
        write_json_synced(&tmp.join(FINGERPRINT_FILE), &self.fingerprint)?;
        record(FINGERPRINT_FILE)?;
        // Last: its presence (with matching sizes) is what makes the checkpoint complete.
        let manifest = Manifest {
            format_version: FORMAT_VERSION,
            step: ctx.state.global_step,
            files: sizes,
        };
        write_json_synced(&tmp.join(MANIFEST_FILE), &manifest)
    }
}

impl StepHook for CheckpointHook {
    fn after_step(&mut self, ctx: &StepContext<'_>) -> Result<HookAction, String> {
        let state = ctx.state;
        let interrupted = self
            .signal
            .as_ref()
            .is_some_and(|s| s.load(Ordering::SeqCst));
        let due = self
            .policy
            .due(state.global_step, ctx.epoch_end, state.total_steps);
        if self.policy.strategy != SaveStrategy::No && (due || interrupted) {
            let reason = if interrupted {
                SaveReason::Interrupted
            } else {
                SaveReason::Scheduled
            };
            self.save(ctx, reason).map_err(|e| e.to_string())?;
        }
        if interrupted {
            self.interrupted_at = Some(state.global_step);
            self.fit_stop.store(true, Ordering::SeqCst);
        }
        Ok(HookAction::Continue)
    }
}

// ---------------------------------------------------------------------------------------------
// Files

#[derive(Debug, Serialize, Deserialize)]
struct Manifest {
    format_version: u32,
    step: u64,
    /// File name -> size in bytes.
    files: BTreeMap<String, u64>,
}

/// `trainer_state.json`. JSON loses NaN and (without serde_json's float_roundtrip) may round a
/// float on reading, so the floats that steer the run are also kept as exact bit patterns.
#[derive(Debug, Serialize, Deserialize)]
struct StateFile {
    format_version: u32,
    reason: SaveReason,
    rng: String,
    state: TrainState,
    exact_f64_bits: ExactBits,
}

#[derive(Debug, Serialize, Deserialize)]
struct ExactBits {
    train_loss_sum: u64,
    best_metric: Option<u64>,
    loss_scale: Option<u64>,
    /// Per history record: the epoch, then each metric value in order.
    history: Vec<Vec<u64>>,
}

impl StateFile {
    fn new(state: &TrainState, reason: SaveReason) -> Self {
        let exact = ExactBits {
            train_loss_sum: state.train_loss_sum.to_bits(),
            best_metric: state.best_metric.map(f64::to_bits),
            loss_scale: state.loss_scale.map(f64::to_bits),
            history: state
                .history
                .iter()
                .map(|r| {
                    std::iter::once(r.epoch.to_bits())
                        .chain(r.metrics.iter().map(|(_, v)| v.to_bits()))
                        .collect()
                })
                .collect(),
        };
        let finite = |x: f64| if x.is_finite() { x } else { 0.0 };
        let mut readable = state.clone();
        readable.train_loss_sum = finite(readable.train_loss_sum);
        readable.best_metric = readable.best_metric.map(finite);
        readable.loss_scale = readable.loss_scale.map(finite);
        for r in &mut readable.history {
            r.epoch = finite(r.epoch);
            for (_, v) in &mut r.metrics {
                *v = finite(*v);
            }
        }
        Self {
            format_version: FORMAT_VERSION,
            reason,
            rng: format!(
                "derived from seed {} (data order per epoch, dropout per batch)",
                state.seed
            ),
            state: readable,
            exact_f64_bits: exact,
        }
    }

    /// The state with its floats restored bit for bit.
    fn into_state(self, path: &Path) -> Result<TrainState, CheckpointError> {
        let mut state = self.state;
        let exact = self.exact_f64_bits;
        state.train_loss_sum = f64::from_bits(exact.train_loss_sum);
        state.best_metric = exact.best_metric.map(f64::from_bits);
        state.loss_scale = exact.loss_scale.map(f64::from_bits);
        if exact.history.len() != state.history.len() {
            return Err(corrupt(
                path,
                "history and its exact values disagree in length",
            ));
        }
        for (record, bits) in state.history.iter_mut().zip(&exact.history) {
            restore_record(record, bits).ok_or_else(|| {
                corrupt(
                    path,
                    format!(
                        "history record at step {} has the wrong number of exact values",
                        record.step
                    ),
                )
            })?;
        }
        Ok(state)
    }
}

fn restore_record(record: &mut EvalRecord, bits: &[u64]) -> Option<()> {
    let (epoch, values) = bits.split_first()?;
    if values.len() != record.metrics.len() {
        return None;
    }
    record.epoch = f64::from_bits(*epoch);
    for ((_, v), b) in record.metrics.iter_mut().zip(values) {
        *v = f64::from_bits(*b);
    }
    Some(())
}

fn label_map_json(names: &[String]) -> serde_json::Value {
    let id2label: serde_json::Map<String, serde_json::Value> = names
        .iter()
        .enumerate()
        .map(|(i, n)| (i.to_string(), serde_json::Value::String(n.clone())))
        .collect();
    let label2id: serde_json::Map<String, serde_json::Value> = names
        .iter()
        .enumerate()
        .map(|(i, n)| (n.clone(), serde_json::Value::from(i)))
        .collect();
    serde_json::json!({ "id2label": id2label, "label2id": label2id })
}

fn write_json_synced<T: Serialize>(path: &Path, value: &T) -> Result<(), CheckpointError> {
    let text = serde_json::to_string_pretty(value)
        .map_err(|e| corrupt(path, format!("cannot serialise: {e}")))?;
    let mut file = fs::File::create(path).map_err(io_err("create", path))?;
    file.write_all(text.as_bytes())
        .and_then(|()| file.write_all(b"\n"))
        .and_then(|()| file.sync_all())
        .map_err(io_err("write", path))
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, CheckpointError> {
    let text = fs::read_to_string(path).map_err(io_err("read", path))?;
    serde_json::from_str(&text).map_err(|e| corrupt(path, format!("invalid JSON: {e}")))
}

fn sync_dir(dir: &Path) -> Result<(), CheckpointError> {
    fs::File::open(dir)
        .and_then(|f| f.sync_all())
        .map_err(io_err("sync", dir))
}

/// A tensor's bytes on the host, ready for safetensors.
/// A tensor on its way into a safetensors file. CPU tensors are written from their own memory
/// (device tensors are copied to the host first), so saving on the CPU never holds a second
/// copy of the model or the optimizer state.
struct HostTensor {
    dtype: Dtype,
    shape: Vec<usize>,
    /// Contiguous, on the CPU.
    tensor: Tensor,
    len: usize,
}

impl HostTensor {
    fn from_tensor(t: &Tensor) -> Result<Self, TchError> {
        let _guard = tch::no_grad_guard();
        let tensor = t.f_detach()?.f_to_device(Device::Cpu)?.f_contiguous()?;
        let kind = tensor.f_kind()?;
        let dtype = kind_to_dtype(kind).ok_or_else(|| {
            TchError::Convert(format!("cannot checkpoint tensors of kind {kind:?}"))
        })?;
        Ok(Self {
            dtype,
            shape: tensor.size().iter().map(|&d| d as usize).collect(),
            len: tensor.numel() * kind.elt_size_in_bytes(),
            tensor,
        })
    }

    fn bytes(&self) -> &[u8] {
        if self.len == 0 {
            return &[];
        }
        // SAFETY: the tensor is a contiguous CPU tensor holding `len` bytes at `data_ptr`; it
        // lives as long as `self`, and nothing writes it meanwhile (training waits for the save).
        unsafe { std::slice::from_raw_parts(self.tensor.data_ptr() as *const u8, self.len) }
    }
}

impl View for &HostTensor {
    fn dtype(&self) -> Dtype {
        self.dtype
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn data(&self) -> std::borrow::Cow<'_, [u8]> {
        std::borrow::Cow::Borrowed(self.bytes())
    }
    fn data_len(&self) -> usize {
        self.len
    }
}

fn kind_to_dtype(kind: Kind) -> Option<Dtype> {
    Some(match kind {
        Kind::Float => Dtype::F32,
        Kind::Half => Dtype::F16,
        Kind::BFloat16 => Dtype::BF16,
        Kind::Double => Dtype::F64,
        Kind::Int64 => Dtype::I64,
        Kind::Int => Dtype::I32,
        Kind::Int16 => Dtype::I16,
        Kind::Int8 => Dtype::I8,
        Kind::Uint8 => Dtype::U8,
        Kind::Bool => Dtype::BOOL,
        _ => return None,
    })
}

fn dtype_to_kind(dtype: Dtype) -> Option<Kind> {
    Some(match dtype {
        Dtype::F32 => Kind::Float,
        Dtype::F16 => Kind::Half,
        Dtype::BF16 => Kind::BFloat16,
        Dtype::F64 => Kind::Double,
        Dtype::I64 => Kind::Int64,
        Dtype::I32 => Kind::Int,
        Dtype::I16 => Kind::Int16,
        Dtype::I8 => Kind::Int8,
        Dtype::U8 => Kind::Uint8,
        Dtype::BOOL => Kind::Bool,
        _ => return None,
    })
}

/// Writes `tensors` as safetensors (metadata `format=pt` plus `extra`) and fsyncs the file.
fn write_safetensors(
    path: &Path,
    tensors: Vec<(String, HostTensor)>,
    extra: BTreeMap<String, String>,
) -> Result<(), CheckpointError> {
    let mut metadata: HashMap<String, String> = extra.into_iter().collect();
    metadata.insert("format".into(), "pt".into());
    let views = tensors.iter().map(|(n, t)| (n.as_str(), t));
    safetensors::tensor::serialize_to_file(views, Some(metadata), path).map_err(|e| match e {
        safetensors::SafeTensorError::IoError(source) => CheckpointError::Io {
            action: "write",
            path: path.display().to_string(),
            source,
        },
        other => corrupt(path, format!("cannot serialise tensors: {other}")),
    })?;
    fs::File::open(path)
        .and_then(|f| f.sync_all())
        .map_err(io_err("sync", path))
}

/// Named CPU tensors and the file's string metadata.
type TensorsAndMetadata = (Vec<(String, Tensor)>, HashMap<String, String>);

/// Reads a safetensors file into CPU tensors plus its metadata.
fn read_safetensors(path: &Path) -> Result<TensorsAndMetadata, CheckpointError> {
    let bytes = fs::read(path).map_err(io_err("read", path))?;
    let st = SafeTensors::deserialize(&bytes).map_err(|e| corrupt(path, e.to_string()))?;
    let (_, header) =
        SafeTensors::read_metadata(&bytes).map_err(|e| corrupt(path, e.to_string()))?;
    let metadata = header.metadata().clone().unwrap_or_default();
    let mut out = Vec::new();
    for (name, view) in st.tensors() {
        let kind = dtype_to_kind(view.dtype()).ok_or_else(|| {
            corrupt(
                path,
                format!("tensor `{name}` has unsupported dtype {:?}", view.dtype()),
            )
        })?;
        let shape: Vec<i64> = view.shape().iter().map(|&d| d as i64).collect();
        let t = Tensor::f_from_data_size(view.data(), &shape, kind).map_err(torch_err(path))?;
        out.push((name, t));
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok((out, metadata))
}

// ---------------------------------------------------------------------------------------------
// Finding, pruning and loading

/// The step of a complete-looking checkpoint folder name (`checkpoint-<digits>`, no `.tmp-`).
fn step_of(name: &str) -> Option<u64> {
    let digits = name.strip_prefix(CHECKPOINT_PREFIX)?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// `(step, path)` of every `checkpoint-<N>` folder in `dir`, newest first; none if `dir` is absent.
fn list_checkpoints(dir: &Path) -> Result<Vec<(u64, PathBuf)>, CheckpointError> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_err("list", dir)(e)),
    };
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry.map_err(io_err("list", dir))?;
        let name = entry.file_name();
        if let Some(step) = name.to_str().and_then(step_of) {
            if entry.path().is_dir() {
                out.push((step, entry.path()));
            }
        }
    }
    out.sort_by_key(|c| std::cmp::Reverse(c.0));
    Ok(out)
}

/// Removes `checkpoint-*.tmp-*` folders (a write that a kill interrupted).
fn remove_torn(dir: &Path) -> Result<(), CheckpointError> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Ok(());
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with(CHECKPOINT_PREFIX) && name.contains(TMP_MARK) {
            let path = entry.path();
            tracing::warn!(path = %path.display(), "removing a partly written checkpoint left by an interrupted run");
            fs::remove_dir_all(&path).map_err(io_err("remove", &path))?;
        }
    }
    Ok(())
}

/// Keeps the newest `limit` checkpoints (at least the one just written, `keep_step`).
fn prune(dir: &Path, limit: usize, keep_step: u64) -> Result<(), CheckpointError> {
    let others: Vec<(u64, PathBuf)> = list_checkpoints(dir)?
        .into_iter()
        .filter(|(s, _)| *s != keep_step)
        .collect();
    for (step, path) in others.into_iter().skip(limit.max(1) - 1) {
        tracing::info!(path = %path.display(), step, "removing an old checkpoint (save_total_limit)");
        fs::remove_dir_all(&path).map_err(io_err("remove", &path))?;
    }
    Ok(())
}

/// Why a checkpoint folder is not usable, or `None` when its manifest matches its files.
fn incomplete_reason(path: &Path) -> Option<String> {
    let manifest_path = path.join(MANIFEST_FILE);
    let text = match fs::read_to_string(&manifest_path) {
        Ok(t) => t,
        Err(e) => return Some(format!("no readable {MANIFEST_FILE} ({e})")),
    };
    let manifest: Manifest = match serde_json::from_str(&text) {
        Ok(m) => m,
        Err(e) => return Some(format!("invalid {MANIFEST_FILE}: {e}")),
    };
    for required in [WEIGHTS_FILE, OPTIMIZER_FILE, STATE_FILE, FINGERPRINT_FILE] {
        if !manifest.files.contains_key(required) {
            return Some(format!("{MANIFEST_FILE} does not list {required}"));
        }
    }
    for (name, size) in &manifest.files {
        match fs::metadata(path.join(name)) {
            Ok(m) if m.len() == *size => {}
            Ok(m) => {
                return Some(format!(
                    "{name} has {} bytes, the manifest says {size}",
                    m.len()
                ))
            }
            Err(e) => return Some(format!("{name}: {e}")),
        }
    }
    None
}

/// A checkpoint to resume from.
#[derive(Debug)]
pub struct Resumable {
    /// `<dir>/checkpoint-<step>`.
    pub path: PathBuf,
    pub step: u64,
    /// The weights to load into the model with [`load_weights`] before `fit`.
    pub weights: PathBuf,
    /// Pass as `FitOptions::resume`.
    pub point: ResumePoint,
}

/// Finds the newest complete checkpoint in `dir` and, when its fingerprint matches `job`,
/// reads it. `resume=never` looks at nothing; `resume=must` errors when there is none; an
/// incompatible newest checkpoint is an error naming the differing fields.
pub fn find_resume(
    dir: &Path,
    job: &Fingerprint,
    policy: ResumePolicy,
) -> Result<Option<Resumable>, CheckpointError> {
    if policy == ResumePolicy::Never {
        tracing::info!(dir = %dir.display(), "resume=never: starting fresh whatever checkpoints exist");
        return Ok(None);
    }
    let mut found = None;
    for (step, path) in list_checkpoints(dir)? {
        match incomplete_reason(&path) {
            None => {
                found = Some((step, path));
                break;
            }
            Some(reason) => {
                tracing::warn!(path = %path.display(), "skipping incomplete checkpoint: {reason}")
            }
        }
    }
    let Some((step, path)) = found else {
        if policy == ResumePolicy::Must {
            return Err(CheckpointError::NothingToResume {
                dir: dir.display().to_string(),
            });
        }
        tracing::info!(dir = %dir.display(), "no checkpoint to resume; starting fresh");
        return Ok(None);
    };
    let saved: Fingerprint = read_json(&path.join(FINGERPRINT_FILE))?;
    let differences = saved.differences(job);
    if !differences.is_empty() {
        return Err(CheckpointError::Incompatible {
            path: path.display().to_string(),
            dir: dir.display().to_string(),
            differences: differences.join("; "),
        });
    }
    let state_path = path.join(STATE_FILE);
    let state_file: StateFile = read_json(&state_path)?;
    let state = state_file.into_state(&state_path)?;
    if state.global_step != step {
        return Err(corrupt(
            &path,
            format!(
                "trainer state is at step {}, the folder name says {step}",
                state.global_step
            ),
        ));
    }
    let optimizer = read_optimizer(&path.join(OPTIMIZER_FILE))?;
    let best_path = path.join(BEST_WEIGHTS_FILE);
    let best_weights: Option<WeightSnapshot> = if best_path.exists() {
        Some(read_safetensors(&best_path)?.0)
    } else {
        None
    };
    tracing::info!(
        "resuming from checkpoint: path={}; step={step}; epoch={}; batch_in_epoch={};",
        path.display(),
        state.epoch,
        state.batch_in_epoch
    );
    Ok(Some(Resumable {
        weights: path.join(WEIGHTS_FILE),
        path,
        step,
        point: ResumePoint {
            state,
            optimizer,
            best_weights,
        },
    }))
}

fn read_optimizer(path: &Path) -> Result<AdamWState, CheckpointError> {
    let (tensors, metadata) = read_safetensors(path)?;
    let step = metadata
        .get("step")
        .and_then(|s| s.parse::<u64>().ok())
        .ok_or_else(|| corrupt(path, "metadata lacks a numeric `step`"))?;
    let mut avg: BTreeMap<String, Tensor> = BTreeMap::new();
    let mut avg_sq: BTreeMap<String, Tensor> = BTreeMap::new();
    for (name, t) in tensors {
        if let Some(var) = name.strip_prefix("exp_avg_sq.") {
            avg_sq.insert(var.to_string(), t);
        } else if let Some(var) = name.strip_prefix("exp_avg.") {
            avg.insert(var.to_string(), t);
        } else {
            return Err(corrupt(path, format!("unexpected tensor `{name}`")));
        }
    }
    let mut vars = Vec::with_capacity(avg.len());
    for (name, exp_avg) in avg {
        let exp_avg_sq = avg_sq
            .remove(&name)
            .ok_or_else(|| corrupt(path, format!("`exp_avg_sq.{name}` is missing")))?;
        vars.push(VarState {
            name,
            exp_avg,
            exp_avg_sq,
        });
    }
    if let Some(name) = avg_sq.keys().next() {
        return Err(corrupt(path, format!("`exp_avg.{name}` is missing")));
    }
    Ok(AdamWState { step, vars })
}

/// Copies the tensors of a checkpoint's weights file into `vs`, by name. Every variable must be
/// present with its shape and the file may hold nothing else; kinds and devices are converted.
pub fn load_weights(vs: &nn::VarStore, path: &Path) -> Result<(), CheckpointError> {
    let (tensors, _) = read_safetensors(path)?;
    let mismatch = |reason: String| CheckpointError::WeightsMismatch {
        path: path.display().to_string(),
        reason,
    };
    let vars = vs.variables();
    let saved: BTreeMap<&str, &Tensor> = tensors.iter().map(|(n, t)| (n.as_str(), t)).collect();
    let mut missing: Vec<&str> = vars
        .keys()
        .map(String::as_str)
        .filter(|n| !saved.contains_key(n))
        .collect();
    missing.sort_unstable();
    if !missing.is_empty() {
        return Err(mismatch(format!("missing {}", preview(&missing))));
    }
    let unexpected: Vec<&str> = saved
        .keys()
        .copied()
        .filter(|n| !vars.contains_key(*n))
        .collect();
    if !unexpected.is_empty() {
        return Err(mismatch(format!("unexpected {}", preview(&unexpected))));
    }
    for (name, var) in &vars {
        let src = saved[name.as_str()];
        if src.size() != var.size() {
            return Err(mismatch(format!(
                "`{name}` has shape {:?} in the checkpoint but {:?} in the model",
                src.size(),
                var.size()
            )));
        }
    }
    let _guard = tch::no_grad_guard();
    for (name, var) in &vars {
        let mut dst = var.shallow_clone();
        dst.f_copy_(saved[name.as_str()]).map_err(torch_err(path))?;
    }
    Ok(())
}

fn preview(names: &[&str]) -> String {
    let shown: Vec<&str> = names.iter().take(5).copied().collect();
    let more = names.len().saturating_sub(shown.len());
    if more > 0 {
        format!(
            "{} tensors: {} and {more} more",
            names.len(),
            shown.join(", ")
        )
    } else {
        format!("{} tensor(s): {}", names.len(), shown.join(", "))
    }
}

// ---------------------------------------------------------------------------------------------
// The job's checkpoint plan

/// How a run checkpoints and resumes, as fine-tuning sees it ([`JobCheckpoints`] implements it).
pub trait CheckpointPlan {
    /// A resume point for this run, if a compatible checkpoint exists; weights are loaded into
    /// `model` by the implementation.
    fn resume(
        &mut self,
        model: &mut crate::model::SequenceClassifier,
    ) -> Result<Option<crate::train::ResumePoint>, String>;
    /// The hook that writes checkpoints while training.
    fn hook(&mut self) -> &mut dyn crate::train::StepHook;
    /// Where the newest checkpoint lives, for messages.
    fn latest(&self) -> Option<PathBuf>;
}

/// Checkpointing and resume for one `txcat train` job, as [`CheckpointPlan`].
///
/// The model identity in the fingerprint is a hash of the *initial* weights as loaded into the
/// model (names, kinds, shapes, bytes; the fresh head is seeded by `seed`), so it needs no file
/// paths and covers S3, channel and local models alike. Wiring in `job::run_train`:
///
/// ```ignore
/// let signal = signals::install()?;
/// let mut plan = JobCheckpoints::new(&dir, &hp, labels, data_fingerprint, Some(signal))?;
/// let stop = plan.stop_flag(); // FineTuneRequest::stop (not the raw signal flag)
/// fine_tune::run(FineTuneRequest { stop: Some(stop), checkpoints: Some(&mut plan), .. })
/// ```
pub struct JobCheckpoints {
    dir: PathBuf,
    hp: Hyperparameters,
    labels: Vec<String>,
    data: DataFingerprint,
    signal: Option<Arc<AtomicBool>>,
    fit_stop: Arc<AtomicBool>,
    hook: Option<CheckpointHook>,
    /// Used only if `hook` is asked for before `resume` (the trait's contract is resume first).
    no_hook: (),
}

impl JobCheckpoints {
    /// `dir` is `checkpoint_dir` when set, else `Paths::checkpoint_dir`.
    pub fn new(
        dir: &Path,
        hp: &Hyperparameters,
        labels: Vec<String>,
        data: DataFingerprint,
        signal: Option<Arc<AtomicBool>>,
    ) -> Self {
        Self {
            dir: dir.to_path_buf(),
            hp: hp.clone(),
            labels,
            data,
            signal,
            fit_stop: Arc::new(AtomicBool::new(false)),
            hook: None,
            no_hook: (),
        }
    }

    /// The flag to pass as the run's stop flag: set only once the interruption checkpoint is
    /// written (or with `save_strategy=no`, once the signal was seen after a step).
    pub fn stop_flag(&self) -> Arc<AtomicBool> {
        Arc::clone(&self.fit_stop)
    }

    /// The step after which a stop signal was honoured.
    pub fn interrupted_at(&self) -> Option<u64> {
        self.hook.as_ref().and_then(CheckpointHook::interrupted_at)
    }

    /// The checkpoint written last by this run.
    pub fn last_saved(&self) -> Option<PathBuf> {
        self.hook
            .as_ref()
            .and_then(|h| h.last_saved().map(Path::to_path_buf))
    }

    fn resume_inner(&mut self, vs: &nn::VarStore) -> Result<Option<ResumePoint>, CheckpointError> {
        let model = ModelIdentity::from_var_store(&self.hp.model_name_or_path, vs)?;
        let fingerprint = Fingerprint::new(model, self.labels.clone(), self.data.clone(), &self.hp);
        let found = find_resume(&self.dir, &fingerprint, self.hp.resume)?;
        let mut hook = CheckpointHook::new(
            &self.dir,
            SavePolicy::from_hyperparameters(&self.hp),
            fingerprint,
            self.labels.clone(),
        )?;
        hook.fit_stop = Arc::clone(&self.fit_stop);
        if let Some(signal) = &self.signal {
            hook = hook.stop_on(Arc::clone(signal));
        }
        self.hook = Some(hook);
        match found {
            Some(r) => {
                load_weights(vs, &r.weights)?;
                Ok(Some(r.point))
            }
            None => Ok(None),
        }
    }
}

impl CheckpointPlan for JobCheckpoints {
    fn resume(
        &mut self,
        model: &mut crate::model::SequenceClassifier,
    ) -> Result<Option<ResumePoint>, String> {
        use crate::model::ClassifierModel;
        self.resume_inner(model.var_store())
            .map_err(|e| e.to_string())
    }

    fn hook(&mut self) -> &mut dyn StepHook {
        match self.hook.as_mut() {
            Some(h) => h,
            None => &mut self.no_hook,
        }
    }

    fn latest(&self) -> Option<PathBuf> {
        self.last_saved().or_else(|| {
            list_checkpoints(&self.dir)
                .ok()
                .and_then(|l| l.into_iter().next().map(|(_, p)| p))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checkpoint_names_parse_and_tmp_folders_do_not() {
        assert_eq!(step_of("checkpoint-40"), Some(40));
        assert_eq!(step_of("checkpoint-40.tmp-123"), None);
        assert_eq!(step_of("checkpoint-"), None);
        assert_eq!(step_of("checkpoint-+4"), None);
        assert_eq!(step_of("other-4"), None);
    }

    #[test]
    fn policy_follows_strategy() {
        let steps = SavePolicy {
            strategy: SaveStrategy::Steps,
            save_steps: Some(5),
            total_limit: None,
        };
        assert!(steps.due(10, false, 100));
        assert!(!steps.due(11, true, 100));
        assert!(steps.due(100, false, 100), "the last step is saved");
        let epoch = SavePolicy {
            strategy: SaveStrategy::Epoch,
            ..steps
        };
        assert!(epoch.due(7, true, 100) && !epoch.due(10, false, 100));
        let no = SavePolicy {
            strategy: SaveStrategy::No,
            ..steps
        };
        assert!(!no.due(100, true, 100));
    }

    #[test]
    fn data_hash_depends_on_order_and_boundaries() {
        let t = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let a = DataFingerprint::of(&t(&["ab", "c"]), &[0, 1], &[], &[]);
        let b = DataFingerprint::of(&t(&["a", "bc"]), &[0, 1], &[], &[]);
        let c = DataFingerprint::of(&t(&["c", "ab"]), &[1, 0], &[], &[]);
        let d = DataFingerprint::of(&t(&["ab", "c"]), &[0, 0], &[], &[]);
        assert_ne!(a.train_sha256, b.train_sha256);
        assert_ne!(a.train_sha256, c.train_sha256);
        assert_ne!(a.train_sha256, d.train_sha256);
        assert_eq!(a, DataFingerprint::of(&t(&["ab", "c"]), &[0, 1], &[], &[]));
    }

    #[test]
    fn state_floats_survive_json_bit_for_bit_including_nan() {
        let state = TrainState {
            epoch: 1,
            batch_in_epoch: 3,
            global_step: 9,
            scheduler_step: 8,
            seed: 42,
            total_steps: 20,
            best_metric: Some(0.1 + 0.2),
            best_step: Some(5),
            evals_without_improvement: 1,
            loss_scale: Some(32768.0),
            scale_growth: 7,
            train_loss_sum: 1.0 / 3.0,
            train_loss_rows: 72,
            history: vec![EvalRecord {
                epoch: 1.0 / 7.0,
                step: 5,
                metrics: vec![("eval_loss".into(), f64::NAN), ("eval_f1".into(), 0.7)],
            }],
        };
        let text = serde_json::to_string(&StateFile::new(&state, SaveReason::Scheduled)).unwrap();
        let back: StateFile = serde_json::from_str(&text).unwrap();
        let back = back.into_state(Path::new("x")).unwrap();
        assert_eq!(
            back.train_loss_sum.to_bits(),
            state.train_loss_sum.to_bits()
        );
        assert_eq!(
            back.history[0].epoch.to_bits(),
            state.history[0].epoch.to_bits()
        );
        assert!(back.history[0].metrics[0].1.is_nan());
        assert_eq!(back.best_metric, state.best_metric);
        assert_eq!(
            (back.epoch, back.batch_in_epoch, back.scale_growth),
            (1, 3, 7)
        );
    }
}

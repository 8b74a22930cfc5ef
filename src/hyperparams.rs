//! Typed hyperparameters: the one place where defaults live.
//!
//! Raw `hyperparameters.json` values (SDK JSON-encoded or plain strings) plus `--hp key=value`
//! overrides are decoded here into [`Hyperparameters`]; every later module reads only this struct.
//! Each default notes where it comes from (HF `TrainingArguments`, the seed recipe, SageMaker).
//!
//! PARSING IS TO BE WRITTEN (issue 2): this file so far pins the field names other modules use.

use serde::Serialize;

/// Which device to train on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DeviceChoice {
    /// CUDA when libtorch sees a GPU, else CPU.
    Auto,
    Cpu,
    Cuda,
}

/// What to do with evaluation rows whose label never occurs in training.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum UnseenLabels {
    Error,
    Drop,
}

/// Per-class loss weights.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ClassWeights {
    None,
    /// scikit-learn's "balanced": n_samples / (n_classes * count(class)).
    Balanced,
}

/// When checkpoints are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SaveStrategy {
    No,
    Epoch,
    Steps,
}

/// Whether an existing checkpoint is resumed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ResumePolicy {
    Auto,
    Never,
    Must,
}

/// Learning-rate schedule after warm-up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LrSchedule {
    Linear,
    Constant,
}

/// Every setting of a training job, resolved and validated.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Hyperparameters {
    // --- model ---
    /// Path, `model` channel entry, `$TXCAT_MODEL_HOME/<name>` or `s3://` URI (alias `model_name`).
    pub model_name_or_path: String,
    /// Tokens per text after truncation; HF tokenizer default in the seed is the model maximum, we use 128.
    pub max_length: usize,

    // --- data ---
    pub text_column: String,
    /// The seed recipe's label column.
    pub label_column: String,
    /// Channel holding evaluation data; `None` = `validation`, else `test`, else a split of train.
    pub eval_channel: Option<String>,
    /// Share of train held out (stratified, seeded) when no evaluation channel exists.
    pub validation_split: f64,
    /// Bad rows that may be skipped (counted and reported) before the job fails.
    pub max_bad_rows: usize,
    pub unseen_eval_labels: UnseenLabels,
    /// `s3://` locations that replace the local `train` / evaluation channels (issue 5).
    pub train_uri: Option<String>,
    pub eval_uri: Option<String>,
    /// `s3://` prefix that receives model.tar.gz and output.tar.gz after success (issue 5).
    pub output_uri: Option<String>,

    // --- optimisation (HF TrainingArguments defaults unless noted) ---
    pub epochs: f64,
    /// Overrides `epochs` when set (HF `max_steps` > 0).
    pub max_steps: Option<u64>,
    /// HF default 8.
    pub train_batch_size: usize,
    pub eval_batch_size: usize,
    pub learning_rate: f64,
    pub weight_decay: f64,
    pub adam_beta1: f64,
    pub adam_beta2: f64,
    pub adam_epsilon: f64,
    /// 0 turns clipping off.
    pub max_grad_norm: f64,
    pub warmup_steps: u64,
    pub warmup_ratio: f64,
    pub lr_scheduler_type: LrSchedule,
    pub gradient_accumulation_steps: usize,
    pub label_smoothing: f64,
    pub class_weights: ClassWeights,
    pub seed: u64,
    /// Bucket rows of similar length into batches (HF `group_by_length`, default on here).
    pub group_by_length: bool,
    pub fp16: bool,
    /// `None` = bf16 on GPUs that support it, never on CPU.
    pub bf16: Option<bool>,
    pub device: DeviceChoice,
    /// Intra-op CPU threads; `None` = libtorch's default (all cores).
    pub num_threads: Option<usize>,

    // --- evaluation and logging ---
    /// Also evaluate every N optimizer steps (besides each epoch end).
    pub eval_steps: Option<u64>,
    pub logging_steps: u64,
    pub metric_for_best_model: String,
    pub load_best_model_at_end: bool,
    pub early_stopping_patience: Option<u32>,

    // --- checkpoints (issue 6) ---
    pub save_strategy: SaveStrategy,
    pub save_steps: Option<u64>,
    pub save_total_limit: Option<usize>,
    pub checkpoint_dir: Option<String>,
    pub resume: ResumePolicy,
}

impl Default for Hyperparameters {
    fn default() -> Self {
        Self {
            model_name_or_path: "distilbert-base-uncased".into(), // the seed recipe's model
            max_length: 128,
            text_column: "text".into(),
            label_column: "category".into(), // the seed recipe's column
            eval_channel: None,
            validation_split: 0.1,
            max_bad_rows: 0,
            unseen_eval_labels: UnseenLabels::Error,
            train_uri: None,
            eval_uri: None,
            output_uri: None,
            epochs: 3.0, // HF num_train_epochs
            max_steps: None,
            train_batch_size: 8, // HF per_device_train_batch_size
            eval_batch_size: 64,
            learning_rate: 5e-5,
            weight_decay: 0.0,
            adam_beta1: 0.9,
            adam_beta2: 0.999,
            adam_epsilon: 1e-8,
            max_grad_norm: 1.0,
            warmup_steps: 0,
            warmup_ratio: 0.0,
            lr_scheduler_type: LrSchedule::Linear,
            gradient_accumulation_steps: 1,
            label_smoothing: 0.0,
            class_weights: ClassWeights::None,
            seed: 42, // HF seed
            group_by_length: true,
            fp16: false,
            bf16: None,
            device: DeviceChoice::Auto,
            num_threads: None,
            eval_steps: None,
            logging_steps: 50,
            metric_for_best_model: "eval_f1_macro".into(),
            load_best_model_at_end: true,
            early_stopping_patience: None,
            save_strategy: SaveStrategy::Epoch,
            save_steps: None,
            save_total_limit: Some(2),
            checkpoint_dir: None,
            resume: ResumePolicy::Auto,
        }
    }
}

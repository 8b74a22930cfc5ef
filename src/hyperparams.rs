//! Typed hyperparameters: the one place where defaults live.
//!
//! Raw `hyperparameters.json` values (SDK JSON-encoded or plain strings) plus `--hp key=value`
//! overrides are decoded here into [`Hyperparameters`]; every later module reads only this struct.
//! Each default notes where it comes from (HF `TrainingArguments`, the seed recipe, SageMaker).
//!
//! Decoding follows the SageMaker training toolkit: each value is tried as JSON, and kept as the
//! raw string when that fails; booleans are case-insensitive. Keys starting with `sagemaker_`
//! and `_tuning_objective_metric` are ignored. Unknown keys, wrong types, out-of-range values,
//! and a key given twice in one source are errors ([`HyperparameterError`]).

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

/// What a run reuses of a starting checkpoint that is already a classifier.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum WarmStart {
    /// The encoder, and the classifier rows of labels this run keeps (matched by name).
    Auto,
    /// The encoder only: the head starts fresh.
    Encoder,
}

impl WarmStart {
    /// The hyperparameter value.
    pub fn as_str(self) -> &'static str {
        match self {
            WarmStart::Auto => "auto",
            WarmStart::Encoder => "encoder",
        }
    }
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

/// Field separator of CSV files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CsvDelimiter {
    /// Sniffed per file from its header line among `,` `;` tab `|`.
    Auto,
    Byte(u8),
}

/// Delimiters `csv_delimiter=auto` chooses among, in tie-break order.
pub const CSV_DELIMITERS: &[u8] = b",;\t|";

impl std::fmt::Display for CsvDelimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CsvDelimiter::Auto => f.write_str("auto"),
            CsvDelimiter::Byte(b'\t') => f.write_str("tab"),
            CsvDelimiter::Byte(b) => write!(f, "{}", *b as char),
        }
    }
}

impl Serialize for CsvDelimiter {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// `auto`, a delimiter by name (`comma`, `semicolon`, `tab`, `pipe`) or the character itself
/// (`\t` also as the two characters backslash, t). `Err` says what is expected.
impl std::str::FromStr for CsvDelimiter {
    type Err = String;

    fn from_str(raw: &str) -> Result<Self, String> {
        let byte = match raw.trim_matches(' ').to_ascii_lowercase().as_str() {
            "auto" => return Ok(CsvDelimiter::Auto),
            "," | "comma" => b',',
            ";" | "semicolon" => b';',
            "\t" | "\\t" | "tab" => b'\t',
            "|" | "pipe" => b'|',
            _ => return Err("auto, or one of , ; | tab (also comma, semicolon, pipe, \\t)".into()),
        };
        Ok(CsvDelimiter::Byte(byte))
    }
}

/// Text encoding of CSV files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum CsvEncoding {
    /// UTF-8; a BOM is accepted.
    #[serde(rename = "utf-8")]
    Utf8,
    /// UTF-16, byte order from the BOM (little-endian without one).
    #[serde(rename = "utf-16")]
    Utf16,
    #[serde(rename = "windows-1252")]
    Windows1252,
    /// ISO-8859-1: every byte is the code point of the same number.
    #[serde(rename = "latin-1")]
    Latin1,
    /// UTF-8 while the bytes decode as UTF-8, else windows-1252 (decided per file).
    #[serde(rename = "auto")]
    Auto,
}

/// An encoding by its usual names (`utf-8`, `cp1252`, `iso-8859-1`, ...), any case.
impl std::str::FromStr for CsvEncoding {
    type Err = String;

    fn from_str(raw: &str) -> Result<Self, String> {
        Ok(match raw.trim().to_ascii_lowercase().as_str() {
            "utf-8" | "utf8" => CsvEncoding::Utf8,
            "utf-16" | "utf16" => CsvEncoding::Utf16,
            "windows-1252" | "cp1252" => CsvEncoding::Windows1252,
            "latin-1" | "latin1" | "iso-8859-1" => CsvEncoding::Latin1,
            "auto" => CsvEncoding::Auto,
            _ => return Err("one of utf-8, utf-16, windows-1252, latin-1, auto".into()),
        })
    }
}

/// Every setting of a training job, resolved and validated.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Hyperparameters {
    // --- model ---
    /// Path, `model` channel entry, `$TXCAT_MODEL_HOME/<name>` or `s3://` URI (alias `model_name`).
    pub model_name_or_path: String,
    /// The Hub revision of a `model_name_or_path` fetched from the Hugging Face Hub: a branch,
    /// tag or commit hash (a commit hash pins the files).
    pub model_revision: String,
    /// Tokens per text after truncation; HF tokenizer default in the seed is the model maximum, we use 128.
    pub max_length: usize,
    /// Head reuse when the starting model is a classifier (`auto`: rows by label name).
    pub warm_start: WarmStart,
    /// The model to beat (issue 12): a path, tarball or `s3://` URI, resolved like
    /// `model_name_or_path`; `None` = the `baseline` channel, else the starting model when it is
    /// a classifier.
    pub baseline_model: Option<String>,

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
    pub csv_delimiter: CsvDelimiter,
    pub csv_encoding: CsvEncoding,
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
    /// The classification head's own peak learning rate (`classifier.*`, DistilBERT's
    /// `pre_classifier.*`), following the same warm-up and decay; `None`: `learning_rate`. Not a
    /// Hugging Face name: a freshly initialised head on a few hundred rows learns faster with it.
    pub classifier_learning_rate: Option<f64>,
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
    /// Before fine-tuning, fit a fresh head as a logistic regression on the pretrained
    /// encoder's features (`crate::train::probe`), so the encoder is not pulled about by a
    /// random head (linear probing, then fine-tuning).
    pub linear_probe: bool,
    pub seed: u64,
    /// Bucket rows of similar length into batches (HF `group_by_length`, default on here).
    pub group_by_length: bool,
    pub fp16: bool,
    /// `None` = bf16 on GPUs that support it, fp32 on the CPU (where `Some(true)` opts in).
    pub bf16: Option<bool>,
    pub device: DeviceChoice,
    /// Intra-op CPU threads; `None` = libtorch's default (all cores).
    pub num_threads: Option<usize>,

    // --- data-parallel training (issue 15) ---
    /// Workers on this host; `None` = one per visible GPU on CUDA, 1 on the CPU.
    pub num_processes: Option<usize>,
    /// TCP port of the rendezvous store on the master (torchrun's MASTER_PORT).
    pub dist_port: u16,
    /// Seconds a rendezvous or collective may wait for the other workers before failing.
    pub dist_timeout: u64,

    // --- evaluation and logging ---
    /// Also evaluate every N optimizer steps (besides each epoch end).
    pub eval_steps: Option<u64>,
    pub logging_steps: u64,
    /// Also fit and score the seed's tf-idf + linear SVM on the same rows (issue 17).
    pub baseline_tfidf: bool,
    /// Blend that baseline with the encoder in the saved model when the blend scores better on
    /// the evaluation rows (issue 17); needs `baseline_tfidf`.
    pub blend_tfidf: bool,
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
            model_revision: "main".into(),
            max_length: 128,
            warm_start: WarmStart::Auto,
            baseline_model: None,
            text_column: "text".into(),
            label_column: "category".into(), // the seed recipe's column
            eval_channel: None,
            validation_split: 0.1,
            max_bad_rows: 0,
            csv_delimiter: CsvDelimiter::Auto,
            csv_encoding: CsvEncoding::Utf8, // pandas.read_csv's default
            unseen_eval_labels: UnseenLabels::Error,
            train_uri: None,
            eval_uri: None,
            output_uri: None,
            epochs: 3.0, // HF num_train_epochs
            max_steps: None,
            train_batch_size: 8, // HF per_device_train_batch_size
            eval_batch_size: 64,
            learning_rate: 5e-5,
            classifier_learning_rate: None,
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
            linear_probe: true,
            seed: 42, // HF seed
            group_by_length: true,
            fp16: false,
            bf16: None,
            device: DeviceChoice::Auto,
            num_threads: None,
            num_processes: None,
            dist_port: 7777,
            dist_timeout: 600,
            eval_steps: None,
            logging_steps: 50,
            baseline_tfidf: true,
            blend_tfidf: true,
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

/// Where a raw hyperparameter came from (named in error messages).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// `input/config/hyperparameters.json`.
    File,
    /// `txcat train --hp key=value`.
    CommandLine,
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Origin::File => "hyperparameters.json",
            Origin::CommandLine => "--hp",
        })
    }
}

/// A hyperparameter that cannot be accepted. Each message is one line naming the key.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum HyperparameterError {
    #[error("unknown hyperparameter `{key}` (in {origin}); {hint}")]
    Unknown {
        key: String,
        origin: Origin,
        /// "did you mean `x`?" or the list of valid keys.
        hint: String,
    },
    #[error("hyperparameter `{key}` = `{value}` (in {origin}) is invalid: expected {expected}")]
    Invalid {
        key: String,
        value: String,
        origin: Origin,
        expected: String,
    },
    #[error(
        "hyperparameter `{key}` is given twice in {origin} (as `{first}` and `{second}`); keep one"
    )]
    Duplicate {
        key: String,
        origin: Origin,
        first: String,
        second: String,
    },
    #[error("hyperparameters conflict: {0}")]
    Conflict(String),
}

/// Every accepted key, canonical names (the fields of [`Hyperparameters`]).
pub const KEYS: &[&str] = &[
    "model_name_or_path",
    "model_revision",
    "max_length",
    "warm_start",
    "baseline_model",
    "text_column",
    "label_column",
    "eval_channel",
    "validation_split",
    "max_bad_rows",
    "csv_delimiter",
    "csv_encoding",
    "unseen_eval_labels",
    "train_uri",
    "eval_uri",
    "output_uri",
    "epochs",
    "max_steps",
    "train_batch_size",
    "eval_batch_size",
    "learning_rate",
    "classifier_learning_rate",
    "weight_decay",
    "adam_beta1",
    "adam_beta2",
    "adam_epsilon",
    "max_grad_norm",
    "warmup_steps",
    "warmup_ratio",
    "lr_scheduler_type",
    "gradient_accumulation_steps",
    "label_smoothing",
    "class_weights",
    "linear_probe",
    "seed",
    "group_by_length",
    "fp16",
    "bf16",
    "device",
    "num_threads",
    "num_processes",
    "dist_port",
    "dist_timeout",
    "eval_steps",
    "logging_steps",
    "baseline_tfidf",
    "blend_tfidf",
    "metric_for_best_model",
    "load_best_model_at_end",
    "early_stopping_patience",
    "save_strategy",
    "save_steps",
    "save_total_limit",
    "checkpoint_dir",
    "resume",
];

/// Other spellings (the seed recipe's and HF `TrainingArguments` names) -> canonical key.
pub const ALIASES: &[(&str, &str)] = &[
    ("model_name", "model_name_or_path"),
    ("num_train_epochs", "epochs"),
    ("per_device_train_batch_size", "train_batch_size"),
    ("per_device_eval_batch_size", "eval_batch_size"),
    ("max_seq_length", "max_length"),
    ("label_smoothing_factor", "label_smoothing"),
];

/// Values accepted by `metric_for_best_model` (an `eval_` prefix is added when missing, as HF does).
pub const BEST_MODEL_METRICS: &[&str] = &["eval_loss", "eval_accuracy", "eval_f1_macro"];

/// Bounds of `max_length` checked here; the model's own limit is checked when it is loaded.
pub const MAX_LENGTH_RANGE: std::ops::RangeInclusive<usize> = 2..=8192;

/// True for keys SageMaker or its tuner adds, which txcat ignores.
pub fn is_reserved_key(key: &str) -> bool {
    key.starts_with("sagemaker_") || key == "_tuning_objective_metric"
}

fn canonical_key(key: &str) -> Option<&'static str> {
    KEYS.iter()
        .copied()
        .find(|k| *k == key)
        .or_else(|| ALIASES.iter().find(|(a, _)| *a == key).map(|(_, c)| *c))
}

fn unknown_key_hint(key: &str) -> String {
    let candidates = KEYS.iter().chain(ALIASES.iter().map(|(a, _)| a));
    let best = candidates
        .map(|c| (strsim::jaro_winkler(key, c), *c))
        .max_by(|a, b| a.0.total_cmp(&b.0));
    match best {
        Some((score, name)) if score >= 0.8 => format!("did you mean `{name}`?"),
        _ => format!("valid keys: {}", KEYS.join(", ")),
    }
}

/// A raw value decoded the way the SageMaker toolkit does: JSON first, else the raw string.
#[derive(Debug, Clone, PartialEq)]
enum Decoded {
    Str(String),
    Num(f64),
    Bool(bool),
    Null,
    Other,
}

fn decode(raw: &str) -> Decoded {
    match serde_json::from_str::<serde_json::Value>(raw) {
        Ok(serde_json::Value::String(s)) => Decoded::Str(s),
        Ok(serde_json::Value::Number(n)) => n.as_f64().map_or(Decoded::Other, Decoded::Num),
        Ok(serde_json::Value::Bool(b)) => Decoded::Bool(b),
        Ok(serde_json::Value::Null) => Decoded::Null,
        Ok(_) => Decoded::Other,
        Err(_) => Decoded::Str(raw.to_string()),
    }
}

/// One raw entry on its way into a field, with what error messages need.
struct Entry<'a> {
    key: &'a str,
    raw: &'a str,
    origin: Origin,
    value: Decoded,
}

impl Entry<'_> {
    fn invalid(&self, expected: impl Into<String>) -> HyperparameterError {
        HyperparameterError::Invalid {
            key: self.key.to_string(),
            value: crate::text::printable(self.raw),
            origin: self.origin,
            expected: expected.into(),
        }
    }

    /// The value as text (a JSON string decoded, anything else as given), trimmed.
    fn text(&self) -> String {
        match &self.value {
            Decoded::Str(s) => s.trim().to_string(),
            _ => self.raw.trim().to_string(),
        }
    }

    /// `null`, `none`, `null` or empty: "not set".
    fn is_unset(&self) -> bool {
        matches!(self.value, Decoded::Null)
            || matches!(
                self.text().to_ascii_lowercase().as_str(),
                "" | "none" | "null"
            )
    }

    fn string(&self) -> Result<String, HyperparameterError> {
        match self.value {
            Decoded::Other => Err(self.invalid("a string")),
            _ => {
                let s = self.text();
                if s.is_empty() {
                    Err(self.invalid("a non-empty string"))
                } else {
                    Ok(s)
                }
            }
        }
    }

    fn bool(&self) -> Result<bool, HyperparameterError> {
        let expected = "true or false (any case), or 1/0";
        match &self.value {
            Decoded::Bool(b) => Ok(*b),
            Decoded::Num(n) if *n == 1.0 => Ok(true),
            Decoded::Num(n) if *n == 0.0 => Ok(false),
            Decoded::Str(s) => match s.trim().to_ascii_lowercase().as_str() {
                "true" | "1" => Ok(true),
                "false" | "0" => Ok(false),
                _ => Err(self.invalid(expected)),
            },
            _ => Err(self.invalid(expected)),
        }
    }

    fn number(&self, expected: &str) -> Result<f64, HyperparameterError> {
        let n = match &self.value {
            Decoded::Num(n) => *n,
            Decoded::Str(s) => s
                .trim()
                .parse::<f64>()
                .map_err(|_| self.invalid(expected))?,
            _ => return Err(self.invalid(expected)),
        };
        if n.is_finite() {
            Ok(n)
        } else {
            Err(self.invalid(expected))
        }
    }

    /// A float within `ok`, described by `expected`.
    fn float(&self, expected: &str, ok: impl Fn(f64) -> bool) -> Result<f64, HyperparameterError> {
        let n = self.number(expected)?;
        if ok(n) {
            Ok(n)
        } else {
            Err(self.invalid(expected))
        }
    }

    /// An integer `>= min` (`3`, `"3"`, `3.0` all accepted).
    fn int(&self, min: i64, expected: &str) -> Result<i64, HyperparameterError> {
        let n = self.number(expected)?;
        if n.fract() != 0.0 || n < min as f64 || n > i64::MAX as f64 {
            return Err(self.invalid(expected));
        }
        Ok(n as i64)
    }

    fn count(&self, min: u64) -> Result<u64, HyperparameterError> {
        let expected = format!("an integer >= {min}");
        self.int(min as i64, &expected).map(|n| n as u64)
    }

    fn size(&self, min: usize) -> Result<usize, HyperparameterError> {
        self.count(min as u64).map(|n| n as usize)
    }

    fn choice<T: Copy>(&self, choices: &[(&str, T)]) -> Result<T, HyperparameterError> {
        let text = self.text().to_ascii_lowercase();
        choices
            .iter()
            .find(|(name, _)| *name == text)
            .map(|(_, v)| *v)
            .ok_or_else(|| {
                let names: Vec<_> = choices.iter().map(|(n, _)| *n).collect();
                self.invalid(format!("one of {}", names.join(", ")))
            })
    }

    /// A delimiter by name (`auto`, `comma`, `semicolon`, `tab`, `pipe`) or as the character itself.
    fn csv_delimiter(&self) -> Result<CsvDelimiter, HyperparameterError> {
        // Not `text()`: trimming would turn a tab into nothing.
        let raw = match &self.value {
            Decoded::Str(s) => s.as_str(),
            _ => self.raw,
        };
        raw.parse().map_err(|e: String| self.invalid(e))
    }

    fn s3_uri(&self) -> Result<Option<String>, HyperparameterError> {
        if self.is_unset() {
            return Ok(None);
        }
        let uri = self.string()?;
        match uri.strip_prefix("s3://") {
            Some(rest) if !rest.is_empty() && !rest.starts_with('/') => Ok(Some(uri)),
            _ => Err(self.invalid("an s3://bucket/prefix URI")),
        }
    }
}

impl Hyperparameters {
    /// Decodes `file` (from `hyperparameters.json`) and then `overrides` (`--hp`, which win),
    /// validates every value and the combinations, and returns the resolved settings.
    pub fn from_sources(
        file: &[(String, String)],
        overrides: &[(String, String)],
    ) -> Result<Self, HyperparameterError> {
        let mut merged: std::collections::BTreeMap<&'static str, Entry<'_>> = Default::default();
        let mut ignored = Vec::new();
        for (origin, entries) in [(Origin::File, file), (Origin::CommandLine, overrides)] {
            let mut seen: std::collections::BTreeMap<&'static str, &str> = Default::default();
            for (key, raw) in entries {
                if is_reserved_key(key) {
                    ignored.push(key.as_str());
                    continue;
                }
                let Some(canonical) = canonical_key(key) else {
                    return Err(HyperparameterError::Unknown {
                        key: key.clone(),
                        origin,
                        hint: unknown_key_hint(key),
                    });
                };
                if let Some(first) = seen.insert(canonical, key) {
                    return Err(HyperparameterError::Duplicate {
                        key: canonical.to_string(),
                        origin,
                        first: first.to_string(),
                        second: key.clone(),
                    });
                }
                let entry = Entry {
                    key,
                    raw,
                    origin,
                    value: decode(raw),
                };
                merged.insert(canonical, entry);
            }
        }
        if !ignored.is_empty() {
            tracing::info!(keys = %ignored.join(", "), "ignoring SageMaker-reserved hyperparameters");
        }
        let mut hp = Self::default();
        let mut warmup_given_as_ratio = false;
        for (canonical, entry) in &merged {
            if *canonical == "warmup_steps" {
                warmup_given_as_ratio = hp.apply_warmup_steps(entry)?;
            } else {
                hp.apply(canonical, entry)?;
            }
        }
        hp.validate(&merged, warmup_given_as_ratio)?;
        Ok(hp)
    }

    /// HF semantics: an integer is a step count, a float in (0, 1) a ratio of total steps.
    /// Returns whether it was a ratio.
    fn apply_warmup_steps(&mut self, e: &Entry<'_>) -> Result<bool, HyperparameterError> {
        let expected = "an integer >= 0 (steps) or a float in [0, 1) (ratio of total steps)";
        let n = e.number(expected)?;
        if n.fract() == 0.0 && n >= 0.0 && n <= u64::MAX as f64 {
            self.warmup_steps = n as u64;
            Ok(false)
        } else if n > 0.0 && n < 1.0 {
            self.warmup_ratio = n;
            self.warmup_steps = 0;
            Ok(true)
        } else {
            Err(e.invalid(expected))
        }
    }

    fn apply(&mut self, key: &str, e: &Entry<'_>) -> Result<(), HyperparameterError> {
        let unit = |x: f64| (0.0..1.0).contains(&x);
        match key {
            "model_name_or_path" => self.model_name_or_path = e.string()?,
            "model_revision" => {
                let revision = e.string()?;
                if revision.is_empty()
                    || revision.contains("..")
                    || revision
                        .chars()
                        .any(|c| c.is_whitespace() || c.is_control())
                {
                    return Err(e.invalid(
                        "a Hub branch, tag or commit hash (e.g. main, v1.0 or a 40-hex-digit commit)",
                    ));
                }
                self.model_revision = revision;
            }
            "max_length" => {
                let n = e.size(0)?;
                if !MAX_LENGTH_RANGE.contains(&n) {
                    return Err(e.invalid("an integer from 2 to 8192 (tokens per text)"));
                }
                self.max_length = n;
            }
            "warm_start" => {
                self.warm_start =
                    e.choice(&[("auto", WarmStart::Auto), ("encoder", WarmStart::Encoder)])?
            }
            "baseline_model" => {
                self.baseline_model = match e.is_unset() {
                    true => None,
                    false => Some(e.string()?),
                }
            }
            "text_column" => self.text_column = e.string()?,
            "label_column" => self.label_column = e.string()?,
            "eval_channel" => {
                self.eval_channel = match e.is_unset() || e.text().eq_ignore_ascii_case("auto") {
                    true => None,
                    false => Some(e.string()?),
                }
            }
            "validation_split" => {
                self.validation_split = e.float("a fraction strictly between 0 and 1", |x| {
                    x > 0.0 && x < 1.0
                })?
            }
            "max_bad_rows" => self.max_bad_rows = e.size(0)?,
            "csv_delimiter" => self.csv_delimiter = e.csv_delimiter()?,
            "csv_encoding" => {
                self.csv_encoding = e.text().parse().map_err(|x: String| e.invalid(x))?
            }
            "unseen_eval_labels" => {
                self.unseen_eval_labels =
                    e.choice(&[("error", UnseenLabels::Error), ("drop", UnseenLabels::Drop)])?
            }
            "train_uri" => self.train_uri = e.s3_uri()?,
            "eval_uri" => self.eval_uri = e.s3_uri()?,
            "output_uri" => self.output_uri = e.s3_uri()?,
            "epochs" => self.epochs = e.float("a number >= 0", |x| x >= 0.0)?,
            "max_steps" if e.is_unset() => self.max_steps = None,
            "max_steps" => {
                let n = e.int(-1, "a positive integer, or -1 for none (use epochs)")?;
                self.max_steps = match n {
                    -1 => None,
                    0 => return Err(e.invalid("a positive integer, or -1 for none (use epochs)")),
                    n => Some(n as u64),
                };
            }
            "train_batch_size" => self.train_batch_size = e.size(1)?,
            "eval_batch_size" => self.eval_batch_size = e.size(1)?,
            "learning_rate" => self.learning_rate = e.float("a number > 0", |x| x > 0.0)?,
            "classifier_learning_rate" if e.is_unset() => self.classifier_learning_rate = None,
            "classifier_learning_rate" => {
                self.classifier_learning_rate =
                    Some(e.float("a number > 0, or none for learning_rate", |x| x > 0.0)?)
            }
            "weight_decay" => self.weight_decay = e.float("a number >= 0", |x| x >= 0.0)?,
            "adam_beta1" => self.adam_beta1 = e.float("a number in [0, 1)", unit)?,
            "adam_beta2" => self.adam_beta2 = e.float("a number in [0, 1)", unit)?,
            "adam_epsilon" => self.adam_epsilon = e.float("a number > 0", |x| x > 0.0)?,
            "max_grad_norm" => {
                self.max_grad_norm =
                    e.float("a number >= 0 (0 turns clipping off)", |x| x >= 0.0)?
            }
            "warmup_ratio" => self.warmup_ratio = e.float("a number in [0, 1)", unit)?,
            "lr_scheduler_type" => {
                self.lr_scheduler_type = e.choice(&[
                    ("linear", LrSchedule::Linear),
                    ("constant", LrSchedule::Constant),
                    ("constant_with_warmup", LrSchedule::Constant),
                ])?
            }
            "gradient_accumulation_steps" => self.gradient_accumulation_steps = e.size(1)?,
            "label_smoothing" => self.label_smoothing = e.float("a number in [0, 1)", unit)?,
            "class_weights" => {
                self.class_weights = e.choice(&[
                    ("none", ClassWeights::None),
                    ("balanced", ClassWeights::Balanced),
                ])?
            }
            "linear_probe" => self.linear_probe = e.bool()?,
            "seed" => self.seed = e.count(0)?,
            "group_by_length" => self.group_by_length = e.bool()?,
            "fp16" => self.fp16 = e.bool()?,
            "bf16" => {
                self.bf16 = match e.is_unset() || e.text().eq_ignore_ascii_case("auto") {
                    true => None,
                    false => Some(e.bool().map_err(|_| e.invalid("true, false or auto"))?),
                }
            }
            "device" => {
                self.device = e.choice(&[
                    ("auto", DeviceChoice::Auto),
                    ("cpu", DeviceChoice::Cpu),
                    ("cuda", DeviceChoice::Cuda),
                    ("gpu", DeviceChoice::Cuda),
                ])?
            }
            "num_threads" => {
                self.num_threads = match e.is_unset() || e.text().eq_ignore_ascii_case("auto") {
                    true => None,
                    false => Some(e.size(1)?),
                }
            }
            "num_processes" => {
                self.num_processes = match e.is_unset() || e.text().eq_ignore_ascii_case("auto") {
                    true => None,
                    false => Some(e.size(1)?),
                }
            }
            "dist_port" => {
                let expected = "a TCP port in 1..=65535";
                let n = e.int(1, expected)?;
                self.dist_port = u16::try_from(n).map_err(|_| e.invalid(expected))?;
            }
            "dist_timeout" => self.dist_timeout = e.count(1)?,
            "eval_steps" => {
                self.eval_steps = match e.is_unset() {
                    true => None,
                    false => Some(e.count(1)?),
                }
            }
            "logging_steps" => self.logging_steps = e.count(1)?,
            "baseline_tfidf" => self.baseline_tfidf = e.bool()?,
            "blend_tfidf" => self.blend_tfidf = e.bool()?,
            "metric_for_best_model" => {
                let name = e.string()?.to_ascii_lowercase();
                let name = match name.starts_with("eval_") {
                    true => name,
                    false => format!("eval_{name}"),
                };
                if !BEST_MODEL_METRICS.contains(&name.as_str()) {
                    return Err(e.invalid(format!("one of {}", BEST_MODEL_METRICS.join(", "))));
                }
                self.metric_for_best_model = name;
            }
            "load_best_model_at_end" => self.load_best_model_at_end = e.bool()?,
            "early_stopping_patience" => {
                self.early_stopping_patience = match e.is_unset() {
                    true => None,
                    false => Some(
                        u32::try_from(e.count(1)?)
                            .map_err(|_| e.invalid("an integer from 1 to 4294967295"))?,
                    ),
                }
            }
            "save_strategy" => {
                self.save_strategy = e.choice(&[
                    ("no", SaveStrategy::No),
                    ("epoch", SaveStrategy::Epoch),
                    ("steps", SaveStrategy::Steps),
                ])?
            }
            "save_steps" => {
                self.save_steps = match e.is_unset() {
                    true => None,
                    false => Some(e.count(1)?),
                }
            }
            "save_total_limit" => {
                self.save_total_limit = match e.is_unset() {
                    true => None,
                    false => Some(e.size(1)?),
                }
            }
            "checkpoint_dir" => {
                self.checkpoint_dir = match e.is_unset() {
                    true => None,
                    false => Some(e.string()?),
                }
            }
            "resume" => {
                self.resume = e.choice(&[
                    ("auto", ResumePolicy::Auto),
                    ("never", ResumePolicy::Never),
                    ("must", ResumePolicy::Must),
                ])?
            }
            // Invariant: `canonical_key` only returns names listed in KEYS, all handled above.
            other => unreachable!("hyperparameter key {other} is in KEYS but has no parser"),
        }
        Ok(())
    }

    /// Rules that involve several keys.
    fn validate(
        &self,
        given: &std::collections::BTreeMap<&'static str, Entry<'_>>,
        warmup_given_as_ratio: bool,
    ) -> Result<(), HyperparameterError> {
        if self.max_steps.is_none() && self.epochs <= 0.0 {
            return Err(match given.get("epochs") {
                Some(e) => e.invalid("a number > 0 (or set max_steps)"),
                None => HyperparameterError::Conflict("epochs must be > 0".into()),
            });
        }
        if self.text_column == self.label_column {
            return Err(HyperparameterError::Conflict(format!(
                "text_column and label_column are both `{}`; they must name different columns",
                self.text_column
            )));
        }
        if given.contains_key("warmup_ratio") && (warmup_given_as_ratio || self.warmup_steps > 0) {
            return Err(HyperparameterError::Conflict(
                "both warmup_steps and warmup_ratio are set; set only one".into(),
            ));
        }
        if self.fp16 && self.bf16 == Some(true) {
            return Err(HyperparameterError::Conflict(
                "fp16 and bf16 are both true; choose one precision".into(),
            ));
        }
        if self.save_strategy == SaveStrategy::Steps && self.save_steps.is_none() {
            return Err(HyperparameterError::Conflict(
                "save_strategy=steps needs save_steps (a positive integer)".into(),
            ));
        }
        if self.eval_uri.is_some() && self.eval_channel.is_none() {
            tracing::debug!("eval_uri given; it feeds the `validation` evaluation channel");
        }
        Ok(())
    }

    /// The resolved settings as `(key, value)` text pairs, sorted by key (for logs and the dry run).
    pub fn resolved_pairs(&self) -> Vec<(String, String)> {
        let value = serde_json::to_value(self).unwrap_or(serde_json::Value::Null);
        let mut pairs: Vec<(String, String)> = match value {
            serde_json::Value::Object(map) => map
                .into_iter()
                .map(|(k, v)| {
                    let text = match v {
                        serde_json::Value::String(s) => s,
                        serde_json::Value::Null => "none".to_string(),
                        other => other.to_string(),
                    };
                    (k, text)
                })
                .collect(),
            _ => Vec::new(),
        };
        pairs.sort();
        pairs
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(items: &[(&str, &str)]) -> Vec<(String, String)> {
        items
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn parse(items: &[(&str, &str)]) -> Result<Hyperparameters, HyperparameterError> {
        Hyperparameters::from_sources(&pairs(items), &[])
    }

    #[test]
    fn classifier_learning_rate_is_a_rate_or_none() {
        let hp = parse(&[("classifier_learning_rate", "3e-3")]).unwrap();
        assert_eq!(hp.classifier_learning_rate, Some(3e-3));
        for unset in ["none", "null", ""] {
            let hp = parse(&[("classifier_learning_rate", unset)]).unwrap();
            assert_eq!(hp.classifier_learning_rate, None, "{unset:?}");
        }
        assert_eq!(Hyperparameters::default().classifier_learning_rate, None);
    }

    #[test]
    fn sdk_json_encoded_and_raw_values_decode_the_same() {
        let sdk = parse(&[
            ("model_name", "\"distilbert-base-uncased\""),
            ("epochs", "1"),
            ("train_batch_size", "32"),
            ("learning_rate", "5e-05"),
            ("fp16", "true"),
            ("sagemaker_program", "\"train.py\""),
            ("sagemaker_container_log_level", "20"),
            ("_tuning_objective_metric", "eval_loss"),
        ])
        .unwrap();
        let raw = parse(&[
            ("model_name", "distilbert-base-uncased"),
            ("epochs", "1"),
            ("train_batch_size", "\"32\""),
            ("learning_rate", "5e-05"),
            ("fp16", "True"),
        ])
        .unwrap();
        assert_eq!(sdk, raw);
        assert_eq!(sdk.model_name_or_path, "distilbert-base-uncased");
        assert_eq!(sdk.train_batch_size, 32);
        assert_eq!(sdk.learning_rate, 5e-5);
        assert!(sdk.fp16);
        assert_eq!(sdk.epochs, 1.0);
    }

    #[test]
    fn booleans_are_case_insensitive() {
        for (raw, want) in [
            ("TRUE", true),
            ("False", false),
            ("\"true\"", true),
            ("0", false),
        ] {
            assert_eq!(parse(&[("fp16", raw)]).unwrap().fp16, want, "{raw}");
            let hp = parse(&[("baseline_tfidf", raw)]).unwrap();
            assert_eq!(hp.baseline_tfidf, want, "{raw}");
            let hp = parse(&[("blend_tfidf", raw)]).unwrap();
            assert_eq!(hp.blend_tfidf, want, "{raw}");
        }
        let err = parse(&[("fp16", "yes")]).unwrap_err();
        assert!(matches!(err, HyperparameterError::Invalid { ref key, .. } if key == "fp16"));
    }

    #[test]
    fn unknown_key_suggests_the_nearest() {
        let err = parse(&[("train_bach_size", "32")]).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("`train_bach_size`"), "{text}");
        assert!(text.contains("did you mean `train_batch_size`?"), "{text}");
        let far = parse(&[("zzz", "1")]).unwrap_err().to_string();
        assert!(far.contains("valid keys: model_name_or_path"), "{far}");
    }

    #[test]
    fn wrong_type_and_range_name_key_value_and_expectation() {
        let err = parse(&[("train_batch_size", "abc")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("`train_batch_size` = `abc`"), "{err}");
        assert!(err.contains("expected an integer >= 1"), "{err}");
        for (key, value) in [
            ("train_batch_size", "0"),
            ("eval_batch_size", "-3"),
            ("learning_rate", "0"),
            ("learning_rate", "nan"),
            ("learning_rate", "inf"),
            ("classifier_learning_rate", "0"),
            ("classifier_learning_rate", "-1e-3"),
            ("max_length", "1"),
            ("max_length", "9000"),
            ("validation_split", "0"),
            ("validation_split", "1"),
            ("epochs", "0"),
            ("max_steps", "0"),
            ("warmup_steps", "1.5"),
            ("device", "tpu"),
            ("train_batch_size", "2.5"),
            ("train_uri", "/local/path"),
            ("metric_for_best_model", "bleu"),
        ] {
            let err = parse(&[(key, value)]).unwrap_err();
            match err {
                HyperparameterError::Invalid {
                    key: k, value: v, ..
                } => {
                    assert_eq!((k.as_str(), v.as_str()), (key, value));
                }
                other => panic!("{key}={value}: {other}"),
            }
        }
    }

    #[test]
    fn aliases_and_hf_conventions() {
        let hp = parse(&[
            ("num_train_epochs", "2"),
            ("per_device_train_batch_size", "16"),
            ("per_device_eval_batch_size", "\"128\""),
            ("max_seq_length", "64"),
            ("label_smoothing_factor", "0.1"),
            ("max_steps", "-1"),
            ("warmup_steps", "0.06"),
            ("metric_for_best_model", "accuracy"),
            ("bf16", "auto"),
            ("eval_channel", "\"test\""),
        ])
        .unwrap();
        assert_eq!(hp.epochs, 2.0);
        assert_eq!((hp.train_batch_size, hp.eval_batch_size), (16, 128));
        assert_eq!(hp.max_length, 64);
        assert_eq!(hp.label_smoothing, 0.1);
        assert_eq!(hp.max_steps, None);
        assert_eq!((hp.warmup_steps, hp.warmup_ratio), (0, 0.06));
        assert_eq!(hp.metric_for_best_model, "eval_accuracy");
        assert_eq!(hp.bf16, None);
        assert_eq!(hp.eval_channel.as_deref(), Some("test"));
        let steps = parse(&[
            ("warmup_steps", "500"),
            ("max_steps", "100"),
            ("epochs", "0"),
        ])
        .unwrap();
        assert_eq!(
            (steps.warmup_steps, steps.max_steps, steps.epochs),
            (500, Some(100), 0.0)
        );
    }

    #[test]
    fn overrides_win_and_duplicates_in_one_source_fail() {
        let file = pairs(&[("model_name", "a"), ("epochs", "1")]);
        let cli = pairs(&[("model_name_or_path", "b")]);
        let hp = Hyperparameters::from_sources(&file, &cli).unwrap();
        assert_eq!(hp.model_name_or_path, "b");
        assert_eq!(hp.epochs, 1.0);
        let err = parse(&[("model_name", "a"), ("model_name_or_path", "b")]).unwrap_err();
        assert!(
            matches!(err, HyperparameterError::Duplicate { .. }),
            "{err}"
        );
    }

    #[test]
    fn conflicts_are_reported() {
        for items in [
            &[("fp16", "true"), ("bf16", "true")][..],
            &[("warmup_steps", "10"), ("warmup_ratio", "0.1")][..],
            &[("text_column", "x"), ("label_column", "x")][..],
            &[("save_strategy", "steps")][..],
        ] {
            assert!(
                matches!(parse(items), Err(HyperparameterError::Conflict(_))),
                "{items:?}"
            );
        }
    }

    #[test]
    fn csv_dialect_values_by_name_character_or_sdk_encoding() {
        for (raw, want) in [
            ("auto", CsvDelimiter::Auto),
            (";", CsvDelimiter::Byte(b';')),
            ("\"|\"", CsvDelimiter::Byte(b'|')),
            ("\"\\t\"", CsvDelimiter::Byte(b'\t')),
            ("\t", CsvDelimiter::Byte(b'\t')),
            ("TAB", CsvDelimiter::Byte(b'\t')),
            ("semicolon", CsvDelimiter::Byte(b';')),
        ] {
            assert_eq!(
                parse(&[("csv_delimiter", raw)]).unwrap().csv_delimiter,
                want,
                "{raw:?}"
            );
        }
        assert!(parse(&[("csv_delimiter", ":")]).is_err());
        assert!(parse(&[("csv_delimiter", ",;")]).is_err());
        let hp = parse(&[("csv_encoding", "\"CP1252\"")]).unwrap();
        assert_eq!(hp.csv_encoding, CsvEncoding::Windows1252);
        assert!(parse(&[("csv_encoding", "utf-32")]).is_err());
        // Resolved values parse back to themselves (run_summary.json / resume fingerprints).
        let tab = parse(&[("csv_delimiter", "tab"), ("csv_encoding", "latin-1")]).unwrap();
        assert_eq!(
            Hyperparameters::from_sources(&tab.resolved_pairs(), &[]).unwrap(),
            tab
        );
    }

    #[test]
    fn every_key_and_alias_is_documented() {
        let doc = include_str!("../README.md");
        for key in KEYS.iter().chain(ALIASES.iter().map(|(a, _)| a)) {
            assert!(doc.contains(&format!("`{key}`")), "README.md lacks `{key}`");
        }
    }

    #[test]
    fn defaults_parse_back_from_resolved_pairs() {
        // Every resolved value, fed back as a raw string, yields the same settings.
        let defaults = Hyperparameters::default();
        let back = defaults.resolved_pairs();
        assert_eq!(Hyperparameters::from_sources(&back, &[]).unwrap(), defaults);
        assert_eq!(defaults.resolved_pairs().len(), KEYS.len());
    }
}

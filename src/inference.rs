//! [`Predictor`]: a trained model directory (what `txcat train` writes) loaded once, and labels
//! with probabilities for batches of texts. `txcat predict` and `txcat serve` both use it, so
//! there is one copy of the loading, tokenizing and forward code.
//!
//! Invariants:
//! - Texts are truncated exactly as in training: to `training_args.json`'s `max_length`, else to
//!   the model's position table, so no input length can index past it.
//! - Rows run longest first in batches of at most `batch_size`, each padded to its own longest
//!   row; results come back in input order.
//! - Forwards run without autograd (`no_grad`; tch exposes no `InferenceMode`) and without
//!   dropout. Probabilities are the softmax of the fp32 logits, mixed with the tf-idf model's
//!   when the directory holds a blend (`txcat_blend.json`, see `crate::blend`).
//! - A `Predictor` holds tch tensors and stays on the thread that uses it.

use std::fs;
use std::path::{Path, PathBuf};

use tch::{Device, Kind};

use crate::blend::saved::{BlendError, SavedBlend};
use crate::blend::BlendWeights;
use crate::hyperparams::DeviceChoice;
use crate::model::{ClassifierModel, ModelError, SequenceClassifier};
use crate::tokenize::batch::{BatchError, TokenizedSet};
use crate::tokenize::{TextEncoder, TokenizeError};
use crate::train::device::{resolve_device, TensorBatch};

/// Texts handed to the tokenizer at once (it parallelises inside a call).
const TOKENIZE_CHUNK: usize = 8192;

/// Why a model directory could not be loaded or a prediction failed.
#[derive(Debug, thiserror::Error)]
pub enum InferenceError {
    /// A file of the model directory is missing or unusable.
    #[error("{path}: {reason}")]
    Model { path: PathBuf, reason: String },
    /// The weights do not load.
    #[error(transparent)]
    Load(#[from] ModelError),
    /// The tokenizer files do not load.
    #[error("{dir}: {source}")]
    Tokenizer {
        dir: PathBuf,
        #[source]
        source: TokenizeError,
    },
    /// The tokenizer failed on a text.
    #[error(transparent)]
    Encode(TokenizeError),
    /// The tokenizer returned rows the batch store cannot hold.
    #[error(transparent)]
    Batch(#[from] BatchError),
    /// `top_k` outside `1..=labels`.
    #[error("--top-k must be at least 1 and at most the number of labels ({labels}); got {k}")]
    TopK { k: usize, labels: usize },
    /// The tf-idf blend's files are broken.
    #[error(transparent)]
    Blend(#[from] BlendError),
    /// libtorch failed (out of memory, device error).
    #[error("libtorch: {0}")]
    Torch(#[from] tch::TchError),
}

impl InferenceError {
    /// True when the model directory or the caller's settings are at fault rather than the
    /// machine.
    pub fn is_bad_input(&self) -> bool {
        !matches!(self, InferenceError::Torch(_))
    }
}

/// One label of a prediction: its class id (index into [`Predictor::labels`]) and probability.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Scored {
    pub label: usize,
    pub score: f32,
}

/// The label names of a trained model directory, from `config.json`'s `id2label`.
pub fn read_id2label(model_dir: &Path) -> Result<Vec<String>, InferenceError> {
    let path = model_dir.join("config.json");
    let bad = |reason: String| InferenceError::Model {
        path: path.clone(),
        reason,
    };
    let text = fs::read_to_string(&path).map_err(|e| {
        bad(format!(
            "{e}; --model must be a directory written by txcat train"
        ))
    })?;
    let config: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| bad(format!("not valid JSON: {e}")))?;
    let map = config
        .get("id2label")
        .and_then(|v| v.as_object())
        .ok_or_else(|| bad("has no id2label; is this a fine-tuned classifier?".into()))?;
    let mut labels = vec![None; map.len()];
    for (key, value) in map {
        let id: usize = key.parse().ok().filter(|&i| i < map.len()).ok_or_else(|| {
            bad(format!(
                "id2label key {key:?} is not an id in 0..{}",
                map.len()
            ))
        })?;
        labels[id] = value.as_str().map(str::to_owned);
    }
    labels
        .into_iter()
        .enumerate()
        .map(|(i, l)| l.ok_or_else(|| bad(format!("id2label[{i}] is missing or not a string"))))
        .collect()
}

/// The sequence length used in training (`training_args.json`), else the model's maximum.
fn trained_max_length(model_dir: &Path, max_positions: usize) -> usize {
    fs::read_to_string(model_dir.join("training_args.json"))
        .ok()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        .and_then(|v| v["hyperparameters"]["max_length"].as_u64())
        .map_or(max_positions, |n| (n as usize).min(max_positions))
}

/// A trained classifier with its tokenizer, ready to label texts.
#[derive(Debug)]
pub struct Predictor {
    model: SequenceClassifier,
    encoder: TextEncoder,
    device: Device,
    blend: Option<SavedBlend>,
}

/// Whether predictions use the directory's tf-idf blend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlendUse {
    /// When the directory has one (what the job chose).
    Auto,
    /// The encoder alone, even when a blend is there.
    EncoderOnly,
}

impl Predictor {
    /// Loads `model_dir` (config.json with id2label, model.safetensors, tokenizer files, and the
    /// tf-idf blend when the job kept one) on the device `choice` resolves to.
    pub fn load(model_dir: &Path, choice: DeviceChoice) -> Result<Self, InferenceError> {
        Self::load_with(model_dir, choice, BlendUse::Auto)
    }

    /// [`Self::load`], choosing whether the blend is used.
    pub fn load_with(
        model_dir: &Path,
        choice: DeviceChoice,
        blend: BlendUse,
    ) -> Result<Self, InferenceError> {
        let id2label = read_id2label(model_dir)?;
        let blend = match blend {
            BlendUse::Auto => SavedBlend::load(model_dir, &id2label)?,
            BlendUse::EncoderOnly => None,
        };
        let device = resolve_device(choice).map_err(|e| InferenceError::Model {
            path: model_dir.to_path_buf(),
            reason: e.to_string(),
        })?;
        let (model, _) = SequenceClassifier::load(model_dir, &id2label, device)?;
        let max_length = trained_max_length(model_dir, model.max_positions());
        let encoder = TextEncoder::from_model_dir(model_dir, max_length).map_err(|source| {
            InferenceError::Tokenizer {
                dir: model_dir.to_path_buf(),
                source,
            }
        })?;
        Ok(Self {
            model,
            encoder,
            device,
            blend,
        })
    }

    /// The blend's settings when predictions mix in the tf-idf model.
    pub fn blend(&self) -> Option<BlendWeights> {
        self.blend.as_ref().map(|b| b.weights)
    }

    /// Label names, index = class id.
    pub fn labels(&self) -> &[String] {
        self.model.id2label()
    }

    /// Tokens a text is truncated to (incl. [CLS]/[SEP]).
    pub fn max_length(&self) -> usize {
        self.encoder.max_length()
    }

    /// The device forwards run on.
    pub fn device(&self) -> Device {
        self.device
    }

    /// Serving in bfloat16: the linear layers' weights kept and computed in bf16 (see
    /// [`SequenceClassifier::serve_in`]); refused where the device has no bf16 arithmetic.
    pub fn serve_in_bf16(&mut self) -> Result<(), InferenceError> {
        if !crate::train::amp::bf16_supported(self.device) {
            return Err(InferenceError::Model {
                path: PathBuf::from("TXCAT_SERVE_PRECISION=bf16"),
                reason: "this machine has no bfloat16 arithmetic (CPU: avx512_bf16 or amx_bf16); unset it to serve in fp32".into(),
            });
        }
        self.model.serve_in(Kind::BFloat16);
        Ok(())
    }

    /// Serving with int8 linear layers (see [`SequenceClassifier::serve_in_int8`]); CPU only.
    pub fn serve_in_int8(&mut self) -> Result<(), InferenceError> {
        let refuse = |reason: String| InferenceError::Model {
            path: PathBuf::from("TXCAT_SERVE_PRECISION=int8"),
            reason,
        };
        if self.device != Device::Cpu {
            return Err(refuse(
                "int8 serving runs on the CPU only; on a GPU use bf16 or unset it".into(),
            ));
        }
        self.model
            .serve_in_int8()
            .map_err(|e| refuse(format!("{e}; unset it to serve in fp32")))
    }

    /// The `top_k` best labels of every text, best first, in input order, running at most
    /// `batch_size` rows per forward.
    pub fn predict(
        &self,
        texts: &[&str],
        top_k: usize,
        batch_size: usize,
    ) -> Result<Vec<Vec<Scored>>, InferenceError> {
        let labels = self.labels().len();
        if top_k == 0 || top_k > labels {
            return Err(InferenceError::TopK { k: top_k, labels });
        }
        let set = self.tokenize(texts)?;
        let mut probs = probabilities(
            &self.model,
            &set,
            batch_size,
            self.encoder.pad_id(),
            self.device,
        )?;
        if let Some(blend) = &self.blend {
            blend.apply(texts, &mut probs)?;
        }
        Ok(probs
            .chunks(labels)
            .map(|row| top_k_of(row, top_k))
            .collect())
    }

    /// One forward on a short text, so the first request does not pay for libtorch's lazy
    /// set-up (thread pools, allocator) and a broken model fails before serving.
    pub fn warm_up(&self) -> Result<(), InferenceError> {
        self.predict(&["warm up"], 1, 1).map(drop)
    }

    /// Tokenizes `texts` once into compact storage (no labels).
    fn tokenize(&self, texts: &[&str]) -> Result<TokenizedSet, InferenceError> {
        let mut set = TokenizedSet::new(self.model.uses_token_type_ids());
        for chunk in texts.chunks(TOKENIZE_CHUNK) {
            let encodings = self
                .encoder
                .encode_batch(chunk)
                .map_err(InferenceError::Encode)?;
            for encoding in &encodings {
                set.push(&encoding.ids, &encoding.type_ids, 0)?;
            }
        }
        Ok(set)
    }
}

/// The `k` most probable labels of one row, best first (ties to the lower id).
fn top_k_of(row: &[f32], k: usize) -> Vec<Scored> {
    let mut ids: Vec<usize> = (0..row.len()).collect();
    ids.sort_by(|&a, &b| row[b].total_cmp(&row[a]).then(a.cmp(&b)));
    ids.into_iter()
        .take(k)
        .map(|label| Scored {
            label,
            score: row[label],
        })
        .collect()
}

/// Softmax probabilities of every row of `set`, row-major `[rows x labels]` in the set's order:
/// rows run longest first in batches of at most `batch_size`, each padded to its own longest row,
/// without autograd or dropout. The one forward path of `predict`, `serve` and the job's blend.
pub fn probabilities<M: ClassifierModel>(
    model: &M,
    set: &TokenizedSet,
    batch_size: usize,
    pad_id: u32,
    device: Device,
) -> Result<Vec<f32>, InferenceError> {
    let all: Vec<usize> = (0..set.len()).collect();
    let _guard = tch::no_grad_guard();
    let mut out: Vec<f32> = Vec::new();
    let mut labels = 0;
    // Positions into `all` are row ids: the order is restored by writing each row's slot.
    for rows in &set.longest_first_batches(&all, batch_size) {
        let batch =
            TensorBatch::from_host(&set.assemble(rows, pad_id), device)?.to_device(device)?;
        let probs = model
            .forward_t(
                &batch.input_ids,
                &batch.attention_mask,
                batch.token_type_ids.as_ref(),
                false,
            )
            .f_softmax(-1, Kind::Float)?;
        labels = probs.size()[1] as usize;
        if out.is_empty() {
            out = vec![0.0; set.len() * labels];
        }
        let values = Vec::<f32>::try_from(probs.to_device(Device::Cpu).flatten(0, -1))?;
        for (slot, &row) in rows.iter().enumerate() {
            out[row * labels..(row + 1) * labels]
                .copy_from_slice(&values[slot * labels..(slot + 1) * labels]);
        }
    }
    debug_assert!(set.is_empty() || labels > 0);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_k_is_best_first_with_ties_to_the_lower_id() {
        let row = [0.1, 0.4, 0.1, 0.4];
        let top: Vec<usize> = top_k_of(&row, 3).iter().map(|s| s.label).collect();
        assert_eq!(top, [1, 3, 0]);
        assert_eq!(top_k_of(&row, 1)[0].score, 0.4);
    }
}

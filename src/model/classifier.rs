//! [`SequenceClassifier`]: a DistilBERT or BERT encoder with its transformers classification
//! head, in one VarStore whose names are the transformers state-dict names.
//!
//! Loading rules (see docs/model.md):
//! - every encoder tensor must be present with the config's shape;
//! - the head (DistilBERT `pre_classifier` + `classifier`, BERT `bert.pooler.dense` +
//!   `classifier`) may be missing: it then keeps its HF initialisation (normal(0,
//!   initializer_range), zero bias), reported in [`LoadReport`];
//! - a `classifier` whose row count differs from the requested labels (a checkpoint fine-tuned
//!   on another label set) is re-initialised the same way and reported; the rest of the head is
//!   kept. Same row count: the head is kept as is (continuing a fine-tune);
//! - anything else missing, unexpected or mis-shaped is one error listing all of it.

use std::path::{Path, PathBuf};

use tch::{nn, Device, Kind, Tensor};

use super::config::{config_path, HeadKind, ModelConfig, ModelFamily};
use super::layers::{Embedding, Fresh, LayerDims, LayerNames, LayerNorm, Linear, TransformerLayer};
use super::weights::{read_checkpoint, weights_path, write_safetensors, WEIGHTS_FILE};
use super::{ClassifierModel, EncoderSpec, ModelError};

/// What loading did besides copying tensors: fresh heads, ignored extras, renames.
#[derive(Debug, Clone, PartialEq)]
pub struct LoadReport {
    /// The weights file read.
    pub weights_file: PathBuf,
    /// `distilbert` or `bert`.
    pub model_type: String,
    /// Variables that got the HF initialisation instead of checkpoint values.
    pub fresh: Vec<String>,
    /// Why the head (or part of it) is fresh, when it is.
    pub fresh_reason: Option<String>,
    /// Checkpoint tensors skipped on purpose (pretraining heads, `position_ids`).
    pub ignored: Vec<String>,
    /// Legacy LayerNorm `gamma`/`beta` names renamed.
    pub renamed_legacy: usize,
}

impl LoadReport {
    /// True when any head variable was initialised rather than loaded.
    pub fn has_fresh_head(&self) -> bool {
        !self.fresh.is_empty()
    }
}

/// A sequence classifier of either family. See the module docs for the loading rules.
#[derive(Debug)]
pub struct SequenceClassifier {
    vs: nn::VarStore,
    config: ModelConfig,
    id2label: Vec<String>,
    word: Embedding,
    position: Embedding,
    token_type: Option<Embedding>,
    embed_norm: LayerNorm,
    layers: Vec<TransformerLayer>,
    /// DistilBERT `pre_classifier`, BERT `bert.pooler.dense`.
    head_dense: Linear,
    classifier: Linear,
    compute_kind: Option<Kind>,
}

const DISTILBERT_LAYER: LayerNames = LayerNames {
    query: "attention.q_lin",
    key: "attention.k_lin",
    value: "attention.v_lin",
    attn_out: "attention.out_lin",
    attn_norm: "sa_layer_norm",
    ffn_in: "ffn.lin1",
    ffn_out: "ffn.lin2",
    out_norm: "output_layer_norm",
    dropout_after_attention: false,
};

const BERT_LAYER: LayerNames = LayerNames {
    query: "attention.self.query",
    key: "attention.self.key",
    value: "attention.self.value",
    attn_out: "attention.output.dense",
    attn_norm: "attention.output.LayerNorm",
    ffn_in: "intermediate.dense",
    ffn_out: "output.dense",
    out_norm: "output.LayerNorm",
    dropout_after_attention: true,
};

/// Module names of the head that may be missing from a checkpoint.
fn head_dense_name(family: ModelFamily) -> &'static str {
    match family {
        ModelFamily::DistilBert => "pre_classifier",
        ModelFamily::Bert => "bert.pooler.dense",
    }
}

const CLASSIFIER: &str = "classifier";

impl SequenceClassifier {
    /// Builds the graph with placeholder encoder weights and HF-initialised head.
    fn build(config: ModelConfig, id2label: Vec<String>, device: Device) -> Self {
        let spec = config.spec.clone();
        let vs = nn::VarStore::new(device);
        let root = vs.root();
        let family = spec.family;
        let encoder_root = root.sub(family.prefix());
        let (layer_names, layers_path) = match family {
            ModelFamily::DistilBert => (&DISTILBERT_LAYER, "transformer.layer"),
            ModelFamily::Bert => (&BERT_LAYER, "encoder.layer"),
        };
        let h = spec.hidden;
        let word = Embedding::new(
            &encoder_root,
            "embeddings.word_embeddings",
            spec.vocab_size,
            h,
            spec.pad_token_id,
        );
        let position = Embedding::new(
            &encoder_root,
            "embeddings.position_embeddings",
            spec.max_positions,
            h,
            -1,
        );
        let token_type = (family == ModelFamily::Bert && spec.type_vocab_size > 0).then(|| {
            Embedding::new(
                &encoder_root,
                "embeddings.token_type_embeddings",
                spec.type_vocab_size,
                h,
                -1,
            )
        });
        let embed_norm = LayerNorm::new(
            &encoder_root,
            "embeddings.LayerNorm",
            h,
            spec.layer_norm_eps,
        );
        let dims = LayerDims {
            hidden: h,
            heads: spec.heads,
            ffn: spec.ffn,
            eps: spec.layer_norm_eps,
            activation: spec.activation,
            drop_hidden: spec.drop_hidden,
            drop_attn: spec.drop_attn,
        };
        let layers_root = super::layers::sub_path(&encoder_root, layers_path);
        let layers = (0..spec.layers)
            .map(|i| TransformerLayer::new(&layers_root.sub(i), layer_names, dims))
            .collect();
        let init = Fresh::Normal(spec.initializer_range);
        let head_dense = Linear::new(&root, head_dense_name(family), h, h, init);
        let classifier = Linear::new(&root, CLASSIFIER, h, id2label.len() as i64, init);
        SequenceClassifier {
            vs,
            config,
            id2label,
            word,
            position,
            token_type,
            embed_norm,
            layers,
            head_dense,
            classifier,
            compute_kind: None,
        }
    }

    /// Loads `dir` (config.json + model.safetensors) as a classifier for `id2label` (index =
    /// class id) on `device`. See the module docs for how heads are matched.
    pub fn load(
        dir: &Path,
        id2label: &[String],
        device: Device,
    ) -> Result<(SequenceClassifier, LoadReport), ModelError> {
        if id2label.is_empty() {
            return Err(ModelError::Invalid(
                "a classifier needs at least one label; id2label is empty".into(),
            ));
        }
        let cfg_path = config_path(dir);
        if !cfg_path.is_file() {
            return Err(ModelError::Config {
                path: cfg_path,
                reason: "missing; a Hugging Face model directory needs config.json next to model.safetensors".into(),
            });
        }
        let config = ModelConfig::from_file(&cfg_path)?;
        let weights = weights_path(dir)?;
        let family = config.spec.family;
        let checkpoint = read_checkpoint(&weights, family)?;
        let model = Self::build(config, id2label.to_vec(), device);

        let head_dense = head_dense_name(family);
        let is_head = |name: &str| {
            name.starts_with(&format!("{head_dense}.")) || name.starts_with("classifier.")
        };
        let mut missing = Vec::new();
        let mut mismatched = Vec::new();
        let mut fresh = Vec::new();
        let mut fresh_reason: Option<String> = None;
        let mut to_copy = Vec::new();
        let variables = model.vs.variables();
        let mut names: Vec<&String> = variables.keys().collect();
        names.sort();
        // A classifier fine-tuned on a different label count cannot be reused.
        let reinit_classifier = checkpoint
            .tensors
            .get("classifier.weight")
            .map(|w| w.size().first().copied() != Some(id2label.len() as i64))
            .unwrap_or(false);
        if reinit_classifier {
            let rows = checkpoint.tensors["classifier.weight"].size()[0];
            let labels_note = match &model.config.id2label {
                Some(l) => format!(" (its config.json labels: {})", l.join(", ")),
                None => String::new(),
            };
            fresh_reason = Some(format!(
                "the checkpoint's classifier has {rows} outputs{labels_note} but {} labels were asked for; classifier re-initialised",
                id2label.len()
            ));
        }
        for name in names {
            let var = &variables[name];
            match checkpoint.tensors.get(name) {
                Some(_) if reinit_classifier && name.starts_with("classifier.") => {
                    fresh.push(name.clone());
                }
                Some(t) if t.size() != var.size() => mismatched.push(format!(
                    "{name} is {:?} in the file, config.json implies {:?}",
                    t.size(),
                    var.size()
                )),
                Some(t) => to_copy.push((var, t)),
                None if is_head(name) => fresh.push(name.clone()),
                None => missing.push(name.clone()),
            }
        }
        let unexpected: Vec<&String> = checkpoint
            .tensors
            .keys()
            .filter(|n| !variables.contains_key(*n))
            .collect();
        if !missing.is_empty() || !mismatched.is_empty() || !unexpected.is_empty() {
            let mut parts = Vec::new();
            if !missing.is_empty() {
                parts.push(format!("missing: {}", missing.join(", ")));
            }
            if !unexpected.is_empty() {
                let list: Vec<&str> = unexpected.iter().map(|s| s.as_str()).collect();
                parts.push(format!("unexpected: {}", list.join(", ")));
            }
            if !mismatched.is_empty() {
                parts.push(format!("wrong shape: {}", mismatched.join("; ")));
            }
            return Err(ModelError::Mismatch {
                path: checkpoint.path,
                details: parts.join(" | "),
            });
        }
        tch::no_grad(|| -> Result<(), ModelError> {
            for (var, src) in &to_copy {
                // copy_ converts dtype (fp16/bf16 files) and device in one step.
                var.shallow_clone().f_copy_(src)?;
            }
            Ok(())
        })?;
        if !fresh.is_empty() && fresh_reason.is_none() {
            fresh_reason = Some("the checkpoint has no classification head (a base model); head initialised as transformers does".into());
        }
        let report = LoadReport {
            weights_file: checkpoint.path,
            model_type: family.model_type().to_string(),
            fresh,
            fresh_reason,
            ignored: checkpoint.ignored,
            renamed_legacy: checkpoint.renamed_legacy,
        };
        match &report.fresh_reason {
            Some(reason) => tracing::warn!(
                weights = %report.weights_file.display(),
                fresh = %report.fresh.join(", "),
                "{reason}"
            ),
            None => {
                tracing::info!(weights = %report.weights_file.display(), "loaded classifier with its head")
            }
        }
        if !report.ignored.is_empty() {
            tracing::info!(ignored = %report.ignored.join(", "), "ignored tensors classification does not use");
        }
        Ok((model, report))
    }

    /// Writes `dir/model.safetensors` (fp32, HF names, metadata format=pt) and `dir/config.json`
    /// (original config + architectures, model_type, id2label, label2id, problem_type).
    /// Tokenizer files are copied separately (`tokenize::copy_tokenizer_files`).
    pub fn save(&self, dir: &Path) -> Result<(), ModelError> {
        std::fs::create_dir_all(dir).map_err(|e| ModelError::io(dir, e))?;
        write_safetensors(&dir.join(WEIGHTS_FILE), &self.vs.variables())?;
        let cfg = self.config.classifier_json(&self.id2label);
        let text = serde_json::to_string_pretty(&cfg).map_err(|e| ModelError::Config {
            path: config_path(dir),
            reason: format!("cannot serialise: {e}"),
        })?;
        let path = config_path(dir);
        std::fs::write(&path, text + "\n").map_err(|e| ModelError::io(path, e))
    }

    /// Last hidden state `[b, s, hidden]` (fp32) of the encoder, in eval mode.
    pub fn encoder_hidden_states(
        &self,
        input_ids: &Tensor,
        attention_mask: &Tensor,
        token_type_ids: Option<&Tensor>,
    ) -> Tensor {
        self.encode(input_ids, attention_mask, token_type_ids, false)
    }

    /// `[b, s]` ids/mask -> `[b, s, hidden]` fp32.
    fn encode(
        &self,
        input_ids: &Tensor,
        attention_mask: &Tensor,
        token_type_ids: Option<&Tensor>,
        train: bool,
    ) -> Tensor {
        let (b, s) = match input_ids.size()[..] {
            [b, s] => (b, s),
            ref other => panic!("input_ids must be [batch, seq], got {other:?}"),
        };
        let positions = Tensor::arange(s, (Kind::Int64, input_ids.device())).unsqueeze(0); // [1, s]
        let mut emb = self.word.forward(input_ids) + self.position.forward(&positions); // [b, s, h]
        if let Some(token_type) = &self.token_type {
            emb = match token_type_ids {
                Some(t) => emb + token_type.forward(t),
                // All-zero segment ids: row 0 broadcast, without a lookup.
                None => emb + token_type.row(0),
            };
        }
        let mut xs = self
            .embed_norm
            .forward(&emb)
            .dropout(self.config.spec.drop_hidden, train);
        // Built once per forward: [b, 1, 1, s] bool, true = attend (broadcast over heads and
        // query positions inside SDPA).
        let attend = attention_mask.ne(0).view([b, 1, 1, s]);
        for layer in &self.layers {
            xs = layer.forward(&xs, &attend, train, self.compute_kind);
        }
        xs
    }

    /// The longest sequence (incl. [CLS]/[SEP]) the position embedding covers.
    pub fn max_positions(&self) -> usize {
        self.config.spec.max_positions as usize
    }

    /// Number of classes (= `id2label.len()`).
    pub fn num_labels(&self) -> usize {
        self.id2label.len()
    }

    /// The class names by id.
    pub fn id2label(&self) -> &[String] {
        &self.id2label
    }

    /// True for BERT (segment embeddings); DistilBERT ignores token type ids.
    pub fn uses_token_type_ids(&self) -> bool {
        self.token_type.is_some()
    }

    /// `distilbert` or `bert`.
    pub fn model_type(&self) -> &'static str {
        self.config.spec.family.model_type()
    }

    /// The normalised architecture numbers.
    pub fn spec(&self) -> &EncoderSpec {
        &self.config.spec
    }

    /// Mixed precision: `Some(BFloat16 | Half)` runs linear layers and attention in that dtype;
    /// LayerNorm, softmax statistics of the residual stream and the returned logits stay fp32.
    /// `None` or `Some(Float)` is plain fp32.
    pub fn set_compute_kind(&mut self, kind: Option<Kind>) {
        self.compute_kind = kind.filter(|k| *k != Kind::Float);
    }

    /// The current compute dtype (`None` = fp32).
    pub fn compute_kind(&self) -> Option<Kind> {
        self.compute_kind
    }
}

impl ClassifierModel for SequenceClassifier {
    fn forward_t(
        &self,
        input_ids: &Tensor,
        attention_mask: &Tensor,
        token_type_ids: Option<&Tensor>,
        train: bool,
    ) -> Tensor {
        let hidden = self.encode(input_ids, attention_mask, token_type_ids, train);
        let cls = hidden.select(1, 0); // [b, h]
        let kind = self.compute_kind;
        let spec = &self.config.spec;
        let pooled = self.head_dense.forward(&cls, kind);
        let pooled = match spec.head {
            HeadKind::PreClassifierRelu => pooled.relu(),
            HeadKind::PoolerTanh => pooled.tanh(),
        };
        let pooled = pooled.dropout(spec.drop_head, train);
        self.classifier.forward(&pooled, kind).to_kind(Kind::Float) // [b, num_labels]
    }

    fn var_store(&self) -> &nn::VarStore {
        &self.vs
    }

    fn var_store_mut(&mut self) -> &mut nn::VarStore {
        &mut self.vs
    }

    fn input_table(&self) -> Option<String> {
        Some(format!(
            "{}.embeddings.word_embeddings.weight",
            self.config.spec.family.prefix()
        ))
    }

    fn set_sparse_input_grad(&mut self, sparse: bool) {
        self.word.sparse_grad = sparse;
    }
}

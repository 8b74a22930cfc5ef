//! [`SequenceClassifier`]: a DistilBERT or BERT encoder with its transformers classification
//! head, in one VarStore whose names are the transformers state-dict names.
//!
//! Loading rules (see docs/model.md):
//! - every encoder tensor must be present with the config's shape;
//! - the head (DistilBERT `pre_classifier` + `classifier`, BERT `bert.pooler.dense` +
//!   `classifier`) may be missing: it then keeps its HF initialisation (normal(0,
//!   initializer_range), zero bias), reported in [`LoadReport`];
//! - a `classifier` of a checkpoint fine-tuned before is matched to the requested labels by
//!   label name ([`super::warm_start`]): kept labels keep their rows, new labels get fresh rows,
//!   removed labels' rows are dropped; never by position. `warm_start=encoder` initialises the
//!   head (everything outside `distilbert.`/`bert.`) fresh instead;
//! - anything else missing, unexpected or mis-shaped is one error listing all of it.
//!
//! [`check_model_dir`] applies the same rules to the safetensors header alone (the dry run).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use tch::{nn, Device, Kind, Tensor};

use super::config::{config_path, HeadKind, ModelConfig, ModelFamily};
use super::layers::{Embedding, Fresh, LayerDims, LayerNames, LayerNorm, Linear, TransformerLayer};
use super::warm_start::{match_head, HeadMatch, HeadOrigin};
use super::weights::{read_checkpoint, read_header, weights_path, write_safetensors, WEIGHTS_FILE};
use super::{ClassifierModel, EncoderSpec, ModelError};
use crate::hyperparams::WarmStart;

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
    /// How the checkpoint's classifier rows map onto the requested labels.
    pub head: HeadMatch,
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
    /// class id) on `device`, reusing a classifier head by label name (`warm_start=auto`).
    pub fn load(
        dir: &Path,
        id2label: &[String],
        device: Device,
    ) -> Result<(SequenceClassifier, LoadReport), ModelError> {
        Self::load_with(dir, id2label, device, WarmStart::Auto)
    }

    /// [`SequenceClassifier::load`] under a `warm_start` setting. See the module docs for how
    /// heads are matched.
    pub fn load_with(
        dir: &Path,
        id2label: &[String],
        device: Device,
        warm_start: WarmStart,
    ) -> Result<(SequenceClassifier, LoadReport), ModelError> {
        let config = read_config(dir, id2label)?;
        let weights = weights_path(dir)?;
        let family = config.spec.family;
        let checkpoint = read_checkpoint(&weights, family)?;
        let found: BTreeMap<String, Vec<i64>> = checkpoint
            .tensors
            .iter()
            .map(|(name, t)| (name.clone(), t.size()))
            .collect();
        let plan = plan_load(&config, &found, id2label, warm_start, &checkpoint.path)?;
        let model = Self::build(config, id2label.to_vec(), device);
        let variables = model.vs.variables();
        tch::no_grad(|| -> Result<(), ModelError> {
            for name in &plan.copy {
                // copy_ converts dtype (fp16/bf16 files) and device in one step.
                variables[name]
                    .shallow_clone()
                    .f_copy_(&checkpoint.tensors[name])?;
            }
            for suffix in ["weight", "bias"] {
                let name = format!("{CLASSIFIER}.{suffix}");
                let (var, src) = (&variables[&name], &checkpoint.tensors.get(&name));
                for &(old_row, new_row) in &plan.head.rows {
                    if let Some(src) = src {
                        var.get(new_row as i64).f_copy_(&src.get(old_row as i64))?;
                    }
                }
            }
            Ok(())
        })?;
        let report = LoadReport {
            weights_file: checkpoint.path,
            model_type: family.model_type().to_string(),
            fresh: plan.fresh,
            fresh_reason: plan.fresh_reason,
            ignored: checkpoint.ignored,
            renamed_legacy: checkpoint.renamed_legacy,
            head: plan.head,
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
        if !report.head.kept.is_empty() {
            tracing::info!(
                kept = %report.head.kept.join(", "),
                added = %report.head.added.join(", "),
                removed = %report.head.removed.join(", "),
                "classifier rows matched to this run's labels by name"
            );
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
        self.encode(input_ids, attention_mask, token_type_ids, false, false)
    }

    /// `[b, s]` ids/mask -> `[b, s, hidden]` fp32, or `[b, 1, hidden]` (the [CLS] position)
    /// when `first_only`: the last layer then computes that position alone.
    fn encode(
        &self,
        input_ids: &Tensor,
        attention_mask: &Tensor,
        token_type_ids: Option<&Tensor>,
        train: bool,
        first_only: bool,
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
        let last = self.layers.len().saturating_sub(1);
        for (i, layer) in self.layers.iter().enumerate() {
            xs = if first_only && i == last {
                layer.forward_first(&xs, &attend, train, self.compute_kind)
            } else {
                layer.forward(&xs, &attend, train, self.compute_kind)
            };
        }
        if first_only && self.layers.is_empty() {
            xs = xs.narrow(1, 0, 1);
        }
        xs
    }

    /// The classifier layer's input `[b, h]`: [CLS] through `pre_classifier` + ReLU (DistilBERT)
    /// or the pooler's dense + tanh (BERT), before the head's dropout.
    fn pooled(
        &self,
        input_ids: &Tensor,
        attention_mask: &Tensor,
        token_type_ids: Option<&Tensor>,
        train: bool,
    ) -> Tensor {
        // The head reads [CLS] only, so the last layer computes that position alone.
        let hidden = self.encode(input_ids, attention_mask, token_type_ids, train, true);
        let cls = hidden.select(1, 0); // [b, h]
        let pooled = self.head_dense.forward(&cls, self.compute_kind);
        match self.config.spec.head {
            HeadKind::PreClassifierRelu => pooled.relu(),
            HeadKind::PoolerTanh => pooled.tanh(),
        }
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

    /// For serving only: every linear layer's weights kept in `kind` (bf16 halves the bytes a
    /// forward reads, which bounds a small batch's speed on a CPU) and computed in it;
    /// embeddings and LayerNorms stay fp32. Not for training: the fp32 master weights are gone.
    pub fn serve_in(&mut self, kind: Kind) {
        for layer in &mut self.layers {
            layer.store_linears_in(kind);
        }
        self.head_dense.store_in(kind);
        self.classifier.store_in(kind);
        self.set_compute_kind(Some(kind));
    }

    /// For CPU serving only: the encoder's linear layers in packed int8 with fp32 activations
    /// (dynamic quantisation); embeddings, LayerNorms and the small classification head stay
    /// fp32, so the scores move by about a hundredth. Not for training.
    pub fn serve_in_int8(&mut self) -> Result<(), ModelError> {
        self.set_compute_kind(None);
        for layer in &mut self.layers {
            layer.quantize_linears_int8()?;
        }
        Ok(())
    }
}

/// Reads `dir/config.json` for a classifier of `id2label`.
fn read_config(dir: &Path, id2label: &[String]) -> Result<ModelConfig, ModelError> {
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
    ModelConfig::from_file(&cfg_path)
}

/// Every variable [`SequenceClassifier::build`] creates for `spec` and `num_labels`, with its
/// shape, computed without allocating anything (the dry run checks headers against it).
fn expected_shapes(spec: &EncoderSpec, num_labels: i64) -> BTreeMap<String, Vec<i64>> {
    let family = spec.family;
    let (names, layers_path) = match family {
        ModelFamily::DistilBert => (&DISTILBERT_LAYER, "transformer.layer"),
        ModelFamily::Bert => (&BERT_LAYER, "encoder.layer"),
    };
    let (h, ffn) = (spec.hidden, spec.ffn);
    let mut out = BTreeMap::new();
    let mut linear = |name: String, rows: i64, cols: i64| {
        out.insert(format!("{name}.weight"), vec![rows, cols]);
        out.insert(format!("{name}.bias"), vec![rows]);
    };
    let p = family.prefix();
    for i in 0..spec.layers {
        let layer = format!("{p}.{layers_path}.{i}");
        for part in [names.query, names.key, names.value, names.attn_out] {
            linear(format!("{layer}.{part}"), h, h);
        }
        linear(format!("{layer}.{}", names.ffn_in), ffn, h);
        linear(format!("{layer}.{}", names.ffn_out), h, ffn);
    }
    linear(head_dense_name(family).to_string(), h, h);
    linear(CLASSIFIER.to_string(), num_labels, h);
    let mut norm = |name: String| {
        out.insert(format!("{name}.weight"), vec![h]);
        out.insert(format!("{name}.bias"), vec![h]);
    };
    norm(format!("{p}.embeddings.LayerNorm"));
    for i in 0..spec.layers {
        let layer = format!("{p}.{layers_path}.{i}");
        norm(format!("{layer}.{}", names.attn_norm));
        norm(format!("{layer}.{}", names.out_norm));
    }
    let emb = |name: &str| format!("{p}.embeddings.{name}.weight");
    out.insert(emb("word_embeddings"), vec![spec.vocab_size, h]);
    out.insert(emb("position_embeddings"), vec![spec.max_positions, h]);
    if family == ModelFamily::Bert && spec.type_vocab_size > 0 {
        out.insert(emb("token_type_embeddings"), vec![spec.type_vocab_size, h]);
    }
    out
}

/// What loading a checkpoint will do, decided from names and shapes only.
struct LoadPlan {
    /// Variables copied whole from the checkpoint.
    copy: Vec<String>,
    /// Variables (or classifier rows) left at their fresh initialisation.
    fresh: Vec<String>,
    fresh_reason: Option<String>,
    head: HeadMatch,
}

/// Matches a checkpoint's tensors (`found`: name -> shape) to the classifier `config` describes
/// for `id2label`; every missing, unexpected and mis-shaped tensor is one error.
fn plan_load(
    config: &ModelConfig,
    found: &BTreeMap<String, Vec<i64>>,
    id2label: &[String],
    warm_start: WarmStart,
    weights: &Path,
) -> Result<LoadPlan, ModelError> {
    let spec = &config.spec;
    let family = spec.family;
    let expected = expected_shapes(spec, id2label.len() as i64);
    let encoder_prefix = format!("{}.", family.prefix());
    let head_dense = format!("{}.", head_dense_name(family));
    let classifier = format!("{CLASSIFIER}.");
    let mut missing = Vec::new();
    let mut mismatched = Vec::new();
    let mut wrong_shape = |name: &str, file: &[i64], wanted: String| {
        mismatched.push(format!(
            "{name} is {file:?} in the file, config.json implies {wanted}"
        ))
    };

    // The classifier's rows are matched by label, so only its width is checked here.
    let weight = found.get("classifier.weight");
    let bias = found.get("classifier.bias");
    let rows = match (weight, bias) {
        (Some(w), Some(b)) if w.len() == 2 && w[1] == spec.hidden && b[..] == [w[0]] => {
            Some(w[0] as usize)
        }
        (None, None) => None,
        (w, b) => {
            if let Some(w) = w {
                wrong_shape(
                    "classifier.weight",
                    w,
                    format!("[num_labels, {}]", spec.hidden),
                );
            }
            if let Some(b) = b {
                wrong_shape(
                    "classifier.bias",
                    b,
                    "[num_labels] (as many as classifier.weight rows)".into(),
                );
            }
            if w.is_none() || b.is_none() {
                missing.push(format!(
                    "classifier.{} (the file has only one of classifier.weight and classifier.bias)",
                    if w.is_none() { "weight" } else { "bias" }
                ));
            }
            None
        }
    };
    let head = match_head(warm_start, config.id2label.as_deref(), rows, id2label);

    let mut copy = Vec::new();
    let mut fresh = Vec::new();
    for (name, shape) in &expected {
        if name.starts_with(&classifier) {
            if head.is_fresh() {
                fresh.push(name.clone());
            } else if !head.added.is_empty() {
                fresh.push(format!("{name} (rows of {})", head.added.join(", ")));
            }
            continue;
        }
        let is_head = !name.starts_with(&encoder_prefix);
        if is_head && warm_start == WarmStart::Encoder {
            fresh.push(name.clone());
            continue;
        }
        match found.get(name) {
            Some(file) if file != shape => wrong_shape(name, file, format!("{shape:?}")),
            Some(_) => copy.push(name.clone()),
            None if name.starts_with(&head_dense) => fresh.push(name.clone()),
            None => missing.push(name.clone()),
        }
    }
    let unexpected: Vec<&str> = found
        .keys()
        .filter(|n| !expected.contains_key(*n))
        .map(String::as_str)
        .collect();
    if !missing.is_empty() || !mismatched.is_empty() || !unexpected.is_empty() {
        let missing = group_whole_layers(missing, &expected);
        // Shapes first: the failure file is length-limited and they say the most.
        let mut parts = Vec::new();
        if !mismatched.is_empty() {
            parts.push(format!("wrong shape: {}", mismatched.join("; ")));
        }
        if !missing.is_empty() {
            parts.push(format!("missing: {}", missing.join(", ")));
        }
        if !unexpected.is_empty() {
            parts.push(format!("unexpected: {}", unexpected.join(", ")));
        }
        return Err(ModelError::Mismatch {
            path: weights.to_path_buf(),
            details: parts.join(" | "),
        });
    }
    let fresh_reason = match fresh.is_empty() {
        true => None,
        false => Some(head.reason.clone().unwrap_or_else(|| {
            format!(
                "the checkpoint has no {}; initialised as transformers does",
                fresh.join(", ")
            )
        })),
    };
    Ok(LoadPlan {
        copy,
        fresh,
        fresh_reason,
        head,
    })
}

/// `missing` with every wholly missing transformer layer written once as `<layer>.*` (a
/// config.json with more layers than the file would otherwise list dozens of names).
fn group_whole_layers(missing: Vec<String>, expected: &BTreeMap<String, Vec<i64>>) -> Vec<String> {
    let layer_of = |name: &str| -> Option<String> {
        let at = name.find(".layer.")? + ".layer.".len();
        let digits = name[at..].find('.')?;
        Some(name[..at + digits + 1].to_string())
    };
    let mut out = Vec::new();
    let mut grouped = std::collections::BTreeSet::new();
    for name in &missing {
        match layer_of(name) {
            Some(layer)
                if expected
                    .keys()
                    .filter(|n| n.starts_with(&layer))
                    .all(|n| missing.contains(n)) =>
            {
                if grouped.insert(layer.clone()) {
                    out.push(format!("{layer}* (the whole layer)"));
                }
            }
            _ => out.push(name.clone()),
        }
    }
    out
}

/// What the dry run found in a model directory, without loading any weight.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelCheck {
    /// The weights file whose header was read.
    pub weights_file: PathBuf,
    /// The normalised architecture of `config.json`.
    pub spec: EncoderSpec,
    /// Tensors the header lists that the classifier uses.
    pub tensors: usize,
    /// How the head would be matched to the labels.
    pub head: HeadMatch,
}

/// Checks `dir` as [`SequenceClassifier::load_with`] would, reading only `config.json` and the
/// safetensors header: config parses, every tensor is present with the shape the config implies
/// (hidden size, vocabulary, layers), and how the head maps onto `id2label`.
pub fn check_model_dir(
    dir: &Path,
    id2label: &[String],
    warm_start: WarmStart,
) -> Result<ModelCheck, ModelError> {
    let config = read_config(dir, id2label)?;
    let weights = weights_path(dir)?;
    let header = read_header(&weights, config.spec.family)?;
    let plan = plan_load(&config, &header.shapes, id2label, warm_start, &header.path)?;
    Ok(ModelCheck {
        weights_file: header.path,
        spec: config.spec,
        tensors: header.shapes.len(),
        head: plan.head,
    })
}

/// The labels of `dir`'s classification head in row order, when the checkpoint is a classifier
/// whose every row its config's `id2label` names (what warm start matches by name); `None` for a
/// base model, or a head whose rows cannot be named. Reads config.json and the header only.
pub fn classifier_labels(dir: &Path) -> Result<Option<Vec<String>>, ModelError> {
    let cfg_path = config_path(dir);
    let Some(labels) = ModelConfig::from_file(&cfg_path)?.id2label else {
        return Ok(None);
    };
    if labels.is_empty() {
        return Ok(None);
    }
    let check = check_model_dir(dir, &labels, WarmStart::Auto)?;
    let named = check.head.head == HeadOrigin::ByLabel && check.head.added.is_empty();
    Ok(named.then_some(labels))
}

impl ClassifierModel for SequenceClassifier {
    fn forward_t(
        &self,
        input_ids: &Tensor,
        attention_mask: &Tensor,
        token_type_ids: Option<&Tensor>,
        train: bool,
    ) -> Tensor {
        let pooled = self
            .pooled(input_ids, attention_mask, token_type_ids, train)
            .dropout(self.config.spec.drop_head, train);
        self.classifier
            .forward(&pooled, self.compute_kind)
            .to_kind(Kind::Float) // [b, num_labels]
    }

    fn head_features(
        &self,
        input_ids: &Tensor,
        attention_mask: &Tensor,
        token_type_ids: Option<&Tensor>,
    ) -> Option<Tensor> {
        Some(
            self.pooled(input_ids, attention_mask, token_type_ids, false)
                .to_kind(Kind::Float),
        )
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

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture_config(name: &str) -> ModelConfig {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures")
            .join(name)
            .join("config.json");
        ModelConfig::from_file(&path).unwrap()
    }

    #[test]
    fn expected_shapes_are_what_build_creates() {
        for name in ["tiny-distilbert", "tiny-bert"] {
            let config = fixture_config(name);
            let expected = expected_shapes(&config.spec, 5);
            let labels: Vec<String> = (0..5).map(|i| format!("L{i}")).collect();
            let model = SequenceClassifier::build(config, labels, Device::Cpu);
            let built: BTreeMap<String, Vec<i64>> = model
                .vs
                .variables()
                .into_iter()
                .map(|(n, t)| (n, t.size()))
                .collect();
            assert_eq!(expected, built, "{name}");
        }
    }

    #[test]
    fn the_header_check_agrees_with_loading() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny-bert");
        let labels: Vec<String> = ["groceries", "rent", "income"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let check = check_model_dir(&dir, &labels, WarmStart::Auto).unwrap();
        let (_, report) = SequenceClassifier::load(&dir, &labels, Device::Cpu).unwrap();
        assert_eq!(check.head, report.head);
        assert_eq!(check.head.kept, ["groceries", "income"]);
        assert_eq!(check.head.removed, ["transport"]);
        assert_eq!(check.spec.family, ModelFamily::Bert);
    }

    #[test]
    fn classifier_labels_name_the_head_rows_in_order() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny-bert");
        let labels = classifier_labels(&dir).unwrap();
        assert_eq!(
            labels,
            Some(vec![
                "groceries".into(),
                "transport".into(),
                "income".into()
            ])
        );
    }
}

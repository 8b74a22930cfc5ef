//! `config.json` of a DistilBERT or BERT checkpoint, normalised into one [`EncoderSpec`].
//!
//! Missing keys take the transformers defaults of the family's config class, as
//! `from_pretrained` would; a key that is present with the wrong type is an error. The raw JSON
//! is kept so `save` can write the original config back with only the head keys changed.

use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use super::ModelError;

/// The two supported architectures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelFamily {
    /// `model_type: distilbert`.
    DistilBert,
    /// `model_type: bert` (also MiniLM and other BERT-architecture checkpoints).
    Bert,
}

impl ModelFamily {
    /// The `model_type` string transformers uses.
    pub fn model_type(self) -> &'static str {
        match self {
            ModelFamily::DistilBert => "distilbert",
            ModelFamily::Bert => "bert",
        }
    }

    /// The `architectures` entry of a saved classifier.
    pub fn classifier_architecture(self) -> &'static str {
        match self {
            ModelFamily::DistilBert => "DistilBertForSequenceClassification",
            ModelFamily::Bert => "BertForSequenceClassification",
        }
    }

    /// Prefix of the encoder tensors in task checkpoints.
    pub fn prefix(self) -> &'static str {
        self.model_type()
    }
}

/// Feed-forward activation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    /// Exact (erf) GELU: transformers' `gelu`.
    Gelu,
    /// Tanh-approximated GELU: `gelu_new`, `gelu_pytorch_tanh`.
    GeluTanh,
    /// `relu`.
    Relu,
    /// `silu` / `swish`.
    Silu,
}

/// The classification head of the family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeadKind {
    /// DistilBERT: hidden[0] -> pre_classifier -> ReLU -> dropout -> classifier.
    PreClassifierRelu,
    /// BERT: tanh(pooler.dense(hidden[0])) -> dropout -> classifier.
    PoolerTanh,
}

/// Architecture numbers of either family under one set of names.
#[derive(Debug, Clone, PartialEq)]
pub struct EncoderSpec {
    /// Which architecture.
    pub family: ModelFamily,
    /// Rows of the word embedding.
    pub vocab_size: i64,
    /// Hidden size (`dim` / `hidden_size`).
    pub hidden: i64,
    /// Number of transformer layers.
    pub layers: i64,
    /// Attention heads.
    pub heads: i64,
    /// Feed-forward inner size (`hidden_dim` / `intermediate_size`).
    pub ffn: i64,
    /// Feed-forward activation.
    pub activation: Activation,
    /// LayerNorm epsilon (DistilBERT: always 1e-12).
    pub layer_norm_eps: f64,
    /// Dropout on embeddings and block outputs.
    pub drop_hidden: f64,
    /// Dropout on attention probabilities.
    pub drop_attn: f64,
    /// Dropout before the classifier.
    pub drop_head: f64,
    /// Rows of the position embedding: the longest sequence the model takes.
    pub max_positions: i64,
    /// Rows of the token-type embedding (0 for DistilBERT).
    pub type_vocab_size: i64,
    /// Padding token id (`padding_idx` of the word embedding).
    pub pad_token_id: i64,
    /// Std of the normal init of fresh heads.
    pub initializer_range: f64,
    /// The head.
    pub head: HeadKind,
}

/// A parsed `config.json`.
#[derive(Debug, Clone)]
pub(crate) struct ModelConfig {
    pub spec: EncoderSpec,
    /// The original JSON object, written back on save.
    pub raw: Map<String, Value>,
    /// `id2label` of the config, by index, when it has one.
    pub id2label: Option<Vec<String>>,
}

struct Reader<'a> {
    path: &'a Path,
    raw: &'a Map<String, Value>,
}

impl Reader<'_> {
    fn err(&self, reason: String) -> ModelError {
        ModelError::Config {
            path: self.path.to_path_buf(),
            reason,
        }
    }

    /// First present key of `keys` (the canonical name, then transformers' aliases).
    fn find<'k>(&self, keys: &[&'k str]) -> Option<(&'k str, &Value)> {
        keys.iter().find_map(|k| match self.raw.get(*k) {
            Some(Value::Null) | None => None,
            Some(v) => Some((*k, v)),
        })
    }

    fn int(&self, keys: &[&str], default: i64) -> Result<i64, ModelError> {
        match self.find(keys) {
            None => Ok(default),
            Some((k, v)) => v.as_i64().filter(|n| *n >= 0).ok_or_else(|| {
                self.err(format!(
                    "key `{k}` must be a non-negative integer, found {v}"
                ))
            }),
        }
    }

    fn positive(&self, keys: &[&str], default: i64) -> Result<i64, ModelError> {
        let n = self.int(keys, default)?;
        if n == 0 {
            return Err(self.err(format!("key `{}` must be at least 1", keys[0])));
        }
        Ok(n)
    }

    fn float(&self, keys: &[&str], default: f64) -> Result<f64, ModelError> {
        match self.find(keys) {
            None => Ok(default),
            Some((k, v)) => v
                .as_f64()
                .ok_or_else(|| self.err(format!("key `{k}` must be a number, found {v}"))),
        }
    }

    fn prob(&self, keys: &[&str], default: f64) -> Result<f64, ModelError> {
        let p = self.float(keys, default)?;
        if !(0.0..1.0).contains(&p) {
            return Err(self.err(format!(
                "key `{}` must be a probability in [0, 1), found {p}",
                keys[0]
            )));
        }
        Ok(p)
    }

    fn string(&self, keys: &[&str], default: &str) -> Result<String, ModelError> {
        match self.find(keys) {
            None => Ok(default.to_string()),
            Some((k, v)) => v
                .as_str()
                .map(str::to_string)
                .ok_or_else(|| self.err(format!("key `{k}` must be a string, found {v}"))),
        }
    }

    fn activation(&self, keys: &[&str]) -> Result<Activation, ModelError> {
        let name = self.string(keys, "gelu")?;
        match name.as_str() {
            "gelu" => Ok(Activation::Gelu),
            "gelu_new" | "gelu_pytorch_tanh" | "gelu_fast" => Ok(Activation::GeluTanh),
            "relu" => Ok(Activation::Relu),
            "silu" | "swish" => Ok(Activation::Silu),
            other => Err(self.err(format!(
                "key `{}` = `{other}` is not supported; use gelu, gelu_new, relu or silu",
                keys[0]
            ))),
        }
    }
}

fn family_of(path: &Path, raw: &Map<String, Value>) -> Result<ModelFamily, ModelError> {
    let model_type = raw.get("model_type").and_then(Value::as_str);
    match model_type {
        Some("distilbert") => Ok(ModelFamily::DistilBert),
        Some("bert") => Ok(ModelFamily::Bert),
        Some(other) => Err(ModelError::Config {
            path: path.to_path_buf(),
            reason: format!(
                "unsupported model_type `{other}`; txcat fine-tunes `distilbert` and `bert` checkpoints only"
            ),
        }),
        None => {
            // Very old configs carry no model_type; transformers then guesses from the name.
            let arch = raw
                .get("architectures")
                .and_then(Value::as_array)
                .and_then(|a| a.first())
                .and_then(Value::as_str)
                .unwrap_or("");
            if arch.starts_with("DistilBert") {
                Ok(ModelFamily::DistilBert)
            } else if arch.starts_with("Bert") {
                Ok(ModelFamily::Bert)
            } else {
                Err(ModelError::Config {
                    path: path.to_path_buf(),
                    reason: "no `model_type`; add \"model_type\": \"distilbert\" or \"bert\"".into(),
                })
            }
        }
    }
}

fn parse_id2label(reader: &Reader<'_>) -> Result<Option<Vec<String>>, ModelError> {
    let Some(Value::Object(map)) = reader.raw.get("id2label") else {
        return Ok(None);
    };
    let mut pairs = Vec::with_capacity(map.len());
    for (k, v) in map {
        let index: usize = k
            .parse()
            .map_err(|_| reader.err(format!("id2label key `{k}` is not an integer")))?;
        let label = v
            .as_str()
            .ok_or_else(|| reader.err(format!("id2label[{k}] must be a string, found {v}")))?;
        pairs.push((index, label.to_string()));
    }
    pairs.sort();
    if pairs.iter().enumerate().any(|(i, (index, _))| i != *index) {
        return Err(reader.err("id2label keys must be 0..n-1".into()));
    }
    Ok(Some(pairs.into_iter().map(|(_, l)| l).collect()))
}

impl ModelConfig {
    /// Reads and validates `path` (a `config.json`).
    pub fn from_file(path: &Path) -> Result<Self, ModelError> {
        let text = std::fs::read_to_string(path).map_err(|e| ModelError::io(path, e))?;
        Self::from_json_str(&text, path)
    }

    /// Parses config JSON text; `path` only names the file in errors.
    pub fn from_json_str(text: &str, path: &Path) -> Result<Self, ModelError> {
        let value: Value = serde_json::from_str(text).map_err(|e| ModelError::Config {
            path: path.to_path_buf(),
            reason: format!("not valid JSON: {e}"),
        })?;
        let Value::Object(raw) = value else {
            return Err(ModelError::Config {
                path: path.to_path_buf(),
                reason: "must be a JSON object".into(),
            });
        };
        let family = family_of(path, &raw)?;
        let r = Reader { path, raw: &raw };
        let spec = match family {
            ModelFamily::DistilBert => {
                if r.raw.get("sinusoidal_pos_embds").and_then(Value::as_bool) == Some(true) {
                    // The sinusoidal table is stored in the checkpoint like a learned one, so
                    // loading is the same; only a fresh model would differ.
                    tracing::debug!("{}: sinusoidal position embeddings", path.display());
                }
                EncoderSpec {
                    family,
                    vocab_size: r.positive(&["vocab_size"], 30522)?,
                    hidden: r.positive(&["dim", "hidden_size"], 768)?,
                    layers: r.positive(&["n_layers", "num_hidden_layers"], 6)?,
                    heads: r.positive(&["n_heads", "num_attention_heads"], 12)?,
                    ffn: r.positive(&["hidden_dim", "intermediate_size"], 3072)?,
                    activation: r.activation(&["activation"])?,
                    layer_norm_eps: 1e-12,
                    drop_hidden: r.prob(&["dropout"], 0.1)?,
                    drop_attn: r.prob(&["attention_dropout"], 0.1)?,
                    drop_head: r.prob(&["seq_classif_dropout"], 0.2)?,
                    max_positions: r.positive(&["max_position_embeddings"], 512)?,
                    type_vocab_size: 0,
                    pad_token_id: r.int(&["pad_token_id"], 0)?,
                    initializer_range: r.float(&["initializer_range"], 0.02)?,
                    head: HeadKind::PreClassifierRelu,
                }
            }
            ModelFamily::Bert => {
                let position = r.string(&["position_embedding_type"], "absolute")?;
                if position != "absolute" {
                    return Err(r.err(format!(
                        "position_embedding_type `{position}` is not supported; only `absolute` is"
                    )));
                }
                let drop_hidden = r.prob(&["hidden_dropout_prob"], 0.1)?;
                EncoderSpec {
                    family,
                    vocab_size: r.positive(&["vocab_size"], 30522)?,
                    hidden: r.positive(&["hidden_size"], 768)?,
                    layers: r.positive(&["num_hidden_layers"], 12)?,
                    heads: r.positive(&["num_attention_heads"], 12)?,
                    ffn: r.positive(&["intermediate_size"], 3072)?,
                    activation: r.activation(&["hidden_act"])?,
                    layer_norm_eps: r.float(&["layer_norm_eps"], 1e-12)?,
                    drop_hidden,
                    drop_attn: r.prob(&["attention_probs_dropout_prob"], 0.1)?,
                    drop_head: r.prob(&["classifier_dropout"], drop_hidden)?,
                    max_positions: r.positive(&["max_position_embeddings"], 512)?,
                    type_vocab_size: r.int(&["type_vocab_size"], 2)?,
                    pad_token_id: r.int(&["pad_token_id"], 0)?,
                    initializer_range: r.float(&["initializer_range"], 0.02)?,
                    head: HeadKind::PoolerTanh,
                }
            }
        };
        if spec.hidden % spec.heads != 0 {
            return Err(r.err(format!(
                "hidden size {} is not a multiple of the {} attention heads",
                spec.hidden, spec.heads
            )));
        }
        if spec.pad_token_id >= spec.vocab_size {
            return Err(r.err(format!(
                "pad_token_id {} is outside the vocabulary of {}",
                spec.pad_token_id, spec.vocab_size
            )));
        }
        let id2label = parse_id2label(&r)?;
        Ok(ModelConfig {
            spec,
            raw,
            id2label,
        })
    }

    /// The config to save with a classifier for `id2label`: the original keys, with the
    /// architecture, labels and problem type set as transformers writes them.
    pub fn classifier_json(&self, id2label: &[String]) -> Value {
        let mut out = self.raw.clone();
        let family = self.spec.family;
        out.insert(
            "architectures".into(),
            Value::Array(vec![Value::String(family.classifier_architecture().into())]),
        );
        out.insert(
            "model_type".into(),
            Value::String(family.model_type().into()),
        );
        let id2label_json: Map<String, Value> = id2label
            .iter()
            .enumerate()
            .map(|(i, l)| (i.to_string(), Value::String(l.clone())))
            .collect();
        let label2id_json: Map<String, Value> = id2label
            .iter()
            .enumerate()
            .map(|(i, l)| (l.clone(), Value::from(i)))
            .collect();
        out.insert("id2label".into(), Value::Object(id2label_json));
        out.insert("label2id".into(), Value::Object(label2id_json));
        out.insert(
            "problem_type".into(),
            Value::String("single_label_classification".into()),
        );
        // Keys that would contradict id2label when transformers reads the file back.
        for key in ["num_labels", "_num_labels"] {
            if out.contains_key(key) {
                out.insert(key.into(), Value::from(id2label.len()));
            }
        }
        // Weights are saved as fp32; a stale fp16 dtype would make transformers downcast.
        out.insert("dtype".into(), Value::String("float32".into()));
        if out.contains_key("torch_dtype") {
            out.insert("torch_dtype".into(), Value::String("float32".into()));
        }
        Value::Object(out)
    }
}

/// Path of `config.json` in `dir`.
pub(crate) fn config_path(dir: &Path) -> PathBuf {
    dir.join("config.json")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<ModelConfig, ModelError> {
        ModelConfig::from_json_str(text, Path::new("config.json"))
    }

    #[test]
    fn distilbert_aliases_and_fixed_eps() {
        let c = parse(r#"{"model_type":"distilbert","hidden_size":64,"num_attention_heads":4,"num_hidden_layers":3,"layer_norm_eps":1e-5}"#).unwrap();
        assert_eq!((c.spec.hidden, c.spec.heads, c.spec.layers), (64, 4, 3));
        assert_eq!(c.spec.layer_norm_eps, 1e-12);
        assert_eq!(c.spec.drop_head, 0.2);
    }

    #[test]
    fn bert_classifier_dropout_falls_back_to_hidden() {
        let c =
            parse(r#"{"model_type":"bert","hidden_dropout_prob":0.3,"classifier_dropout":null}"#)
                .unwrap();
        assert_eq!(c.spec.drop_head, 0.3);
        let c = parse(r#"{"model_type":"bert","classifier_dropout":0.05}"#).unwrap();
        assert_eq!(c.spec.drop_head, 0.05);
    }

    #[test]
    fn rejects_unsupported_settings() {
        let err = parse(r#"{"model_type":"roberta"}"#)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("roberta") && err.contains("distilbert"),
            "{err}"
        );
        let err = parse(r#"{"model_type":"bert","position_embedding_type":"relative_key"}"#)
            .unwrap_err()
            .to_string();
        assert!(err.contains("relative_key"), "{err}");
        let err = parse(r#"{"model_type":"bert","hidden_size":"big"}"#)
            .unwrap_err()
            .to_string();
        assert!(err.contains("hidden_size"), "{err}");
        assert!(
            parse(r#"{"model_type":"bert","hidden_size":30,"num_attention_heads":4}"#).is_err()
        );
    }

    #[test]
    fn classifier_json_sets_labels_with_string_keys() {
        let c = parse(r#"{"model_type":"bert","architectures":["BertModel"],"_num_labels":2,"torch_dtype":"float16"}"#).unwrap();
        let labels = vec!["a".to_string(), "b".to_string(), "c".to_string()];
        let v = c.classifier_json(&labels);
        assert_eq!(v["architectures"][0], "BertForSequenceClassification");
        assert_eq!(v["id2label"]["2"], "c");
        assert_eq!(v["label2id"]["b"], 1);
        assert_eq!(v["_num_labels"], 3);
        assert_eq!(v["torch_dtype"], "float32");
        assert_eq!(v["problem_type"], "single_label_classification");
        let back = ModelConfig::from_json_str(&v.to_string(), Path::new("x")).unwrap();
        assert_eq!(back.id2label.unwrap(), labels);
    }
}

//! The blend's files in a model directory, beside the Hugging Face ones (which transformers still
//! opens as before): `txcat_blend.json` (labels, weight, temperature, the tf-idf vocabulary and
//! idf, its settings) and `txcat_tfidf.safetensors` (`weight` `[features x classes]` and `bias`
//! `[classes]`, `f32`; `-inf` bias for a class the SVM never saw). safetensors keeps the weights
//! compact and readable from Python (`safetensors.numpy.load_file`).

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};

use safetensors::{Dtype, SafeTensors};
use serde::{Deserialize, Serialize};

use super::{mix_into, svm_probabilities, temper_in_place, BlendWeights};
use crate::baseline::linear_svm::{LinearSvm, SvmError};
use crate::baseline::tfidf::TfidfVectorizer;
use crate::baseline::TfidfSvm;

/// The settings file; its presence turns the blend on for `predict` and `serve`.
pub const SETTINGS_FILE: &str = "txcat_blend.json";
/// The SVM's weights.
pub const WEIGHTS_FILE: &str = "txcat_tfidf.safetensors";
const FORMAT: &str = "txcat-blend/1";

/// Why the blend's files could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum BlendError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {reason}; delete {SETTINGS_FILE} and {WEIGHTS_FILE} to use the encoder alone, or retrain")]
    Invalid { path: PathBuf, reason: String },
    #[error("tf-idf blend: {0}")]
    Svm(#[from] SvmError),
}

#[derive(Serialize, Deserialize)]
struct Settings {
    format: String,
    about: String,
    labels: Vec<String>,
    #[serde(flatten)]
    weights: BlendWeights,
    tfidf: serde_json::Value,
    vocabulary: Vec<String>,
    idf: Vec<f64>,
}

/// A blend read from (or about to be written to) a model directory.
#[derive(Debug, Clone)]
pub struct SavedBlend {
    pub model: TfidfSvm,
    pub weights: BlendWeights,
    pub labels: Vec<String>,
}

impl SavedBlend {
    /// Writes both files into `dir`.
    pub fn save(&self, dir: &Path) -> Result<(), BlendError> {
        let settings = Settings {
            format: FORMAT.into(),
            about: "txcat: predictions are (1 - weight) * softmax(encoder logits / encoder_temperature) + weight * softmax(tf-idf SVM decision / temperature)".into(),
            labels: self.labels.clone(),
            weights: self.weights,
            tfidf: serde_json::json!({
                "analyzer": "word", "lowercase": true, "ngram_range": [1, 2],
                "token_pattern": "(?u)\\b\\w\\w+\\b", "norm": "l2", "use_idf": true,
                "smooth_idf": true, "sublinear_tf": false,
                "svm": "one-vs-rest LinearSVC (squared hinge, C=1)",
            }),
            vocabulary: self
                .model
                .vectorizer
                .feature_names()
                .into_iter()
                .map(str::to_owned)
                .collect(),
            idf: self.model.vectorizer.idf().to_vec(),
        };
        let path = dir.join(SETTINGS_FILE);
        let text = serde_json::to_string(&settings).map_err(|e| BlendError::Invalid {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        fs::write(&path, text).map_err(|source| BlendError::Io { path, source })?;

        let svm = &self.model.svm;
        let weight_bytes = f32_bytes(svm.weights());
        let bias_bytes = f32_bytes(svm.bias());
        let path = dir.join(WEIGHTS_FILE);
        let invalid = |e: safetensors::SafeTensorError| BlendError::Invalid {
            path: path.clone(),
            reason: e.to_string(),
        };
        let view = |shape: Vec<usize>, bytes| {
            safetensors::tensor::TensorView::new(Dtype::F32, shape, bytes).map_err(invalid)
        };
        let views = [
            (
                "weight",
                view(vec![svm.num_features(), svm.num_classes()], &weight_bytes)?,
            ),
            ("bias", view(vec![svm.num_classes()], &bias_bytes)?),
        ];
        let metadata = HashMap::from([("format".to_string(), "np".to_string())]);
        safetensors::serialize_to_file(views, Some(metadata), &path).map_err(invalid)
    }

    /// Reads the blend of `dir` for a model whose labels are `labels`; `None` when the directory
    /// has no blend (the encoder alone).
    pub fn load(dir: &Path, labels: &[String]) -> Result<Option<Self>, BlendError> {
        let path = dir.join(SETTINGS_FILE);
        if !path.exists() {
            return Ok(None);
        }
        let bad = |path: &Path, reason: String| BlendError::Invalid {
            path: path.to_path_buf(),
            reason,
        };
        let text = fs::read_to_string(&path).map_err(|source| BlendError::Io {
            path: path.clone(),
            source,
        })?;
        let settings: Settings =
            serde_json::from_str(&text).map_err(|e| bad(&path, format!("not valid: {e}")))?;
        if settings.format != FORMAT {
            return Err(bad(
                &path,
                format!("format {:?}, this txcat reads {FORMAT:?}", settings.format),
            ));
        }
        if settings.labels != labels {
            return Err(bad(
                &path,
                "its labels differ from config.json's id2label".into(),
            ));
        }
        let w = settings.weights;
        let positive = |t: f64| t.is_finite() && t > 0.0;
        if !(0.0..=1.0).contains(&w.weight)
            || !positive(w.temperature)
            || !positive(w.encoder_temperature)
        {
            return Err(bad(
                &path,
                format!(
                    "weight {} / temperature {} / encoder_temperature {} out of range",
                    w.weight, w.temperature, w.encoder_temperature
                ),
            ));
        }
        let features = settings.vocabulary.len();
        let vectorizer = TfidfVectorizer::from_parts(settings.vocabulary, settings.idf)
            .ok_or_else(|| {
                bad(
                    &path,
                    "vocabulary and idf differ in length, repeat a term or are not sorted".into(),
                )
            })?;

        let wpath = dir.join(WEIGHTS_FILE);
        let bytes = fs::read(&wpath).map_err(|source| BlendError::Io {
            path: wpath.clone(),
            source,
        })?;
        let tensors = SafeTensors::deserialize(&bytes).map_err(|e| bad(&wpath, e.to_string()))?;
        let read = |name: &str, shape: &[usize]| -> Result<Vec<f32>, BlendError> {
            let t = tensors
                .tensor(name)
                .map_err(|e| bad(&wpath, format!("{name}: {e}")))?;
            if t.dtype() != Dtype::F32 || t.shape() != shape {
                return Err(bad(
                    &wpath,
                    format!(
                        "{name} is {:?} {:?}, expected F32 {shape:?}",
                        t.dtype(),
                        t.shape()
                    ),
                ));
            }
            Ok(t.data()
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect())
        };
        let weight = read("weight", &[features, labels.len()])?;
        let bias = read("bias", &[labels.len()])?;
        let svm = LinearSvm::from_parts(weight, bias, features)
            .ok_or_else(|| bad(&wpath, "weight and bias sizes disagree".into()))?;
        Ok(Some(Self {
            model: TfidfSvm { vectorizer, svm },
            weights: w,
            labels: labels.to_vec(),
        }))
    }

    /// Mixes the tf-idf model's probabilities for `texts` into the encoder's (`[rows x
    /// classes]`, in place).
    pub fn apply<S: AsRef<str>>(&self, texts: &[S], encoder: &mut [f32]) -> Result<(), BlendError> {
        let decision = self.model.decision(texts)?;
        let tfidf = svm_probabilities(&decision, self.weights.temperature);
        temper_in_place(encoder, self.labels.len(), self.weights.encoder_temperature);
        mix_into(encoder, &tfidf, self.weights.weight);
        Ok(())
    }
}

fn f32_bytes(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::baseline::linear_svm;

    fn strings(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    fn fitted() -> SavedBlend {
        let train = strings(&[
            "shell fuel",
            "engen fuel",
            "spar food",
            "checkers food",
            "salary in",
        ]);
        let (vectorizer, x) = TfidfVectorizer::fit_transform(&train).unwrap();
        // Class 3 ("unseen") has no training rows.
        let fit = linear_svm::fit(&x, &[0, 0, 1, 1, 2], 4, 1).unwrap();
        SavedBlend {
            model: TfidfSvm {
                vectorizer,
                svm: fit.model,
            },
            weights: BlendWeights {
                weight: 0.4,
                temperature: 0.3,
                encoder_temperature: 0.5,
            },
            labels: strings(&["fuel", "groceries", "income", "unseen"]),
        }
    }

    #[test]
    fn a_saved_blend_loads_back_and_scores_the_same() {
        let dir = tempfile::tempdir().unwrap();
        let blend = fitted();
        blend.save(dir.path()).unwrap();
        let back = SavedBlend::load(dir.path(), &blend.labels)
            .unwrap()
            .unwrap();
        assert_eq!(back.weights, blend.weights);
        assert_eq!(back.model.svm, blend.model.svm);
        let texts = ["shell", "food spar", "nothing known"];
        let mut a = vec![0.25f32; 12];
        let mut b = a.clone();
        blend.apply(&texts, &mut a).unwrap();
        back.apply(&texts, &mut b).unwrap();
        assert_eq!(a, b);
        // The unseen class keeps only the encoder's share; the SVM's favourite gains.
        assert!((a[3] - 0.6 * 0.25).abs() < 1e-6);
        assert!(a[0] > a[1] && a[5] > a[4]);
        for row in a.chunks(4) {
            assert!((row.iter().sum::<f32>() - 1.0).abs() < 1e-5);
        }
    }

    #[test]
    fn no_blend_is_none_and_a_broken_one_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let labels = fitted().labels;
        assert!(SavedBlend::load(dir.path(), &labels).unwrap().is_none());
        fitted().save(dir.path()).unwrap();

        let err = SavedBlend::load(dir.path(), &labels[..3])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(SETTINGS_FILE) && err.contains("id2label"),
            "{err}"
        );

        fs::write(dir.path().join(WEIGHTS_FILE), b"not safetensors").unwrap();
        let err = SavedBlend::load(dir.path(), &labels)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(WEIGHTS_FILE) && err.contains("delete"),
            "{err}"
        );

        fs::write(dir.path().join(SETTINGS_FILE), b"{").unwrap();
        let err = SavedBlend::load(dir.path(), &labels)
            .unwrap_err()
            .to_string();
        assert!(err.contains("not valid"), "{err}");
    }
}

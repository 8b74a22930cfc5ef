//! The blend inside a training job: after training, the encoder's probabilities on the
//! evaluation rows and the baseline's decision values there choose the blend ([`super::choose`]);
//! the job keeps it in the model directory only when it beats the encoder alone, and reports it
//! beside the encoder and the baseline either way.
//!
//! Like the baseline, a failure here never costs the user the encoder: it is logged and recorded.

use std::time::Instant;

use serde_json::json;

use super::saved::{BlendError, SavedBlend};
use super::{choose, BlendChoice};
use crate::baseline::JobBaseline;
use crate::hyperparams::Hyperparameters;
use crate::metrics::{self, SideReport};

/// Key of the blend's block in `metrics.json`, and the prefix of its log-line names.
pub const METRICS_KEY: &str = "tfidf_blend";
/// Key of the blend's block in `evaluation.json`.
pub const EVALUATION_KEY: &str = "tfidf_blend_multiclass_classification_metrics";

/// What a job decided about the blend.
#[derive(Debug)]
pub enum JobBlend {
    /// Not attempted, and why (`blend_tfidf=false`, no baseline, no evaluation rows).
    Skipped(&'static str),
    /// Scored; kept in the model directory when `saved` is set.
    Scored {
        choice: Box<BlendChoice>,
        saved: Option<Box<SavedBlend>>,
        seconds: f64,
    },
    /// Something failed; the job goes on with the encoder alone.
    Failed(String),
}

/// Chooses the blend for a job. `encoder_probabilities` computes the trained encoder's
/// `[rows x classes]` probabilities on the evaluation rows (only called when a blend is
/// possible); `gold` are those rows' class ids.
pub fn for_job<E: std::fmt::Display>(
    hp: &Hyperparameters,
    baseline: &JobBaseline,
    encoder_probabilities: impl FnOnce() -> Result<Vec<f32>, E>,
    gold: &[usize],
    label_names: &[String],
) -> JobBlend {
    if !hp.blend_tfidf {
        return JobBlend::Skipped("blend_tfidf=false");
    }
    let JobBaseline::Scored(score) = baseline else {
        return JobBlend::Skipped("no tf-idf baseline was scored");
    };
    let started = Instant::now();
    let probs = match encoder_probabilities() {
        Ok(p) => p,
        Err(e) => return failed(format!("encoder probabilities: {e}")),
    };
    let choice = match choose(&probs, &score.decision, gold, label_names) {
        Ok(c) => c,
        Err(e) => return failed(e.to_string()),
    };
    let saved = choice.beats_encoder().then(|| {
        Box::new(SavedBlend {
            model: score.model.clone(),
            weights: choice.weights,
            labels: label_names.to_vec(),
        })
    });
    let mut pairs = choice.blend.scalars(METRICS_KEY);
    pairs.push(("tfidf_blend_weight".into(), choice.weights.weight));
    pairs.push(("tfidf_blend_temperature".into(), choice.weights.temperature));
    pairs.push((
        "tfidf_blend_encoder_temperature".into(),
        choice.weights.encoder_temperature,
    ));
    pairs.push(("encoder_accuracy".into(), choice.encoder.accuracy));
    pairs.push(("encoder_f1_macro".into(), choice.encoder.macro_avg.f1));
    tracing::info!(
        kept = saved.is_some(),
        "{}{}",
        metrics::log_line(&pairs),
        if saved.is_some() {
            " the blend beats the encoder alone on the evaluation rows: predict and serve use it"
        } else {
            " the blend does not beat the encoder alone: the model directory holds the encoder only"
        }
    );
    JobBlend::Scored {
        choice: Box::new(choice),
        saved,
        seconds: started.elapsed().as_secs_f64(),
    }
}

fn failed(message: String) -> JobBlend {
    tracing::warn!("tf-idf blend failed (the encoder is not affected): {message}");
    JobBlend::Failed(message)
}

impl JobBlend {
    /// Writes the blend's files into the (staged) model directory when it was kept.
    pub fn save_into(&self, model_dir: &std::path::Path) -> Result<(), BlendError> {
        match self {
            JobBlend::Scored {
                saved: Some(blend), ..
            } => blend.save(model_dir),
            _ => Ok(()),
        }
    }

    /// The blocks written beside the encoder's in `metrics.json` and `evaluation.json`.
    pub fn side_reports(&self) -> Vec<SideReport> {
        let (metrics, evaluation) = match self {
            JobBlend::Skipped(_) => return Vec::new(),
            JobBlend::Failed(message) => (json!({ "error": message }), None),
            JobBlend::Scored {
                choice,
                saved,
                seconds,
            } => (
                json!({
                    "model": "(1 - weight) * softmax(encoder logits / encoder_temperature) + weight * softmax(tf-idf SVM decision / temperature)",
                    "kept": saved.is_some(),
                    "chosen_on": "the evaluation rows (weight and temperature), so these scores are optimistic; bench/quality reports a separate test split",
                    "weight": choice.weights.weight,
                    "temperature": choice.weights.temperature,
                    "encoder_temperature": choice.weights.encoder_temperature,
                    "final": choice.blend.final_json(),
                    "encoder_final": choice.encoder.final_json(),
                    "per_class": choice.blend.per_class,
                    "confusion_matrix": choice.blend.confusion,
                    "chosen_by": "the lowest mean cross-entropy over the weight grid; kept when that is below the encoder alone's without a lower accuracy + macro-F1",
                    "grid": choice.grid.iter().map(|g| json!({"weight": g.weight, "cross_entropy": g.cross_entropy, "accuracy_plus_f1_macro": g.accuracy_plus_f1_macro})).collect::<Vec<_>>(),
                    "seconds": seconds,
                }),
                Some(choice.blend.evaluation_metrics()),
            ),
        };
        vec![SideReport {
            metrics_key: METRICS_KEY.into(),
            metrics,
            evaluation_key: EVALUATION_KEY.into(),
            evaluation,
        }]
    }

    /// Whether the model directory gets the blend.
    pub fn kept(&self) -> bool {
        matches!(self, JobBlend::Scored { saved: Some(_), .. })
    }
}

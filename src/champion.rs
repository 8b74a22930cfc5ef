//! Champion and challenger in one job (issue 12, part 3): the model in production (the champion)
//! is scored on this job's evaluation rows before training, and its scores are written next to
//! the new model's (the challenger), with `improvement` = new minus champion, so a SageMaker
//! Pipelines `ConditionStep` can decide with `JsonGet` whether the new model replaces it.
//!
//! The champion is the `baseline_model` hyperparameter, else the `baseline` channel, else the
//! starting model when it is a classifier ([`crate::model::classifier_labels`]). It keeps its own
//! label ids and tokenizer: rows are mapped to its ids by label name, and rows whose label it
//! does not know are left out and counted. Scoring uses the training loop's
//! [`crate::train::evaluate`], so both models are measured by the same code.
//!
//! A starting model that is a base model, or a classifier that knows none of the evaluation
//! labels, is no champion: no keys are written. A champion the user named that cannot be loaded
//! fails the job before training (exit 2); one that knows none of the labels is recorded with
//! the reason in `metrics.json` only.

use std::path::PathBuf;

use serde_json::json;
use tch::{Device, Kind};

use crate::hyperparams::{Hyperparameters, WarmStart};
use crate::metrics::{self, ClassificationReport, SideReport};
use crate::model::{
    classifier_labels, resolve_source, ModelError, ModelSource, SequenceClassifier, SourceRequest,
};
use crate::sagemaker::Paths;
use crate::storage::archive::UnpackLimits;
use crate::storage::s3;
use crate::tokenize::{
    check_max_length, tokenize_texts, EncodeSetError, TextEncoder, TokenizeError,
};
use crate::train::{self, TrainError};

/// Key of the champion's block in `metrics.json`.
pub const METRICS_KEY: &str = "baseline";
/// Prefix of its log-line names (`tfidf_baseline_` is the tf-idf baseline's).
pub const LOG_PREFIX: &str = "baseline_model";
/// Key of the champion's block in `evaluation.json`.
pub const EVALUATION_KEY: &str = "baseline_multiclass_classification_metrics";
/// Key of new-minus-champion in both `metrics.json` and `evaluation.json`.
pub const IMPROVEMENT_KEY: &str = "improvement";
/// The input channel that may carry the champion.
pub const CHANNEL: &str = "baseline";

/// Why the champion could not be scored.
#[derive(Debug, thiserror::Error)]
pub enum ChampionError {
    #[error("baseline model {origin}: {source}")]
    Model {
        origin: String,
        #[source]
        source: ModelError,
    },
    #[error("baseline model {origin} is not a classifier (its config.json has no id2label naming every row of a classification head); point baseline_model or the `baseline` channel at a model txcat trained (its model.tar.gz)")]
    NotClassifier { origin: String },
    #[error("baseline model {origin}: {source}")]
    Tokenize {
        origin: String,
        #[source]
        source: TokenizeError,
    },
    #[error("baseline model {origin}: tokenized data: {source}")]
    Encode {
        origin: String,
        #[source]
        source: EncodeSetError,
    },
    #[error("baseline model {origin}: evaluation failed: {source}")]
    Evaluate {
        origin: String,
        #[source]
        source: TrainError,
    },
}

impl ChampionError {
    /// True when the named model or its files are at fault (exit status 2).
    pub fn is_bad_input(&self) -> bool {
        match self {
            ChampionError::Model { source, .. } => source.is_bad_input(),
            ChampionError::NotClassifier { .. } => true,
            ChampionError::Tokenize { source, .. } => !matches!(source, TokenizeError::Io { .. }),
            ChampionError::Encode { .. } | ChampionError::Evaluate { .. } => false,
        }
    }
}

/// What the champion needs from the job.
pub struct ChampionRequest<'a> {
    pub paths: &'a Paths,
    pub hp: &'a Hyperparameters,
    /// The job's starting model, already resolved.
    pub start: &'a ModelSource,
    /// Evaluation texts and their class ids in this job's label map (`label_names`).
    pub eval_texts: &'a [String],
    pub eval_label_ids: &'a [usize],
    pub label_names: &'a [String],
    pub device: Device,
    /// The compute kind the new model evaluates in (`None`: fp32).
    pub compute_kind: Option<Kind>,
}

/// The champion's scores on the rows whose labels it knows.
#[derive(Debug, Clone)]
pub struct ChampionScore {
    /// Where the champion came from (a path, `... (unpacked)`, an `s3://` URI).
    pub origin: String,
    /// `starting_model`, `baseline_model` or `baseline_channel`.
    pub chosen_by: &'static str,
    /// Its labels, in its own id order.
    pub labels: Vec<String>,
    /// Scored on `eval_rows` rows; `report` uses the champion's label names.
    pub report: ClassificationReport,
    pub eval_rows: usize,
    /// Evaluation rows left out because the champion does not know their label.
    pub unknown_label_rows: usize,
    /// Those labels, in this job's label order.
    pub unknown_labels: Vec<String>,
    pub seconds: f64,
}

/// What a job records about its champion.
#[derive(Debug)]
pub enum JobChampion {
    /// No champion: a base starting model, no evaluation rows, or an unnamed classifier that
    /// knows none of the labels.
    None,
    /// A named champion that knows none of this job's evaluation labels.
    NoKnownRows {
        origin: String,
        chosen_by: &'static str,
        unknown_label_rows: usize,
    },
    Scored(Box<ChampionScore>),
}

/// Where the champion comes from; `_owned` keeps a download or an unpacked archive alive.
struct Candidate {
    dir: PathBuf,
    origin: String,
    chosen_by: &'static str,
    named: bool,
    _owned: Option<ModelSource>,
}

fn candidate(request: &ChampionRequest<'_>) -> Result<Candidate, ChampionError> {
    Ok(match named(request.paths, request.hp)? {
        Some(found) => found,
        None => Candidate {
            dir: request.start.dir.clone(),
            origin: request.start.origin.clone(),
            chosen_by: "starting_model",
            named: false,
            _owned: None,
        },
    })
}

/// The champion `baseline_model` or the `baseline` channel names, resolved; `None` when neither.
fn named(paths: &Paths, hp: &Hyperparameters) -> Result<Option<Candidate>, ChampionError> {
    let channel = paths.channel_dir(CHANNEL);
    let channel = channel.exists().then_some(channel);
    let chosen_by = match (&hp.baseline_model, &channel) {
        (Some(_), _) => "baseline_model",
        (None, Some(_)) => "baseline_channel",
        (None, None) => return Ok(None),
    };
    let name = hp.baseline_model.as_deref().unwrap_or("");
    let origin = match (name, &channel) {
        ("", Some(c)) => c.display().to_string(),
        _ => name.to_string(),
    };
    let source = resolve_source(&SourceRequest {
        name_or_path: name,
        model_channel: channel.as_deref(),
        model_home: paths.model_home.as_deref(),
        s3: s3::S3Options::from_settings(&paths.s3),
        limits: UnpackLimits::default(),
        // The model to beat is one txcat trained, never a Hub download.
        hub: None,
    })
    .map_err(|source| ChampionError::Model { origin, source })?;
    Ok(Some(Candidate {
        dir: source.dir.clone(),
        origin: source.origin.clone(),
        chosen_by,
        named: true,
        _owned: Some(source),
    }))
}

/// The dry run's check of a named champion (`baseline_model` or the `baseline` channel), as
/// the job would find it: resolved (an archive unpacked, an S3 object fetched), a classifier
/// whose weights' header agrees with its config.json, and a tokenizer; no weights loaded.
/// Returns the dry-run line, or `None` when no champion is named.
pub fn check_named(paths: &Paths, hp: &Hyperparameters) -> Result<Option<String>, ChampionError> {
    let Some(found) = named(paths, hp)? else {
        return Ok(None);
    };
    let origin = found.origin.clone();
    let labels = classifier_labels(&found.dir)
        .map_err(|source| ChampionError::Model {
            origin: origin.clone(),
            source,
        })?
        .ok_or_else(|| ChampionError::NotClassifier {
            origin: origin.clone(),
        })?;
    TextEncoder::from_model_dir(&found.dir, hp.max_length).map_err(|source| {
        ChampionError::Tokenize {
            origin: origin.clone(),
            source,
        }
    })?;
    Ok(Some(format!(
        "Baseline model: {origin} ({}; a classifier of {} labels; checked, weights not loaded)",
        found.chosen_by,
        labels.len()
    )))
}

/// Finds the champion and scores it on the evaluation rows whose labels it knows; logs one line.
/// Call before training, so the number to beat is in the log early.
pub fn for_job(request: &ChampionRequest<'_>) -> Result<JobChampion, ChampionError> {
    if request.eval_texts.is_empty() {
        return Ok(JobChampion::None);
    }
    let started = std::time::Instant::now();
    let found = candidate(request)?;
    let origin = found.origin.clone();
    let model_err = |source| ChampionError::Model {
        origin: origin.clone(),
        source,
    };
    let Some(labels) = classifier_labels(&found.dir).map_err(model_err)? else {
        if found.named {
            return Err(ChampionError::NotClassifier { origin });
        }
        tracing::info!("no baseline to compare against: the starting model is not a classifier");
        return Ok(JobChampion::None);
    };

    // Its ids are not ours: map every row by label name, leave out the labels it never saw.
    let to_champion: Vec<Option<usize>> = request
        .label_names
        .iter()
        .map(|name| labels.iter().position(|l| l == name))
        .collect();
    let (mut texts, mut ids) = (Vec::new(), Vec::new());
    let mut unknown = vec![0usize; request.label_names.len()];
    for (text, &id) in request.eval_texts.iter().zip(request.eval_label_ids) {
        match to_champion[id] {
            Some(champion_id) => {
                texts.push(text.clone());
                ids.push(champion_id);
            }
            None => unknown[id] += 1,
        }
    }
    let unknown_label_rows: usize = unknown.iter().sum();
    let unknown_labels: Vec<String> = unknown
        .iter()
        .zip(request.label_names)
        .filter(|(n, _)| **n > 0)
        .map(|(_, l)| l.clone())
        .collect();
    if texts.is_empty() {
        tracing::info!(
            baseline = %origin,
            unknown_label_rows,
            "baseline knows none of the evaluation labels; nothing to compare"
        );
        return Ok(match found.named {
            true => JobChampion::NoKnownRows {
                origin,
                chosen_by: found.chosen_by,
                unknown_label_rows,
            },
            false => JobChampion::None,
        });
    }

    let (mut model, _) =
        SequenceClassifier::load_with(&found.dir, &labels, request.device, WarmStart::Auto)
            .map_err(model_err)?;
    let tokenize_err = |source| ChampionError::Tokenize {
        origin: origin.clone(),
        source,
    };
    check_max_length(request.hp.max_length, model.max_positions()).map_err(tokenize_err)?;
    let encoder =
        TextEncoder::from_model_dir(&found.dir, request.hp.max_length).map_err(tokenize_err)?;
    let set =
        tokenize_texts(&encoder, &texts, &ids, model.uses_token_type_ids()).map_err(|source| {
            ChampionError::Encode {
                origin: origin.clone(),
                source,
            }
        })?;
    model.set_compute_kind(request.compute_kind);
    let report = train::evaluate(
        &model,
        &set,
        request.hp.eval_batch_size,
        encoder.pad_id(),
        request.device,
        &labels,
    )
    .map_err(|source| ChampionError::Evaluate {
        origin: origin.clone(),
        source,
    })?;
    let score = ChampionScore {
        origin,
        chosen_by: found.chosen_by,
        labels,
        report,
        eval_rows: set.len(),
        unknown_label_rows,
        unknown_labels,
        seconds: started.elapsed().as_secs_f64(),
    };
    let mut pairs = score.report.scalars(LOG_PREFIX);
    pairs.push((format!("{LOG_PREFIX}_eval_rows"), score.eval_rows as f64));
    pairs.push((
        format!("{LOG_PREFIX}_unknown_label_rows"),
        score.unknown_label_rows as f64,
    ));
    tracing::info!(baseline = %score.origin, "{}", metrics::log_line(&pairs));
    Ok(JobChampion::Scored(Box::new(score)))
}

/// New minus champion, for the three scores a `ConditionStep` compares.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Improvement {
    pub accuracy: f64,
    pub macro_f1: f64,
    pub weighted_f1: f64,
}

impl Improvement {
    pub fn of(new: &ClassificationReport, champion: &ClassificationReport) -> Self {
        Self {
            accuracy: new.accuracy - champion.accuracy,
            macro_f1: new.macro_avg.f1 - champion.macro_avg.f1,
            weighted_f1: new.weighted.f1 - champion.weighted.f1,
        }
    }
}

impl JobChampion {
    /// Logs one line with the new model's and the champion's scores and the improvement.
    pub fn log_against(&self, new: &ClassificationReport) {
        let JobChampion::Scored(s) = self else {
            return;
        };
        let up = Improvement::of(new, &s.report);
        // No `eval_` names: the documented `eval_accuracy=` metric regexes must not match here.
        let pairs = [
            ("new_accuracy", new.accuracy),
            ("baseline_model_accuracy", s.report.accuracy),
            ("improvement_accuracy", up.accuracy),
            ("new_f1_macro", new.macro_avg.f1),
            ("baseline_model_f1_macro", s.report.macro_avg.f1),
            ("improvement_f1_macro", up.macro_f1),
            ("new_f1_weighted", new.weighted.f1),
            ("baseline_model_f1_weighted", s.report.weighted.f1),
            ("improvement_f1_weighted", up.weighted_f1),
        ]
        .map(|(k, v)| (k.to_string(), v));
        tracing::info!(baseline = %s.origin, "new vs baseline: {}", metrics::log_line(&pairs));
    }

    /// The blocks written beside the new model's: `baseline` and `improvement` in
    /// `metrics.json`; `baseline_multiclass_classification_metrics` and `improvement` in
    /// `evaluation.json`. Nothing without a champion.
    pub fn side_reports(&self, new: &ClassificationReport) -> Vec<SideReport> {
        match self {
            JobChampion::None => Vec::new(),
            JobChampion::NoKnownRows {
                origin,
                chosen_by,
                unknown_label_rows,
            } => vec![SideReport {
                metrics_key: METRICS_KEY.into(),
                metrics: json!({
                    "source": origin,
                    "chosen_by": chosen_by,
                    "skipped": "the baseline model knows none of this job's evaluation labels",
                    "eval_rows": 0,
                    "unknown_label_rows": unknown_label_rows,
                }),
                evaluation_key: EVALUATION_KEY.into(),
                evaluation: None,
            }],
            JobChampion::Scored(s) => {
                let finals = s.report.final_json();
                let block = json!({
                    "source": s.origin,
                    "chosen_by": s.chosen_by,
                    "labels": s.labels,
                    "final": finals,
                    "per_class": s.report.per_class,
                    "confusion_matrix": s.report.confusion,
                    "eval_rows": s.eval_rows,
                    "unknown_label_rows": s.unknown_label_rows,
                    "unknown_labels": s.unknown_labels,
                    "seconds": s.seconds,
                });
                let up = Improvement::of(new, &s.report);
                let v = |x: f64| json!({ "value": x });
                vec![
                    SideReport {
                        metrics_key: METRICS_KEY.into(),
                        metrics: block,
                        evaluation_key: EVALUATION_KEY.into(),
                        evaluation: Some(s.report.evaluation_metrics()),
                    },
                    SideReport {
                        metrics_key: IMPROVEMENT_KEY.into(),
                        metrics: json!({
                            "eval_accuracy": up.accuracy,
                            "eval_f1_macro": up.macro_f1,
                            "eval_f1_weighted": up.weighted_f1,
                        }),
                        evaluation_key: IMPROVEMENT_KEY.into(),
                        evaluation: Some(json!({
                            "accuracy": v(up.accuracy),
                            "macro_f1": v(up.macro_f1),
                            "weighted_f1": v(up.weighted_f1),
                        })),
                    },
                ]
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    fn score(report: ClassificationReport) -> JobChampion {
        JobChampion::Scored(Box::new(ChampionScore {
            origin: "/m".into(),
            chosen_by: "starting_model",
            labels: names(&["a", "b"]),
            report,
            eval_rows: 3,
            unknown_label_rows: 2,
            unknown_labels: names(&["c"]),
            seconds: 0.0,
        }))
    }

    #[test]
    fn improvement_is_new_minus_champion_in_both_files() {
        let labels = names(&["a", "b"]);
        let old = metrics::classification_report(&[0, 1, 1], &[0, 0, 0], &labels, None).unwrap();
        let new = metrics::classification_report(&[0, 1, 1], &[0, 1, 0], &labels, None).unwrap();
        let side = score(old.clone()).side_reports(&new);
        let dir = tempfile::tempdir().unwrap();
        metrics::write_reports_with(dir.path(), &new, &[], &side).unwrap();
        let read = |name: &str| -> serde_json::Value {
            serde_json::from_str(&std::fs::read_to_string(dir.path().join(name)).unwrap()).unwrap()
        };
        let (m, e) = (read("metrics.json"), read("evaluation.json"));
        let want = new.accuracy - old.accuracy;
        assert!(want > 0.0);
        assert_eq!(e["improvement"]["accuracy"]["value"].as_f64(), Some(want));
        assert_eq!(
            e["improvement"]["macro_f1"]["value"].as_f64(),
            Some(new.macro_avg.f1 - old.macro_avg.f1)
        );
        assert_eq!(
            e[EVALUATION_KEY]["accuracy"]["value"].as_f64(),
            Some(old.accuracy)
        );
        assert_eq!(m["improvement"]["eval_accuracy"].as_f64(), Some(want));
        assert_eq!(m["baseline"]["unknown_label_rows"], 2);
        assert_eq!(
            m["baseline"]["final"]["eval_accuracy"].as_f64(),
            Some(old.accuracy)
        );
    }

    #[test]
    fn no_champion_writes_nothing_and_an_unusable_one_no_evaluation_block() {
        let labels = names(&["a"]);
        let new = metrics::classification_report(&[0], &[0], &labels, None).unwrap();
        assert!(JobChampion::None.side_reports(&new).is_empty());
        let skipped = JobChampion::NoKnownRows {
            origin: "s3://b/m".into(),
            chosen_by: "baseline_model",
            unknown_label_rows: 4,
        }
        .side_reports(&new);
        assert_eq!(skipped.len(), 1);
        assert!(skipped[0].evaluation.is_none());
        assert_eq!(skipped[0].metrics["unknown_label_rows"], 4);
    }
}

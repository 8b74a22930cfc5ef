//! The model users run today, scored inside every job (issue 17): word uni+bigram tf-idf and a
//! one-vs-rest linear SVM, as scikit-learn's `TfidfVectorizer(ngram_range=(1, 2))` +
//! `LinearSVC()`, fitted on the job's training rows and scored on the encoder's evaluation rows
//! with the encoder's metrics code, so the two sets of numbers compare directly.
//!
//! It stays cheap next to fine-tuning: the features are sparse ([`tfidf::SparseRows`]; a dense
//! rows x vocabulary matrix would not fit for a real set), and the classes' binary problems are
//! solved in parallel on the job's cores ([`linear_svm`]).
//!
//! A failure of the baseline never costs the user the encoder: [`for_job`] logs a warning and the
//! reports record `"tfidf_baseline": {"error": ...}` instead of scores.

pub mod linear_svm;
pub mod tfidf;

use std::time::Instant;

use serde_json::json;

use crate::hyperparams::Hyperparameters;
use crate::metrics::{self, ClassificationReport, MetricsError, SideReport};

use self::linear_svm::{DecisionValues, Formulation, LinearSvm, SvmError};
use self::tfidf::{TfidfError, TfidfVectorizer};

/// Key of the baseline's block in `metrics.json`, and the prefix of its log-line names.
pub const METRICS_KEY: &str = "tfidf_baseline";
/// Key of the baseline's block in `evaluation.json`.
pub const EVALUATION_KEY: &str = "tfidf_baseline_multiclass_classification_metrics";

/// Why the baseline could not be scored.
#[derive(Debug, thiserror::Error)]
pub enum BaselineError {
    #[error(transparent)]
    Tfidf(#[from] TfidfError),
    #[error(transparent)]
    Svm(#[from] SvmError),
    #[error(transparent)]
    Metrics(#[from] MetricsError),
}

/// Texts with their class ids (indices into the label names).
#[derive(Debug, Clone, Copy)]
pub struct Rows<'a> {
    pub texts: &'a [String],
    pub labels: &'a [usize],
}

/// The fitted baseline: the vocabulary with its idf weights and the SVM over it.
#[derive(Debug, Clone)]
pub struct TfidfSvm {
    pub vectorizer: TfidfVectorizer,
    pub svm: LinearSvm,
}

impl TfidfSvm {
    /// The SVM's decision value of every text for every class.
    pub fn decision<S: AsRef<str>>(&self, texts: &[S]) -> Result<DecisionValues, SvmError> {
        self.svm.decision(&self.vectorizer.transform(texts))
    }
}

/// The baseline's scores on the evaluation rows and how it got them.
#[derive(Debug, Clone)]
pub struct BaselineScore {
    pub report: ClassificationReport,
    /// The fitted model, kept so the job can blend it with the encoder.
    pub model: TfidfSvm,
    /// Its decision values on the evaluation rows.
    pub decision: DecisionValues,
    /// Vocabulary size (distinct uni- and bigrams of the training rows).
    pub features: usize,
    pub train_rows: usize,
    pub eval_rows: usize,
    pub formulation: Formulation,
    /// Binary problems solved, and the workers that solved them.
    pub problems: usize,
    pub threads: usize,
    pub seconds: f64,
}

/// Fits the baseline on `train` and scores it on `eval` with up to `threads` workers.
pub fn score(
    train: Rows<'_>,
    eval: Rows<'_>,
    label_names: &[String],
    threads: usize,
) -> Result<BaselineScore, BaselineError> {
    let started = Instant::now();
    let (vectorizer, x_train) = TfidfVectorizer::fit_transform(train.texts)?;
    let x_eval = vectorizer.transform(eval.texts);
    let linear_svm::SvmScored { fit, decision } =
        linear_svm::fit_and_score(&x_train, train.labels, label_names.len(), &x_eval, threads)?;
    let predictions = decision.predict();
    let features = vectorizer.num_features();
    let report = metrics::classification_report(eval.labels, &predictions, label_names, None)?;
    Ok(BaselineScore {
        report,
        model: TfidfSvm {
            vectorizer,
            svm: fit.model,
        },
        decision,
        features,
        train_rows: train.texts.len(),
        eval_rows: eval.texts.len(),
        formulation: fit.formulation,
        problems: fit.problems,
        threads: fit.threads,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// What a job records about the baseline.
#[derive(Debug)]
pub enum JobBaseline {
    /// `baseline_tfidf=false`.
    Off,
    /// No evaluation rows to score on.
    NoEvaluation,
    Scored(Box<BaselineScore>),
    /// The baseline failed; the job goes on and the reports carry this message.
    Failed(String),
}

/// Scores the baseline for a job when `baseline_tfidf` is on and there are evaluation rows, on
/// `num_threads` (or all) cores; logs one line either way. Never fails the job: an error is
/// logged as a warning and returned as [`JobBaseline::Failed`], because the encoder the user is
/// training must ship even when its yardstick breaks.
pub fn for_job(
    hp: &Hyperparameters,
    train: Rows<'_>,
    eval: Rows<'_>,
    label_names: &[String],
) -> JobBaseline {
    if !hp.baseline_tfidf {
        tracing::info!("tfidf baseline skipped: baseline_tfidf=false");
        return JobBaseline::Off;
    }
    if eval.texts.is_empty() {
        tracing::info!("tfidf baseline skipped: no evaluation rows");
        return JobBaseline::NoEvaluation;
    }
    let threads = hp.num_threads.unwrap_or_else(|| {
        std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
    });
    match score(train, eval, label_names, threads) {
        Ok(s) => {
            let mut pairs = s.report.scalars(METRICS_KEY);
            pairs.push((format!("{METRICS_KEY}_seconds"), s.seconds));
            pairs.push((format!("{METRICS_KEY}_features"), s.features as f64));
            tracing::info!("{}", metrics::log_line(&pairs));
            JobBaseline::Scored(Box::new(s))
        }
        Err(e) => {
            tracing::warn!("tfidf baseline failed (the encoder is not affected): {e}");
            JobBaseline::Failed(e.to_string())
        }
    }
}

impl JobBaseline {
    /// The blocks written beside the encoder's in `metrics.json` and `evaluation.json`.
    pub fn side_reports(&self) -> Vec<SideReport> {
        let (metrics, evaluation) = match self {
            JobBaseline::Off | JobBaseline::NoEvaluation => return Vec::new(),
            JobBaseline::Failed(message) => (json!({ "error": message }), None),
            JobBaseline::Scored(s) => {
                let finals = s.report.final_json();
                let block = json!({
                    "model": "word 1-2-gram tf-idf + one-vs-rest linear SVM (scikit-learn TfidfVectorizer(ngram_range=(1, 2)) + LinearSVC() defaults)",
                    "final": finals,
                    "per_class": s.report.per_class,
                    "confusion_matrix": s.report.confusion,
                    "features": s.features,
                    "train_rows": s.train_rows,
                    "eval_rows": s.eval_rows,
                    "solver": s.formulation,
                    "problems": s.problems,
                    "threads": s.threads,
                    "seconds": s.seconds,
                });
                (block, Some(s.report.evaluation_metrics()))
            }
        };
        vec![SideReport {
            metrics_key: METRICS_KEY.into(),
            metrics,
            evaluation_key: EVALUATION_KEY.into(),
            evaluation,
        }]
    }
}

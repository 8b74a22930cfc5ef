//! A finished job's outputs, read into the shapes the renderer draws: `metrics.json` (required),
//! `run_summary.json`, `log_history.json` and `eval_examples.json` (each optional: older jobs and
//! jobs without evaluation lack some).

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::{ReportError, EXAMPLES_FILE, LOG_HISTORY_FILE};

/// One class's row of the final evaluation.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct ClassRow {
    pub label: String,
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
    pub support: u64,
}

/// One logged optimizer step: the mean training loss since the previous record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogRecord {
    pub step: u64,
    pub epoch: f64,
    pub loss: f64,
    pub learning_rate: f64,
}

/// `log_history.json`: what the trainer logged by step, and the settings of the run.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TrainingLog {
    /// Where the starting model came from, and its type.
    #[serde(default)]
    pub model: Option<String>,
    #[serde(default)]
    pub hyperparameters: Map<String, Value>,
    #[serde(default)]
    pub log_history: Vec<LogRecord>,
}

/// One misclassified evaluation row.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Example {
    pub row: usize,
    pub text: String,
    pub true_label: String,
    pub predicted_label: String,
}

/// `eval_examples.json`: a few misclassified rows per (true, predicted) pair.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EvalExamples {
    pub eval_rows: usize,
    /// Rows predicted to find them (the first ones of the evaluation set).
    pub rows_scanned: usize,
    pub per_pair_limit: usize,
    pub misclassified: Vec<Example>,
}

/// One evaluation of the history.
#[derive(Debug, Clone, PartialEq)]
pub struct EvalPoint {
    pub step: u64,
    pub epoch: f64,
    pub metrics: BTreeMap<String, f64>,
}

/// Another model scored on the same rows (the tf-idf baseline, a production champion).
#[derive(Debug, Clone, PartialEq)]
pub struct SideBlock {
    pub key: String,
    pub model: Option<String>,
    /// `eval_*` scalars, keyed as the encoder's.
    pub scalars: BTreeMap<String, f64>,
    pub error: Option<String>,
}

/// Everything the page shows.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ReportData {
    pub classes: Vec<ClassRow>,
    /// `confusion[true][pred]`, one row and column per class.
    pub confusion: Vec<Vec<u64>>,
    pub final_scalars: BTreeMap<String, f64>,
    pub history: Vec<EvalPoint>,
    pub side: Vec<SideBlock>,
    pub run: Map<String, Value>,
    pub log: TrainingLog,
    pub examples: Option<EvalExamples>,
}

/// Keys of `metrics.json` that belong to the encoder itself.
const OWN_KEYS: [&str; 4] = ["final", "per_class", "confusion_matrix", "history"];

impl ReportData {
    /// Builds the data from parsed files; `Err` says which part is malformed.
    pub fn from_values(
        metrics: &Value,
        run: Option<&Value>,
        log: Option<TrainingLog>,
        examples: Option<EvalExamples>,
    ) -> Result<Self, String> {
        let classes: Vec<ClassRow> = serde_json::from_value(metrics["per_class"].clone())
            .map_err(|e| format!("per_class: {e}"))?;
        let confusion: Vec<Vec<u64>> = serde_json::from_value(metrics["confusion_matrix"].clone())
            .map_err(|e| format!("confusion_matrix: {e}"))?;
        let n = classes.len();
        if confusion.len() != n || confusion.iter().any(|r| r.len() != n) {
            return Err(format!(
                "confusion_matrix is not {n}x{n} (per_class has {n} labels)"
            ));
        }
        let history = metrics["history"]
            .as_array()
            .map(|rows| rows.iter().map(eval_point).collect())
            .unwrap_or_default();
        let side = metrics
            .as_object()
            .map(|m| {
                m.iter()
                    .filter(|(k, _)| !OWN_KEYS.contains(&k.as_str()))
                    .filter_map(|(k, v)| side_block(k, v))
                    .collect()
            })
            .unwrap_or_default();
        Ok(Self {
            classes,
            confusion,
            final_scalars: scalars(&metrics["final"]),
            history,
            side,
            run: run.and_then(Value::as_object).cloned().unwrap_or_default(),
            log: log.unwrap_or_default(),
            examples,
        })
    }

    /// Label names, by class id.
    pub fn labels(&self) -> Vec<&str> {
        self.classes.iter().map(|c| c.label.as_str()).collect()
    }
}

fn scalars(value: &Value) -> BTreeMap<String, f64> {
    value
        .as_object()
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| v.as_f64().map(|x| (k.clone(), x)))
                .collect()
        })
        .unwrap_or_default()
}

fn eval_point(row: &Value) -> EvalPoint {
    let mut metrics = scalars(row);
    let step = metrics.remove("step").unwrap_or(0.0) as u64;
    let epoch = metrics.remove("epoch").unwrap_or(0.0);
    EvalPoint {
        step,
        epoch,
        metrics,
    }
}

/// A block with `final` scalars or an `error`; anything else is not a model's scores.
fn side_block(key: &str, value: &Value) -> Option<SideBlock> {
    let error = value["error"].as_str().map(str::to_owned);
    if !value["final"].is_object() && error.is_none() {
        return None;
    }
    Some(SideBlock {
        key: key.to_owned(),
        model: value["model"].as_str().map(str::to_owned),
        scalars: scalars(&value["final"]),
        error,
    })
}

/// Reads the outputs of a finished job from `dir`.
pub fn load(dir: &Path) -> Result<ReportData, ReportError> {
    let metrics_path = dir.join("metrics.json");
    let metrics = read_json(&metrics_path)?.ok_or_else(|| ReportError::Read {
        path: metrics_path.clone(),
        source: std::io::Error::new(std::io::ErrorKind::NotFound, "not found"),
    })?;
    let run = read_json(&dir.join("run_summary.json"))?;
    let log = read_typed::<TrainingLog>(&dir.join(LOG_HISTORY_FILE))?;
    let examples = read_typed::<EvalExamples>(&dir.join(EXAMPLES_FILE))?;
    ReportData::from_values(&metrics, run.as_ref(), log, examples).map_err(|reason| {
        ReportError::Parse {
            path: metrics_path,
            reason,
        }
    })
}

/// The parsed file, `None` when it does not exist.
fn read_json(path: &Path) -> Result<Option<Value>, ReportError> {
    read_typed(path)
}

fn read_typed<T: serde::de::DeserializeOwned>(path: &Path) -> Result<Option<T>, ReportError> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(ReportError::Read {
                path: path.to_path_buf(),
                source,
            })
        }
    };
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|e| ReportError::Parse {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn metrics() -> Value {
        json!({
            "final": {"eval_accuracy": 0.5, "eval_loss": 0.7},
            "per_class": [
                {"label": "a", "precision": 1.0, "recall": 0.5, "f1": 0.667, "support": 2},
                {"label": "b", "precision": 0.5, "recall": 1.0, "f1": 0.667, "support": 1}
            ],
            "confusion_matrix": [[1, 1], [0, 1]],
            "history": [{"epoch": 1.0, "step": 4, "eval_accuracy": 0.5}],
            "tfidf_baseline": {"model": "svm", "final": {"eval_accuracy": 0.9}},
            "broken": {"error": "no rows"},
            "note": {"x": 1}
        })
    }

    #[test]
    fn reads_history_and_side_blocks() {
        let d = ReportData::from_values(&metrics(), None, None, None).unwrap();
        assert_eq!(d.labels(), ["a", "b"]);
        assert_eq!(d.history[0].step, 4);
        assert_eq!(d.history[0].metrics["eval_accuracy"], 0.5);
        let keys: Vec<&str> = d.side.iter().map(|s| s.key.as_str()).collect();
        assert_eq!(keys, ["broken", "tfidf_baseline"]);
        assert_eq!(d.side[1].scalars["eval_accuracy"], 0.9);
        assert_eq!(d.side[0].error.as_deref(), Some("no rows"));
    }

    #[test]
    fn a_ragged_confusion_matrix_is_an_error() {
        let mut m = metrics();
        m["confusion_matrix"] = json!([[1, 1], [0]]);
        let e = ReportData::from_values(&m, None, None, None).unwrap_err();
        assert!(e.contains("2x2"), "{e}");
    }

    #[test]
    fn load_names_the_missing_file() {
        let dir = tempfile::tempdir().unwrap();
        let e = load(dir.path()).unwrap_err().to_string();
        assert!(e.contains("metrics.json"), "{e}");
        std::fs::write(dir.path().join("metrics.json"), metrics().to_string()).unwrap();
        std::fs::write(dir.path().join(LOG_HISTORY_FILE), "{oops").unwrap();
        let e = load(dir.path()).unwrap_err().to_string();
        assert!(e.contains(LOG_HISTORY_FILE), "{e}");
        std::fs::remove_file(dir.path().join(LOG_HISTORY_FILE)).unwrap();
        assert_eq!(load(dir.path()).unwrap().classes.len(), 2);
    }
}

//! Classification metrics as pure functions, and the files and log lines that carry them.
//!
//! Semantics follow scikit-learn with `zero_division=0`: a ratio whose denominator is 0 is 0.
//! Averages (micro, macro, weighted) run over the labels that occur in the true labels or the
//! predictions (scikit-learn's default when `labels` is not given); per-class rows cover every
//! class id `0..num_labels`, with support 0 where a class is absent. F1 is `2tp / (2tp + fp + fn)`.
//!
//! Invariant: `y_true` and `y_pred` hold class ids `< num_labels` and have the same length.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use serde::Serialize;

/// Errors from computing or writing metrics.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    #[error(
        "metrics: {true_len} true labels but {pred_len} predictions; pass one prediction per row"
    )]
    LengthMismatch { true_len: usize, pred_len: usize },
    #[error("metrics: class id {id} at row {row} is outside 0..{num_labels}; the label map and the data disagree")]
    ClassOutOfRange {
        row: usize,
        id: usize,
        num_labels: usize,
    },
    #[error("metrics: {names} label names for {num_labels} classes; pass one name per class")]
    NamesMismatch { names: usize, num_labels: usize },
    #[error(
        "metrics: cannot write {path}: {source}; check that the directory exists and is writable"
    )]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Precision, recall, F1 and support of one class.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ClassMetrics {
    pub label: String,
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
    pub support: u64,
}

/// Precision, recall and F1 under one averaging rule.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Averaged {
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
}

/// Everything one evaluation reports.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ClassificationReport {
    /// Mean cross-entropy over the evaluated rows (`None` when no loss was computed).
    pub loss: Option<f64>,
    pub accuracy: f64,
    pub micro: Averaged,
    pub macro_avg: Averaged,
    pub weighted: Averaged,
    pub per_class: Vec<ClassMetrics>,
    /// `confusion[true][pred]` counts, `num_labels x num_labels`.
    pub confusion: Vec<Vec<u64>>,
    pub num_rows: u64,
}

fn ratio(num: f64, den: f64) -> f64 {
    if den == 0.0 {
        0.0
    } else {
        num / den
    }
}

/// Checks lengths and ranges of a prediction set.
fn validate(y_true: &[usize], y_pred: &[usize], num_labels: usize) -> Result<(), MetricsError> {
    if y_true.len() != y_pred.len() {
        return Err(MetricsError::LengthMismatch {
            true_len: y_true.len(),
            pred_len: y_pred.len(),
        });
    }
    for (row, (&t, &p)) in y_true.iter().zip(y_pred).enumerate() {
        for id in [t, p] {
            if id >= num_labels {
                return Err(MetricsError::ClassOutOfRange {
                    row,
                    id,
                    num_labels,
                });
            }
        }
    }
    Ok(())
}

/// Confusion matrix `[true][pred]` over class ids `0..num_labels`.
pub fn confusion_matrix(
    y_true: &[usize],
    y_pred: &[usize],
    num_labels: usize,
) -> Result<Vec<Vec<u64>>, MetricsError> {
    validate(y_true, y_pred, num_labels)?;
    let mut m = vec![vec![0u64; num_labels]; num_labels];
    for (&t, &p) in y_true.iter().zip(y_pred) {
        m[t][p] += 1;
    }
    Ok(m)
}

/// Share of rows predicted correctly (0 for no rows).
pub fn accuracy(y_true: &[usize], y_pred: &[usize]) -> f64 {
    let hits = y_true.iter().zip(y_pred).filter(|(t, p)| t == p).count();
    ratio(hits as f64, y_true.len() as f64)
}

/// Mean of per-row losses (0 for none).
pub fn mean_loss(losses: &[f64]) -> f64 {
    ratio(losses.iter().sum(), losses.len() as f64)
}

/// The full report: accuracy, averages, per-class rows and the confusion matrix.
/// `label_names[i]` names class `i`.
pub fn classification_report(
    y_true: &[usize],
    y_pred: &[usize],
    label_names: &[String],
    loss: Option<f64>,
) -> Result<ClassificationReport, MetricsError> {
    let n = label_names.len();
    let confusion = confusion_matrix(y_true, y_pred, n)?;
    let (mut tp, mut fp, mut fneg, mut support) =
        (vec![0u64; n], vec![0u64; n], vec![0u64; n], vec![0u64; n]);
    for c in 0..n {
        tp[c] = confusion[c][c];
        support[c] = confusion[c].iter().sum();
        fneg[c] = support[c] - tp[c];
        fp[c] = (0..n).map(|t| confusion[t][c]).sum::<u64>() - tp[c];
    }
    let per_class: Vec<ClassMetrics> = (0..n)
        .map(|c| ClassMetrics {
            label: label_names[c].clone(),
            precision: ratio(tp[c] as f64, (tp[c] + fp[c]) as f64),
            recall: ratio(tp[c] as f64, support[c] as f64),
            f1: ratio(2.0 * tp[c] as f64, (2 * tp[c] + fp[c] + fneg[c]) as f64),
            support: support[c],
        })
        .collect();
    // scikit-learn averages over labels seen in y_true or y_pred.
    let present: Vec<usize> = (0..n).filter(|&c| support[c] + fp[c] > 0).collect();

    let (stp, sfp, sfn) = present.iter().fold((0u64, 0u64, 0u64), |acc, &c| {
        (acc.0 + tp[c], acc.1 + fp[c], acc.2 + fneg[c])
    });
    let micro = Averaged {
        precision: ratio(stp as f64, (stp + sfp) as f64),
        recall: ratio(stp as f64, (stp + sfn) as f64),
        f1: ratio(2.0 * stp as f64, (2 * stp + sfp + sfn) as f64),
    };
    let k = present.len() as f64;
    let macro_avg = Averaged {
        precision: ratio(present.iter().map(|&c| per_class[c].precision).sum(), k),
        recall: ratio(present.iter().map(|&c| per_class[c].recall).sum(), k),
        f1: ratio(present.iter().map(|&c| per_class[c].f1).sum(), k),
    };
    let total_support: u64 = present.iter().map(|&c| support[c]).sum();
    let weigh = |f: &dyn Fn(&ClassMetrics) -> f64| {
        ratio(
            present
                .iter()
                .map(|&c| f(&per_class[c]) * support[c] as f64)
                .sum(),
            total_support as f64,
        )
    };
    let weighted = Averaged {
        precision: weigh(&|m| m.precision),
        recall: weigh(&|m| m.recall),
        f1: weigh(&|m| m.f1),
    };
    Ok(ClassificationReport {
        loss,
        accuracy: accuracy(y_true, y_pred),
        micro,
        macro_avg,
        weighted,
        per_class,
        confusion,
        num_rows: y_true.len() as u64,
    })
}

impl ClassificationReport {
    /// [`Self::scalars`] with the `eval` prefix as a JSON object: the `final` block of
    /// `metrics.json` for the encoder and for every model scored beside it.
    pub fn final_json(&self) -> serde_json::Map<String, serde_json::Value> {
        self.scalars("eval")
            .into_iter()
            .map(|(k, v)| (k, v.into()))
            .collect()
    }

    /// Scalar metrics keyed `<prefix>_<name>` (e.g. `eval_f1_macro`), in a stable order. These
    /// names are what `metric_for_best_model` and the log lines use.
    pub fn scalars(&self, prefix: &str) -> Vec<(String, f64)> {
        let mut out = Vec::with_capacity(11);
        if let Some(loss) = self.loss {
            out.push((format!("{prefix}_loss"), loss));
        }
        let named = [
            ("accuracy", self.accuracy),
            ("f1_macro", self.macro_avg.f1),
            ("f1_micro", self.micro.f1),
            ("f1_weighted", self.weighted.f1),
            ("precision_macro", self.macro_avg.precision),
            ("precision_micro", self.micro.precision),
            ("precision_weighted", self.weighted.precision),
            ("recall_macro", self.macro_avg.recall),
            ("recall_micro", self.micro.recall),
            ("recall_weighted", self.weighted.recall),
        ];
        out.extend(named.iter().map(|(k, v)| (format!("{prefix}_{k}"), *v)));
        out
    }

    /// The scalar named `name` (e.g. `eval_f1_macro`, `eval_loss`), if this report has it.
    pub fn scalar(&self, prefix: &str, name: &str) -> Option<f64> {
        self.scalars(prefix)
            .into_iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v)
    }

    /// `evaluation.json` in the SageMaker model-quality shape:
    /// `{"multiclass_classification_metrics": {"accuracy": {"value": ..}, ...}}`.
    pub fn evaluation_json(&self) -> serde_json::Value {
        serde_json::json!({ "multiclass_classification_metrics": self.evaluation_metrics() })
    }

    /// The inside of `multiclass_classification_metrics`: `{"accuracy": {"value": ..}, ...}`.
    pub fn evaluation_metrics(&self) -> serde_json::Value {
        let v = |x: f64| serde_json::json!({ "value": x });
        let mut confusion = serde_json::Map::new();
        for (t, row) in self.confusion.iter().enumerate() {
            let cells: serde_json::Map<String, serde_json::Value> = row
                .iter()
                .enumerate()
                .map(|(p, &n)| (self.per_class[p].label.clone(), n.into()))
                .collect();
            confusion.insert(self.per_class[t].label.clone(), cells.into());
        }
        let mut metrics = serde_json::json!({
            "accuracy": v(self.accuracy),
            "weighted_precision": v(self.weighted.precision),
            "weighted_recall": v(self.weighted.recall),
            "weighted_f1": v(self.weighted.f1),
            "macro_precision": v(self.macro_avg.precision),
            "macro_recall": v(self.macro_avg.recall),
            "macro_f1": v(self.macro_avg.f1),
            "micro_f1": v(self.micro.f1),
            "confusion_matrix": confusion,
        });
        if let (Some(loss), Some(map)) = (self.loss, metrics.as_object_mut()) {
            map.insert("loss".into(), v(loss));
        }
        metrics
    }

    /// `confusion_matrix.csv`: header `true\pred,<labels...>`, one row per true label.
    pub fn confusion_csv(&self) -> String {
        let mut s = String::from("true\\pred");
        for c in &self.per_class {
            s.push(',');
            s.push_str(&csv_field(&c.label));
        }
        s.push('\n');
        for (t, row) in self.confusion.iter().enumerate() {
            s.push_str(&csv_field(&self.per_class[t].label));
            for n in row {
                let _ = write!(s, ",{n}");
            }
            s.push('\n');
        }
        s
    }

    /// `per_class.csv`: `label,precision,recall,f1,support`.
    pub fn per_class_csv(&self) -> String {
        let mut s = String::from("label,precision,recall,f1,support\n");
        for c in &self.per_class {
            let _ = writeln!(
                s,
                "{},{},{},{},{}",
                csv_field(&c.label),
                c.precision,
                c.recall,
                c.f1,
                c.support
            );
        }
        s
    }
}

/// Quotes a CSV field when it holds a comma, quote or line break.
fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// A log line of `name=value;` pairs, e.g. `epoch=1; step=120; eval_loss=0.123400;`. Floats use
/// a fixed 6-decimal or scientific form a `([0-9.eE+-]+)` regex captures.
pub fn log_line(pairs: &[(String, f64)]) -> String {
    let mut s = String::new();
    for (i, (k, v)) in pairs.iter().enumerate() {
        if i > 0 {
            s.push(' ');
        }
        let _ = write!(s, "{k}={};", format_value(*v));
    }
    s
}

/// Integers print bare, small magnitudes in scientific notation, the rest with 6 decimals.
pub fn format_value(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else if v != 0.0 && v.abs() < 1e-3 {
        format!("{v:.4e}")
    } else {
        format!("{v:.6}")
    }
}

/// One evaluation in the history of `metrics.json`.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct EvalRecord {
    pub epoch: f64,
    pub step: u64,
    pub metrics: Vec<(String, f64)>,
}

/// A block written beside the encoder's results (e.g. a baseline's): `metrics` under
/// `metrics_key` in `metrics.json` and, when given, `evaluation` under `evaluation_key` in
/// `evaluation.json`.
#[derive(Debug, Clone, PartialEq)]
pub struct SideReport {
    pub metrics_key: String,
    pub metrics: serde_json::Value,
    pub evaluation_key: String,
    pub evaluation: Option<serde_json::Value>,
}

/// Writes `metrics.json`, `evaluation.json`, `confusion_matrix.csv` and `per_class.csv` for the
/// final report into `dir`, with the evaluation history in `metrics.json`.
pub fn write_reports(
    dir: &Path,
    final_report: &ClassificationReport,
    history: &[EvalRecord],
) -> Result<(), MetricsError> {
    write_reports_with(dir, final_report, history, &[])
}

/// [`write_reports`] with `side` blocks added to `metrics.json` and `evaluation.json`.
pub fn write_reports_with(
    dir: &Path,
    final_report: &ClassificationReport,
    history: &[EvalRecord],
    side: &[SideReport],
) -> Result<(), MetricsError> {
    let history_json: Vec<serde_json::Value> = history
        .iter()
        .map(|r| {
            let mut m = serde_json::Map::new();
            m.insert("epoch".into(), r.epoch.into());
            m.insert("step".into(), r.step.into());
            for (k, v) in &r.metrics {
                m.insert(k.clone(), (*v).into());
            }
            m.into()
        })
        .collect();
    let mut metrics = serde_json::json!({
        "final": final_report.final_json(),
        "per_class": final_report.per_class,
        "confusion_matrix": final_report.confusion,
        "history": history_json,
    });
    let mut evaluation = final_report.evaluation_json();
    for block in side {
        if let Some(map) = metrics.as_object_mut() {
            map.insert(block.metrics_key.clone(), block.metrics.clone());
        }
        if let (Some(value), Some(map)) = (&block.evaluation, evaluation.as_object_mut()) {
            map.insert(block.evaluation_key.clone(), value.clone());
        }
    }
    let pretty = |v: &serde_json::Value| serde_json::to_string_pretty(v).unwrap_or_default();
    write_file(&dir.join("metrics.json"), &pretty(&metrics))?;
    write_file(&dir.join("evaluation.json"), &pretty(&evaluation))?;
    write_file(
        &dir.join("confusion_matrix.csv"),
        &final_report.confusion_csv(),
    )?;
    write_file(&dir.join("per_class.csv"), &final_report.per_class_csv())?;
    Ok(())
}

fn write_file(path: &Path, text: &str) -> Result<(), MetricsError> {
    let err = |source| MetricsError::Write {
        path: path.to_path_buf(),
        source,
    };
    let mut f = std::fs::File::create(path).map_err(err)?;
    f.write_all(text.as_bytes()).map_err(err)?;
    f.write_all(b"\n").map_err(err)
}

/// Checks that label names match the class count (for callers building reports from a map).
pub fn check_label_names(names: &[String], num_labels: usize) -> Result<(), MetricsError> {
    if names.len() != num_labels {
        return Err(MetricsError::NamesMismatch {
            names: names.len(),
            num_labels,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("C{i}")).collect()
    }

    #[test]
    fn hand_computed_three_class_example() {
        // true: 0 0 1 1 2 ; pred: 0 1 1 1 0
        let r = classification_report(&[0, 0, 1, 1, 2], &[0, 1, 1, 1, 0], &names(3), None).unwrap();
        assert!((r.accuracy - 0.6).abs() < 1e-12);
        // class 0: tp1 fp1 fn1 -> p .5 r .5 ; class 1: tp2 fp1 fn0 -> p 2/3 r 1 ; class 2: 0
        assert!((r.per_class[0].precision - 0.5).abs() < 1e-12);
        assert!((r.per_class[1].precision - 2.0 / 3.0).abs() < 1e-12);
        assert_eq!(r.per_class[2].f1, 0.0);
        assert!((r.macro_avg.f1 - (0.5 + 0.8 + 0.0) / 3.0).abs() < 1e-12);
        assert!((r.weighted.f1 - (0.5 * 2.0 + 0.8 * 2.0) / 5.0).abs() < 1e-12);
        assert!((r.micro.f1 - 0.6).abs() < 1e-12);
        assert_eq!(
            r.confusion,
            vec![vec![1, 1, 0], vec![0, 2, 0], vec![1, 0, 0]]
        );
    }

    #[test]
    fn absent_classes_are_left_out_of_averages() {
        // Class 2 never occurs in truth or predictions: averages ignore it, per-class lists it.
        let r = classification_report(&[0, 1], &[0, 1], &names(3), None).unwrap();
        assert_eq!(r.macro_avg.f1, 1.0);
        assert_eq!(r.per_class[2].support, 0);
        assert_eq!(r.per_class.len(), 3);
    }

    #[test]
    fn bad_inputs_are_typed_errors() {
        assert!(matches!(
            classification_report(&[0], &[0, 1], &names(2), None),
            Err(MetricsError::LengthMismatch { .. })
        ));
        assert!(matches!(
            classification_report(&[0, 5], &[0, 1], &names(2), None),
            Err(MetricsError::ClassOutOfRange { row: 1, id: 5, .. })
        ));
    }

    #[test]
    fn write_reports_writes_the_four_files() {
        let dir = tempfile::tempdir().unwrap();
        let r = classification_report(&[0, 1, 1], &[0, 1, 0], &names(2), Some(0.25)).unwrap();
        let history = vec![EvalRecord {
            epoch: 1.0,
            step: 10,
            metrics: r.scalars("eval"),
        }];
        write_reports(dir.path(), &r, &history).unwrap();
        let metrics: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(dir.path().join("metrics.json")).unwrap(),
        )
        .unwrap();
        assert_eq!(metrics["final"]["eval_loss"], 0.25);
        assert_eq!(metrics["history"][0]["step"], 10);
        let eval: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(dir.path().join("evaluation.json")).unwrap(),
        )
        .unwrap();
        assert!(eval["multiclass_classification_metrics"]["weighted_f1"]["value"].is_f64());
        let csv = std::fs::read_to_string(dir.path().join("confusion_matrix.csv")).unwrap();
        assert!(csv.starts_with("true\\pred,C0,C1\n"));
        assert!(dir.path().join("per_class.csv").exists());
        let missing = write_reports(&dir.path().join("nope"), &r, &history).unwrap_err();
        assert!(missing.to_string().contains("nope"));
    }

    #[test]
    fn side_reports_sit_beside_the_encoders() {
        let dir = tempfile::tempdir().unwrap();
        let r = classification_report(&[0, 1], &[0, 1], &names(2), None).unwrap();
        let side = [
            SideReport {
                metrics_key: "other".into(),
                metrics: serde_json::json!({"x": 1}),
                evaluation_key: "other_metrics".into(),
                evaluation: Some(r.evaluation_metrics()),
            },
            SideReport {
                metrics_key: "broken".into(),
                metrics: serde_json::json!({"error": "e"}),
                evaluation_key: "broken_metrics".into(),
                evaluation: None,
            },
        ];
        write_reports_with(dir.path(), &r, &[], &side).unwrap();
        let read = |name: &str| -> serde_json::Value {
            serde_json::from_str(&std::fs::read_to_string(dir.path().join(name)).unwrap()).unwrap()
        };
        let (metrics, eval) = (read("metrics.json"), read("evaluation.json"));
        assert_eq!(metrics["other"]["x"], 1);
        assert_eq!(metrics["broken"]["error"], "e");
        assert_eq!(metrics["final"]["eval_accuracy"], 1.0);
        assert_eq!(
            eval["other_metrics"],
            eval["multiclass_classification_metrics"]
        );
        assert!(eval.get("broken_metrics").is_none());
    }

    #[test]
    fn log_line_is_regex_friendly() {
        let line = log_line(&[
            ("epoch".into(), 1.0),
            ("eval_loss".into(), 0.1234),
            ("lr".into(), 5e-5),
        ]);
        assert_eq!(line, "epoch=1; eval_loss=0.123400; lr=5.0000e-5;");
    }

    #[test]
    fn csv_and_evaluation_json_shapes() {
        let labels = vec!["A,B".to_string(), "C".to_string()];
        let r = classification_report(&[0, 1, 1], &[0, 1, 0], &labels, Some(0.5)).unwrap();
        let csv = r.confusion_csv();
        assert_eq!(csv, "true\\pred,\"A,B\",C\n\"A,B\",1,0\nC,1,1\n");
        let j = r.evaluation_json();
        let acc = j["multiclass_classification_metrics"]["accuracy"]["value"]
            .as_f64()
            .unwrap();
        assert!((acc - 2.0 / 3.0).abs() < 1e-12);
        assert_eq!(
            j["multiclass_classification_metrics"]["confusion_matrix"]["C"]["A,B"],
            1
        );
        assert!(r
            .per_class_csv()
            .starts_with("label,precision,recall,f1,support\n\"A,B\",0.5,1,"));
    }
}

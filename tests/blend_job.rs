//! The encoder blended with the tf-idf baseline (issue 17): a job keeps the blend in the model
//! directory only when it beats the encoder alone on the evaluation rows; `predict` then scores
//! exactly as the job reported (and `--encoder-only` as the encoder alone did); transformers
//! still opens the directory, and the saved files reproduce the blend outside txcat.

mod common;
mod support;

use common::{separable_csv, write_quick_hyperparameters, OptMl, TXCAT};
use std::path::Path;
use std::process::Command;

const SETTINGS: &str = "txcat_blend.json";
const WEIGHTS: &str = "txcat_tfidf.safetensors";

/// A job whose encoder has barely trained (one epoch at a low rate) on a set tf-idf separates.
fn weak_encoder_job(extra: &[(&str, &str)]) -> OptMl {
    let ml = OptMl::new();
    ml.add_channel_file("train", "train.csv", separable_csv(160, 21));
    ml.add_channel_file("validation", "val.csv", separable_csv(40, 22));
    let mut hp = vec![("epochs", "1"), ("learning_rate", "0.0001")];
    hp.extend_from_slice(extra);
    write_quick_hyperparameters(&ml, &hp);
    ml.assert_trained();
    ml
}

fn read_json(path: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}

/// `txcat predict` on the validation file; returns (predicted labels, gold labels).
fn predict(ml: &OptMl, model: &Path, extra: &[&str]) -> (Vec<String>, Vec<String>) {
    let input = ml.path("input/data/validation/val.csv");
    let dir = tempfile::tempdir().unwrap();
    let output = dir.path().join("out.csv");
    common::run_predict(model, &input, &output, extra);
    let mut reader = csv::Reader::from_path(&output).unwrap();
    let headers = reader.headers().unwrap().clone();
    let col = |name: &str| headers.iter().position(|h| h == name).unwrap();
    let (gold, label) = (col("category"), headers.len() - 2);
    reader
        .records()
        .map(|r| {
            let r = r.unwrap();
            (r[label].to_string(), r[gold].to_string())
        })
        .unzip()
}

fn accuracy(predicted: &[String], gold: &[String]) -> f64 {
    let right = predicted.iter().zip(gold).filter(|(p, g)| p == g).count();
    right as f64 / gold.len() as f64
}

#[test]
fn a_blend_that_beats_the_encoder_is_kept_and_predict_scores_as_the_job_reported() {
    let ml = weak_encoder_job(&[]);
    let model = ml.model_dir();
    let metrics = read_json(&ml.path("output/data/metrics.json"));
    let blend = &metrics["tfidf_blend"];
    assert_eq!(blend["kept"], true, "{blend}");
    assert!(model.join(SETTINGS).is_file() && model.join(WEIGHTS).is_file());
    let summary = read_json(&ml.path("output/data/run_summary.json"));
    assert_eq!(summary["tfidf_blend_kept"], true);

    let weight = blend["weight"].as_f64().unwrap();
    assert!(weight > 0.0 && weight <= 1.0, "{weight}");
    assert!(blend["temperature"].as_f64().unwrap() > 0.0);
    let score = |block: &serde_json::Value, name: &str| block[name].as_f64().unwrap();
    let (blend_acc, encoder_acc) = (
        score(&blend["final"], "eval_accuracy"),
        score(&blend["encoder_final"], "eval_accuracy"),
    );
    let criterion = |b: &serde_json::Value| score(b, "eval_accuracy") + score(b, "eval_f1_macro");
    assert!(
        criterion(&blend["final"]) > criterion(&blend["encoder_final"]),
        "{blend}"
    );
    // The encoder alone is the job's encoder: same accuracy as its own final block.
    assert_eq!(encoder_acc, score(&metrics["final"], "eval_accuracy"));
    let evaluation = read_json(&ml.path("output/data/evaluation.json"));
    assert_eq!(
        evaluation["tfidf_blend_multiclass_classification_metrics"]["accuracy"]["value"]
            .as_f64()
            .unwrap(),
        blend_acc
    );

    // predict mixes the blend in and scores exactly what the job reported; --encoder-only
    // gives the encoder alone.
    let (blended, gold) = predict(&ml, &model, &[]);
    assert_eq!(gold.len(), 40);
    assert_eq!(accuracy(&blended, &gold), blend_acc);
    let (alone, _) = predict(&ml, &model, &["--encoder-only"]);
    assert_eq!(accuracy(&alone, &gold), encoder_acc);
}

#[test]
fn blend_tfidf_false_or_no_baseline_keeps_the_encoder_alone() {
    for key in ["blend_tfidf", "baseline_tfidf"] {
        let ml = weak_encoder_job(&[(key, "false")]);
        let model = ml.model_dir();
        assert!(model.join("model.safetensors").is_file());
        assert!(!model.join(SETTINGS).exists(), "{key}=false");
        assert!(!model.join(WEIGHTS).exists(), "{key}=false");
        let metrics = read_json(&ml.path("output/data/metrics.json"));
        assert!(metrics.get("tfidf_blend").is_none(), "{key}=false");
        let summary = read_json(&ml.path("output/data/run_summary.json"));
        assert_eq!(summary["tfidf_blend_kept"], false);
        // Without the baseline there is nothing to blend; with it, it is still reported.
        assert_eq!(
            metrics.get("tfidf_baseline").is_some(),
            key == "blend_tfidf",
            "{key}=false"
        );
    }
}

#[test]
fn a_broken_blend_fails_predict_with_one_line_naming_the_file() {
    let ml = weak_encoder_job(&[]);
    let copy = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(ml.model_dir()).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), copy.path().join(entry.file_name())).unwrap();
    }
    std::fs::write(copy.path().join(WEIGHTS), b"truncated").unwrap();
    let input = ml.path("input/data/validation/val.csv");
    let output = copy.path().join("out.csv");
    let out = Command::new(TXCAT)
        .args(["predict", "--model"])
        .arg(copy.path())
        .arg("--input")
        .arg(&input)
        .arg("--output")
        .arg(&output)
        .output()
        .unwrap();
    assert_ne!(out.status.code(), Some(0));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let line = stderr
        .lines()
        .find(|l| l.contains(WEIGHTS))
        .unwrap_or_else(|| panic!("no line names {WEIGHTS}: {stderr}"));
    assert!(
        line.contains("--encoder-only") || line.contains("delete"),
        "{line}"
    );
    assert!(!output.exists(), "no output file on failure");
}

/// Reads the model directory with transformers and the blend files with numpy and scikit-learn,
/// and labels the texts as the files say: `(1 - w) * softmax(encoder) + w * softmax(svm / T)`.
const PY: &str = r#"
import json, sys
import numpy as np, torch
from safetensors.numpy import load_file
from sklearn.feature_extraction.text import TfidfVectorizer
from transformers import AutoModelForSequenceClassification, AutoTokenizer
d = json.load(sys.stdin)
m = d["model"]
s = json.load(open(m + "/txcat_blend.json"))
t = load_file(m + "/txcat_tfidf.safetensors")
vec = TfidfVectorizer(ngram_range=(1, 2), vocabulary={w: i for i, w in enumerate(s["vocabulary"])})
vec.fit(d["texts"])
vec.idf_ = np.array(s["idf"])
dec = vec.transform(d["texts"]) @ t["weight"].astype(np.float64) + t["bias"]
z = dec / s["temperature"]
q = np.exp(z - z.max(axis=1, keepdims=True))
q /= q.sum(axis=1, keepdims=True)
tok = AutoTokenizer.from_pretrained(m)
model = AutoModelForSequenceClassification.from_pretrained(m).eval()
with torch.no_grad():
    enc = tok(d["texts"], padding=True, truncation=True, max_length=d["max_length"], return_tensors="pt")
    p = torch.softmax(model(**enc).logits.float() / s["encoder_temperature"], -1).numpy()
b = (1 - s["weight"]) * p + s["weight"] * q
top = np.sort(b, axis=1)
print(json.dumps({
    "labels": [model.config.id2label[int(i)] for i in b.argmax(axis=1)],
    "margin": (top[:, -1] - top[:, -2]).tolist(),
}))
"#;

#[test]
fn transformers_opens_the_directory_and_the_saved_files_reproduce_the_blend() {
    let ml = weak_encoder_job(&[]);
    let model = ml.model_dir();
    let (blended, _) = predict(&ml, &model, &[]);
    let texts: Vec<String> = csv::Reader::from_path(ml.path("input/data/validation/val.csv"))
        .unwrap()
        .records()
        .map(|r| r.unwrap()[0].to_string())
        .collect();
    let input = serde_json::json!({"model": model, "texts": texts, "max_length": 32});
    let py = support::python::run_json(PY, &input, "transformers + numpy blend");
    let labels: Vec<String> = serde_json::from_value(py["labels"].clone()).unwrap();
    let margins: Vec<f64> = serde_json::from_value(py["margin"].clone()).unwrap();
    let mut compared = 0;
    for (i, (mine, theirs)) in blended.iter().zip(&labels).enumerate() {
        // Rows whose two best labels are closer than float noise may go either way.
        if margins[i] > 1e-4 {
            assert_eq!(mine, theirs, "row {i}: {}", texts[i]);
            compared += 1;
        }
    }
    assert!(compared >= 36, "only {compared} rows had a clear winner");
}

//! A training job scores the tf-idf baseline beside the encoder (issue 17): `metrics.json` and
//! `evaluation.json` carry its block, scored on the encoder's evaluation rows, and the log its
//! line; `baseline_tfidf=false` leaves all of it out.

mod common;

use common::{describe, fixture, sdk_encode, separable_csv, OptMl};
use std::path::Path;

/// A quick tiny-model job with train/validation channels.
fn job(extra: &[(&str, &str)]) -> (OptMl, String) {
    job_on(&separable_csv(160, 11), &separable_csv(40, 12), extra)
}

fn job_on(train: &str, validation: &str, extra: &[(&str, &str)]) -> (OptMl, String) {
    let ml = OptMl::new();
    ml.add_channel_file("train", "train.csv", train);
    ml.add_channel_file("validation", "val.csv", validation);
    let model = fixture("tiny-distilbert-trainable");
    let model = sdk_encode(model.to_str().unwrap());
    let mut hp = vec![
        ("model_name_or_path", model.as_str()),
        ("epochs", "1"),
        ("train_batch_size", "16"),
        ("max_length", "32"),
        ("num_threads", "2"),
        ("save_strategy", "\"no\""),
    ];
    hp.extend_from_slice(extra);
    ml.write_hyperparameters(&hp);
    let log = describe(&ml.assert_trained());
    (ml, log)
}

fn read_json(path: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}

#[test]
fn a_job_reports_the_baseline_beside_the_encoder() {
    let (ml, log) = job(&[]);
    let metrics = read_json(&ml.path("output/data/metrics.json"));
    let baseline = &metrics["tfidf_baseline"];
    assert!(
        baseline.get("error").is_none(),
        "baseline failed: {baseline}"
    );

    // Scored on the encoder's evaluation rows: same classes, same supports.
    let supports = |per_class: &serde_json::Value| -> Vec<(String, u64)> {
        per_class
            .as_array()
            .expect("per_class")
            .iter()
            .map(|c| {
                (
                    c["label"].as_str().unwrap().to_string(),
                    c["support"].as_u64().unwrap(),
                )
            })
            .collect()
    };
    assert_eq!(
        supports(&baseline["per_class"]),
        supports(&metrics["per_class"])
    );
    assert_eq!(baseline["eval_rows"], 40);
    assert_eq!(baseline["train_rows"], 160);
    assert_eq!(baseline["solver"], "dual", "fewer rows than features");
    assert_eq!(baseline["problems"], 4);
    assert!(baseline["features"].as_u64().unwrap() > 160);
    // Each class has its own marker words: a linear model on words separates the set.
    let accuracy = baseline["final"]["eval_accuracy"].as_f64().unwrap();
    assert!(accuracy >= 0.9, "baseline accuracy {accuracy}");
    let f1 = baseline["final"]["eval_f1_macro"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&f1), "macro-F1 {f1}");
    assert!(
        baseline["final"].get("eval_loss").is_none(),
        "an SVM has no loss"
    );
    let confusion: u64 = baseline["confusion_matrix"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|r| r.as_array().unwrap())
        .map(|n| n.as_u64().unwrap())
        .sum();
    assert_eq!(confusion, 40);

    // evaluation.json: the encoder's block and the baseline's, in the same shape.
    let evaluation = read_json(&ml.path("output/data/evaluation.json"));
    let encoder = evaluation["multiclass_classification_metrics"]
        .as_object()
        .unwrap();
    let mirrored = evaluation["tfidf_baseline_multiclass_classification_metrics"]
        .as_object()
        .expect("baseline block in evaluation.json");
    let keys = |m: &serde_json::Map<String, serde_json::Value>| -> Vec<String> {
        m.keys().filter(|k| *k != "loss").cloned().collect()
    };
    assert_eq!(keys(mirrored), keys(encoder));
    assert_eq!(
        mirrored["accuracy"]["value"].as_f64().unwrap(),
        accuracy,
        "evaluation.json and metrics.json disagree"
    );

    // One log line with names the encoder's metric regexes do not capture.
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("tfidf_baseline_accuracy="))
        .collect();
    assert_eq!(lines.len(), 1, "{log}");
    let logged = format!(
        "tfidf_baseline_accuracy={};",
        txcat::metrics::format_value(accuracy)
    );
    assert!(lines[0].contains(&logged), "{logged} not in {}", lines[0]);
    assert!(!lines[0].contains("eval_accuracy="), "{}", lines[0]);
}

#[test]
fn baseline_tfidf_false_leaves_it_out() {
    let (ml, log) = job(&[("baseline_tfidf", "false")]);
    let metrics = read_json(&ml.path("output/data/metrics.json"));
    assert!(metrics.get("tfidf_baseline").is_none());
    assert!(
        metrics["final"]["eval_accuracy"].is_f64(),
        "encoder metrics kept"
    );
    let evaluation = read_json(&ml.path("output/data/evaluation.json"));
    assert!(evaluation
        .get("tfidf_baseline_multiclass_classification_metrics")
        .is_none());
    assert!(!log.contains("tfidf_baseline_accuracy="), "{log}");
    assert!(
        log.contains("tfidf baseline skipped: baseline_tfidf=false"),
        "{log}"
    );
}

#[test]
fn a_baseline_failure_is_recorded_and_the_model_still_ships() {
    // Texts of single characters only: the encoder trains on them, tf-idf finds no token.
    let csv = |rows: usize| {
        let mut csv = String::from("text,category\n");
        for i in 0..rows {
            let (text, label) = [("a 1", "A"), ("b", "B"), ("c 2", "C"), ("é", "D")][i % 4];
            csv.push_str(&format!("{text},{label}\n"));
        }
        csv
    };
    let (ml, log) = job_on(&csv(40), &csv(12), &[]);
    assert!(ml.model_dir().join("model.safetensors").is_file(), "{log}");
    let metrics = read_json(&ml.path("output/data/metrics.json"));
    let error = metrics["tfidf_baseline"]["error"]
        .as_str()
        .expect("error recorded");
    assert!(error.contains("no word of two or more"), "{error}");
    assert!(metrics["final"]["eval_accuracy"].is_f64());
    let evaluation = read_json(&ml.path("output/data/evaluation.json"));
    assert!(evaluation
        .get("tfidf_baseline_multiclass_classification_metrics")
        .is_none());
    assert!(log.contains("tfidf baseline failed"), "{log}");
}

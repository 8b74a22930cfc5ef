//! Champion and challenger in one job (issue 12, part 3), through the binary: a second job that
//! starts from the first job's `model.tar.gz` with one label added scores the first model on its
//! evaluation rows before training, on the rows whose labels it knows (the others counted), and
//! writes `baseline` / `improvement` into `metrics.json` and
//! `baseline_multiclass_classification_metrics` / `improvement` into `evaluation.json`.
//!
//! The first model's scores are known independently: the second job's evaluation rows are the
//! first job's plus rows of a new label that sorts first, so every old label changes id. Scored
//! by name, the champion must reproduce the first job's own final evaluation; scored by
//! position it would not.

mod common;

use common::{fixture, separable_csv, OptMl};
use std::path::{Path, PathBuf};

fn read_json(path: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}

/// Rows of a new `ATM` category (sorts before every old label).
fn atm_rows(n: usize) -> String {
    (0..n)
        .map(|i| format!("atm cash withdrawal {i},ATM\n"))
        .collect()
}

const SETTINGS: &[(&str, &str)] = &[
    ("train_batch_size", "16"),
    ("max_length", "32"),
    ("num_threads", "1"),
    ("save_strategy", "no"),
    ("logging_steps", "1"),
    ("baseline_tfidf", "false"),
];

/// A job on the separable data (+ `extra` train / validation rows) with these settings.
fn job(extra: (&str, &str), settings: &[(&str, &str)]) -> OptMl {
    let ml = OptMl::new();
    ml.add_channel_file("train", "train.csv", separable_csv(48, 1) + extra.0);
    ml.add_channel_file("validation", "val.csv", separable_csv(16, 2) + extra.1);
    ml.write_hyperparameters(&[SETTINGS, settings].concat());
    ml
}

fn train(ml: &OptMl) -> String {
    let out = ml.assert_trained();
    String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout)
}

/// The first job: the four separable classes, trained a few steps so its scores mean something.
fn first_model() -> OptMl {
    let start = fixture("tiny-distilbert-trainable");
    let ml = job(
        ("", ""),
        &[
            ("model_name_or_path", start.to_str().unwrap()),
            ("max_steps", "6"),
            ("learning_rate", "0.01"),
        ],
    );
    train(&ml);
    ml
}

/// `model.tar.gz` of `dir`, as the `output_uri` upload and SageMaker pack it.
fn pack(dir: &Path, out: &Path) {
    std::fs::create_dir_all(out.parent().unwrap()).unwrap();
    let mut file = std::fs::File::create(out).unwrap();
    txcat::storage::s3::write_tarball(dir, &mut file).unwrap();
}

fn reports(ml: &OptMl) -> (serde_json::Value, serde_json::Value) {
    (
        read_json(&ml.path("output/data/metrics.json")),
        read_json(&ml.path("output/data/evaluation.json")),
    )
}

fn value(eval: &serde_json::Value, block: &str, name: &str) -> f64 {
    eval[block][name]["value"]
        .as_f64()
        .unwrap_or_else(|| panic!("evaluation.json lacks {block}.{name}.value: {eval}"))
}

/// The champion's block reproduces the first job's final evaluation, and `improvement` is new
/// minus champion in both files.
fn assert_champion_of(first: &OptMl, ml: &OptMl, atm_rows: u64, chosen_by: &str) {
    let (old_metrics, _) = reports(first);
    let (metrics, eval) = reports(ml);
    let baseline = &metrics["baseline"];
    assert_eq!(baseline["chosen_by"], chosen_by, "{baseline}");
    assert_eq!(baseline["eval_rows"], 16, "{baseline}");
    assert_eq!(baseline["unknown_label_rows"], atm_rows, "{baseline}");
    let unknown: Vec<String> = serde_json::from_value(baseline["unknown_labels"].clone()).unwrap();
    assert_eq!(unknown, ["ATM"]);
    for name in [
        "eval_accuracy",
        "eval_f1_macro",
        "eval_f1_weighted",
        "eval_loss",
    ] {
        let (got, want) = (
            baseline["final"][name].as_f64().unwrap(),
            old_metrics["final"][name].as_f64().unwrap(),
        );
        assert!(
            (got - want).abs() <= 1e-5,
            "{name}: champion scored {got}, the first job {want}"
        );
    }

    let mcm = "multiclass_classification_metrics";
    let base = "baseline_multiclass_classification_metrics";
    assert_eq!(
        value(&eval, base, "accuracy"),
        baseline["final"]["eval_accuracy"].as_f64().unwrap()
    );
    for (evaluation_name, metrics_name) in [
        ("accuracy", "eval_accuracy"),
        ("macro_f1", "eval_f1_macro"),
        ("weighted_f1", "eval_f1_weighted"),
    ] {
        let want = value(&eval, mcm, evaluation_name) - value(&eval, base, evaluation_name);
        let got = value(&eval, "improvement", evaluation_name);
        assert!(
            (got - want).abs() <= 1e-12,
            "{evaluation_name}: {got} vs {want}"
        );
        assert_eq!(metrics["improvement"][metrics_name].as_f64(), Some(got));
    }
}

#[test]
fn the_previous_model_tar_gz_is_scored_as_the_baseline() {
    let first = first_model();
    let next = job(
        (&atm_rows(8), &atm_rows(4)),
        &[("max_steps", "2"), ("learning_rate", "0.01")],
    );
    pack(
        &first.model_dir(),
        &next.path("input/data/model/model.tar.gz"),
    );
    let log = train(&next);
    assert_champion_of(&first, &next, 4, "starting_model");
    // One line carries both models' scores.
    assert!(
        log.lines().any(|l| l.contains("new_accuracy=")
            && l.contains("baseline_model_accuracy=")
            && l.contains("improvement_accuracy=")
            && !l.contains("eval_accuracy=")),
        "{log}"
    );
}

#[test]
fn baseline_model_and_the_baseline_channel_name_another_model() {
    let first = first_model();
    let archive = first.path("packed/model.tar.gz");
    pack(&first.model_dir(), &archive);
    // The starting model is a classifier of other labels (lowercase fixture labels): only the
    // named baseline is compared.
    let start = fixture("tiny-distilbert-trainable");
    let settings = [
        ("model_name_or_path", start.to_str().unwrap()),
        ("max_steps", "1"),
    ];

    let named = job(
        (&atm_rows(8), &atm_rows(4)),
        &[
            &settings[..],
            &[("baseline_model", archive.to_str().unwrap())],
        ]
        .concat(),
    );
    train(&named);
    assert_champion_of(&first, &named, 4, "baseline_model");

    let channel = job((&atm_rows(8), &atm_rows(4)), &settings);
    pack(
        &first.model_dir(),
        &channel.path("input/data/baseline/model.tar.gz"),
    );
    train(&channel);
    assert_champion_of(&first, &channel, 4, "baseline_channel");
}

/// `tiny-distilbert-trainable` without its head: no classifier tensors, no id2label.
fn base_model(root: &Path) -> PathBuf {
    let from = fixture("tiny-distilbert-trainable");
    let dir = root.join("base");
    std::fs::create_dir_all(&dir).unwrap();
    for entry in std::fs::read_dir(&from).unwrap().flatten() {
        let name = entry.file_name();
        if name != "model.safetensors" && name != "config.json" {
            std::fs::copy(entry.path(), dir.join(&name)).unwrap();
        }
    }
    let mut config = read_json(&from.join("config.json"));
    let map = config.as_object_mut().unwrap();
    for key in ["id2label", "label2id", "architectures"] {
        map.remove(key);
    }
    std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
    let bytes = std::fs::read(from.join("model.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let kept: Vec<(String, safetensors::tensor::TensorView<'_>)> = st
        .tensors()
        .into_iter()
        .filter(|(name, _)| name.starts_with("distilbert."))
        .collect();
    assert!(kept.len() < st.len(), "the fixture has a head to strip");
    let metadata = [("format".to_string(), "pt".to_string())].into();
    safetensors::serialize_to_file(kept, Some(metadata), &dir.join("model.safetensors")).unwrap();
    dir
}

#[test]
fn a_base_starting_model_has_no_baseline_and_a_named_one_must_be_a_classifier() {
    let scratch = tempfile::tempdir().unwrap();
    let base = base_model(scratch.path());
    let ml = job(
        ("", ""),
        &[
            ("model_name_or_path", base.to_str().unwrap()),
            ("max_steps", "1"),
        ],
    );
    train(&ml);
    let (metrics, eval) = reports(&ml);
    assert!(metrics["final"]["eval_accuracy"].is_f64(), "{metrics}");
    for key in ["baseline", "improvement"] {
        assert!(metrics.get(key).is_none(), "metrics.json has {key}");
    }
    for key in ["baseline_multiclass_classification_metrics", "improvement"] {
        assert!(eval.get(key).is_none(), "evaluation.json has {key}");
    }

    // Named explicitly, a base model is refused before training, with nothing published.
    let start = fixture("tiny-distilbert-trainable");
    let bad = job(
        ("", ""),
        &[
            ("model_name_or_path", start.to_str().unwrap()),
            ("baseline_model", base.to_str().unwrap()),
            ("max_steps", "1"),
        ],
    );
    let out = bad.run(&["train"]);
    bad.assert_failed(&out, 2, &["baseline model", "not a classifier"]);
    assert!(bad.model_dir_is_empty());
}

#[test]
fn the_dry_run_checks_a_named_baseline_model_without_training() {
    let scratch = tempfile::tempdir().unwrap();
    let start = fixture("tiny-distilbert-trainable");
    let dry_run = |baseline: &Path| {
        let ml = job(
            ("", ""),
            &[
                ("model_name_or_path", start.to_str().unwrap()),
                ("baseline_model", baseline.to_str().unwrap()),
            ],
        );
        let out = ml.run(&["train", "--dry-run"]);
        (ml, out)
    };

    // A packed classifier: resolved (unpacked) and checked, named in the summary.
    let archive = scratch.path().join("prev/model.tar.gz");
    pack(&start, &archive);
    let (ml, out) = dry_run(&archive);
    let summary = ml.assert_dry_run_ok(&out);
    let line = summary
        .lines()
        .find(|l| l.starts_with("Baseline model:"))
        .unwrap_or_else(|| panic!("no baseline line\n{summary}"));
    assert!(
        line.contains("baseline_model") && line.contains("checked"),
        "{line}"
    );
    assert!(ml.model_dir_is_empty());

    // A base model, a missing path and a corrupt archive each fail the dry run with one line.
    let (ml, out) = dry_run(&base_model(scratch.path()));
    ml.assert_failed(&out, 2, &["baseline model", "not a classifier"]);
    let (ml, out) = dry_run(&scratch.path().join("nowhere"));
    ml.assert_failed(&out, 2, &["baseline model", "nowhere"]);
    let broken = scratch.path().join("broken.tar.gz");
    std::fs::write(&broken, b"not a tarball").unwrap();
    let (ml, out) = dry_run(&broken);
    ml.assert_failed(&out, 2, &["baseline model", "broken.tar.gz"]);
}

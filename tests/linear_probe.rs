//! Linear probing before fine-tuning (`linear_probe=true`, issue 17): a fresh head is fitted
//! on the pretrained encoder's features of the training rows, the saved model carries it, a
//! head carried over whole from the last model is left alone, and one with new labels is
//! refitted.
//!
//! The jobs take one optimizer step at learning rate 1e-10, so the saved head is the head the
//! job started training from (to far below the differences asserted).

mod common;

use common::{fixture, run_predict, separable_csv, OptMl};
use std::path::Path;

fn read_json(path: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}

/// A job on `train_csv` (validation: separable rows of another seed) starting from `model`.
fn job(model: &Path, train_csv: String, settings: &[(&str, &str)]) -> OptMl {
    let ml = OptMl::new();
    ml.add_channel_file("train", "train.csv", train_csv);
    ml.add_channel_file("validation", "val.csv", separable_csv(16, 2));
    let mut hp = vec![
        ("model_name_or_path", model.to_str().unwrap()),
        ("train_batch_size", "16"),
        ("max_length", "32"),
        ("num_threads", "1"),
        ("save_strategy", "no"),
        ("weight_decay", "0"),
        // The encoder's own predictions are what is checked.
        ("baseline_tfidf", "false"),
    ];
    hp.extend_from_slice(settings);
    ml.write_hyperparameters(&hp);
    ml.assert_trained();
    ml
}

const ONE_TINY_STEP: &[(&str, &str)] = &[("max_steps", "1"), ("learning_rate", "1e-10")];

fn with(extra: &[(&'static str, &'static str)]) -> Vec<(&'static str, &'static str)> {
    ONE_TINY_STEP.iter().chain(extra).copied().collect()
}

/// `run_summary.json`'s `linear_probe` record (null when no probe ran).
fn probe_record(ml: &OptMl) -> serde_json::Value {
    read_json(&ml.path("output/data/run_summary.json"))["linear_probe"].clone()
}

/// Accuracy of `ml`'s saved model on the CSV at `input`, through `txcat predict`.
fn accuracy_on(ml: &OptMl, input: &Path) -> f64 {
    let out = ml.path("predictions.csv");
    run_predict(&ml.model_dir(), input, &out, &["--encoder-only"]);
    let mut reader = csv::Reader::from_path(&out).unwrap();
    let header = reader.headers().unwrap().clone();
    let gold = header.iter().position(|h| h == "category").unwrap();
    let predicted = header.iter().position(|h| h == "predicted_label").unwrap();
    let rows: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
    let right = rows.iter().filter(|r| r[gold] == r[predicted]).count();
    right as f64 / rows.len() as f64
}

/// The saved `classifier.weight` values.
fn classifier_weight(ml: &OptMl) -> Vec<f32> {
    let bytes = std::fs::read(ml.model_dir().join("model.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    st.tensor("classifier.weight")
        .unwrap()
        .data()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

#[test]
fn the_probe_fits_a_fresh_head_and_the_saved_model_predicts_what_it_reported() {
    let tiny = fixture("tiny-distilbert-trainable");
    let probed = job(
        &tiny,
        separable_csv(48, 1),
        &with(&[("linear_probe", "true")]),
    );
    let plain = job(&tiny, separable_csv(48, 1), ONE_TINY_STEP);

    let record = probe_record(&probed);
    assert_eq!(record["rows"], 48, "{record}");
    assert_eq!(record["converged"], true, "{record}");
    assert!(record["iterations"].as_u64().unwrap() > 0, "{record}");
    assert!(
        probe_record(&plain).is_null(),
        "no probe without linear_probe"
    );

    let train = probed.path("input/data/train/train.csv");
    let reported = record["train_accuracy"].as_f64().unwrap();
    let probed_accuracy = accuracy_on(&probed, &train);
    let plain_accuracy = accuracy_on(&plain, &train);
    // The saved head is the fitted one: predict reproduces the probe's own score (one row of
    // slack for a near-tie that fp32 sums in another order break the other way).
    assert!(
        (probed_accuracy - reported).abs() <= 1.0 / 48.0 + 1e-9,
        "predict {probed_accuracy} vs the probe's {reported}"
    );
    // A random head is near chance (4 classes); the probe's fits the rows.
    assert!(
        probed_accuracy >= 0.75 && probed_accuracy >= plain_accuracy + 0.25,
        "probed {probed_accuracy}, random head {plain_accuracy}"
    );
}

#[test]
fn a_head_carried_over_whole_is_not_refitted_and_one_with_new_labels_is() {
    let first = job(
        &fixture("tiny-distilbert-trainable"),
        separable_csv(48, 1),
        &[("max_steps", "6"), ("learning_rate", "0.01")],
    );
    let trained = first.model_dir();

    let same = job(
        &trained,
        separable_csv(48, 1),
        &with(&[("linear_probe", "true")]),
    );
    assert!(probe_record(&same).is_null(), "{}", probe_record(&same));
    assert!(
        max_diff(&classifier_weight(&first), &classifier_weight(&same)) <= 1e-6,
        "the carried-over head changed"
    );

    let rent: String = (0..8)
        .map(|i| format!("rent payment flat {i},RENT\n"))
        .collect();
    let grown = job(
        &trained,
        separable_csv(48, 1) + &rent,
        &with(&[("linear_probe", "true")]),
    );
    let record = probe_record(&grown);
    assert_eq!(record["rows"], 56, "{record}");
    let grown_accuracy = accuracy_on(&grown, &grown.path("input/data/train/train.csv"));
    assert!(
        grown_accuracy >= 0.75,
        "refitted head scores {grown_accuracy} on its rows"
    );
}

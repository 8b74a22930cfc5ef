//! Linear probing before fine-tuning (`linear_probe=true`, issue 17): a fresh head is fitted
//! on the pretrained encoder's features of the training rows and the saved model carries it; on
//! a warm start only the rows of new labels are fitted, around the carried-over rows, which stay
//! as they were.
//!
//! The jobs take one optimizer step at learning rate 1e-10, so the saved head is the head the
//! job started training from (to far below the differences asserted).

mod common;

use common::{fixture, run_predict, separable_csv, OptMl};
use std::collections::BTreeMap;
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

/// The saved classifier rows by label: weight row followed by the bias.
fn head_rows(ml: &OptMl) -> BTreeMap<String, Vec<f32>> {
    let dir = ml.model_dir();
    let bytes = std::fs::read(dir.join("model.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let floats = |name: &str| -> Vec<f32> {
        st.tensor(name)
            .unwrap()
            .data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect()
    };
    let (weight, bias) = (floats("classifier.weight"), floats("classifier.bias"));
    let hidden = weight.len() / bias.len();
    let config = read_json(&dir.join("config.json"));
    config["id2label"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(id, label)| {
            let i: usize = id.parse().unwrap();
            let mut row = weight[i * hidden..(i + 1) * hidden].to_vec();
            row.push(bias[i]);
            (label.as_str().unwrap().to_string(), row)
        })
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
    let plain = job(
        &tiny,
        separable_csv(48, 1),
        &with(&[("linear_probe", "false")]),
    );

    let record = probe_record(&probed);
    assert_eq!(record["rows"], 48, "{record}");
    assert_eq!(record["head_rows"], 4, "{record}");
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
fn on_a_warm_start_only_new_labels_rows_are_fitted_and_kept_rows_stay() {
    let first = job(
        &fixture("tiny-distilbert-trainable"),
        separable_csv(48, 1),
        // A random head trained a little: the tiny random encoder's features have a spread of
        // about a hundredth, so a probed head there has rows a hundred times larger, which six
        // steps at this rate leave fitting other features (real encoders' spread is ~0.3).
        &[
            ("max_steps", "6"),
            ("learning_rate", "0.01"),
            ("linear_probe", "false"),
        ],
    );
    let trained = first.model_dir();

    let before = head_rows(&first);
    let same = job(
        &trained,
        separable_csv(48, 1),
        &with(&[("linear_probe", "true")]),
    );
    assert!(probe_record(&same).is_null(), "{}", probe_record(&same));
    for (label, row) in head_rows(&same) {
        assert!(
            max_diff(&before[&label], &row) <= 1e-6,
            "{label}: the carried-over row changed"
        );
    }

    // A new label: its row is fitted around the four carried over, which stay as they were.
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
    assert_eq!(
        record["head_rows"], 1,
        "only RENT's row is fitted: {record}"
    );
    let after = head_rows(&grown);
    assert_eq!(after.len(), 5);
    for (label, row) in &before {
        assert!(
            max_diff(row, &after[label]) <= 1e-6,
            "{label}: a kept row was refitted"
        );
    }
    // A fresh row would be normal(0, 0.02) with a zero bias and win few rows; the fitted one
    // takes the new label's rows from the kept rows.
    let rent_row = &after["RENT"];
    let norm = rent_row.iter().map(|v| v * v).sum::<f32>().sqrt();
    assert!(norm > 1.0, "the RENT row looks unfitted (norm {norm})");
    let rent_csv = grown.path("rent.csv");
    std::fs::write(&rent_csv, format!("text,category\n{rent}")).unwrap();
    let rent_accuracy = accuracy_on(&grown, &rent_csv);
    assert!(
        rent_accuracy >= 0.75,
        "the RENT row wins {rent_accuracy} of its rows"
    );
}

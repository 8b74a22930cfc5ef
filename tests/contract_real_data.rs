//! The bundled real statement lines (`data/za-bank-txn`): 44 labels overall, some only
//! in val/test. Expected counts are computed here with the `csv` crate, not copied from txcat.

mod common;
use common::{channel_line, csv_label_counts, label_table, repo_data, OptMl};
use std::collections::BTreeSet;

fn tree_with(eval_channel: &str, eval_file: &str) -> OptMl {
    let ml = OptMl::new();
    ml.write_inputdataconfig(&[("train", "File"), (eval_channel, "File")]);
    ml.write_resourceconfig();
    ml.write_hyperparameters(&[
        ("epochs", "1"),
        ("train_batch_size", "32"),
        ("model_name", "\"distilbert-base-uncased\""),
    ]);
    let data = repo_data("za-bank-txn");
    ml.copy_channel_file("train", "train.csv", &data.join("train.csv"));
    ml.copy_channel_file(eval_channel, eval_file, &data.join(eval_file));
    ml
}

fn unseen(eval_file: &str) -> Vec<String> {
    let data = repo_data("za-bank-txn");
    let (_, train) = csv_label_counts(&data.join("train.csv"), "category");
    let (_, eval) = csv_label_counts(&data.join(eval_file), "category");
    eval.keys()
        .filter(|l| !train.contains_key(*l))
        .cloned()
        .collect()
}

#[test]
fn unseen_test_labels_fail_by_default_listing_them() {
    let missing = unseen("test.csv");
    assert!(!missing.is_empty(), "the sample has labels only in test");
    let ml = tree_with("test", "test.csv");
    let out = ml.run(&["train", "--dry-run"]);
    let mut needles = vec!["evaluation channel `test`", "unseen_eval_labels=drop"];
    needles.extend(missing.iter().map(String::as_str));
    let text = ml.assert_failed(&out, 2, &needles);
    assert!(
        text.contains(&missing.join(", ")),
        "labels listed sorted: {text}"
    );
}

#[test]
fn dropping_unseen_labels_passes_the_dry_run() {
    let data = repo_data("za-bank-txn");
    let (train_rows, train_counts) = csv_label_counts(&data.join("train.csv"), "category");
    let (val_rows, val_counts) = csv_label_counts(&data.join("val.csv"), "category");
    let missing = unseen("val.csv");
    let dropped: usize = missing.iter().map(|l| val_counts[l]).sum();
    let all: BTreeSet<&String> = train_counts.keys().chain(val_counts.keys()).collect();
    let (_, test_counts) = csv_label_counts(&data.join("test.csv"), "category");
    let everywhere: BTreeSet<&String> = all.iter().copied().chain(test_counts.keys()).collect();
    assert_eq!(everywhere.len(), 44, "the sample's documented label count");

    let ml = tree_with("validation", "val.csv");
    let out = ml.run(&["train", "--dry-run", "--hp", "unseen_eval_labels=drop"]);
    let summary = ml.assert_dry_run_ok(&out);
    assert_eq!(
        channel_line(&summary, "train"),
        (train_rows, 1, 0),
        "{summary}"
    );
    assert_eq!(
        channel_line(&summary, "validation"),
        (val_rows, 1, 0),
        "{summary}"
    );
    assert!(
        summary.contains(&format!(
            "Evaluation rows: {} (from channel `validation`)",
            val_rows - dropped
        )),
        "{summary}"
    );
    assert!(
        summary.contains(&format!("labels unseen in training: {dropped}:")),
        "{summary}"
    );
    let (declared, table) = label_table(&summary);
    assert_eq!(declared, train_counts.len());
    for (label, &count) in &train_counts {
        let eval = val_counts.get(label).copied().unwrap_or(0);
        assert_eq!(table[label], (count, eval), "{label}");
    }
    // Ids follow code-point order, like LabelEncoder.
    let order: Vec<&String> = table.keys().collect();
    let mut sorted = order.clone();
    sorted.sort();
    assert_eq!(order, sorted);
    assert!(summary.contains("Device: "), "{summary}");
}

#[test]
fn split_of_real_train_is_stratified_and_reproducible() {
    let ml = OptMl::new();
    ml.copy_channel_file(
        "train",
        "train.csv",
        &repo_data("za-bank-txn").join("train.csv"),
    );
    let first =
        ml.assert_dry_run_ok(&ml.run(&["train", "--dry-run", "--hp", "validation_split=0.2"]));
    let second =
        ml.assert_dry_run_ok(&ml.run(&["train", "--dry-run", "--hp", "validation_split=0.2"]));
    assert_eq!(first, second);
    let (_, table) = label_table(&first);
    let (rows, counts) = csv_label_counts(&repo_data("za-bank-txn").join("train.csv"), "category");
    let eval_total: usize = table.values().map(|(_, e)| e).sum();
    // Classes with a single row cannot be split: the hold-out is 20% of the other rows.
    let eligible: usize = counts.values().filter(|&&n| n >= 2).sum();
    assert!(eligible < rows, "the sample has single-row classes");
    assert_eq!(eval_total, (0.2 * eligible as f64).ceil() as usize);
    for (label, (train, eval)) in &table {
        assert_eq!(train + eval, counts[label], "{label}");
        assert!(*train >= 1, "{label} keeps a training row");
        if counts[label] == 1 {
            assert_eq!(*eval, 0, "{label} has one row and stays in train");
        }
        // Stratified: no class is held out far beyond its share (largest remainder adds <= 1).
        assert!(
            (*eval as f64) <= (0.2 * counts[label] as f64).floor() + 1.0,
            "{label}"
        );
    }
}

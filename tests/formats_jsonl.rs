//! JSON Lines channels through the built binary (dry runs): by extension, by the channel's
//! ContentType, mixed with CSV in one channel, and the errors for what txcat cannot read.

mod common;
use common::{label_table, OptMl};
use std::io::Write;

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(bytes).unwrap();
    enc.finish().unwrap()
}

fn jsonl(rows: &[(&str, serde_json::Value)]) -> String {
    rows.iter()
        .map(|(text, label)| {
            serde_json::json!({"description": text, "code": label, "amount": 1.5}).to_string()
                + "\n"
        })
        .collect()
}

/// A File channel `train` with no ContentType (what `fit({"train": "s3://..."})` gives).
fn undeclared(ml: &OptMl) {
    ml.write_config(
        "inputdataconfig.json",
        r#"{"train": {"TrainingInputMode": "File"}}"#,
    );
}

fn total_rows(summary: &str) -> (usize, Vec<String>) {
    let (_, labels) = label_table(summary);
    let total = labels.values().map(|(train, eval)| train + eval).sum();
    (total, labels.keys().cloned().collect())
}

#[test]
fn jsonl_by_extension_mixed_with_csv_and_numeric_labels_as_text() {
    let ml = OptMl::new();
    undeclared(&ml);
    ml.add_channel_file(
        "train",
        "part-0.jsonl.gz",
        gzip(jsonl(&[("Costa Coffee", 4000.into()), ("TFL Travel", 5000.into())]).as_bytes()),
    );
    ml.add_channel_file(
        "train",
        "part-1.json",
        jsonl(&[("Pret", 4000.into()), ("Uber", 5000.into())]),
    );
    ml.add_channel_file(
        "train",
        "part-2.csv",
        "description,code\nGreggs,4000\nStagecoach,5000\n",
    );
    ml.write_hyperparameters(&[
        ("text_column", "description"),
        ("label_column", "code"),
        ("validation_split", "0.5"),
    ]);
    let summary = ml.assert_dry_run_ok(&ml.run(&["train", "--dry-run"]));
    assert_eq!(
        total_rows(&summary),
        (6, vec!["4000".to_string(), "5000".to_string()]),
        "{summary}"
    );
}

#[test]
fn content_type_declares_the_format_of_files_without_an_extension() {
    let ml = OptMl::new();
    ml.write_config(
        "inputdataconfig.json",
        r#"{"train": {"TrainingInputMode": "File", "ContentType": "application/jsonlines"}}"#,
    );
    ml.add_channel_file(
        "train",
        "export",
        jsonl(&[
            ("a", "X".into()),
            ("b", "Y".into()),
            ("c", "X".into()),
            ("d", "Y".into()),
        ]),
    );
    ml.write_hyperparameters(&[
        ("text_column", "description"),
        ("label_column", "code"),
        ("validation_split", "0.5"),
    ]);
    // Without an extension the file is skipped by name in a directory, so name it as a single-file
    // channel the way `--channel` does.
    let path = ml.path("input/data/train/export");
    let out = ml.run(&[
        "train",
        "--dry-run",
        "--channel",
        &format!("train={}", path.display()),
    ]);
    let summary = ml.assert_dry_run_ok(&out);
    assert_eq!(total_rows(&summary).0, 4, "{summary}");
}

#[test]
fn unreadable_content_type_and_bad_lines_are_one_line_errors() {
    let ml = OptMl::new();
    ml.write_config(
        "inputdataconfig.json",
        r#"{"train": {"TrainingInputMode": "File", "ContentType": "application/x-recordio-protobuf"}}"#,
    );
    ml.add_channel_file("train", "t.csv", "text,category\na,X\nb,Y\n");
    ml.assert_failed(
        &ml.run(&["train", "--dry-run"]),
        2,
        &[
            "channel `train`: ContentType `application/x-recordio-protobuf`",
            "application/jsonlines",
        ],
    );

    let ml = OptMl::new();
    undeclared(&ml);
    ml.add_channel_file(
        "train",
        "t.jsonl",
        "{\"text\": \"a\", \"category\": \"X\"}\n{\"text\": \"b\", \"category\": [\"Y\"]}\n",
    );
    ml.assert_failed(
        &ml.run(&["train", "--dry-run"]),
        2,
        &["t.jsonl:2: field `category` is an array", "max_bad_rows"],
    );
    ml.add_channel_file(
        "train",
        "t.jsonl",
        "[{\"text\": \"a\", \"category\": \"X\"}, {\"text\": \"b\", \"category\": \"Y\"}]\n",
    );
    ml.assert_failed(
        &ml.run(&["train", "--dry-run"]),
        2,
        &["t.jsonl:1:", "lines=True"],
    );
}

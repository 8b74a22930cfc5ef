//! `txcat predict` reads what training reads (CSV dialects, JSON Lines, Parquet) and writes the input's
//! format, or the one `--output`'s extension names; the labels do not depend on the format.

mod common;
use common::{describe, CLASSES, TXCAT};
use std::path::{Path, PathBuf};
use std::process::Command;

fn model() -> PathBuf {
    common::separable_model()
}

fn predict(input: &Path, output: &Path, extra: &[&str]) -> String {
    let model = model();
    let mut args = vec![
        "predict",
        "--model",
        model.to_str().unwrap(),
        "--input",
        input.to_str().unwrap(),
        "--output",
        output.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    let out = Command::new(TXCAT).args(&args).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    std::fs::read_to_string(output).unwrap()
}

/// One text per class, taken from the words the separable set is built from.
fn texts() -> Vec<String> {
    CLASSES
        .iter()
        .map(|(_, words)| format!("{} {}", words[0], words[1 % words.len()]))
        .collect()
}

#[test]
fn every_input_format_gives_the_same_labels_and_keeps_its_fields() {
    let dir = tempfile::tempdir().unwrap();
    let texts = texts();

    // Reference: plain UTF-8 CSV.
    let plain = dir.path().join("plain.csv");
    let mut csv = String::from("id,text\n");
    for (i, t) in texts.iter().enumerate() {
        csv += &format!("{i},{t}\n");
    }
    std::fs::write(&plain, csv).unwrap();
    let reference: Vec<(String, String)> = csv::Reader::from_reader(
        predict(&plain, &dir.path().join("plain.out.csv"), &[]).as_bytes(),
    )
    .records()
    .map(|r| {
        let r = r.unwrap();
        (r[2].to_string(), r[3].to_string())
    })
    .collect();
    assert_eq!(reference.len(), texts.len());

    // `;` and windows-1252 with CRLF: the delimiter is kept in the output.
    let council = dir.path().join("council.csv");
    let mut bytes = b"id; text\r\n".to_vec();
    for (i, t) in texts.iter().enumerate() {
        bytes.extend(format!("{i};{t}\r\n").as_bytes());
    }
    std::fs::write(&council, &bytes).unwrap();
    let out = predict(
        &council,
        &dir.path().join("council.out.csv"),
        &["--csv-encoding", "windows-1252"],
    );
    let mut reader = csv::ReaderBuilder::new()
        .delimiter(b';')
        .from_reader(out.as_bytes());
    let got: Vec<String> = reader
        .records()
        .map(|r| r.unwrap()[2].to_string())
        .collect();
    let want: Vec<String> = reference.iter().map(|(l, _)| l.clone()).collect();
    assert_eq!(got, want, "{out}");

    // JSON Lines in, JSON Lines out: every field kept, predictions added.
    let jsonl = dir.path().join("rows.jsonl");
    let lines: String = texts
        .iter()
        .enumerate()
        .map(|(i, t)| {
            serde_json::json!({"id": i, "text": t, "meta": {"k": "}"}}).to_string() + "\n"
        })
        .collect();
    std::fs::write(&jsonl, lines).unwrap();
    let out = predict(&jsonl, &dir.path().join("rows.out"), &[]);
    let objects: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(objects.len(), texts.len());
    for (i, o) in objects.iter().enumerate() {
        assert_eq!(o["id"], i);
        assert_eq!(o["meta"]["k"], "}");
        assert_eq!(o["predicted_label"], reference[i].0.as_str(), "{out}");
    }

    // JSON Lines in, CSV out by extension, with top-k.
    let out = predict(&jsonl, &dir.path().join("rows.out.csv"), &["--top-k", "2"]);
    let mut reader = csv::Reader::from_reader(out.as_bytes());
    assert_eq!(
        reader.headers().unwrap().iter().collect::<Vec<_>>(),
        vec!["text", "label_1", "score_1", "label_2", "score_2"]
    );
    let first: Vec<String> = reader
        .records()
        .map(|r| r.unwrap()[1].to_string())
        .collect();
    assert_eq!(first, want);
}

#[test]
fn a_wrong_delimiter_or_bad_line_names_the_flag_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let model = model();
    let input = dir.path().join("in.csv");
    std::fs::write(&input, "id;text\n1;Costa\n").unwrap();
    let out = Command::new(TXCAT)
        .args(["predict", "--model", model.to_str().unwrap(), "--input"])
        .arg(&input)
        .args(["--output", "/dev/null", "--csv-delimiter", ","])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--csv-delimiter"),
        "{}",
        describe(&out)
    );

    let input = dir.path().join("in.jsonl");
    std::fs::write(&input, "{\"text\": \"a\"}\n[1]\n").unwrap();
    let out = Command::new(TXCAT)
        .args(["predict", "--model", model.to_str().unwrap(), "--input"])
        .arg(&input)
        .args(["--output"])
        .arg(dir.path().join("o.jsonl"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("line 2: not a JSON object"),
        "{}",
        describe(&out)
    );
    assert!(!dir.path().join("o.jsonl").exists());
}

#[test]
fn parquet_input_gives_the_csv_labels_as_csv_or_json_lines_and_never_parquet() {
    use common::parquet::{parquet_bytes, Col};
    let dir = tempfile::tempdir().unwrap();
    let texts = texts();
    let plain = dir.path().join("plain.csv");
    let mut csv = String::from("text\n");
    for t in &texts {
        csv += &format!("{t}\n");
    }
    std::fs::write(&plain, csv).unwrap();
    let want: Vec<String> = csv::Reader::from_reader(
        predict(&plain, &dir.path().join("plain.out.csv"), &[]).as_bytes(),
    )
    .records()
    .map(|r| r.unwrap()[1].to_string())
    .collect();

    // Two row groups, a dictionary-encoded text column, an int id and a nullable double.
    let n = texts.len();
    let bytes = parquet_bytes(
        &[
            ("id", Col::Int((0..n as i32).map(Some).collect())),
            ("text", Col::Str(texts.iter().cloned().map(Some).collect())),
            (
                "amount",
                Col::Double((0..n).map(|i| (i != 1).then_some(2.0)).collect()),
            ),
        ],
        n.div_ceil(2),
        parquet::basic::Compression::SNAPPY,
        &["text"],
    );
    let input = dir.path().join("rows.parquet");
    std::fs::write(&input, &bytes).unwrap();

    // Default output: CSV, every column, values as pandas writes them.
    let out = predict(&input, &dir.path().join("rows.out"), &[]);
    let mut reader = csv::Reader::from_reader(out.as_bytes());
    assert_eq!(
        reader.headers().unwrap().iter().collect::<Vec<_>>(),
        vec!["id", "text", "amount", "predicted_label", "score"]
    );
    let records: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
    let got: Vec<String> = records.iter().map(|r| r[3].to_string()).collect();
    assert_eq!(got, want, "{out}");
    assert_eq!((&records[0][2], &records[1][2]), ("2.0", ""), "{out}");

    // JSON Lines by extension: the file's types kept.
    let out = predict(&input, &dir.path().join("rows.out.jsonl"), &[]);
    let objects: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(objects.len(), n);
    for (i, o) in objects.iter().enumerate() {
        assert_eq!(o["id"], i, "{out}");
        assert_eq!(o["text"], texts[i].as_str(), "{out}");
        assert_eq!(o["predicted_label"], want[i].as_str(), "{out}");
    }
    assert!(objects[1]["amount"].is_null(), "{out}");

    // Parquet output is refused before anything is written.
    let model = model();
    let target = dir.path().join("o.parquet");
    let out = Command::new(TXCAT)
        .args(["predict", "--model", model.to_str().unwrap(), "--input"])
        .arg(&input)
        .arg("--output")
        .arg(&target)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("does not write Parquet"),
        "{}",
        describe(&out)
    );
    assert!(!target.exists());
}

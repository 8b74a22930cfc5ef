//! `txcat predict` reads what training reads (CSV dialects, JSON Lines, Parquet) and writes the input's
//! format, or the one `--output`'s extension names; the labels do not depend on the format.
//! Parquet output is checked with the parquet crate and with pyarrow (`TXCAT_PYTHON`), as users
//! read it.

mod common;
use common::{describe, CLASSES, TXCAT};
use std::path::{Path, PathBuf};
use std::process::Command;

fn model() -> PathBuf {
    common::separable_model()
}

fn predict(input: &Path, output: &Path, extra: &[&str]) -> String {
    common::run_predict(&model(), input, output, extra);
    // Lossy: Parquet output is binary; callers that read text outputs get them whole.
    String::from_utf8_lossy(&std::fs::read(output).unwrap()).into_owned()
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

/// Runs predict expecting exit status 2 with `needle` in stderr and no output file left.
fn predict_refused(input: &Path, output: &Path, needle: &str) {
    let model = model();
    let out = Command::new(TXCAT)
        .args(["predict", "--model", model.to_str().unwrap(), "--input"])
        .arg(input)
        .arg("--output")
        .arg(output)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(needle), "{}", describe(&out));
    assert_eq!(
        stderr
            .trim()
            .lines()
            .filter(|l| l.contains(" ERROR "))
            .count(),
        1,
        "{stderr}"
    );
    let dir = output.parent().unwrap();
    let left: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(&*output.file_name().unwrap().to_string_lossy()))
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}

/// Every row of a Parquet file as `(column, value text)` pairs, with the parquet crate's reader.
fn parquet_rows(path: &Path) -> Vec<Vec<(String, String)>> {
    use parquet::file::reader::{FileReader, SerializedFileReader};
    let reader = SerializedFileReader::new(std::fs::File::open(path).unwrap()).unwrap();
    reader
        .get_row_iter(None)
        .unwrap()
        .map(|row| {
            row.unwrap()
                .get_column_iter()
                .map(|(k, v)| (k.clone(), v.to_string()))
                .collect()
        })
        .collect()
}

#[test]
fn parquet_input_gives_parquet_with_its_columns_kept_or_csv_and_json_lines_by_extension() {
    use common::parquet::{layout, parquet_bytes, Col};
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
    let parquet_input = |columns: &[(&str, Col)]| {
        parquet_bytes(
            columns,
            n.div_ceil(2),
            parquet::basic::Compression::SNAPPY,
            &["text"],
        )
    };
    let bytes = parquet_input(&[
        ("id", Col::Int((0..n as i32).map(Some).collect())),
        ("text", Col::Str(texts.iter().cloned().map(Some).collect())),
        (
            "amount",
            Col::Double((0..n).map(|i| (i != 1).then_some(2.0)).collect()),
        ),
    ]);
    let input = dir.path().join("rows.parquet");
    std::fs::write(&input, &bytes).unwrap();

    // Default output: Parquet, the input's columns as they were (row groups, dictionary
    // encoding, types, nulls), the predictions appended.
    let target = dir.path().join("rows.out");
    predict(&input, &target, &[]);
    let written = std::fs::read(&target).unwrap();
    assert_eq!(layout(&written, "text"), (2, true));
    let rows = parquet_rows(&target);
    assert_eq!(rows.len(), n);
    for (i, row) in rows.iter().enumerate() {
        let names: Vec<&str> = row.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(names, ["id", "text", "amount", "predicted_label", "score"]);
        assert_eq!(row[0].1, i.to_string());
        assert_eq!(row[1].1, format!("{:?}", texts[i]));
        assert_eq!(row[2].1, if i == 1 { "null" } else { "2.0" }, "{row:?}");
        assert_eq!(row[3].1, format!("{:?}", want[i]));
        let score: f32 = row[4].1.parse().unwrap();
        assert!(score > 0.0 && score <= 1.0, "{row:?}");
    }

    // As users read it: pyarrow gives the same table.
    let python = std::env::var("TXCAT_PYTHON").expect("TXCAT_PYTHON (scripts/test sets it)");
    let script = "import json, sys, pyarrow.parquet as pq\n\
        t = pq.read_table(sys.argv[1])\n\
        print(json.dumps({'types': [str(f.type) for f in t.schema], 'rows': t.to_pylist()}))";
    let out = Command::new(&python)
        .args(["-c", script])
        .arg(&target)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", describe(&out));
    let table: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        table["types"],
        serde_json::json!(["int32", "string", "double", "string", "float"])
    );
    for (i, row) in table["rows"].as_array().unwrap().iter().enumerate() {
        assert_eq!(row["id"], i);
        assert_eq!(row["predicted_label"], want[i].as_str());
        assert_eq!(row["amount"].is_null(), i == 1);
    }

    // Top-k in Parquet: label_i / score_i pairs, best first.
    let top = dir.path().join("top.parquet");
    predict(&input, &top, &["--top-k", "2"]);
    let rows = parquet_rows(&top);
    let names: Vec<&str> = rows[0].iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(
        names,
        ["id", "text", "amount", "label_1", "score_1", "label_2", "score_2"]
    );
    for (i, row) in rows.iter().enumerate() {
        assert_eq!(row[3].1, format!("{:?}", want[i]));
        let (s1, s2): (f32, f32) = (row[4].1.parse().unwrap(), row[6].1.parse().unwrap());
        assert!(s1 >= s2, "{row:?}");
    }

    // CSV by extension: every column, values as pandas writes them.
    let out = predict(&input, &dir.path().join("rows.out.csv"), &[]);
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

    // Parquet output from CSV input is refused before anything is written; so is a Parquet
    // input whose columns the predictions would repeat.
    predict_refused(&plain, &dir.path().join("o.parquet"), "Parquet input only");
    let clash = dir.path().join("clash.parquet");
    std::fs::write(
        &clash,
        parquet_input(&[
            ("text", Col::Str(texts.iter().cloned().map(Some).collect())),
            ("score", Col::Double(vec![Some(1.0); n])),
        ]),
    )
    .unwrap();
    predict_refused(&clash, &dir.path().join("clash.out"), "column `score`");
}

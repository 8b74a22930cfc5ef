//! CSV channels through the built binary: several files, gzip, BOM, CRLF, quoting, bad rows,
//! which channel evaluates, and missing channels.

mod common;
use common::{channel_line, label_table, OptMl};
use std::io::Write;

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(bytes).unwrap();
    enc.finish().unwrap()
}

#[test]
fn several_files_gzip_bom_crlf_and_quoting() {
    let ml = OptMl::new();
    ml.write_inputdataconfig(&[("train", "File"), ("validation", "FastFile")]);
    // 3 rows: BOM + CRLF, a quoted comma, an extra column in between.
    ml.add_channel_file(
        "train",
        "a.csv",
        "\u{feff}date,text,category\r\n2024-01-01,\"Woolworths, Sandton\",Food\r\n2024-01-02,Engen,Fuel\r\n2024-01-03,Spar,Food\r\n",
    );
    // 2 rows, gzip, one with a newline inside quotes, in a sub-folder.
    ml.add_channel_file(
        "train",
        "more/b.csv.gz",
        gzip(b"text,category\n\"Shell\nGarage\",Fuel\nPnP,Food\n"),
    );
    // Ignored: hidden file, marker, non-CSV file.
    ml.add_channel_file("train", ".hidden.csv", "text,category\nx,Nope\n");
    ml.add_channel_file("train", "_SUCCESS", "");
    ml.add_channel_file("train", "README.md", "not data");
    ml.add_channel_file(
        "validation",
        "v.csv",
        "category,text\n Food ,Checkers\nFuel,Sasol\n",
    );
    ml.add_channel_file("test", "t.csv", "text,category\nq,Other\n");

    let summary = ml.assert_dry_run_ok(&ml.run(&["train", "--dry-run"]));
    assert_eq!(channel_line(&summary, "train"), (5, 2, 0), "{summary}");
    assert_eq!(channel_line(&summary, "validation"), (2, 1, 0), "{summary}");
    assert!(summary.contains("from channel `validation`"), "{summary}");
    let (declared, table) = label_table(&summary);
    assert_eq!(declared, 2);
    assert_eq!(table["Food"], (3, 1));
    assert_eq!(table["Fuel"], (2, 1));
    // LabelEncoder order: "Food" < "Fuel".
    let food = summary.find("  0  Food").expect("Food is id 0");
    let fuel = summary.find("  1  Fuel").expect("Fuel is id 1");
    assert!(food < fuel);
}

#[test]
fn bad_row_fails_with_file_and_line_unless_allowed() {
    let ml = OptMl::new();
    ml.write_inputdataconfig(&[("train", "File")]);
    let file = ml.add_channel_file(
        "train",
        "train.csv",
        "text,category\na,X\nb,Y\n\"multi\nline\",X\nragged,Y,extra\nc,X\n,Y\nd,Y\ne,X\nf,Y\n",
    );
    let out = ml.run(&["train", "--dry-run"]);
    let expected = format!(
        "{}:6: the row has 3 fields but the header has 2",
        file.display()
    );
    ml.assert_failed(&out, 2, &[&expected, "max_bad_rows"]);

    let out = ml.run(&["train", "--dry-run", "--hp", "max_bad_rows=1"]);
    let expected = format!("{}:8: column `text` is empty", file.display());
    ml.assert_failed(&out, 2, &[&expected]);

    let summary = ml.assert_dry_run_ok(&ml.run(&[
        "train",
        "--dry-run",
        "--hp",
        "max_bad_rows=2",
        "--hp",
        "validation_split=0.5",
    ]));
    assert_eq!(channel_line(&summary, "train"), (7, 1, 2), "{summary}");
    assert!(
        summary.contains("Bad rows skipped: 2 (max_bad_rows=2)"),
        "{summary}"
    );
    assert!(
        summary.contains("stratified split of train (validation_split=0.5, seed=42)"),
        "{summary}"
    );
}

#[test]
fn eval_channel_preference_and_explicit_choice() {
    let ml = OptMl::new();
    ml.write_inputdataconfig(&[("train", "File"), ("test", "File")]);
    ml.add_channel_file("train", "t.csv", "text,category\na,X\nb,Y\nc,X\nd,Y\n");
    ml.add_channel_file("test", "t.csv", "text,category\ne,X\n");
    let summary = ml.assert_dry_run_ok(&ml.run(&["train", "--dry-run"]));
    assert!(summary.contains("from channel `test`"), "{summary}");
    assert!(summary.contains("Evaluation rows: 1 "), "{summary}");

    ml.assert_failed(
        &ml.run(&["train", "--dry-run", "--hp", "eval_channel=validation"]),
        2,
        &["eval_channel=`validation`", "channels: test, train"],
    );
}

#[test]
fn missing_train_channel_and_missing_directory() {
    let ml = OptMl::new();
    ml.write_inputdataconfig(&[("training", "File")]);
    ml.add_channel_file("training", "t.csv", "text,category\na,X\n");
    ml.assert_failed(
        &ml.run(&["train", "--dry-run"]),
        2,
        &["no `train` channel", "channels: training"],
    );

    let ml = OptMl::new();
    ml.write_inputdataconfig(&[("train", "File")]);
    ml.assert_failed(
        &ml.run(&["train", "--dry-run"]),
        2,
        &["channel 'train'", "does not exist"],
    );
}

#[test]
fn missing_column_lists_the_header() {
    let ml = OptMl::new();
    ml.write_inputdataconfig(&[("train", "File")]);
    ml.add_channel_file("train", "t.csv", "description,label\na,X\nb,Y\nc,X\nd,Y\n");
    ml.assert_failed(
        &ml.run(&["train", "--dry-run"]),
        2,
        &[
            "no column `text`",
            "columns: description, label",
            "text_column",
        ],
    );
    let summary = ml.assert_dry_run_ok(&ml.run(&[
        "train",
        "--dry-run",
        "--hp",
        "text_column=description",
        "--hp",
        "label_column=label",
    ]));
    assert_eq!(channel_line(&summary, "train"), (4, 1, 0), "{summary}");
}

#[test]
fn command_line_channel_can_be_a_single_file() {
    let ml = OptMl::new();
    let outside = tempfile::tempdir().unwrap();
    let train = outside.path().join("train.csv");
    std::fs::write(&train, "text,category\na,X\nb,Y\nc,X\nd,Y\n").unwrap();
    let arg = format!("train={}", train.display());
    let summary = ml.assert_dry_run_ok(&ml.run(&[
        "train",
        "--dry-run",
        "--channel",
        &arg,
        "--hp",
        "validation_split=0.5",
    ]));
    assert_eq!(channel_line(&summary, "train"), (4, 1, 0));
    assert!(
        summary.contains("Training rows: 2   Evaluation rows: 2"),
        "{summary}"
    );
}

#[test]
fn single_class_is_rejected() {
    let ml = OptMl::new();
    ml.write_inputdataconfig(&[("train", "File")]);
    ml.add_channel_file("train", "t.csv", "text,category\na,X\nb, X \n");
    ml.assert_failed(
        &ml.run(&["train", "--dry-run"]),
        2,
        &["1 distinct label(s) (X)", "at least 2"],
    );
}

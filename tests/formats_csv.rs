//! CSV dialects through the built binary (dry runs: the data path a training job takes).
//! Generated files cover `;`, tab, `|`, windows-1252 with `£` and `–`, UTF-16, gzip and a channel
//! that mixes them; the errors a user of such exports meets name the fix.

mod common;
use common::{channel_line, label_table, sdk_encode, OptMl};
use std::io::Write;

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(bytes).unwrap();
    enc.finish().unwrap()
}

fn utf16le_with_bom(text: &str) -> Vec<u8> {
    let mut out = vec![0xff, 0xfe];
    for unit in text.encode_utf16() {
        out.extend(unit.to_le_bytes());
    }
    out
}

/// A council export: `;` with a space after each, windows-1252 text.
fn council_month(rows: &[(&str, &str)]) -> Vec<u8> {
    let mut out = b"TRANS DATE; MERCHANT NAME; EXPENSE CODE\r\n".to_vec();
    for (i, (text, label)) in rows.iter().enumerate() {
        let (bytes, _, _) = encoding_rs::WINDOWS_1252.encode(text);
        out.extend(format!("0{}/01/2024; ", i + 1).as_bytes());
        out.extend(bytes.as_ref());
        out.extend(format!("; {label}\r\n").as_bytes());
    }
    out
}

fn columns() -> Vec<(&'static str, String)> {
    vec![
        ("text_column", sdk_encode("MERCHANT NAME")),
        ("label_column", sdk_encode("EXPENSE CODE")),
        ("validation_split", "0.5".to_string()),
    ]
}

fn write_hp(ml: &OptMl, extra: &[(&str, &str)]) {
    let mut pairs = columns();
    pairs.extend(extra.iter().map(|(k, v)| (*k, v.to_string())));
    let pairs: Vec<(&str, &str)> = pairs.iter().map(|(k, v)| (*k, v.as_str())).collect();
    ml.write_hyperparameters(&pairs);
}

#[test]
fn a_channel_mixing_dialects_and_encodings_reads_every_row() {
    let ml = OptMl::new();
    ml.write_inputdataconfig(&[("train", "File")]);
    ml.add_channel_file(
        "train",
        "2024-01.csv",
        council_month(&[("Café Nero – Oxford", "Food"), ("Parking £2", "Travel")]),
    );
    ml.add_channel_file(
        "train",
        "2024-02.csv",
        "TRANS DATE,MERCHANT NAME,EXPENSE CODE\n01/02/2024,\"Tesco, Cowley\",Food\n02/02/2024,Stagecoach,Travel\n",
    );
    ml.add_channel_file(
        "train",
        "2024-03.csv.gz",
        gzip(b"TRANS DATE\tMERCHANT NAME\tEXPENSE CODE\n01/03\tPret\tFood\n02/03\tTrainline\tTravel\n"),
    );
    ml.add_channel_file(
        "train",
        "2024-04.csv",
        utf16le_with_bom("TRANS DATE|MERCHANT NAME|EXPENSE CODE\r\n01/04|Greggs|Food\r\n02/04|Uber £9|Travel\r\n"),
    );
    write_hp(&ml, &[("csv_encoding", &sdk_encode("auto"))]);
    let out = ml.run(&["train", "--dry-run"]);
    let summary = ml.assert_dry_run_ok(&out);
    let (_, labels) = label_table(&summary);
    let total: usize = labels.values().map(|(train, eval)| train + eval).sum();
    assert_eq!(total, 8, "{summary}");
    assert_eq!(
        labels.keys().collect::<Vec<_>>(),
        vec!["Food", "Travel"],
        "{summary}"
    );
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(
        log.contains("2024-01.csv") && log.contains("read as windows-1252"),
        "the auto decision is logged per file:\n{log}"
    );
    assert!(log.contains("read as UTF-16"), "{log}");
}

#[test]
fn the_council_export_error_now_names_the_delimiter_to_set() {
    let ml = OptMl::new();
    ml.write_inputdataconfig(&[("train", "File")]);
    ml.add_channel_file(
        "train",
        "2024-01.csv",
        council_month(&[("Costa", "Food"), ("Bus", "Travel")]),
    );
    write_hp(
        &ml,
        &[
            ("csv_delimiter", &sdk_encode(",")),
            ("csv_encoding", &sdk_encode("windows-1252")),
        ],
    );
    let text = ml.assert_failed(
        &ml.run(&["train", "--dry-run"]),
        2,
        &[
            "2024-01.csv: no column `MERCHANT NAME`",
            "split at `;` it has `MERCHANT NAME`: set csv_delimiter=;",
        ],
    );
    assert_eq!(text.trim_end().lines().count(), 1, "{text}");
}

#[test]
fn windows_1252_bytes_in_a_utf8_job_fail_with_file_line_and_the_setting() {
    let ml = OptMl::new();
    ml.write_inputdataconfig(&[("train", "File")]);
    ml.add_channel_file(
        "train",
        "2024-01.csv",
        council_month(&[("Costa", "Food"), ("Parking £2", "Travel")]),
    );
    write_hp(&ml, &[]);
    ml.assert_failed(
        &ml.run(&["train", "--dry-run"]),
        2,
        &[
            "2024-01.csv:3: column `MERCHANT NAME` is not valid UTF-8 (near byte",
            "set csv_encoding",
        ],
    );
}

#[test]
fn a_tab_delimiter_given_the_way_the_sdk_encodes_it() {
    let ml = OptMl::new();
    ml.write_inputdataconfig(&[("train", "File")]);
    // The header has more `;` than tabs, so `auto` would split at `;`: the setting must win.
    let tsv = "a;b;c;d\tMERCHANT NAME\tEXPENSE CODE\nw;x;y;z\tShell, M40\tFuel\nw;x;y;z\tBP\tFuel\nw;x;y;z\tAldi\tFood\nw;x;y;z\tLidl\tFood\n";
    ml.add_channel_file("train", "t.csv", tsv);
    write_hp(&ml, &[]);
    ml.assert_failed(
        &ml.run(&["train", "--dry-run"]),
        2,
        &["split at `tab` it has `MERCHANT NAME`: set csv_delimiter=tab"],
    );
    write_hp(&ml, &[("csv_delimiter", &sdk_encode("\t"))]);
    let summary = ml.assert_dry_run_ok(&ml.run(&["train", "--dry-run"]));
    let (_, files, skipped) = channel_line(&summary, "train");
    let (_, labels) = label_table(&summary);
    let total: usize = labels.values().map(|(train, eval)| train + eval).sum();
    assert_eq!((total, files, skipped), (4, 1, 0), "{summary}");
    assert_eq!(labels.keys().collect::<Vec<_>>(), vec!["Food", "Fuel"]);
}

#[test]
fn bad_dialect_settings_are_rejected_by_name() {
    let ml = OptMl::new();
    ml.write_inputdataconfig(&[("train", "File")]);
    ml.add_channel_file("train", "t.csv", "text,category\na,X\nb,Y\n");
    ml.write_hyperparameters(&[("csv_delimiter", "colon")]);
    ml.assert_failed(
        &ml.run(&["train", "--dry-run"]),
        2,
        &["hyperparameter `csv_delimiter` = `colon`", "tab"],
    );
    ml.write_hyperparameters(&[("csv_encoding", "ebcdic")]);
    ml.assert_failed(
        &ml.run(&["train", "--dry-run"]),
        2,
        &["hyperparameter `csv_encoding` = `ebcdic`", "windows-1252"],
    );
}

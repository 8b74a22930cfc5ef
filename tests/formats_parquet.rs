//! Parquet channels through the built binary: files the tests write with the parquet crate
//! (dictionary-encoded and plain string columns, unannotated binary, int labels, several row
//! groups, nulls, snappy/gzip/zstd) train to completion; nulls are bad rows counted against
//! max_bad_rows; what txcat cannot read (a missing column, Pipe mode, a gzipped file) is one line.

mod common;
mod support;

use common::parquet::{layout, parquet_bytes, Col};
use common::{channel_line, describe, label_table, OptMl, CLASSES, NOISE};
use parquet::basic::{Compression, GzipLevel, ZstdLevel};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use std::collections::BTreeMap;
use std::io::Write;

/// Integer codes for [`CLASSES`]; as text they sort differently from numbers (`"4000" < "70"`),
/// so the label map shows they are used as text.
const CODES: [i32; 4] = [4000, 5000, 600, 70];

/// `rows` seeded rows: a merchant text (noise words around a class marker) and its code; the rows
/// at `nulls` have a null merchant.
fn rows(rows: usize, seed: u64, nulls: &[usize]) -> (Vec<Option<String>>, Vec<Option<i32>>) {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    (0..rows)
        .map(|i| {
            let class = i % CLASSES.len();
            let mut words: Vec<String> = (0..rng.gen_range(1..3))
                .map(|_| NOISE.choose(&mut rng).unwrap().to_string())
                .collect();
            words.push(CLASSES[class].1.choose(&mut rng).unwrap().to_string());
            words.shuffle(&mut rng);
            let text = (!nulls.contains(&i)).then(|| words.join(" "));
            (text, Some(CODES[class]))
        })
        .unzip()
}

/// A file with columns `merchant` (STRING), `description` (unannotated binary), `code` (int32)
/// and `amount` (double, alternating 1.0 and 2.0).
fn file(
    (texts, codes): (Vec<Option<String>>, Vec<Option<i32>>),
    rows_per_group: usize,
    compression: Compression,
    dictionary: &[&str],
) -> Vec<u8> {
    let descriptions = texts
        .iter()
        .map(|t| Some(format!("card {}", t.as_deref().unwrap_or("?"))))
        .collect();
    let amounts = (0..texts.len())
        .map(|i| Some((i % 2) as f64 + 1.0))
        .collect();
    parquet_bytes(
        &[
            ("merchant", Col::Str(texts)),
            ("description", Col::Binary(descriptions)),
            ("code", Col::Int(codes)),
            ("amount", Col::Double(amounts)),
        ],
        rows_per_group,
        compression,
        dictionary,
    )
}

/// The quick tiny-model run on the fixture's columns (`extra` overrides).
fn hyperparameters(ml: &OptMl, extra: &[(&str, &str)]) {
    let mut hp = vec![("text_column", "merchant"), ("label_column", "code")];
    hp.extend_from_slice(extra);
    common::write_quick_hyperparameters(ml, &hp);
}

/// File channels `train` and `validation` with no ContentType: the format comes from `.parquet`.
fn undeclared(ml: &OptMl) {
    ml.write_config(
        "inputdataconfig.json",
        r#"{"train": {"TrainingInputMode": "File"}, "validation": {"TrainingInputMode": "FastFile"}}"#,
    );
}

#[test]
fn parquet_channels_train_with_int_labels_as_text_and_null_rows_counted() {
    let ml = OptMl::new();
    undeclared(&ml);
    // 96 rows in 3 row groups, dictionary-encoded merchant, a null merchant at row 40 (row group
    // 1, row 8); then 64 plain rows in one zstd group; validation gzip.
    let dict = file(rows(96, 1, &[40]), 32, Compression::SNAPPY, &["merchant"]);
    assert_eq!(layout(&dict, "merchant"), (3, true), "fixture layout");
    let plain = file(
        rows(64, 2, &[]),
        64,
        Compression::ZSTD(ZstdLevel::default()),
        &[],
    );
    assert_eq!(layout(&plain, "merchant"), (1, false), "fixture layout");
    ml.add_channel_file("train", "part-00000-a.snappy.parquet", &dict);
    ml.add_channel_file("train", "sub/part-00001-b.zstd.parquet", &plain);
    ml.add_channel_file("train", "_SUCCESS", "");
    ml.add_channel_file(
        "validation",
        "val.parquet",
        file(
            rows(40, 3, &[]),
            16,
            Compression::GZIP(GzipLevel::default()),
            &["merchant"],
        ),
    );

    // Without room for bad rows, the null names file, row and row group.
    hyperparameters(&ml, &[]);
    let text = ml.assert_failed(
        &ml.run(&["train", "--dry-run"]),
        2,
        &[
            "part-00000-a.snappy.parquet: row 40 (row group 1, row 8; counted from 0): column `merchant` is null",
            "max_bad_rows (now 0)",
        ],
    );
    assert!(!text.contains("sub/part-00001"), "{text}");
    std::fs::remove_file(ml.path("output/failure")).unwrap();

    hyperparameters(&ml, &[("max_bad_rows", "1")]);
    let out = ml.run(&["train", "--dry-run"]);
    let summary = ml.assert_dry_run_ok(&out);
    assert_eq!(channel_line(&summary, "train"), (159, 2, 1), "{summary}");
    assert_eq!(
        channel_line(&summary, "validation"),
        (40, 1, 0),
        "{summary}"
    );
    let (declared, table) = label_table(&summary);
    let mut want: Vec<String> = CODES.iter().map(i32::to_string).collect();
    want.sort();
    assert_eq!(declared, 4, "{summary}");
    assert_eq!(table.keys().cloned().collect::<Vec<_>>(), want, "{summary}");
    let train_counts: BTreeMap<String, usize> = table
        .iter()
        .map(|(l, (train, _))| (l.clone(), *train))
        .collect();
    // 96 + 64 rows round-robin over 4 classes, less the null (row 40: class 0, code 4000).
    assert_eq!(train_counts["4000"], 39, "{summary}");
    assert_eq!(train_counts["70"], 40, "{summary}");

    let out = ml.assert_trained();
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(ml.model_dir().join("config.json")).unwrap())
            .unwrap();
    for (id, label) in want.iter().enumerate() {
        assert_eq!(
            config["id2label"][id.to_string()],
            *label,
            "{}",
            describe(&out)
        );
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("row 40 (row group 1, row 8; counted from 0)"),
        "the skipped row is logged\n{stderr}"
    );
}

#[test]
fn content_type_unannotated_binary_text_and_double_labels() {
    let ml = OptMl::new();
    ml.write_config(
        "inputdataconfig.json",
        r#"{"train": {"TrainingInputMode": "File", "ContentType": "application/x-parquet"}}"#,
    );
    // The ContentType declares Parquet for a file whose name says nothing.
    let path = ml.add_channel_file(
        "train",
        "export",
        file(rows(12, 4, &[]), 5, Compression::UNCOMPRESSED, &[]),
    );
    hyperparameters(
        &ml,
        &[
            ("text_column", "description"),
            ("label_column", "amount"),
            ("validation_split", "0.25"),
        ],
    );
    let out = ml.run(&[
        "train",
        "--dry-run",
        "--channel",
        &format!("train={}", path.display()),
    ]);
    let summary = ml.assert_dry_run_ok(&out);
    let (declared, table) = label_table(&summary);
    // Doubles as Python's str() writes them.
    assert_eq!(declared, 2, "{summary}");
    assert_eq!(
        table.keys().cloned().collect::<Vec<_>>(),
        vec!["1.0".to_string(), "2.0".to_string()],
        "{summary}"
    );
    assert_eq!(table.values().map(|(t, e)| t + e).sum::<usize>(), 12);
}

#[test]
fn missing_column_gzip_and_pipe_mode_are_one_line_errors() {
    let bytes = file(rows(8, 5, &[]), 8, Compression::SNAPPY, &["merchant"]);

    let ml = OptMl::new();
    undeclared(&ml);
    ml.add_channel_file("train", "t.parquet", &bytes);
    hyperparameters(&ml, &[("text_column", "Merchant")]);
    ml.assert_failed(
        &ml.run(&["train", "--dry-run"]),
        2,
        &[
            "t.parquet: no column `Merchant`",
            "(columns: merchant, description, code, amount)",
            "text_column",
            "did you mean `merchant`",
        ],
    );

    let ml = OptMl::new();
    undeclared(&ml);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&bytes).unwrap();
    ml.add_channel_file("train", "t.parquet.gz", gz.finish().unwrap());
    hyperparameters(&ml, &[]);
    ml.assert_failed(
        &ml.run(&["train", "--dry-run"]),
        2,
        &["t.parquet.gz: the Parquet file is gzipped", ".parquet"],
    );

    // Declared Parquet in Pipe mode: refused before the FIFO is opened (there is none here).
    let ml = OptMl::new();
    ml.write_config(
        "inputdataconfig.json",
        r#"{"train": {"TrainingInputMode": "Pipe", "ContentType": "application/x-parquet"}}"#,
    );
    hyperparameters(&ml, &[]);
    let started = std::time::Instant::now();
    ml.assert_failed(
        &ml.run(&["train", "--dry-run"]),
        2,
        &[
            "train_0: Parquet cannot be read in Pipe mode",
            "File or FastFile",
        ],
    );
    assert!(
        started.elapsed().as_secs() < 5,
        "refused without waiting for the FIFO"
    );

    // Undeclared: Parquet bytes arriving through the FIFO are recognised by their magic.
    let ml = OptMl::new();
    ml.write_config(
        "inputdataconfig.json",
        r#"{"train": {"TrainingInputMode": "Pipe"}}"#,
    );
    hyperparameters(&ml, &[]);
    let source = ml.path("source.parquet");
    std::fs::write(&source, &bytes).unwrap();
    let fifo = ml.path("input/data/train_0");
    support::fifo::mkfifo(&fifo);
    let mut writer = std::process::Command::new("sh")
        .arg("-c")
        .arg(r#"exec cat "$1" > "$2""#)
        .arg("writer")
        .arg(&source)
        .arg(&fifo)
        .spawn()
        .unwrap();
    let out = ml.run(&["train", "--dry-run"]);
    // The writer may be blocked on a full pipe once txcat stopped reading.
    let _ = writer.kill();
    let _ = writer.wait();
    ml.assert_failed(
        &out,
        2,
        &[
            "train_0: Parquet cannot be read in Pipe mode",
            "File or FastFile",
        ],
    );
}

#[test]
fn s3_parquet_objects_are_read_beside_csv_ones() {
    use support::moto::{point_child_at, MotoServer};
    let moto = MotoServer::start();
    let admin = moto.admin();
    admin.create_bucket("pqt");
    admin.put(
        "pqt",
        "export/part-00000.snappy.parquet",
        &file(rows(40, 6, &[7]), 16, Compression::SNAPPY, &["merchant"]),
    );
    admin.put(
        "pqt",
        "export/part-00001.csv",
        b"merchant,code\nshell pos,5000\nspar card,600\n",
    );
    admin.put("pqt", "export/_SUCCESS", b"");
    let ml = OptMl::new();
    hyperparameters(
        &ml,
        &[
            ("train_uri", "s3://pqt/export/"),
            ("validation_split", "0.25"),
            ("max_bad_rows", "1"),
        ],
    );
    let mut command = ml.command();
    point_child_at(&mut command, &moto.endpoint);
    let out = command.args(["train", "--dry-run"]).output().unwrap();
    let summary = ml.assert_dry_run_ok(&out);
    let (_, table) = label_table(&summary);
    let total: usize = table.values().map(|(t, e)| t + e).sum();
    // 40 Parquet rows less the null one, and the two CSV rows.
    assert_eq!(total, 41, "{summary}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("s3://pqt/export/part-00000.snappy.parquet: row 7 (row group 0, row 7"),
        "{stderr}"
    );
}

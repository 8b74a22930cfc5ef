//! `txcat train` through the built binary with S3 channels, an S3 model and an S3 output prefix,
//! against a real S3 API server (`moto_server` on 127.0.0.1, started per test), configured only
//! through the environment (`AWS_ENDPOINT_URL`, dummy credentials, region, no instance
//! metadata) as in a container.
//!
//! Row and label counts are compared with an independent parse of the uploaded bytes
//! (tests/support/csv_rows.rs), never with numbers copied from txcat's output.

mod common;
mod support;

use common::{channel_line, describe, label_table, OptMl};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::csv_rows::{gzip, label_counts, labelled_csv, total, CLASSES};
use support::fault_proxy::{every_other, flaky, Fault, FaultProxy};
use support::moto::{point_child_at, MotoServer, CHILD_SECRET_KEY};

/// Runs `txcat <args>` against `ml` with S3 at `endpoint`; `env` overrides the defaults of
/// [`point_child_at`]. Also checks that the secret key never reaches stdout or stderr.
fn run_txcat(
    ml: &OptMl,
    endpoint: &str,
    args: &[&str],
    env: &[(&str, &str)],
) -> (Output, Duration) {
    let mut command = ml.command();
    point_child_at(&mut command, endpoint);
    for (name, value) in env {
        command.env(name, value);
    }
    let started = Instant::now();
    let output = command.args(args).output().expect("run txcat");
    let elapsed = started.elapsed();
    let log = describe(&output);
    assert!(
        !log.contains(CHILD_SECRET_KEY),
        "the secret key appeared in the output\n{log}"
    );
    (output, elapsed)
}

/// A dry run's label table as label -> (train, eval) rows.
fn summary_labels(summary: &str) -> BTreeMap<String, (usize, usize)> {
    let (declared, table) = label_table(summary);
    assert_eq!(declared, table.len(), "label count vs table\n{summary}");
    table
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

#[test]
fn dry_run_reads_every_object_under_a_prefix_and_a_single_eval_key() {
    let moto = MotoServer::start();
    let admin = moto.admin();
    admin.create_bucket("txn");
    let train: Vec<(&str, Vec<u8>)> = vec![
        ("data/train/part-000.csv", labelled_csv(37, 1).into_bytes()),
        (
            "data/train/part-001.csv.gz",
            gzip(labelled_csv(23, 2).as_bytes()),
        ),
        (
            "data/train/more/part-002.csv",
            labelled_csv(11, 3).into_bytes(),
        ),
    ];
    for (key, body) in &train {
        admin.put("txn", key, body);
    }
    // Objects that are not part of the channel: a marker, a hidden file, a non-CSV file, a
    // sibling prefix sharing the folder's name as a string prefix.
    admin.put("txn", "data/train/_SUCCESS", b"");
    admin.put("txn", "data/train/.part-000.csv.crc", b"crc");
    admin.put(
        "txn",
        "data/train/.staging/part-9.csv",
        labelled_csv(5, 9).as_bytes(),
    );
    admin.put(
        "txn",
        "data/train-old/part-000.csv",
        labelled_csv(7, 4).as_bytes(),
    );
    let eval = labelled_csv(19, 5).into_bytes();
    admin.put("txn", "data/eval.csv", &eval);

    let expected_train = label_counts(train.iter().map(|(_, b)| b.as_slice()));
    let expected_eval = label_counts([eval.as_slice()]);
    assert_eq!(total(&expected_train), 71, "test data as intended");

    let ml = OptMl::new();
    ml.write_hyperparameters(&[
        ("train_uri", "s3://txn/data/train"),
        ("eval_uri", "s3://txn/data/eval.csv"),
    ]);
    let (output, elapsed) = run_txcat(&ml, &moto.endpoint, &["train", "--dry-run"], &[]);
    let summary = ml.assert_dry_run_ok(&output);

    assert_eq!(
        channel_line(&summary, "train"),
        (total(&expected_train), train.len(), 0),
        "train: (rows, files, skipped)\n{summary}"
    );
    assert_eq!(
        channel_line(&summary, "validation"),
        (total(&expected_eval), 1, 0),
        "validation: (rows, files, skipped)\n{summary}"
    );
    assert!(summary.contains("s3://txn/data/train") && summary.contains("s3://txn/data/eval.csv"));
    let table = summary_labels(&summary);
    let labels: Vec<&str> = table.keys().map(String::as_str).collect();
    let class_names: Vec<&str> = CLASSES.iter().map(|(l, _)| *l).collect();
    assert_eq!(labels, class_names);
    for (label, (train_rows, eval_rows)) in &table {
        assert_eq!(*train_rows, expected_train[label], "train rows of {label}");
        assert_eq!(*eval_rows, expected_eval[label], "eval rows of {label}");
    }
    eprintln!("dry run over 3 + 1 objects: {elapsed:?}");
}

#[test]
fn dry_run_reads_a_prefix_of_more_than_1000_objects_completely() {
    let moto = MotoServer::start();
    let admin = moto.admin();
    admin.create_bucket("many");
    let count = 1_050;
    let objects: Vec<(String, Vec<u8>)> = (0..count)
        .map(|i| {
            (
                format!("rows/part-{i:05}.csv"),
                labelled_csv(1 + i % 3, i as u64).into_bytes(),
            )
        })
        .collect();
    let expected = label_counts(objects.iter().map(|(_, b)| b.as_slice()));
    admin.put_many("many", objects);
    assert!(admin.all_keys("many").len() == count, "set-up");

    let ml = OptMl::new();
    ml.write_hyperparameters(&[("train_uri", "s3://many/rows/")]);
    let (output, elapsed) = run_txcat(&ml, &moto.endpoint, &["train", "--dry-run"], &[]);
    let summary = ml.assert_dry_run_ok(&output);
    assert_eq!(
        channel_line(&summary, "train"),
        (total(&expected), count, 0),
        "(rows, files, skipped)\n{summary}"
    );
    // No evaluation channel: the split divides each class, losing and duplicating nothing.
    for (label, (train_rows, eval_rows)) in summary_labels(&summary) {
        assert_eq!(train_rows + eval_rows, expected[&label], "rows of {label}");
        assert!(eval_rows > 0, "{label} has a hold-out");
    }
    eprintln!("dry run over {count} objects: {elapsed:?}");
}

/// The entries of a `.tar.gz`, unpacked into `dest`; returns the entry names.
fn untar(gz: &[u8], dest: &Path) -> Vec<String> {
    std::fs::create_dir_all(dest).expect("unpack dir");
    let mut names = Vec::new();
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(gz));
    for entry in archive.entries().expect("tar entries") {
        let mut entry = entry.expect("tar entry");
        let name = entry
            .path()
            .expect("entry path")
            .to_string_lossy()
            .to_string();
        assert!(
            !name.starts_with('/') && !name.starts_with("./") && !name.contains(".."),
            "entry {name:?} is not a plain relative path"
        );
        assert!(entry.unpack_in(dest).expect("unpack"), "{name} unpacked");
        names.push(name);
    }
    names
}

fn read_json(path: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn tiny_training_run_reads_s3_channels_and_model_and_uploads_its_results() {
    let moto = MotoServer::start();
    let admin = moto.admin();
    for bucket in ["models", "txn", "results"] {
        admin.create_bucket(bucket);
    }
    let model_dir = fixture("tiny-distilbert-trainable");
    let mut model_files = 0;
    for entry in std::fs::read_dir(&model_dir).expect("fixture dir") {
        let path = entry.expect("fixture entry").path();
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        let key = format!("base/tiny-distilbert-trainable/{name}");
        admin.put("models", &key, &std::fs::read(&path).expect("fixture file"));
        model_files += 1;
    }
    assert!(model_files >= 3, "fixture has config, weights, tokenizer");
    admin.put("models", "base/tiny-distilbert-trainable/_SUCCESS", b"");
    let train = [
        labelled_csv(48, 11).into_bytes(),
        gzip(labelled_csv(16, 12).as_bytes()),
    ];
    admin.put("txn", "train/part-0.csv", &train[0]);
    admin.put("txn", "train/part-1.csv.gz", &train[1]);
    let eval = labelled_csv(16, 13).into_bytes();
    admin.put("txn", "eval/val.csv", &eval);

    let ml = OptMl::new();
    ml.write_hyperparameters(&[
        (
            "model_name_or_path",
            "s3://models/base/tiny-distilbert-trainable/",
        ),
        ("train_uri", "s3://txn/train/"),
        ("eval_uri", "s3://txn/eval/val.csv"),
        ("output_uri", "s3://results/jobs/run-1/"),
        ("epochs", "1"),
        ("max_steps", "3"),
        ("train_batch_size", "16"),
        ("max_length", "32"),
        ("num_threads", "1"),
        ("save_strategy", "no"),
    ]);
    let (output, elapsed) = run_txcat(&ml, &moto.endpoint, &["train"], &[]);
    let log = describe(&output);
    assert_eq!(output.status.code(), Some(0), "train failed\n{log}");
    assert!(ml.failure_text().is_none(), "failure file after success");

    // Exactly the two tarballs, nothing temporary beside them, no multipart upload left open.
    let mut keys = admin.all_keys("results");
    keys.sort();
    assert_eq!(
        keys,
        ["jobs/run-1/model.tar.gz", "jobs/run-1/output.tar.gz"],
        "keys under the output bucket"
    );
    assert!(admin.incomplete_uploads("results").is_empty());

    let unpacked = tempfile::tempdir().unwrap();
    let model = unpacked.path().join("model");
    let output_data = unpacked.path().join("output");
    let model_names = untar(&admin.get("results", "jobs/run-1/model.tar.gz"), &model);
    let output_names = untar(
        &admin.get("results", "jobs/run-1/output.tar.gz"),
        &output_data,
    );
    for name in ["config.json", "model.safetensors", "tokenizer.json"] {
        assert!(
            model_names.iter().any(|n| n == name),
            "{name} in {model_names:?}"
        );
    }
    assert!(
        output_names.iter().any(|n| n == "metrics.json"),
        "{output_names:?}"
    );

    let config = read_json(&model.join("config.json"));
    for (id, (label, _)) in CLASSES.iter().enumerate() {
        assert_eq!(config["id2label"][id.to_string()], *label, "id2label[{id}]");
    }
    assert_eq!(
        config["id2label"].as_object().map(|m| m.len()),
        Some(CLASSES.len())
    );
    // The archive holds what the job published locally, byte for byte.
    assert!(
        std::fs::read(model.join("model.safetensors")).unwrap()
            == std::fs::read(ml.model_dir().join("model.safetensors")).unwrap(),
        "model.safetensors in model.tar.gz differs from /opt/ml/model"
    );
    assert_eq!(
        read_json(&output_data.join("metrics.json")),
        read_json(&ml.path("output/data/metrics.json"))
    );
    // The rows trained on are the S3 rows (counted independently).
    let summary = read_json(&output_data.join("run_summary.json"));
    let train_rows = total(&label_counts(train.iter().map(Vec::as_slice)));
    assert_eq!(summary["train_rows"], train_rows, "run_summary {summary}");
    assert_eq!(
        summary["eval_rows"],
        total(&label_counts([eval.as_slice()]))
    );
    eprintln!("tiny S3 training run: {elapsed:?}");
}

#[test]
fn bad_locations_fail_with_one_line_naming_the_uri_and_exit_2() {
    let moto = MotoServer::start();
    let admin = moto.admin();
    admin.create_bucket("txn");
    admin.put("txn", "data/train/a.csv", labelled_csv(20, 1).as_bytes());
    admin.put("txn", "data/eval.csv", labelled_csv(8, 2).as_bytes());
    admin.put("txn", "markers/_SUCCESS", b"");

    struct Case {
        hyperparameters: Vec<(&'static str, &'static str)>,
        args: Vec<&'static str>,
        needles: Vec<&'static str>,
    }
    let train_ok = ("train_uri", "s3://txn/data/train/");
    let cases = [
        Case {
            hyperparameters: vec![("train_uri", "s3://no-such-bucket/data/")],
            args: vec!["--dry-run"],
            needles: vec!["s3://no-such-bucket/data/", "NoSuchBucket"],
        },
        Case {
            hyperparameters: vec![("train_uri", "s3://txn/data/train/missing.csv")],
            args: vec!["--dry-run"],
            needles: vec!["s3://txn/data/train/missing.csv", "NoSuchKey"],
        },
        Case {
            hyperparameters: vec![train_ok, ("eval_uri", "s3://txn/data/evaluation.csv")],
            args: vec!["--dry-run"],
            needles: vec!["s3://txn/data/evaluation.csv", "NoSuchKey"],
        },
        Case {
            hyperparameters: vec![("train_uri", "s3://txn/empty/")],
            args: vec!["--dry-run"],
            needles: vec!["s3://txn/empty/", "no data files"],
        },
        Case {
            hyperparameters: vec![("train_uri", "s3://txn/markers/")],
            args: vec!["--dry-run"],
            needles: vec!["s3://txn/markers/", "no data files"],
        },
        Case {
            hyperparameters: vec![("train_uri", "s3:/txn/data/train/")],
            args: vec!["--dry-run"],
            needles: vec!["train_uri", "s3:/txn/data/train/"],
        },
        Case {
            hyperparameters: vec![("train_uri", "s3://Txn Data/train/")],
            args: vec!["--dry-run"],
            needles: vec!["s3://Txn Data/train/", "bucket name"],
        },
        Case {
            hyperparameters: vec![],
            args: vec!["--dry-run", "--channel", "train=s3:///data/train/"],
            needles: vec!["s3:///data/train/", "bucket name is empty"],
        },
        Case {
            hyperparameters: vec![
                train_ok,
                ("model_name_or_path", "s3://no-such-bucket/models/base/"),
                ("num_threads", "1"),
            ],
            args: vec![],
            needles: vec!["s3://no-such-bucket/models/base/", "NoSuchBucket"],
        },
        Case {
            hyperparameters: vec![
                train_ok,
                ("model_name_or_path", "s3://txn/models/none-here/"),
                ("num_threads", "1"),
            ],
            args: vec![],
            needles: vec!["s3://txn/models/none-here/", "no objects"],
        },
    ];
    for case in cases {
        let ml = OptMl::new();
        ml.write_hyperparameters(&case.hyperparameters);
        let mut args = vec!["train"];
        args.extend(&case.args);
        let (output, elapsed) = run_txcat(&ml, &moto.endpoint, &args, &[]);
        let text = ml.assert_failed(&output, 2, &case.needles);
        assert!(
            elapsed < Duration::from_secs(30),
            "{text}: took {elapsed:?}"
        );
        eprintln!("{elapsed:>10.2?}  {}", text.trim_end());
    }
}

/// Uploads six CSV objects of a few hundred rows (so truncated bodies cut rows in half) and
/// returns the independent label counts.
fn seed_flaky_bucket(moto: &MotoServer) -> BTreeMap<String, usize> {
    let admin = moto.admin();
    admin.create_bucket("flaky");
    let bodies: Vec<Vec<u8>> = (0..6)
        .map(|i| {
            let csv = labelled_csv(300 + 17 * i, 100 + i as u64).into_bytes();
            if i % 3 == 2 {
                gzip(&csv)
            } else {
                csv
            }
        })
        .collect();
    for (i, body) in bodies.iter().enumerate() {
        let ext = if i % 3 == 2 { "csv.gz" } else { "csv" };
        admin.put("flaky", &format!("data/part-{i}.{ext}"), body);
    }
    label_counts(bodies.iter().map(Vec::as_slice))
}

#[test]
fn flaky_s3_still_gives_every_row_exactly_once() {
    let moto = MotoServer::start();
    let expected = seed_flaky_bucket(&moto);
    let env = [
        ("TXCAT_S3_MAX_ATTEMPTS", "30"),
        ("TXCAT_S3_RETRY_SECONDS", "60"),
    ];
    // (name, plan, faults needed for the run to prove something): every_other cycles all four
    // kinds (truncated body, 503, reset, 500) over its first eight requests.
    for (plan_name, plan, min_faults) in [
        ("every other request", every_other(), 4),
        ("40% of requests", flaky(40, 3), 2),
    ] {
        let proxy = FaultProxy::start(moto.port, plan);
        let ml = OptMl::new();
        ml.write_hyperparameters(&[("train_uri", "s3://flaky/data/")]);
        let (output, elapsed) = run_txcat(&ml, &proxy.endpoint, &["train", "--dry-run"], &env);
        let summary = ml.assert_dry_run_ok(&output);
        assert_eq!(
            channel_line(&summary, "train"),
            (total(&expected), 6, 0),
            "{plan_name}: (rows, files, skipped)\n{summary}"
        );
        for (label, (train_rows, eval_rows)) in summary_labels(&summary) {
            assert_eq!(
                train_rows + eval_rows,
                expected[&label],
                "{plan_name}: rows of {label}"
            );
        }
        assert!(
            proxy.faults() >= min_faults,
            "{plan_name}: only {} faults in {} requests",
            proxy.faults(),
            proxy.requests()
        );
        eprintln!(
            "{plan_name}: {} faults in {} requests, {elapsed:?}",
            proxy.faults(),
            proxy.requests()
        );
    }
}

#[test]
fn endless_s3_failures_end_the_job_with_a_clear_reason_in_bounded_time() {
    let moto = MotoServer::start();
    seed_flaky_bucket(&moto);
    let proxy = FaultProxy::start(
        moto.port,
        Arc::new(|index, _: &str| match index % 3 {
            0 => Fault::SlowDown,
            1 => Fault::InternalError,
            _ => Fault::Reset,
        }),
    );
    let ml = OptMl::new();
    ml.write_hyperparameters(&[("train_uri", "s3://flaky/data/")]);
    let env = [
        ("TXCAT_S3_MAX_ATTEMPTS", "4"),
        ("TXCAT_S3_RETRY_SECONDS", "5"),
    ];
    let (output, elapsed) = run_txcat(&ml, &proxy.endpoint, &["train", "--dry-run"], &env);
    // A service failure, not the user's input: exit 1.
    let text = ml.assert_failed(
        &output,
        1,
        &["s3://flaky/data/", "gave up after 4 attempts"],
    );
    assert!(
        elapsed < Duration::from_secs(20),
        "took {elapsed:?}: {text}"
    );
    assert!(proxy.requests() >= 4, "{} requests", proxy.requests());
    eprintln!("endless failures: {elapsed:?}: {}", text.trim_end());

    // Failures that never stop while the body streams: listing works, every GET sends its
    // headers and hangs up before the first body byte.
    let proxy = FaultProxy::start(
        moto.port,
        Arc::new(|_, line: &str| {
            if line.starts_with("GET /flaky/data/part-") {
                Fault::HeadOnly
            } else {
                Fault::Pass
            }
        }),
    );
    let ml = OptMl::new();
    ml.write_hyperparameters(&[("train_uri", "s3://flaky/data/")]);
    let (output, elapsed) = run_txcat(&ml, &proxy.endpoint, &["train", "--dry-run"], &env);
    let text = ml.assert_failed(&output, 1, &["s3://flaky/data/part-0.csv", "gave up"]);
    assert!(
        elapsed < Duration::from_secs(30),
        "took {elapsed:?}: {text}"
    );
    eprintln!("endless broken bodies: {elapsed:?}: {}", text.trim_end());
}

#[test]
fn access_denied_names_the_uri_and_the_permission_and_exits_2() {
    let moto = MotoServer::start();
    seed_flaky_bucket(&moto);
    let proxy = FaultProxy::start(moto.port, Arc::new(|_, _: &str| Fault::AccessDenied));
    let ml = OptMl::new();
    ml.write_hyperparameters(&[("train_uri", "s3://flaky/data/")]);
    let (output, elapsed) = run_txcat(&ml, &proxy.endpoint, &["train", "--dry-run"], &[]);
    let text = ml.assert_failed(
        &output,
        2,
        &["s3://flaky/data/", "access denied", "s3:ListBucket"],
    );
    assert!(
        elapsed < Duration::from_secs(20),
        "took {elapsed:?}: {text}"
    );
}

#[test]
fn output_uri_in_a_missing_bucket_fails_naming_the_uri() {
    let moto = MotoServer::start();
    let admin = moto.admin();
    admin.create_bucket("txn");
    admin.put("txn", "train/a.csv", labelled_csv(40, 1).as_bytes());
    let model = fixture("tiny-distilbert-trainable");
    let ml = OptMl::new();
    ml.write_hyperparameters(&[
        ("model_name_or_path", model.to_str().unwrap()),
        ("train_uri", "s3://txn/train/"),
        ("output_uri", "s3://no-such-results/jobs/1/"),
        ("max_steps", "1"),
        ("max_length", "32"),
        ("num_threads", "1"),
        ("save_strategy", "no"),
    ]);
    // Checked before training (and in a dry run): nothing is trained or published.
    for args in [&["train", "--dry-run"][..], &["train"][..]] {
        let (output, elapsed) = run_txcat(&ml, &moto.endpoint, args, &[]);
        let text = ml.assert_failed(
            &output,
            2,
            &[
                "s3://no-such-results/jobs/1/",
                "NoSuchBucket",
                "no-such-results",
            ],
        );
        assert!(
            !describe(&output).contains("training:"),
            "{args:?}: trained anyway"
        );
        eprintln!(
            "missing output bucket ({args:?}): {elapsed:?}: {}",
            text.trim_end()
        );
    }
}

#[test]
fn output_bucket_that_cannot_be_checked_only_warns() {
    let moto = MotoServer::start();
    let admin = moto.admin();
    admin.create_bucket("txn");
    admin.put("txn", "train/a.csv", labelled_csv(40, 1).as_bytes());
    // A role allowed to upload but not to list (HeadBucket needs s3:ListBucket).
    let proxy = FaultProxy::start(
        moto.port,
        Arc::new(|_, line: &str| {
            if line.starts_with("HEAD /results") {
                Fault::AccessDenied
            } else {
                Fault::Pass
            }
        }),
    );
    let ml = OptMl::new();
    ml.write_hyperparameters(&[
        ("train_uri", "s3://txn/train/"),
        ("output_uri", "s3://results/jobs/1/"),
    ]);
    let (output, _) = run_txcat(&ml, &proxy.endpoint, &["train", "--dry-run"], &[]);
    let log = describe(&output);
    assert_eq!(output.status.code(), Some(0), "{log}");
    assert!(log.contains("cannot check the output bucket"), "{log}");
    assert!(proxy.requests() >= 2, "{} requests", proxy.requests());
}

//! `txcat train` through the built binary with Pipe-mode channels: `inputdataconfig.json` says
//! `TrainingInputMode: Pipe`, the FIFO `input/data/<channel>_0` is made with `mkfifo`, and a
//! separate writer process streams two CSV files concatenated (the second file's header repeated
//! inside the stream), as SageMaker does.
//!
//! Row and label counts are compared with an independent parse of each file
//! (tests/support/csv_rows.rs).

mod common;
mod support;

use common::{channel_line, describe, label_table, OptMl};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};
use support::csv_rows::{label_counts, labelled_csv, total, CLASSES};
use support::fifo::mkfifo;

/// A writer process feeding a FIFO; killed on drop if still running (a txcat that never opened
/// the FIFO would otherwise leave it blocked forever).
struct Writer {
    child: Child,
    channel: String,
}

impl Writer {
    /// Waits for the writer and asserts it delivered everything.
    fn finish(mut self) {
        let status = self.child.wait().expect("wait for the writer");
        assert!(
            status.success(),
            "writer for {} failed: {status}",
            self.channel
        );
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Makes the FIFO `input/data/<channel>_0` and starts a writer process that streams `files`
/// into it one after the other (`cat a b > fifo`; the shell's open blocks until txcat opens the
/// read side).
fn pipe_channel(ml: &OptMl, channel: &str, files: &[&[u8]]) -> Writer {
    let staging = ml.path(&format!("pipe-source-{channel}"));
    std::fs::create_dir_all(&staging).expect("staging dir");
    let names: Vec<PathBuf> = files
        .iter()
        .enumerate()
        .map(|(i, bytes)| {
            let path = staging.join(format!("part-{i}.csv"));
            std::fs::write(&path, bytes).expect("write source file");
            path
        })
        .collect();
    let fifo = ml.path(&format!("input/data/{channel}_0"));
    mkfifo(&fifo);
    let child = Command::new("sh")
        .arg("-c")
        .arg(r#"fifo="$1"; shift; exec cat "$@" > "$fifo""#)
        .arg("writer")
        .arg(&fifo)
        .args(&names)
        .spawn()
        .expect("start the writer");
    Writer {
        child,
        channel: channel.to_string(),
    }
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn read_json(path: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Two files per channel, each with its own header.
fn channel_files() -> (Vec<Vec<u8>>, Vec<Vec<u8>>) {
    let train = vec![
        labelled_csv(33, 1).into_bytes(),
        labelled_csv(26, 2).into_bytes(),
    ];
    let validation = vec![
        labelled_csv(9, 3).into_bytes(),
        labelled_csv(7, 4).into_bytes(),
    ];
    (train, validation)
}

fn counts(files: &[Vec<u8>]) -> BTreeMap<String, usize> {
    label_counts(files.iter().map(Vec::as_slice))
}

fn slices(files: &[Vec<u8>]) -> Vec<&[u8]> {
    files.iter().map(Vec::as_slice).collect()
}

#[test]
fn dry_run_counts_rows_of_concatenated_pipe_streams() {
    let (train, validation) = channel_files();
    let ml = OptMl::new();
    ml.write_inputdataconfig(&[("train", "Pipe"), ("validation", "Pipe")]);
    ml.write_hyperparameters(&[]);
    let writers = [
        pipe_channel(&ml, "train", &slices(&train)),
        pipe_channel(&ml, "validation", &slices(&validation)),
    ];
    let started = Instant::now();
    let output = ml.run(&["train", "--dry-run"]);
    let elapsed = started.elapsed();
    let summary = ml.assert_dry_run_ok(&output);
    for writer in writers {
        writer.finish();
    }

    let expected_train = counts(&train);
    let expected_eval = counts(&validation);
    // One stream per channel; the repeated header is not a row.
    assert_eq!(
        channel_line(&summary, "train"),
        (total(&expected_train), 1, 0),
        "(rows, files, skipped)\n{summary}"
    );
    assert_eq!(
        channel_line(&summary, "validation"),
        (total(&expected_eval), 1, 0),
        "(rows, files, skipped)\n{summary}"
    );
    assert!(summary.contains("train_0 (Pipe)"), "{summary}");
    let (declared, table) = label_table(&summary);
    let labels: Vec<&str> = table.keys().map(String::as_str).collect();
    let class_names: Vec<&str> = CLASSES.iter().map(|(l, _)| *l).collect();
    assert_eq!(labels, class_names, "no `category` label from a header");
    assert_eq!(declared, CLASSES.len());
    for (label, (train_rows, eval_rows)) in &table {
        assert_eq!(*train_rows, expected_train[label], "train rows of {label}");
        assert_eq!(*eval_rows, expected_eval[label], "eval rows of {label}");
    }
    eprintln!("Pipe dry run: {elapsed:?}");
}

#[test]
fn tiny_training_run_reads_pipe_channels_once_for_every_epoch() {
    let (train, validation) = channel_files();
    let ml = OptMl::new();
    ml.write_inputdataconfig(&[("train", "Pipe"), ("validation", "Pipe")]);
    let model = fixture("tiny-distilbert-trainable");
    // Two epochs but only the epoch-0 FIFOs exist: the rows must be kept from the first pass.
    ml.write_hyperparameters(&[
        ("model_name_or_path", model.to_str().unwrap()),
        ("epochs", "2"),
        ("train_batch_size", "16"),
        ("max_length", "32"),
        ("num_threads", "1"),
        ("save_strategy", "no"),
    ]);
    let writers = [
        pipe_channel(&ml, "train", &slices(&train)),
        pipe_channel(&ml, "validation", &slices(&validation)),
    ];
    let started = Instant::now();
    let output = ml.run(&["train"]);
    let elapsed = started.elapsed();
    assert_eq!(
        output.status.code(),
        Some(0),
        "train failed\n{}",
        describe(&output)
    );
    assert!(ml.failure_text().is_none());
    for writer in writers {
        writer.finish();
    }
    assert!(!ml.path("input/data/train_1").exists(), "test set-up");

    let config = read_json(&ml.model_dir().join("config.json"));
    for (id, (label, _)) in CLASSES.iter().enumerate() {
        assert_eq!(config["id2label"][id.to_string()], *label, "id2label[{id}]");
    }
    assert!(ml.model_dir().join("model.safetensors").is_file());
    let summary = read_json(&ml.path("output/data/run_summary.json"));
    assert_eq!(summary["train_rows"], total(&counts(&train)), "{summary}");
    assert_eq!(
        summary["eval_rows"],
        total(&counts(&validation)),
        "{summary}"
    );
    let metrics = read_json(&ml.path("output/data/metrics.json"));
    let history = metrics["history"].as_array().expect("history");
    assert!(history.len() >= 2, "one evaluation per epoch: {history:?}");
    eprintln!("tiny Pipe training run: {elapsed:?}");
}

#[test]
fn missing_fifo_fails_after_a_bounded_wait_naming_channel_and_path() {
    let ml = OptMl::new();
    ml.write_inputdataconfig(&[("train", "Pipe")]);
    ml.write_hyperparameters(&[]);
    let started = Instant::now();
    let output = ml.run(&["train", "--dry-run"]);
    let elapsed = started.elapsed();
    let fifo = ml.path("input/data/train_0");
    let text = ml.assert_failed(
        &output,
        2,
        &["'train'", &fifo.display().to_string(), "Pipe"],
    );
    // storage::pipe waits DEFAULT_FIFO_WAIT (10 s) for the FIFO to appear, then gives up.
    assert!(
        elapsed >= Duration::from_secs(10) && elapsed < Duration::from_secs(20),
        "took {elapsed:?}: {text}"
    );
    eprintln!("missing FIFO: {elapsed:?}: {}", text.trim_end());
}

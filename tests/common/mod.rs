//! Shared helpers for integration tests: a temporary SageMaker tree (`/opt/ml` stand-in) and a
//! way to run the built `txcat` binary against it.
//!
//! `OptMl::run` sets `SAGEMAKER_BASE_DIR` to the temporary root and removes every `SM_*`
//! variable from the child's environment, so the host environment cannot leak into a test.
#![allow(dead_code)] // each test crate uses a different subset

pub mod parquet;

use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The built binary.
pub const TXCAT: &str = env!("CARGO_BIN_EXE_txcat");

/// Real data sets vendored under `data/` (each with its licence and source note).
pub fn repo_data(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("data")
        .join(name)
}

/// A value JSON-encoded the way SDK v2 framework estimators write it (`"\"x\""`).
pub fn sdk_encode(value: &str) -> String {
    serde_json::to_string(value).expect("string encodes")
}

/// A temporary `/opt/ml` tree.
pub struct OptMl {
    dir: tempfile::TempDir,
}

impl Default for OptMl {
    fn default() -> Self {
        Self::new()
    }
}

impl OptMl {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let this = Self { dir };
        for sub in ["input/config", "input/data", "model", "output"] {
            std::fs::create_dir_all(this.root().join(sub)).expect("mkdir");
        }
        this
    }

    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    /// `<root>/<relative>`.
    pub fn path(&self, relative: &str) -> PathBuf {
        self.root().join(relative)
    }

    pub fn model_dir(&self) -> PathBuf {
        self.path("model")
    }

    /// Writes `input/config/hyperparameters.json` with these values, verbatim (all strings, as
    /// SageMaker writes them; use [`sdk_encode`] for SDK-style values).
    pub fn write_hyperparameters(&self, pairs: &[(&str, &str)]) {
        let map: serde_json::Map<String, serde_json::Value> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), serde_json::Value::String(v.to_string())))
            .collect();
        self.write_config(
            "hyperparameters.json",
            &serde_json::Value::Object(map).to_string(),
        );
    }

    /// Writes `input/config/inputdataconfig.json` for `(channel, mode)` pairs (File, FastFile, Pipe).
    pub fn write_inputdataconfig(&self, channels: &[(&str, &str)]) {
        let map: serde_json::Map<String, serde_json::Value> = channels
            .iter()
            .map(|(name, mode)| {
                let entry = serde_json::json!({
                    "ContentType": "text/csv",
                    "TrainingInputMode": mode,
                    "S3DistributionType": "FullyReplicated",
                    "RecordWrapperType": "None"
                });
                (name.to_string(), entry)
            })
            .collect();
        self.write_config(
            "inputdataconfig.json",
            &serde_json::Value::Object(map).to_string(),
        );
    }

    /// Writes a single-host `input/config/resourceconfig.json`.
    pub fn write_resourceconfig(&self) {
        self.write_config(
            "resourceconfig.json",
            r#"{"current_host": "algo-1", "hosts": ["algo-1"], "network_interface_name": "eth0"}"#,
        );
    }

    /// Writes any file under `input/config`.
    pub fn write_config(&self, name: &str, text: &str) {
        std::fs::write(self.path("input/config").join(name), text).expect("write config");
    }

    /// Writes `input/data/<channel>/<name>` (`name` may contain sub-folders).
    pub fn add_channel_file(&self, channel: &str, name: &str, bytes: impl AsRef<[u8]>) -> PathBuf {
        let path = self.path("input/data").join(channel).join(name);
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::fs::write(&path, bytes).expect("write channel file");
        path
    }

    /// Copies `source` into `input/data/<channel>/<name>`.
    pub fn copy_channel_file(&self, channel: &str, name: &str, source: &Path) -> PathBuf {
        let bytes = std::fs::read(source).expect("read source");
        self.add_channel_file(channel, name, bytes)
    }

    /// The binary with a clean environment pointing at this tree (and offline from the Hub); add
    /// arguments yourself.
    pub fn command(&self) -> Command {
        let mut cmd = Command::new(TXCAT);
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("SM_") {
                cmd.env_remove(&key);
            }
        }
        // No test reaches the real Hugging Face Hub: Hub ids found nowhere else fail at once
        // (tests/hub_model.rs undoes this for its fake Hub).
        cmd.env("SAGEMAKER_BASE_DIR", self.root())
            .env("RUST_LOG", "info")
            .env("HF_HUB_OFFLINE", "1")
            .env("HF_HOME", self.root().join("hf-home"))
            .env_remove("HF_ENDPOINT")
            .env_remove("HF_TOKEN");
        cmd
    }

    /// Runs `txcat <args>` against this tree.
    pub fn run(&self, args: &[&str]) -> Output {
        self.command().args(args).output().expect("run txcat")
    }

    /// The contents of `output/failure`, if written.
    pub fn failure_text(&self) -> Option<String> {
        std::fs::read_to_string(self.path("output/failure")).ok()
    }

    /// True when the model directory is absent or holds nothing.
    pub fn model_dir_is_empty(&self) -> bool {
        match std::fs::read_dir(self.model_dir()) {
            Ok(mut entries) => entries.next().is_none(),
            Err(_) => true,
        }
    }

    /// Asserts a failed run: exit `code`, a one-line failure file containing every `needle`,
    /// and nothing in the model directory. Returns the failure text.
    pub fn assert_failed(&self, output: &Output, code: i32, needles: &[&str]) -> String {
        let log = describe(output);
        assert_eq!(output.status.code(), Some(code), "exit status\n{log}");
        let text = self
            .failure_text()
            .unwrap_or_else(|| panic!("no output/failure written\n{log}"));
        assert_eq!(
            text.trim_end_matches('\n').lines().count(),
            1,
            "failure file is one line: {text:?}"
        );
        for needle in needles {
            assert!(
                text.contains(needle),
                "failure text {text:?} lacks {needle:?}\n{log}"
            );
        }
        assert!(self.model_dir_is_empty(), "model dir written on failure");
        text
    }

    /// Runs `txcat train` and asserts it succeeded (exit 0, no failure file); returns the output.
    pub fn assert_trained(&self) -> Output {
        let out = self.run(&["train"]);
        assert_eq!(
            out.status.code(),
            Some(0),
            "train failed\n{}",
            describe(&out)
        );
        assert!(self.failure_text().is_none(), "failure file after success");
        out
    }

    /// Asserts a successful run (exit 0, no failure file, empty model dir) and returns stdout.
    pub fn assert_dry_run_ok(&self, output: &Output) -> String {
        let log = describe(output);
        assert_eq!(output.status.code(), Some(0), "exit status\n{log}");
        assert!(
            self.failure_text().is_none(),
            "failure file after success\n{log}"
        );
        assert!(self.model_dir_is_empty(), "dry run wrote to the model dir");
        String::from_utf8_lossy(&output.stdout).into_owned()
    }
}

/// Stdout and stderr of a run, for assertion messages.
pub fn describe(output: &Output) -> String {
    format!(
        "--- stdout\n{}\n--- stderr\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// The `(rows, label -> count)` of a CSV file read with the `csv` crate directly, as an
/// independent count to compare txcat's summary with.
pub fn csv_label_counts(
    path: &Path,
    label_column: &str,
) -> (usize, std::collections::BTreeMap<String, usize>) {
    let mut reader = csv::Reader::from_path(path).expect("open csv");
    let headers = reader.headers().expect("header").clone();
    let at = headers
        .iter()
        .position(|h| h == label_column)
        .expect("label column");
    let mut counts = std::collections::BTreeMap::new();
    let mut rows = 0;
    for record in reader.records() {
        let record = record.expect("row");
        *counts.entry(record[at].trim().to_string()).or_insert(0) += 1;
        rows += 1;
    }
    (rows, counts)
}

/// The line of a dry-run summary that describes `channel`: `(rows, files, skipped)`.
pub fn channel_line(summary: &str, channel: &str) -> (usize, usize, usize) {
    let line = summary
        .lines()
        .find(|l| l.trim_start().starts_with(&format!("{channel} ")))
        .unwrap_or_else(|| panic!("no line for channel {channel} in\n{summary}"));
    let words: Vec<&str> = line.split_whitespace().collect();
    let rows = words[1].parse().expect("rows");
    let files = words[3].parse().expect("files");
    let skipped = words[5].parse().expect("skipped");
    (rows, files, skipped)
}

/// The label table of a dry-run summary: label -> (train rows, eval rows), plus the declared
/// number of labels.
pub fn label_table(summary: &str) -> (usize, std::collections::BTreeMap<String, (usize, usize)>) {
    let mut lines = summary.lines().skip_while(|l| !l.starts_with("Labels ("));
    let title = lines
        .next()
        .unwrap_or_else(|| panic!("no label table in\n{summary}"));
    let declared = title
        .trim_start_matches("Labels (")
        .trim_end_matches("):")
        .parse()
        .expect("label count");
    let mut table = std::collections::BTreeMap::new();
    for line in lines.skip(1).take_while(|l| !l.trim().is_empty()) {
        let rest = line.trim_start();
        let (_id, rest) = rest.split_once(' ').expect("id");
        let (rest, eval) = rest.trim_end().rsplit_once(' ').expect("eval");
        let (label, train) = rest.trim_end().rsplit_once(' ').expect("train");
        table.insert(
            label.trim().to_string(),
            (
                train.parse().expect("train count"),
                eval.parse().expect("eval count"),
            ),
        );
    }
    (declared, table)
}

/// Words of the fixture vocabulary that mark each class; every row also gets noise words
/// shared by all classes, so the model has to find the marker.
pub const CLASSES: &[(&str, &[&str])] = &[
    ("FEES", &["fee", "charges", "service"]),
    ("FUEL", &["shell", "sasol", "engen"]),
    ("GROCERIES", &["woolworths", "spar", "checkers"]),
    ("INCOME", &["salary", "interest", "deposit"]),
];
pub const NOISE: &[&str] = &[
    "pos", "card", "purchase", "ref", "online", "payment", "bank",
];

/// A committed fixture under `tests/fixtures`.
pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// A seeded CSV of `rows` rows: noise words around one class marker and a number.
pub fn separable_csv(rows: usize, seed: u64) -> String {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut csv = String::from("text,category\n");
    for i in 0..rows {
        let (label, markers) = CLASSES[i % CLASSES.len()];
        let mut words: Vec<String> = (0..rng.gen_range(1..4))
            .map(|_| NOISE.choose(&mut rng).unwrap().to_string())
            .collect();
        words.push(markers.choose(&mut rng).unwrap().to_string());
        words.push(rng.gen_range(10..9999).to_string());
        words.shuffle(&mut rng);
        csv.push_str(&format!("{},{label}\n", words.join(" ")));
    }
    csv
}

/// A tree with train/validation channels of [`separable_csv`] and hyperparameters for a quick
/// tiny-model run that learns them (later `extra` pairs override earlier ones).
pub fn separable_job(extra: &[(&str, &str)]) -> OptMl {
    let ml = OptMl::new();
    ml.add_channel_file("train", "train.csv", separable_csv(160, 1));
    ml.add_channel_file("validation", "val.csv", separable_csv(40, 2));
    write_quick_hyperparameters(&ml, extra);
    ml
}

/// Hyperparameters for a quick tiny-model run that learns [`separable_csv`]-like data in a few
/// seconds (later `extra` pairs override earlier ones).
pub fn write_quick_hyperparameters(ml: &OptMl, extra: &[(&str, &str)]) {
    let model = fixture("tiny-distilbert-trainable");
    let mut hp = vec![
        ("model_name_or_path", model.to_str().unwrap()),
        ("epochs", "20"),
        ("train_batch_size", "16"),
        ("learning_rate", "0.003"),
        ("max_length", "32"),
        ("num_threads", "1"),
        ("save_strategy", "no"),
        ("logging_steps", "10"),
    ];
    hp.extend_from_slice(extra);
    ml.write_hyperparameters(&hp);
}

/// The model of one [`separable_job`] run, trained once per test binary and kept in a fixed place
/// under the target's tmp dir (replaced on every run, so runs leave nothing behind).
pub fn separable_model() -> PathBuf {
    static MODEL: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    MODEL
        .get_or_init(|| {
            // A random head, as the Trainer starts from: after the probe's head and twenty
            // epochs the tiny model's scores sit at 1.0, where no precision can move them.
            let ml = separable_job(&[("linear_probe", "false")]);
            ml.assert_trained();
            let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
                .join(format!("{}_model", env!("CARGO_CRATE_NAME")));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).expect("model dir");
            for entry in std::fs::read_dir(ml.model_dir()).expect("trained model") {
                let entry = entry.expect("entry");
                std::fs::copy(entry.path(), dir.join(entry.file_name())).expect("copy");
            }
            dir
        })
        .clone()
}

/// `txcat predict --model MODEL --input INPUT --output OUTPUT EXTRA...`, asserting exit 0.
pub fn run_predict(model: &Path, input: &Path, output: &Path, extra: &[&str]) {
    let out = Command::new(TXCAT)
        .arg("predict")
        .arg("--model")
        .arg(model)
        .arg("--input")
        .arg(input)
        .arg("--output")
        .arg(output)
        .args(extra)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
}

//! A training job writes `report.html` beside its other outputs (issue 19), `txcat report`
//! rebuilds the same bytes from those outputs, and headless Chromium (where installed) renders
//! the page with its charts and a hostile label shown as text.
//!
//! Set `TXCAT_REPORT_PNG=path` to keep the screenshot (the README's docs/report.png), and
//! `TXCAT_REPORT_HTML=path` to keep the page.

mod common;

use common::{describe, fixture, sdk_encode, separable_csv, OptMl, TXCAT};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const HOSTILE: &str = "<script>alert(1)</script>";

/// The separable set with the FUEL class renamed to a script tag.
fn hostile_csv(rows: usize, seed: u64) -> String {
    separable_csv(rows, seed).replace(",FUEL\n", &format!(",\"{HOSTILE}\"\n"))
}

fn read_json(path: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}

/// Two epochs of 10 steps, a log line every 4 steps, an evaluation per epoch.
fn job() -> OptMl {
    let ml = OptMl::new();
    ml.add_channel_file("train", "train.csv", hostile_csv(160, 21));
    ml.add_channel_file("validation", "val.csv", hostile_csv(40, 22));
    let model = sdk_encode(fixture("tiny-distilbert-trainable").to_str().unwrap());
    ml.write_hyperparameters(&[
        ("model_name_or_path", model.as_str()),
        ("epochs", "2"),
        ("train_batch_size", "16"),
        ("max_length", "32"),
        ("num_threads", "2"),
        ("logging_steps", "4"),
        ("save_strategy", "\"no\""),
    ]);
    ml.assert_trained();
    ml
}

#[test]
fn a_job_writes_the_report_and_txcat_report_rebuilds_it() {
    let ml = job();
    let data = ml.path("output/data");
    let html = std::fs::read_to_string(data.join("report.html")).expect("report.html");
    if let Some(keep) = std::env::var_os("TXCAT_REPORT_HTML") {
        std::fs::write(keep, &html).unwrap();
    }

    // The training log: one record per 4 steps, equal windows, so their mean is the run's.
    let log = read_json(&data.join("log_history.json"));
    let records = log["log_history"].as_array().expect("log_history");
    let steps: Vec<u64> = records
        .iter()
        .map(|r| r["step"].as_u64().unwrap())
        .collect();
    assert_eq!(steps, [4, 8, 12, 16, 20]);
    let summary = read_json(&data.join("run_summary.json"));
    let mean = records
        .iter()
        .map(|r| r["loss"].as_f64().unwrap())
        .sum::<f64>()
        / records.len() as f64;
    let train_loss = summary["train_loss"].as_f64().unwrap();
    assert!((mean - train_loss).abs() < 1e-6, "{mean} vs {train_loss}");
    // The CPU step profile accounts for the timed steps' seconds, forward and backward included.
    let steady = &summary["train_steady"];
    let timed = steady["timed_seconds"].as_f64().unwrap();
    assert_eq!(steady["timed_steps"], 18, "{steady}");
    let profile = steady["step_profile"]
        .as_object()
        .expect("step_profile on CPU");
    let phases: f64 = profile.values().map(|v| v.as_f64().unwrap()).sum();
    assert!(
        (phases - timed).abs() <= 0.05 * timed + 1e-3,
        "phases {phases} vs timed {timed}: {steady}"
    );
    for phase in ["forward_s", "backward_s", "optimizer_s"] {
        assert!(profile[phase].as_f64().unwrap() > 0.0, "{phase}: {steady}");
    }
    assert_eq!(profile["allreduce_s"], 0.0, "one process: {steady}");
    // Linear decay without warm-up: step s (1-based) ran at base * (20 - (s - 1)) / 20.
    let base = log["hyperparameters"]["learning_rate"].as_f64().unwrap();
    for r in records {
        let s = r["step"].as_f64().unwrap();
        let lr = r["learning_rate"].as_f64().unwrap();
        assert!((lr - base * (21.0 - s) / 20.0).abs() < 1e-12, "{r}");
    }

    // Examples agree with the confusion matrix they illustrate (fp32 on CPU both times).
    let metrics = read_json(&data.join("metrics.json"));
    let labels: Vec<&str> = metrics["per_class"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["label"].as_str().unwrap())
        .collect();
    assert!(labels.contains(&HOSTILE), "{labels:?}");
    let examples = read_json(&data.join("eval_examples.json"));
    assert_eq!(examples["rows_scanned"], 40);
    for (t, row) in metrics["confusion_matrix"]
        .as_array()
        .unwrap()
        .iter()
        .enumerate()
    {
        for (p, n) in row.as_array().unwrap().iter().enumerate() {
            let shown = examples["misclassified"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|e| e["true_label"] == labels[t] && e["predicted_label"] == labels[p])
                .count() as u64;
            let expected = if t == p {
                0
            } else {
                n.as_u64().unwrap().min(3)
            };
            assert_eq!(shown, expected, "{} -> {}", labels[t], labels[p]);
        }
    }

    // The page: charts with the expected series, the hostile label as text only.
    assert!(html.contains("data-chart=\"loss\" data-series=\"1\""));
    assert!(html.contains("data-chart=\"eval_scores\" data-series=\"3\""));
    assert_eq!(html.matches("data-points=\"5\"").count(), 2, "loss and lr");
    assert_eq!(html.matches("class=\"cell\"").count(), 16);
    assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
    assert!(!html.to_lowercase().contains("<script"));
    assert!(html.contains("tfidf_baseline"), "the baseline column");

    // Rebuilt elsewhere from the files alone: the same bytes.
    let copy = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(&data).unwrap() {
        let entry = entry.unwrap();
        if entry.file_name() != "report.html" {
            std::fs::copy(entry.path(), copy.path().join(entry.file_name())).unwrap();
        }
    }
    let out = Command::new(TXCAT)
        .args(["report", "--output-dir"])
        .arg(copy.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let rebuilt = std::fs::read_to_string(copy.path().join("report.html")).unwrap();
    assert!(rebuilt == html, "txcat report wrote different bytes");

    render_in_chromium(&data.join("report.html"));
}

#[test]
fn txcat_report_on_a_folder_without_metrics_is_bad_input() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(TXCAT)
        .args(["report", "--output-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("metrics.json"));
    assert!(!dir.path().join("report.html").exists());
}

/// Runs Chromium headless with the flags of issue 19 and a fresh profile; `None` on timeout.
fn chromium(binary: &Path, extra: &[String], page: &Path) -> Option<std::process::Output> {
    let profile = tempfile::tempdir().unwrap();
    let mut child = Command::new(binary)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
            // Containers often give /dev/shm 64 MB, too little for a 2,900-pixel page.
            "--disable-dev-shm-usage",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(extra)
        .arg(format!("file://{}", page.display()))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start chromium");
    let started = Instant::now();
    while child.try_wait().ok()?.is_none() {
        if started.elapsed() > Duration::from_secs(90) {
            let _ = child.kill();
            return None;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    child.wait_with_output().ok()
}

fn find_chromium() -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join("chromium"))
            .find(|p| p.is_file())
    })
}

fn render_in_chromium(page: &Path) {
    let Some(binary) = find_chromium() else {
        eprintln!(
            "skipping the browser check: no `chromium` on PATH (Debian: apt-get install chromium)"
        );
        return;
    };
    let shots = tempfile::tempdir().unwrap();
    let png = shots.path().join("report.png");
    let shot = chromium(
        &binary,
        &[
            format!("--screenshot={}", png.display()),
            "--window-size=1240,2900".into(),
        ],
        page,
    )
    .expect("chromium screenshot timed out");
    assert!(
        png.metadata().map(|m| m.len() > 1000).unwrap_or(false),
        "no screenshot: {}",
        String::from_utf8_lossy(&shot.stderr)
    );
    if let Some(keep) = std::env::var_os("TXCAT_REPORT_PNG") {
        std::fs::copy(&png, keep).unwrap();
    }

    let dump = chromium(&binary, &["--dump-dom".into()], page).expect("chromium dump timed out");
    let dom = String::from_utf8_lossy(&dump.stdout);
    assert!(
        dom.contains("</svg>"),
        "no SVG in the rendered DOM: {dom:.400}"
    );
    for chart in [
        "loss",
        "learning_rate",
        "eval_scores",
        "eval_loss",
        "per_class",
        "confusion",
    ] {
        assert!(
            dom.contains(&format!("data-chart=\"{chart}\"")),
            "{chart} missing"
        );
    }
    assert_eq!(dom.matches("<polyline class=\"series\"").count(), 6);
    assert!(
        dom.contains("&lt;script&gt;alert(1)&lt;/script&gt;"),
        "label not text"
    );
    assert!(!dom.contains(HOSTILE), "the label became markup");
}

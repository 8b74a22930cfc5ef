//! Spot interruption through the binary: SIGTERM mid-run writes a checkpoint, leaves the model
//! directory empty and fails with a line that says to rerun; the rerun resumes and ends with the
//! same weights and evaluation as a run that was never interrupted.

mod common;

use common::{describe, fixture, separable_csv, OptMl};
use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::{Duration, Instant};

fn tree() -> OptMl {
    let ml = OptMl::new();
    ml.add_channel_file("train", "train.csv", separable_csv(1600, 11));
    ml.add_channel_file("validation", "val.csv", separable_csv(80, 12));
    let model = fixture("tiny-distilbert-trainable");
    ml.write_hyperparameters(&[
        ("model_name_or_path", model.to_str().unwrap()),
        ("epochs", "6"),
        ("train_batch_size", "8"),
        ("learning_rate", "0.003"),
        ("max_length", "32"),
        ("num_threads", "1"),
        ("save_strategy", "steps"),
        ("save_steps", "25"),
        ("logging_steps", "25"),
    ]);
    ml
}

fn published(ml: &OptMl) -> (Vec<u8>, serde_json::Value) {
    let weights = std::fs::read(ml.model_dir().join("model.safetensors")).expect("weights");
    let evaluation = std::fs::read_to_string(ml.path("output/data/evaluation.json")).unwrap();
    (weights, serde_json::from_str(&evaluation).unwrap())
}

#[test]
fn sigterm_checkpoints_and_a_rerun_resumes_to_the_same_model() {
    // The reference: the same job, never interrupted.
    let reference = tree();
    let out = reference.run(&["train"]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let (ref_weights, ref_eval) = published(&reference);

    // Interrupted after its first checkpoint.
    let ml = tree();
    let mut child = ml
        .command()
        .arg("train")
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let mut log = String::new();
    let mut lines = BufReader::new(stderr).lines();
    let started = Instant::now();
    for line in lines.by_ref() {
        let line = line.unwrap();
        log.push_str(&line);
        log.push('\n');
        if line.contains("checkpoint saved") {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "no checkpoint\n{log}"
        );
    }
    assert!(
        log.contains("checkpoint saved"),
        "run ended before a checkpoint\n{log}"
    );
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    for line in lines {
        log.push_str(&line.unwrap());
        log.push('\n');
    }
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(1), "interrupted run's status\n{log}");
    let failure = ml.failure_text().expect("failure file");
    assert!(failure.contains("interrupted by SIGTERM"), "{failure}");
    assert!(failure.contains("checkpoint saved to"), "{failure}");
    assert!(failure.contains("rerun"), "{failure}");
    assert!(
        ml.model_dir_is_empty(),
        "model written by an interrupted run"
    );
    let checkpoints: Vec<_> = std::fs::read_dir(ml.path("checkpoints"))
        .expect("checkpoint dir")
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("checkpoint-") && !n.contains(".tmp"))
        .collect();
    assert!(!checkpoints.is_empty(), "no checkpoint kept\n{log}");

    // The rerun (what SageMaker does after a spot interruption) resumes and finishes.
    let out = ml.run(&["train"]);
    let rerun_log = describe(&out);
    assert_eq!(out.status.code(), Some(0), "{rerun_log}");
    assert!(
        rerun_log.contains("resuming from checkpoint"),
        "{rerun_log}"
    );
    assert!(
        ml.failure_text().is_none(),
        "stale failure file after success"
    );
    let (weights, evaluation) = published(&ml);
    assert!(
        weights == ref_weights,
        "resumed weights differ from the uninterrupted run"
    );
    assert_eq!(evaluation, ref_eval);
}

#[test]
fn an_incompatible_checkpoint_is_refused_unless_resume_is_never() {
    let ml = tree();
    ml.write_hyperparameters(&[
        (
            "model_name_or_path",
            fixture("tiny-distilbert-trainable").to_str().unwrap(),
        ),
        ("max_steps", "10"),
        ("max_length", "32"),
        ("num_threads", "1"),
        ("save_strategy", "steps"),
        ("save_steps", "5"),
    ]);
    let out = ml.run(&["train"]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    std::fs::remove_dir_all(ml.model_dir()).unwrap();

    // Same checkpoints, another learning rate: the job must say what differs.
    let model = fixture("tiny-distilbert-trainable")
        .to_str()
        .unwrap()
        .to_owned();
    let base = [
        ("model_name_or_path", model.as_str()),
        ("max_steps", "10"),
        ("max_length", "32"),
        ("num_threads", "1"),
        ("save_strategy", "steps"),
        ("save_steps", "5"),
        ("learning_rate", "0.01"),
    ];
    ml.write_hyperparameters(&base);
    let out = ml.run(&["train"]);
    ml.assert_failed(&out, 2, &["learning_rate", "resume=never"]);

    let mut never = base.to_vec();
    never.push(("resume", "never"));
    ml.write_hyperparameters(&never);
    let out = ml.run(&["train"]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
}

//! Data-parallel training through the binary on the CPU (issue 15): `txcat train` with
//! `num_processes=2` starts two Gloo workers on this host. Two workers with `train_batch_size=B`
//! must train what one process with `2B` trains (same seeded batches, gradients summed by
//! allreduce), and a worker killed mid-run must fail the job in bounded time with one line
//! naming the rank and the phase.

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::{separable_csv, OptMl};

fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr").port()
}

/// The trainable tiny DistilBERT with dropout off, so a run depends only on batches and
/// arithmetic (dropout masks are drawn per rank and could not match one process's).
fn model_without_dropout(scratch: &Path) -> PathBuf {
    let src = common::fixture("tiny-distilbert-trainable");
    let dir = scratch.join("tiny-no-dropout");
    std::fs::create_dir_all(&dir).expect("mkdir");
    for entry in std::fs::read_dir(&src).expect("fixture") {
        let entry = entry.expect("entry");
        std::fs::copy(entry.path(), dir.join(entry.file_name())).expect("copy");
    }
    let path = dir.join("config.json");
    let mut config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).expect("config")).expect("json");
    for key in [
        "dropout",
        "attention_dropout",
        "seq_classif_dropout",
        "qa_dropout",
    ] {
        config[key] = serde_json::json!(0.0);
    }
    std::fs::write(&path, config.to_string()).expect("write config");
    dir
}

/// A job on the separable data with the given batch size and worker count.
fn job(model: &Path, batch: usize, workers: usize, extra: &[(&str, &str)]) -> OptMl {
    let ml = OptMl::new();
    let rows = extra
        .iter()
        .find(|(k, _)| *k == "test_train_rows")
        .map_or(150, |(_, v)| v.parse().unwrap());
    ml.add_channel_file("train", "train.csv", separable_csv(rows, 1));
    ml.add_channel_file("validation", "val.csv", separable_csv(41, 2));
    let (batch, workers, port) = (
        batch.to_string(),
        workers.to_string(),
        free_port().to_string(),
    );
    let mut hp = vec![
        ("model_name_or_path", model.to_str().unwrap()),
        ("epochs", "3"),
        ("train_batch_size", batch.as_str()),
        ("eval_batch_size", "16"),
        ("learning_rate", "0.003"),
        ("weight_decay", "0.01"),
        ("max_length", "32"),
        ("num_threads", "1"),
        ("save_strategy", "no"),
        ("logging_steps", "4"),
        ("baseline_tfidf", "false"),
        ("num_processes", workers.as_str()),
        ("dist_port", port.as_str()),
        ("dist_timeout", "60"),
    ];
    hp.extend(extra.iter().filter(|(k, _)| !k.starts_with("test_")));
    ml.write_hyperparameters(&hp);
    ml
}

/// Every tensor of a saved model, as f32 values.
fn weights(model_dir: &Path) -> BTreeMap<String, Vec<f32>> {
    let bytes = std::fs::read(model_dir.join("model.safetensors")).expect("weights");
    let tensors = safetensors::SafeTensors::deserialize(&bytes).expect("safetensors");
    tensors
        .tensors()
        .into_iter()
        .map(|(name, view)| {
            assert_eq!(view.dtype(), safetensors::Dtype::F32, "{name}");
            let values = view
                .data()
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect();
            (name, values)
        })
        .collect()
}

/// Below this magnitude a tensor is rounding noise: DistilBERT's `k_lin.bias` gets a gradient
/// that is zero in exact arithmetic (softmax ignores a constant added to every score of a
/// query), so AdamW turns each run's rounding into steps of its own and the values stay tiny.
const NOISE_SCALE: f64 = 1e-5;

/// The largest per-tensor difference relative to that tensor's largest magnitude (absolute for
/// tensors at noise scale on both sides), and the names of the tensors at noise scale.
fn max_relative_difference(
    a: &BTreeMap<String, Vec<f32>>,
    b: &BTreeMap<String, Vec<f32>>,
) -> (f64, String, Vec<String>) {
    assert_eq!(
        a.keys().collect::<Vec<_>>(),
        b.keys().collect::<Vec<_>>(),
        "same tensors"
    );
    let largest = |v: &[f32]| v.iter().fold(0.0f64, |m, x| m.max(f64::from(x.abs())));
    let mut worst = (0.0f64, String::new(), Vec::new());
    for (name, x) in a {
        let y = &b[name];
        assert_eq!(x.len(), y.len(), "{name}");
        let scale = largest(x).max(largest(y));
        let diff = x
            .iter()
            .zip(y)
            .fold(0.0f64, |m, (p, q)| m.max(f64::from((p - q).abs())));
        let rel = if scale < NOISE_SCALE {
            worst.2.push(name.clone());
            diff
        } else {
            diff / scale
        };
        if rel > worst.0 {
            worst.0 = rel;
            worst.1 = name.clone();
        }
    }
    worst
}

fn summary(ml: &OptMl) -> serde_json::Value {
    let text = std::fs::read_to_string(ml.path("output/data/run_summary.json")).expect("summary");
    serde_json::from_str(&text).expect("summary json")
}

#[test]
fn two_workers_train_what_one_process_with_twice_the_batch_trains() {
    let scratch = tempfile::tempdir().expect("scratch");
    let model = model_without_dropout(scratch.path());

    let pair = job(&model, 8, 2, &[]);
    let pair_out = pair.assert_trained();
    let single = job(&model, 16, 1, &[]);
    single.assert_trained();

    let log = common::describe(&pair_out);
    assert!(
        log.contains("started data-parallel worker") && log.contains("data-parallel group ready"),
        "the two-worker run did not go through the launcher and c10d\n{log}"
    );
    let (pair_summary, single_summary) = (summary(&pair), summary(&single));
    assert_eq!(pair_summary["world_size"], 2);
    assert_eq!(single_summary["world_size"], 1);
    assert_eq!(pair_summary["global_steps"], single_summary["global_steps"]);
    // 150 rows in global batches of 16: 10 steps per epoch.
    assert_eq!(pair_summary["global_steps"], 30);
    for file in ["labels.json", "config.json"] {
        let read = |ml: &OptMl| std::fs::read_to_string(ml.model_dir().join(file)).expect(file);
        let (a, b): (serde_json::Value, serde_json::Value) = (
            serde_json::from_str(&read(&pair)).unwrap(),
            serde_json::from_str(&read(&single)).unwrap(),
        );
        assert_eq!(a["id2label"], b["id2label"], "{file}");
    }

    let (trained, start) = (weights(&pair.model_dir()), weights(&model));
    let (diff, name, noise) = max_relative_difference(&trained, &weights(&single.model_dir()));
    assert!(
        diff <= 1e-5,
        "two workers vs one process: {name} differs by {diff:e} (relative)"
    );
    // Only the two layers' key biases may sit at noise scale; everything else was compared
    // relatively.
    assert!(
        noise.len() <= 2 && noise.iter().all(|n| n.ends_with("k_lin.bias")),
        "tensors at noise scale: {noise:?}"
    );
    // Not trivially equal: training moved the weights far more than the tolerance.
    let shared: BTreeMap<String, Vec<f32>> = start
        .into_iter()
        .filter(|(k, v)| trained.get(k).is_some_and(|t| t.len() == v.len()))
        .collect();
    let trained_shared: BTreeMap<String, Vec<f32>> = trained
        .into_iter()
        .filter(|(k, _)| shared.contains_key(k))
        .collect();
    let (moved, _, _) = max_relative_difference(&trained_shared, &shared);
    assert!(
        moved > 1e-2,
        "training barely moved the weights ({moved:e})"
    );
    // The metrics are the whole evaluation set's on both sides.
    let metrics = |ml: &OptMl| -> serde_json::Value {
        serde_json::from_str(
            &std::fs::read_to_string(ml.path("output/data/metrics.json")).expect("metrics"),
        )
        .expect("metrics json")
    };
    let (pm, sm) = (metrics(&pair), metrics(&single));
    assert_eq!(pm["eval_accuracy"], sm["eval_accuracy"], "{pm}\n{sm}");
}

#[test]
fn three_workers_with_class_weights_accumulation_and_a_ragged_last_batch_match_one_process() {
    let scratch = tempfile::tempdir().expect("scratch");
    let model = model_without_dropout(scratch.path());
    // 149 rows in global batches of 15: the last batch of 14 splits 4/5/5 over the ranks;
    // pairs of batches make one optimizer step, and the balanced class weights make each
    // batch's loss a weighted mean whose normaliser spans all ranks.
    let extra = [
        ("test_train_rows", "149"),
        ("epochs", "2"),
        ("class_weights", "balanced"),
        ("label_smoothing", "0.1"),
        ("gradient_accumulation_steps", "2"),
        // A random head, bit for bit the same on both sides: the probe's head agrees only to
        // the float order of the workers' thread counts, which ten steps amplify past 1e-5.
        ("linear_probe", "false"),
    ];
    let trio = job(&model, 5, 3, &extra);
    trio.assert_trained();
    let single = job(&model, 15, 1, &extra);
    single.assert_trained();
    assert_eq!(summary(&trio)["world_size"], 3);
    assert_eq!(summary(&trio)["global_steps"], 10);
    assert_eq!(summary(&single)["global_steps"], 10);
    let (diff, name, _) =
        max_relative_difference(&weights(&trio.model_dir()), &weights(&single.model_dir()));
    assert!(
        diff <= 1e-5,
        "three workers vs one process: {name} differs by {diff:e}"
    );
}

/// A started `txcat train` whose stderr is collected on a thread; lines also arrive on `lines`.
struct Running {
    child: std::process::Child,
    lines: std::sync::mpsc::Receiver<String>,
    log: std::thread::JoinHandle<String>,
}

impl Running {
    fn start(ml: &OptMl) -> Self {
        let mut child = ml
            .command()
            .arg("train")
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .expect("start txcat");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, lines) = std::sync::mpsc::channel::<String>();
        let log = std::thread::spawn(move || {
            let mut all = String::new();
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                all.push_str(&line);
                all.push('\n');
                let _ = tx.send(line);
            }
            all
        });
        Self { child, lines, log }
    }

    /// Rank 1's pid, once rank 0 has logged optimizer step `step` (logging_steps=1).
    fn wait_for_step(&mut self, step: u64) -> i32 {
        let deadline = Instant::now() + Duration::from_secs(120);
        let mut pid = None;
        let mut training = false;
        let needle = format!(" step={step};");
        while !(pid.is_some() && training) {
            let left = deadline.saturating_duration_since(Instant::now());
            let Ok(line) = self.lines.recv_timeout(left) else {
                let _ = self.child.kill();
                panic!("no training progress before the deadline");
            };
            if line.contains("started data-parallel worker") && line.contains("rank=1") {
                let p = line.split("pid=").nth(1).expect("pid field");
                pid = Some(
                    p.split_whitespace()
                        .next()
                        .unwrap()
                        .parse::<i32>()
                        .expect("pid"),
                );
            }
            training |= line.contains(&needle);
        }
        pid.unwrap()
    }

    /// Waits at most `limit` for the job to end; its exit status and whole log.
    fn finish(mut self, limit: Duration) -> (std::process::ExitStatus, String) {
        let started = Instant::now();
        let status = loop {
            if let Some(s) = self.child.try_wait().expect("wait") {
                break s;
            }
            if started.elapsed() > limit {
                let _ = self.child.kill();
                panic!("the job still runs {limit:?} later");
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        (status, self.log.join().expect("reader"))
    }
}

fn signal(pid: i32, name: &str) {
    let status = std::process::Command::new("kill")
        .args([&format!("-{name}"), &pid.to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
}

#[test]
fn a_killed_worker_fails_the_job_in_bounded_time_naming_rank_and_phase() {
    let scratch = tempfile::tempdir().expect("scratch");
    let model = model_without_dropout(scratch.path());
    let ml = job(
        &model,
        4,
        2,
        &[
            ("epochs", "1000"),
            ("logging_steps", "1"),
            ("dist_timeout", "10"),
        ],
    );
    let mut run = Running::start(&ml);
    let rank1 = run.wait_for_step(3);
    signal(rank1, "KILL");
    // The survivor's next collective fails at once (the peer's socket closed) or within
    // dist_timeout; the launcher adds at most its grace period.
    let (status, log) = run.finish(Duration::from_secs(60));
    assert_eq!(status.code(), Some(1), "exit status\n{log}");
    let text = ml
        .failure_text()
        .unwrap_or_else(|| panic!("no failure file\n{log}"));
    assert_eq!(text.trim_end().lines().count(), 1, "one line: {text:?}");
    for needle in [
        "rank 1 of 2 was killed by signal 9",
        "failed on rank 0 of 2",
    ] {
        assert!(text.contains(needle), "{text:?} lacks {needle:?}\n{log}");
    }
    let phases = [
        "gradient allreduce",
        "stop decision",
        "loss",
        "non-finite",
        "evaluation",
    ];
    assert!(
        phases.iter().any(|p| text.contains(p)),
        "{text:?} names no phase"
    );
    assert!(ml.model_dir_is_empty(), "model written after a failed run");
}

#[test]
fn sigterm_stops_every_worker_after_one_checkpoint_and_the_rerun_finishes_like_an_uninterrupted_run(
) {
    let scratch = tempfile::tempdir().expect("scratch");
    let model = model_without_dropout(scratch.path());
    let extra = [
        ("epochs", "6"),
        ("logging_steps", "1"),
        ("load_best_model_at_end", "false"),
    ];
    let with_checkpoints = [extra.as_slice(), &[("save_strategy", "epoch")]].concat();
    let ml = job(&model, 4, 2, &with_checkpoints);
    let mut run = Running::start(&ml);
    run.wait_for_step(3);
    signal(run.child.id() as i32, "TERM");
    let (status, log) = run.finish(Duration::from_secs(60));
    assert_eq!(status.code(), Some(1), "exit status\n{log}");
    let text = ml
        .failure_text()
        .unwrap_or_else(|| panic!("no failure file\n{log}"));
    for needle in [
        "rank 0 of 2 failed: interrupted by SIGTERM",
        "checkpoint saved to",
    ] {
        assert!(text.contains(needle), "{text:?} lacks {needle:?}\n{log}");
    }
    assert!(
        ml.model_dir_is_empty(),
        "model written by an interrupted run"
    );

    // The rerun resumes on both ranks from rank 0's checkpoint and ends where an uninterrupted
    // two-worker run ends.
    let rerun = ml.assert_trained();
    let rerun_log = common::describe(&rerun);
    assert!(
        rerun_log.contains("resuming from checkpoint"),
        "the rerun did not resume\n{rerun_log}"
    );
    let whole = job(&model, 4, 2, &with_checkpoints);
    whole.assert_trained();
    assert_eq!(
        summary(&ml)["global_steps"],
        summary(&whole)["global_steps"]
    );
    let (diff, name, _) =
        max_relative_difference(&weights(&ml.model_dir()), &weights(&whole.model_dir()));
    assert!(
        diff <= 1e-5,
        "resumed vs uninterrupted: {name} differs by {diff:e}"
    );
}

/// A host's tree for a two-host run: its own `/opt/ml` with its own resourceconfig.json (hosts
/// deliberately unsorted: every host sorts them).
fn host_job(model: &Path, name: &str, port: &str, extra: &[(&str, &str)]) -> OptMl {
    host_job_on(model, name, port, extra, "eth-not-here")
}

/// [`host_job`] whose resourceconfig.json names `interface` as SageMaker's network interface.
fn host_job_on(
    model: &Path,
    name: &str,
    port: &str,
    extra: &[(&str, &str)],
    interface: &str,
) -> OptMl {
    let mut all = vec![("dist_port", port)];
    all.extend_from_slice(extra);
    let ml = job(model, 8, 1, &all);
    ml.write_config(
        "resourceconfig.json",
        &serde_json::json!({
            "current_host": name,
            "hosts": ["algo-2", "algo-1"],
            "network_interface_name": interface,
        })
        .to_string(),
    );
    ml
}

fn start_host(ml: &OptMl) -> std::process::Child {
    ml.command()
        .arg("train")
        .env("TXCAT_HOST_ADDRESSES", "algo-1=127.0.0.1,algo-2=127.0.0.2")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start txcat")
}

fn wait_output(child: std::process::Child, limit: Duration) -> std::process::Output {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    rx.recv_timeout(limit)
        .unwrap_or_else(|_| panic!("a host still runs after {limit:?}"))
        .expect("wait")
}

/// Loopback addresses other than 127.0.0.1 are usable (Linux routes all of 127/8 to `lo`).
fn second_loopback_usable() -> bool {
    match std::net::TcpListener::bind("127.0.0.2:0") {
        Ok(_) => true,
        Err(e) => {
            eprintln!("skipping the two-host case: cannot bind 127.0.0.2 ({e})");
            false
        }
    }
}

#[test]
fn two_hosts_on_two_loopback_addresses_train_like_one_process_and_only_the_master_writes() {
    if !second_loopback_usable() {
        return;
    }
    let scratch = tempfile::tempdir().expect("scratch");
    let model = model_without_dropout(scratch.path());
    let port = free_port().to_string();
    let (first, second) = (
        host_job(&model, "algo-1", &port, &[]),
        host_job(&model, "algo-2", &port, &[]),
    );
    // The second host comes up first: the master's name is only needed in the mapping.
    let b = start_host(&second);
    let a = start_host(&first);
    let (a, b) = (
        wait_output(a, Duration::from_secs(180)),
        wait_output(b, Duration::from_secs(180)),
    );
    assert_eq!(a.status.code(), Some(0), "algo-1\n{}", common::describe(&a));
    assert_eq!(b.status.code(), Some(0), "algo-2\n{}", common::describe(&b));
    let b_log = common::describe(&b);
    assert!(
        b_log.contains("node_rank=1") && b_log.contains("127.0.0.1:"),
        "algo-2 did not join as node 1 of the master's group\n{b_log}"
    );
    assert!(
        second.model_dir_is_empty(),
        "only global rank 0 writes the model"
    );
    assert!(!second.path("output/data/run_summary.json").exists());
    assert_eq!(summary(&first)["world_size"], 2);

    let single = job(&model, 16, 1, &[]);
    single.assert_trained();
    assert_eq!(
        summary(&first)["global_steps"],
        summary(&single)["global_steps"]
    );
    let (diff, name, _) =
        max_relative_difference(&weights(&first.model_dir()), &weights(&single.model_dir()));
    assert!(
        diff <= 1e-5,
        "two hosts vs one process: {name} differs by {diff:e}"
    );
}

#[test]
fn a_host_that_never_joins_fails_the_master_within_dist_timeout() {
    let scratch = tempfile::tempdir().expect("scratch");
    let model = model_without_dropout(scratch.path());
    let port = free_port().to_string();
    let alone = host_job(&model, "algo-1", &port, &[("dist_timeout", "4")]);
    let started = Instant::now();
    let out = wait_output(start_host(&alone), Duration::from_secs(90));
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "{:?}",
        started.elapsed()
    );
    let text = alone.assert_failed(
        &out,
        1,
        &[
            "rank 0 of 2 on host algo-1",
            "rendezvous",
            "failed on rank 0 of 2",
        ],
    );
    eprintln!("failure line: {text}");
    assert!(text.contains(&port), "{text}");
}

#[test]
fn hosts_with_different_rows_fail_before_training_instead_of_training_apart() {
    if !second_loopback_usable() {
        return;
    }
    let scratch = tempfile::tempdir().expect("scratch");
    let model = model_without_dropout(scratch.path());
    let port = free_port().to_string();
    let first = host_job(&model, "algo-1", &port, &[]);
    // What ShardedByS3Key would do: the second host sees other rows.
    let second = host_job(&model, "algo-2", &port, &[("test_train_rows", "120")]);
    let b = start_host(&second);
    let a = start_host(&first);
    let (a, b) = (
        wait_output(a, Duration::from_secs(120)),
        wait_output(b, Duration::from_secs(120)),
    );
    for (ml, out) in [(&first, &a), (&second, &b)] {
        ml.assert_failed(
            out,
            1,
            &["see other labels, rows or hyperparameters", "[1] of 2"],
        );
    }
}

#[test]
fn a_bad_input_in_the_workers_fails_the_job_with_their_exit_status_and_reason() {
    let scratch = tempfile::tempdir().expect("scratch");
    let model = model_without_dropout(scratch.path());
    let ml = job(&model, 8, 2, &[]);
    std::fs::remove_dir_all(ml.path("input/data/train")).expect("remove train channel");
    let out = ml.run(&["train"]);
    let text = ml.assert_failed(&out, 2, &["rank 0 of 2 failed", "no `train` channel"]);
    assert!(
        !text.contains("rank 1"),
        "rank 0's reason is the one reported: {text}"
    );
}

/// inputdataconfig.json with `train` split across hosts and `validation` on every host.
fn sharded_train_config() -> String {
    serde_json::json!({
        "train": {"ContentType": "text/csv", "TrainingInputMode": "File",
                  "S3DistributionType": "ShardedByS3Key", "RecordWrapperType": "None"},
        "validation": {"ContentType": "text/csv", "TrainingInputMode": "File",
                       "S3DistributionType": "FullyReplicated", "RecordWrapperType": "None"},
    })
    .to_string()
}

#[test]
fn sharded_by_s3_key_rows_are_gathered_so_two_hosts_train_like_one_process_on_all_shards() {
    if !second_loopback_usable() {
        return;
    }
    let scratch = tempfile::tempdir().expect("scratch");
    let model = model_without_dropout(scratch.path());
    let port = free_port().to_string();
    // Each host's shard: different rows, and a label only the second host has.
    let all = separable_csv(150, 1);
    let mut lines: Vec<&str> = all.lines().collect();
    let header = lines.remove(0);
    let (a_rows, b_rows) = lines.split_at(80);
    let shard = |rows: &[&str], extra: &str| format!("{header}\n{}\n{extra}", rows.join("\n"));
    let extra_b = "refund from the bakery 12,refunds\nrefund card 4411,refunds\n";
    let (a_csv, b_csv) = (shard(a_rows, ""), shard(b_rows, extra_b));
    let hosts: Vec<OptMl> = ["algo-1", "algo-2"]
        .iter()
        .zip([&a_csv, &b_csv])
        .map(|(name, csv)| {
            let ml = host_job(&model, name, &port, &[]);
            ml.add_channel_file("train", "train.csv", csv);
            ml.write_config("inputdataconfig.json", &sharded_train_config());
            ml
        })
        .collect();
    let b = start_host(&hosts[1]);
    let a = start_host(&hosts[0]);
    let (a, b) = (
        wait_output(a, Duration::from_secs(180)),
        wait_output(b, Duration::from_secs(180)),
    );
    assert_eq!(a.status.code(), Some(0), "algo-1\n{}", common::describe(&a));
    assert_eq!(b.status.code(), Some(0), "algo-2\n{}", common::describe(&b));
    assert!(hosts[1].model_dir_is_empty());

    // One process on both shards, in host order.
    let single = job(&model, 16, 1, &[]);
    single.add_channel_file(
        "train",
        "train.csv",
        format!("{a_csv}{}", &b_csv[header.len() + 1..]),
    );
    single.assert_trained();
    let labels = |ml: &OptMl| -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(ml.model_dir().join("labels.json")).unwrap())
            .unwrap()
    };
    let union = labels(&hosts[0]);
    assert_eq!(union["id2label"], labels(&single)["id2label"]);
    assert!(union["id2label"].to_string().contains("refunds"), "{union}");
    let first = &hosts[0];
    assert_eq!(summary(first)["train_rows"], 152);
    assert_eq!(
        summary(first)["global_steps"],
        summary(&single)["global_steps"]
    );
    let (diff, name, _) =
        max_relative_difference(&weights(&first.model_dir()), &weights(&single.model_dir()));
    assert!(
        diff <= 1e-5,
        "sharded hosts vs one process: {name} differs by {diff:e}"
    );
}

/// Two network namespaces joined by a veth pair, each end named `eth0` with its own address and
/// an `/etc/netns/<ns>/hosts` that `ip netns exec` mounts over /etc/hosts, so `algo-1`/`algo-2`
/// resolve by name as SageMaker's DNS makes them; removed on drop.
struct TwoHostNetwork {
    namespaces: [String; 2],
}

impl TwoHostNetwork {
    const ADDRESSES: [&'static str; 2] = ["10.231.7.1", "10.231.7.2"];

    /// `None` (with the reason printed) where namespaces cannot be made: not root, no `ip`.
    fn create() -> Option<Self> {
        let tag = std::process::id();
        let net = TwoHostNetwork {
            namespaces: [format!("txcat-a-{tag}"), format!("txcat-b-{tag}")],
        };
        let (va, vb) = (format!("txva{tag}"), format!("txvb{tag}"));
        let [a, b] = &net.namespaces;
        let hosts = format!(
            "127.0.0.1 localhost\n{} algo-1\n{} algo-2\n",
            Self::ADDRESSES[0],
            Self::ADDRESSES[1]
        );
        let steps: Vec<Vec<&str>> = vec![
            vec!["netns", "add", a],
            vec!["netns", "add", b],
            vec!["link", "add", &va, "type", "veth", "peer", "name", &vb],
            vec!["link", "set", &va, "netns", a],
            vec!["link", "set", &vb, "netns", b],
            vec!["-n", a, "link", "set", &va, "name", "eth0"],
            vec!["-n", b, "link", "set", &vb, "name", "eth0"],
        ];
        for step in &steps {
            if let Err(why) = ip(step) {
                eprintln!(
                    "skipping the network-namespace case: `ip {}` failed ({why})",
                    step.join(" ")
                );
                return None; // drop removes what was made
            }
        }
        for (ns, addr) in net.namespaces.iter().zip(Self::ADDRESSES) {
            let cidr = format!("{addr}/24");
            for step in [
                vec![
                    "-n",
                    ns.as_str(),
                    "addr",
                    "add",
                    cidr.as_str(),
                    "dev",
                    "eth0",
                ],
                vec!["-n", ns.as_str(), "link", "set", "eth0", "up"],
                vec!["-n", ns.as_str(), "link", "set", "lo", "up"],
            ] {
                ip(&step).unwrap_or_else(|why| panic!("ip {}: {why}", step.join(" ")));
            }
            let dir = PathBuf::from("/etc/netns").join(ns);
            std::fs::create_dir_all(&dir).expect("mkdir /etc/netns/<ns>");
            std::fs::write(dir.join("hosts"), &hosts).expect("write hosts");
            // `ip netns exec` also needs to mount (the hosts file, /sys): probe it once.
            if let Err(why) = ip(&["netns", "exec", ns, "true"]) {
                eprintln!("skipping the network-namespace case: `ip netns exec` failed ({why})");
                return None;
            }
        }
        Some(net)
    }
}

impl Drop for TwoHostNetwork {
    fn drop(&mut self) {
        for ns in &self.namespaces {
            let _ = ip(&["netns", "del", ns]);
            let _ = std::fs::remove_dir_all(PathBuf::from("/etc/netns").join(ns));
        }
    }
}

fn ip(args: &[&str]) -> Result<(), String> {
    let out = std::process::Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
    }
}

#[test]
fn two_hosts_in_two_network_namespaces_find_each_other_by_name_and_train_like_one_process() {
    let Some(net) = TwoHostNetwork::create() else {
        return;
    };
    let scratch = tempfile::tempdir().expect("scratch");
    let model = model_without_dropout(scratch.path());
    let port = free_port().to_string();
    let timeout = [("dist_timeout", "120")];
    let hosts: Vec<OptMl> = ["algo-1", "algo-2"]
        .iter()
        // As SageMaker writes it: every host's interface is eth0, no address mapping.
        .map(|name| host_job_on(&model, name, &port, &timeout, "eth0"))
        .collect();
    let start = |ml: &OptMl, ns: &str| {
        let base = ml.command();
        let mut cmd = std::process::Command::new("ip");
        cmd.args(["netns", "exec", ns, common::TXCAT, "train"]);
        for (key, value) in base.get_envs() {
            match value {
                Some(v) => cmd.env(key, v),
                None => cmd.env_remove(key),
            };
        }
        cmd.env_remove("TXCAT_HOST_ADDRESSES")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start txcat in a namespace")
    };
    let b = start(&hosts[1], &net.namespaces[1]);
    let a = start(&hosts[0], &net.namespaces[0]);
    let (a, b) = (
        wait_output(a, Duration::from_secs(240)),
        wait_output(b, Duration::from_secs(240)),
    );
    assert_eq!(a.status.code(), Some(0), "algo-1\n{}", common::describe(&a));
    assert_eq!(b.status.code(), Some(0), "algo-2\n{}", common::describe(&b));
    let b_log = common::describe(&b);
    assert!(
        b_log.contains("node_rank=1") && b_log.contains(TwoHostNetwork::ADDRESSES[0]),
        "algo-2 did not reach the master at algo-1's address\n{b_log}"
    );
    assert!(
        hosts[1].model_dir_is_empty(),
        "only global rank 0 writes the model"
    );
    assert_eq!(summary(&hosts[0])["world_size"], 2);

    let single = job(&model, 16, 1, &[]);
    single.assert_trained();
    let (diff, name, _) = max_relative_difference(
        &weights(&hosts[0].model_dir()),
        &weights(&single.model_dir()),
    );
    assert!(
        diff <= 1e-5,
        "two namespaces vs one process: {name} differs by {diff:e}"
    );
}

/// ProcessGroupNCCL comes from a plugin (csrc/nccl_plugin.cpp) the binary loads on GPU jobs;
/// `TXCAT_DIST_BACKEND=nccl` reaches it on a CPU machine, where libtorch itself must refuse it for
/// want of GPUs: that proves the binary loaded the plugin and the two agree on the c10d types they
/// pass. Without a plugin, or with an unknown backend, the job says what to do instead.
#[test]
fn the_nccl_plugin_is_loaded_and_reached_and_a_missing_one_or_a_bad_backend_is_named() {
    let scratch = tempfile::tempdir().expect("scratch");
    let model = model_without_dropout(scratch.path());
    let run = |backend: &str, plugin: &Path| {
        let ml = job(&model, 8, 2, &[]);
        let out = ml
            .command()
            .env("TXCAT_DIST_BACKEND", backend)
            .env("TXCAT_NCCL_PLUGIN", plugin)
            .arg("train")
            .output()
            .expect("run txcat");
        (ml, out)
    };
    let missing = scratch.path().join("missing/libtxcat_nccl.so");
    let (ml, out) = run("nccl", &missing);
    ml.assert_failed(
        &out,
        2,
        &[
            "rank 0 of 2 failed",
            "no NCCL plugin was found",
            "build_nccl_plugin",
        ],
    );
    assert!(ml.model_dir_is_empty());
    let (ml, out) = run("mpi", &missing);
    ml.assert_failed(
        &out,
        2,
        &["TXCAT_DIST_BACKEND=\"mpi\" is not one of auto, gloo, nccl"],
    );

    let Some(plugin) = std::env::var_os("TXCAT_TEST_NCCL_PLUGIN").filter(|p| !p.is_empty()) else {
        eprintln!("skipped the plugin half: TXCAT_TEST_NCCL_PLUGIN is unset (scripts/test builds it with scripts/lib.sh build_nccl_plugin; a CPU wheel has no NCCL)");
        return;
    };
    let (ml, out) = run("nccl", Path::new(&plugin));
    ml.assert_failed(
        &out,
        1,
        &["rank 0 of 2 failed", "ProcessGroupNCCL", "no GPUs found"],
    );
    assert!(ml.model_dir_is_empty());
}

/// A process started with torchrun's variables for a world of one (what `bench/gpu.sh --check`
/// uses to run NCCL on a single GPU) joins a one-rank group and trains exactly what a plain
/// single process trains.
#[test]
fn a_torchrun_worker_of_a_world_of_one_trains_like_a_plain_process() {
    let scratch = tempfile::tempdir().expect("scratch");
    let model = model_without_dropout(scratch.path());
    let worker = job(&model, 8, 1, &[]);
    let port = free_port().to_string();
    let out = worker
        .command()
        .env("RANK", "0")
        .env("WORLD_SIZE", "1")
        .env("MASTER_ADDR", "127.0.0.1")
        .env("MASTER_PORT", &port)
        .env("TXCAT_DIST_BACKEND", "gloo")
        .arg("train")
        .output()
        .expect("run txcat");
    let log = common::describe(&out);
    assert!(out.status.success(), "{log}");
    assert!(
        log.contains("data-parallel group ready") && log.contains("backend=Gloo"),
        "the worker did not join a c10d group\n{log}"
    );
    let plain = job(&model, 8, 1, &[]);
    plain.assert_trained();
    assert_eq!(summary(&worker)["world_size"], 1);
    assert_eq!(
        summary(&worker)["global_steps"],
        summary(&plain)["global_steps"]
    );
    let (diff, name, _) =
        max_relative_difference(&weights(&worker.model_dir()), &weights(&plain.model_dir()));
    assert!(diff <= 1e-6, "{name} differs by {diff:e} (relative)");
}

//! Checkpoints through the real training loop on a tiny bag-of-embeddings classifier with
//! HF-style names: an interrupted run resumed from its checkpoint ends bit-identical to an
//! uninterrupted one (CPU); incompatible checkpoints, pruning, torn writes and `resume=must`.

mod tiny;

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tch::Device;
use txcat::checkpoint::{
    find_resume, load_weights, CheckpointError, CheckpointHook, DataFingerprint, Fingerprint,
    ModelIdentity, SavePolicy,
};
use txcat::hyperparams::{Hyperparameters, ResumePolicy, SaveStrategy};
use txcat::model::ClassifierModel;
use txcat::tokenize::batch::TokenizedSet;
use txcat::train::{fit, FitOptions, HookAction, StepContext, StepHook, StopReason, TrainOutcome};

use tiny::{serial, Tiny, CLASSES};

/// Rows: [CLS, noise..., keyword of the class, noise..., SEP].
fn synthetic(rows: usize, seed: u64) -> (TokenizedSet, Vec<String>, Vec<usize>) {
    let mut set = TokenizedSet::new(false);
    let (mut texts, mut labels) = (Vec::new(), Vec::new());
    for (ids, label) in tiny::synthetic_rows(rows, seed) {
        set.push(&ids, &[], label).unwrap();
        texts.push(format!("{ids:?}"));
        labels.push(label as usize);
    }
    (set, texts, labels)
}

fn names() -> Vec<String> {
    tiny::class_names()
}

/// 160 rows / batch 8 = 20 steps per epoch, 40 in all; a checkpoint every 5 steps.
fn hp() -> Hyperparameters {
    Hyperparameters {
        save_strategy: SaveStrategy::Steps,
        save_steps: Some(5),
        save_total_limit: Some(2),
        ..tiny::hyperparameters(2.0)
    }
}

struct Job {
    train: TokenizedSet,
    eval: TokenizedSet,
    fingerprint: Fingerprint,
    _model_file: tempfile::NamedTempFile,
}

fn job(hp: &Hyperparameters) -> Job {
    let (train, train_texts, train_ids) = synthetic(160, 1);
    let (eval, eval_texts, eval_ids) = synthetic(40, 2);
    let model_file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(model_file.path(), b"initial weights stand-in").unwrap();
    let model = ModelIdentity::from_files("tiny", None, model_file.path()).unwrap();
    let data = DataFingerprint::of(&train_texts, &train_ids, &eval_texts, &eval_ids);
    Job {
        train,
        eval,
        fingerprint: Fingerprint::new(model, names(), data, hp),
        _model_file: model_file,
    }
}

fn hook(dir: &Path, hp: &Hyperparameters, job: &Job) -> CheckpointHook {
    CheckpointHook::new(
        dir,
        SavePolicy::from_hyperparameters(hp),
        job.fingerprint.clone(),
        names(),
    )
    .unwrap()
}

fn run(
    model: &mut Tiny,
    job: &Job,
    hp: &Hyperparameters,
    opts: FitOptions,
    hook: &mut dyn StepHook,
) -> TrainOutcome {
    fit(model, &job.train, &job.eval, hp, opts, hook).unwrap()
}

/// Trains fresh tiny weights under `hp`, checkpointing into a new directory.
fn checkpointed_run(hp: &Hyperparameters) -> (Job, tempfile::TempDir) {
    let job = job(hp);
    let dir = tempfile::tempdir().unwrap();
    let mut model = Tiny::new(3, CLASSES, 0.1);
    run(
        &mut model,
        &job,
        hp,
        opts(),
        &mut hook(dir.path(), hp, &job),
    );
    (job, dir)
}

fn opts() -> FitOptions {
    FitOptions::new(names(), Device::Cpu)
}

fn checkpoint_steps(dir: &Path) -> Vec<u64> {
    let mut steps: Vec<u64> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| {
            let name = e.unwrap().file_name().to_string_lossy().into_owned();
            name.strip_prefix("checkpoint-")?.parse().ok()
        })
        .collect();
    steps.sort_unstable();
    steps
}

fn assert_same_weights(a: &Tiny, b: &Tiny, what: &str) {
    let (wa, wb) = (a.weights(), b.weights());
    assert_eq!(wa.len(), wb.len());
    for ((n, x), (m, y)) in wa.iter().zip(wb.iter()) {
        assert_eq!(n, m);
        assert!(x.equal(y), "{n} differs: {what}");
    }
}

/// Plays the signal handler: sets the flag while step `at` runs, then lets the checkpoint hook
/// see it.
struct SignalAt {
    at: u64,
    signal: Arc<AtomicBool>,
    inner: CheckpointHook,
}

impl StepHook for SignalAt {
    fn after_step(&mut self, ctx: &StepContext<'_>) -> Result<HookAction, String> {
        if ctx.state.global_step == self.at {
            self.signal.store(true, Ordering::SeqCst);
        }
        self.inner.after_step(ctx)
    }
}

#[test]
fn interrupted_run_resumes_to_the_same_weights_and_metrics() {
    let _serial = serial();
    let hp = hp();
    let job = job(&hp);

    // (a) uninterrupted, without and with checkpoints: saving must not change the run.
    let mut plain = Tiny::new(3, CLASSES, 0.1);
    let plain_out = run(&mut plain, &job, &hp, opts(), &mut ());
    let dir_a = tempfile::tempdir().unwrap();
    let mut full = Tiny::new(3, CLASSES, 0.1);
    let mut hook_a = hook(dir_a.path(), &hp, &job);
    let full_out = run(&mut full, &job, &hp, opts(), &mut hook_a);
    assert_eq!(full_out.stop_reason, StopReason::Completed);
    assert_same_weights(&plain, &full, "checkpointing changed the run");
    assert_eq!(plain_out.final_report, full_out.final_report);

    // (b) a signal during step 13 (mid-epoch, not a save step): the hook saves step 13, then
    // fit stops.
    let dir = tempfile::tempdir().unwrap();
    let signal = Arc::new(AtomicBool::new(false));
    let first_hook = hook(dir.path(), &hp, &job).stop_on(Arc::clone(&signal));
    let stop = first_hook.stop_flag();
    let mut first_hook = SignalAt {
        at: 13,
        signal: Arc::clone(&signal),
        inner: first_hook,
    };
    let mut first = Tiny::new(3, CLASSES, 0.1);
    let first_out = run(
        &mut first,
        &job,
        &hp,
        FitOptions {
            stop: Some(stop),
            ..opts()
        },
        &mut first_hook,
    );
    assert_eq!(first_out.stop_reason, StopReason::Interrupted);
    assert_eq!(first_out.state.global_step, 13);
    assert_eq!(first_hook.inner.interrupted_at(), Some(13));
    assert_eq!(
        first_hook.inner.last_saved(),
        Some(dir.path().join("checkpoint-13").as_path())
    );
    assert_eq!(
        checkpoint_steps(dir.path()),
        vec![10, 13],
        "limit 2 keeps the newest two"
    );

    // Resume into a model initialised differently: everything must come from the checkpoint.
    let resumable = find_resume(dir.path(), &job.fingerprint, ResumePolicy::Auto)
        .unwrap()
        .expect("a checkpoint to resume");
    assert_eq!(resumable.step, 13);
    assert_eq!(
        (
            resumable.point.state.epoch,
            resumable.point.state.batch_in_epoch
        ),
        (0, 13)
    );
    let mut resumed = Tiny::new(99, CLASSES, 0.1);
    load_weights(resumed.var_store(), &resumable.weights).unwrap();
    assert_same_weights(
        &first,
        &resumed,
        "loaded weights differ from the interrupted model",
    );
    let mut second_hook = hook(dir.path(), &hp, &job);
    let resumed_out = run(
        &mut resumed,
        &job,
        &hp,
        FitOptions {
            resume: Some(resumable.point),
            ..opts()
        },
        &mut second_hook,
    );
    assert_eq!(resumed_out.stop_reason, StopReason::Completed);
    assert_eq!(resumed_out.state.global_step, 40);
    assert_same_weights(&full, &resumed, "resumed run ends elsewhere");
    assert_eq!(full_out.state.history, resumed_out.state.history);
    assert_eq!(full_out.final_report, resumed_out.final_report);
    assert_eq!(full_out.best, resumed_out.best);
    // (d) pruning: steps 5..40 were saved, the newest two remain.
    assert_eq!(checkpoint_steps(dir.path()), vec![35, 40]);
    assert_eq!(checkpoint_steps(dir_a.path()), vec![35, 40]);
}

#[test]
fn epoch_strategy_saves_each_epoch_end_with_best_weights() {
    let _serial = serial();
    let hp = Hyperparameters {
        save_strategy: SaveStrategy::Epoch,
        save_steps: None,
        save_total_limit: None,
        ..hp()
    };
    let job = job(&hp);
    let dir = tempfile::tempdir().unwrap();
    let mut model = Tiny::new(3, CLASSES, 0.1);
    let mut hook = hook(dir.path(), &hp, &job);
    run(&mut model, &job, &hp, opts(), &mut hook);
    assert_eq!(checkpoint_steps(dir.path()), vec![20, 40]);
    let ckpt = dir.path().join("checkpoint-20");
    for file in [
        "model.safetensors",
        "optimizer.safetensors",
        "best_model.safetensors",
        "trainer_state.json",
        "label_map.json",
        "fingerprint.json",
        "manifest.json",
    ] {
        assert!(ckpt.join(file).is_file(), "{file} missing");
    }
    let labels: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(ckpt.join("label_map.json")).unwrap())
            .unwrap();
    assert_eq!(labels["id2label"]["3"], "CLASS_3");
    let state: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(ckpt.join("trainer_state.json")).unwrap())
            .unwrap();
    // Saved after the epoch closed: the next run starts at epoch 1, batch 0.
    assert_eq!(state["state"]["epoch"], 1);
    assert_eq!(state["state"]["batch_in_epoch"], 0);
    assert_eq!(state["state"]["history"].as_array().unwrap().len(), 1);
    let r = find_resume(dir.path(), &job.fingerprint, ResumePolicy::Must)
        .unwrap()
        .unwrap();
    assert_eq!(r.step, 40);
    assert!(r.point.best_weights.is_some());
    assert_eq!(r.point.optimizer.step, 40);
}

#[test]
fn incompatible_checkpoint_names_every_differing_field() {
    let _serial = serial();
    let hp = Hyperparameters {
        max_steps: Some(5),
        ..hp()
    };
    let (job, dir) = checkpointed_run(&hp);
    assert_eq!(checkpoint_steps(dir.path()), vec![5]);

    let other_hp = Hyperparameters {
        learning_rate: 3e-2,
        seed: 8,
        logging_steps: 1, // does not change the run: not a difference
        ..hp.clone()
    };
    let mut other = job.fingerprint.clone();
    other.hyperparameters = Fingerprint::new(
        job.fingerprint.model.clone(),
        names(),
        job.fingerprint.data.clone(),
        &other_hp,
    )
    .hyperparameters;
    other.data.train_sha256 = "0".repeat(64);
    other.labels.push("CLASS_NEW".into());
    let err = find_resume(dir.path(), &other, ResumePolicy::Auto).unwrap_err();
    let text = err.to_string();
    assert!(
        matches!(err, CheckpointError::Incompatible { .. }),
        "{text}"
    );
    for needle in [
        "hyperparameters.learning_rate: checkpoint 0.05, this job 0.03",
        "hyperparameters.seed: checkpoint 7, this job 8",
        "data.train_sha256",
        "labels: checkpoint 4 classes, this job 5",
        "CLASS_NEW",
        "resume=never",
        "checkpoint-5",
    ] {
        assert!(text.contains(needle), "{needle:?} not in {text}");
    }
    assert!(!text.contains("logging_steps"), "{text}");
    assert!(!text.contains("data.eval_sha256"), "{text}");
    assert_eq!(text.lines().count(), 1);
    // resume=never ignores it; the same fingerprint resumes.
    assert!(find_resume(dir.path(), &other, ResumePolicy::Never)
        .unwrap()
        .is_none());
    assert!(
        find_resume(dir.path(), &job.fingerprint, ResumePolicy::Auto)
            .unwrap()
            .is_some()
    );
}

#[test]
fn torn_and_incomplete_checkpoints_are_skipped() {
    let _serial = serial();
    let hp = Hyperparameters {
        max_steps: Some(10),
        save_total_limit: None,
        ..hp()
    };
    let (job, dir) = checkpointed_run(&hp);
    assert_eq!(checkpoint_steps(dir.path()), vec![5, 10]);

    // A write killed half-way, a newer folder with no manifest (torn S3 sync), and a newest one
    // whose weights were truncated after the manifest was written.
    let torn = dir.path().join("checkpoint-99.tmp-4242");
    std::fs::create_dir(&torn).unwrap();
    std::fs::write(torn.join("model.safetensors"), b"\x08\x00partial").unwrap();
    let no_manifest = dir.path().join("checkpoint-50");
    std::fs::create_dir(&no_manifest).unwrap();
    std::fs::write(no_manifest.join("model.safetensors"), b"junk").unwrap();
    let truncated = dir.path().join("checkpoint-60");
    copy_dir(&dir.path().join("checkpoint-10"), &truncated);
    let weights = truncated.join("model.safetensors");
    let len = std::fs::metadata(&weights).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&weights)
        .unwrap()
        .set_len(len / 2)
        .unwrap();

    let r = find_resume(dir.path(), &job.fingerprint, ResumePolicy::Must)
        .unwrap()
        .unwrap();
    assert_eq!(r.step, 10, "newest complete checkpoint");
    // A new hook clears the torn write (never the complete ones).
    hook(dir.path(), &hp, &job);
    assert!(!torn.exists());
    assert!(dir.path().join("checkpoint-10").is_dir());
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
    }
}

#[test]
fn resume_must_without_checkpoint_is_an_error_and_auto_starts_fresh() {
    let hp = hp();
    let job = job(&hp);
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("never-created");
    let err = find_resume(&missing, &job.fingerprint, ResumePolicy::Must).unwrap_err();
    assert!(matches!(err, CheckpointError::NothingToResume { .. }));
    let text = err.to_string();
    assert!(
        text.contains("resume=must") && text.contains("never-created"),
        "{text}"
    );
    assert!(find_resume(&missing, &job.fingerprint, ResumePolicy::Auto)
        .unwrap()
        .is_none());
    assert!(
        find_resume(dir.path(), &job.fingerprint, ResumePolicy::Auto)
            .unwrap()
            .is_none()
    );
}

#[test]
fn weights_of_another_shape_are_refused_by_name() {
    let _serial = serial();
    let hp = Hyperparameters {
        max_steps: Some(5),
        ..hp()
    };
    let (_, dir) = checkpointed_run(&hp);
    let weights = dir.path().join("checkpoint-5/model.safetensors");
    let wider = Tiny::new(3, CLASSES + 1, 0.1);
    let before = wider.weights();
    let err = load_weights(wider.var_store(), &weights)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("classifier.") && err.contains("shape"),
        "{err}"
    );
    // Nothing was copied: the check runs before any variable changes.
    for ((n, x), (_, y)) in before.iter().zip(wider.weights().iter()) {
        assert!(x.equal(y), "{n} changed by a refused load");
    }
}

#[test]
fn save_strategy_no_writes_nothing_even_when_interrupted() {
    let _serial = serial();
    let hp = Hyperparameters {
        save_strategy: SaveStrategy::No,
        save_steps: None,
        ..hp()
    };
    let job = job(&hp);
    let dir = tempfile::tempdir().unwrap();
    let signal = Arc::new(AtomicBool::new(false));
    let inner = hook(dir.path(), &hp, &job).stop_on(Arc::clone(&signal));
    let stop = inner.stop_flag();
    let mut h = SignalAt {
        at: 3,
        signal,
        inner,
    };
    let mut model = Tiny::new(3, CLASSES, 0.1);
    let out = run(
        &mut model,
        &job,
        &hp,
        FitOptions {
            stop: Some(stop),
            ..opts()
        },
        &mut h,
    );
    assert_eq!(out.stop_reason, StopReason::Interrupted);
    assert_eq!(out.state.global_step, 3);
    assert_eq!(h.inner.last_saved(), None);
    assert!(std::fs::read_dir(dir.path()).unwrap().next().is_none());
}

#[test]
fn model_identity_hashes_the_initial_weights() {
    let _serial = serial();
    let a = ModelIdentity::from_var_store("tiny", Tiny::new(3, CLASSES, 0.1).var_store()).unwrap();
    let same =
        ModelIdentity::from_var_store("elsewhere", Tiny::new(3, CLASSES, 0.1).var_store()).unwrap();
    let other =
        ModelIdentity::from_var_store("tiny", Tiny::new(4, CLASSES, 0.1).var_store()).unwrap();
    assert_eq!(
        a.weights_sha256, same.weights_sha256,
        "the source path is not identity"
    );
    assert_eq!(a.weights_bytes, same.weights_bytes);
    assert_ne!(a.weights_sha256, other.weights_sha256);
    // 64x16 embeddings + 16 + 16 LayerNorm + 4x16 + 4 classifier, f32.
    assert_eq!(a.weights_bytes, (64 * 16 + 16 + 16 + 4 * 16 + 4) * 4);
}

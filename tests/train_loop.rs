//! The training loop on a tiny bag-of-embeddings classifier and a separable synthetic set:
//! it learns, it is reproducible, accumulation matches a larger batch, `max_steps`, early
//! stopping, the stop flag and resuming behave.

mod tiny;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tch::Device;
use txcat::hyperparams::Hyperparameters;
use txcat::tokenize::batch::TokenizedSet;
use txcat::train::amp::Precision;
use txcat::train::{
    evaluate, fit, FitOptions, HookAction, ResumePoint, StepContext, StepHook, StopReason,
    TrainOutcome,
};

use tiny::{serial, Tiny, CLASSES};

/// Rows: [CLS, noise..., keyword of the class, noise..., SEP]; lengths 4..=14.
fn synthetic(rows: usize, seed: u64) -> TokenizedSet {
    let mut set = TokenizedSet::new(false);
    for (ids, label) in tiny::synthetic_rows(rows, seed) {
        set.push(&ids, &[], label).unwrap();
    }
    set
}

fn names() -> Vec<String> {
    tiny::class_names()
}

fn hp() -> Hyperparameters {
    tiny::hyperparameters(6.0)
}

fn run(model: &mut Tiny, hp: &Hyperparameters, opts: FitOptions) -> TrainOutcome {
    let (train, eval) = (synthetic(160, 1), synthetic(40, 2));
    fit(model, &train, &eval, hp, opts, &mut ()).unwrap()
}

fn opts() -> FitOptions {
    FitOptions::new(names(), Device::Cpu)
}

#[test]
fn learns_separable_set_and_loss_decreases() {
    let _serial = serial();
    let mut model = Tiny::new(3, CLASSES, 0.1);
    let started = std::time::Instant::now();
    let out = run(&mut model, &hp(), opts());
    assert!(
        started.elapsed().as_secs() < 30,
        "too slow: {:?}",
        started.elapsed()
    );
    assert_eq!(out.stop_reason, StopReason::Completed);
    let train = synthetic(160, 1);
    let on_train = evaluate(&model, &train, 32, 0, Device::Cpu, &names()).unwrap();
    assert_eq!(
        on_train.accuracy, 1.0,
        "train accuracy {}",
        on_train.accuracy
    );
    let losses: Vec<f64> = out
        .state
        .history
        .iter()
        .map(|r| r.metrics.iter().find(|(k, _)| k == "eval_loss").unwrap().1)
        .collect();
    assert_eq!(losses.len(), 6, "one evaluation per epoch");
    assert!(
        losses[5] < losses[0] * 0.5,
        "eval loss did not fall: {losses:?}"
    );
    assert!(out.train_loss.is_finite() && out.train_loss > 0.0);
    assert!(out.final_report.unwrap().accuracy > 0.95);
    assert!(
        out.padding_efficiency > 0.8,
        "bucketing: {}",
        out.padding_efficiency
    );
}

#[test]
fn one_seed_gives_identical_runs_bit_for_bit() {
    let _serial = serial();
    let mut a = Tiny::new(3, CLASSES, 0.1);
    let mut b = Tiny::new(3, CLASSES, 0.1);
    let hp = Hyperparameters {
        epochs: 2.0,
        ..hp()
    };
    let (ra, rb) = (run(&mut a, &hp, opts()), run(&mut b, &hp, opts()));
    assert_eq!(ra.final_report, rb.final_report);
    assert_eq!(ra.state.history, rb.state.history);
    for ((n, x), (_, y)) in a.weights().iter().zip(b.weights().iter()) {
        assert!(x.equal(y), "{n} differs between runs");
    }
    let mut c = Tiny::new(3, CLASSES, 0.1);
    let rc = run(&mut c, &Hyperparameters { seed: 8, ..hp }, opts());
    assert_ne!(
        ra.state.history, rc.state.history,
        "another seed should change the run"
    );
}

#[test]
fn accumulating_two_batches_of_four_equals_one_batch_of_eight() {
    let _serial = serial();
    // Plain shuffles cut the same row order into 4s or 8s; no dropout, so only summation
    // order differs.
    let base = Hyperparameters {
        epochs: 2.0,
        group_by_length: false,
        ..hp()
    };
    let mut one = Tiny::new(3, CLASSES, 0.0);
    let mut two = Tiny::new(3, CLASSES, 0.0);
    let r1 = run(&mut one, &base, opts());
    let r2 = run(
        &mut two,
        &Hyperparameters {
            train_batch_size: 4,
            gradient_accumulation_steps: 2,
            ..base
        },
        opts(),
    );
    assert_eq!(r1.state.global_step, r2.state.global_step);
    for ((n, x), (_, y)) in one.weights().iter().zip(two.weights().iter()) {
        let diff = (x - y).abs().max().double_value(&[]);
        assert!(diff < 1e-4, "{n}: max diff {diff}");
    }
}

#[test]
fn max_steps_overrides_epochs_and_evaluates_at_the_end() {
    let _serial = serial();
    let mut model = Tiny::new(3, CLASSES, 0.1);
    let out = run(
        &mut model,
        &Hyperparameters {
            max_steps: Some(7),
            ..hp()
        },
        opts(),
    );
    assert_eq!(out.state.global_step, 7);
    assert_eq!(out.state.history.last().unwrap().step, 7);
    assert!(out.final_report.is_some());
}

#[test]
fn early_stopping_triggers_when_the_metric_stalls() {
    let _serial = serial();
    // learning_rate 0: the first evaluation is the best, later ones never improve.
    let mut model = Tiny::new(3, CLASSES, 0.1);
    let hp = Hyperparameters {
        epochs: 10.0,
        learning_rate: 0.0,
        early_stopping_patience: Some(2),
        ..hp()
    };
    let out = run(&mut model, &hp, opts());
    assert_eq!(out.stop_reason, StopReason::EarlyStopped);
    assert_eq!(out.state.history.len(), 3);
    assert_eq!(out.state.global_step, 3 * 20);
}

#[test]
fn fp16_loss_scaling_path_matches_fp32_on_finite_gradients() {
    let _serial = serial();
    // The scale is a power of two, so scaling and unscaling fp32 gradients is exact.
    let hp = Hyperparameters {
        epochs: 1.0,
        ..hp()
    };
    let mut plain = Tiny::new(3, CLASSES, 0.1);
    let mut scaled = Tiny::new(3, CLASSES, 0.1);
    run(&mut plain, &hp, opts());
    let out = run(
        &mut scaled,
        &hp,
        FitOptions {
            precision: Precision::Fp16,
            ..opts()
        },
    );
    assert_eq!(out.state.loss_scale, Some(65536.0));
    for ((n, x), (_, y)) in plain.weights().iter().zip(scaled.weights().iter()) {
        let diff = (x - y).abs().max().double_value(&[]);
        assert!(diff < 1e-6, "{n}: max diff {diff}");
    }
}

/// What a checkpoint would store: loop state, optimizer state, weights.
type Saved = (
    txcat::train::TrainState,
    txcat::train::optim::AdamWState,
    txcat::train::WeightSnapshot,
);

/// Stops at a given step and keeps what a checkpoint would store.
struct StopAt {
    step: u64,
    saved: Option<Saved>,
}

impl StepHook for StopAt {
    fn after_step(&mut self, ctx: &StepContext<'_>) -> Result<HookAction, String> {
        if ctx.state.global_step < self.step {
            return Ok(HookAction::Continue);
        }
        let weights = ctx
            .vars()
            .variables()
            .into_iter()
            .map(|(k, t)| (k, t.detach().copy()))
            .collect();
        let optim = ctx.optimizer.export_state().map_err(|e| e.to_string())?;
        self.saved = Some((ctx.state.clone(), optim, weights));
        Ok(HookAction::Stop)
    }
}

#[test]
fn resuming_from_a_mid_epoch_state_reproduces_the_full_run() {
    let _serial = serial();
    let hp = Hyperparameters {
        epochs: 2.0,
        ..hp()
    };
    let (train, eval) = (synthetic(160, 1), synthetic(40, 2));
    let mut full = Tiny::new(3, CLASSES, 0.1);
    fit(&mut full, &train, &eval, &hp, opts(), &mut ()).unwrap();

    let mut first = Tiny::new(3, CLASSES, 0.1);
    let mut hook = StopAt {
        step: 13,
        saved: None,
    };
    let out = fit(&mut first, &train, &eval, &hp, opts(), &mut hook).unwrap();
    assert_eq!(out.stop_reason, StopReason::Hook);
    let (state, optimizer, weights) = hook.saved.unwrap();
    assert_eq!((state.epoch, state.batch_in_epoch), (0, 13));

    let mut resumed = Tiny::new(99, CLASSES, 0.1);
    tch::no_grad(|| {
        let vars = resumed.vs.variables();
        for (k, t) in &weights {
            vars[k].shallow_clone().copy_(t);
        }
    });
    let opts = FitOptions {
        resume: Some(ResumePoint {
            state,
            optimizer,
            best_weights: None,
        }),
        ..opts()
    };
    fit(&mut resumed, &train, &eval, &hp, opts, &mut ()).unwrap();
    for ((n, x), (_, y)) in full.weights().iter().zip(resumed.weights().iter()) {
        assert!(x.equal(y), "{n} differs after resume");
    }
}

#[test]
fn stop_flag_interrupts_between_steps() {
    let _serial = serial();
    let flag = Arc::new(AtomicBool::new(false));
    flag.store(true, Ordering::Relaxed);
    let mut model = Tiny::new(3, CLASSES, 0.1);
    let out = run(
        &mut model,
        &hp(),
        FitOptions {
            stop: Some(flag),
            ..opts()
        },
    );
    assert_eq!(out.stop_reason, StopReason::Interrupted);
    assert_eq!(out.state.global_step, 1);
    assert!(out.final_report.is_none());
}

#[test]
fn kept_evaluation_probabilities_are_what_inference_computes_on_the_final_weights() {
    let _serial = serial();
    let eval = synthetic(40, 2);
    for load_best in [false, true] {
        let hp = Hyperparameters {
            epochs: 3.0,
            load_best_model_at_end: load_best,
            ..hp()
        };
        let mut model = Tiny::new(3, CLASSES, 0.1);
        let kept = {
            let mut o = opts();
            o.keep_eval_probabilities = true;
            run(&mut model, &hp, o)
        };
        let probs = kept
            .final_probabilities
            .expect("probabilities were asked for");
        let again = txcat::inference::probabilities(&model, &eval, 7, 0, Device::Cpu).unwrap();
        assert_eq!(probs.len(), eval.len() * CLASSES);
        let worst = probs
            .iter()
            .zip(&again)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(worst < 1e-6, "kept vs recomputed differ by {worst}");
        // They are the final report's rows: its accuracy follows from their argmax.
        let right = probs
            .chunks(CLASSES)
            .zip(eval.labels())
            .filter(|(row, &y)| {
                let best = (0..CLASSES)
                    .max_by(|&a, &b| row[a].total_cmp(&row[b]))
                    .unwrap();
                best == y as usize
            })
            .count();
        let report = kept.final_report.unwrap();
        assert!((report.accuracy - right as f64 / eval.len() as f64).abs() < 1e-12);

        let mut model = Tiny::new(3, CLASSES, 0.1);
        assert!(run(&mut model, &hp, opts()).final_probabilities.is_none());
    }
}

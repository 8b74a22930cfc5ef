//! Fine-tunes a classifier on prepared data and publishes the results: resolves the pretrained
//! model, tokenizes every row once, trains, then writes the Hugging Face model directory and the
//! evaluation reports through staging folders.
//!
//! Invariants: nothing reaches `model/` or `output/data/` unless training and every write
//! succeeded ([`StagedDir`]); the label order is the [`LabelMap`]'s (LabelEncoder order) from data
//! to `config.json`; `output_uri` uploads happen only after both directories are published.

use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Instant;

use serde_json::json;
use tch::Device;

use crate::artifacts::{write_json, ArtifactError, StagedDir};
use crate::baseline;
use crate::blend::saved::BlendError;
use crate::champion::{self, ChampionError, ChampionRequest};
pub use crate::checkpoint::CheckpointPlan;
use crate::data::labels::LabelMap;
use crate::data::prepared::{LabelledTexts, PreparedData};
use crate::hyperparams::Hyperparameters;
use crate::metrics::{self, MetricsError};
use crate::model::hub::HubSettings;
use crate::model::source::HubRequest;
use crate::model::{
    check_model_dir, resolve_source, ModelCheck, ModelError, ModelSource, SequenceClassifier,
    SourceRequest,
};
use crate::phases::PhaseClock;
use crate::report;
use crate::sagemaker::Paths;
use crate::storage::archive::UnpackLimits;
use crate::storage::{s3, StorageError};
use crate::tokenize::batch::{BatchError, TokenizedSet};
use crate::tokenize::{
    self, check_max_length, copy_tokenizer_files, EncodeSetError, TextEncoder, TokenizeError,
};
use crate::train::amp::{bf16_supported, resolve_precision, Precision, PrecisionError};
use crate::train::device::{resolve_device, DeviceError};
use crate::train::distributed::{DataParallel, DistError};
use crate::train::{self, FitOptions, StepHook, StopReason, TrainError, TrainOutcome};

/// The libtorch version this build binds (tch =0.24.0); recorded in `training_args.json`.
pub const LIBTORCH_VERSION: &str = "2.11.0";

/// Why fine-tuning failed.
#[derive(Debug, thiserror::Error)]
pub enum FineTuneError {
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error(transparent)]
    Tokenize(#[from] TokenizeError),
    #[error("tokenized data: {0}")]
    Batch(#[from] BatchError),
    #[error(transparent)]
    Device(#[from] DeviceError),
    #[error(transparent)]
    Precision(#[from] PrecisionError),
    #[error(transparent)]
    Train(#[from] TrainError),
    #[error(transparent)]
    Artifact(#[from] ArtifactError),
    #[error("writing reports: {0}")]
    Metrics(#[from] MetricsError),
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error(transparent)]
    Champion(#[from] ChampionError),
    #[error(transparent)]
    Blend(#[from] BlendError),
    #[error("cannot resume: {0}")]
    Resume(String),
    #[error(transparent)]
    Distributed(#[from] DistError),
    #[error("interrupted by {signal} at optimizer step {step}{checkpoint}; nothing was written to the model directory; rerun the job to resume")]
    Interrupted {
        signal: &'static str,
        step: u64,
        checkpoint: String,
    },
}

impl From<EncodeSetError> for FineTuneError {
    fn from(e: EncodeSetError) -> Self {
        match e {
            EncodeSetError::Tokenize(e) => FineTuneError::Tokenize(e),
            EncodeSetError::Batch(e) => FineTuneError::Batch(e),
        }
    }
}

impl FineTuneError {
    /// True when the user's model files or settings are at fault (exit status 2).
    pub fn is_bad_input(&self) -> bool {
        match self {
            FineTuneError::Model(e) => e.is_bad_input(),
            FineTuneError::Tokenize(e) => !matches!(e, TokenizeError::Io { .. }),
            FineTuneError::Device(_) | FineTuneError::Precision(_) | FineTuneError::Resume(_) => {
                true
            }
            FineTuneError::Train(e) => matches!(e, TrainError::UnknownMetric { .. }),
            FineTuneError::Storage(e) => e.is_bad_input(),
            FineTuneError::Champion(e) => e.is_bad_input(),
            _ => false,
        }
    }
}

/// What the caller supplies besides the data.
pub struct FineTuneRequest<'a> {
    pub paths: &'a Paths,
    pub hp: &'a Hyperparameters,
    pub data: &'a PreparedData,
    /// Seconds spent reading and validating the channels (reported with the run summary).
    pub read_seconds: f64,
    /// Set to stop between steps (with checkpoints: the plan's flag, raised once the
    /// interruption checkpoint is written).
    pub stop: Option<Arc<AtomicBool>>,
    /// Checkpointing and resume (issue 6); `None` trains from scratch without checkpoints.
    pub checkpoints: Option<&'a mut dyn CheckpointPlan>,
    /// This worker's place in a data-parallel run (issue 15); `None` trains alone. Every rank
    /// trains; only rank 0 writes checkpoints, the model and the outputs.
    pub data_parallel: Option<DataParallel>,
}

/// Finds the starting model named by the hyperparameters (see [`crate::model::source`]): a
/// folder, a tarball, the `model` channel, `s3://` or the Hugging Face Hub; scratch lives as long
/// as the value.
pub fn source_model(paths: &Paths, hp: &Hyperparameters) -> Result<ModelSource, FineTuneError> {
    let channel = paths.channel_dir("model");
    let channel = channel.exists().then_some(channel);
    let source = resolve_source(&SourceRequest {
        name_or_path: &hp.model_name_or_path,
        model_channel: channel.as_deref(),
        model_home: paths.model_home.as_deref(),
        s3: s3::S3Options::from_settings(&paths.s3),
        limits: UnpackLimits::default(),
        hub: Some(HubRequest {
            revision: &hp.model_revision,
            settings: HubSettings::from_env(),
        }),
    })?;
    tracing::info!(origin = %source.origin, dir = %source.dir.display(), "starting model");
    Ok(source)
}

/// What the dry run found about the starting model.
#[derive(Debug)]
pub struct ModelPreview {
    /// Where the model came from (`... (unpacked)` for an archive).
    pub origin: String,
    /// Config, header and head match, read without loading weights.
    pub check: ModelCheck,
    /// Token ids the tokenizer knows.
    pub tokenizer_vocab: usize,
}

/// Resolves and checks the starting model as a real run would, without loading any weight:
/// config.json parses, the safetensors header matches it, the tokenizer loads and `max_length`
/// fits the position table. Catches a missing or broken model before paying for a GPU.
pub fn preview_model(
    paths: &Paths,
    hp: &Hyperparameters,
    labels: &LabelMap,
) -> Result<ModelPreview, FineTuneError> {
    let source = source_model(paths, hp)?;
    let check = check_model_dir(&source.dir, labels.id2label(), hp.warm_start)?;
    check_max_length(hp.max_length, check.spec.max_positions as usize)?;
    let encoder = TextEncoder::from_model_dir(&source.dir, hp.max_length)?;
    Ok(ModelPreview {
        origin: source.origin,
        check,
        tokenizer_vocab: encoder.vocab_size(),
    })
}

/// Tokenizes `texts` once into compact storage (see [`crate::tokenize::tokenize_texts`]).
pub fn tokenize_texts(
    encoder: &TextEncoder,
    texts: &[String],
    label_ids: &[usize],
    keep_type_ids: bool,
) -> Result<TokenizedSet, FineTuneError> {
    Ok(tokenize::tokenize_texts(
        encoder,
        texts,
        label_ids,
        keep_type_ids,
    )?)
}

/// Trains and publishes; returns the outcome for the caller's summary line.
pub fn run(request: FineTuneRequest<'_>) -> Result<TrainOutcome, FineTuneError> {
    let FineTuneRequest {
        paths,
        hp,
        data,
        read_seconds,
        stop,
        checkpoints,
        data_parallel,
    } = request;
    let started = Instant::now();
    if let Some(threads) = hp.num_threads {
        tch::set_num_threads(threads as i32);
    }
    let primary = data_parallel.as_ref().is_none_or(DataParallel::is_primary);
    // Data-parallel: the trainer sees the global batch (train_batch_size is per device) and
    // splits it; rank 0 alone scores the baseline and the champion it reports.
    let hp_global;
    let hp_side;
    let (hp_fit, hp_side) = match &data_parallel {
        Some(dp) => {
            hp_global = Hyperparameters {
                train_batch_size: hp.train_batch_size * dp.world(),
                ..hp.clone()
            };
            hp_side = Hyperparameters {
                baseline_tfidf: hp.baseline_tfidf && primary,
                ..hp.clone()
            };
            (&hp_global, &hp_side)
        }
        None => (hp, hp),
    };
    let device = match &data_parallel {
        Some(dp) => dp.device(),
        None => resolve_device(hp.device)?,
    };
    let precision = resolve_precision(hp, device, bf16_supported(device))?;
    tracing::info!(
        ?device,
        ?precision,
        threads = tch::get_num_threads(),
        omp_wait_policy = %std::env::var("OMP_WAIT_POLICY").unwrap_or_default(),
        "device"
    );

    let mut phases = PhaseClock::new(read_seconds);
    let source = source_model(paths, hp)?;
    phases.lap("model_source");
    // The model to beat (issue 12), scored before the seed below so training is unchanged.
    let champion = if primary {
        champion::for_job(&ChampionRequest {
            paths,
            hp,
            start: &source,
            eval_texts: &data.eval.texts,
            eval_label_ids: &data.eval.label_ids,
            label_names: data.labels.id2label(),
            device,
            compute_kind: precision_kind(precision),
        })?
    } else {
        champion::JobChampion::None
    };
    phases.lap("champion");
    // A fresh head is drawn from libtorch's generator: seed it first, as transformers' set_seed
    // does before building the model, so one seed gives one run.
    tch::manual_seed(hp.seed as i64);
    let (mut model, report) =
        SequenceClassifier::load_with(&source.dir, data.labels.id2label(), device, hp.warm_start)?;
    tracing::info!(
        dir = %source.dir.display(),
        model_type = report.model_type,
        warm_start = ?hp.warm_start,
        kept = %report.head.kept.join(", "),
        added = %report.head.added.join(", "),
        removed = %report.head.removed.join(", "),
        fresh_head = ?report.fresh,
        reason = report.fresh_reason.as_deref().unwrap_or(""),
        ignored = report.ignored.len(),
        "model loaded"
    );
    check_max_length(hp.max_length, model.max_positions())?;
    phases.lap("model_load");
    let tokenizer_load_started = Instant::now();
    let encoder = TextEncoder::from_model_dir(&source.dir, hp.max_length)?;
    let tokenizer_load_seconds = tokenizer_load_started.elapsed().as_secs_f64();

    let tokenize_started = Instant::now();
    let keep_type_ids = model.uses_token_type_ids();
    let train_set = tokenize_set(&encoder, &data.train, keep_type_ids)?;
    let eval_set = tokenize_set(&encoder, &data.eval, keep_type_ids)?;
    let tokenize_seconds = tokenize_started.elapsed().as_secs_f64();
    phases.record("tokenizer_load", tokenizer_load_seconds);
    phases.record("tokenize", tokenize_seconds);
    let rows = train_set.len() + eval_set.len();
    tracing::info!(
        "tokenized rows={rows}; seconds={tokenize_seconds:.3}; rows_per_second={:.0}; train_tokens={}; eval_tokens={};",
        rows as f64 / tokenize_seconds.max(1e-9),
        train_set.num_tokens(),
        eval_set.num_tokens()
    );

    if let Some(dp) = &data_parallel {
        let digest = data_digest(hp, data.labels.id2label(), &train_set, &eval_set);
        dp.check_agreement("labels, rows or hyperparameters", &digest)?;
    }
    if let Some(kind) = precision_kind(precision) {
        model.set_compute_kind(Some(kind));
    }
    let mut options = FitOptions::new(data.labels.id2label().to_vec(), device);
    options.pad_id = encoder.pad_id();
    options.precision = precision;
    options.stop = if primary { stop } else { None };
    let mut no_checkpoints = ();
    let mut checkpoints = checkpoints;
    let hook: &mut dyn StepHook = match checkpoints.as_deref_mut() {
        Some(plan) => {
            // Every rank resumes from the same checkpoint; rank 0 first, as it also tidies the
            // folder, and only rank 0 writes new ones (its hook; the others get none).
            let dp = data_parallel.as_ref();
            if let Some(dp) = dp.filter(|dp| !dp.is_primary()) {
                dp.group()
                    .barrier("waiting for rank 0 to open the checkpoints")?;
            }
            options.resume = plan.resume(&mut model).map_err(FineTuneError::Resume)?;
            match dp {
                Some(dp) if dp.is_primary() => {
                    dp.group()
                        .barrier("waiting for rank 0 to open the checkpoints")?;
                    plan.hook()
                }
                Some(_) => &mut no_checkpoints,
                None => plan.hook(),
            }
        }
        None => &mut no_checkpoints,
    };
    options.data_parallel = data_parallel.clone();
    let probe = if hp.linear_probe && options.resume.is_none() {
        linear_probe(&mut model, &report.head, &train_set, hp, &encoder, device)?
    } else {
        None
    };
    phases.lap("linear_probe");
    // The report's loss and learning-rate curves (issue 19): the trainer only logs them.
    let steps_per_epoch = train::plan_steps(hp_fit, train_set.len()).steps_per_epoch;
    let mut history = crate::report::collect::HistoryRecorder::new(
        hook,
        steps_per_epoch,
        options.resume.as_ref(),
    );
    let hook: &mut dyn StepHook = &mut history;
    // Before training, so the number to beat is in the log early; it never fails the job.
    let baseline = baseline::for_job(
        hp_side,
        baseline_rows(&data.train),
        baseline_rows(&data.eval),
        data.labels.id2label(),
    );
    phases.lap("baseline");
    // The blend reads the final evaluation's probabilities rather than predicting the rows
    // again; they match only when evaluation ran in fp32 in one process.
    options.keep_eval_probabilities = hp_side.blend_tfidf
        && matches!(baseline, baseline::JobBaseline::Scored(_))
        && precision_kind(precision).is_none()
        && data_parallel.is_none();
    let mut outcome = train::fit(&mut model, &train_set, &eval_set, hp_fit, options, hook)?;
    phases.lap_fit(&outcome.timings);
    let log_history = history.finish(&outcome.state);
    if outcome.stop_reason == StopReason::Interrupted {
        let checkpoint = match checkpoints.and_then(|plan| plan.latest()) {
            _ if !primary => "; rank 0 saves the checkpoint".into(),
            Some(p) => format!("; checkpoint saved to {}", p.display()),
            None => "; no checkpoint (save_strategy=no)".into(),
        };
        return Err(FineTuneError::Interrupted {
            signal: crate::signals::received().unwrap_or("a stop signal"),
            step: outcome.state.global_step,
            checkpoint,
        });
    }

    if !primary {
        tracing::info!("training finished on this rank; rank 0 writes the model and outputs");
        return Ok(outcome);
    }

    // Training succeeded: build both directories aside, then publish them.
    model.set_compute_kind(None);
    let blend = crate::blend::job::for_job(
        hp_side,
        &baseline,
        || match outcome.final_probabilities.take() {
            Some(kept) => Ok(kept),
            None => crate::inference::probabilities(
                &model,
                &eval_set,
                hp.eval_batch_size,
                encoder.pad_id(),
                device,
            ),
        },
        &data.eval.label_ids,
        data.labels.id2label(),
    );
    phases.lap("blend");
    let model_stage = StagedDir::create(&paths.model_dir)?;
    write_model_dir(model_stage.path(), &model, &source.dir, &data.labels, hp)?;
    blend.save_into(model_stage.path())?;
    let output_stage = StagedDir::create(&paths.output_data_dir)?;
    if let Some(report) = &outcome.final_report {
        champion.log_against(report);
        let mut side = baseline.side_reports();
        side.extend(blend.side_reports());
        side.extend(champion.side_reports(report));
        metrics::write_reports_with(output_stage.path(), report, &outcome.state.history, &side)?;
    }
    phases.lap("save");
    let summary = json!({
        "stop_reason": outcome.stop_reason,
        "best": outcome.best,
        "restored_best": outcome.restored_best,
        "train_rows": train_set.len(),
        "eval_rows": eval_set.len(),
        "global_steps": outcome.state.global_step,
        "train_loss": outcome.train_loss,
        "train_runtime_seconds": outcome.runtime_s,
        "train_samples_per_second": outcome.samples_per_second,
        "padding_efficiency": outcome.padding_efficiency,
        "read_seconds": read_seconds,
        "tokenize_seconds": tokenize_seconds,
        "tokenizer_load_seconds": tokenizer_load_seconds,
        // CSV read + label encoding + tokenizer load + tokenization, as the benchmarks count it.
        "preprocess_seconds": read_seconds + tokenizer_load_seconds + tokenize_seconds,
        "train_steady_samples_per_second": outcome.steady.samples_per_second,
        "train_steady_real_tokens_per_second": outcome.steady.real_tokens_per_second,
        "train_steady_padded_tokens_per_second": outcome.steady.padded_tokens_per_second,
        "train_steady": outcome.steady,
        "total_seconds": started.elapsed().as_secs_f64() + read_seconds,
        "device": format!("{device:?}"),
        // Data-parallel workers that trained together (issue 15); 1 = a single process.
        "world_size": data_parallel.as_ref().map_or(1, DataParallel::world),
        "precision": precision,
        // Which trained classifier rows were reused, by label name (issue 12).
        "warm_start": report.head,
        // The head fitted on the pretrained features before fine-tuning (`linear_probe`).
        "linear_probe": probe,
        // Whether predict and serve mix in the tf-idf model (issue 17).
        "tfidf_blend_kept": blend.kept(),
        // Wall seconds per phase up to this file (report and upload come after it and are logged).
        "phases": phases.to_json(),
    });
    write_json(&output_stage.path().join("run_summary.json"), &summary)?;
    publish_report(&ReportInputs {
        dir: output_stage.path(),
        model: &model,
        eval_set: &eval_set,
        data,
        hp,
        pad_id: encoder.pad_id(),
        device,
        origin: &format!("{} ({})", source.origin, report.model_type),
        log_history,
    });
    model_stage.commit()?;
    output_stage.commit()?;
    tracing::info!(model_dir = %paths.model_dir.display(), output_dir = %paths.output_data_dir.display(), "artifacts published");

    if let Some(uri) = &hp.output_uri {
        s3::upload_outputs(
            uri,
            &paths.model_dir,
            &paths.output_data_dir,
            s3::S3Options::from_settings(&paths.s3),
        )?;
        tracing::info!(
            uri = uri.as_str(),
            "uploaded model.tar.gz and output.tar.gz"
        );
    }
    Ok(outcome)
}

/// What the HTML report is drawn from besides the files already written.
struct ReportInputs<'a> {
    dir: &'a Path,
    model: &'a SequenceClassifier,
    eval_set: &'a TokenizedSet,
    data: &'a PreparedData,
    hp: &'a Hyperparameters,
    pad_id: u32,
    device: Device,
    origin: &'a str,
    log_history: Vec<report::inputs::LogRecord>,
}

/// Writes `report.html` and its inputs into the staged output folder; never fails the job.
fn publish_report(r: &ReportInputs<'_>) {
    let log = report::TrainingLog {
        model: Some(r.origin.to_string()),
        hyperparameters: serde_json::to_value(r.hp)
            .ok()
            .and_then(|v| v.as_object().cloned())
            .unwrap_or_default(),
        log_history: r.log_history.clone(),
    };
    let examples = crate::train::predict_rows(
        r.model,
        r.eval_set,
        report::collect::MAX_SCANNED_ROWS,
        r.hp.eval_batch_size,
        r.pad_id,
        r.device,
    )
    .map(|(predicted, _)| {
        report::collect::misclassified(
            &predicted,
            r.eval_set.labels(),
            &r.data.eval.texts,
            r.data.labels.id2label(),
        )
    })
    .map_err(|e| report::ReportError::Examples(e.to_string()));
    report::publish(report::JobReport {
        dir: r.dir,
        log: &log,
        examples,
    });
}

/// What every data-parallel rank must agree on: the resolved hyperparameters, the label names,
/// and each row's label and token count on both sides.
fn data_digest(
    hp: &Hyperparameters,
    labels: &[String],
    train: &TokenizedSet,
    eval: &TokenizedSet,
) -> Vec<u8> {
    let mut bytes = Vec::new();
    for (k, v) in hp.resolved_pairs() {
        bytes.extend_from_slice(format!("{k}={v}\0").as_bytes());
    }
    for label in labels {
        bytes.extend_from_slice(label.as_bytes());
        bytes.push(0);
    }
    for set in [train, eval] {
        bytes.extend_from_slice(&(set.len() as u64).to_le_bytes());
        for (&label, &len) in set.labels().iter().zip(&set.lengths()) {
            bytes.extend_from_slice(&label.to_le_bytes());
            bytes.extend_from_slice(&(len as u64).to_le_bytes());
        }
    }
    bytes
}

fn baseline_rows(texts: &LabelledTexts) -> baseline::Rows<'_> {
    baseline::Rows {
        texts: &texts.texts,
        labels: &texts.label_ids,
    }
}

/// Fits the head's fresh rows (all of a new head, or those of labels the last model did not
/// have, around the rows carried over) on the encoder's features. Every data-parallel rank
/// fits the same rows, and rank 0's result is broadcast with the weights.
fn linear_probe(
    model: &mut SequenceClassifier,
    head: &crate::model::HeadMatch,
    train_set: &TokenizedSet,
    hp: &Hyperparameters,
    encoder: &TextEncoder,
    device: tch::Device,
) -> Result<Option<train::probe::ProbeReport>, FineTuneError> {
    let num_labels = model.num_labels();
    let fresh_rows: Vec<usize> = match head.is_fresh() {
        true => (0..num_labels).collect(),
        false => model
            .id2label()
            .iter()
            .enumerate()
            .filter(|(_, label)| head.added.contains(label))
            .map(|(id, _)| id)
            .collect(),
    };
    if fresh_rows.is_empty() {
        tracing::info!(
            "linear_probe: the head was carried over whole from the model; nothing to fit"
        );
        return Ok(None);
    }
    let weights = train::class_weight_values(hp.class_weights, train_set.labels(), num_labels);
    let request = train::probe::ProbeRequest {
        set: train_set,
        num_labels,
        fresh_rows: &fresh_rows,
        class_weights: weights.as_deref(),
        batch_size: hp.eval_batch_size,
        pad_id: encoder.pad_id(),
        device,
        seed: hp.seed,
    };
    let report = train::probe::fit_head(model, &request)?;
    if let Some(r) = &report {
        tracing::info!(
            "linear_probe: head fitted on rows={}; features={}; head_rows={}; iterations={}; converged={}; train_accuracy={:.4}; seconds={:.2};",
            r.rows, r.features, r.head_rows, r.iterations, r.converged, r.train_accuracy, r.seconds
        );
    }
    Ok(report)
}

fn tokenize_set(
    encoder: &TextEncoder,
    texts: &LabelledTexts,
    keep_type_ids: bool,
) -> Result<TokenizedSet, FineTuneError> {
    tokenize_texts(encoder, &texts.texts, &texts.label_ids, keep_type_ids)
}

fn precision_kind(precision: Precision) -> Option<tch::Kind> {
    match precision {
        Precision::Fp32 => None,
        Precision::Bf16 => Some(tch::Kind::BFloat16),
        Precision::Fp16 => Some(tch::Kind::Half),
    }
}

/// The Hugging Face directory: weights + config (id2label/label2id), the tokenizer files as
/// they came, `labels.json` and `training_args.json`.
fn write_model_dir(
    dir: &Path,
    model: &SequenceClassifier,
    source_dir: &Path,
    labels: &LabelMap,
    hp: &Hyperparameters,
) -> Result<(), FineTuneError> {
    model.save(dir)?;
    copy_tokenizer_files(source_dir, dir)?;
    let label2id: serde_json::Map<String, serde_json::Value> = labels
        .id2label()
        .iter()
        .enumerate()
        .map(|(id, label)| (label.clone(), id.into()))
        .collect();
    write_json(
        &dir.join("labels.json"),
        &json!({ "id2label": labels.id2label(), "label2id": label2id }),
    )?;
    write_json(
        &dir.join("training_args.json"),
        &json!({
            "hyperparameters": hp,
            "txcat_version": env!("CARGO_PKG_VERSION"),
            "libtorch_version": LIBTORCH_VERSION,
        }),
    )?;
    Ok(())
}

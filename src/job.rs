//! The `train` command up to the model: configuration, channels and data, then either the dry-run
//! summary or training.
//!
//! [`prepare`] is the reusable part: it decides which channel feeds training and evaluation,
//! reads and validates every row, fits the [`LabelMap`] and encodes both sides. It never writes
//! anything (in particular not to the model directory).
//!
//! Channel sources, strongest first: `--channel NAME=LOCATION`; the `train_uri` / `eval_uri`
//! hyperparameters; `inputdataconfig.json` (Pipe mode -> the FIFO `<data>/<name>_0`, File and
//! FastFile -> the directory, `SM_CHANNEL_<NAME>` if set). Without `inputdataconfig.json` (local
//! runs) the folders under `<data>` are the channels.

use crate::checkpoint::{DataFingerprint, JobCheckpoints};
use crate::cli::{ChannelArg, TrainArgs};
use crate::data::channel::read_channel;
use crate::data::dialect::Dialect;
use crate::data::format::RowFormat;
use crate::data::labels::LabelMap;
pub use crate::data::prepared::{
    ChannelSource, ChannelSummary, EvalOrigin, LabelledTexts, PreparedData,
};
use crate::data::rows::{BadRowBudget, ChannelRows, Columns, Rows};
use crate::data::split::stratified;
use crate::data::DataError;
use crate::fine_tune::{self, FineTuneError, FineTuneRequest};
use crate::hyperparams::{DeviceChoice, HyperparameterError, Hyperparameters, UnseenLabels};
use crate::model::HeadOrigin;
use crate::sagemaker::{self, ContractError, InputMode, Paths};
use crate::storage;
use crate::storage::s3::S3Options;
use crate::train::distributed::launch::{self, LaunchError, Role};
use crate::train::distributed::{self as distributed, DataParallel, DistError};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;

/// Channel names that are not data: `model` carries the starting weights, `baseline` the model
/// to beat (issue 12).
const NON_DATA_CHANNELS: &[&str] = &["model", "baseline"];

/// Why the `train` command failed.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    #[error(transparent)]
    Contract(#[from] ContractError),
    #[error(transparent)]
    Hyperparameter(#[from] HyperparameterError),
    #[error(transparent)]
    Data(#[from] DataError),
    #[error("{0}")]
    Channels(String),
    #[error(transparent)]
    FineTune(#[from] FineTuneError),
    #[error(transparent)]
    Signal(#[from] crate::signals::SignalError),
    #[error(transparent)]
    Launch(#[from] LaunchError),
    #[error(transparent)]
    Distributed(#[from] DistError),
}

/// Exit status for input the user must fix (config, hyperparameters, channels, rows).
pub const EXIT_BAD_INPUT: i32 = 2;
/// Exit status for failures while running (I/O, storage, training).
pub const EXIT_RUNTIME: i32 = 1;
/// Exit status for a bug in txcat (a caught panic).
pub const EXIT_INTERNAL: i32 = 3;

impl JobError {
    /// [`EXIT_BAD_INPUT`] when the user's configuration or data is at fault, else [`EXIT_RUNTIME`].
    pub fn exit_code(&self) -> i32 {
        match self {
            JobError::Contract(ContractError::Io { .. }) => EXIT_RUNTIME,
            JobError::Contract(_) | JobError::Hyperparameter(_) | JobError::Channels(_) => {
                EXIT_BAD_INPUT
            }
            JobError::Data(DataError::Storage(e)) if e.is_bad_input() => EXIT_BAD_INPUT,
            JobError::Data(DataError::Storage(_)) => EXIT_RUNTIME,
            JobError::Data(DataError::Read { .. }) => EXIT_RUNTIME,
            JobError::Data(_) => EXIT_BAD_INPUT,
            JobError::FineTune(e) if e.is_bad_input() => EXIT_BAD_INPUT,
            JobError::FineTune(_) | JobError::Signal(_) => EXIT_RUNTIME,
            JobError::Launch(e) => e.exit_code(),
            JobError::Distributed(DistError::Invalid(_) | DistError::NoNccl) => EXIT_BAD_INPUT,
            JobError::Distributed(_) => EXIT_RUNTIME,
        }
    }
}

/// Reads `hyperparameters.json` and applies `--hp` overrides.
pub fn load_hyperparameters(
    paths: &Paths,
    overrides: &[(String, String)],
) -> Result<Hyperparameters, JobError> {
    let raw = sagemaker::read_hyperparameters(&paths.hyperparameters_file)?;
    Ok(Hyperparameters::from_sources(&raw, overrides)?)
}

/// The row format each channel's `ContentType` in `inputdataconfig.json` declares; channels
/// without one are read by file name ([`RowFormat::from_name`]).
/// Channels whose objects SageMaker splits across hosts (`S3DistributionType=ShardedByS3Key`).
fn sharded_channels(paths: &Paths) -> Result<Vec<String>, JobError> {
    let config = sagemaker::read_input_data_config(&paths.input_data_config_file)?;
    Ok(config
        .into_iter()
        .flatten()
        .filter(|(_, c)| c.s3_distribution_type.as_deref() == Some("ShardedByS3Key"))
        .map(|(name, _)| name)
        .collect())
}

fn declared_formats(paths: &Paths) -> Result<BTreeMap<String, RowFormat>, JobError> {
    let Some(config) = sagemaker::read_input_data_config(&paths.input_data_config_file)? else {
        return Ok(BTreeMap::new());
    };
    let mut formats = BTreeMap::new();
    for (name, channel) in config {
        let Some(content_type) = channel.content_type else {
            continue;
        };
        let format = RowFormat::from_content_type(&content_type).map_err(|value| {
            JobError::Channels(format!(
                "channel `{name}`: ContentType `{}` in inputdataconfig.json is not a format txcat reads; use {} (or leave it unset to go by file extension)",
                crate::text::printable(&value),
                crate::data::format::CONTENT_TYPES
            ))
        })?;
        formats.insert(name, format);
    }
    Ok(formats)
}

/// Every channel the job can see, by name.
pub fn resolve_channels(
    paths: &Paths,
    hp: &Hyperparameters,
    cli_channels: &[ChannelArg],
) -> Result<BTreeMap<String, ChannelSource>, JobError> {
    let mut channels = BTreeMap::new();
    match sagemaker::read_input_data_config(&paths.input_data_config_file)? {
        Some(config) => {
            for (name, c) in config {
                let source = match c.training_input_mode {
                    InputMode::Pipe => ChannelSource::Pipe {
                        fifo: paths.pipe_fifo(&name, 0),
                    },
                    mode => ChannelSource::Local {
                        path: paths.channel_dir(&name),
                        mode,
                    },
                };
                channels.insert(name, source);
            }
        }
        None => {
            for name in discover_channel_dirs(paths)? {
                let source = ChannelSource::Local {
                    path: paths.channel_dir(&name),
                    mode: InputMode::File,
                };
                channels.insert(name, source);
            }
            tracing::info!(
                path = %paths.input_data_config_file.display(),
                found = ?channels.keys().collect::<Vec<_>>(),
                "no inputdataconfig.json; using the folders under input/data and SM_CHANNEL_* as File channels"
            );
        }
    }
    if let Some(uri) = &hp.train_uri {
        channels.insert("train".into(), ChannelSource::S3 { uri: uri.clone() });
    }
    if let Some(uri) = &hp.eval_uri {
        let name = hp
            .eval_channel
            .clone()
            .unwrap_or_else(|| "validation".into());
        channels.insert(name, ChannelSource::S3 { uri: uri.clone() });
    }
    for arg in cli_channels {
        let source = match arg.location.starts_with("s3://") {
            true => ChannelSource::S3 {
                uri: arg.location.clone(),
            },
            false => ChannelSource::Local {
                path: PathBuf::from(&arg.location),
                mode: InputMode::File,
            },
        };
        channels.insert(arg.name.clone(), source);
    }
    Ok(channels)
}

/// Local runs without inputdataconfig.json: visible folders under `<data>` plus `SM_CHANNEL_*`.
fn discover_channel_dirs(paths: &Paths) -> Result<Vec<String>, JobError> {
    let mut names: Vec<String> = paths
        .channel_overrides
        .keys()
        .map(|n| n.to_lowercase())
        .collect();
    match std::fs::read_dir(&paths.data_dir) {
        Ok(entries) => {
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().to_string();
                if !storage::is_hidden_name(&name) && entry.path().is_dir() {
                    names.push(name);
                }
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(source) => {
            return Err(JobError::Contract(ContractError::Io {
                path: paths.data_dir.display().to_string(),
                source,
            }))
        }
    }
    names.sort();
    names.dedup();
    Ok(names)
}

/// The channel that holds evaluation data, `None` for a split of train.
fn eval_channel_name(
    hp: &Hyperparameters,
    channels: &BTreeMap<String, ChannelSource>,
) -> Result<Option<String>, JobError> {
    let listed = || channels.keys().cloned().collect::<Vec<_>>().join(", ");
    match &hp.eval_channel {
        Some(name) if name == "train" => Err(JobError::Channels(
            "eval_channel=train would evaluate on the training data; name another channel or leave eval_channel unset for a split".into(),
        )),
        Some(name) if channels.contains_key(name) => Ok(Some(name.clone())),
        Some(name) => Err(JobError::Channels(format!(
            "eval_channel=`{name}` but the job has no such channel (channels: {}); add it to the job's inputs or fix the name",
            listed()
        ))),
        None => Ok(["validation", "test"]
            .into_iter()
            .find(|n| channels.contains_key(*n))
            .map(str::to_string)),
    }
}

/// Reads and validates all data for training: see the module docs for which channels are used.
pub fn prepare(
    paths: &Paths,
    hp: &Hyperparameters,
    cli_channels: &[ChannelArg],
) -> Result<PreparedData, JobError> {
    prepare_with(paths, hp, cli_channels, None)
}

/// [`prepare`] for a data-parallel worker: the rows of `ShardedByS3Key` channels (each host
/// reads other objects) are gathered from every host, so all ranks hold the same data, the
/// label map is the union's and the fingerprint covers every shard.
pub fn prepare_with(
    paths: &Paths,
    hp: &Hyperparameters,
    cli_channels: &[ChannelArg],
    data_parallel: Option<&DataParallel>,
) -> Result<PreparedData, JobError> {
    let channels = resolve_channels(paths, hp, cli_channels)?;
    let Some(train_source) = channels.get("train") else {
        let listed = channels.keys().cloned().collect::<Vec<_>>().join(", ");
        return Err(JobError::Channels(format!(
            "no `train` channel (channels: {}); pass the training data as the `train` channel (fit({{'train': ...}}), input/data/train or --channel train=PATH)",
            if listed.is_empty() { "none" } else { &listed }
        )));
    };
    let eval_name = eval_channel_name(hp, &channels)?;
    for name in channels.keys() {
        let used = name == "train" || Some(name) == eval_name.as_ref();
        if !used && !NON_DATA_CHANNELS.contains(&name.as_str()) {
            tracing::info!(channel = %name, "channel not used (not train or the evaluation channel)");
        }
    }

    let columns = Columns {
        text: hp.text_column.clone(),
        label: hp.label_column.clone(),
    };
    let dialect = Dialect {
        delimiter: hp.csv_delimiter,
        encoding: hp.csv_encoding,
    };
    let mut budget = BadRowBudget::new(hp.max_bad_rows);
    let formats = declared_formats(paths)?;
    let sharded = sharded_channels(paths)?;
    let read = |name: &str, source: &ChannelSource, budget: &mut BadRowBudget| {
        tracing::info!(channel = name, source = %source, "reading channel");
        let format = formats.get(name).copied();
        if let (Some(RowFormat::Parquet), ChannelSource::Pipe { fifo }) = (format, source) {
            // Refused before the FIFO is opened: opening it waits for SageMaker's writer.
            return Err(DataError::ParquetInPipeMode {
                file: fifo.display().to_string(),
            }
            .into());
        }
        let mut stream = source.open(name, &paths.s3).map_err(DataError::from)?;
        let mut rows = read_channel(name, stream.as_mut(), &columns, &dialect, format, budget)?;
        if let Some(dp) = data_parallel.filter(|_| sharded.iter().any(|s| s == name)) {
            let local = rows.rows.len();
            let (texts, labels) = dp.gather_host_rows(name, &rows.rows.texts, &rows.rows.labels)?;
            rows.rows = Rows { texts, labels };
            tracing::info!(
                channel = name,
                local_rows = local,
                rows = rows.rows.len(),
                "gathered every host's shard of a ShardedByS3Key channel"
            );
        }
        tracing::info!(
            channel = name,
            files = rows.files.len(),
            rows = rows.rows.len(),
            skipped = rows.skipped_bad_rows,
            "channel read"
        );
        Ok::<ChannelRows, JobError>(rows)
    };

    let train_rows = read("train", train_source, &mut budget)?;
    let labels = LabelMap::fit(train_rows.rows.labels.iter().map(String::as_str))?;
    let train_all = LabelledTexts {
        label_ids: labels
            .encode_known(&train_rows.rows.labels)
            .ok_or_else(|| {
                JobError::Channels(
                    "internal: a training label is missing from the label map".into(),
                )
            })?,
        texts: train_rows.rows.texts.clone(),
    };
    let mut summaries = vec![summary("train", train_source, &train_rows)];
    let mut dropped_unseen_eval = BTreeMap::new();

    let (train, eval, eval_origin) = match &eval_name {
        Some(name) => {
            let source = &channels[name];
            let eval_rows = read(name, source, &mut budget)?;
            summaries.push(summary(name, source, &eval_rows));
            let encoded = labels.encode(&eval_rows.rows.labels);
            if !encoded.unseen.is_empty() {
                let rows: usize = encoded.unseen.values().sum();
                let listed = encoded
                    .unseen
                    .keys()
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", ");
                match hp.unseen_eval_labels {
                    UnseenLabels::Error => {
                        return Err(DataError::UnseenLabels {
                            channel: name.clone(),
                            rows,
                            labels: listed,
                        }
                        .into())
                    }
                    UnseenLabels::Drop => {
                        tracing::warn!(channel = %name, rows, labels = %listed, "dropping evaluation rows whose labels do not occur in training");
                        dropped_unseen_eval = encoded.unseen.clone();
                    }
                }
            }
            let eval = LabelledTexts {
                texts: encoded
                    .kept_rows
                    .iter()
                    .map(|&r| eval_rows.rows.texts[r].clone())
                    .collect(),
                label_ids: encoded.ids,
            };
            if eval.is_empty() {
                return Err(DataError::EmptyEval {
                    reason: format!(
                        "dropping every row of channel `{name}` (all labels unseen in training)"
                    ),
                }
                .into());
            }
            (train_all, eval, EvalOrigin::Channel(name.clone()))
        }
        None => {
            let split = stratified(
                &train_all.label_ids,
                labels.len(),
                hp.validation_split,
                hp.seed,
            );
            if split.eval.is_empty() {
                return Err(DataError::EmptyEval {
                    reason: format!(
                        "holding out validation_split={} of {} training rows (no class has 2 rows to spare)",
                        hp.validation_split,
                        train_all.len()
                    ),
                }
                .into());
            }
            tracing::info!(
                train = split.train.len(),
                eval = split.eval.len(),
                fraction = hp.validation_split,
                seed = hp.seed,
                "no evaluation channel; holding out a stratified split of train"
            );
            (
                train_all.subset(&split.train),
                train_all.subset(&split.eval),
                EvalOrigin::Split {
                    fraction: hp.validation_split,
                    seed: hp.seed,
                },
            )
        }
    };

    Ok(PreparedData {
        labels,
        train,
        eval,
        eval_origin,
        channels: summaries,
        skipped_bad_rows: budget.used,
        dropped_unseen_eval,
    })
}

fn summary(name: &str, source: &ChannelSource, rows: &ChannelRows) -> ChannelSummary {
    ChannelSummary {
        name: name.to_string(),
        source: source.clone(),
        files: rows.files.clone(),
        rows: rows.rows.len(),
        skipped_bad_rows: rows.skipped_bad_rows,
    }
}

/// What the job would train on, as `device` resolves on this machine.
pub fn describe_device(choice: DeviceChoice) -> String {
    let gpus = if tch::Cuda::is_available() {
        tch::Cuda::device_count()
    } else {
        0
    };
    match (choice, gpus) {
        (DeviceChoice::Cpu, _) => "cpu (device=cpu)".into(),
        (DeviceChoice::Auto, 0) => "cpu (device=auto; libtorch sees no CUDA device)".into(),
        (DeviceChoice::Auto, n) => format!("cuda:0 (device=auto; libtorch sees {n} CUDA device(s))"),
        (DeviceChoice::Cuda, 0) => {
            "cuda (device=cuda) -- WARNING: libtorch sees no CUDA device here, so training on this machine would fail".into()
        }
        (DeviceChoice::Cuda, n) => format!("cuda:0 (device=cuda; libtorch sees {n} CUDA device(s))"),
    }
}

/// The dry-run report: channels, labels with counts, skipped rows, hyperparameters, device.
pub fn dry_run_summary(data: &PreparedData, hp: &Hyperparameters, device: &str) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "txcat dry run: configuration and data are valid; nothing was trained or written."
    );
    let _ = writeln!(s, "\nChannels:");
    for c in &data.channels {
        let _ = writeln!(
            s,
            "  {:<12} {:>7} rows  {:>3} file(s)  {:>4} bad rows skipped  {}",
            c.name,
            c.rows,
            c.files.len(),
            c.skipped_bad_rows,
            c.source
        );
    }
    let origin = match &data.eval_origin {
        EvalOrigin::Channel(name) => format!("channel `{name}`"),
        EvalOrigin::Split { fraction, seed } => {
            format!("stratified split of train (validation_split={fraction}, seed={seed})")
        }
    };
    let _ = writeln!(
        s,
        "\nTraining rows: {}   Evaluation rows: {} (from {origin})",
        data.train.len(),
        data.eval.len()
    );
    let _ = writeln!(
        s,
        "Bad rows skipped: {} (max_bad_rows={})",
        data.skipped_bad_rows, hp.max_bad_rows
    );
    if !data.dropped_unseen_eval.is_empty() {
        let rows: usize = data.dropped_unseen_eval.values().sum();
        let listed: Vec<String> = data
            .dropped_unseen_eval
            .iter()
            .map(|(l, n)| format!("{l} ({n})"))
            .collect();
        let _ = writeln!(
            s,
            "Evaluation rows dropped for labels unseen in training: {rows}: {}",
            listed.join(", ")
        );
    }

    let train_counts = data.labels.counts(&data.train.label_ids);
    let eval_counts = data.labels.counts(&data.eval.label_ids);
    let width = data
        .labels
        .id2label()
        .iter()
        .map(|l| l.chars().count())
        .max()
        .unwrap_or(5)
        .max(5);
    let _ = writeln!(s, "\nLabels ({}):", data.labels.len());
    let _ = writeln!(
        s,
        "  {:>3}  {:<width$}  {:>6}  {:>6}",
        "id", "label", "train", "eval"
    );
    for (id, label) in data.labels.id2label().iter().enumerate() {
        let _ = writeln!(
            s,
            "  {id:>3}  {label:<width$}  {:>6}  {:>6}",
            train_counts[id], eval_counts[id]
        );
    }
    let _ = writeln!(s, "\nHyperparameters:");
    for (key, value) in hp.resolved_pairs() {
        let _ = writeln!(s, "  {key} = {value}");
    }
    let _ = writeln!(s, "\nDevice: {device}");
    s
}

/// The dry run's model section: the starting model resolved and checked as training would
/// (header only, no weights loaded, a Hub id fetched like training would); a broken or missing
/// model fails the dry run. Only a job that names no model source at all (the default name, no
/// `model` channel, no TXCAT_MODEL_HOME, and HF_HUB_OFFLINE set with the Hub cache lacking it:
/// data validation on a workstation) is reported unchecked instead.
fn dry_run_model(
    paths: &Paths,
    hp: &Hyperparameters,
    data: &PreparedData,
) -> Result<String, JobError> {
    let mut s = String::new();
    let hub = crate::model::hub::HubSettings::from_env();
    let no_source = hp.model_name_or_path == Hyperparameters::default().model_name_or_path
        && !paths.channel_dir("model").exists()
        && paths.model_home.is_none()
        && hub.offline
        && !crate::model::hub::is_cached(&hub, &hp.model_name_or_path, &hp.model_revision);
    if no_source && !std::path::Path::new(&hp.model_name_or_path).exists() {
        let _ = writeln!(
            s,
            "\nModel: NOT CHECKED: model_name_or_path is the default `{}`, the job has no `model` channel and no TXCAT_MODEL_HOME, and HF_HUB_OFFLINE is set with the Hub cache lacking it, so training would fail with \"not found\"; name a model to check it",
            hp.model_name_or_path
        );
        return Ok(s);
    }
    let preview = fine_tune::preview_model(paths, hp, &data.labels)?;
    let spec = &preview.check.spec;
    let head = &preview.check.head;
    let _ = writeln!(
        s,
        "\nModel: {} (checked; weights not loaded)",
        preview.origin
    );
    let _ = writeln!(
        s,
        "  {}: hidden {}, {} layers, vocabulary {}, {} positions; {} tensors in {} agree with config.json",
        spec.family.model_type(),
        spec.hidden,
        spec.layers,
        spec.vocab_size,
        spec.max_positions,
        preview.check.tensors,
        preview.check.weights_file.display()
    );
    let _ = writeln!(s, "  tokenizer: {} tokens", preview.tokenizer_vocab);
    let list = |labels: &[String]| match labels.is_empty() {
        true => "none".to_string(),
        false => labels.join(", "),
    };
    let _ = writeln!(
        s,
        "  head (warm_start={}): {}; kept: {}; added: {}; removed: {}",
        hp.warm_start.as_str(),
        match head.head {
            HeadOrigin::ByLabel => "trained rows reused by label name",
            HeadOrigin::Fresh => "initialised fresh",
        },
        list(&head.kept),
        list(&head.added),
        list(&head.removed)
    );
    if let Some(reason) = &head.reason {
        let _ = writeln!(s, "  ({reason})");
    }
    Ok(s)
}

/// `txcat train`: configuration, data, then the dry-run summary or training.
pub fn run_train(paths: &Paths, args: &TrainArgs) -> Result<(), JobError> {
    let hp = load_hyperparameters(paths, &args.hyperparameters)?;
    let resolved: Vec<String> = hp
        .resolved_pairs()
        .into_iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    tracing::info!("hyperparameters: {}", resolved.join(" "));
    let resource_config = sagemaker::read_resource_config(&paths.resource_config_file)?;
    match &resource_config {
        Some(rc) => {
            tracing::info!(current_host = %rc.current_host, hosts = ?rc.hosts, rank = ?rc.host_rank(), instance_type = ?rc.current_instance_type, "resource config")
        }
        None => tracing::info!("no resourceconfig.json; assuming a single host"),
    }
    // Several workers (issue 15): this process either starts them and waits, or is one of them
    // and joins the group before reading any data, so a missing peer fails the job early.
    // A dry run checks as one process (and on any machine, so it resolves no device here).
    let role = match args.dry_run {
        true => Role::Single,
        false => launch::role(&hp, resource_config.as_ref())?,
    };
    let data_parallel = match role {
        Role::Launcher(plan) => return Ok(launch::run_workers(&hp, &plan)?),
        Role::Worker(env) => Some(distributed::connect(&env, &hp)?),
        Role::Single => None,
    };
    if let Some(uri) = &hp.output_uri {
        // A wrong bucket would otherwise only show when the upload fails after training.
        storage::s3::check_output_uri(uri, S3Options::from_settings(&paths.s3))
            .map_err(DataError::from)?;
    }
    let read_started = std::time::Instant::now();
    let data = prepare_with(paths, &hp, &args.channels, data_parallel.as_ref())?;
    let read_seconds = read_started.elapsed().as_secs_f64();
    tracing::info!(
        "read rows={}; seconds={read_seconds:.3};",
        data.train.len() + data.eval.len()
    );
    if args.dry_run {
        let mut model = dry_run_model(paths, &hp, &data)?;
        if let Some(line) = crate::champion::check_named(paths, &hp).map_err(FineTuneError::from)? {
            model.push_str(&format!("{line}\n"));
        }
        print!(
            "{}{model}",
            dry_run_summary(&data, &hp, &describe_device(hp.device))
        );
        return Ok(());
    }
    // SIGTERM (spot interruption, StopTrainingJob) finishes the step in flight, checkpoints
    // and exits non-zero; installed after the dry-run exit so a dry run stays interruptible.
    let signal = crate::signals::install()?;
    let checkpoint_dir = hp
        .checkpoint_dir
        .as_ref()
        .map_or_else(|| paths.checkpoint_dir.clone(), PathBuf::from);
    let mut checkpoints = JobCheckpoints::new(
        &checkpoint_dir,
        &hp,
        data.labels.id2label().to_vec(),
        DataFingerprint::of(
            &data.train.texts,
            &data.train.label_ids,
            &data.eval.texts,
            &data.eval.label_ids,
        ),
        Some(signal),
    );
    let outcome = fine_tune::run(FineTuneRequest {
        paths,
        hp: &hp,
        data: &data,
        read_seconds,
        stop: Some(checkpoints.stop_flag()),
        checkpoints: Some(&mut checkpoints),
        data_parallel,
    })?;
    tracing::info!(
        stop_reason = ?outcome.stop_reason,
        steps = outcome.state.global_step,
        "training finished"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channel_sources_by_precedence() {
        let dir = tempfile::tempdir().unwrap();
        let paths = Paths::from_root(dir.path());
        std::fs::create_dir_all(&paths.config_dir).unwrap();
        std::fs::write(
            &paths.input_data_config_file,
            r#"{"train": {"TrainingInputMode": "File"}, "validation": {"TrainingInputMode": "Pipe"},
                "test": {"TrainingInputMode": "FastFile"}, "extra": {"TrainingInputMode": "File"}}"#,
        )
        .unwrap();
        let hp = Hyperparameters {
            train_uri: Some("s3://bucket/train/".into()),
            ..Hyperparameters::default()
        };
        let cli = [ChannelArg {
            name: "extra".into(),
            location: "/somewhere/extra.csv".into(),
        }];
        let channels = resolve_channels(&paths, &hp, &cli).unwrap();
        assert_eq!(
            channels["train"],
            ChannelSource::S3 {
                uri: "s3://bucket/train/".into()
            }
        );
        assert_eq!(
            channels["validation"],
            ChannelSource::Pipe {
                fifo: dir.path().join("input/data/validation_0")
            }
        );
        assert_eq!(
            channels["test"],
            ChannelSource::Local {
                path: dir.path().join("input/data/test"),
                mode: InputMode::FastFile
            }
        );
        assert_eq!(
            channels["extra"],
            ChannelSource::Local {
                path: PathBuf::from("/somewhere/extra.csv"),
                mode: InputMode::File
            }
        );
        assert_eq!(
            eval_channel_name(&hp, &channels).unwrap().as_deref(),
            Some("validation")
        );
    }

    #[test]
    fn eval_uri_feeds_the_named_eval_channel() {
        let dir = tempfile::tempdir().unwrap();
        let paths = Paths::from_root(dir.path());
        let hp = Hyperparameters {
            eval_uri: Some("s3://bucket/val.csv".into()),
            eval_channel: Some("holdout".into()),
            ..Hyperparameters::default()
        };
        let channels = resolve_channels(&paths, &hp, &[]).unwrap();
        assert!(matches!(channels["holdout"], ChannelSource::S3 { .. }));
        assert_eq!(
            eval_channel_name(&hp, &channels).unwrap().as_deref(),
            Some("holdout")
        );
        let train_eval = Hyperparameters {
            eval_channel: Some("train".into()),
            ..Hyperparameters::default()
        };
        assert!(eval_channel_name(&train_eval, &channels).is_err());
    }
}

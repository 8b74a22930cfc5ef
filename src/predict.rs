//! `txcat predict`: labels a CSV file with a trained model directory.
//!
//! Rows keep their order and every input column; the predicted label(s) and softmax
//! probabilities are appended (`predicted_label`, `score`, or `label_1`, `score_1`, ... with
//! `--top-k`). Rows are tokenized once and run in length-sorted batches so padding stays small.
//! The output file appears only when complete (written aside, then renamed).

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use tch::Kind;

use crate::cli::PredictArgs;
use crate::fine_tune::{tokenize_texts, FineTuneError};
use crate::hyperparams::DeviceChoice;
use crate::model::{ClassifierModel, ModelError, SequenceClassifier};
use crate::tokenize::TextEncoder;
use crate::train::device::{resolve_device, TensorBatch};

/// Why a prediction run failed.
#[derive(Debug, thiserror::Error)]
pub enum PredictError {
    #[error("{path}: {reason}")]
    Model { path: PathBuf, reason: String },
    #[error("{path}: {reason}")]
    Input { path: PathBuf, reason: String },
    #[error("cannot write {path}: {source}")]
    Output {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("--top-k must be at least 1 and at most the number of labels ({labels}); got {k}")]
    TopK { k: usize, labels: usize },
    #[error(transparent)]
    Load(#[from] ModelError),
    #[error(transparent)]
    Prepare(#[from] FineTuneError),
    #[error("libtorch: {0}")]
    Torch(#[from] tch::TchError),
}

impl PredictError {
    /// True when the user's files or flags are at fault (exit status 2).
    pub fn is_bad_input(&self) -> bool {
        !matches!(self, PredictError::Output { .. } | PredictError::Torch(_))
    }
}

/// The label names of a trained model directory, from `config.json`'s `id2label`.
pub fn read_id2label(model_dir: &Path) -> Result<Vec<String>, PredictError> {
    let path = model_dir.join("config.json");
    let bad = |reason: String| PredictError::Model {
        path: path.clone(),
        reason,
    };
    let text = fs::read_to_string(&path).map_err(|e| {
        bad(format!(
            "{e}; --model must be a directory written by txcat train"
        ))
    })?;
    let config: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| bad(format!("not valid JSON: {e}")))?;
    let map = config
        .get("id2label")
        .and_then(|v| v.as_object())
        .ok_or_else(|| bad("has no id2label; is this a fine-tuned classifier?".into()))?;
    let mut labels = vec![None; map.len()];
    for (key, value) in map {
        let id: usize = key.parse().ok().filter(|&i| i < map.len()).ok_or_else(|| {
            bad(format!(
                "id2label key {key:?} is not an id in 0..{}",
                map.len()
            ))
        })?;
        labels[id] = value.as_str().map(str::to_owned);
    }
    labels
        .into_iter()
        .enumerate()
        .map(|(i, l)| l.ok_or_else(|| bad(format!("id2label[{i}] is missing or not a string"))))
        .collect()
}

/// The sequence length used in training (`training_args.json`), else the model's maximum.
fn trained_max_length(model_dir: &Path, max_positions: usize) -> usize {
    fs::read_to_string(model_dir.join("training_args.json"))
        .ok()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        .and_then(|v| v["hyperparameters"]["max_length"].as_u64())
        .map_or(max_positions, |n| (n as usize).min(max_positions))
}

/// The input table: header, every record, and the text column's index.
struct InputTable {
    headers: csv::StringRecord,
    records: Vec<csv::StringRecord>,
    text_index: usize,
}

fn read_input(path: &Path, text_column: &str) -> Result<InputTable, PredictError> {
    let bad = |reason: String| PredictError::Input {
        path: path.to_path_buf(),
        reason,
    };
    let bytes = fs::read(path).map_err(|e| bad(e.to_string()))?;
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(&bytes);
    let mut reader = csv::ReaderBuilder::new().from_reader(bytes);
    let headers = reader
        .headers()
        .map_err(|e| bad(format!("cannot read the header row: {e}")))?
        .clone();
    let text_index = headers
        .iter()
        .position(|h| h.trim() == text_column)
        .ok_or_else(|| {
            let found: Vec<&str> = headers.iter().collect();
            bad(format!(
                "no column named {text_column:?} (found: {}); pass --text-column",
                found.join(", ")
            ))
        })?;
    let mut records = Vec::new();
    for record in reader.records() {
        let record = record.map_err(|e| {
            let line = e.position().map_or(0, |p| p.line());
            bad(format!(
                "line {line}: {e}; fix the row (RFC 4180 CSV, UTF-8)"
            ))
        })?;
        records.push(record);
    }
    Ok(InputTable {
        headers,
        records,
        text_index,
    })
}

/// Runs `txcat predict`.
pub fn run(args: &PredictArgs) -> Result<(), PredictError> {
    let id2label = read_id2label(&args.model)?;
    if args.top_k == 0 || args.top_k > id2label.len() {
        return Err(PredictError::TopK {
            k: args.top_k,
            labels: id2label.len(),
        });
    }
    let device = resolve_device(DeviceChoice::Auto).map_err(|e| PredictError::Model {
        path: args.model.clone(),
        reason: e.to_string(),
    })?;
    let (model, _) = SequenceClassifier::load(&args.model, &id2label, device)?;
    let max_length = trained_max_length(&args.model, model.max_positions());
    let encoder = TextEncoder::from_model_dir(&args.model, max_length)
        .map_err(|e| PredictError::Prepare(e.into()))?;
    let table = read_input(&args.input, &args.text_column)?;
    let texts: Vec<String> = table
        .records
        .iter()
        .map(|r| r.get(table.text_index).unwrap_or("").to_owned())
        .collect();
    let set = tokenize_texts(
        &encoder,
        &texts,
        &vec![0; texts.len()],
        model.uses_token_type_ids(),
    )?;

    // Longest first, so the largest batch shows memory trouble at once; order restored on output.
    let lengths = set.lengths();
    let mut order: Vec<usize> = (0..set.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(lengths[i]));
    let mut top: Vec<Vec<(usize, f32)>> = vec![Vec::new(); set.len()];
    let _guard = tch::no_grad_guard();
    for rows in order.chunks(args.batch_size.max(1)) {
        let batch = TensorBatch::from_host(&set.assemble(rows, encoder.pad_id()), device)?;
        // [rows, labels] probabilities, then the k best per row.
        let probs = model
            .forward_t(
                &batch.input_ids,
                &batch.attention_mask,
                batch.token_type_ids.as_ref(),
                false,
            )
            .softmax(-1, Kind::Float);
        let (values, indices) = probs.topk(args.top_k as i64, -1, true, true);
        let values: Vec<f32> =
            Vec::<f32>::try_from(values.to_device(tch::Device::Cpu).flatten(0, -1))?;
        let indices: Vec<i64> =
            Vec::<i64>::try_from(indices.to_device(tch::Device::Cpu).flatten(0, -1))?;
        for (slot, &row) in rows.iter().enumerate() {
            let span = slot * args.top_k..(slot + 1) * args.top_k;
            top[row] = indices[span.clone()]
                .iter()
                .zip(&values[span])
                .map(|(&i, &p)| (i as usize, p))
                .collect();
        }
    }
    write_output(&args.output, &table, &top, &id2label)?;
    tracing::info!(rows = texts.len(), output = %args.output.display(), "predictions written");
    Ok(())
}

fn write_output(
    path: &Path,
    table: &InputTable,
    top: &[Vec<(usize, f32)>],
    id2label: &[String],
) -> Result<(), PredictError> {
    let io = |source: std::io::Error| PredictError::Output {
        path: path.to_path_buf(),
        source,
    };
    let k = top.first().map_or(1, Vec::len);
    let mut header: Vec<String> = table.headers.iter().map(str::to_owned).collect();
    if k == 1 {
        header.extend(["predicted_label".into(), "score".into()]);
    } else {
        for i in 1..=k {
            header.extend([format!("label_{i}"), format!("score_{i}")]);
        }
    }
    let tmp = path.with_extension("csv.partial");
    let mut writer = csv::Writer::from_path(&tmp).map_err(|e| io(e.into()))?;
    writer.write_record(&header).map_err(|e| io(e.into()))?;
    for (record, best) in table.records.iter().zip(top) {
        let mut row: Vec<String> = record.iter().map(str::to_owned).collect();
        for &(id, p) in best {
            row.push(id2label[id].clone());
            row.push(format!("{p:.6}"));
        }
        writer.write_record(&row).map_err(|e| io(e.into()))?;
    }
    let mut file = writer
        .into_inner()
        .map_err(|e| io(std::io::Error::other(e.to_string())))?;
    file.flush().map_err(io)?;
    file.sync_all().map_err(io)?;
    fs::rename(&tmp, path).map_err(io)
}

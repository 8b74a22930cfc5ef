//! `txcat predict`: labels a CSV file with a trained model directory.
//!
//! Rows keep their order and every input column; the predicted label(s) and softmax
//! probabilities are appended (`predicted_label`, `score`, or `label_1`, `score_1`, ... with
//! `--top-k`). Rows are tokenized once and run in length-sorted batches so padding stays small.
//! The output file appears only when complete (written aside, then renamed).

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::cli::PredictArgs;
use crate::hyperparams::DeviceChoice;
use crate::inference::{InferenceError, Predictor, Scored};

/// Why a prediction run failed.
#[derive(Debug, thiserror::Error)]
pub enum PredictError {
    #[error("{path}: {reason}")]
    Input { path: PathBuf, reason: String },
    #[error("cannot write {path}: {source}")]
    Output {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Inference(#[from] InferenceError),
}

impl PredictError {
    /// True when the user's files or flags are at fault (exit status 2).
    pub fn is_bad_input(&self) -> bool {
        match self {
            PredictError::Input { .. } => true,
            PredictError::Output { .. } => false,
            PredictError::Inference(e) => e.is_bad_input(),
        }
    }
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
    let labels = crate::inference::read_id2label(&args.model)?.len();
    // Flags are checked before the model loads, so a typo fails fast.
    if args.top_k == 0 || args.top_k > labels {
        return Err(InferenceError::TopK {
            k: args.top_k,
            labels,
        }
        .into());
    }
    let predictor = Predictor::load(&args.model, DeviceChoice::Auto)?;
    let table = read_input(&args.input, &args.text_column)?;
    let texts: Vec<&str> = table
        .records
        .iter()
        .map(|r| r.get(table.text_index).unwrap_or(""))
        .collect();
    let top = predictor.predict(&texts, args.top_k, args.batch_size)?;
    write_output(&args.output, &table, &top, predictor.labels())?;
    tracing::info!(rows = texts.len(), output = %args.output.display(), "predictions written");
    Ok(())
}

fn write_output(
    path: &Path,
    table: &InputTable,
    top: &[Vec<Scored>],
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
        for scored in best {
            row.push(id2label[scored.label].clone());
            row.push(format!("{:.6}", scored.score));
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

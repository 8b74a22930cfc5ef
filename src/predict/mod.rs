//! `txcat predict`: labels a CSV, JSON Lines or Parquet file with a trained model directory.
//!
//! The input is read like a training channel: CSV in any dialect `csv_delimiter`/`csv_encoding`
//! name (flags here), JSON Lines by extension (`.jsonl`, `.ndjson`, `.json`), optionally `.gz`, or
//! Parquet (`.parquet`, or a file starting with Parquet's magic bytes; its top-level columns).
//! Rows keep their order and every input column (JSON Lines objects stay as written); the predicted
//! label(s) and softmax probabilities are appended (`predicted_label`, `score`, or `label_1`,
//! `score_1`, ... with `--top-k`). The output is in the input's format (Parquet output copies the
//! input's columns unchanged, see [`parquet_output`]), or CSV when `--output` ends in `.csv`,
//! JSON Lines when it ends in `.jsonl`/`.json`, Parquet (from Parquet input) when it ends in
//! `.parquet`; text is always UTF-8. Rows are tokenized once and run in length-sorted batches so padding stays small.
//! The output file appears only when complete (written aside, then renamed).

mod parquet_output;

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::cli::PredictArgs;
use crate::data::dialect;
use crate::data::format::RowFormat;
use crate::data::parquet;
use crate::data::stream::gunzipped;
use crate::hyperparams::DeviceChoice;
use crate::inference::{BlendUse, InferenceError, Predictor, Scored};

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

/// The input as read, kept whole so the output can repeat it.
enum InputTable {
    Csv {
        headers: csv::StringRecord,
        records: Vec<csv::StringRecord>,
        text_index: usize,
        /// The input's delimiter, which CSV output keeps.
        delimiter: u8,
    },
    /// One JSON object per non-blank line, kept as written, with its text.
    JsonLines {
        lines: Vec<String>,
        texts: Vec<String>,
    },
    /// The top-level columns of a Parquet file, values as the file types them, with the texts;
    /// `path` is the file, which Parquet output copies its columns from.
    Parquet {
        path: PathBuf,
        headers: Vec<String>,
        rows: Vec<Vec<::parquet::record::Field>>,
        texts: Vec<String>,
    },
}

impl InputTable {
    fn texts(&self) -> Vec<&str> {
        match self {
            InputTable::Csv {
                records,
                text_index,
                ..
            } => records
                .iter()
                .map(|r| r.get(*text_index).unwrap_or(""))
                .collect(),
            InputTable::JsonLines { texts, .. } | InputTable::Parquet { texts, .. } => {
                texts.iter().map(String::as_str).collect()
            }
        }
    }
}

fn read_input(path: &Path, args: &PredictArgs) -> Result<InputTable, PredictError> {
    let bad = |reason: String| PredictError::Input {
        path: path.to_path_buf(),
        reason,
    };
    let mut file = fs::File::open(path).map_err(|e| bad(e.to_string()))?;
    let mut head = Vec::new();
    std::io::Read::read_to_end(&mut std::io::Read::take(&mut file, 4), &mut head)
        .and_then(|_| std::io::Seek::rewind(&mut file))
        .map_err(|e| bad(e.to_string()))?;
    let format = match RowFormat::from_name(&path.to_string_lossy()) {
        RowFormat::Csv if parquet::is_parquet_magic(&head) => RowFormat::Parquet,
        format => format,
    };
    if format == RowFormat::Parquet {
        return read_parquet(path, file, &args.text_column);
    }
    let raw = gunzipped(Box::new(std::io::BufReader::new(file))).map_err(|e| bad(e.to_string()))?;
    match format {
        RowFormat::JsonLines => read_jsonl(raw, &args.text_column, &bad),
        _ => read_csv(raw, args, &bad),
    }
}

/// Every row of a Parquet file, with its top-level columns (nested ones are left out).
fn read_parquet(
    path: &Path,
    file: fs::File,
    text_column: &str,
) -> Result<InputTable, PredictError> {
    use ::parquet::file::reader::FileReader;
    let name = path.display().to_string();
    let bad = |reason: String| PredictError::Input {
        path: path.to_path_buf(),
        reason,
    };
    // The data layer's messages start with the file name; this error's prefix is the path.
    let data = |e: crate::data::DataError| {
        let text = e.to_string();
        bad(text
            .strip_prefix(&format!("{name}: "))
            .unwrap_or(&text)
            .replace("set text_column", "pass --text-column"))
    };
    let reader = parquet::open_file(&name, file).map_err(data)?;
    let root = reader.metadata().file_metadata().schema_descr_ptr();
    let fields = root.root_schema().get_fields();
    parquet::find_column(&name, fields, text_column, "text_column").map_err(data)?;
    let (flat, nested): (Vec<_>, Vec<_>) = fields.iter().cloned().partition(|f| f.is_primitive());
    if !nested.is_empty() {
        let names: Vec<&str> = nested.iter().map(|f| f.name()).collect();
        tracing::warn!(columns = %names.join(", "), "nested Parquet columns are left out of the output");
    }
    let headers: Vec<String> = flat.iter().map(|f| f.name().to_string()).collect();
    let text_at = headers
        .iter()
        .position(|h| h == text_column)
        .ok_or_else(|| bad(format!("column `{text_column}` is nested")))?;
    let projection = ::parquet::schema::types::Type::group_type_builder(root.root_schema().name())
        .with_fields(flat)
        .build()
        .map_err(|e| bad(parquet::describe_error(&e)))?;
    let (mut rows, mut texts) = (Vec::new(), Vec::new());
    for group in 0..reader.num_row_groups() {
        let group_error = |e: ::parquet::errors::ParquetError| {
            bad(format!(
                "row group {group}: {}",
                parquet::describe_error(&e)
            ))
        };
        let group_reader = reader.get_row_group(group).map_err(group_error)?;
        let iter = group_reader
            .get_row_iter(Some(projection.clone()))
            .map_err(group_error)?;
        for row in iter {
            let at = rows.len();
            let row = row.map_err(|e| bad(format!("row {at}: {}", parquet::describe_error(&e))))?;
            let values: Vec<_> = row.into_columns().into_iter().map(|(_, v)| v).collect();
            let text = parquet::as_text(&values[text_at]).map_err(|kind| {
                bad(format!(
                    "row {at} (counted from 0): column `{text_column}` is {kind}"
                ))
            })?;
            texts.push(text);
            rows.push(values);
        }
    }
    Ok(InputTable::Parquet {
        path: path.to_path_buf(),
        headers,
        rows,
        texts,
    })
}

/// A Parquet value as a CSV field: as pandas `to_csv` writes it (null empty, `True`, `2.0`).
fn parquet_csv_text(value: &::parquet::record::Field) -> String {
    match value {
        ::parquet::record::Field::Null => String::new(),
        other => parquet::as_text(other).unwrap_or_else(|_| other.to_string()),
    }
}

/// A Parquet value as JSON: scalars typed, other kinds (dates, decimals) as their text.
fn parquet_json(value: &::parquet::record::Field) -> serde_json::Value {
    use ::parquet::record::Field;
    match value {
        Field::Null => serde_json::Value::Null,
        Field::Bool(b) => (*b).into(),
        Field::Byte(x) => (*x).into(),
        Field::Short(x) => (*x).into(),
        Field::Int(x) => (*x).into(),
        Field::Long(x) => (*x).into(),
        Field::UByte(x) => (*x).into(),
        Field::UShort(x) => (*x).into(),
        Field::UInt(x) => (*x).into(),
        Field::ULong(x) => (*x).into(),
        Field::Float(x) => {
            serde_json::Number::from_f64(f64::from(*x)).map_or(serde_json::Value::Null, Into::into)
        }
        Field::Double(x) => {
            serde_json::Number::from_f64(*x).map_or(serde_json::Value::Null, Into::into)
        }
        other => parquet_csv_text(other).into(),
    }
}

fn read_csv(
    raw: Box<dyn std::io::Read + Send>,
    args: &PredictArgs,
    bad: &dyn Fn(String) -> PredictError,
) -> Result<InputTable, PredictError> {
    let (text, _) = dialect::transcode(raw, args.csv_encoding).map_err(|e| bad(e.to_string()))?;
    let (header_line, text) = dialect::header_line(text).map_err(|e| bad(e.to_string()))?;
    let delimiter = dialect::sniff_delimiter(args.csv_delimiter, &header_line.text);
    let mut reader = csv::ReaderBuilder::new()
        .delimiter(delimiter)
        .from_reader(text);
    let headers = reader
        .headers()
        .map_err(|e| {
            bad(format!(
                "cannot read the header row: {e}; set --csv-encoding to the file's encoding"
            ))
        })?
        .clone();
    let text_column = &args.text_column;
    let text_index = headers
        .iter()
        .position(|h| h.trim() == text_column)
        .ok_or_else(|| {
            let found: Vec<&str> = headers.iter().collect();
            bad(format!(
                "no column named {text_column:?} (found: {}; split at `{}`); pass --text-column, or --csv-delimiter",
                found.join(", "),
                dialect::delimiter_name(delimiter)
            ))
        })?;
    let mut records = Vec::new();
    for record in reader.records() {
        let record = record.map_err(|e| {
            let line = e.position().map_or(0, |p| p.line()) + u64::from(header_line.crlf);
            bad(format!(
                "line {line}: {e}; fix the row (RFC 4180 CSV), or set --csv-encoding to the file's encoding"
            ))
        })?;
        records.push(record);
    }
    Ok(InputTable::Csv {
        headers,
        records,
        text_index,
        delimiter,
    })
}

fn read_jsonl(
    raw: Box<dyn std::io::Read + Send>,
    text_column: &str,
    bad: &dyn Fn(String) -> PredictError,
) -> Result<InputTable, PredictError> {
    let (mut lines, mut texts) = (Vec::new(), Vec::new());
    for (at, line) in std::io::BufRead::lines(std::io::BufReader::new(raw)).enumerate() {
        let line =
            line.map_err(|e| bad(format!("line {}: {e} (JSON Lines must be UTF-8)", at + 1)))?;
        let line = match at {
            0 => line.trim_start_matches('\u{feff}').to_string(),
            _ => line,
        };
        if line.trim().is_empty() {
            continue;
        }
        let problem = |what: String| bad(format!("line {}: {what}", at + 1));
        let object = match serde_json::from_str::<serde_json::Value>(&line) {
            Ok(serde_json::Value::Object(map)) => map,
            Ok(_) => return Err(problem("not a JSON object".into())),
            Err(e) => return Err(problem(format!("not valid JSON ({e})"))),
        };
        let text = object
            .get(text_column)
            .and_then(crate::data::jsonl::as_text)
            .ok_or_else(|| {
                problem(format!(
                    "no string field {text_column:?}; pass --text-column"
                ))
            })?;
        texts.push(text);
        lines.push(line.trim_end().to_string());
    }
    Ok(InputTable::JsonLines { lines, texts })
}

/// Names of the prediction fields: `predicted_label`, `score`, or `label_i`, `score_i` for top-k.
fn prediction_names(k: usize) -> Vec<String> {
    match k {
        1 => vec!["predicted_label".into(), "score".into()],
        _ => (1..=k)
            .flat_map(|i| [format!("label_{i}"), format!("score_{i}")])
            .collect(),
    }
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
    // The input is read before the model loads: a bad file or output name fails fast.
    let table = read_input(&args.input, args)?;
    let output = match RowFormat::from_name(&args.output.to_string_lossy()) {
        _ if has_csv_extension(&args.output) => RowFormat::Csv,
        RowFormat::JsonLines => RowFormat::JsonLines,
        RowFormat::Parquet if !matches!(table, InputTable::Parquet { .. }) => {
            return Err(PredictError::Input {
                path: args.output.clone(),
                reason: "txcat writes Parquet for Parquet input only (it copies the input's columns); name the output .csv or .jsonl".to_string(),
            });
        }
        RowFormat::Parquet => RowFormat::Parquet,
        RowFormat::Csv => match table {
            InputTable::Csv { .. } => RowFormat::Csv,
            InputTable::JsonLines { .. } => RowFormat::JsonLines,
            InputTable::Parquet { .. } => RowFormat::Parquet,
        },
    };
    let blend = match args.encoder_only {
        true => BlendUse::EncoderOnly,
        false => BlendUse::Auto,
    };
    let predictor = Predictor::load_with(&args.model, DeviceChoice::Auto, blend)?;
    if let Some(b) = predictor.blend() {
        tracing::info!(
            weight = b.weight,
            temperature = b.temperature,
            encoder_temperature = b.encoder_temperature,
            "mixing in the model's tf-idf blend (--encoder-only for the encoder alone)"
        );
    }
    let texts = table.texts();
    let top = predictor.predict(&texts, args.top_k, args.batch_size)?;
    let rows = OutputRows {
        table: &table,
        text_column: &args.text_column,
        top: &top,
        id2label: predictor.labels(),
    };
    write_output(&args.output, output, rows)?;
    tracing::info!(rows = texts.len(), output = %args.output.display(), "predictions written");
    Ok(())
}

fn has_csv_extension(path: &Path) -> bool {
    let name = path.to_string_lossy().to_ascii_lowercase();
    name.ends_with(".csv") || name.ends_with(".tsv")
}

/// What an output file is made of: the input as read and the predictions of its rows.
#[derive(Clone, Copy)]
struct OutputRows<'a> {
    table: &'a InputTable,
    text_column: &'a str,
    top: &'a [Vec<Scored>],
    id2label: &'a [String],
}

/// Writes the predictions in `format` beside every input column (CSV from JSON Lines keeps the
/// text column only), aside first and renamed into place when complete; on failure the file
/// aside is removed and `path` is untouched.
fn write_output(path: &Path, format: RowFormat, rows: OutputRows<'_>) -> Result<(), PredictError> {
    let io = |source: std::io::Error| PredictError::Output {
        path: path.to_path_buf(),
        source,
    };
    let mut name = path.as_os_str().to_owned();
    name.push(".partial");
    let tmp = PathBuf::from(name);
    let written = fs::File::create(&tmp).map_err(io).and_then(|file| {
        let mut out = std::io::BufWriter::new(file);
        write_rows(path, &mut out, format, rows)?;
        let file = out
            .into_inner()
            .map_err(|e| io(std::io::Error::other(e.to_string())))?;
        file.sync_all().map_err(io)
    });
    match written {
        Ok(()) => fs::rename(&tmp, path).map_err(io),
        Err(e) => {
            let _ = fs::remove_file(&tmp);
            Err(e)
        }
    }
}

/// The body of [`write_output`]: every row in `format` to `out`.
fn write_rows(
    path: &Path,
    out: &mut std::io::BufWriter<fs::File>,
    format: RowFormat,
    rows: OutputRows<'_>,
) -> Result<(), PredictError> {
    let OutputRows {
        table,
        text_column,
        top,
        id2label,
    } = rows;
    let io = |source: std::io::Error| PredictError::Output {
        path: path.to_path_buf(),
        source,
    };
    let names = prediction_names(top.first().map_or(1, Vec::len));
    let predicted = |best: &[Scored]| -> Vec<(String, f32)> {
        best.iter()
            .map(|s| (id2label[s.label].clone(), s.score))
            .collect()
    };
    match format {
        RowFormat::Csv => {
            let (mut header, delimiter): (Vec<String>, u8) = match table {
                InputTable::Csv {
                    headers, delimiter, ..
                } => (headers.iter().map(str::to_owned).collect(), *delimiter),
                InputTable::JsonLines { .. } => (vec![text_column.to_string()], b','),
                InputTable::Parquet { headers, .. } => (headers.clone(), b','),
            };
            header.extend(names.iter().cloned());
            let mut writer = csv::WriterBuilder::new()
                .delimiter(delimiter)
                .from_writer(&mut *out);
            writer.write_record(&header).map_err(|e| io(e.into()))?;
            let texts = table.texts();
            for (row, best) in top.iter().enumerate() {
                let mut fields: Vec<String> = match table {
                    InputTable::Csv { records, .. } => {
                        records[row].iter().map(str::to_owned).collect()
                    }
                    InputTable::JsonLines { .. } => vec![texts[row].to_string()],
                    InputTable::Parquet { rows, .. } => {
                        rows[row].iter().map(parquet_csv_text).collect()
                    }
                };
                for (label, score) in predicted(best) {
                    fields.push(label);
                    fields.push(format!("{score:.6}"));
                }
                writer.write_record(&fields).map_err(|e| io(e.into()))?;
            }
            writer.flush().map_err(io)?;
        }
        RowFormat::JsonLines => {
            for (row, best) in top.iter().enumerate() {
                let mut fields: Vec<(String, serde_json::Value)> = Vec::new();
                for (i, (label, score)) in predicted(best).into_iter().enumerate() {
                    fields.push((names[2 * i].clone(), label.into()));
                    let score = (f64::from(score) * 1e6).round() / 1e6;
                    fields.push((names[2 * i + 1].clone(), score.into()));
                }
                let line = match table {
                    InputTable::Csv {
                        headers, records, ..
                    } => {
                        let columns = headers
                            .iter()
                            .zip(records[row].iter())
                            .map(|(h, v)| (h.to_string(), serde_json::Value::from(v)));
                        json_object(columns.chain(fields))
                    }
                    InputTable::JsonLines { lines, .. } => with_fields(&lines[row], fields),
                    InputTable::Parquet { headers, rows, .. } => {
                        let columns = headers
                            .iter()
                            .zip(rows[row].iter())
                            .map(|(h, v)| (h.clone(), parquet_json(v)));
                        json_object(columns.chain(fields))
                    }
                };
                writeln!(out, "{line}").map_err(io)?;
            }
        }
        RowFormat::Parquet => {
            let InputTable::Parquet { path: source, .. } = table else {
                return Err(PredictError::Input {
                    path: path.to_path_buf(),
                    reason: "txcat writes Parquet for Parquet input only; name the output .csv or .jsonl".into(),
                });
            };
            let file = fs::File::open(source).map_err(io)?;
            let rows: Vec<Vec<(String, f32)>> = top.iter().map(|b| predicted(b)).collect();
            parquet_output::write(&file, &names, &rows, &mut *out).map_err(|e| {
                PredictError::Input {
                    path: source.clone(),
                    reason: parquet::describe_error(&e),
                }
            })?;
        }
    }
    Ok(())
}

/// A JSON object with these fields in this order (serde_json's map would sort them).
fn json_object(fields: impl Iterator<Item = (String, serde_json::Value)>) -> String {
    let body: Vec<String> = fields
        .map(|(k, v)| format!("{}:{v}", serde_json::Value::from(k)))
        .collect();
    format!("{{{}}}", body.join(","))
}

/// `object` (one JSON object as the user wrote it) with `fields` added before its closing brace,
/// so every input field stays as written and in place.
fn with_fields(object: &str, fields: Vec<(String, serde_json::Value)>) -> String {
    let added = json_object(fields.into_iter());
    let inner = &added[1..added.len() - 1];
    let open = object
        .trim_end()
        .strip_suffix('}')
        .unwrap_or(object)
        .trim_end();
    match open
        .trim_start()
        .strip_prefix('{')
        .map(str::trim)
        .map(str::is_empty)
    {
        Some(true) => format!("{{{inner}}}"),
        _ => format!("{open},{inner}}}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_added_to_objects_as_written() {
        let fields = || {
            vec![
                ("predicted_label".to_string(), "Food".into()),
                ("score".to_string(), 0.5.into()),
            ]
        };
        assert_eq!(
            with_fields(r#"{"text": "Costa", "id": 7 }"#, fields()),
            r#"{"text": "Costa", "id": 7,"predicted_label":"Food","score":0.5}"#
        );
        assert_eq!(
            with_fields("{ }", fields()),
            r#"{"predicted_label":"Food","score":0.5}"#
        );
        let back: serde_json::Value =
            serde_json::from_str(&with_fields(r#"{"a":{"b":"}"}}"#, fields())).unwrap();
        assert_eq!(back["a"]["b"], "}");
        assert_eq!(back["predicted_label"], "Food");
    }
}

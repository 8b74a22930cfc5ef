//! Rows, labels and the evaluation split: from channel bytes to texts and label ids.
//!
//! - [`channel`]: a channel's objects -> [`rows::ChannelRows`], each object in its [`format`].
//! - [`csv`]: CSV objects (gzip, BOM, CRLF, RFC 4180) -> `(text, label)` rows, bad rows counted.
//! - [`dialect`]: the encoding and delimiter of a CSV file (fixed or sniffed per file).
//! - [`jsonl`]: JSON Lines objects -> `(text, label)` rows.
//! - [`parquet`]: Parquet objects -> `(text, label)` rows, a row group at a time.
//! - [`rows`]: the rows every format yields and the shared bad-row budget.
//! - [`stream`]: byte-level steps shared by the formats (look-ahead, gunzip).
//! - [`labels`]: [`labels::LabelMap`], sorted like scikit-learn's `LabelEncoder`.
//! - [`split`]: a seeded, stratified hold-out of train when no evaluation channel exists.
//!
//! Invariant: nothing here knows where bytes come from (see `crate::storage`) or about tokens.

pub mod channel;
pub mod csv;
pub mod dialect;
pub mod format;
pub mod jsonl;
pub mod labels;
pub mod parquet;
pub mod prepared;
pub mod rows;
pub mod split;
pub mod stream;

use crate::storage::StorageError;

/// Failures turning channel data into labelled rows. Messages are one line naming the file,
/// line, column or labels concerned and how to fix it.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error(
        "{at}: {problem}; fix the row, or allow skipping with max_bad_rows (now {max_bad_rows})"
    )]
    BadRow {
        /// `file:line`, or for Parquet the file, row group and row.
        at: String,
        problem: String,
        max_bad_rows: usize,
    },
    #[error("{file}: the file is empty; every CSV file needs a header row naming its columns")]
    NoHeader { file: String },
    #[error(
        "{file}: no column `{column}` in the header (columns: {found}); set {key} to one of them{hint}"
    )]
    MissingColumn {
        file: String,
        column: String,
        /// The hyperparameter that names the column (`text_column` / `label_column`).
        key: &'static str,
        found: String,
        /// Empty, or `; ...` saying what would find the column (another delimiter or case).
        hint: String,
    },
    #[error("{file}: the header row is not valid UTF-8; set csv_encoding (windows-1252, latin-1, utf-16 or auto) to the file's encoding")]
    HeaderNotUtf8 { file: String },
    #[error("{file}: the header has column `{column}` more than once; rename one")]
    DuplicateColumn { file: String, column: String },
    #[error("{file}:{line}: {problem}")]
    Read {
        file: String,
        line: u64,
        problem: String,
    },
    #[error("{file}:1: the file holds one JSON array, not JSON Lines; write one object per line, e.g. with pandas to_json(orient=\"records\", lines=True)")]
    JsonArray { file: String },
    #[error("{file}: Parquet cannot be read in Pipe mode (a Parquet reader starts at the file's footer, so it needs a seekable file); set the channel's TrainingInputMode (the estimator's input_mode) to File or FastFile")]
    ParquetInPipeMode { file: String },
    #[error("{file}: the Parquet file is gzipped as a whole, which a Parquet reader cannot seek in; write it without the outer gzip and name it .parquet (Parquet compresses inside: snappy, gzip or zstd)")]
    ParquetGzipped { file: String },
    #[error("{file}: column `{column}` ({key}) is {kind}; txcat reads string, integer, float or boolean columns, so cast it (e.g. to string) when writing the file or set {key} to another column")]
    ParquetColumnType {
        file: String,
        column: String,
        key: &'static str,
        kind: String,
    },
    #[error("{file}: {problem}")]
    Parquet { file: String, problem: String },
    #[error("channel `{channel}` has no data rows (files: {files}); add rows below the header")]
    NoRows { channel: String, files: String },
    #[error("evaluation channel `{channel}` has {rows} rows whose labels do not occur in training: {labels}; add them to the training data or set unseen_eval_labels=drop")]
    UnseenLabels {
        channel: String,
        rows: usize,
        labels: String,
    },
    #[error(
        "the training data has {count} distinct label(s) ({labels}); a classifier needs at least 2"
    )]
    TooFewClasses { count: usize, labels: String },
    #[error("evaluation data is empty after {reason}; provide an evaluation channel with rows")]
    EmptyEval { reason: String },
}

//! Where channel bytes come from: a local directory (File/FastFile mode), a Pipe-mode FIFO, or an
//! `s3://` prefix. Every source yields the same thing, a sequence of named byte streams
//! ([`InputObject`]), so the CSV reader never knows which one it is reading.
//!
//! Invariants: objects come in a deterministic order (sorted names); hidden files and marker
//! objects (`.`-prefixed, `_SUCCESS`-style, see [`is_hidden_name`]) are skipped; in a directory only
//! CSV, JSON Lines and Parquet files are data ([`is_data_file_name`]), others are skipped with a warning; names are
//! what a user should see in an error message (a path or an `s3://` URI).

use std::io::Read;

/// One file or object of a channel.
pub struct InputObject {
    /// Path or URI shown in error messages (`/opt/ml/input/data/train/a.csv`, `s3://b/k.csv.gz`).
    pub name: String,
    /// The raw bytes (possibly gzip: the reader sniffs the magic bytes).
    pub reader: Box<dyn Read + Send>,
    /// True when the stream is several files concatenated (Pipe mode): header lines may repeat.
    pub concatenated: bool,
    /// The file itself when it is a regular local file, for formats that seek (Parquet reads its
    /// footer first); `None` for streams (S3 objects, a Pipe-mode FIFO).
    pub local_path: Option<std::path::PathBuf>,
}

/// A channel's objects, opened one after the other.
pub trait ObjectStream {
    /// The next object, or `None` when the channel is exhausted.
    fn next_object(&mut self) -> Result<Option<InputObject>, StorageError>;
}

/// Failures reaching channel data.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("channel '{channel}': directory {path} does not exist; put the CSV files there or point the channel elsewhere")]
    MissingDir { channel: String, path: String },
    #[error("channel '{channel}': no data files in {location}; add {kinds} files", kinds = DATA_FILE_KINDS)]
    Empty { channel: String, location: String },
    #[error("cannot read {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Other(String),
    #[error("invalid S3 URI '{uri}': {reason}; expected s3://bucket/prefix-or-key")]
    BadUri { uri: String, reason: String },
    #[error("{uri}: bucket '{bucket}' does not exist (NoSuchBucket); check the bucket name, AWS_REGION and AWS_ENDPOINT_URL")]
    NoSuchBucket { uri: String, bucket: String },
    #[error(
        "{uri}: no such object (NoSuchKey); check the key, or end the URI with '/' for a prefix"
    )]
    NoSuchKey { uri: String },
    #[error("{uri}: access denied ({operation}); give the job's credentials s3:{action} on it")]
    AccessDenied {
        uri: String,
        operation: String,
        action: String,
    },
    #[error("{uri}: key '{key}' would be written outside the destination directory ('..' or absolute path); remove or rename it")]
    UnsafeKey { uri: String, key: String },
    /// A prefix to mirror (a model) holds no objects: the user named the wrong place.
    #[error("{uri}: no objects under this prefix; check the model location")]
    NothingToDownload { uri: String },
    #[error("{uri}: {reason}")]
    S3 { uri: String, reason: String },
    #[error("channel '{channel}': Pipe-mode FIFO {path} does not exist; is the channel's TrainingInputMode Pipe?")]
    MissingFifo { channel: String, path: String },
    #[error("channel '{channel}': nothing opened Pipe-mode FIFO {path} for writing within {seconds:.0} s; is the channel's TrainingInputMode Pipe and is a producer writing to it?")]
    SilentFifo {
        channel: String,
        path: String,
        seconds: f64,
    },
}

/// Opens a local file or FIFO as one object, named by its path.
pub(crate) fn open_file_object(
    path: &std::path::Path,
    concatenated: bool,
) -> Result<InputObject, StorageError> {
    let file = std::fs::File::open(path).map_err(|source| StorageError::Io {
        path: path.display().to_string(),
        source,
    })?;
    Ok(InputObject {
        name: path.display().to_string(),
        reader: Box::new(std::io::BufReader::new(file)),
        concatenated,
        local_path: (!concatenated).then(|| path.to_path_buf()),
    })
}

impl StorageError {
    /// True when the user named something that is not there or not allowed (exit status 2);
    /// false for I/O and service failures, which a rerun may not repeat.
    pub fn is_bad_input(&self) -> bool {
        !matches!(
            self,
            StorageError::Io { .. } | StorageError::Other(_) | StorageError::S3 { .. }
        )
    }
}

pub mod archive;
pub mod local;
pub mod pipe;
pub mod s3;

/// True for names every source skips: hidden (`.`-prefixed) and marker (`_`-prefixed, e.g.
/// `_SUCCESS`) files or folders. `name` is one path component or key segment.
pub fn is_hidden_name(name: &str) -> bool {
    name.starts_with('.') || name.starts_with('_')
}

/// The data file names a channel directory may hold, for messages.
pub const DATA_FILE_KINDS: &str =
    ".csv, .jsonl, .ndjson or .json (each optionally .gz), or .parquet";

/// True for names that hold channel data (see [`DATA_FILE_KINDS`], any case). Sources skip other
/// files with a warning, so a README or manifest next to the data never breaks a job. A
/// `.parquet.gz` is data too, so that the Parquet reader can say why it cannot be read instead
/// of the file being skipped.
pub fn is_data_file_name(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    let stem = lower.strip_suffix(".gz").unwrap_or(&lower);
    [".csv", ".jsonl", ".ndjson", ".json", ".parquet"]
        .iter()
        .any(|ext| stem.ends_with(ext))
}

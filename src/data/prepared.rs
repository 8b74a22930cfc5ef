//! The validated data a training job hands to fine-tuning: where each channel came from, the
//! label map, and the train and evaluation texts with their class ids.

use std::collections::BTreeMap;
use std::path::PathBuf;

use super::labels::LabelMap;
use crate::sagemaker::{InputMode, S3Settings};
use crate::storage::s3::S3Options;
use crate::storage::{self, ObjectStream, StorageError};

/// Where a channel's bytes come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChannelSource {
    /// A directory (File / FastFile mode, or `--channel`) or a single file.
    Local { path: PathBuf, mode: InputMode },
    /// A Pipe-mode FIFO (first pass).
    Pipe { fifo: PathBuf },
    /// An `s3://` prefix or key.
    S3 { uri: String },
}

impl std::fmt::Display for ChannelSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ChannelSource::Local { path, mode } => write!(f, "{} ({mode:?})", path.display()),
            ChannelSource::Pipe { fifo } => write!(f, "{} (Pipe)", fifo.display()),
            ChannelSource::S3 { uri } => f.write_str(uri),
        }
    }
}

impl ChannelSource {
    /// Opens the source through the matching storage backend (`s3` configures S3 clients).
    pub fn open(
        &self,
        channel: &str,
        s3: &S3Settings,
    ) -> Result<Box<dyn ObjectStream + Send>, StorageError> {
        match self {
            ChannelSource::Local { path, .. } => storage::local::open_channel(channel, path),
            ChannelSource::Pipe { fifo } => storage::pipe::open_channel(channel, fifo),
            ChannelSource::S3 { uri } => {
                storage::s3::open_channel(channel, uri, S3Options::from_settings(s3))
            }
        }
    }
}

/// Where the evaluation rows came from.
#[derive(Debug, Clone, PartialEq)]
pub enum EvalOrigin {
    /// A channel of their own.
    Channel(String),
    /// A seeded stratified hold-out of the `train` channel.
    Split { fraction: f64, seed: u64 },
}

/// Texts with their class ids (parallel vectors of equal length).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LabelledTexts {
    pub texts: Vec<String>,
    /// Ids into [`PreparedData::labels`].
    pub label_ids: Vec<usize>,
}

impl LabelledTexts {
    pub fn len(&self) -> usize {
        self.texts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.texts.is_empty()
    }

    pub(crate) fn subset(&self, rows: &[usize]) -> Self {
        Self {
            texts: rows.iter().map(|&r| self.texts[r].clone()).collect(),
            label_ids: rows.iter().map(|&r| self.label_ids[r]).collect(),
        }
    }
}

/// What one channel contributed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelSummary {
    pub name: String,
    pub source: ChannelSource,
    /// Objects read, in order.
    pub files: Vec<String>,
    /// Good rows read (before any split or unseen-label drop).
    pub rows: usize,
    /// Bad rows skipped under `max_bad_rows`.
    pub skipped_bad_rows: usize,
}

/// Everything training needs from the data, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct PreparedData {
    /// Class ids, sorted like scikit-learn's LabelEncoder, fitted on the whole `train` channel.
    pub labels: LabelMap,
    pub train: LabelledTexts,
    pub eval: LabelledTexts,
    pub eval_origin: EvalOrigin,
    /// The channels read (train first, then the evaluation channel if any).
    pub channels: Vec<ChannelSummary>,
    /// Bad rows skipped in all channels.
    pub skipped_bad_rows: usize,
    /// Evaluation labels unseen in training -> rows dropped (`unseen_eval_labels=drop`).
    pub dropped_unseen_eval: BTreeMap<String, usize>,
}

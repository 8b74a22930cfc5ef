//! The one error type of the model module: every variant names the file it is about and says
//! how to fix the input.

use std::path::PathBuf;

/// Why a model could not be found, loaded or saved.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// `model_name_or_path` resolved to nothing.
    #[error("model `{name}` not found (looked in: {searched}); pass a directory holding config.json, model.safetensors and tokenizer.json (or a model.tar.gz of one), ship it in the `model` input channel, or put it under $TXCAT_MODEL_HOME/{name}")]
    NotFound {
        /// The name or path asked for.
        name: String,
        /// The places looked at, comma separated.
        searched: String,
    },
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// `config.json` is not valid JSON or has a bad value.
    #[error("{path}: {reason}")]
    Config {
        /// The config file.
        path: PathBuf,
        /// What is wrong and how to fix it.
        reason: String,
    },
    /// Only a pickle checkpoint is present.
    #[error("{path}: refusing to load a pickle checkpoint (unpickling can run arbitrary code); convert it to safetensors first, e.g. in Python: `AutoModel.from_pretrained(dir).save_pretrained(dir, safe_serialization=True)`, then ship model.safetensors")]
    PickleRefused {
        /// The pickle file found.
        path: PathBuf,
    },
    /// No weights file at all.
    #[error("{dir}: no model.safetensors in this directory; put the Hugging Face weights there as model.safetensors")]
    MissingWeights {
        /// The model directory.
        dir: PathBuf,
    },
    /// The weights file is not valid safetensors (truncated, corrupt) or holds an unsupported
    /// dtype.
    #[error(
        "{path}: not a valid safetensors file ({reason}); re-copy or re-export the checkpoint"
    )]
    Safetensors {
        /// The weights file.
        path: PathBuf,
        /// The parser's complaint.
        reason: String,
    },
    /// Tensors missing, unexpected or of the wrong shape (all listed).
    #[error("{path}: checkpoint does not match its config.json: {details}")]
    Mismatch {
        /// The weights file.
        path: PathBuf,
        /// Every missing, unexpected and mis-shaped tensor.
        details: String,
    },
    /// Bad argument from the caller (e.g. no labels).
    #[error("{0}")]
    Invalid(String),
    /// A libtorch call failed.
    #[error("libtorch: {0}")]
    Torch(#[from] tch::TchError),
    /// A packed model could not be unpacked (names the archive and the entry).
    #[error(transparent)]
    Archive(#[from] crate::storage::archive::ArchiveError),
    /// An `s3://` model could not be downloaded.
    #[error("model download: {0}")]
    Download(#[from] crate::storage::StorageError),
    /// A Hub model could not be fetched (boxed: the variants carry several strings).
    #[error(transparent)]
    Hub(Box<super::hub::HubError>),
}

impl From<super::hub::HubError> for ModelError {
    fn from(e: super::hub::HubError) -> Self {
        ModelError::Hub(Box::new(e))
    }
}

impl ModelError {
    /// True when the user's model files or settings are at fault (exit status 2), false for
    /// local I/O and service failures.
    pub fn is_bad_input(&self) -> bool {
        match self {
            ModelError::Io { .. } => false,
            ModelError::Archive(e) => e.is_bad_input(),
            ModelError::Download(e) => e.is_bad_input(),
            ModelError::Hub(e) => e.is_bad_input(),
            _ => true,
        }
    }

    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        ModelError::Io {
            path: path.into(),
            source,
        }
    }
}

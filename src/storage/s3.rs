//! `s3://` channels and outputs (TO BE WRITTEN, issue 5). Signatures pinned for the job layer.

use super::{ObjectStream, StorageError};
use std::path::Path;

/// Every object under `uri` (a prefix or a single key), in sorted key order, as a channel.
pub fn open_channel(
    channel: &str,
    uri: &str,
) -> Result<Box<dyn ObjectStream + Send>, StorageError> {
    let _ = channel;
    Err(StorageError::Other(format!(
        "{uri}: S3 channels are not supported yet"
    )))
}

/// Mirrors every object under `uri` into `dest` (used for `model_name_or_path=s3://...`).
pub fn download_prefix(uri: &str, dest: &Path) -> Result<(), StorageError> {
    let _ = dest;
    Err(StorageError::Other(format!(
        "{uri}: S3 models are not supported yet"
    )))
}

/// Uploads `model.tar.gz` (of `model_dir`) and `output.tar.gz` (of `output_data_dir`) under
/// `output_uri`, each visible only once complete.
pub fn upload_outputs(
    output_uri: &str,
    model_dir: &Path,
    output_data_dir: &Path,
) -> Result<(), StorageError> {
    let _ = (model_dir, output_data_dir);
    Err(StorageError::Other(format!(
        "{output_uri}: S3 output is not supported yet"
    )))
}

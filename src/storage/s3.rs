//! `s3://` channels, models and outputs.
//!
//! A synchronous facade over aws-sdk-s3: each call builds an [`client::S3Context`] (a small tokio
//! runtime plus a client from the aws-config default chain) and blocks on it; channel readers are
//! plain [`std::io::Read`]s fed by background downloads (see `download.rs`).
//!
//! Invariants: objects are delivered in sorted key order, hidden (`.`), marker (`_SUCCESS`,
//! `_`-prefixed, `*_$folder$`) and "directory" (`…/`) keys skipped; every error names the URI;
//! mirrored keys never leave the destination directory; uploads are all-or-nothing for readers.
//! Call these functions from synchronous code, never from inside another tokio runtime.

mod client;
mod download;
mod retry;
mod upload;
mod uri;

pub use client::S3Options;
pub use retry::RetryPolicy;
pub use upload::write_tarball;
pub use uri::{is_s3_uri, S3Uri};

use super::{ObjectStream, StorageError};
use client::S3Context;
use download::PrefetchingStream;
use std::io::Write;
use std::path::Path;
use std::sync::Arc;

/// Every object under `uri` (a prefix or a single key), in sorted key order, as a channel.
///
/// `s3://b/data/train.csv` is that single object when it exists; otherwise (and for `s3://b/data/`
/// or `s3://b`) the URI is a folder and every data object below `data/` is read. An empty result
/// is an error naming the URI.
pub fn open_channel(
    channel: &str,
    uri: &str,
    options: S3Options,
) -> Result<Box<dyn ObjectStream + Send>, StorageError> {
    let (parsed, context, prefix, objects) = list_uri(uri, options)?;
    let single = objects.len() == 1 && objects[0].key == parsed.key;
    let listed = objects.len();
    let mut objects: Vec<_> = objects
        .into_iter()
        .filter(|object| single || uri::is_data_key(&prefix, &object.key))
        .collect();
    objects.sort_by(|a, b| a.key.cmp(&b.key));
    if objects.is_empty() {
        return Err(empty_error(channel, &parsed, uri, listed));
    }
    let bytes: u64 = objects.iter().map(|object| object.size).sum();
    tracing::info!(
        channel,
        uri,
        objects = objects.len(),
        bytes,
        "reading S3 channel"
    );
    Ok(Box::new(PrefetchingStream::new(
        context,
        parsed.bucket,
        objects,
    )))
}

/// Parses `uri`, starts a client and lists what the URI names (a key or a folder): the parsed
/// URI, the context, the listing prefix and the objects.
fn list_uri(
    uri: &str,
    options: S3Options,
) -> Result<(S3Uri, Arc<S3Context>, String, Vec<download::ObjectInfo>), StorageError> {
    let parsed = S3Uri::parse(uri)?;
    let context = Arc::new(S3Context::new(options)?);
    let (prefix, objects) = context.block_on(download::resolve(
        &context.client,
        &context.options.retry,
        &parsed,
        uri,
    ))?;
    Ok((parsed, context, prefix, objects))
}

fn empty_error(channel: &str, parsed: &S3Uri, uri: &str, listed: usize) -> StorageError {
    if listed == 0 && !parsed.key.is_empty() && !parsed.key.ends_with('/') {
        StorageError::NoSuchKey {
            uri: uri.to_string(),
        }
    } else {
        StorageError::Empty {
            channel: channel.to_string(),
            location: uri.to_string(),
        }
    }
}

/// Mirrors every object under `uri` into `dest` (used for `model_name_or_path=s3://...`).
/// Relative paths below the prefix are kept; a key
/// that would land outside `dest` fails the whole download before any file is written; hidden
/// and marker objects are skipped; each file appears under its final name only once complete.
pub fn download_prefix(uri: &str, dest: &Path, options: S3Options) -> Result<(), StorageError> {
    let (parsed, context, prefix, objects) = list_uri(uri, options)?;
    let mut planned = Vec::new();
    for object in objects {
        if object.key.ends_with('/') {
            continue;
        }
        let relative = uri::safe_relative_path(uri, &prefix, &object.key)?;
        if uri::is_data_key(&prefix, &object.key) {
            planned.push((relative, object));
        }
    }
    if planned.is_empty() {
        return Err(StorageError::NothingToDownload {
            uri: uri.to_string(),
        });
    }
    planned.sort_by(|a, b| a.1.key.cmp(&b.1.key));
    let io_err = |path: &Path| {
        let path = path.display().to_string();
        move |source| StorageError::Io { path, source }
    };
    let (paths, objects): (Vec<_>, Vec<_>) = planned.into_iter().unzip();
    let mut stream = PrefetchingStream::new(Arc::clone(&context), parsed.bucket.clone(), objects);
    for relative in paths {
        let Some(mut object) = stream.next_object()? else {
            break;
        };
        let target = dest.join(&relative);
        let parent = target.parent().unwrap_or(dest);
        std::fs::create_dir_all(parent).map_err(io_err(parent))?;
        let mut staged = tempfile::NamedTempFile::new_in(parent).map_err(io_err(parent))?;
        std::io::copy(&mut object.reader, &mut staged).map_err(|source| {
            match source.into_inner() {
                Some(inner) => match inner.downcast::<StorageError>() {
                    Ok(storage) => *storage,
                    Err(other) => StorageError::S3 {
                        uri: object.name.clone(),
                        reason: other.to_string(),
                    },
                },
                None => StorageError::S3 {
                    uri: object.name.clone(),
                    reason: "download failed".to_string(),
                },
            }
        })?;
        staged.flush().map_err(io_err(&target))?;
        staged.persist(&target).map_err(|err| StorageError::Io {
            path: target.display().to_string(),
            source: err.error,
        })?;
    }
    tracing::info!(uri, dest = %dest.display(), "model downloaded");
    Ok(())
}

/// Fails fast when `output_uri`'s bucket does not exist (see `upload::check_output_bucket`).
pub fn check_output_uri(output_uri: &str, options: S3Options) -> Result<(), StorageError> {
    let parsed = S3Uri::parse(output_uri)?;
    let context = S3Context::new(options)?;
    context.block_on(upload::check_output_bucket(&context, &parsed, output_uri))
}

/// Uploads `model.tar.gz` (of `model_dir`) and `output.tar.gz` (of `output_data_dir`) under
/// `output_uri`, each visible only once complete.
pub fn upload_outputs(
    output_uri: &str,
    model_dir: &Path,
    output_data_dir: &Path,
    options: S3Options,
) -> Result<(), StorageError> {
    let context = S3Context::new(options)?;
    upload::upload_outputs(&context, output_uri, model_dir, output_data_dir)
}

//! Job outputs to S3: `model.tar.gz` and `output.tar.gz`, gzip tarballs of the directories'
//! contents with relative entry names (the layout SageMaker makes of `/opt/ml/model`).
//!
//! All-or-nothing for readers: a file up to one part goes up in a single PutObject, which S3
//! never exposes half-written; a larger one goes up as a multipart upload that becomes an
//! object only when CompleteMultipartUpload succeeds at the end (and is aborted on failure), so
//! no temporary key is ever visible and no copy of a multi-GB object is needed.
//! `output.tar.gz` is uploaded first and `model.tar.gz` last, so a present `model.tar.gz`
//! means the whole upload finished.

use super::client::S3Context;
use super::retry::{classify, with_retry, Failure, Operation};
use super::uri::S3Uri;
use crate::storage::StorageError;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{ChecksumAlgorithm, CompletedMultipartUpload, CompletedPart};
use aws_sdk_s3::Client;
use flate2::write::GzEncoder;
use flate2::Compression;
use std::fs::File;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;
use tokio::task::JoinSet;

/// Writes a gzip tarball of the contents of `dir` (entries relative to `dir`, sorted, no `./`
/// prefix) into `out`. A missing `dir` gives an empty archive.
pub fn write_tarball(dir: &Path, out: &mut File) -> Result<(), StorageError> {
    let io_err = |path: &Path| {
        let path = path.display().to_string();
        move |source| StorageError::Io { path, source }
    };
    let encoder = GzEncoder::new(out, Compression::default());
    let mut builder = tar::Builder::new(encoder);
    builder.follow_symlinks(true);
    if dir.is_dir() {
        append_dir_contents(&mut builder, dir, Path::new(""))?;
    }
    let mut encoder = builder.into_inner().map_err(io_err(dir))?;
    encoder.flush().map_err(io_err(dir))?;
    encoder.finish().map_err(io_err(dir))?;
    Ok(())
}

fn append_dir_contents<W: Write>(
    builder: &mut tar::Builder<W>,
    dir: &Path,
    relative: &Path,
) -> Result<(), StorageError> {
    let io_err = |path: &Path| {
        let path = path.display().to_string();
        move |source| StorageError::Io { path, source }
    };
    let mut entries = std::fs::read_dir(dir)
        .map_err(io_err(dir))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(io_err(dir))?;
    entries.sort_by_key(|entry| entry.file_name());
    for entry in entries {
        let path = entry.path();
        let name = relative.join(entry.file_name());
        if path.is_dir() {
            builder.append_dir(&name, &path).map_err(io_err(&path))?;
            append_dir_contents(builder, &path, &name)?;
        } else {
            builder
                .append_path_with_name(&path, &name)
                .map_err(io_err(&path))?;
        }
    }
    Ok(())
}

/// Checks, before any training, that `output_uri`'s bucket exists and answers in this region,
/// so a typo fails the job at once rather than after hours of training. HeadBucket needs
/// s3:ListBucket, which an upload-only role may lack: access denied is only logged.
pub async fn check_output_bucket(
    context: &S3Context,
    uri: &S3Uri,
    output_uri: &str,
) -> Result<(), StorageError> {
    let client = &context.client;
    let checked = with_retry(&context.options.retry, output_uri, || {
        let request = client.head_bucket().bucket(&uri.bucket);
        async move {
            request.send().await.map(|_| ()).map_err(|err| {
                match classify(err, output_uri, Operation::List) {
                    // HEAD responses have no body, so a missing bucket is a bare 404.
                    Failure::Permanent(StorageError::NoSuchKey { uri }) => {
                        Failure::Permanent(StorageError::NoSuchBucket {
                            uri,
                            bucket: String::new(),
                        })
                    }
                    other => other,
                }
            })
        }
    })
    .await;
    match checked {
        Err(StorageError::NoSuchBucket { uri: text, .. }) => Err(StorageError::NoSuchBucket {
            uri: text,
            bucket: uri.bucket.clone(),
        }),
        Err(StorageError::AccessDenied { .. }) => {
            tracing::warn!(
                output_uri,
                "cannot check the output bucket (no s3:ListBucket); the upload after training will tell"
            );
            Ok(())
        }
        other => other,
    }
}

/// Tarballs both directories and uploads them under `output_uri` (output first, model last).
pub fn upload_outputs(
    context: &S3Context,
    output_uri: &str,
    model_dir: &Path,
    output_data_dir: &Path,
) -> Result<(), StorageError> {
    let uri = S3Uri::parse(output_uri)?;
    let prefix = uri.folder_prefix();
    for (dir, name) in [
        (output_data_dir, "output.tar.gz"),
        (model_dir, "model.tar.gz"),
    ] {
        let mut staged = tempfile::tempfile().map_err(|source| StorageError::Io {
            path: std::env::temp_dir().display().to_string(),
            source,
        })?;
        write_tarball(dir, &mut staged)?;
        let key = format!("{prefix}{name}");
        let target = uri.with_key(&key);
        context.block_on(upload_file(
            context,
            Arc::new(staged),
            &uri.bucket,
            &key,
            &target,
        ))?;
        tracing::info!(uri = target, "uploaded");
    }
    Ok(())
}

async fn upload_file(
    context: &S3Context,
    file: Arc<File>,
    bucket: &str,
    key: &str,
    uri: &str,
) -> Result<(), StorageError> {
    let io_err = |source| StorageError::Io {
        path: format!("staged copy of {uri}"),
        source,
    };
    let size = file.metadata().map_err(io_err)?.len();
    let part_size = context.options.part_size.max(5 * 1024 * 1024) as u64;
    let client = &context.client;
    let policy = &context.options.retry;
    if size <= part_size {
        let body = read_range(&file, 0, size).map_err(io_err)?;
        return with_retry(policy, uri, || {
            let request = client
                .put_object()
                .bucket(bucket)
                .key(key)
                .content_type("application/gzip")
                .body(ByteStream::from(body.clone()));
            async move {
                request
                    .send()
                    .await
                    .map(|_| ())
                    .map_err(|err| classify(err, uri, Operation::Put))
            }
        })
        .await;
    }
    let upload_id = with_retry(policy, uri, || {
        let request = client
            .create_multipart_upload()
            .bucket(bucket)
            .key(key)
            .content_type("application/gzip")
            .checksum_algorithm(ChecksumAlgorithm::Crc32);
        async move {
            let created = request
                .send()
                .await
                .map_err(|err| classify(err, uri, Operation::Put))?;
            created.upload_id().map(str::to_string).ok_or_else(|| {
                Failure::Permanent(StorageError::S3 {
                    uri: uri.to_string(),
                    reason: "CreateMultipartUpload returned no upload id".to_string(),
                })
            })
        }
    })
    .await?;
    let result = upload_parts(context, file, bucket, key, uri, &upload_id, size, part_size).await;
    if result.is_err() {
        // Best effort: an unaborted upload stays invisible but keeps its parts billed until
        // a lifecycle rule removes it.
        let abort = client
            .abort_multipart_upload()
            .bucket(bucket)
            .key(key)
            .upload_id(&upload_id);
        if let Err(err) = abort.send().await {
            tracing::warn!(
                uri,
                "could not abort the multipart upload: {}",
                super::retry::error_chain(&err)
            );
        }
    }
    result
}

#[allow(clippy::too_many_arguments)]
async fn upload_parts(
    context: &S3Context,
    file: Arc<File>,
    bucket: &str,
    key: &str,
    uri: &str,
    upload_id: &str,
    size: u64,
    part_size: u64,
) -> Result<(), StorageError> {
    let part_count = size.div_ceil(part_size);
    let mut parts: Vec<CompletedPart> = Vec::with_capacity(part_count as usize);
    let mut running = JoinSet::new();
    let mut next_part: u64 = 0;
    let concurrency = context.options.upload_concurrency.max(1);
    while next_part < part_count || !running.is_empty() {
        while next_part < part_count && running.len() < concurrency {
            let offset = next_part * part_size;
            let length = part_size.min(size - offset);
            let number = (next_part + 1) as i32;
            running.spawn(upload_part(
                context.client.clone(),
                context.options.retry.clone(),
                Arc::clone(&file),
                (
                    bucket.to_string(),
                    key.to_string(),
                    uri.to_string(),
                    upload_id.to_string(),
                ),
                number,
                offset,
                length,
            ));
            next_part += 1;
        }
        match running.join_next().await {
            Some(Ok(Ok(part))) => parts.push(part),
            Some(Ok(Err(err))) => return Err(err),
            Some(Err(join)) => {
                return Err(StorageError::S3 {
                    uri: uri.to_string(),
                    reason: format!("part upload task failed: {join}"),
                })
            }
            None => {}
        }
    }
    parts.sort_by_key(|part| part.part_number());
    let completed = CompletedMultipartUpload::builder()
        .set_parts(Some(parts))
        .build();
    let client = &context.client;
    with_retry(&context.options.retry, uri, || {
        let request = client
            .complete_multipart_upload()
            .bucket(bucket)
            .key(key)
            .upload_id(upload_id)
            .multipart_upload(completed.clone());
        async move {
            request
                .send()
                .await
                .map(|_| ())
                .map_err(|err| classify(err, uri, Operation::Put))
        }
    })
    .await
}

async fn upload_part(
    client: Client,
    policy: super::retry::RetryPolicy,
    file: Arc<File>,
    (bucket, key, uri, upload_id): (String, String, String, String),
    number: i32,
    offset: u64,
    length: u64,
) -> Result<CompletedPart, StorageError> {
    let body = {
        let file = Arc::clone(&file);
        tokio::task::spawn_blocking(move || read_range(&file, offset, length))
            .await
            .map_err(|join| {
                StorageError::Other(format!("{uri}: reading part {number} failed: {join}"))
            })?
            .map_err(|source| StorageError::Io {
                path: format!("staged copy of {uri}"),
                source,
            })?
    };
    with_retry(&policy, &uri, || {
        let request = client
            .upload_part()
            .bucket(&bucket)
            .key(&key)
            .upload_id(&upload_id)
            .part_number(number)
            .checksum_algorithm(ChecksumAlgorithm::Crc32)
            .body(ByteStream::from(body.clone()));
        let uri = &uri;
        async move {
            let part = request
                .send()
                .await
                .map_err(|err| classify(err, uri, Operation::Put))?;
            Ok(CompletedPart::builder()
                .part_number(number)
                .set_e_tag(part.e_tag().map(str::to_string))
                .set_checksum_crc32(part.checksum_crc32().map(str::to_string))
                .build())
        }
    })
    .await
}

fn read_range(file: &File, offset: u64, length: u64) -> std::io::Result<bytes::Bytes> {
    let mut buffer = vec![0u8; length as usize];
    file.read_exact_at(&mut buffer, offset)?;
    Ok(buffer.into())
}

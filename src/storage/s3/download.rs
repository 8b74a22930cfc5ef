//! Listing and streaming downloads. A channel lists its prefix (every page), then downloads
//! objects in key order: up to `prefetch` objects at once, each in a background task that pushes
//! body chunks into a bounded channel read by a blocking [`Read`] facade. A body that fails or
//! stalls mid-way is resumed with a `Range` request from the byte reached, pinned to the first
//! response's ETag so that a changed object is reported instead of spliced.
//!
//! Invariants: every byte of an object is delivered exactly once and in order, or the reader
//! gets an error naming the object's URI; at most `prefetch * buffer_chunks` chunks are buffered.

use super::client::S3Context;
use super::retry::{
    classify, error_chain, with_retry, Failure, Operation, RetryPolicy, RetryState,
};
use super::uri::S3Uri;
use crate::storage::{InputObject, ObjectStream, StorageError};
use aws_sdk_s3::config::ResponseChecksumValidation;
use aws_sdk_s3::Client;
use bytes::Bytes;
use std::collections::VecDeque;
use std::io::Read;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// One listed object.
#[derive(Debug, Clone)]
pub struct ObjectInfo {
    pub key: String,
    pub size: u64,
}

/// Every object (page after page) whose key starts with `prefix`, in S3's order.
pub async fn list_all(
    client: &Client,
    policy: &RetryPolicy,
    bucket: &str,
    prefix: &str,
    uri: &str,
) -> Result<Vec<ObjectInfo>, StorageError> {
    let mut objects = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let page = with_retry(policy, uri, || {
            let request = client
                .list_objects_v2()
                .bucket(bucket)
                .prefix(prefix)
                .set_continuation_token(token.clone());
            async move {
                request
                    .send()
                    .await
                    .map_err(|err| classify(err, uri, Operation::List))
            }
        })
        .await?;
        objects.extend(page.contents().iter().filter_map(|object| {
            Some(ObjectInfo {
                key: object.key()?.to_string(),
                size: object.size().unwrap_or(0).max(0) as u64,
            })
        }));
        match page.next_continuation_token() {
            Some(next) if page.is_truncated() == Some(true) => token = Some(next.to_string()),
            _ => return Ok(objects),
        }
    }
}

/// What `uri` names: one object (its key exists and does not end with `/`), or the objects
/// under the folder `key/`. Returns the listing prefix (for relative paths) and the objects,
/// unfiltered.
pub async fn resolve(
    client: &Client,
    policy: &RetryPolicy,
    uri: &S3Uri,
    uri_text: &str,
) -> Result<(String, Vec<ObjectInfo>), StorageError> {
    if !uri.key.is_empty() && !uri.key.ends_with('/') {
        let head = with_retry(policy, uri_text, || {
            let request = client.head_object().bucket(&uri.bucket).key(&uri.key);
            async move {
                match request.send().await {
                    Ok(head) => Ok(Some(head.content_length().unwrap_or(0).max(0) as u64)),
                    Err(err) => match classify(err, uri_text, Operation::Get) {
                        // Not an object (or not visible as one): try it as a folder below.
                        Failure::Permanent(StorageError::NoSuchKey { .. })
                        | Failure::Permanent(StorageError::AccessDenied { .. }) => Ok(None),
                        other => Err(other),
                    },
                }
            }
        })
        .await?;
        if let Some(size) = head {
            let object = ObjectInfo {
                key: uri.key.clone(),
                size,
            };
            let parent = uri.key.rsplit_once('/').map_or("", |(dir, _)| dir);
            let prefix = if parent.is_empty() {
                String::new()
            } else {
                format!("{parent}/")
            };
            return Ok((prefix, vec![object]));
        }
    }
    let prefix = uri.folder_prefix();
    let objects = list_all(client, policy, &uri.bucket, &prefix, uri_text).await?;
    Ok((prefix, objects))
}

/// Messages from a download task to its reader.
enum Chunk {
    Data(Bytes),
    Done,
    Failed(StorageError),
}

/// Streams `s3://bucket/key` into `sender`, resuming after transient failures.
async fn download(
    client: Client,
    policy: RetryPolicy,
    stall_timeout: Duration,
    bucket: String,
    key: String,
    sender: mpsc::Sender<Chunk>,
) {
    let uri = format!("s3://{bucket}/{key}");
    let outcome = download_inner(
        &client,
        &policy,
        stall_timeout,
        &bucket,
        &key,
        &uri,
        &sender,
    )
    .await;
    let last = match outcome {
        Ok(()) => Chunk::Done,
        Err(err) => Chunk::Failed(err),
    };
    // The reader may be gone (dropped early); nothing is owed to it then.
    let _ = sender.send(last).await;
}

async fn download_inner(
    client: &Client,
    policy: &RetryPolicy,
    stall_timeout: Duration,
    bucket: &str,
    key: &str,
    uri: &str,
    sender: &mpsc::Sender<Chunk>,
) -> Result<(), StorageError> {
    let mut state = RetryState::new(policy);
    let mut offset: u64 = 0;
    let mut etag: Option<String> = None;
    let mut total: Option<u64> = None;
    loop {
        if total.is_some_and(|total| offset >= total) {
            return Ok(());
        }
        let mut request = client.get_object().bucket(bucket).key(key);
        let resuming = offset > 0;
        if resuming {
            request = request
                .range(format!("bytes={offset}-"))
                .set_if_match(etag.clone());
        }
        let response = if resuming {
            // A checksum of the whole object cannot validate a byte range of it.
            request
                .customize()
                .config_override(
                    aws_sdk_s3::config::Builder::default()
                        .response_checksum_validation(ResponseChecksumValidation::WhenRequired),
                )
                .send()
                .await
        } else {
            request.send().await
        };
        let response = match response {
            Ok(response) => response,
            Err(err) => match classify(err, uri, Operation::Get) {
                Failure::Transient(reason) => {
                    state.back_off(uri, &reason).await?;
                    continue;
                }
                Failure::Permanent(err) => return Err(err),
            },
        };
        if !resuming {
            etag = response.e_tag().map(str::to_string);
            total = response.content_length().map(|len| len.max(0) as u64);
        }
        let mut body = response.body;
        let reason = loop {
            match tokio::time::timeout(stall_timeout, body.next()).await {
                Err(_) => {
                    break format!("no data for {}s at byte {offset}", stall_timeout.as_secs())
                }
                Ok(None) => match total {
                    Some(total) if offset < total => {
                        break format!("connection closed at byte {offset} of {total}")
                    }
                    _ => return Ok(()),
                },
                Ok(Some(Ok(bytes))) => {
                    offset += bytes.len() as u64;
                    state.progressed();
                    if sender.send(Chunk::Data(bytes)).await.is_err() {
                        return Ok(());
                    }
                }
                Ok(Some(Err(err))) => {
                    break format!("body interrupted at byte {offset}: {}", error_chain(&err))
                }
            }
        };
        state.back_off(uri, &reason).await?;
    }
}

/// The blocking side of one download: a `Read` over the chunks the task sends.
struct ChunkReader {
    receiver: mpsc::Receiver<Chunk>,
    current: Bytes,
    finished: bool,
    uri: String,
    /// Keeps the runtime (and so the download task) alive while the reader is.
    _context: Arc<S3Context>,
}

impl Read for ChunkReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        loop {
            if !self.current.is_empty() {
                let n = buf.len().min(self.current.len());
                buf[..n].copy_from_slice(&self.current.split_to(n));
                return Ok(n);
            }
            if self.finished || buf.is_empty() {
                return Ok(0);
            }
            match self.receiver.blocking_recv() {
                Some(Chunk::Data(bytes)) => self.current = bytes,
                Some(Chunk::Done) => self.finished = true,
                Some(Chunk::Failed(err)) => return Err(std::io::Error::other(err)),
                None => {
                    return Err(std::io::Error::other(StorageError::S3 {
                        uri: self.uri.clone(),
                        reason: "the download stopped before the end of the object".to_string(),
                    }))
                }
            }
        }
    }
}

/// A channel's objects, downloaded ahead of the reader.
pub struct PrefetchingStream {
    context: Arc<S3Context>,
    bucket: String,
    pending: VecDeque<ObjectInfo>,
    started: VecDeque<(String, mpsc::Receiver<Chunk>)>,
}

impl PrefetchingStream {
    /// A stream over `objects` (already filtered and ordered).
    pub fn new(context: Arc<S3Context>, bucket: String, objects: Vec<ObjectInfo>) -> Self {
        Self {
            context,
            bucket,
            pending: objects.into(),
            started: VecDeque::new(),
        }
    }

    fn top_up(&mut self) {
        let window = self.context.options.prefetch.max(1);
        while self.started.len() < window {
            let Some(object) = self.pending.pop_front() else {
                break;
            };
            let options = &self.context.options;
            let (sender, receiver) = mpsc::channel(options.buffer_chunks.max(1));
            self.context.spawn(download(
                self.context.client.clone(),
                options.retry.clone(),
                options.stall_timeout,
                self.bucket.clone(),
                object.key.clone(),
                sender,
            ));
            self.started
                .push_back((format!("s3://{}/{}", self.bucket, object.key), receiver));
        }
    }
}

impl ObjectStream for PrefetchingStream {
    fn next_object(&mut self) -> Result<Option<InputObject>, StorageError> {
        self.top_up();
        let Some((name, receiver)) = self.started.pop_front() else {
            return Ok(None);
        };
        // Start the next download now so it overlaps with reading this one.
        self.top_up();
        Ok(Some(InputObject {
            name: name.clone(),
            reader: Box::new(ChunkReader {
                receiver,
                current: Bytes::new(),
                finished: false,
                uri: name,
                _context: Arc::clone(&self.context),
            }),
            concatenated: false,
            local_path: None,
        }))
    }
}

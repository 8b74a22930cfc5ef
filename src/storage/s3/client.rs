//! Building the S3 client: the aws-config default chain (environment, profile, web identity,
//! container and instance credentials), the region (falling back to us-east-1, logged), the
//! endpoint override (`AWS_ENDPOINT_URL_S3` / `AWS_ENDPOINT_URL` / profile `endpoint_url`, read
//! by aws-config itself) and path-style addressing whenever an endpoint is overridden.
//!
//! Invariants: the tokio runtime lives inside [`S3Context`] and is shut down without blocking
//! when the context drops; the SDK's own retries are off (see `retry.rs`); credentials are never
//! formatted into logs or errors.

use super::retry::RetryPolicy;
use crate::sagemaker::S3Settings;
use crate::storage::StorageError;
use aws_config::meta::region::RegionProviderChain;
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region};
use aws_sdk_s3::Client;
use std::future::Future;
use std::time::Duration;

/// Region used when none is configured anywhere (matches the AWS CLI's classic default).
const FALLBACK_REGION: &str = "us-east-1";

/// How to reach S3 and how hard to try. The job builds it from the `TXCAT_S3_*` switches the
/// `sagemaker` module reads; tests pass their own endpoint and a short retry policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Options {
    /// Endpoint override (`http://127.0.0.1:9000`); `None` leaves it to aws-config
    /// (`AWS_ENDPOINT_URL_S3`, `AWS_ENDPOINT_URL`, profile `endpoint_url`).
    pub endpoint_url: Option<String>,
    /// Path-style addressing (`http://host/bucket/key`); `None` = on exactly when an endpoint
    /// override is in effect (S3-compatible stores and local servers rarely do virtual hosts).
    pub force_path_style: Option<bool>,
    /// Retry policy for every request and for resuming interrupted downloads.
    pub retry: RetryPolicy,
    /// Objects downloaded ahead of (and including) the one being read.
    pub prefetch: usize,
    /// Body chunks buffered per object between the download task and the reader.
    pub buffer_chunks: usize,
    /// A body that delivers no byte for this long is abandoned and resumed with a Range request.
    pub stall_timeout: Duration,
    /// Multipart part size for uploads (S3 minimum 5 MiB); smaller files go in one PUT.
    pub part_size: usize,
    /// Parts uploaded concurrently.
    pub upload_concurrency: usize,
}

impl Default for S3Options {
    fn default() -> Self {
        Self {
            endpoint_url: None,
            force_path_style: None,
            retry: RetryPolicy::default(),
            prefetch: 4,
            buffer_chunks: 32,
            stall_timeout: Duration::from_secs(60),
            part_size: 16 * 1024 * 1024,
            upload_concurrency: 4,
        }
    }
}

impl S3Options {
    /// The defaults with the job's `TXCAT_S3_*` switches (read by the `sagemaker` module).
    pub fn from_settings(settings: &S3Settings) -> Self {
        let mut options = Self::default();
        if let Some(flag) = settings.force_path_style {
            options.force_path_style = Some(flag);
        }
        if let Some(attempts) = settings.max_attempts {
            options.retry.max_attempts = attempts.max(1);
        }
        if let Some(seconds) = settings.retry_seconds {
            options.retry.deadline = Duration::from_secs(seconds);
        }
        options
    }
}

/// A client plus the runtime that drives it, shared by a channel's stream and its readers.
pub struct S3Context {
    runtime: Option<tokio::runtime::Runtime>,
    /// Cheap to clone; download tasks hold clones, never the context (so the runtime is not
    /// kept alive by its own tasks).
    pub client: Client,
    /// The options the client was built with.
    pub options: S3Options,
}

impl S3Context {
    /// Starts a small runtime and loads the AWS configuration.
    pub fn new(options: S3Options) -> Result<Self, StorageError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("txcat-s3")
            .enable_all()
            .build()
            .map_err(|err| {
                StorageError::Other(format!("cannot start the S3 I/O runtime: {err}"))
            })?;
        let client = runtime.block_on(build_client(&options));
        Ok(Self {
            runtime: Some(runtime),
            client,
            options,
        })
    }

    fn runtime(&self) -> &tokio::runtime::Runtime {
        // The runtime is only taken in Drop.
        self.runtime
            .as_ref()
            .expect("S3 runtime present until drop")
    }

    /// Runs `future` to completion on the context's runtime (from synchronous code only).
    pub fn block_on<F: Future>(&self, future: F) -> F::Output {
        self.runtime().block_on(future)
    }

    /// Starts `future` in the background.
    pub fn spawn<F>(&self, future: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.runtime().spawn(future);
    }
}

impl Drop for S3Context {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            // Unfinished prefetches are abandoned, not awaited.
            runtime.shutdown_background();
        }
    }
}

async fn build_client(options: &S3Options) -> Client {
    let region = match RegionProviderChain::default_provider().region().await {
        Some(region) => region,
        None => {
            tracing::warn!(
                "no AWS region configured (AWS_REGION, AWS_DEFAULT_REGION, profile, instance metadata); using {FALLBACK_REGION}"
            );
            Region::new(FALLBACK_REGION)
        }
    };
    let timeouts = TimeoutConfig::builder()
        .connect_timeout(Duration::from_secs(10))
        // Covers a whole non-streaming call, and a GetObject until its headers arrive.
        .operation_attempt_timeout(Duration::from_secs(300))
        .build();
    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        .region(region.clone())
        .retry_config(RetryConfig::disabled())
        .timeout_config(timeouts);
    if let Some(endpoint) = &options.endpoint_url {
        loader = loader.endpoint_url(endpoint);
    }
    let sdk_config = loader.load().await;
    let endpoint_overridden = sdk_config.endpoint_url().is_some() || env_endpoint_set();
    let path_style = options.force_path_style.unwrap_or(endpoint_overridden);
    tracing::info!(
        region = %region,
        endpoint = sdk_config.endpoint_url().unwrap_or("default"),
        path_style,
        "S3 client ready"
    );
    let config = aws_sdk_s3::config::Builder::from(&sdk_config)
        .force_path_style(path_style)
        .build();
    Client::from_conf(config)
}

/// True when aws-config will apply an endpoint from the environment (the service-specific one
/// does not show in `SdkConfig::endpoint_url`).
fn env_endpoint_set() -> bool {
    let ignored = std::env::var("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS")
        .is_ok_and(|v| v.eq_ignore_ascii_case("true"));
    let set = |name: &str| std::env::var(name).is_ok_and(|v| !v.trim().is_empty());
    !ignored && (set("AWS_ENDPOINT_URL_S3") || set("AWS_ENDPOINT_URL"))
}

//! Retrying S3 calls: which failures are transient (throttling, 5xx, timeouts, dropped or
//! truncated connections) and how long to keep trying (exponential backoff with jitter, a cap
//! on attempts and on total time since the last progress). Permanent failures become the
//! one-line [`StorageError`]s users see (NoSuchBucket, NoSuchKey, AccessDenied, ...).
//!
//! The SDK's own retries are switched off (see `client.rs`) so that this module alone decides,
//! and so that a download interrupted mid-body resumes from the byte it reached.

use crate::storage::StorageError;
use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use std::future::Future;
use std::time::{Duration, Instant};

/// How hard to retry transient failures.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts per request without progress (the first try included).
    pub max_attempts: u32,
    /// Backoff before the first retry; doubles each retry.
    pub initial_backoff: Duration,
    /// Upper bound for one backoff.
    pub max_backoff: Duration,
    /// Give up when this much time has passed since the last progress.
    pub deadline: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 10,
            initial_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(15),
            deadline: Duration::from_secs(180),
        }
    }
}

/// What went wrong with one attempt.
#[derive(Debug)]
pub enum Failure {
    /// Worth another try; the text is kept for the final message.
    Transient(String),
    /// Retrying cannot help.
    Permanent(StorageError),
}

/// The S3 operation a failure came from: picks the IAM action named in AccessDenied messages.
#[derive(Debug, Clone, Copy)]
pub enum Operation {
    List,
    Get,
    Put,
}

impl Operation {
    fn action(self) -> &'static str {
        match self {
            Operation::List => "ListBucket",
            Operation::Get => "GetObject",
            Operation::Put => "PutObject",
        }
    }
}

/// Attempt bookkeeping for one logical request (one listing page, one object download).
pub struct RetryState<'a> {
    policy: &'a RetryPolicy,
    attempts: u32,
    since_progress: Instant,
}

impl<'a> RetryState<'a> {
    pub fn new(policy: &'a RetryPolicy) -> Self {
        Self {
            policy,
            attempts: 0,
            since_progress: Instant::now(),
        }
    }

    /// Data arrived: a later failure starts a fresh series of attempts.
    pub fn progressed(&mut self) {
        self.attempts = 0;
        self.since_progress = Instant::now();
    }

    /// Sleeps before the next attempt, or returns the final error once attempts or time ran out.
    pub async fn back_off(&mut self, uri: &str, reason: &str) -> Result<(), StorageError> {
        self.attempts += 1;
        let exponent = self.attempts.saturating_sub(1).min(16);
        let base = self
            .policy
            .initial_backoff
            .saturating_mul(1u32 << exponent)
            .min(self.policy.max_backoff);
        // "Equal jitter": half fixed, half random, so parallel downloads do not retry in step.
        let delay = base / 2 + base.mul_f64(rand::random::<f64>() / 2.0);
        let elapsed = self.since_progress.elapsed();
        if self.attempts >= self.policy.max_attempts || elapsed + delay > self.policy.deadline {
            return Err(StorageError::S3 {
                uri: uri.to_string(),
                reason: format!(
                    "gave up after {} attempts in {:.1}s of transient failures; last error: {reason}",
                    self.attempts,
                    elapsed.as_secs_f64()
                ),
            });
        }
        tracing::debug!(
            uri,
            attempt = self.attempts,
            ?delay,
            reason,
            "retrying S3 request"
        );
        tokio::time::sleep(delay).await;
        Ok(())
    }
}

/// Runs `attempt` until it succeeds, fails permanently, or the policy gives up.
pub async fn with_retry<T, F, Fut>(
    policy: &RetryPolicy,
    uri: &str,
    mut attempt: F,
) -> Result<T, StorageError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, Failure>>,
{
    let mut state = RetryState::new(policy);
    loop {
        match attempt().await {
            Ok(value) => return Ok(value),
            Err(Failure::Permanent(err)) => return Err(err),
            Err(Failure::Transient(reason)) => state.back_off(uri, &reason).await?,
        }
    }
}

/// `err` and its sources on one line (`a: b: c`), without the raw-response dumps that the
/// SDK's Debug output carries.
pub fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(inner) = source {
        let piece = inner.to_string();
        if !text.contains(&piece) {
            text.push_str(": ");
            text.push_str(&piece);
        }
        source = inner.source();
    }
    text.replace('\n', " ")
}

const TRANSIENT_CODES: &[&str] = &[
    "SlowDown",
    "Throttling",
    "ThrottlingException",
    "RequestTimeout",
    "RequestTimeTooSkewed",
    "InternalError",
    "ServiceUnavailable",
    "OperationAborted",
];

/// Sorts an SDK error into transient or permanent, naming `uri` in permanent ones.
pub fn classify<E>(err: SdkError<E, HttpResponse>, uri: &str, operation: Operation) -> Failure
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    match &err {
        SdkError::TimeoutError(_) => Failure::Transient("request timed out".to_string()),
        SdkError::ResponseError(_) => {
            Failure::Transient(format!("broken response: {}", error_chain(&err)))
        }
        // Everything but a user (configuration) error: refused, reset, or closed connections
        // ("connection closed before message completed" is classified as "other").
        SdkError::DispatchFailure(dispatch) if !dispatch.is_user() => {
            Failure::Transient(format!("connection failed: {}", error_chain(&err)))
        }
        SdkError::ServiceError(service) => {
            let status = service.raw().status().as_u16();
            let code = err.code().unwrap_or("").to_string();
            let message = err.message().unwrap_or("").to_string();
            if status >= 500
                || status == 429
                || status == 408
                || TRANSIENT_CODES.contains(&code.as_str())
            {
                return Failure::Transient(
                    format!("HTTP {status} {code} {message}").trim().to_string(),
                );
            }
            let region = service
                .raw()
                .headers()
                .get("x-amz-bucket-region")
                .map(str::to_string);
            Failure::Permanent(permanent_error(
                uri, operation, status, &code, &message, region,
            ))
        }
        _ => Failure::Permanent(StorageError::S3 {
            uri: uri.to_string(),
            reason: error_chain(&err),
        }),
    }
}

fn permanent_error(
    uri: &str,
    operation: Operation,
    status: u16,
    code: &str,
    message: &str,
    bucket_region: Option<String>,
) -> StorageError {
    let uri = uri.to_string();
    match (code, status) {
        ("NoSuchBucket", _) => StorageError::NoSuchBucket {
            bucket: bucket_of(&uri),
            uri,
        },
        ("NoSuchKey", _) | ("NotFound", _) | ("", 404) => StorageError::NoSuchKey { uri },
        ("AccessDenied", _) | ("AllAccessDisabled", _) | ("", 403) => StorageError::AccessDenied {
            uri,
            operation: format!("{operation:?}"),
            action: operation.action().to_string(),
        },
        (_, 301) | ("PermanentRedirect", _) | ("AuthorizationHeaderMalformed", _) => {
            let hint = match bucket_region {
                Some(region) => format!("the bucket lives in region {region}; set AWS_REGION={region}"),
                None => "the bucket lives in another region; set AWS_REGION to it".to_string(),
            };
            StorageError::S3 {
                uri,
                reason: format!("{code} (HTTP {status}): {hint}"),
            }
        }
        ("InvalidAccessKeyId", _) | ("SignatureDoesNotMatch", _) | ("ExpiredToken", _) => StorageError::S3 {
            uri,
            reason: format!(
                "{code}: the AWS credentials were rejected ({message}); check the credential chain (AWS_PROFILE, AWS_ACCESS_KEY_ID, role)"
            ),
        },
        _ => StorageError::S3 {
            uri,
            reason: format!("{code} (HTTP {status}): {message}").trim().to_string(),
        },
    }
}

fn bucket_of(uri: &str) -> String {
    uri.trim_start_matches("s3://")
        .split('/')
        .next()
        .unwrap_or("")
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fast_policy(max_attempts: u32, deadline_ms: u64) -> RetryPolicy {
        RetryPolicy {
            max_attempts,
            initial_backoff: Duration::from_millis(1),
            max_backoff: Duration::from_millis(4),
            deadline: Duration::from_millis(deadline_ms),
        }
    }

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap()
    }

    #[test]
    fn transient_failures_are_retried_until_success() {
        let policy = fast_policy(5, 10_000);
        let mut calls = 0;
        let result = runtime().block_on(with_retry(&policy, "s3://b/k", || {
            calls += 1;
            let outcome = if calls < 4 {
                Err(Failure::Transient("HTTP 503".into()))
            } else {
                Ok(calls)
            };
            async move { outcome }
        }));
        assert_eq!(result.unwrap(), 4);
    }

    #[test]
    fn gives_up_after_max_attempts_naming_the_uri_and_last_error() {
        let policy = fast_policy(3, 10_000);
        let mut calls = 0;
        let err = runtime()
            .block_on(with_retry(&policy, "s3://b/k", || {
                calls += 1;
                async { Err::<(), _>(Failure::Transient("HTTP 503 SlowDown".into())) }
            }))
            .unwrap_err()
            .to_string();
        assert_eq!(calls, 3);
        assert!(
            err.starts_with("s3://b/k: gave up after 3 attempts"),
            "{err}"
        );
        assert!(err.contains("HTTP 503 SlowDown"), "{err}");
    }

    #[test]
    fn permanent_failures_are_not_retried() {
        let policy = fast_policy(5, 10_000);
        let mut calls = 0;
        let err = runtime()
            .block_on(with_retry(&policy, "s3://b/k", || {
                calls += 1;
                async {
                    Err::<(), _>(Failure::Permanent(StorageError::NoSuchKey {
                        uri: "s3://b/k".into(),
                    }))
                }
            }))
            .unwrap_err();
        assert_eq!(calls, 1);
        assert!(matches!(err, StorageError::NoSuchKey { .. }));
    }

    #[test]
    fn permanent_codes_map_to_clear_errors() {
        let no_bucket =
            permanent_error("s3://nob/x", Operation::List, 404, "NoSuchBucket", "", None);
        assert!(no_bucket
            .to_string()
            .contains("bucket 'nob' does not exist"));
        let denied = permanent_error("s3://b/x", Operation::Get, 403, "AccessDenied", "", None);
        assert!(denied.to_string().contains("s3:GetObject"), "{denied}");
        let moved = permanent_error(
            "s3://b/x",
            Operation::List,
            301,
            "PermanentRedirect",
            "",
            Some("eu-west-1".into()),
        );
        assert!(
            moved.to_string().contains("AWS_REGION=eu-west-1"),
            "{moved}"
        );
    }
}

//! The axum routes of the SageMaker hosting contract: `GET /ping`, `POST /invocations`,
//! `GET /execution-parameters`.
//!
//! Invariants: handlers never touch the model (they parse, queue on the [`Batcher`] and
//! render), so `/ping` answers at once however busy the model threads are; `/ping` is 200 only
//! after every model thread has loaded the model and run a warm-up forward; a body over the
//! payload limit is refused from its `Content-Length` before any of it is read, and a body
//! without one is read no further than the limit.

use std::sync::{Arc, OnceLock};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::header::{ACCEPT, CONTENT_LENGTH, CONTENT_TYPE};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use http_body_util::BodyExt;

use crate::inference::Scored;
use crate::sagemaker::ServeSettings;

use super::batcher::Batcher;
use super::errors::RequestError;
use super::formats::{self, InputFormat, OutputFormat};

/// SageMaker's header for caller-defined attributes (passed through InvokeEndpoint).
const CUSTOM_ATTRIBUTES: &str = "x-amzn-sagemaker-custom-attributes";

/// What the handlers share.
#[derive(Clone)]
pub struct AppState {
    inner: Arc<Shared>,
}

struct Shared {
    /// Set once every model thread is ready; the label names.
    labels: OnceLock<Vec<String>>,
    batcher: Batcher,
    batch_mode: bool,
    max_payload_bytes: u64,
    default_output: OutputFormat,
    execution_parameters: serde_json::Value,
}

impl AppState {
    /// State for a server whose model is still loading.
    pub fn new(batcher: Batcher, settings: &ServeSettings, default_output: OutputFormat) -> Self {
        Self {
            inner: Arc::new(Shared {
                labels: OnceLock::new(),
                batcher,
                batch_mode: settings.batch_mode,
                max_payload_bytes: settings.max_payload_bytes,
                default_output,
                execution_parameters: execution_parameters(settings),
            }),
        }
    }

    /// Marks the model loaded: `/ping` turns 200 and `/invocations` opens.
    pub fn set_ready(&self, labels: Vec<String>) {
        let _ = self.inner.labels.set(labels);
    }

    fn labels(&self) -> Option<&[String]> {
        self.inner.labels.get().map(Vec::as_slice)
    }
}

/// `/execution-parameters` for batch transform: as many concurrent transforms as cores, capped
/// so that MaxConcurrentTransforms x MaxPayloadInMB stays within SageMaker's 100 MB.
fn execution_parameters(settings: &ServeSettings) -> serde_json::Value {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as u64;
    let concurrent = match settings.max_payload_mb {
        0 => cores,
        mb => cores.min((100 / mb).max(1)),
    };
    serde_json::json!({
        "MaxConcurrentTransforms": concurrent,
        "BatchStrategy": "MULTI_RECORD",
        "MaxPayloadInMB": settings.max_payload_mb,
    })
}

/// The router (tests can drive it without a socket).
pub fn app(state: AppState) -> Router {
    Router::new()
        .route("/ping", get(ping))
        .route("/invocations", post(invocations))
        .route("/execution-parameters", get(execution))
        .fallback(not_found)
        .layer(axum::middleware::from_fn(log_request))
        .with_state(state)
}

async fn ping(State(state): State<AppState>) -> Response {
    if state.labels().is_some() {
        StatusCode::OK.into_response()
    } else {
        RequestError::Unavailable("the model is loading".into()).into_response()
    }
}

async fn execution(State(state): State<AppState>) -> Response {
    (
        [(CONTENT_TYPE, "application/json")],
        state.inner.execution_parameters.to_string(),
    )
        .into_response()
}

async fn not_found(request: Request) -> Response {
    let message = format!(
        "no route {} {}; the server answers GET /ping, POST /invocations, GET /execution-parameters",
        request.method(),
        request.uri().path()
    );
    let body = serde_json::json!({"code": 404, "type": "Not Found", "message": message});
    (
        StatusCode::NOT_FOUND,
        [(CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

/// One log line per request (debug), and per failure (info for 4xx, error for 5xx). A 503 on
/// `/ping` is the health check doing its job (loading or draining), not a failure: debug.
async fn log_request(request: Request, next: Next) -> Response {
    let method = request.method().clone();
    let path = request.uri().path().to_string();
    let started = std::time::Instant::now();
    let response = next.run(request).await;
    let status = response.status().as_u16();
    let ms = started.elapsed().as_secs_f64() * 1e3;
    if status == 503 && path == "/ping" {
        tracing::debug!(%method, %path, status, ms, "not ready");
    } else if status >= 500 {
        tracing::error!(%method, %path, status, ms, "request failed");
    } else if status >= 400 {
        tracing::info!(%method, %path, status, ms, "request refused");
    } else {
        tracing::debug!(%method, %path, status, ms, "request");
    }
    response
}

async fn invocations(State(state): State<AppState>, headers: HeaderMap, body: Body) -> Response {
    match invoke(&state, &headers, body).await {
        Ok(response) => response,
        Err(e) => {
            // A 413 leaves the rest of the body unread, so the connection cannot be reused:
            // say so, and the client opens a new one instead of failing on this one.
            let close = matches!(e, RequestError::PayloadTooLarge { .. });
            let mut response = e.into_response();
            if close {
                response.headers_mut().insert(
                    axum::http::header::CONNECTION,
                    axum::http::HeaderValue::from_static("close"),
                );
            }
            response
        }
    }
}

fn header(headers: &HeaderMap, name: impl axum::http::header::AsHeaderName) -> Option<&str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

async fn invoke(
    state: &AppState,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response, RequestError> {
    let limit = state.inner.max_payload_bytes;
    let declared = header(headers, CONTENT_LENGTH).and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(RequestError::PayloadTooLarge { limit });
    }
    // The body is read (at most `limit` bytes) before the headers are judged: answering while
    // it is unread makes hyper close the connection after the response, and a keep-alive
    // client (SageMaker's front end, any pooled HTTP client) that reuses it then fails.
    let bytes = read_body(body, limit).await?;
    let labels = state.labels().ok_or_else(|| {
        RequestError::Unavailable(
            "the model is still loading; wait until GET /ping answers 200".into(),
        )
    })?;
    let input = InputFormat::from_content_type(header(headers, CONTENT_TYPE))?;
    let output = OutputFormat::negotiate(header(headers, ACCEPT), state.inner.default_output)?;
    let batch = state.inner.batch_mode;
    let parsed = formats::parse(input, &bytes, batch)?;
    drop(bytes);
    let top_k = match parsed.top_k {
        Some(k) => Some(k),
        None => match header(headers, CUSTOM_ATTRIBUTES) {
            Some(value) => formats::custom_attributes_top_k(value)?,
            None => None,
        },
    };
    if parsed.records.is_empty() || (!batch && parsed.texts() == 0) {
        return Err(RequestError::BadRequest(
            "the request holds no text to classify".into(),
        ));
    }
    // Like transformers' pipeline, a top_k above the label count returns every label.
    let k = top_k.unwrap_or(1).min(labels.len());
    // Blank records never reach the model; their answers are put back in input order.
    let blank: Vec<bool> = parsed.records.iter().map(Option::is_none).collect();
    let texts: Vec<String> = parsed.records.into_iter().flatten().collect();
    let mut predictions = if texts.is_empty() {
        Vec::new()
    } else {
        state.inner.batcher.predict(texts, k).await?
    }
    .into_iter();
    let results: Vec<Option<Vec<Scored>>> = blank
        .iter()
        .map(|&b| if b { None } else { predictions.next() })
        .collect();
    let body = formats::render(output, batch, &results, labels, top_k.is_some());
    Ok(([(CONTENT_TYPE, output.mime())], body).into_response())
}

/// The body, refused with 413 as soon as it passes `limit` bytes.
async fn read_body(mut body: Body, limit: u64) -> Result<Vec<u8>, RequestError> {
    let mut bytes = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = frame
            .map_err(|e| RequestError::BadRequest(format!("the body could not be read: {e}")))?;
        if let Ok(data) = frame.into_data() {
            if (bytes.len() + data.len()) as u64 > limit {
                return Err(RequestError::PayloadTooLarge { limit });
            }
            bytes.extend_from_slice(&data);
        }
    }
    Ok(bytes)
}

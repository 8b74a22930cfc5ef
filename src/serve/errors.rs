//! Errors of `txcat serve`: [`ServeError`] ends start-up (one line, non-zero exit);
//! [`RequestError`] is one request's answer, a JSON body with its status code. Client faults
//! (4xx) say what to change; internal faults (5xx) keep details in the log.

use std::net::SocketAddr;
use std::path::PathBuf;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use crate::inference::InferenceError;
use crate::sagemaker::ServeSettingsError;

/// Why the server could not start (or stopped abnormally).
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Settings(#[from] ServeSettingsError),
    #[error("environment variable SAGEMAKER_DEFAULT_INVOCATIONS_ACCEPT={0:?}: expected one of {types}", types = super::formats::OUTPUT_TYPES)]
    DefaultAccept(String),
    #[error("cannot serve the model in {dir}: {source}")]
    Model {
        dir: PathBuf,
        #[source]
        source: InferenceError,
    },
    #[error(
        "cannot listen on {addr}: {source}; choose another port (--port or SAGEMAKER_BIND_TO_PORT)"
    )]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("the HTTP server failed: {0}")]
    Io(#[from] std::io::Error),
    #[error("a model thread ended before it reported: {0}")]
    Worker(String),
}

impl ServeError {
    /// True when the model directory or the settings are at fault (exit status 2).
    pub fn is_bad_input(&self) -> bool {
        match self {
            ServeError::Settings(_) | ServeError::DefaultAccept(_) => true,
            ServeError::Model { source, .. } => source.is_bad_input(),
            ServeError::Bind { .. } | ServeError::Io(_) | ServeError::Worker(_) => false,
        }
    }
}

/// One request's failure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RequestError {
    /// Malformed body, wrong type, nothing to classify (400).
    BadRequest(String),
    /// Body larger than the payload limit (413).
    PayloadTooLarge { limit: u64 },
    /// Content-Type not read (415).
    UnsupportedMediaType(String),
    /// Accept names nothing txcat writes (406).
    NotAcceptable(String),
    /// The model failed on this batch (500).
    Internal(String),
    /// Not ready yet, or shutting down (503).
    Unavailable(String),
}

impl RequestError {
    /// The HTTP status code.
    pub fn status(&self) -> u16 {
        self.status_code().as_u16()
    }

    fn status_code(&self) -> StatusCode {
        match self {
            RequestError::BadRequest(_) => StatusCode::BAD_REQUEST,
            RequestError::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            RequestError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            RequestError::NotAcceptable(_) => StatusCode::NOT_ACCEPTABLE,
            RequestError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            RequestError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// What the client is told.
    pub fn message(&self) -> String {
        match self {
            RequestError::BadRequest(m)
            | RequestError::UnsupportedMediaType(m)
            | RequestError::NotAcceptable(m)
            | RequestError::Internal(m)
            | RequestError::Unavailable(m) => m.clone(),
            RequestError::PayloadTooLarge { limit } => format!(
                "the body is larger than {limit} bytes (SAGEMAKER_MAX_PAYLOAD_IN_MB); send fewer texts per request"
            ),
        }
    }
}

impl IntoResponse for RequestError {
    fn into_response(self) -> Response {
        let status = self.status_code();
        let body = serde_json::json!({
            "code": status.as_u16(),
            "type": status.canonical_reason().unwrap_or("Error"),
            "message": self.message(),
        });
        (
            status,
            [(axum::http::header::CONTENT_TYPE, "application/json")],
            body.to_string(),
        )
            .into_response()
    }
}

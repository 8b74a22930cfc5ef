//! The SageMaker hosting contract's environment (`serve`): port, batch-transform mode, payload
//! limit, workers; plus txcat's own micro-batching knobs.
//!
//! Invariant: [`ServeSettings::from_env`] is the one function here that reads the process
//! environment; [`ServeSettings::from_vars`] is pure, so every rule is unit-tested.
//!
//! | Variable | Default | Meaning |
//! |---|---|---|
//! | `SAGEMAKER_BIND_TO_PORT` | 8080 | port to listen on (set by SageMaker for inference pipelines) |
//! | `SAGEMAKER_BATCH` | false | batch transform: every response has one line per input line |
//! | `SAGEMAKER_MAX_PAYLOAD_IN_MB` | 6 | request bodies above this many MiB get 413 (0: the 100 MiB batch maximum) |
//! | `SAGEMAKER_MODEL_SERVER_WORKERS` | 1 | model threads, each with its own copy of the model and cores / workers libtorch threads |
//! | `SAGEMAKER_DEFAULT_INVOCATIONS_ACCEPT` | application/json | response type when a request has no `Accept` |
//! | `TXCAT_SERVE_MAX_BATCH` | 64 | most texts one forward takes (requests queued together are merged up to this) |
//! | `TXCAT_SERVE_MAX_WAIT_MS` | 0 | how long a model thread waits for more requests before a forward that is not full |
//! | `TXCAT_SERVE_PRECISION` | fp32 | `bf16`: linear layers kept and computed in bfloat16 (CPUs with bf16 instructions, GPUs); `int8`: the encoder's linear layers in int8, activations quantised per request (CPU); scores move by about 1e-2 either way |

use std::time::Duration;

/// SageMaker's port variable (inference pipelines, multi-container endpoints).
pub const ENV_BIND_TO_PORT: &str = "SAGEMAKER_BIND_TO_PORT";
/// `true` in batch-transform containers.
pub const ENV_BATCH: &str = "SAGEMAKER_BATCH";
/// Request body limit in MiB (batch transform's `MaxPayloadInMB`).
pub const ENV_MAX_PAYLOAD_IN_MB: &str = "SAGEMAKER_MAX_PAYLOAD_IN_MB";
/// Model threads (the inference toolkits' worker count).
pub const ENV_MODEL_SERVER_WORKERS: &str = "SAGEMAKER_MODEL_SERVER_WORKERS";
/// Response type when a request has no `Accept` header.
pub const ENV_DEFAULT_ACCEPT: &str = "SAGEMAKER_DEFAULT_INVOCATIONS_ACCEPT";
/// txcat's own: most texts per forward.
pub const ENV_MAX_BATCH: &str = "TXCAT_SERVE_MAX_BATCH";
/// txcat's own: milliseconds a model thread waits to fill a forward.
pub const ENV_MAX_WAIT_MS: &str = "TXCAT_SERVE_MAX_WAIT_MS";

/// txcat's own: `fp32`, `bf16` or `int8` weights for the linear layers.
pub const ENV_PRECISION: &str = "TXCAT_SERVE_PRECISION";

/// The dtype the served model's linear layers are kept and computed in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServePrecision {
    /// As trained: the scores `txcat predict` gives.
    Fp32,
    /// bfloat16: half the bytes per forward; scores differ from predict's in the second digit.
    Bf16,
    /// Dynamic int8 quantisation of the encoder's linear layers (CPU): a quarter of the weight
    /// bytes and int32 products; scores differ from predict's in the second digit.
    Int8,
}

/// SageMaker's default port for `/ping` and `/invocations`.
pub const DEFAULT_PORT: u16 = 8080;
/// The real-time request limit (InvokeEndpoint's 6 MB body) and batch's default MaxPayloadInMB.
pub const DEFAULT_MAX_PAYLOAD_MB: u64 = 6;
/// Batch transform's largest MaxPayloadInMB; also the limit when it is 0 (chunked, unbounded).
pub const MAX_PAYLOAD_MB: u64 = 100;
/// Same as `txcat predict`'s default `--batch-size`.
pub const DEFAULT_MAX_BATCH: usize = 64;
/// No added latency: batches still form from the requests that queue while a forward runs.
pub const DEFAULT_MAX_WAIT: Duration = Duration::ZERO;
/// The inference toolkits' default Accept.
pub const DEFAULT_ACCEPT: &str = "application/json";

/// A hosting variable with a value txcat cannot use.
#[derive(Debug, thiserror::Error)]
#[error("environment variable {name}={value:?}: {expected}")]
pub struct ServeSettingsError {
    pub name: &'static str,
    pub value: String,
    pub expected: String,
}

/// How `txcat serve` runs, from the environment (the CLI may override the port).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServeSettings {
    pub port: u16,
    /// Batch transform (`SAGEMAKER_BATCH=true`).
    pub batch_mode: bool,
    /// Largest request body accepted, in bytes.
    pub max_payload_bytes: u64,
    /// `MaxPayloadInMB` as `/execution-parameters` reports it.
    pub max_payload_mb: u64,
    /// Model threads.
    pub workers: usize,
    /// Most texts per forward.
    pub max_batch: usize,
    /// How long a model thread waits for more requests before a forward that is not full.
    pub max_wait: Duration,
    /// Response type for requests without `Accept`.
    pub default_accept: String,
    /// `TXCAT_SERVE_PRECISION`.
    pub precision: ServePrecision,
}

impl Default for ServeSettings {
    fn default() -> Self {
        Self {
            port: DEFAULT_PORT,
            batch_mode: false,
            max_payload_bytes: DEFAULT_MAX_PAYLOAD_MB << 20,
            max_payload_mb: DEFAULT_MAX_PAYLOAD_MB,
            workers: 1,
            max_batch: DEFAULT_MAX_BATCH,
            max_wait: DEFAULT_MAX_WAIT,
            default_accept: DEFAULT_ACCEPT.into(),
            precision: ServePrecision::Fp32,
        }
    }
}

impl ServeSettings {
    /// The settings from the process environment.
    pub fn from_env() -> Result<Self, ServeSettingsError> {
        Self::from_vars(|name| std::env::var(name).ok())
    }

    /// The settings from `var` (unset and empty variables keep their defaults).
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Result<Self, ServeSettingsError> {
        let get = |name: &str| {
            var(name)
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
        };
        let mut s = Self::default();
        if let Some(v) = get(ENV_BIND_TO_PORT) {
            s.port = parse(ENV_BIND_TO_PORT, &v, "a port number 1-65535", |p: &u16| {
                *p > 0
            })?;
        }
        if let Some(v) = get(ENV_BATCH) {
            s.batch_mode = match v.to_ascii_lowercase().as_str() {
                "true" | "1" | "yes" => true,
                "false" | "0" | "no" => false,
                _ => {
                    return Err(ServeSettingsError {
                        name: ENV_BATCH,
                        value: v,
                        expected: "true or false".into(),
                    })
                }
            };
        }
        if let Some(v) = get(ENV_MAX_PAYLOAD_IN_MB) {
            let mb = parse(
                ENV_MAX_PAYLOAD_IN_MB,
                &v,
                &format!("whole MiB from 0 to {MAX_PAYLOAD_MB}"),
                |mb: &u64| *mb <= MAX_PAYLOAD_MB,
            )?;
            s.max_payload_mb = mb;
            s.max_payload_bytes = (if mb == 0 { MAX_PAYLOAD_MB } else { mb }) << 20;
        }
        if let Some(v) = get(ENV_MODEL_SERVER_WORKERS) {
            s.workers = parse(
                ENV_MODEL_SERVER_WORKERS,
                &v,
                "a whole number >= 1",
                |n: &usize| *n >= 1,
            )?;
        }
        if let Some(v) = get(ENV_MAX_BATCH) {
            s.max_batch = parse(ENV_MAX_BATCH, &v, "a whole number >= 1", |n: &usize| {
                *n >= 1
            })?;
        }
        if let Some(v) = get(ENV_MAX_WAIT_MS) {
            let ms = parse(
                ENV_MAX_WAIT_MS,
                &v,
                "milliseconds from 0 to 1000",
                |ms: &u64| *ms <= 1000,
            )?;
            s.max_wait = Duration::from_millis(ms);
        }
        if let Some(v) = get(ENV_DEFAULT_ACCEPT) {
            s.default_accept = v;
        }
        if let Some(v) = get(ENV_PRECISION) {
            s.precision = match v.to_ascii_lowercase().as_str() {
                "fp32" | "float32" => ServePrecision::Fp32,
                "bf16" | "bfloat16" => ServePrecision::Bf16,
                "int8" | "qint8" => ServePrecision::Int8,
                _ => {
                    return Err(ServeSettingsError {
                        name: ENV_PRECISION,
                        value: v,
                        expected: "fp32, bf16 or int8".into(),
                    })
                }
            };
        }
        Ok(s)
    }
}

fn parse<T: std::str::FromStr>(
    name: &'static str,
    value: &str,
    expected: &str,
    ok: impl Fn(&T) -> bool,
) -> Result<T, ServeSettingsError> {
    value
        .parse::<T>()
        .ok()
        .filter(|v| ok(v))
        .ok_or_else(|| ServeSettingsError {
            name,
            value: value.to_string(),
            expected: format!("expected {expected}"),
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn settings(pairs: &[(&str, &str)]) -> Result<ServeSettings, ServeSettingsError> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        ServeSettings::from_vars(|name| map.get(name).cloned())
    }

    #[test]
    fn defaults_follow_the_hosting_contract() {
        let s = settings(&[]).unwrap();
        assert_eq!(s.port, 8080);
        assert!(!s.batch_mode);
        assert_eq!(s.max_payload_bytes, 6 * 1024 * 1024);
        assert_eq!(s.workers, 1);
        assert_eq!(s.default_accept, "application/json");
        assert_eq!(s.precision, ServePrecision::Fp32);
        // Empty values count as unset.
        assert_eq!(settings(&[(ENV_BIND_TO_PORT, " ")]).unwrap().port, 8080);
    }

    #[test]
    fn every_variable_is_read() {
        let s = settings(&[
            (ENV_BIND_TO_PORT, "9001"),
            (ENV_BATCH, "True"),
            (ENV_MAX_PAYLOAD_IN_MB, "20"),
            (ENV_MODEL_SERVER_WORKERS, "3"),
            (ENV_MAX_BATCH, "16"),
            (ENV_MAX_WAIT_MS, "5"),
            (ENV_DEFAULT_ACCEPT, "text/csv"),
            (ENV_PRECISION, "BF16"),
        ])
        .unwrap();
        assert_eq!(s.precision, ServePrecision::Bf16);
        assert_eq!(s.port, 9001);
        assert!(s.batch_mode);
        assert_eq!(s.max_payload_bytes, 20 << 20);
        assert_eq!(s.max_payload_mb, 20);
        assert_eq!(s.workers, 3);
        assert_eq!(s.max_batch, 16);
        assert_eq!(s.max_wait, Duration::from_millis(5));
        assert_eq!(s.default_accept, "text/csv");
        let chunked = settings(&[(ENV_MAX_PAYLOAD_IN_MB, "0")]).unwrap();
        assert_eq!(chunked.max_payload_bytes, MAX_PAYLOAD_MB << 20);
        assert_eq!(chunked.max_payload_mb, 0);
    }

    #[test]
    fn bad_values_name_the_variable() {
        for (name, value) in [
            (ENV_BIND_TO_PORT, "0"),
            (ENV_BIND_TO_PORT, "http"),
            (ENV_BATCH, "maybe"),
            (ENV_MAX_PAYLOAD_IN_MB, "101"),
            (ENV_MODEL_SERVER_WORKERS, "0"),
            (ENV_MAX_BATCH, "-1"),
            (ENV_MAX_WAIT_MS, "5000"),
            (ENV_PRECISION, "fp16"),
        ] {
            let e = settings(&[(name, value)]).unwrap_err();
            assert_eq!(e.name, name);
            assert!(e.to_string().contains(name), "{e}");
        }
    }
}

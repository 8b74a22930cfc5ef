//! Models named by a Hugging Face Hub id (`org/name` or `name`), fetched with the `hf-hub`
//! crate's blocking API into the Hub's cache layout (`$HF_HOME/hub/models--org--name/...`, the
//! layout Python's `huggingface_hub` uses, so a cache it filled is reused).
//!
//! Only the files txcat loads are fetched: `config.json`, `model.safetensors`, `tokenizer.json`
//! or else `vocab.txt`, plus `tokenizer_config.json` and `special_tokens_map.json` when the repo
//! has them. A repo whose weights are only pickles (`pytorch_model.bin`, ...) is refused before
//! anything is downloaded.
//!
//! Invariants: a revision whose files are all in the cache is used without any request (pin a
//! commit hash, or clear the cache, to pick up a moved branch); `HF_HUB_OFFLINE=1` never makes a
//! request; the first contact with the endpoint, retries included, gives up within
//! [`CONTACT_BUDGET`], so a job without network fails fast; a file download that receives no
//! byte for `HF_HUB_DOWNLOAD_TIMEOUT` seconds (default [`DEFAULT_STALL`], as Python's
//! `huggingface_hub`) fails instead of hanging the job; the token (`HF_TOKEN`, else the
//! `$HF_HOME/token` file) is sent as a bearer header and never logged or put in a message.

use hf_hub::api::sync::{ApiBuilder, ApiError, ApiRepo};
use hf_hub::api::Progress;
use hf_hub::{Cache, Repo, RepoType};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

/// The public Hub, when `HF_ENDPOINT` is not set.
pub const DEFAULT_ENDPOINT: &str = "https://huggingface.co";
/// How long the first request (the revision's file list), retries included, may take.
pub const CONTACT_BUDGET: Duration = Duration::from_secs(15);
/// How long a file download may go without receiving a byte, when `HF_HUB_DOWNLOAD_TIMEOUT`
/// is not set (the default of Python's `huggingface_hub`).
pub const DEFAULT_STALL: Duration = Duration::from_secs(10);
/// Attempts per request for failures a retry may cure (connection, 429, 5xx).
const ATTEMPTS: u32 = 3;

/// How to reach the Hub, from the environment (see [`HubSettings::from_env`]).
#[derive(Clone)]
pub struct HubSettings {
    /// `HF_ENDPOINT`, without a trailing `/`.
    pub endpoint: String,
    /// `HF_TOKEN`; never printed (the `Debug` impl hides it).
    pub token: Option<String>,
    /// `HF_HUB_OFFLINE=1`: the cache only.
    pub offline: bool,
    /// `HF_HOME`; the cache is its `hub` folder.
    pub home: PathBuf,
    /// `HF_HUB_DOWNLOAD_TIMEOUT`: how long a download may receive nothing before it fails.
    pub stall: Duration,
}

impl std::fmt::Debug for HubSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HubSettings")
            .field("endpoint", &self.endpoint)
            .field("token", &self.token.as_ref().map(|_| "<set>"))
            .field("offline", &self.offline)
            .field("home", &self.home)
            .field("stall", &self.stall)
            .finish()
    }
}

impl HubSettings {
    /// `HF_ENDPOINT` (default [`DEFAULT_ENDPOINT`]), `HF_TOKEN`, `HF_HUB_OFFLINE`, `HF_HOME`
    /// (default `$TMPDIR/huggingface`: container scratch, not the home directory, which a
    /// training image may not have writable) and `HF_HUB_DOWNLOAD_TIMEOUT` (seconds, default
    /// [`DEFAULT_STALL`]; a value that is not a positive number keeps the default).
    pub fn from_env() -> Self {
        let var = |key: &str| std::env::var(key).ok().filter(|v| !v.trim().is_empty());
        let endpoint = var("HF_ENDPOINT").unwrap_or_else(|| DEFAULT_ENDPOINT.to_string());
        let offline = var("HF_HUB_OFFLINE").is_some_and(|v| {
            matches!(
                v.trim().to_ascii_lowercase().as_str(),
                "1" | "true" | "yes" | "on"
            )
        });
        Self {
            endpoint: endpoint.trim_end_matches('/').to_string(),
            token: var("HF_TOKEN").map(|t| t.trim().to_string()),
            offline,
            home: var("HF_HOME")
                .map(PathBuf::from)
                .unwrap_or_else(|| std::env::temp_dir().join("huggingface")),
            stall: var("HF_HUB_DOWNLOAD_TIMEOUT")
                .and_then(|v| v.trim().parse::<f64>().ok())
                .filter(|s| s.is_finite() && *s > 0.0)
                .map_or(DEFAULT_STALL, Duration::from_secs_f64),
        }
    }

    fn cache(&self) -> Cache {
        Cache::new(self.home.join("hub"))
    }
}

/// Why a Hub model could not be had. Messages are one line naming the model and what to do.
#[derive(Debug, thiserror::Error)]
pub enum HubError {
    #[error("model `{model}` not found (looked in: {looked_in}) and the Hugging Face Hub at {endpoint} cannot be reached ({reason}); without network access (e.g. SageMaker network isolation) supply the model another way: a `model` input channel holding it, a local path or $TXCAT_MODEL_HOME/{model}, or the files baked into the image")]
    Unreachable {
        model: String,
        looked_in: String,
        endpoint: String,
        reason: String,
    },
    #[error("model `{model}` not found (looked in: {looked_in}; the Hub cache {cache} lacks revision {revision}) and HF_HUB_OFFLINE is set; unset it to fetch the model from the Hub, or supply the model another way: a `model` input channel holding it, a local path or $TXCAT_MODEL_HOME/{model}, or the files baked into the image")]
    Offline {
        model: String,
        looked_in: String,
        revision: String,
        cache: String,
    },
    #[error("model `{model}`: the Hub at {endpoint} has no such model or revision `{revision}` (HTTP 404); check model_name_or_path (org/name) and model_revision")]
    NotFound {
        model: String,
        revision: String,
        endpoint: String,
    },
    #[error("model `{model}`: the Hub at {endpoint} answered HTTP {status} without a token (a private or gated model, or no such model); set HF_TOKEN to a token that can read it, or check model_name_or_path")]
    NeedsToken {
        model: String,
        endpoint: String,
        status: u16,
    },
    #[error("model `{model}`: the Hub at {endpoint} refused the token in HF_TOKEN (HTTP {status}); use a token with read access to the model (and accept its terms if it is gated)")]
    TokenRefused {
        model: String,
        endpoint: String,
        status: u16,
    },
    #[error("model `{model}`: the Hub repo has only pickle weights ({files}), which txcat refuses to load (unpickling can run arbitrary code); pick a revision or model with model.safetensors, or convert it (`save_pretrained(dir, safe_serialization=True)`) and supply the folder")]
    PickleOnly { model: String, files: String },
    #[error("model `{model}`: the Hub repo lacks {what} (files: {files}); txcat needs config.json, model.safetensors and tokenizer.json or vocab.txt")]
    Incomplete {
        model: String,
        what: String,
        files: String,
    },
    #[error("model `{model}`: downloading {file} from {endpoint} failed: {reason}")]
    Download {
        model: String,
        file: String,
        endpoint: String,
        reason: String,
    },
}

impl HubError {
    /// True when the user's settings are at fault (exit status 2); false for a network or
    /// service failure a rerun may not repeat.
    pub fn is_bad_input(&self) -> bool {
        !matches!(
            self,
            HubError::Unreachable { .. } | HubError::Download { .. }
        )
    }
}

/// True for names that can be Hub ids: `name` or `org/name`, each part letters, digits, `-`,
/// `_` and `.`, not starting with `-` or `.` (so no path such as `./m` or `/opt/ml/x`).
pub fn is_hub_id(name: &str) -> bool {
    let parts: Vec<&str> = name.split('/').collect();
    name.len() <= 96
        && (1..=2).contains(&parts.len())
        && parts.iter().all(|p| {
            !p.is_empty()
                && !p.starts_with(['-', '.'])
                && !p.ends_with('.')
                && !p.contains("..")
                && !p.contains("--")
                && p.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        })
}

/// The files of one revision that txcat loads, in download order.
fn wanted(model: &str, files: &[String]) -> Result<Vec<&'static str>, HubError> {
    let has = |name: &str| files.iter().any(|f| f == name);
    let listing = || {
        let mut shown: Vec<&str> = files.iter().map(String::as_str).take(12).collect();
        if files.len() > shown.len() {
            shown.push("...");
        }
        crate::text::printable(&shown.join(", "))
    };
    let incomplete = |what: &str| HubError::Incomplete {
        model: model.to_string(),
        what: what.to_string(),
        files: listing(),
    };
    if !has("config.json") {
        return Err(incomplete("config.json"));
    }
    if !has("model.safetensors") {
        let pickles: Vec<&str> = files
            .iter()
            .map(String::as_str)
            .filter(|f| !f.contains('/'))
            .filter(|f| {
                [".bin", ".pt", ".pth", ".ckpt", ".pkl"]
                    .iter()
                    .any(|e| f.ends_with(e))
            })
            .collect();
        if !pickles.is_empty() && !files.iter().any(|f| f.ends_with(".safetensors")) {
            return Err(HubError::PickleOnly {
                model: model.to_string(),
                files: crate::text::printable(&pickles.join(", ")),
            });
        }
        return Err(incomplete(
            "model.safetensors (txcat reads one unsharded safetensors file)",
        ));
    }
    let mut out = vec!["config.json", "model.safetensors"];
    if has("tokenizer.json") {
        out.push("tokenizer.json");
    } else if has("vocab.txt") {
        out.push("vocab.txt");
    } else {
        return Err(incomplete("tokenizer.json or vocab.txt"));
    }
    for optional in ["tokenizer_config.json", "special_tokens_map.json"] {
        if has(optional) {
            out.push(optional);
        }
    }
    Ok(out)
}

/// True when the Hub cache holds every file txcat needs of `model` at `revision`.
pub fn is_cached(settings: &HubSettings, model: &str, revision: &str) -> bool {
    is_hub_id(model) && cached(settings, model, revision).is_some()
}

/// The cached snapshot folder of `model` at `revision` when it holds every file txcat needs.
fn cached(settings: &HubSettings, model: &str, revision: &str) -> Option<PathBuf> {
    let repo = settings.cache().repo(Repo::with_revision(
        model.to_string(),
        RepoType::Model,
        revision.to_string(),
    ));
    let config = repo.get("config.json")?;
    repo.get("model.safetensors")?;
    if repo.get("tokenizer.json").is_none() {
        repo.get("vocab.txt")?;
    }
    config.parent().map(Path::to_path_buf)
}

/// How a failed request should be reported, and whether to try again.
enum Failure {
    Retry(String),
    Final(HubError),
}

fn classify(error: ApiError, model: &str, revision: &str, settings: &HubSettings) -> Failure {
    let status = match &error {
        ApiError::RequestError(e) => match e.as_ref() {
            hub_http::Error::Status(code, _) => Some(*code),
            hub_http::Error::Transport(t) => {
                return Failure::Retry(crate::text::printable(&t.to_string()));
            }
        },
        ApiError::TooManyRetries(_) | ApiError::IoError(_) => {
            return Failure::Retry(crate::text::printable(&error.to_string()))
        }
        _ => None,
    };
    let endpoint = settings.endpoint.clone();
    let model = model.to_string();
    match status {
        Some(404) => Failure::Final(HubError::NotFound {
            model,
            revision: revision.to_string(),
            endpoint,
        }),
        Some(status @ (401 | 403)) if settings.token.is_none() => {
            Failure::Final(HubError::NeedsToken {
                model,
                endpoint,
                status,
            })
        }
        Some(status @ (401 | 403)) => Failure::Final(HubError::TokenRefused {
            model,
            endpoint,
            status,
        }),
        Some(code) if code == 429 || code >= 500 => Failure::Retry(format!("HTTP {code}")),
        Some(code) => Failure::Final(HubError::Download {
            model,
            file: "the file list".into(),
            endpoint,
            reason: format!("HTTP {code}"),
        }),
        None => Failure::Final(HubError::Download {
            model,
            file: "the file list".into(),
            endpoint,
            reason: crate::text::printable(&error.to_string()),
        }),
    }
}

/// When a request in flight is given up.
#[derive(Clone, Copy)]
enum Limit {
    /// At this instant, retries included (the first contact with the endpoint).
    Deadline(Instant),
    /// When this long passes without a byte arriving (a download).
    Stall(Duration),
}

/// When a download last made progress, shared between its thread and the one waiting on it.
struct Activity {
    start: Instant,
    last_ms: AtomicU64,
}

impl Activity {
    fn new() -> Arc<Self> {
        Arc::new(Self {
            start: Instant::now(),
            last_ms: AtomicU64::new(0),
        })
    }

    fn touch(&self) {
        let now = self.start.elapsed().as_millis() as u64;
        self.last_ms.fetch_max(now, Ordering::Relaxed);
    }

    fn idle(&self) -> Duration {
        self.start
            .elapsed()
            .saturating_sub(Duration::from_millis(self.last_ms.load(Ordering::Relaxed)))
    }
}

/// hf-hub's progress hook, used only to see bytes arrive.
struct Watch(Arc<Activity>);

impl Progress for Watch {
    fn init(&mut self, _size: usize, _filename: &str) {
        self.0.touch();
    }
    fn update(&mut self, _size: usize) {
        self.0.touch();
    }
    fn finish(&mut self) {
        self.0.touch();
    }
}

/// Runs `call` up to [`ATTEMPTS`] times with backoff while failures are transient, each attempt
/// on a helper thread so that a request that hangs (no route, dropped packets, a server that
/// stops sending) ends at `limit` (the thread is left behind; the job is failing anyway, and a
/// stalled download is not retried because its thread still holds the blob's lock).
fn with_retries<T: Send + 'static>(
    limit: Limit,
    model: &str,
    revision: &str,
    settings: &HubSettings,
    call: impl Fn(Watch) -> Result<T, ApiError> + Send + Sync + 'static,
) -> Result<T, Failure> {
    let call = Arc::new(call);
    let mut last = String::new();
    for attempt in 0..ATTEMPTS {
        if attempt > 0 {
            let wait = Duration::from_millis(500 << attempt);
            if matches!(limit, Limit::Deadline(d) if Instant::now() + wait >= d) {
                break;
            }
            tracing::warn!(model, attempt, reason = %last, "Hub request failed; retrying");
            std::thread::sleep(wait);
        }
        let (tx, rx) = mpsc::channel();
        let activity = Activity::new();
        let watch = Watch(Arc::clone(&activity));
        let call = Arc::clone(&call);
        std::thread::spawn(move || {
            let _ = tx.send(call(watch));
        });
        let answer = loop {
            let wait = match limit {
                Limit::Deadline(d) => d.saturating_duration_since(Instant::now()),
                Limit::Stall(after) => after.saturating_sub(activity.idle()),
            };
            match rx.recv_timeout(wait.min(Duration::from_millis(250))) {
                Ok(answer) => break answer,
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    return Err(Failure::Retry("the request thread died".into()))
                }
                Err(mpsc::RecvTimeoutError::Timeout) => match limit {
                    Limit::Deadline(d) if Instant::now() >= d => {
                        return Err(Failure::Retry(format!(
                            "no answer within {} s",
                            CONTACT_BUDGET.as_secs()
                        )))
                    }
                    Limit::Stall(after) if activity.idle() >= after => {
                        return Err(Failure::Retry(format!(
                            "no data for {:.0} s (the download stalled; HF_HUB_DOWNLOAD_TIMEOUT sets how long to wait)",
                            after.as_secs_f64()
                        )))
                    }
                    _ => {}
                },
            }
        };
        match answer {
            Ok(value) => return Ok(value),
            Err(error) => match classify(error, model, revision, settings) {
                Failure::Retry(reason) => last = reason,
                fin @ Failure::Final(_) => return Err(fin),
            },
        }
    }
    Err(Failure::Retry(last))
}

/// The local folder holding `model` at `revision`: the cached snapshot, or one downloaded now.
/// `looked_in` (the local places already searched) goes into the errors that suggest them.
pub fn fetch(
    model: &str,
    revision: &str,
    settings: &HubSettings,
    looked_in: &str,
) -> Result<PathBuf, HubError> {
    if let Some(dir) = cached(settings, model, revision) {
        tracing::info!(model, revision, dir = %dir.display(), "model found in the Hub cache");
        return Ok(dir);
    }
    if settings.offline {
        return Err(HubError::Offline {
            model: model.to_string(),
            looked_in: looked_in.to_string(),
            revision: revision.to_string(),
            cache: settings.cache().path().display().to_string(),
        });
    }
    let cache = settings.cache();
    let token = settings.token.clone().or_else(|| cache.token());
    let api = ApiBuilder::from_cache(cache)
        .with_endpoint(settings.endpoint.clone())
        .with_token(token)
        .with_progress(false)
        .with_user_agent("txcat", env!("CARGO_PKG_VERSION"))
        .build()
        .map_err(|e| HubError::Download {
            model: model.to_string(),
            file: "the client".into(),
            endpoint: settings.endpoint.clone(),
            reason: e.to_string(),
        })?;
    let hub_repo = Repo::with_revision(model.to_string(), RepoType::Model, revision.to_string());
    let repo = Arc::new(api.repo(hub_repo.clone()));
    tracing::info!(model, revision, endpoint = %settings.endpoint, "fetching the model from the Hugging Face Hub");
    let unreachable = |reason: String| HubError::Unreachable {
        model: model.to_string(),
        looked_in: looked_in.to_string(),
        endpoint: settings.endpoint.clone(),
        reason,
    };
    let deadline = Instant::now() + CONTACT_BUDGET;
    let info_repo = Arc::clone(&repo);
    let info = with_retries(
        Limit::Deadline(deadline),
        model,
        revision,
        settings,
        move |_| info_repo.info(),
    )
    .map_err(|failure| match failure {
        Failure::Retry(reason) => unreachable(reason),
        Failure::Final(e) => e,
    })?;
    let files: Vec<String> = info.siblings.into_iter().map(|s| s.rfilename).collect();
    let wanted = wanted(model, &files)?;
    let mut dir = None;
    for file in wanted {
        let file_repo: Arc<ApiRepo> = Arc::clone(&repo);
        let cached = settings.cache().repo(hub_repo.clone());
        let fetch = move |watch: Watch| match cached.get(file) {
            Some(path) => Ok(path),
            None => file_repo.download_with_progress(file, watch),
        };
        let path = with_retries(
            Limit::Stall(settings.stall),
            model,
            revision,
            settings,
            fetch,
        )
        .map_err(|failure| match failure {
            Failure::Final(HubError::Download {
                model,
                endpoint,
                reason,
                ..
            }) => HubError::Download {
                model,
                file: file.to_string(),
                endpoint,
                reason,
            },
            Failure::Final(e) => e,
            Failure::Retry(reason) => HubError::Download {
                model: model.to_string(),
                file: file.to_string(),
                endpoint: settings.endpoint.clone(),
                reason,
            },
        })?;
        tracing::info!(model, file, "fetched from the Hub");
        dir = path.parent().map(Path::to_path_buf);
    }
    tracing::info!(model, revision, commit = %info.sha, "model fetched from the Hub");
    dir.ok_or_else(|| unreachable("no files".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hub_ids_and_paths() {
        for id in ["distilbert-base-uncased", "org/name", "a_b/c.d-1"] {
            assert!(is_hub_id(id), "{id}");
        }
        for not in [
            "",
            "/opt/ml/m",
            "./m",
            "../m",
            "a/b/c",
            "a//b",
            "s3://b/k",
            "m.tar.gz/",
            "a b",
            ".hidden",
        ] {
            assert!(!is_hub_id(not), "{not}");
        }
    }

    #[test]
    fn wanted_files_and_refusals() {
        let names = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let got = wanted(
            "m",
            &names(&[
                "config.json",
                "model.safetensors",
                "pytorch_model.bin",
                "vocab.txt",
                "tokenizer_config.json",
                "README.md",
            ]),
        )
        .unwrap();
        assert_eq!(
            got,
            vec![
                "config.json",
                "model.safetensors",
                "vocab.txt",
                "tokenizer_config.json"
            ]
        );
        let err = wanted(
            "m",
            &names(&["config.json", "pytorch_model.bin", "vocab.txt"]),
        )
        .unwrap_err();
        assert!(
            matches!(err, HubError::PickleOnly { ref files, .. } if files == "pytorch_model.bin"),
            "{err}"
        );
        let err = wanted("m", &names(&["config.json", "model.safetensors"])).unwrap_err();
        assert!(
            err.to_string().contains("tokenizer.json or vocab.txt"),
            "{err}"
        );
    }

    #[test]
    fn the_token_is_not_in_debug_output() {
        let settings = HubSettings {
            endpoint: DEFAULT_ENDPOINT.into(),
            token: Some("hf_secret".into()),
            offline: false,
            home: PathBuf::from("/tmp/x"),
            stall: DEFAULT_STALL,
        };
        assert!(!format!("{settings:?}").contains("hf_secret"));
    }
}

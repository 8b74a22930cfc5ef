//! `txcat serve`: the SageMaker hosting contract (real-time endpoints and batch transform) for a
//! model directory `txcat train` wrote.
//!
//! - [`http`]: axum routes (`/ping`, `/invocations`, `/execution-parameters`).
//! - [`formats`]: request and response codecs (JSON, CSV, JSON Lines, plain text).
//! - [`batcher`]: the micro-batching queue in front of the model threads.
//! - [`errors`]: start-up errors and per-request JSON errors.
//!
//! Life cycle: the port opens at once (so SageMaker's health check connects) while the model
//! threads load the model and run a warm-up forward; `/ping` turns 200 when all have. A model that
//! fails to load ends the process with one error line and a non-zero status. SIGTERM or SIGINT
//! stops accepting connections, lets in-flight requests finish (at most [`DRAIN_LIMIT`]) and
//! returns `Ok`, so the process exits 0.

pub mod batcher;
pub mod errors;
pub mod formats;
pub mod http;

use std::future::IntoFuture;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::mpsc::Receiver;
use std::time::Duration;

use tokio::sync::watch;

use crate::cli::ServeArgs;
use crate::sagemaker::{Paths, ServeSettings};

pub use errors::{RequestError, ServeError};

use batcher::{BatchConfig, Ready};
use formats::OutputFormat;

/// How long in-flight requests may run after SIGTERM: SageMaker kills the container 30 s after
/// it, so a few seconds stay for the exit itself.
pub const DRAIN_LIMIT: Duration = Duration::from_secs(25);

/// Runs the server until a stop signal (see the module docs).
pub fn run(args: &ServeArgs, paths: &Paths) -> Result<(), ServeError> {
    let mut settings = ServeSettings::from_env()?;
    if let Some(port) = args.port {
        settings.port = port;
    }
    let default_output = OutputFormat::from_mime(&settings.default_accept, OutputFormat::Json)
        .ok_or_else(|| ServeError::DefaultAccept(settings.default_accept.clone()))?;
    let model_dir = args
        .model
        .clone()
        .unwrap_or_else(|| paths.model_dir.clone());
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let config = BatchConfig {
        model_dir,
        workers: settings.workers,
        threads_per_worker: (cores / settings.workers).max(1),
        max_batch: settings.max_batch,
        max_wait: settings.max_wait,
        precision: settings.precision,
        panic_text: args.test_panic_text.clone(),
    };
    // Handlers only parse, queue and render; the cores belong to libtorch.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cores.clamp(1, 4))
        .thread_name("txcat-http")
        .enable_all()
        .build()?;
    let addr = SocketAddr::new(args.host, settings.port);
    let outcome = runtime.block_on(serve(addr, config, settings, default_output));
    // Threads still blocked after a cut-short drain must not hold up the exit.
    runtime.shutdown_timeout(Duration::from_secs(1));
    outcome
}

async fn serve(
    addr: SocketAddr,
    config: BatchConfig,
    settings: ServeSettings,
    default_output: OutputFormat,
) -> Result<(), ServeError> {
    let model_dir = config.model_dir.clone();
    let workers = config.workers;
    let (batcher, threads) = batcher::start(config)?;
    let state = http::AppState::new(batcher, &settings, default_output);
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| ServeError::Bind { addr, source })?;
    let local = listener.local_addr()?;
    tracing::info!(address = %local, model = %model_dir.display(), batch_transform = settings.batch_mode, workers, max_batch = settings.max_batch, max_wait_ms = settings.max_wait.as_millis() as u64, omp_wait_policy = %std::env::var("OMP_WAIT_POLICY").unwrap_or_default(), "listening; /ping answers 200 once the model is loaded");

    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::spawn(stop_on_signal(stop_tx.clone()));
    let mut server = tokio::spawn(
        axum::serve(listener, http::app(state.clone()))
            .with_graceful_shutdown(stopped(stop_rx.clone()))
            .into_future(),
    );

    let ready = threads.ready;
    let mut load = tokio::task::spawn_blocking(move || wait_ready(&ready, workers, &model_dir));
    tokio::select! {
        loaded = &mut load => {
            let loaded = loaded.map_err(|e| ServeError::Worker(e.to_string())).and_then(|r| r);
            match loaded {
                Ok(labels) => {
                    tracing::info!(labels = labels.len(), "model loaded and warmed up; ready");
                    state.set_ready(labels);
                }
                Err(e) => {
                    let _ = stop_tx.send(true);
                    let _ = server.await;
                    return Err(e);
                }
            }
        }
        done = &mut server => return finished(done),
    }
    drop(state);
    let outcome = tokio::select! {
        done = &mut server => finished(done),
        () = drain_deadline(stop_rx) => {
            tracing::warn!(seconds = DRAIN_LIMIT.as_secs(), "requests still running after the drain limit; exiting without them");
            return Ok(());
        }
    };
    // The router (and its queue handle) is gone: the model threads finish the queue and end.
    let handles = threads.handles;
    let _ = tokio::task::spawn_blocking(move || {
        for handle in handles {
            let _ = handle.join();
        }
    })
    .await;
    tracing::info!("stopped");
    outcome
}

/// Collects one [`Ready`] per model thread: the labels, or the first failure.
fn wait_ready(
    ready: &Receiver<Ready>,
    workers: usize,
    model_dir: &std::path::Path,
) -> Result<Vec<String>, ServeError> {
    let mut labels = None;
    for _ in 0..workers {
        match ready.recv() {
            Ok(Ok(l)) => labels = Some(l),
            Ok(Err(source)) => {
                return Err(ServeError::Model {
                    dir: PathBuf::from(model_dir),
                    source,
                })
            }
            Err(_) => {
                return Err(ServeError::Worker(
                    "a model thread ended while loading the model; the log has details".into(),
                ))
            }
        }
    }
    labels.ok_or_else(|| ServeError::Worker("no model thread started".into()))
}

fn finished(done: Result<std::io::Result<()>, tokio::task::JoinError>) -> Result<(), ServeError> {
    match done {
        Ok(result) => Ok(result?),
        Err(e) => Err(ServeError::Worker(format!(
            "the HTTP server task failed: {e}"
        ))),
    }
}

async fn stopped(mut stop: watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

async fn drain_deadline(stop: watch::Receiver<bool>) {
    stopped(stop).await;
    tokio::time::sleep(DRAIN_LIMIT).await;
}

/// Sets `stop` on the first SIGTERM (SageMaker, `docker stop`) or SIGINT.
async fn stop_on_signal(stop: watch::Sender<bool>) {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::warn!("cannot watch SIGTERM/SIGINT; the server stops only when killed");
        return;
    };
    let name = tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    };
    tracing::info!(
        signal = name,
        "stopping: no new connections, finishing requests in flight"
    );
    let _ = stop.send(true);
}

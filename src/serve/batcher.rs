//! The micro-batching queue between HTTP handlers and the model threads.
//!
//! Handlers put a [`Job`] (the texts of one request) on one queue and await its answer. Each
//! model thread owns a [`Predictor`] (loaded on that thread, tch tensors never cross threads)
//! and loops: take the first waiting job, add every job already queued (and, with a non-zero
//! max wait, those that arrive within it) up to `max_batch` texts, run them as one length-sorted
//! prediction, and answer each job with its own rows in its own order.
//!
//! Invariants: every job gets exactly one answer (results, or an error when the model fails or
//! panics); a panic is caught per batch and the thread keeps serving; the threads end when the
//! last [`Batcher`] is dropped and the queue is empty.

use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender, TryRecvError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use crate::hyperparams::DeviceChoice;
use crate::inference::{InferenceError, Predictor, Scored};
use crate::sagemaker::serve::ServePrecision;

use super::errors::RequestError;

/// A job's answer: each text's best labels, or why there are none.
type Answer = Result<Vec<Vec<Scored>>, RequestError>;

/// The texts of one request and what it wants back.
struct Job {
    texts: Vec<String>,
    top_k: usize,
    reply: oneshot::Sender<Answer>,
}

/// How the model threads run.
#[derive(Debug, Clone)]
pub struct BatchConfig {
    pub model_dir: PathBuf,
    pub workers: usize,
    /// libtorch intra-op threads per model thread.
    pub threads_per_worker: usize,
    pub max_batch: usize,
    pub max_wait: Duration,
    /// The dtype of the linear layers (`TXCAT_SERVE_PRECISION`).
    pub precision: ServePrecision,
    /// Test hook: a batch holding exactly this text panics on the model thread.
    pub panic_text: Option<String>,
}

/// A model thread's start-up outcome: the label names, or why loading failed.
pub type Ready = Result<Vec<String>, InferenceError>;

/// The handle handlers use to queue work. Cloning is cheap.
#[derive(Clone)]
pub struct Batcher {
    queue: Sender<Job>,
}

/// Running model threads.
pub struct Workers {
    pub handles: Vec<JoinHandle<()>>,
    /// One [`Ready`] per thread.
    pub ready: Receiver<Ready>,
}

/// Starts `config.workers` model threads; each loads the model, runs a warm-up forward and
/// reports on [`Workers::ready`].
pub fn start(config: BatchConfig) -> std::io::Result<(Batcher, Workers)> {
    let (queue, jobs) = mpsc::channel::<Job>();
    let jobs = Arc::new(Mutex::new(jobs));
    let (ready_tx, ready) = mpsc::channel();
    let mut handles = Vec::with_capacity(config.workers);
    for index in 0..config.workers {
        let jobs = Arc::clone(&jobs);
        let ready_tx = ready_tx.clone();
        let config = config.clone();
        let handle = std::thread::Builder::new()
            .name(format!("txcat-model-{index}"))
            .spawn(move || worker(&config, &jobs, &ready_tx))?;
        handles.push(handle);
    }
    Ok((Batcher { queue }, Workers { handles, ready }))
}

impl Batcher {
    /// The `top_k` best labels of every text, in order, computed on a model thread.
    pub async fn predict(&self, texts: Vec<String>, top_k: usize) -> Answer {
        let (reply, answer) = oneshot::channel();
        self.queue
            .send(Job {
                texts,
                top_k,
                reply,
            })
            .map_err(|_| RequestError::Unavailable("the model threads have stopped".into()))?;
        answer.await.unwrap_or_else(|_| {
            Err(RequestError::Internal(
                "the model thread ended without answering; the log has details".into(),
            ))
        })
    }
}

fn load(dir: &Path, precision: ServePrecision) -> Result<Predictor, InferenceError> {
    let mut predictor = Predictor::load(dir, DeviceChoice::Auto)?;
    match precision {
        ServePrecision::Fp32 => {}
        ServePrecision::Bf16 => {
            predictor.serve_in_bf16()?;
            tracing::info!("serving in bfloat16 (TXCAT_SERVE_PRECISION=bf16)");
        }
        ServePrecision::Int8 => {
            predictor.serve_in_int8()?;
            tracing::info!(
                "serving the encoder's linear layers in int8 (TXCAT_SERVE_PRECISION=int8)"
            );
        }
    }
    if let Some(b) = predictor.blend() {
        tracing::info!(
            weight = b.weight,
            temperature = b.temperature,
            encoder_temperature = b.encoder_temperature,
            "the model directory holds a tf-idf blend: predictions mix it in"
        );
    }
    predictor.warm_up()?;
    Ok(predictor)
}

fn worker(config: &BatchConfig, jobs: &Mutex<Receiver<Job>>, ready: &Sender<Ready>) {
    tch::set_num_threads(config.threads_per_worker.max(1) as i32);
    let predictor = match load(&config.model_dir, config.precision) {
        Ok(p) => {
            let _ = ready.send(Ok(p.labels().to_vec()));
            p
        }
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    loop {
        // Poisoning cannot leave the receiver inconsistent: gathering never panics mid-update.
        let batch = {
            let jobs = jobs.lock().unwrap_or_else(|p| p.into_inner());
            gather(&jobs, config.max_batch, config.max_wait)
        };
        let Some(batch) = batch else {
            return;
        };
        run_batch(&predictor, batch, config);
    }
}

/// The next batch: the first job (blocking), then queued jobs until `max_batch` texts or
/// `max_wait` after the first. `None` once the queue is closed and empty.
fn gather(jobs: &Receiver<Job>, max_batch: usize, max_wait: Duration) -> Option<Vec<Job>> {
    let first = jobs.recv().ok()?;
    let deadline = Instant::now() + max_wait;
    let mut total = first.texts.len();
    let mut batch = vec![first];
    while total < max_batch {
        let next = match jobs.try_recv() {
            Ok(job) => job,
            Err(TryRecvError::Disconnected) => break,
            Err(TryRecvError::Empty) => {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    break;
                }
                match jobs.recv_timeout(left) {
                    Ok(job) => job,
                    Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => break,
                }
            }
        };
        total += next.texts.len();
        batch.push(next);
    }
    Some(batch)
}

fn run_batch(predictor: &Predictor, batch: Vec<Job>, config: &BatchConfig) {
    // A client that went away needs no forward.
    let batch: Vec<Job> = batch.into_iter().filter(|j| !j.reply.is_closed()).collect();
    let Some(top_k) = batch.iter().map(|j| j.top_k).max() else {
        return;
    };
    let texts: Vec<&str> = batch
        .iter()
        .flat_map(|j| j.texts.iter().map(String::as_str))
        .collect();
    let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| {
        if let Some(bad) = &config.panic_text {
            if texts.iter().any(|t| t == bad) {
                panic!("test hook: panic on the model thread");
            }
        }
        predictor.predict(&texts, top_k, config.max_batch)
    }));
    let mut results = match outcome {
        Ok(Ok(results)) => results.into_iter(),
        Ok(Err(e)) => {
            tracing::error!(texts = texts.len(), error = %e, "prediction failed");
            return answer_all(batch, &format!("prediction failed: {e}"));
        }
        Err(_) => {
            return answer_all(
                batch,
                "internal error on the model thread (a bug in txcat, not in the request); the log has details, the server keeps running",
            )
        }
    };
    for job in batch {
        let mine: Vec<Vec<Scored>> = results
            .by_ref()
            .take(job.texts.len())
            .map(|mut best| {
                best.truncate(job.top_k);
                best
            })
            .collect();
        let _ = job.reply.send(Ok(mine));
    }
}

fn answer_all(batch: Vec<Job>, message: &str) {
    for job in batch {
        let _ = job
            .reply
            .send(Err(RequestError::Internal(message.to_string())));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(n: usize) -> (Job, oneshot::Receiver<Answer>) {
        let (reply, rx) = oneshot::channel();
        (
            Job {
                texts: vec!["x".into(); n],
                top_k: 1,
                reply,
            },
            rx,
        )
    }

    #[test]
    fn gather_takes_queued_jobs_up_to_max_batch() {
        let (tx, rx) = mpsc::channel();
        let mut keep = Vec::new();
        for n in [3, 2, 4, 1] {
            let (j, r) = job(n);
            tx.send(j).unwrap();
            keep.push(r);
        }
        // 3 + 2 = 5 < 6, + 4 = 9 >= 6: stop after the third job.
        let batch = gather(&rx, 6, Duration::ZERO).unwrap();
        assert_eq!(
            batch.iter().map(|j| j.texts.len()).collect::<Vec<_>>(),
            [3, 2, 4]
        );
        let batch = gather(&rx, 6, Duration::ZERO).unwrap();
        assert_eq!(batch.len(), 1);
        drop(tx);
        assert!(gather(&rx, 6, Duration::ZERO).is_none(), "closed and empty");
    }

    #[test]
    fn gather_waits_up_to_max_wait_for_late_jobs() {
        let (tx, rx) = mpsc::channel();
        let (first, _r1) = job(1);
        tx.send(first).unwrap();
        let (late, _r2) = job(1);
        // The sender hangs up after the late job, which ends the wait early.
        let sender = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            tx.send(late).unwrap();
        });
        let started = Instant::now();
        let batch = gather(&rx, 8, Duration::from_secs(30)).unwrap();
        assert_eq!(batch.len(), 2, "the late job joined the batch");
        assert!(started.elapsed() < Duration::from_secs(30));
        sender.join().unwrap();
    }
}

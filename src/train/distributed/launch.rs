//! One host, several workers, no launcher needed: when a run wants more than one worker,
//! `txcat train` re-executes itself once per worker with torchrun's variables (`RANK`,
//! `LOCAL_RANK`, `WORLD_SIZE`, `LOCAL_WORLD_SIZE`, `MASTER_ADDR`, `MASTER_PORT`), forwards
//! SIGTERM/SIGINT to them and fails when any of them fails. A process started with those
//! variables (by this launcher, or by torchrun itself) is a worker.
//!
//! Like `sagemaker`, this module reads the process environment: the launch contract is
//! torchrun's. Invariants: the launcher returns only after every worker has exited (those still
//! running a grace period after the first failure are killed); workers die with the launcher
//! (`PR_SET_PDEATHSIG`); the launcher's one failure line names the failed rank and carries the
//! first line the worker reported, which names the phase.

use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::hyperparams::Hyperparameters;
use crate::train::device::{resolve_device, DeviceError};

/// Where a worker writes its failure reason (instead of `output/failure`, which the launcher
/// writes once for the whole job).
pub const WORKER_FAILURE_VAR: &str = "TXCAT_WORKER_FAILURE";

/// The most a launcher waits, after the first worker failed, for the others to fail on their own
/// (a dead peer makes their next collective fail at once; a hung one within `dist_timeout`).
const MAX_GRACE: Duration = Duration::from_secs(30);

/// Failures of the launcher.
#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    #[error("{variable}={value:?} is not valid for a data-parallel worker: {expected}")]
    BadVariable {
        variable: &'static str,
        value: String,
        expected: String,
    },
    #[error("cannot find the txcat executable to start workers: {0}")]
    Exe(std::io::Error),
    #[error("cannot start data-parallel worker rank {rank}: {source}")]
    Spawn {
        rank: usize,
        #[source]
        source: std::io::Error,
    },
    #[error("waiting for data-parallel workers: {0}")]
    Wait(std::io::Error),
    #[error("{summary}")]
    WorkerFailed { summary: String, code: i32 },
    #[error(transparent)]
    Device(#[from] DeviceError),
    #[error(transparent)]
    Signal(#[from] crate::signals::SignalError),
}

impl LaunchError {
    /// The job's exit status: a failed worker's own (1, 2 or 3), else 1.
    pub fn exit_code(&self) -> i32 {
        match self {
            LaunchError::WorkerFailed { code, .. } => *code,
            LaunchError::BadVariable { .. } => 2,
            _ => 1,
        }
    }
}

/// What a worker learns from its environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerEnv {
    pub rank: usize,
    pub local_rank: usize,
    pub world_size: usize,
    pub local_world_size: usize,
    pub master_addr: String,
    pub master_port: u16,
    /// `GLOO_SOCKET_IFNAME`: the interface Gloo binds to.
    pub gloo_ifname: Option<String>,
}

impl WorkerEnv {
    /// A worker's settings when `RANK` and `WORLD_SIZE` are set; `None` otherwise.
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Result<Option<Self>, LaunchError> {
        let (Some(rank), Some(world)) = (var("RANK"), var("WORLD_SIZE")) else {
            return Ok(None);
        };
        let number = |variable: &'static str, value: &str, min: usize| {
            value
                .trim()
                .parse::<usize>()
                .ok()
                .filter(|n| *n >= min)
                .ok_or_else(|| LaunchError::BadVariable {
                    variable,
                    value: value.to_string(),
                    expected: format!("an integer >= {min}"),
                })
        };
        let world_size = number("WORLD_SIZE", &world, 1)?;
        let rank = number("RANK", &rank, 0)?;
        if rank >= world_size {
            return Err(LaunchError::BadVariable {
                variable: "RANK",
                value: rank.to_string(),
                expected: format!("below WORLD_SIZE={world_size}"),
            });
        }
        let local_rank = match var("LOCAL_RANK") {
            Some(v) => number("LOCAL_RANK", &v, 0)?,
            None => rank,
        };
        let local_world_size = match var("LOCAL_WORLD_SIZE") {
            Some(v) => number("LOCAL_WORLD_SIZE", &v, 1)?,
            None => world_size,
        };
        let master_port = match var("MASTER_PORT") {
            Some(v) => v
                .trim()
                .parse::<u16>()
                .ok()
                .filter(|p| *p > 0)
                .ok_or_else(|| LaunchError::BadVariable {
                    variable: "MASTER_PORT",
                    value: v.clone(),
                    expected: "a TCP port in 1..=65535".into(),
                })?,
            None => 29500, // torchrun's default
        };
        Ok(Some(Self {
            rank,
            local_rank,
            world_size,
            local_world_size,
            master_addr: var("MASTER_ADDR").unwrap_or_else(|| "127.0.0.1".into()),
            master_port,
            gloo_ifname: var("GLOO_SOCKET_IFNAME").filter(|v| !v.is_empty()),
        }))
    }

    pub fn from_env() -> Result<Option<Self>, LaunchError> {
        Self::from_vars(|k| std::env::var(k).ok())
    }
}

/// The file a worker writes its failure reason to, when it is one of this launcher's workers.
pub fn worker_failure_file() -> Option<PathBuf> {
    std::env::var_os(WORKER_FAILURE_VAR).map(PathBuf::from)
}

/// What `txcat train` is in this run.
#[derive(Debug)]
pub enum Role {
    /// One process trains alone.
    Single,
    /// This process starts `workers` workers on this host and waits for them.
    Launcher { workers: usize },
    /// This process is one worker of a data-parallel run.
    Worker(WorkerEnv),
}

/// Decides the role from the environment and the hyperparameters: a worker when torchrun's
/// variables are set, else a launcher when `num_processes` (default: the visible GPUs on CUDA,
/// 1 on the CPU) is above 1.
pub fn role(hp: &Hyperparameters) -> Result<Role, LaunchError> {
    if let Some(env) = WorkerEnv::from_env()? {
        return Ok(Role::Worker(env));
    }
    let workers = match hp.num_processes {
        Some(n) => n,
        None => match resolve_device(hp.device)? {
            tch::Device::Cuda(_) => tch::Cuda::device_count().max(1) as usize,
            _ => 1,
        },
    };
    Ok(if workers > 1 {
        Role::Launcher { workers }
    } else {
        Role::Single
    })
}

/// One started worker.
struct Worker {
    rank: usize,
    child: Child,
    exited: Option<(ExitStatus, Instant)>,
    /// Killed by this launcher after the grace period.
    killed: bool,
    failure_file: PathBuf,
}

/// Starts `workers` copies of this `txcat train` on this host (master = loopback, port
/// `dist_port`) and waits for all of them; forwards SIGTERM/SIGINT.
pub fn run_workers(hp: &Hyperparameters, workers: usize) -> Result<(), LaunchError> {
    let exe = std::env::current_exe().map_err(LaunchError::Exe)?;
    let args: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
    let stop = crate::signals::install()?;
    let scratch = tempfile::tempdir().map_err(LaunchError::Wait)?;
    let cpu_threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    tracing::info!(
        workers,
        master_port = hp.dist_port,
        "starting data-parallel workers on this host"
    );
    let mut started: Vec<Worker> = Vec::with_capacity(workers);
    for rank in 0..workers {
        let failure_file = scratch.path().join(format!("rank-{rank}.failure"));
        let mut cmd = Command::new(&exe);
        cmd.args(&args)
            .env("RANK", rank.to_string())
            .env("LOCAL_RANK", rank.to_string())
            .env("WORLD_SIZE", workers.to_string())
            .env("LOCAL_WORLD_SIZE", workers.to_string())
            .env("GROUP_RANK", "0")
            .env("MASTER_ADDR", "127.0.0.1")
            .env("MASTER_PORT", hp.dist_port.to_string())
            .env(WORKER_FAILURE_VAR, &failure_file);
        // Workers share the cores: without num_threads, split them as torchrun's OMP_NUM_THREADS
        // advice does, instead of every worker spinning up one thread per core.
        if hp.num_threads.is_none() && std::env::var_os("OMP_NUM_THREADS").is_none() {
            cmd.env(
                "OMP_NUM_THREADS",
                (cpu_threads / workers).max(1).to_string(),
            );
        }
        // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        match cmd.spawn() {
            Ok(child) => {
                tracing::info!(rank, pid = child.id(), "started data-parallel worker");
                started.push(Worker {
                    rank,
                    child,
                    exited: None,
                    killed: false,
                    failure_file,
                });
            }
            Err(source) => {
                kill_all(&mut started);
                return Err(LaunchError::Spawn { rank, source });
            }
        }
    }
    supervise(&mut started, &stop, grace(hp))?;
    summarize(&started, workers)
}

fn grace(hp: &Hyperparameters) -> Duration {
    Duration::from_secs(hp.dist_timeout).min(MAX_GRACE) + Duration::from_secs(5)
}

/// Waits until every worker has exited, forwarding a stop signal once and killing what still
/// runs `grace` after the first failure.
fn supervise(
    workers: &mut [Worker],
    stop: &std::sync::atomic::AtomicBool,
    grace: Duration,
) -> Result<(), LaunchError> {
    let mut forwarded = false;
    let mut first_failure: Option<Instant> = None;
    loop {
        for w in workers.iter_mut().filter(|w| w.exited.is_none()) {
            if let Some(status) = w.child.try_wait().map_err(LaunchError::Wait)? {
                if !status.success() && first_failure.is_none() {
                    first_failure = Some(Instant::now());
                    tracing::warn!(rank = w.rank, %status, "data-parallel worker failed; waiting for the others to stop");
                }
                w.exited = Some((status, Instant::now()));
            }
        }
        if workers.iter().all(|w| w.exited.is_some()) {
            return Ok(());
        }
        if !forwarded && stop.load(Ordering::SeqCst) {
            forwarded = true;
            for w in workers.iter().filter(|w| w.exited.is_none()) {
                // SAFETY: plain kill(2) on our own child's pid.
                unsafe { libc::kill(w.child.id() as i32, libc::SIGTERM) };
            }
        }
        if first_failure.is_some_and(|t| t.elapsed() > grace) {
            kill_all(workers);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn kill_all(workers: &mut [Worker]) {
    for w in workers
        .iter_mut()
        .filter(|w| w.exited.is_none() && !w.killed)
    {
        let _ = w.child.kill();
        w.killed = true;
    }
}

/// Ok when every worker succeeded; else one line naming the rank that failed first.
fn summarize(workers: &[Worker], world: usize) -> Result<(), LaunchError> {
    let failed: Vec<&Worker> = workers
        .iter()
        .filter(|w| w.exited.is_some_and(|(s, _)| !s.success()))
        .collect();
    if failed.is_empty() {
        return Ok(());
    }
    let reason = |w: &Worker| read_reason(&w.failure_file);
    // A worker the system killed (OOM, SIGKILL from outside, a crash) explains the others'
    // failures; among the rest, the lowest rank that said why.
    let killed = failed
        .iter()
        .filter(|w| !w.killed && reason(w).is_none())
        .filter_map(|w| {
            w.exited
                .and_then(|(s, t)| s.signal().map(|sig| (w, sig, t)))
        })
        .min_by_key(|(_, _, t)| *t);
    let explained = failed
        .iter()
        .filter_map(|w| reason(w).map(|r| (w.rank, r)))
        .min_by_key(|(rank, _)| *rank);
    let code = failed
        .iter()
        .filter_map(|w| w.exited.and_then(|(s, _)| s.code()))
        .find(|c| (1..=3).contains(c))
        .unwrap_or(1);
    let summary = match (killed, explained) {
        (Some((w, sig, _)), explained) => {
            let mut s = format!(
                "data-parallel worker rank {} of {world} was killed by signal {sig}{} (out of memory, or stopped from outside)",
                w.rank,
                signal_suffix(sig)
            );
            if let Some((rank, r)) = explained {
                s.push_str(&format!("; then rank {rank}: {r}"));
            }
            s
        }
        (None, Some((rank, r))) => {
            format!("data-parallel worker rank {rank} of {world} failed: {r}")
        }
        (None, None) => {
            let w = failed[0];
            let status = w.exited.map(|(s, _)| s.to_string()).unwrap_or_default();
            format!("data-parallel worker rank {} of {world} failed ({status}) without a reason; see its log", w.rank)
        }
    };
    Err(LaunchError::WorkerFailed { summary, code })
}

fn signal_suffix(sig: i32) -> &'static str {
    match sig {
        libc::SIGKILL => " (SIGKILL)",
        libc::SIGSEGV => " (SIGSEGV)",
        libc::SIGABRT => " (SIGABRT)",
        libc::SIGTERM => " (SIGTERM)",
        _ => "",
    }
}

fn read_reason(path: &Path) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    let line = text
        .lines()
        .find(|l| !l.trim().is_empty())?
        .trim()
        .to_string();
    Some(line)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |k| {
            pairs
                .iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn torchrun_variables_make_a_worker() {
        assert_eq!(WorkerEnv::from_vars(vars(&[])).unwrap(), None);
        let env = WorkerEnv::from_vars(vars(&[
            ("RANK", "1"),
            ("WORLD_SIZE", "2"),
            ("MASTER_ADDR", "10.0.0.1"),
            ("MASTER_PORT", "7777"),
        ]))
        .unwrap()
        .unwrap();
        assert_eq!((env.rank, env.local_rank, env.world_size), (1, 1, 2));
        assert_eq!(
            (env.master_addr.as_str(), env.master_port),
            ("10.0.0.1", 7777)
        );
        for bad in [
            [("RANK", "2"), ("WORLD_SIZE", "2")],
            [("RANK", "x"), ("WORLD_SIZE", "2")],
            [("RANK", "0"), ("WORLD_SIZE", "0")],
        ] {
            assert!(WorkerEnv::from_vars(vars(&bad)).is_err(), "{bad:?}");
        }
    }
}

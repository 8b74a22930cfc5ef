//! Several workers, no launcher needed: when a run wants more than one worker, `txcat train`
//! re-executes itself once per worker on this host with torchrun's variables (`RANK`,
//! `LOCAL_RANK`, `WORLD_SIZE`, `LOCAL_WORLD_SIZE`, `GROUP_RANK`, `MASTER_ADDR`, `MASTER_PORT`),
//! forwards SIGTERM/SIGINT to them and fails when any of them fails. A process started with
//! those variables (by this launcher, or by torchrun itself) is a worker.
//!
//! Several hosts come from `resourceconfig.json`, as SageMaker's toolkit reads it: the sorted
//! `hosts`, the master is the first, this host's node rank is the index of `current_host`, and
//! every host runs the same number of workers. Host names resolve through DNS with retries
//! (hosts come up at different times), or through `TXCAT_HOST_ADDRESSES=algo-1=ADDR,...`
//! (tests, on-premises); `network_interface_name` becomes `GLOO_SOCKET_IFNAME` /
//! `NCCL_SOCKET_IFNAME` unless the current host has an address in that mapping, which Gloo
//! then binds to.
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
use crate::sagemaker::ResourceConfig;
use crate::train::device::{resolve_device, DeviceError};

/// Where a worker writes its failure reason (instead of `output/failure`, which the launcher
/// writes once for the whole job).
pub const WORKER_FAILURE_VAR: &str = "TXCAT_WORKER_FAILURE";
/// `algo-1=ADDR,algo-2=ADDR`: host names to addresses, instead of DNS.
pub const HOST_ADDRESSES_VAR: &str = "TXCAT_HOST_ADDRESSES";
/// The address a worker's Gloo transport binds to (set by the launcher from the mapping above).
pub const GLOO_HOSTNAME_VAR: &str = "TXCAT_GLOO_HOSTNAME";

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
    #[error("{HOST_ADDRESSES_VAR}: `{entry}` is not NAME=ADDRESS; write e.g. algo-1=10.0.0.1,algo-2=10.0.0.2")]
    BadHostAddresses { entry: String },
    #[error("cannot resolve the master host `{host}` for data-parallel training after {seconds} s of retries: {message}; check the hosts in resourceconfig.json, DNS, or set {HOST_ADDRESSES_VAR}")]
    Resolve {
        host: String,
        seconds: u64,
        message: String,
    },
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
            LaunchError::BadVariable { .. } | LaunchError::BadHostAddresses { .. } => 2,
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
    /// [`GLOO_HOSTNAME_VAR`]: the address Gloo binds to (when no interface is named).
    pub gloo_hostname: Option<String>,
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
            gloo_hostname: var(GLOO_HOSTNAME_VAR).filter(|v| !v.is_empty()),
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
    /// This process starts `plan.workers` workers on this host and waits for them.
    Launcher(LaunchPlan),
    /// This process is one worker of a data-parallel run.
    Worker(WorkerEnv),
}

/// The hosts of a run and this host's place among them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cluster {
    /// Sorted; the first is the master.
    pub hosts: Vec<String>,
    pub current_host: String,
    /// Index of `current_host` in `hosts`.
    pub node_rank: usize,
    /// `network_interface_name` from resourceconfig.json.
    pub interface: Option<String>,
    /// Host name -> address, from [`HOST_ADDRESSES_VAR`].
    pub addresses: Vec<(String, String)>,
}

impl Cluster {
    /// The hosts of `rc` (sorted, as every host must agree on the order) and the address
    /// mapping `addresses` (the value of [`HOST_ADDRESSES_VAR`]).
    pub fn new(rc: &ResourceConfig, addresses: Option<&str>) -> Result<Self, LaunchError> {
        let mut hosts = rc.hosts.clone();
        hosts.sort();
        hosts.dedup();
        let node_rank = hosts
            .iter()
            .position(|h| *h == rc.current_host)
            .unwrap_or(0);
        let addresses = match addresses {
            Some(text) => parse_host_addresses(text)?,
            None => Vec::new(),
        };
        Ok(Self {
            hosts,
            current_host: rc.current_host.clone(),
            node_rank,
            interface: rc.network_interface_name.clone().filter(|i| !i.is_empty()),
            addresses,
        })
    }

    /// One host, no resourceconfig.json.
    pub fn single() -> Self {
        let rc = ResourceConfig::single_host();
        Self {
            hosts: rc.hosts,
            current_host: rc.current_host,
            node_rank: 0,
            interface: None,
            addresses: Vec::new(),
        }
    }

    pub fn is_multi_host(&self) -> bool {
        self.hosts.len() > 1
    }

    fn address_of(&self, host: &str) -> Option<&str> {
        self.addresses
            .iter()
            .find(|(h, _)| h == host)
            .map(|(_, a)| a.as_str())
    }
}

/// `algo-1=ADDR,algo-2=ADDR` as pairs.
pub fn parse_host_addresses(text: &str) -> Result<Vec<(String, String)>, LaunchError> {
    text.split(',')
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .map(|entry| match entry.split_once('=') {
            Some((h, a)) if !h.trim().is_empty() && !a.trim().is_empty() => {
                Ok((h.trim().to_string(), a.trim().to_string()))
            }
            _ => Err(LaunchError::BadHostAddresses {
                entry: entry.to_string(),
            }),
        })
        .collect()
}

/// What the launcher starts.
#[derive(Debug, Clone)]
pub struct LaunchPlan {
    /// Workers on this host.
    pub workers: usize,
    pub cluster: Cluster,
}

impl LaunchPlan {
    pub fn world_size(&self) -> usize {
        self.workers * self.cluster.hosts.len()
    }
}

/// Decides the role from the environment, the hosts and the hyperparameters: a worker when
/// torchrun's variables are set, else a launcher when the hosts times `num_processes` (default:
/// the visible GPUs on CUDA, 1 on the CPU) is above 1.
pub fn role(hp: &Hyperparameters, rc: Option<&ResourceConfig>) -> Result<Role, LaunchError> {
    if let Some(env) = WorkerEnv::from_env()? {
        return Ok(Role::Worker(env));
    }
    let cluster = match rc {
        Some(rc) => Cluster::new(rc, std::env::var(HOST_ADDRESSES_VAR).ok().as_deref())?,
        None => Cluster::single(),
    };
    let workers = match hp.num_processes {
        Some(n) => n,
        None => match resolve_device(hp.device)? {
            tch::Device::Cuda(_) => tch::Cuda::device_count().max(1) as usize,
            _ => 1,
        },
    };
    let plan = LaunchPlan { workers, cluster };
    Ok(if plan.world_size() > 1 {
        Role::Launcher(plan)
    } else {
        Role::Single
    })
}

/// The master's address: from the mapping, else DNS, retried until `timeout` (SageMaker hosts'
/// names may resolve only once every instance is up).
fn resolve_master(cluster: &Cluster, port: u16, timeout: Duration) -> Result<String, LaunchError> {
    if !cluster.is_multi_host() {
        return Ok("127.0.0.1".into());
    }
    let master = &cluster.hosts[0];
    if let Some(addr) = cluster.address_of(master) {
        return Ok(addr.to_string());
    }
    let started = Instant::now();
    let mut delay = Duration::from_millis(500);
    loop {
        use std::net::ToSocketAddrs;
        let error = match (master.as_str(), port).to_socket_addrs() {
            Ok(addrs) => {
                let all: Vec<_> = addrs.collect();
                // IPv4 first: Gloo and the store then agree on one family.
                if let Some(a) = all.iter().find(|a| a.is_ipv4()).or(all.first()) {
                    return Ok(a.ip().to_string());
                }
                "no addresses".to_string()
            }
            Err(e) => e.to_string(),
        };
        if started.elapsed() >= timeout {
            return Err(LaunchError::Resolve {
                host: master.clone(),
                seconds: started.elapsed().as_secs(),
                message: error,
            });
        }
        tracing::warn!(host = %master, error = %error, "master host does not resolve yet; retrying");
        std::thread::sleep(delay);
        delay = (delay * 2).min(Duration::from_secs(5));
    }
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

/// Starts `plan.workers` copies of this `txcat train` on this host (global ranks
/// `node_rank * workers ..`; master = the first host, port `dist_port`) and waits for all of
/// them; forwards SIGTERM/SIGINT.
pub fn run_workers(hp: &Hyperparameters, plan: &LaunchPlan) -> Result<(), LaunchError> {
    let exe = std::env::current_exe().map_err(LaunchError::Exe)?;
    let args: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
    let stop = crate::signals::install()?;
    let (workers, world, cluster) = (plan.workers, plan.world_size(), &plan.cluster);
    let master = resolve_master(cluster, hp.dist_port, Duration::from_secs(hp.dist_timeout))?;
    let scratch = tempfile::tempdir().map_err(LaunchError::Wait)?;
    let cpu_threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    tracing::info!(
        workers,
        world_size = world,
        host = %cluster.current_host,
        node_rank = cluster.node_rank,
        master = %format!("{master}:{}", hp.dist_port),
        "starting data-parallel workers on this host"
    );
    let mut started: Vec<Worker> = Vec::with_capacity(workers);
    for local in 0..workers {
        let rank = cluster.node_rank * workers + local;
        let failure_file = scratch.path().join(format!("rank-{rank}.failure"));
        let mut cmd = Command::new(&exe);
        cmd.args(&args)
            .env("RANK", rank.to_string())
            .env("LOCAL_RANK", local.to_string())
            .env("WORLD_SIZE", world.to_string())
            .env("LOCAL_WORLD_SIZE", workers.to_string())
            .env("GROUP_RANK", cluster.node_rank.to_string())
            .env("MASTER_ADDR", &master)
            .env("MASTER_PORT", hp.dist_port.to_string())
            .env(WORKER_FAILURE_VAR, &failure_file);
        if cluster.is_multi_host() {
            match (
                cluster.address_of(&cluster.current_host),
                &cluster.interface,
            ) {
                (Some(addr), _) => {
                    cmd.env(GLOO_HOSTNAME_VAR, addr);
                }
                (None, Some(iface)) => {
                    if std::env::var_os("GLOO_SOCKET_IFNAME").is_none() {
                        cmd.env("GLOO_SOCKET_IFNAME", iface);
                    }
                    if std::env::var_os("NCCL_SOCKET_IFNAME").is_none() {
                        cmd.env("NCCL_SOCKET_IFNAME", iface);
                    }
                }
                (None, None) => {}
            }
        }
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
    let host = cluster
        .is_multi_host()
        .then(|| format!(" on host {}", cluster.current_host));
    summarize(&started, world, host.as_deref().unwrap_or(""))
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

/// Ok when every worker succeeded; else one line naming the rank (and `host`, e.g.
/// " on host algo-2") that failed first.
fn summarize(workers: &[Worker], world: usize, host: &str) -> Result<(), LaunchError> {
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
                "data-parallel worker rank {} of {world}{host} was killed by signal {sig}{} (out of memory, or stopped from outside)",
                w.rank,
                signal_suffix(sig)
            );
            if let Some((rank, r)) = explained {
                s.push_str(&format!("; then rank {rank}: {r}"));
            }
            s
        }
        (None, Some((rank, r))) => {
            format!("data-parallel worker rank {rank} of {world}{host} failed: {r}")
        }
        (None, None) => {
            let w = failed[0];
            let status = w.exited.map(|(s, _)| s.to_string()).unwrap_or_default();
            format!("data-parallel worker rank {} of {world}{host} failed ({status}) without a reason; see its log", w.rank)
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
        assert_eq!(env.gloo_hostname, None);
        for bad in [
            [("RANK", "2"), ("WORLD_SIZE", "2")],
            [("RANK", "x"), ("WORLD_SIZE", "2")],
            [("RANK", "0"), ("WORLD_SIZE", "0")],
        ] {
            assert!(WorkerEnv::from_vars(vars(&bad)).is_err(), "{bad:?}");
        }
    }
}

#[cfg(test)]
mod cluster_tests {
    use super::*;

    fn rc(current: &str, hosts: &[&str]) -> ResourceConfig {
        ResourceConfig {
            current_host: current.into(),
            hosts: hosts.iter().map(|h| h.to_string()).collect(),
            network_interface_name: Some("eth0".into()),
            current_instance_type: None,
            current_group_name: None,
        }
    }

    #[test]
    fn hosts_are_sorted_and_the_node_rank_is_the_current_hosts_index() {
        let c = Cluster::new(&rc("algo-1", &["algo-2", "algo-1"]), None).unwrap();
        assert_eq!(c.hosts, vec!["algo-1", "algo-2"]);
        assert_eq!(c.node_rank, 0);
        let c = Cluster::new(&rc("algo-2", &["algo-2", "algo-1"]), None).unwrap();
        assert_eq!(c.node_rank, 1);
        assert!(c.is_multi_host());
        assert_eq!(c.interface.as_deref(), Some("eth0"));
        let plan = LaunchPlan {
            workers: 4,
            cluster: c,
        };
        assert_eq!(plan.world_size(), 8);
    }

    #[test]
    fn the_master_address_comes_from_the_mapping_or_dns() {
        let mapped = Cluster::new(
            &rc("algo-2", &["algo-1", "algo-2"]),
            Some("algo-1=10.1.2.3, algo-2=10.1.2.4"),
        )
        .unwrap();
        assert_eq!(mapped.address_of("algo-2"), Some("10.1.2.4"));
        let t = Duration::from_secs(1);
        assert_eq!(resolve_master(&mapped, 7777, t).unwrap(), "10.1.2.3");
        let local = Cluster::new(&rc("localhost", &["localhost", "zz-other"]), None).unwrap();
        let addr = resolve_master(&local, 7777, t).unwrap();
        assert!(
            addr.parse::<std::net::IpAddr>().unwrap().is_loopback(),
            "{addr}"
        );
        assert_eq!(
            resolve_master(&Cluster::single(), 7777, t).unwrap(),
            "127.0.0.1"
        );
        let started = Instant::now();
        // `.invalid` never resolves (RFC 2606), so this retries until the timeout.
        let unknown = Cluster::new(&rc("b", &["a.invalid", "b"]), Some("b=10.0.0.2")).unwrap();
        let err = resolve_master(&unknown, 7777, Duration::from_millis(1200)).unwrap_err();
        assert!(err.to_string().contains("`a.invalid`"), "{err}");
        assert!(started.elapsed() < Duration::from_secs(20));
        for bad in ["algo-1", "algo-1=", "=10.0.0.1"] {
            assert!(parse_host_addresses(bad).is_err(), "{bad}");
        }
    }
}

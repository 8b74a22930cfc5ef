//! Data-parallel training on libtorch's own c10d: a TCPStore rendezvous, ProcessGroupGloo on the
//! CPU and ProcessGroupNCCL on GPUs (from a plugin the shim loads, csrc/nccl_plugin.cpp), bound
//! through a small C++ shim (csrc/c10d_shim.cpp, compiled by build.rs) with the safe wrappers
//! [`Store`] and [`ProcessGroup`].
//!
//! [`launch`] starts one worker per device on this host (like `torchrun`) by re-executing
//! `txcat`; each worker [`connect`]s and hands the resulting [`DataParallel`] to training, which
//! splits every global batch across the ranks and sums gradients with an allreduce (see
//! `train::fit`).
//!
//! Invariants: every collective is called in the same order on every rank; every failure of a
//! rendezvous or collective is a [`DistError`] naming the rank and the phase, after at most
//! `dist_timeout` seconds (sooner when a peer's connection drops), never a hang.

mod ffi;
pub mod group;
pub mod launch;
pub mod store;

use std::sync::Arc;
use std::time::Duration;

use tch::Device;

pub use group::{nccl_plugin, Backend, GlooDevice, ProcessGroup, ReduceOp, NCCL_PLUGIN_FILE};
pub use launch::WorkerEnv;
pub use store::Store;

use crate::hyperparams::Hyperparameters;
use crate::train::device::{resolve_device, DeviceError};

/// Failures of the rendezvous and the collectives.
#[derive(Debug, thiserror::Error)]
pub enum DistError {
    #[error("distributed rendezvous store at {address}: {message}; check that every worker started and that the master address and dist_port are reachable, or raise dist_timeout")]
    Store { address: String, message: String },
    #[error("distributed {phase} failed on rank {rank} of {world}: {message}; another worker probably failed or was killed (its own line says why), or dist_timeout={timeout_s}s passed")]
    Collective {
        rank: usize,
        world: usize,
        phase: String,
        message: String,
        timeout_s: u64,
    },
    #[error("distributed training: rank {rank} of {world} could not create its {backend} process group: {message}")]
    Backend {
        rank: usize,
        world: usize,
        backend: &'static str,
        message: String,
    },
    #[error("distributed training: TXCAT_DIST_BACKEND=nccl but no NCCL plugin was found ({NCCL_PLUGIN_FILE} next to the txcat binary, or TXCAT_NCCL_PLUGIN); build it with scripts/lib.sh build_nccl_plugin (docs/distributed.md) or unset TXCAT_DIST_BACKEND")]
    NoNccl,
    #[error("distributed training: rank(s) {ranks:?} of {world} see other {what} than rank 0; every host must read the same hyperparameters, and each channel must be FullyReplicated or ShardedByS3Key (gathered) in every host's inputdataconfig.json")]
    Disagree {
        what: String,
        ranks: Vec<usize>,
        world: usize,
    },
    #[error("distributed training: {0}")]
    Invalid(String),
    #[error(transparent)]
    Device(#[from] DeviceError),
}

/// This process's place in a data-parallel run, as training sees it.
#[derive(Debug, Clone)]
pub struct DataParallel {
    group: Arc<ProcessGroup>,
    /// The device this worker trains on (`cuda:LOCAL_RANK` on GPUs).
    device: Device,
    /// This worker's index among its host's workers.
    local_rank: usize,
}

impl DataParallel {
    pub fn new(group: ProcessGroup, device: Device, local_rank: usize) -> Self {
        Self {
            group: Arc::new(group),
            device,
            local_rank,
        }
    }

    /// Every host's rows of a channel, in host order: the first worker of each host contributes
    /// the rows its host read (the others read the same ones), so each row counts once.
    /// Used for `ShardedByS3Key` channels, where each host reads other objects.
    pub fn gather_host_rows(
        &self,
        channel: &str,
        texts: &[String],
        labels: &[String],
    ) -> Result<(Vec<String>, Vec<String>), DistError> {
        let mut bytes = Vec::new();
        if self.local_rank == 0 {
            for (text, label) in texts.iter().zip(labels) {
                for field in [text, label] {
                    bytes.extend_from_slice(&(field.len() as u64).to_le_bytes());
                    bytes.extend_from_slice(field.as_bytes());
                }
            }
        }
        let phase = format!("gathering the rows of sharded channel `{channel}`");
        let all = self.group.all_gather_bytes(&bytes, &phase)?;
        let (mut texts, mut labels) = (Vec::new(), Vec::new());
        for (rank, part) in all.iter().enumerate() {
            let bad = || DistError::Invalid(format!("{phase}: rank {rank} sent a torn row"));
            let mut rest = part.as_slice();
            while !rest.is_empty() {
                let mut fields = [String::new(), String::new()];
                for field in &mut fields {
                    let (len, tail) = rest.split_first_chunk::<8>().ok_or_else(bad)?;
                    let len = u64::from_le_bytes(*len) as usize;
                    let text = tail.get(..len).ok_or_else(bad)?;
                    *field = String::from_utf8(text.to_vec()).map_err(|_| bad())?;
                    rest = &tail[len..];
                }
                let [text, label] = fields;
                texts.push(text);
                labels.push(label);
            }
        }
        Ok((texts, labels))
    }

    pub fn rank(&self) -> usize {
        self.group.rank()
    }

    pub fn world(&self) -> usize {
        self.group.size()
    }

    pub fn is_primary(&self) -> bool {
        self.rank() == 0
    }

    pub fn group(&self) -> &ProcessGroup {
        &self.group
    }

    pub fn device(&self) -> Device {
        self.device
    }

    /// Fails on every rank unless every rank passed the same `bytes` (compared by SHA-256):
    /// training splits one data set, so all ranks must hold the same one.
    pub fn check_agreement(&self, what: &str, bytes: &[u8]) -> Result<(), DistError> {
        use sha2::{Digest, Sha256};
        let digest = Sha256::digest(bytes);
        let words: Vec<i64> = digest
            .chunks_exact(8)
            .map(|c| i64::from_le_bytes(c.try_into().expect("8 bytes")))
            .collect();
        let all = self
            .group
            .all_gather_i64(&words, &format!("comparing {what} across ranks"))?;
        let ranks: Vec<usize> = (1..all.len()).filter(|&r| all[r] != all[0]).collect();
        if ranks.is_empty() {
            Ok(())
        } else {
            Err(DistError::Disagree {
                what: what.to_string(),
                ranks,
                world: self.world(),
            })
        }
    }

    /// This rank's contiguous share of a global batch: `rows` cut into `world` runs whose
    /// lengths differ by at most one (a batch shorter than the world leaves some ranks none).
    pub fn shard<'a>(&self, rows: &'a [usize]) -> &'a [usize] {
        shard(rows, self.rank(), self.world())
    }
}

/// Rank `rank`'s share of `rows` among `world` ranks (see [`DataParallel::shard`]).
pub fn shard<T>(rows: &[T], rank: usize, world: usize) -> &[T] {
    let n = rows.len();
    &rows[rank * n / world..(rank + 1) * n / world]
}

/// Joins the run described by `env`: the TCPStore on the master (hosted by global rank 0),
/// then the process group: NCCL on GPUs where its plugin is installed, Gloo otherwise
/// (`TXCAT_DIST_BACKEND` overrides).
pub fn connect(env: &WorkerEnv, hp: &Hyperparameters) -> Result<DataParallel, DistError> {
    let timeout = Duration::from_secs(hp.dist_timeout);
    let device = match resolve_device(hp.device)? {
        Device::Cuda(_) => Device::Cuda(env.local_rank),
        other => other,
    };
    tracing::info!(
        rank = env.rank,
        local_rank = env.local_rank,
        world_size = env.world_size,
        master = %format!("{}:{}", env.master_addr, env.master_port),
        ?device,
        "joining the data-parallel group"
    );
    let store = Store::tcp(
        &env.master_addr,
        env.master_port,
        env.rank == 0,
        env.world_size,
        timeout,
    )
    .map_err(|e| match e {
        // Name the rank: on several hosts the failure lines must say who waited for whom.
        DistError::Store { address, message } => DistError::Collective {
            rank: env.rank,
            world: env.world_size,
            phase: format!("rendezvous at {address} (TCPStore)"),
            message,
            timeout_s: timeout.as_secs(),
        },
        other => other,
    })?;
    // Namespaced, so later groups (or other tools) can share the store.
    let pg_store = store.prefixed("txcat/default_pg")?;
    let nccl = match (BackendChoice::from_env()?, device) {
        (BackendChoice::Gloo, _) => None,
        (BackendChoice::Nccl, _) => Some(nccl_plugin().ok_or(DistError::NoNccl)?),
        (BackendChoice::Auto, Device::Cuda(_)) => {
            let plugin = nccl_plugin();
            if plugin.is_none() {
                tracing::warn!("no NCCL plugin ({NCCL_PLUGIN_FILE} next to the binary): GPU workers reduce through Gloo on the host, correct but slower");
            }
            plugin
        }
        (BackendChoice::Auto, _) => None,
    };
    let group = match nccl {
        Some(plugin) => {
            let gpu = match device {
                Device::Cuda(gpu) => gpu,
                _ => env.local_rank,
            };
            ProcessGroup::nccl(&plugin, &pg_store, env.rank, env.world_size, gpu, timeout)?
        }
        None => {
            let gloo_device = match (&env.gloo_ifname, &env.gloo_hostname) {
                (Some(ifname), _) => GlooDevice::Interface(ifname.clone()),
                (None, Some(addr)) => GlooDevice::Hostname(addr.clone()),
                (None, None) if is_loopback(&env.master_addr) => {
                    GlooDevice::Hostname("127.0.0.1".into())
                }
                (None, None) => GlooDevice::Default,
            };
            ProcessGroup::gloo(&pg_store, env.rank, env.world_size, &gloo_device, timeout)?
        }
    };
    tracing::info!(rank = env.rank, backend = ?group.backend(), "data-parallel group ready");
    Ok(DataParallel::new(group, device, env.local_rank))
}

/// `TXCAT_DIST_BACKEND`: `auto` (NCCL on GPUs where its plugin is installed, else Gloo), `gloo`
/// or `nccl` (also on a CPU machine, where libtorch refuses it: how tests reach the plugin).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BackendChoice {
    Auto,
    Gloo,
    Nccl,
}

impl BackendChoice {
    fn from_env() -> Result<Self, DistError> {
        match std::env::var("TXCAT_DIST_BACKEND")
            .as_deref()
            .map(str::trim)
        {
            Err(_) | Ok("") | Ok("auto") => Ok(Self::Auto),
            Ok("gloo") => Ok(Self::Gloo),
            Ok("nccl") => Ok(Self::Nccl),
            Ok(other) => Err(DistError::Invalid(format!(
                "TXCAT_DIST_BACKEND={other:?} is not one of auto, gloo, nccl"
            ))),
        }
    }
}

fn is_loopback(addr: &str) -> bool {
    addr == "localhost"
        || addr
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Kind, Tensor};

    fn free_port() -> u16 {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    }

    /// Runs `body(rank, group)` on `world` threads joined into one Gloo group over loopback.
    fn on_threads<T: Send + 'static>(
        world: usize,
        timeout: Duration,
        body: impl Fn(usize, ProcessGroup) -> T + Send + Sync + Copy + 'static,
    ) -> Vec<T> {
        let port = free_port();
        let threads: Vec<_> = (0..world)
            .map(|rank| {
                std::thread::spawn(move || {
                    let store = Store::tcp("127.0.0.1", port, rank == 0, world, timeout).unwrap();
                    let store = store.prefixed("test").unwrap();
                    let device = GlooDevice::Hostname("127.0.0.1".into());
                    let group = ProcessGroup::gloo(&store, rank, world, &device, timeout).unwrap();
                    body(rank, group)
                })
            })
            .collect();
        threads.into_iter().map(|t| t.join().unwrap()).collect()
    }

    #[test]
    fn gloo_collectives_across_two_threads() {
        let results = on_threads(2, Duration::from_secs(20), |rank, group| {
            let r = rank as f32;
            let mut sum = Tensor::from_slice(&[1.0f32 + r, 10.0 * (r + 1.0), -r]);
            group
                .all_reduce(&mut sum, ReduceOp::Sum, "test sum")
                .unwrap();
            let mut max = Tensor::from_slice(&[r, -r]);
            group
                .all_reduce(&mut max, ReduceOp::Max, "test max")
                .unwrap();
            let mut min = Tensor::from_slice(&[r as i64, 5]);
            group
                .all_reduce(&mut min, ReduceOp::Min, "test min")
                .unwrap();
            let mut b = Tensor::from_slice(&[7.0f64 * (rank as f64 + 1.0); 4]);
            group.broadcast(&mut b, 1, "test broadcast").unwrap();
            group.barrier("test barrier").unwrap();
            let gathered = group
                .all_gather_i64(&vec![rank as i64; rank + 1], "test gather")
                .unwrap();
            let total = group.sum_f64(0.25 + r as f64, "test f64").unwrap();
            (
                Vec::<f32>::try_from(sum).unwrap(),
                Vec::<f32>::try_from(max).unwrap(),
                Vec::<i64>::try_from(min).unwrap(),
                Vec::<f64>::try_from(b).unwrap(),
                gathered,
                total,
            )
        });
        for (sum, max, min, b, gathered, total) in results {
            assert_eq!(sum, vec![3.0, 30.0, -1.0]);
            assert_eq!(max, vec![1.0, 0.0]);
            assert_eq!(min, vec![0, 5]);
            assert_eq!(b, vec![14.0; 4]);
            assert_eq!(gathered, vec![vec![0], vec![1, 1]]);
            assert_eq!(total, 1.5);
        }
    }

    #[test]
    fn a_collective_without_its_peer_fails_in_bounded_time_naming_rank_and_phase() {
        let started = std::time::Instant::now();
        let results = on_threads(2, Duration::from_secs(2), |rank, group| {
            if rank == 1 {
                return None; // never joins the allreduce; its group drops with the thread
            }
            let mut t = Tensor::ones([4], (Kind::Float, Device::Cpu));
            Some(group.all_reduce(&mut t, ReduceOp::Sum, "gradient allreduce at step 3"))
        });
        let err = results[0]
            .as_ref()
            .unwrap()
            .as_ref()
            .unwrap_err()
            .to_string();
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "took {:?}",
            started.elapsed()
        );
        assert!(
            err.contains("rank 0 of 2") && err.contains("gradient allreduce at step 3"),
            "{err}"
        );
    }

    #[test]
    fn host_rows_are_gathered_once_per_host_in_rank_order() {
        // Ranks 0 and 1 are host A (local ranks 0, 1), rank 2 is host B.
        let results = on_threads(3, Duration::from_secs(20), |rank, group| {
            let local_rank = [0, 1, 0][rank];
            let dp = DataParallel::new(group, Device::Cpu, local_rank);
            let host = if rank < 2 { "a" } else { "b" };
            let texts = vec![format!("{host} first"), format!("{host} second, é\0x")];
            let labels = vec![format!("{host}-label"), "shared".to_string()];
            let empty: Vec<String> = Vec::new();
            let none = dp.gather_host_rows("eval", &empty, &empty).unwrap();
            (dp.gather_host_rows("train", &texts, &labels).unwrap(), none)
        });
        for ((texts, labels), none) in results {
            assert_eq!(
                texts,
                ["a first", "a second, é\0x", "b first", "b second, é\0x"]
            );
            assert_eq!(labels, ["a-label", "shared", "b-label", "shared"]);
            assert!(none.0.is_empty() && none.1.is_empty());
        }
    }

    #[test]
    fn a_rendezvous_nobody_joins_times_out() {
        let port = free_port();
        let started = std::time::Instant::now();
        let err = Store::tcp("127.0.0.1", port, true, 2, Duration::from_secs(1)).unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(20));
        assert!(
            err.to_string().contains(&format!("127.0.0.1:{port}")),
            "{err}"
        );
    }

    #[test]
    fn shards_cover_a_batch_once_in_order() {
        for n in 0..12usize {
            for world in 1..5 {
                let rows: Vec<usize> = (0..n).collect();
                let joined: Vec<usize> = (0..world)
                    .flat_map(|r| shard(&rows, r, world).to_vec())
                    .collect();
                assert_eq!(joined, rows, "n={n} world={world}");
                let lens: Vec<usize> = (0..world).map(|r| shard(&rows, r, world).len()).collect();
                assert!(lens.iter().max().unwrap() - lens.iter().min().unwrap() <= 1);
            }
        }
    }
}

//! A c10d process group (ProcessGroupGloo, or ProcessGroupNCCL from its plugin) and the
//! collectives training needs, over tch tensors.

use std::ffi::{c_void, CString};
use std::path::{Path, PathBuf};
use std::ptr::NonNull;
use std::time::Duration;

use tch::{Device, Tensor};

use super::ffi;
use super::store::Store;
use super::DistError;

/// How element-wise reductions combine the ranks' tensors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReduceOp {
    Sum,
    Max,
    Min,
}

impl ReduceOp {
    fn code(self) -> i32 {
        match self {
            ReduceOp::Sum => 0,
            ReduceOp::Max => 1,
            ReduceOp::Min => 2,
        }
    }
}

/// Which c10d backend a group runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Gloo,
    Nccl,
}

/// Where Gloo's TCP transport binds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GlooDevice {
    /// The address this machine's hostname resolves to (loopback if it does not resolve).
    Default,
    /// The address a host name or IP resolves to.
    Hostname(String),
    /// A network interface (`GLOO_SOCKET_IFNAME`).
    Interface(String),
}

/// One rank's handle on a process group. Collectives block until every rank has taken part, or
/// fail after the group's timeout (or sooner, when a peer's connection closes).
#[derive(Debug)]
pub struct ProcessGroup {
    raw: NonNull<ffi::RawGroup>,
    rank: usize,
    size: usize,
    backend: Backend,
    timeout: Duration,
    /// Where small host values are staged for a collective (CPU for Gloo, the GPU for NCCL).
    scratch: Device,
}

// SAFETY: c10d backends queue work from any thread behind their own locks; the handle is freed
// only on drop.
unsafe impl Send for ProcessGroup {}
// SAFETY: as above.
unsafe impl Sync for ProcessGroup {}

/// Turns off c10d's flight recorder (`TORCH_FR_BUFFER_SIZE=0`) for Gloo unless the user set
/// it, before the first group reads it. In libtorch 2.11 its record path inserts into a shared
/// map before taking its lock, which crashed our tests where several groups run collectives
/// from different threads of one process; it also gathers a traceback for every collective.
/// txcat's own timeouts already name the rank and phase of a stuck collective.
fn disable_flight_recorder() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let set = ["TORCH_FR_BUFFER_SIZE", "TORCH_NCCL_TRACE_BUFFER_SIZE"]
            .iter()
            .any(|name| std::env::var_os(name).is_some());
        if !set {
            std::env::set_var("TORCH_FR_BUFFER_SIZE", "0");
        }
    });
}

/// File name of ProcessGroupNCCL's plugin (csrc/nccl_plugin.cpp), installed next to the binary.
pub const NCCL_PLUGIN_FILE: &str = "libtxcat_nccl.so";

/// Where ProcessGroupNCCL's plugin is: `TXCAT_NCCL_PLUGIN` when set, else [`NCCL_PLUGIN_FILE`]
/// next to the running binary (where the image puts it); `None` when that file is missing.
pub fn nccl_plugin() -> Option<PathBuf> {
    let path = match std::env::var_os("TXCAT_NCCL_PLUGIN") {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => std::env::current_exe()
            .ok()?
            .parent()?
            .join(NCCL_PLUGIN_FILE),
    };
    path.is_file().then_some(path)
}

impl ProcessGroup {
    /// Joins the Gloo group of `size` ranks rendezvousing through `store` as `rank`.
    pub fn gloo(
        store: &Store,
        rank: usize,
        size: usize,
        device: &GlooDevice,
        timeout: Duration,
    ) -> Result<Self, DistError> {
        check_rank(rank, size)?;
        disable_flight_recorder();
        let (hostname, iface) = match device {
            GlooDevice::Default => (None, None),
            GlooDevice::Hostname(h) => (Some(cstr("host name", h)?), None),
            GlooDevice::Interface(i) => (None, Some(cstr("network interface", i)?)),
        };
        let ptr = |c: &Option<CString>| c.as_ref().map_or(std::ptr::null(), |c| c.as_ptr());
        let mut raw = std::ptr::null_mut();
        // SAFETY: valid store handle, C strings (or NULL) and out-pointer.
        let result = ffi::check(unsafe {
            ffi::txcat_c10d_gloo_new(
                store.raw(),
                rank as i32,
                size as i32,
                ptr(&hostname),
                ptr(&iface),
                timeout.as_millis() as i64,
                &mut raw,
            )
        });
        Self::finish(result, raw, rank, size, Backend::Gloo, timeout, Device::Cpu)
    }

    /// Joins a ProcessGroupNCCL (tensors on CUDA device `gpu` only), made by the plugin at
    /// `plugin` ([`nccl_plugin`]). Not run on a GPU yet; on a CPU machine libtorch refuses it
    /// ("no GPUs found"), which scripts/nccl-check and tests/distributed_gloo.rs rely on.
    pub fn nccl(
        plugin: &Path,
        store: &Store,
        rank: usize,
        size: usize,
        gpu: usize,
        timeout: Duration,
    ) -> Result<Self, DistError> {
        check_rank(rank, size)?;
        let plugin = cstr("NCCL plugin path", &plugin.to_string_lossy())?;
        let mut raw = std::ptr::null_mut();
        // SAFETY: a C string, a valid store handle and an out-pointer.
        let result = ffi::check(unsafe {
            ffi::txcat_c10d_nccl_new(
                plugin.as_ptr(),
                store.raw(),
                rank as i32,
                size as i32,
                timeout.as_millis() as i64,
                &mut raw,
            )
        });
        // The constructor talks to no peer (NCCL connects on the first collective): a failure
        // here is this rank's own (no GPU, a plugin that does not load), not a peer's.
        result.map_err(|message| DistError::Backend {
            rank,
            world: size,
            backend: "NCCL",
            message,
        })?;
        Self::finish(
            Ok(()),
            raw,
            rank,
            size,
            Backend::Nccl,
            timeout,
            Device::Cuda(gpu),
        )
    }

    fn finish(
        result: Result<(), String>,
        raw: *mut ffi::RawGroup,
        rank: usize,
        size: usize,
        backend: Backend,
        timeout: Duration,
        scratch: Device,
    ) -> Result<Self, DistError> {
        let fail = |message: String| DistError::Collective {
            rank,
            world: size,
            phase: "connecting the process group".into(),
            message,
            timeout_s: timeout.as_secs(),
        };
        result.map_err(fail)?;
        let raw = NonNull::new(raw).ok_or_else(|| fail("the shim returned no group".into()))?;
        Ok(Self {
            raw,
            rank,
            size,
            backend,
            timeout,
            scratch,
        })
    }

    pub fn rank(&self) -> usize {
        self.rank
    }

    pub fn size(&self) -> usize {
        self.size
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// The device small tensors must be on for this group's collectives.
    pub fn scratch_device(&self) -> Device {
        self.scratch
    }

    /// Reduces `tensor` (contiguous) in place across all ranks with `op`; `phase` names the
    /// step of training for the error message.
    pub fn all_reduce(
        &self,
        tensor: &mut Tensor,
        op: ReduceOp,
        phase: &str,
    ) -> Result<(), DistError> {
        self.check_tensor(tensor, phase)?;
        // SAFETY: a live group and a defined tensor whose C_tensor is an at::Tensor*.
        let r = unsafe {
            ffi::txcat_c10d_allreduce(
                self.raw.as_ptr(),
                tensor.as_mut_ptr() as *mut c_void,
                op.code(),
            )
        };
        self.done(r, phase)
    }

    /// Overwrites `tensor` (contiguous, same shape on every rank) with `root`'s.
    pub fn broadcast(
        &self,
        tensor: &mut Tensor,
        root: usize,
        phase: &str,
    ) -> Result<(), DistError> {
        self.check_tensor(tensor, phase)?;
        // SAFETY: as in all_reduce.
        let r = unsafe {
            ffi::txcat_c10d_broadcast(
                self.raw.as_ptr(),
                tensor.as_mut_ptr() as *mut c_void,
                root as i32,
            )
        };
        self.done(r, phase)
    }

    /// Waits until every rank has reached the barrier.
    pub fn barrier(&self, phase: &str) -> Result<(), DistError> {
        // SAFETY: a live group.
        let r = unsafe { ffi::txcat_c10d_barrier(self.raw.as_ptr()) };
        self.done(r, phase)
    }

    /// Every rank's `input` (same shape and kind on all ranks), stacked: `[size, input.numel()]`,
    /// row `r` from rank `r`.
    pub fn all_gather(&self, input: &Tensor, phase: &str) -> Result<Tensor, DistError> {
        let torch = |e: tch::TchError| self.error(phase, e.to_string());
        let input = input.f_contiguous().map_err(torch)?;
        self.check_tensor(&input, phase)?;
        let numel = input.numel() as i64;
        let mut output = Tensor::f_zeros([self.size as i64, numel], (input.kind(), input.device()))
            .map_err(torch)?;
        // SAFETY: as in all_reduce; `output` holds size * numel elements of input's kind.
        let r = unsafe {
            ffi::txcat_c10d_allgather(
                self.raw.as_ptr(),
                input.as_ptr() as *mut c_void,
                output.as_mut_ptr() as *mut c_void,
            )
        };
        self.done(r, phase)?;
        Ok(output)
    }

    /// Every rank's `values`, in rank order (each rank may pass a different length).
    pub fn all_gather_i64(&self, values: &[i64], phase: &str) -> Result<Vec<Vec<i64>>, DistError> {
        self.all_gather_vec(values, phase)
    }

    /// Every rank's `bytes`, in rank order (each rank may pass a different length).
    pub fn all_gather_bytes(&self, bytes: &[u8], phase: &str) -> Result<Vec<Vec<u8>>, DistError> {
        self.all_gather_vec(bytes, phase)
    }

    /// Lengths first, then the values padded to the longest.
    fn all_gather_vec<T: tch::kind::Element + Copy + Default>(
        &self,
        values: &[T],
        phase: &str,
    ) -> Result<Vec<Vec<T>>, DistError> {
        let torch = |e: tch::TchError| self.error(phase, e.to_string());
        let on = |t: Tensor| t.f_to_device(self.scratch);
        let host = |t: Tensor| t.f_reshape([-1]).and_then(|t| t.f_to_device(Device::Cpu));
        let len = on(Tensor::from_slice(&[values.len() as i64])).map_err(torch)?;
        let lens = self.all_gather(&len, phase)?;
        let lens = Vec::<i64>::try_from(host(lens).map_err(torch)?).map_err(torch)?;
        let longest = lens.iter().copied().max().unwrap_or(0) as usize;
        if longest == 0 {
            return Ok(vec![Vec::new(); lens.len()]);
        }
        let mut padded = values.to_vec();
        padded.resize(longest, T::default());
        let all = self.all_gather(&on(Tensor::from_slice(&padded)).map_err(torch)?, phase)?;
        let flat = Vec::<T>::try_from(host(all).map_err(torch)?).map_err(torch)?;
        Ok(lens
            .iter()
            .enumerate()
            .map(|(r, &n)| flat[r * longest..r * longest + n as usize].to_vec())
            .collect())
    }

    /// Sums one f64 across ranks (loss sums, counts).
    pub fn sum_f64(&self, value: f64, phase: &str) -> Result<f64, DistError> {
        Ok(self.reduce_values(&[value], ReduceOp::Sum, phase)?[0])
    }

    /// `values` (the same length on every rank) reduced element-wise with `op` across ranks:
    /// the host-side values the loop agrees on (predictions, flags, counters).
    pub fn reduce_values<T: tch::kind::Element + Copy>(
        &self,
        values: &[T],
        op: ReduceOp,
        phase: &str,
    ) -> Result<Vec<T>, DistError> {
        let torch = |e: tch::TchError| self.error(phase, e.to_string());
        let mut t = self.scratch_tensor(values).map_err(torch)?;
        self.all_reduce(&mut t, op, phase)?;
        Vec::<T>::try_from(t.f_to_device(Device::Cpu).map_err(torch)?).map_err(torch)
    }

    /// `root`'s `values` on every rank (each rank passes the same length).
    pub fn broadcast_values<T: tch::kind::Element + Copy>(
        &self,
        values: &[T],
        root: usize,
        phase: &str,
    ) -> Result<Vec<T>, DistError> {
        let torch = |e: tch::TchError| self.error(phase, e.to_string());
        let mut t = self.scratch_tensor(values).map_err(torch)?;
        self.broadcast(&mut t, root, phase)?;
        Vec::<T>::try_from(t.f_to_device(Device::Cpu).map_err(torch)?).map_err(torch)
    }

    fn scratch_tensor<T: tch::kind::Element>(&self, values: &[T]) -> Result<Tensor, tch::TchError> {
        Tensor::f_from_slice(values)?.f_to_device(self.scratch)
    }

    fn check_tensor(&self, t: &Tensor, phase: &str) -> Result<(), DistError> {
        if !t.defined() {
            return Err(self.error(phase, "undefined tensor".into()));
        }
        if !t.is_contiguous() {
            return Err(self.error(phase, "tensor is not contiguous".into()));
        }
        if self.backend == Backend::Nccl && t.device() == Device::Cpu {
            return Err(self.error(phase, "NCCL collectives need CUDA tensors".into()));
        }
        Ok(())
    }

    fn done(&self, result: *mut std::ffi::c_char, phase: &str) -> Result<(), DistError> {
        ffi::check(result).map_err(|message| self.error(phase, message))
    }

    fn error(&self, phase: &str, message: String) -> DistError {
        DistError::Collective {
            rank: self.rank,
            world: self.size,
            phase: phase.to_string(),
            message,
            timeout_s: self.timeout.as_secs(),
        }
    }
}

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        // SAFETY: created by the shim, freed once.
        unsafe { ffi::txcat_c10d_group_free(self.raw.as_ptr()) };
    }
}

fn check_rank(rank: usize, size: usize) -> Result<(), DistError> {
    if size == 0 || rank >= size || size > i32::MAX as usize {
        return Err(DistError::Invalid(format!(
            "rank {rank} is outside a world of {size} workers"
        )));
    }
    Ok(())
}

fn cstr(what: &str, text: &str) -> Result<CString, DistError> {
    CString::new(text)
        .map_err(|_| DistError::Invalid(format!("{what} {text:?} contains a NUL byte")))
}

//! Loads libtorch's CUDA backend (libtorch_cuda.so) at start-up, and only where it can be used.
//!
//! The torch wheel is a CUDA build: libtorch_cuda.so pulls in cuBLAS, cuBLASLt, cuFFT, cuSPARSE,
//! nvJitLink, NCCL and more, about 120 MiB of resident memory and a good part of start-up
//! before the first line of `main`, on every machine. On a CPU instance none of it can run:
//! without NVIDIA's driver (libcuda.so.1) libtorch finds no GPU anyway. So the binary is linked
//! without it (build.rs) and `main` loads it here, before any libtorch call, when the driver is
//! present. Loaded this late, its static initialisers still register the CUDA kernels and hooks:
//! libtorch reads those lazily, on the first CUDA query.

use std::ffi::{CStr, CString};

/// Whether to load the CUDA backend (`TXCAT_CUDA_BACKEND`: `auto`, `load` or `skip`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    /// Load it when NVIDIA's driver library can be loaded (the default).
    Auto,
    /// Load it even without a driver (diagnostics: libtorch then reports the missing driver).
    Load,
    /// Never load it: CPU only, even on a GPU machine.
    Skip,
}

impl Policy {
    /// Parses the environment's value; `None` (unset) is `Auto`.
    pub fn parse(value: Option<&str>) -> Result<Self, String> {
        match value.map(str::trim) {
            None | Some("") | Some("auto") => Ok(Self::Auto),
            Some("load") => Ok(Self::Load),
            Some("skip") => Ok(Self::Skip),
            Some(other) => Err(format!(
                "TXCAT_CUDA_BACKEND={other:?} is not one of auto, load, skip"
            )),
        }
    }
}

/// What start-up did with the CUDA backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Loaded,
    /// Already in the process (a build that links it, e.g. with ProcessGroupNCCL compiled in).
    AlreadyLinked,
    NoDriver,
    Skipped,
    /// The wheel is a CPU build, or the library failed to load (the loader's message).
    Unavailable(String),
}

impl Outcome {
    /// A short phrase for the start-up log.
    pub fn describe(&self) -> String {
        match self {
            Self::Loaded => "loaded".into(),
            Self::AlreadyLinked => "linked into the binary".into(),
            Self::NoDriver => "not loaded: no NVIDIA driver (libcuda.so.1), CPU only".into(),
            Self::Skipped => "not loaded: TXCAT_CUDA_BACKEND=skip, CPU only".into(),
            Self::Unavailable(why) => format!("not available ({why}), CPU only"),
        }
    }
}

const BACKEND: &str = "libtorch_cuda.so";
const DRIVER: &str = "libcuda.so.1";

/// Loads the backend as `policy` says. Call once, first thing in `main`, before any libtorch
/// call: libtorch caches its CUDA hooks on the first CUDA query.
pub fn load(policy: Policy) -> Outcome {
    if is_loaded(BACKEND) {
        return Outcome::AlreadyLinked;
    }
    match policy {
        Policy::Skip => return Outcome::Skipped,
        Policy::Auto if !driver_present() => return Outcome::NoDriver,
        Policy::Auto | Policy::Load => {}
    }
    // By bare name: the loader searches the binary's RUNPATH (the wheel's lib folder), as it
    // does for libtorch_cpu.so. GLOBAL, so the CUDA kernels' symbols resolve like a linked
    // library's would.
    match open(BACKEND, libc::RTLD_NOW | libc::RTLD_GLOBAL) {
        Ok(()) => Outcome::Loaded,
        Err(why) => Outcome::Unavailable(why),
    }
}

/// Whether NVIDIA's driver library loads in this process (it then stays loaded: libtorch would
/// load it on its first CUDA query anyway).
pub fn driver_present() -> bool {
    open(DRIVER, libc::RTLD_LAZY | libc::RTLD_LOCAL).is_ok()
}

/// Whether a library of that name is already in the process (without loading it).
fn is_loaded(name: &str) -> bool {
    open(name, libc::RTLD_LAZY | libc::RTLD_NOLOAD).is_ok()
}

/// dlopen, keeping the handle open for the life of the process.
fn open(name: &str, flags: libc::c_int) -> Result<(), String> {
    let c_name = CString::new(name).map_err(|e| e.to_string())?;
    // SAFETY: a valid NUL-terminated name; the handle is deliberately never closed.
    let handle = unsafe { libc::dlopen(c_name.as_ptr(), flags) };
    if handle.is_null() {
        // SAFETY: dlerror returns a thread-local message or null right after a failed dlopen.
        let message = unsafe { libc::dlerror() };
        let why = if message.is_null() {
            format!("{name} could not be loaded")
        } else {
            // SAFETY: non-null, NUL-terminated, valid until the next dl* call on this thread.
            unsafe { CStr::from_ptr(message) }
                .to_string_lossy()
                .into_owned()
        };
        return Err(why);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_policy_parses_the_three_values_and_names_a_bad_one() {
        assert_eq!(Policy::parse(None), Ok(Policy::Auto));
        assert_eq!(Policy::parse(Some(" auto ")), Ok(Policy::Auto));
        assert_eq!(Policy::parse(Some("load")), Ok(Policy::Load));
        assert_eq!(Policy::parse(Some("skip")), Ok(Policy::Skip));
        let error = Policy::parse(Some("yes")).unwrap_err();
        assert!(error.contains("TXCAT_CUDA_BACKEND") && error.contains("auto, load, skip"));
    }
}

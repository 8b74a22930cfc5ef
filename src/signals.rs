//! SIGTERM / SIGINT as a flag polled between training steps (spot interruption, StopTrainingJob).
//!
//! SageMaker stops a training container like `docker stop -t 120`: SIGTERM, then SIGKILL 120 s
//! later. [`install`] turns the first SIGTERM or SIGINT into a flag; the training loop finishes
//! the optimizer step in flight, the checkpoint hook ([`crate::checkpoint::CheckpointHook`])
//! writes a checkpoint and stops `fit`, and the job exits non-zero with a failure reason that
//! says to rerun. A second signal ends the process at once (`_exit`, no destructors, nothing more
//! written) with status 128 + signal number (143 for SIGTERM, 130 for SIGINT).
//!
//! Invariants: handlers are installed at most once per process (later calls return the same
//! flag); the handlers only store to atomics or call `_exit`, which is async-signal-safe.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use signal_hook::consts::{SIGINT, SIGTERM};

/// The signals that request a graceful stop.
pub const STOP_SIGNALS: [i32; 2] = [SIGTERM, SIGINT];

/// Exit status after a second stop signal: the shell convention 128 + signal number.
pub fn exit_status_for(signal: i32) -> i32 {
    128 + signal
}

/// Failure to register the handlers.
#[derive(Debug, thiserror::Error)]
#[error("cannot install the {signal} handler: {source}; the job could not stop cleanly on a spot interruption")]
pub struct SignalError {
    signal: &'static str,
    #[source]
    source: std::io::Error,
}

/// What [`install`] registered: the stop flag and the last signal received (0 = none).
struct Installed {
    stop: Arc<AtomicBool>,
    last: Arc<AtomicUsize>,
}

static INSTALLED: OnceLock<Installed> = OnceLock::new();

/// Installs the SIGTERM and SIGINT handlers (once per process) and returns the flag they set.
///
/// Pass the flag to [`crate::checkpoint::CheckpointHook::stop_on`] (not directly to
/// `FitOptions::stop`, see the hook's docs). A second stop signal exits the process immediately.
pub fn install() -> Result<Arc<AtomicBool>, SignalError> {
    if let Some(installed) = INSTALLED.get() {
        return Ok(Arc::clone(&installed.stop));
    }
    let stop = Arc::new(AtomicBool::new(false));
    let last = Arc::new(AtomicUsize::new(0));
    for signal in STOP_SIGNALS {
        let name = signal_name(signal);
        let err = |source| SignalError {
            signal: name,
            source,
        };
        // Order matters: the shutdown action must see the flag as it was *before* this signal,
        // so it is registered ahead of the action that sets the flag.
        signal_hook::flag::register_conditional_shutdown(
            signal,
            exit_status_for(signal),
            Arc::clone(&stop),
        )
        .map_err(err)?;
        signal_hook::flag::register_usize(signal, Arc::clone(&last), signal as usize)
            .map_err(err)?;
        signal_hook::flag::register(signal, Arc::clone(&stop)).map_err(err)?;
    }
    let installed = INSTALLED.get_or_init(|| Installed { stop, last });
    Ok(Arc::clone(&installed.stop))
}

/// The last stop signal received since [`install`], as a name (`"SIGTERM"`, `"SIGINT"`).
pub fn received() -> Option<&'static str> {
    let last = INSTALLED.get()?.last.load(Ordering::SeqCst);
    (last != 0).then(|| signal_name(last as i32))
}

/// `"SIGTERM"` / `"SIGINT"`; `"signal"` for anything else.
pub fn signal_name(signal: i32) -> &'static str {
    match signal {
        SIGTERM => "SIGTERM",
        SIGINT => "SIGINT",
        _ => "signal",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_status_follows_the_shell_convention() {
        assert_eq!(exit_status_for(SIGTERM), 143);
        assert_eq!(exit_status_for(SIGINT), 130);
        assert_eq!(signal_name(SIGTERM), "SIGTERM");
    }
}

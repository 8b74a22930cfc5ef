//! The SageMaker training contract: paths under `/opt/ml`, the config files SageMaker writes,
//! and the failure file; and the hosting environment of `serve` ([`ServeSettings`]).
//!
//! Invariants: together with `cli`, this is the only module that reads the process environment
//! (see [`Paths::resolve`]); it uses no torch types; the failure file holds one line.

mod config;
mod paths;
pub mod serve;

pub use config::{
    read_hyperparameters, read_input_data_config, read_resource_config, ChannelConfig,
    ContractError, InputMode, ResourceConfig,
};
pub use paths::{Paths, S3Settings, DEFAULT_ROOT};
pub use serve::{ServeSettings, ServeSettingsError};

/// Bytes of the failure reason SageMaker shows (`DescribeTrainingJob.FailureReason`).
pub const FAILURE_REASON_LIMIT: usize = 1024;

/// Squeezes `reason` into one line of at most [`FAILURE_REASON_LIMIT`] bytes (cut on a char
/// boundary), so the part SageMaker shows is the useful part.
pub fn failure_line(reason: &str) -> String {
    let mut line = reason.split_whitespace().collect::<Vec<_>>().join(" ");
    if line.len() > FAILURE_REASON_LIMIT {
        let mut cut = FAILURE_REASON_LIMIT;
        while !line.is_char_boundary(cut) {
            cut -= 1;
        }
        line.truncate(cut);
    }
    line
}

/// Writes `reason` as one line to `paths.failure_file`, creating its directory.
pub fn write_failure(paths: &Paths, reason: &str) -> std::io::Result<()> {
    if let Some(dir) = paths.failure_file.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&paths.failure_file, format!("{}\n", failure_line(reason)))
}

/// Removes a failure file left by an earlier run in the same tree (local reruns), so the file
/// always describes this run.
pub fn clear_stale_failure(paths: &Paths) -> std::io::Result<()> {
    match std::fs::remove_file(&paths.failure_file) {
        Ok(()) => {
            tracing::info!(path = %paths.failure_file.display(), "removed the failure file of an earlier run");
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failure_line_is_one_line_and_bounded() {
        assert_eq!(failure_line("a\nb\r\n  c"), "a b c");
        let long = "é".repeat(2000);
        let line = failure_line(&long);
        assert!(line.len() <= FAILURE_REASON_LIMIT);
        assert!(line.len() >= FAILURE_REASON_LIMIT - 1);
    }
}

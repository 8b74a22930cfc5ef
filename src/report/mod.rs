//! The training report (issue 19): one self-contained `report.html` per job, with inline SVG
//! charts and CSS, no scripts and nothing fetched, so it reads offline and in a file preview.
//!
//! - [`collect`] records what the trainer only logs (training loss and learning rate by step)
//!   and a few misclassified evaluation texts; the job writes them as `log_history.json` and
//!   `eval_examples.json` beside `metrics.json`.
//! - [`inputs`] reads a finished job's output folder into [`ReportData`].
//! - [`render`] turns that into the page (pure, no I/O).
//!
//! Invariant: the page is built only from the files in the output folder, so the job's
//! `report.html` and `txcat report --output-dir DIR` give the same bytes. The report never fails
//! a training job ([`publish`] logs a warning instead).

pub mod collect;
pub mod inputs;
pub mod render;

use std::path::{Path, PathBuf};

pub use inputs::{ReportData, TrainingLog};

/// File names inside the output folder.
pub const REPORT_FILE: &str = "report.html";
pub const LOG_HISTORY_FILE: &str = "log_history.json";
pub const EXAMPLES_FILE: &str = "eval_examples.json";

/// Why a report could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("{path}: {source}; pass --output-dir the folder a training job wrote (output/data, with metrics.json)")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {reason}; the file is not what txcat train writes")]
    Parse { path: PathBuf, reason: String },
    #[error("cannot write {path}: {source}; check that the folder is writable")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("collecting misclassified evaluation examples: {0}")]
    Examples(String),
}

impl ReportError {
    /// True when the folder's files are at fault, not the machine (exit status 2).
    pub fn is_bad_input(&self) -> bool {
        matches!(self, ReportError::Read { .. } | ReportError::Parse { .. })
    }
}

/// Reads the outputs in `dir`, renders the page and writes `dir/report.html`; returns its path.
pub fn rebuild(dir: &Path) -> Result<PathBuf, ReportError> {
    let data = inputs::load(dir)?;
    let html = render::render(&data);
    let path = dir.join(REPORT_FILE);
    std::fs::write(&path, html).map_err(|source| ReportError::Write {
        path: path.clone(),
        source,
    })?;
    Ok(path)
}

/// What a finished training job hands over for its report.
pub struct JobReport<'a> {
    /// The (staged) output folder that already holds metrics.json and run_summary.json.
    pub dir: &'a Path,
    pub log: &'a TrainingLog,
    /// Misclassified evaluation rows, or why they could not be collected.
    pub examples: Result<inputs::EvalExamples, ReportError>,
}

/// Writes `log_history.json`, `eval_examples.json` and `report.html` into the job's output
/// folder. Never fails the job: each problem is logged as a warning and the rest still written.
pub fn publish(job: JobReport<'_>) {
    if !job.dir.join("metrics.json").exists() {
        tracing::info!("no report.html: the job had no evaluation rows to report on");
        return;
    }
    let write = |name: &str, value: serde_json::Value| {
        let path = job.dir.join(name);
        let text = serde_json::to_string_pretty(&value).unwrap_or_default();
        if let Err(e) = std::fs::write(&path, text + "\n") {
            tracing::warn!(path = %path.display(), "report input not written: {e}");
        }
    };
    write(
        LOG_HISTORY_FILE,
        serde_json::to_value(job.log).unwrap_or_default(),
    );
    match job.examples {
        Ok(examples) => write(
            EXAMPLES_FILE,
            serde_json::to_value(&examples).unwrap_or_default(),
        ),
        Err(e) => tracing::warn!("report: no example texts ({e})"),
    }
    match rebuild(job.dir) {
        Ok(path) => tracing::info!(path = %path.display(), "report written"),
        Err(e) => tracing::warn!("report.html not written (the job is not affected): {e}"),
    }
}

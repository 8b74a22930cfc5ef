//! Where a training job's time and memory go, phase by phase, for run_summary.json (issue 16:
//! the next optimisation is chosen from these figures, not guessed).

use std::time::Instant;

use serde_json::json;

use crate::train::LoopTimings;

/// Wall seconds per phase of the job, in order, with the process's anonymous memory after each
/// (Linux), for run_summary.json (issue 16: choose the next optimisation from figures). Each lap
/// is the time since the previous one.
pub struct PhaseClock {
    last: Instant,
    phases: Vec<(&'static str, f64, Option<f64>)>,
    evaluations: Vec<(u64, f64)>,
}

impl PhaseClock {
    pub fn new(read_seconds: f64) -> Self {
        Self {
            last: Instant::now(),
            phases: vec![("read", read_seconds, memory::rss_anon_mb())],
            evaluations: Vec::new(),
        }
    }

    pub fn lap(&mut self, name: &'static str) {
        let now = Instant::now();
        let seconds = now.duration_since(self.last).as_secs_f64();
        self.phases.push((name, seconds, memory::rss_anon_mb()));
        self.last = now;
    }

    /// A phase timed by its own code that has just ended; the next lap starts now.
    pub fn record(&mut self, name: &'static str, seconds: f64) {
        self.phases.push((name, seconds, memory::rss_anon_mb()));
        self.last = Instant::now();
    }

    /// Splits the training loop's wall time into steps, evaluations and checkpoint hooks.
    pub fn lap_fit(&mut self, timings: &LoopTimings) {
        let now = Instant::now();
        let total = now.duration_since(self.last).as_secs_f64();
        self.last = now;
        let evals: f64 = timings.evaluations.iter().map(|(_, s)| s).sum();
        let rss = memory::rss_anon_mb();
        self.phases.push((
            "train_steps",
            (total - evals - timings.hooks_seconds).max(0.0),
            rss,
        ));
        self.phases.push(("evaluations", evals, None));
        self.phases
            .push(("step_hooks", timings.hooks_seconds, None));
        self.evaluations = timings.evaluations.clone();
    }

    pub fn to_json(&self) -> serde_json::Value {
        let mut out = serde_json::Map::new();
        let mut rss = serde_json::Map::new();
        for (name, seconds, mb) in &self.phases {
            out.insert(format!("{name}_seconds"), json!(seconds));
            if let Some(mb) = mb {
                rss.insert((*name).to_string(), json!(mb.round()));
            }
        }
        let evals: Vec<_> = self
            .evaluations
            .iter()
            .map(|(step, seconds)| json!({"step": step, "seconds": seconds}))
            .collect();
        out.insert("evaluation_runs".into(), json!(evals));
        // Anonymous (heap) memory after each phase, and the process's peak resident memory.
        out.insert("rss_anon_mb_after".into(), serde_json::Value::Object(rss));
        out.insert("peak_rss_mb".into(), json!(memory::peak_rss_mb()));
        serde_json::Value::Object(out)
    }
}

/// The process's memory as Linux reports it in /proc/self/status (None elsewhere).
mod memory {
    fn status_mb(field: &str) -> Option<f64> {
        let status = std::fs::read_to_string("/proc/self/status").ok()?;
        let line = status.lines().find(|l| l.starts_with(field))?;
        let kib: f64 = line[field.len()..]
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse()
            .ok()?;
        Some(kib / 1024.0)
    }

    /// Heap and other anonymous pages now resident (shared libraries left out).
    pub fn rss_anon_mb() -> Option<f64> {
        status_mb("RssAnon:")
    }

    /// Peak resident memory so far (VmHWM), what an instance's memory limit is measured against.
    pub fn peak_rss_mb() -> Option<f64> {
        status_mb("VmHWM:").map(f64::round)
    }
}

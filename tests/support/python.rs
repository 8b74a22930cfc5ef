//! The test Python (`TXCAT_PYTHON`: the venv scripts/test sets up with torch, transformers,
//! scikit-learn and moto) and a JSON-in, JSON-out way to run reference scripts in it.
#![allow(dead_code)]

use std::io::Write;
use std::process::{Command, Stdio};

/// The interpreter from `TXCAT_PYTHON`; fails the test loudly, saying how to get it, when unset.
pub fn interpreter() -> String {
    std::env::var("TXCAT_PYTHON").unwrap_or_else(|_| {
        panic!("TXCAT_PYTHON is not set: run `source scripts/lib.sh && setup_test` or scripts/test (it provides the reference packages)")
    })
}

/// Runs `script` (`python -c`) with `input` as JSON on stdin and returns its stdout parsed as
/// JSON; `what` names the reference in the failure message.
pub fn run_json(script: &str, input: &serde_json::Value, what: &str) -> serde_json::Value {
    let mut child = Command::new(interpreter())
        .args(["-c", script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("start python for {what}: {e}"));
    child
        .stdin
        .take()
        .expect("python stdin")
        .write_all(input.to_string().as_bytes())
        .expect("write the reference input");
    let out = child.wait_with_output().expect("wait for python");
    assert!(out.status.success(), "{what} failed");
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{what} printed no JSON: {e}"))
}

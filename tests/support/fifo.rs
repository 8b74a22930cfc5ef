//! Named pipes for Pipe-mode tests.
#![allow(dead_code)]

use std::path::Path;
use std::process::Command;

/// Creates the FIFO `path` with the system's `mkfifo`, as SageMaker's agent does.
pub fn mkfifo(path: &Path) {
    let status = Command::new("mkfifo")
        .arg(path)
        .status()
        .expect("run mkfifo");
    assert!(status.success(), "mkfifo {}", path.display());
}

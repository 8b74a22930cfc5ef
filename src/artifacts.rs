//! Publishes the job's results all-or-nothing: the model directory and `output/data` are built in
//! a hidden staging folder and moved into place only after the whole run succeeded.
//!
//! Invariants: a failed or interrupted run never leaves a partial model where SageMaker packs
//! `model.tar.gz`; the staging folder lives *inside* the final directory because `/opt/ml/model`
//! may be its own mount point (a rename across file systems is not atomic, or fails outright);
//! moving in is one `rename` per top-level entry; stale staging folders of a killed run are removed
//! on the next start.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

/// Prefix of staging folders; hidden so tools listing the directory skip them.
const STAGING_PREFIX: &str = ".txcat-staging-";

/// A failure while staging or publishing artifacts.
#[derive(Debug, thiserror::Error)]
pub enum ArtifactError {
    #[error("cannot write {path}: {source}; check that the directory is writable and the disk has space")]
    Io {
        path: String,
        #[source]
        source: io::Error,
    },
    #[error("cannot serialise {what}: {source}")]
    Json {
        what: String,
        #[source]
        source: serde_json::Error,
    },
}

pub(crate) fn io_err(path: &Path) -> impl FnOnce(io::Error) -> ArtifactError + '_ {
    move |source| ArtifactError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// A directory whose contents become visible in `final_dir` only on [`StagedDir::commit`];
/// dropped uncommitted, it removes everything it staged.
#[derive(Debug)]
pub struct StagedDir {
    final_dir: PathBuf,
    staging: PathBuf,
    committed: bool,
}

impl StagedDir {
    /// Creates `final_dir` if needed, clears stale staging folders, and opens a fresh one.
    pub fn create(final_dir: &Path) -> Result<Self, ArtifactError> {
        fs::create_dir_all(final_dir).map_err(io_err(final_dir))?;
        remove_stale_staging(final_dir)?;
        let staging = final_dir.join(format!("{STAGING_PREFIX}{}", std::process::id()));
        fs::create_dir(&staging).map_err(io_err(&staging))?;
        Ok(Self {
            final_dir: final_dir.to_path_buf(),
            staging,
            committed: false,
        })
    }

    /// Where to write the artifacts before they are published.
    pub fn path(&self) -> &Path {
        &self.staging
    }

    /// Flushes the staged files to disk and renames each top-level entry into the final directory
    /// (replacing an entry of the same name), then removes the staging folder.
    pub fn commit(mut self) -> Result<(), ArtifactError> {
        let entries = sorted_entries(&self.staging)?;
        for entry in &entries {
            sync_tree(entry)?;
        }
        for entry in entries {
            let Some(name) = entry.file_name() else {
                continue;
            };
            let target = self.final_dir.join(name);
            if target.is_dir() && !target.is_symlink() {
                fs::remove_dir_all(&target).map_err(io_err(&target))?;
            }
            fs::rename(&entry, &target).map_err(io_err(&target))?;
        }
        fs::remove_dir(&self.staging).map_err(io_err(&self.staging))?;
        sync_dir(&self.final_dir)?;
        self.committed = true;
        Ok(())
    }
}

impl Drop for StagedDir {
    fn drop(&mut self) {
        if !self.committed {
            let _ = fs::remove_dir_all(&self.staging);
        }
    }
}

/// Writes `value` as pretty JSON to `path`.
pub fn write_json<T: serde::Serialize>(path: &Path, value: &T) -> Result<(), ArtifactError> {
    let text = serde_json::to_string_pretty(value).map_err(|source| ArtifactError::Json {
        what: path.display().to_string(),
        source,
    })?;
    fs::write(path, text + "\n").map_err(io_err(path))
}

fn remove_stale_staging(dir: &Path) -> Result<(), ArtifactError> {
    for entry in fs::read_dir(dir).map_err(io_err(dir))? {
        let entry = entry.map_err(io_err(dir))?;
        if entry
            .file_name()
            .to_string_lossy()
            .starts_with(STAGING_PREFIX)
        {
            let path = entry.path();
            tracing::warn!(path = %path.display(), "removing staging folder left by an interrupted run");
            fs::remove_dir_all(&path).map_err(io_err(&path))?;
        }
    }
    Ok(())
}

fn sorted_entries(dir: &Path) -> Result<Vec<PathBuf>, ArtifactError> {
    let mut entries = Vec::new();
    for entry in fs::read_dir(dir).map_err(io_err(dir))? {
        entries.push(entry.map_err(io_err(dir))?.path());
    }
    entries.sort();
    Ok(entries)
}

/// fsyncs a file, or every file below a directory, so a crash after the rename cannot expose
/// empty files.
fn sync_tree(path: &Path) -> Result<(), ArtifactError> {
    if path.is_dir() {
        for entry in sorted_entries(path)? {
            sync_tree(&entry)?;
        }
        sync_dir(path)
    } else {
        fs::File::open(path)
            .and_then(|f| f.sync_all())
            .map_err(io_err(path))
    }
}

fn sync_dir(path: &Path) -> Result<(), ArtifactError> {
    fs::File::open(path)
        .and_then(|f| f.sync_all())
        .map_err(io_err(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_is_visible_until_commit_and_drop_cleans_up() {
        let root = tempfile::tempdir().unwrap();
        let model = root.path().join("model");
        {
            let staged = StagedDir::create(&model).unwrap();
            fs::write(staged.path().join("config.json"), "{}").unwrap();
            assert!(!model.join("config.json").exists());
            // dropped without commit: a failed run
        }
        assert_eq!(fs::read_dir(&model).unwrap().count(), 0);
    }

    #[test]
    fn commit_moves_entries_and_replaces_old_ones() {
        let root = tempfile::tempdir().unwrap();
        let model = root.path().join("model");
        fs::create_dir_all(model.join("sub")).unwrap();
        fs::write(model.join("sub/old.txt"), "old").unwrap();
        fs::write(model.join("keep.txt"), "keep").unwrap();
        let staged = StagedDir::create(&model).unwrap();
        fs::create_dir(staged.path().join("sub")).unwrap();
        fs::write(staged.path().join("sub/new.txt"), "new").unwrap();
        fs::write(staged.path().join("config.json"), "{}").unwrap();
        staged.commit().unwrap();
        let mut names: Vec<String> = fs::read_dir(&model)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, ["config.json", "keep.txt", "sub"]);
        assert!(!model.join("sub/old.txt").exists());
        assert_eq!(
            fs::read_to_string(model.join("sub/new.txt")).unwrap(),
            "new"
        );
    }

    #[test]
    fn stale_staging_of_a_killed_run_is_removed() {
        let root = tempfile::tempdir().unwrap();
        let stale = root.path().join(format!("{STAGING_PREFIX}999999"));
        fs::create_dir_all(&stale).unwrap();
        fs::write(stale.join("model.safetensors"), "partial").unwrap();
        let staged = StagedDir::create(root.path()).unwrap();
        assert!(!stale.exists());
        assert!(staged.path().exists());
    }
}

//! File and FastFile channels: a local directory (or one file) as an [`ObjectStream`].
//!
//! Invariants: every data file ([`super::DATA_FILE_KINDS`]) under the directory, found recursively, in
//! sorted order of its path relative to the directory; hidden and `_`-marker files and folders are
//! skipped; other files are skipped with a warning; symlinked folders are not followed (no loops),
//! symlinked files are. Files are opened one at a time, when the reader asks for them.

use super::{
    is_data_file_name, is_hidden_name, open_file_object, InputObject, ObjectStream, StorageError,
};
use std::path::{Path, PathBuf};

/// The data files of `channel` at `location` (a directory, or a single file taken as is).
pub fn open_channel(
    channel: &str,
    location: &Path,
) -> Result<Box<dyn ObjectStream + Send>, StorageError> {
    let io = |source| StorageError::Io {
        path: location.display().to_string(),
        source,
    };
    let meta = match std::fs::metadata(location) {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(StorageError::MissingDir {
                channel: channel.to_string(),
                path: location.display().to_string(),
            })
        }
        Err(e) => return Err(io(e)),
    };
    let files = if meta.is_file() {
        vec![location.to_path_buf()]
    } else {
        let mut files = Vec::new();
        let mut skipped = Vec::new();
        collect(location, &mut files, &mut skipped)?;
        for path in &skipped {
            tracing::warn!(channel, path = %path.display(), "skipping a file that is not {}", super::DATA_FILE_KINDS);
        }
        if files.is_empty() {
            return Err(StorageError::Empty {
                channel: channel.to_string(),
                location: location.display().to_string(),
            });
        }
        files.sort();
        files
    };
    tracing::debug!(channel, files = files.len(), "local channel opened");
    Ok(Box::new(LocalFiles {
        files: files.into_iter(),
    }))
}

/// Data files under `dir` into `files`, other visible files into `skipped`.
fn collect(
    dir: &Path,
    files: &mut Vec<PathBuf>,
    skipped: &mut Vec<PathBuf>,
) -> Result<(), StorageError> {
    let io = |source| StorageError::Io {
        path: dir.display().to_string(),
        source,
    };
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let entry = entry.map_err(io)?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if is_hidden_name(&name) {
            continue;
        }
        let path = entry.path();
        let file_type = entry.file_type().map_err(io)?;
        if file_type.is_dir() {
            collect(&path, files, skipped)?;
        } else if file_type.is_file() || (file_type.is_symlink() && path.is_file()) {
            if is_data_file_name(&name) {
                files.push(path);
            } else {
                skipped.push(path);
            }
        }
    }
    Ok(())
}

struct LocalFiles {
    files: std::vec::IntoIter<PathBuf>,
}

impl ObjectStream for LocalFiles {
    fn next_object(&mut self) -> Result<Option<InputObject>, StorageError> {
        let Some(path) = self.files.next() else {
            return Ok(None);
        };
        open_file_object(&path, false).map(Some)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(stream: &mut dyn ObjectStream) -> Vec<String> {
        let mut out = Vec::new();
        while let Some(obj) = stream.next_object().unwrap() {
            out.push(obj.name);
        }
        out
    }

    #[test]
    fn recursive_sorted_hidden_and_other_files_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("b/sub")).unwrap();
        std::fs::create_dir_all(root.join(".hidden")).unwrap();
        for file in [
            "b/sub/z.csv",
            "b/a.CSV",
            "a.csv.gz",
            "c.jsonl.gz",
            ".x.csv",
            "_SUCCESS",
            ".hidden/h.csv",
            "README.md",
        ] {
            std::fs::write(root.join(file), "text,category\n").unwrap();
        }
        let mut stream = open_channel("train", root).unwrap();
        let got = names(stream.as_mut());
        let want: Vec<String> = ["a.csv.gz", "b/a.CSV", "b/sub/z.csv", "c.jsonl.gz"]
            .iter()
            .map(|f| root.join(f).display().to_string())
            .collect();
        assert_eq!(got, want);
    }

    #[test]
    fn missing_empty_and_single_file() {
        let dir = tempfile::tempdir().unwrap();
        let err = open_channel("train", &dir.path().join("nope"))
            .err()
            .unwrap();
        assert!(matches!(err, StorageError::MissingDir { .. }));
        std::fs::write(dir.path().join("notes.txt"), "x").unwrap();
        let err = open_channel("train", dir.path()).err().unwrap();
        assert!(matches!(err, StorageError::Empty { .. }), "{err}");
        let file = dir.path().join("notes.txt");
        let mut stream = open_channel("train", &file).unwrap();
        assert_eq!(names(stream.as_mut()), vec![file.display().to_string()]);
    }
}

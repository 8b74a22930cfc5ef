//! Pipe-mode channels: SageMaker streams a channel's objects, concatenated, through the FIFO
//! `/opt/ml/input/data/<channel>_<epoch>`. The FIFO is one [`InputObject`] marked `concatenated`
//! (so the CSV layer skips the header lines repeated where one file ends and the next begins).
//!
//! Invariants: the FIFO is opened lazily by the first `next_object` call (opening waits, up to a
//! limit, for the writer side to open) and yielded exactly once; epochs after the first are not
//! read (the caller keeps the rows).

use super::{open_file_object, InputObject, ObjectStream, StorageError};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// How long [`open_channel`] waits for a FIFO that does not exist yet.
pub const DEFAULT_FIFO_WAIT: Duration = Duration::from_secs(10);
/// How long opening the FIFO waits for a writer (SageMaker opens its end as the job starts; a
/// FIFO nobody writes to would otherwise hang the job until its time limit).
pub const DEFAULT_WRITER_WAIT: Duration = Duration::from_secs(600);

/// The FIFO `fifo` (`/opt/ml/input/data/<channel>_<epoch>`) as one concatenated object.
pub fn open_channel(
    channel: &str,
    fifo: &Path,
) -> Result<Box<dyn ObjectStream + Send>, StorageError> {
    open_channel_waiting(channel, fifo, DEFAULT_FIFO_WAIT, DEFAULT_WRITER_WAIT)
}

/// [`open_channel`], waiting up to `wait` for the FIFO to appear (SageMaker may create it a
/// little after the container starts) and up to `writer_wait` for its writer.
pub fn open_channel_waiting(
    channel: &str,
    fifo: &Path,
    wait: Duration,
    writer_wait: Duration,
) -> Result<Box<dyn ObjectStream + Send>, StorageError> {
    let started = Instant::now();
    while !fifo.exists() {
        if started.elapsed() >= wait {
            return Err(StorageError::MissingFifo {
                channel: channel.to_string(),
                path: fifo.display().to_string(),
            });
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(Box::new(PipeStream {
        channel: channel.to_string(),
        fifo: Some(fifo.to_path_buf()),
        writer_wait,
    }))
}

/// The FIFO path for `channel` at `epoch` under `data_dir` (`/opt/ml/input/data`).
pub fn fifo_path(data_dir: &Path, channel: &str, epoch: u32) -> PathBuf {
    data_dir.join(format!("{channel}_{epoch}"))
}

struct PipeStream {
    channel: String,
    fifo: Option<PathBuf>,
    writer_wait: Duration,
}

impl ObjectStream for PipeStream {
    fn next_object(&mut self) -> Result<Option<InputObject>, StorageError> {
        let Some(path) = self.fifo.take() else {
            return Ok(None);
        };
        // Opening a FIFO for reading blocks until a writer opens it; do that on a helper thread
        // so a FIFO nobody writes to becomes an error instead of a hang (the thread is left
        // blocked; the job is failing anyway).
        let (tx, rx) = std::sync::mpsc::channel();
        let target = path.clone();
        std::thread::spawn(move || {
            let _ = tx.send(open_file_object(&target, true));
        });
        match rx.recv_timeout(self.writer_wait) {
            Ok(opened) => opened.map(Some),
            Err(_) => Err(StorageError::SilentFifo {
                channel: self.channel.clone(),
                path: path.display().to_string(),
                seconds: self.writer_wait.as_secs_f64(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fifo_names_follow_the_contract() {
        let path = fifo_path(Path::new("/opt/ml/input/data"), "train", 0);
        assert_eq!(path, PathBuf::from("/opt/ml/input/data/train_0"));
    }
}

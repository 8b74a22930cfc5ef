//! Pipe-mode channels: a FIFO made with `mkfifo`, written by a separate process (`cat` of two
//! CSV files, each with its header), read as one concatenated object.

mod support;

use std::io::Read;
use std::process::Command;
use std::time::{Duration, Instant};
use support::fifo::mkfifo;
use txcat::storage::{pipe, StorageError};

#[test]
fn fifo_is_one_concatenated_object_with_exact_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let first = b"text,label\ncoffee,food\nbus,transport\n";
    let second = b"text,label\nrent,housing\n";
    std::fs::write(dir.path().join("a.csv"), first).unwrap();
    std::fs::write(dir.path().join("b.csv"), second).unwrap();
    let fifo = pipe::fifo_path(dir.path(), "train", 0);
    mkfifo(&fifo);
    // The writer is another process, as SageMaker's is.
    let mut writer = Command::new("sh")
        .arg("-c")
        .arg(format!("cat a.csv b.csv > {}", fifo.display()))
        .current_dir(dir.path())
        .spawn()
        .unwrap();

    let mut stream = pipe::open_channel("train", &fifo).unwrap();
    let mut object = stream.next_object().unwrap().expect("the FIFO");
    assert!(object.concatenated);
    assert_eq!(object.name, fifo.display().to_string());
    let mut got = Vec::new();
    object.reader.read_to_end(&mut got).unwrap();
    assert_eq!(got, [&first[..], &second[..]].concat());
    assert!(
        stream.next_object().unwrap().is_none(),
        "a FIFO is read once"
    );
    assert!(writer.wait().unwrap().success());
}

#[test]
fn missing_fifo_fails_after_the_wait_naming_channel_and_path() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("validation_0");
    let started = Instant::now();
    let err = pipe::open_channel_waiting(
        "validation",
        &fifo,
        Duration::from_millis(200),
        Duration::from_secs(5),
    )
    .err()
    .expect("missing FIFO");
    assert!(started.elapsed() >= Duration::from_millis(200));
    assert!(matches!(err, StorageError::MissingFifo { .. }), "{err:?}");
    let text = err.to_string();
    assert!(
        text.contains("'validation'") && text.contains(&fifo.display().to_string()),
        "{text}"
    );
}

#[test]
fn fifo_created_shortly_after_start_is_waited_for() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("train_0");
    let writer = {
        let fifo = fifo.clone();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(300));
            mkfifo(&fifo);
            std::fs::write(&fifo, b"text,label\nx,y\n").unwrap();
        })
    };
    let mut stream = pipe::open_channel_waiting(
        "train",
        &fifo,
        Duration::from_secs(10),
        Duration::from_secs(10),
    )
    .unwrap();
    let mut object = stream.next_object().unwrap().unwrap();
    let mut got = String::new();
    object.reader.read_to_string(&mut got).unwrap();
    assert_eq!(got, "text,label\nx,y\n");
    writer.join().unwrap();
}

#[test]
fn fifo_nobody_writes_to_fails_after_the_writer_wait() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = pipe::fifo_path(dir.path(), "train", 0);
    mkfifo(&fifo);
    let mut stream = pipe::open_channel_waiting(
        "train",
        &fifo,
        Duration::from_secs(1),
        Duration::from_millis(300),
    )
    .unwrap();
    let started = Instant::now();
    let err = stream.next_object().err().expect("no writer");
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(300) && waited < Duration::from_secs(5),
        "{waited:?}"
    );
    assert!(matches!(err, StorageError::SilentFifo { .. }), "{err:?}");
    let text = err.to_string();
    assert!(
        text.contains("'train'") && text.contains(&fifo.display().to_string()),
        "{text}"
    );
    assert!(err.is_bad_input());
}

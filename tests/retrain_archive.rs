//! A model that arrives packed (issue 12, part 1), through the binary: `txcat train`'s output
//! packed as `model.tar.gz` is the next job's starting model, from the `model` channel (File
//! mode drops the tarball itself there) and from `model_name_or_path`; crafted archives are
//! refused with one line naming the archive and the entry, and nothing lands outside scratch;
//! the dry run catches a missing model, a broken config.json and a bad safetensors header
//! without training.

mod common;
mod support;

use common::{describe, fixture, separable_csv, OptMl};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Output;
use tar::EntryType;
use txcat::storage::archive::{unpack, UnpackLimits};

/// Quick-job settings: a couple of steps of the tiny model on one thread.
const QUICK: &[(&str, &str)] = &[
    ("max_steps", "2"),
    ("train_batch_size", "16"),
    ("learning_rate", "0.003"),
    ("max_length", "32"),
    ("num_threads", "1"),
    ("save_strategy", "no"),
    ("logging_steps", "1"),
];

/// A tree with train/validation channels (File mode, plus a `model` channel when asked) and the
/// quick settings plus `extra`.
fn job(extra: &[(&str, &str)], model_channel: bool) -> OptMl {
    let ml = OptMl::new();
    ml.add_channel_file("train", "train.csv", separable_csv(48, 1));
    ml.add_channel_file("validation", "val.csv", separable_csv(16, 2));
    let mut channels = vec![("train", "File"), ("validation", "File")];
    if model_channel {
        channels.push(("model", "File"));
        std::fs::create_dir_all(ml.path("input/data/model")).unwrap();
    }
    ml.write_inputdataconfig(&channels);
    let mut hp: Vec<(&str, &str)> = QUICK.to_vec();
    hp.extend_from_slice(extra);
    ml.write_hyperparameters(&hp);
    ml
}

/// Runs `txcat <args>` with a private TMPDIR (where scratch folders go) and no model home.
fn run(ml: &OptMl, tmp: &Path, args: &[&str]) -> Output {
    ml.command()
        .env("TMPDIR", tmp)
        .env_remove("TXCAT_MODEL_HOME")
        .args(args)
        .output()
        .expect("run txcat")
}

fn assert_ok(out: &Output) {
    assert_eq!(out.status.code(), Some(0), "{}", describe(out));
}

fn read_json(path: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}

/// Trains the first job from the fixture and returns its tree (the model in `model/`).
fn first_job() -> OptMl {
    let model = fixture("tiny-distilbert-trainable");
    let ml = job(&[("model_name_or_path", model.to_str().unwrap())], false);
    let tmp = tempfile::tempdir().unwrap();
    assert_ok(&run(&ml, tmp.path(), &["train"]));
    ml
}

/// `model.tar.gz` of `dir` as `txcat train`'s `output_uri` upload packs it.
fn pack_like_txcat(dir: &Path, out: &Path) {
    let mut file = std::fs::File::create(out).unwrap();
    txcat::storage::s3::write_tarball(dir, &mut file).unwrap();
}

/// The labels of the run's head match, from `run_summary.json`.
fn kept_labels(ml: &OptMl) -> Vec<String> {
    let summary = read_json(&ml.path("output/data/run_summary.json"));
    serde_json::from_value(summary["warm_start"]["kept"].clone()).unwrap()
}

fn all_labels() -> Vec<String> {
    common::CLASSES.iter().map(|(l, _)| l.to_string()).collect()
}

fn is_empty_dir(dir: &Path) -> bool {
    std::fs::read_dir(dir).unwrap().next().is_none()
}

/// Packs `dir` into `archive` with the system's tar, as SageMaker does (`./`, `./config.json`, ...).
fn system_tar(flags: &str, archive: &std::path::Path, dir: &std::path::Path) {
    let status = std::process::Command::new("tar")
        .arg(flags)
        .arg(archive)
        .arg("-C")
        .arg(dir)
        .arg(".")
        .status()
        .expect("tar runs");
    assert!(status.success(), "tar {flags} {}", archive.display());
}

#[test]
fn the_model_channel_takes_the_tarball_of_the_last_run() {
    let first = first_job();
    // The issue's job: the previous model.tar.gz as the `model` channel, model_name_or_path
    // left at its default.
    let next = job(&[], true);
    pack_like_txcat(
        &first.model_dir(),
        &next.path("input/data/model/model.tar.gz"),
    );
    let tmp = tempfile::tempdir().unwrap();

    let out = run(&next, tmp.path(), &["train", "--dry-run"]);
    let summary = next.assert_dry_run_ok(&out);
    assert!(
        summary.contains("model.tar.gz (unpacked) (checked; weights not loaded)"),
        "{summary}"
    );
    assert!(
        summary.contains("trained rows reused by label name"),
        "{summary}"
    );
    assert!(is_empty_dir(tmp.path()), "dry run left scratch behind");

    assert_ok(&run(&next, tmp.path(), &["train"]));
    // Every label kept its row: the head came from the tarball, not from a fresh start.
    assert_eq!(kept_labels(&next), all_labels());
    let config = read_json(&next.model_dir().join("config.json"));
    assert_eq!(config["id2label"]["0"], "FEES");
    assert!(next.model_dir().join("tokenizer.json").is_file());
    assert!(is_empty_dir(tmp.path()), "training left scratch behind");
}

#[test]
fn model_name_or_path_takes_a_tarball_packed_like_sagemaker() {
    let first = first_job();
    let store = tempfile::tempdir().unwrap();
    // SageMaker packs /opt/ml/model with tar: entries `./`, `./config.json`, ...
    let archive = store.path().join("model.tar.gz");
    system_tar("-czf", &archive, &first.model_dir());
    let next = job(&[("model_name_or_path", archive.to_str().unwrap())], false);
    let tmp = tempfile::tempdir().unwrap();
    next.assert_dry_run_ok(&run(&next, tmp.path(), &["train", "--dry-run"]));
    assert_ok(&run(&next, tmp.path(), &["train"]));
    assert_eq!(kept_labels(&next), all_labels());

    // The same through a plain .tar named in the channel folder.
    let plain = job(&[], true);
    system_tar(
        "-cf",
        &plain.path("input/data/model/previous.tar"),
        &first.model_dir(),
    );
    assert_ok(&run(&plain, tmp.path(), &["train"]));
    assert_eq!(kept_labels(&plain), all_labels());
}

#[test]
fn an_s3_uri_may_name_the_tarball_or_the_job_output_prefix() {
    let first = first_job();
    let packed = tempfile::tempdir().unwrap();
    let archive = packed.path().join("model.tar.gz");
    pack_like_txcat(&first.model_dir(), &archive);
    let other = packed.path().join("output.tar.gz");
    pack_like_txcat(&first.path("output/data"), &other);
    let moto = support::moto::MotoServer::start();
    let admin = moto.admin();
    admin.create_bucket("models");
    // A training job's output prefix: model.tar.gz next to output.tar.gz.
    admin.put(
        "models",
        "run-1/output/model.tar.gz",
        &std::fs::read(&archive).unwrap(),
    );
    admin.put(
        "models",
        "run-1/output/output.tar.gz",
        &std::fs::read(&other).unwrap(),
    );
    let run_s3 = |ml: &OptMl, tmp: &Path, args: &[&str]| {
        let mut command = ml.command();
        support::moto::point_child_at(&mut command, &moto.endpoint);
        command
            .env("TMPDIR", tmp)
            .env_remove("TXCAT_MODEL_HOME")
            .args(args)
            .output()
            .expect("run txcat")
    };
    let tmp = tempfile::tempdir().unwrap();

    let key = job(
        &[(
            "model_name_or_path",
            "s3://models/run-1/output/model.tar.gz",
        )],
        false,
    );
    assert_ok(&run_s3(&key, tmp.path(), &["train"]));
    assert_eq!(kept_labels(&key), all_labels());

    let prefix = job(
        &[("model_name_or_path", "s3://models/run-1/output/")],
        false,
    );
    let summary = prefix.assert_dry_run_ok(&run_s3(&prefix, tmp.path(), &["train", "--dry-run"]));
    assert!(
        summary.contains("s3://models/run-1/output/ (unpacked)"),
        "{summary}"
    );
    assert!(is_empty_dir(tmp.path()), "scratch left behind");
}

/// One raw tar entry, with the name and link bytes written as given (the `tar` crate's own
/// setters refuse `..` and absolute paths, which is what these tests need to write).
fn raw_entry<W: Write>(
    builder: &mut tar::Builder<W>,
    name: &str,
    kind: EntryType,
    link: Option<&str>,
    data: &[u8],
) {
    let mut header = tar::Header::new_gnu();
    {
        let old = header.as_old_mut();
        old.name[..name.len()].copy_from_slice(name.as_bytes());
        if let Some(link) = link {
            old.linkname[..link.len()].copy_from_slice(link.as_bytes());
        }
    }
    header.set_entry_type(kind);
    header.set_size(data.len() as u64);
    header.set_mode(0o644);
    header.set_cksum();
    builder.append(&header, data).unwrap();
}

/// A raw entry: name, type, link target, content.
type Raw<'a> = (&'a str, EntryType, Option<&'a str>, &'a [u8]);

/// A gzip tarball holding a plausible model file first, then `bad` entries.
fn crafted(path: &Path, bad: &[Raw<'_>]) {
    let file = std::fs::File::create(path).unwrap();
    let gz = flate2::write::GzEncoder::new(file, flate2::Compression::fast());
    let mut builder = tar::Builder::new(gz);
    raw_entry(
        &mut builder,
        "config.json",
        EntryType::Regular,
        None,
        br#"{"model_type":"distilbert"}"#,
    );
    for (name, kind, link, data) in bad {
        raw_entry(&mut builder, name, *kind, *link, data);
    }
    builder.into_inner().unwrap().finish().unwrap();
}

#[test]
fn crafted_archives_are_refused_and_nothing_lands_outside_scratch() {
    let outside = tempfile::tempdir().unwrap();
    let outside_abs = outside.path().join("abs-evil.txt");
    let outside_dir = outside.path().display().to_string();
    let abs_name = outside_abs.display().to_string();
    // (entry named in the error, entries after config.json, words of the reason)
    let cases: Vec<(&str, Vec<Raw<'_>>, &str)> = vec![
        (
            "../../evil.txt",
            vec![("../../evil.txt", EntryType::Regular, None, b"x")],
            "`..`",
        ),
        (
            abs_name.as_str(),
            vec![(abs_name.as_str(), EntryType::Regular, None, b"x")],
            "absolute",
        ),
        (
            "escape",
            // The classic: a symlink out, then a file written through it.
            vec![
                (
                    "escape",
                    EntryType::Symlink,
                    Some(outside_dir.as_str()),
                    b"",
                ),
                ("escape/pwned.txt", EntryType::Regular, None, b"x"),
            ],
            "symlink",
        ),
        (
            "up",
            vec![("up", EntryType::Symlink, Some("../../../etc/passwd"), b"")],
            "outside the folder",
        ),
        (
            "hard",
            vec![("hard", EntryType::Link, Some("../outside.txt"), b"")],
            "hard link",
        ),
        ("tty", vec![("tty", EntryType::Char, None, b"")], "device"),
        ("pipe", vec![("pipe", EntryType::Fifo, None, b"")], "FIFO"),
    ];
    for (entry, bad, reason) in cases {
        let ml = job(&[], true);
        let archive = ml.path("input/data/model/model.tar.gz");
        crafted(&archive, &bad);
        let tmp = tempfile::tempdir().unwrap();
        let out = run(&ml, tmp.path(), &["train", "--dry-run"]);
        let text = ml.assert_failed(
            &out,
            2,
            &[&archive.display().to_string(), entry, reason, "refusing"],
        );
        assert!(text.contains("tar -czf"), "says how to repack: {text}");
        assert!(
            is_empty_dir(tmp.path()),
            "{entry}: scratch or an escaped file left in TMPDIR"
        );
        assert!(
            is_empty_dir(outside.path()),
            "{entry}: written outside scratch"
        );
    }
}

#[test]
fn size_and_entry_caps_stop_an_archive() {
    let tmp = tempfile::tempdir().unwrap();
    let archive = tmp.path().join("big.tar.gz");
    let big = vec![0u8; 4096];
    crafted(
        &archive,
        &[("model.safetensors", EntryType::Regular, None, &big)],
    );
    let dest = tmp.path().join("dest");
    std::fs::create_dir(&dest).unwrap();
    let limits = UnpackLimits {
        max_bytes: 2048,
        ..UnpackLimits::default()
    };
    let err = unpack(&archive, &dest, limits).unwrap_err().to_string();
    assert!(
        err.contains("big.tar.gz") && err.contains("model.safetensors") && err.contains("2048"),
        "{err}"
    );
    // The entry is refused from its header: no byte of it is written.
    assert!(!dest.join("model.safetensors").exists());

    let limits = UnpackLimits {
        max_entries: 1,
        ..UnpackLimits::default()
    };
    let err = unpack(&archive, &dest, limits).unwrap_err().to_string();
    assert!(err.contains("more than 1 entries"), "{err}");

    // Within the caps the same archive unpacks.
    let fresh = tmp.path().join("ok");
    std::fs::create_dir(&fresh).unwrap();
    let done = unpack(&archive, &fresh, UnpackLimits::default()).unwrap();
    assert_eq!(done.files, 2);
    assert_eq!(std::fs::read(fresh.join("model.safetensors")).unwrap(), big);
}

#[test]
fn links_inside_the_archive_become_copies() {
    let tmp = tempfile::tempdir().unwrap();
    let archive = tmp.path().join("links.tar.gz");
    crafted(
        &archive,
        &[
            ("real/vocab.txt", EntryType::Regular, None, b"[PAD]\n"),
            ("vocab.txt", EntryType::Symlink, Some("real/vocab.txt"), b""),
            ("again.txt", EntryType::Link, Some("real/vocab.txt"), b""),
        ],
    );
    let dest = tmp.path().join("dest");
    std::fs::create_dir(&dest).unwrap();
    unpack(&archive, &dest, UnpackLimits::default()).unwrap();
    for name in ["vocab.txt", "again.txt"] {
        let path = dest.join(name);
        assert!(!path.is_symlink(), "{name} is a link");
        assert_eq!(std::fs::read(&path).unwrap(), b"[PAD]\n");
    }
}

#[test]
fn a_corrupt_archive_is_one_clear_line() {
    let ml = job(&[], true);
    let archive = ml.path("input/data/model/model.tar.gz");
    let mut bytes = Vec::new();
    {
        let mut gz = flate2::write::GzEncoder::new(&mut bytes, flate2::Compression::fast());
        gz.write_all(&[7u8; 700]).unwrap();
        gz.finish().unwrap();
    }
    std::fs::write(&archive, &bytes).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let out = run(&ml, tmp.path(), &["train", "--dry-run"]);
    ml.assert_failed(&out, 2, &[&archive.display().to_string(), "not a readable"]);
}

/// A copy of the trainable fixture in a temporary folder, to break.
fn model_copy() -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("model");
    std::fs::create_dir(&dir).unwrap();
    for entry in std::fs::read_dir(fixture("tiny-distilbert-trainable")).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, dir.join(path.file_name().unwrap())).unwrap();
    }
    (tmp, dir)
}

/// Dry-runs a job whose model is `dir` and expects exit 2 with `needles` in the failure line.
fn dry_run_fails(dir: &Path, needles: &[&str]) -> String {
    let ml = job(&[("model_name_or_path", dir.to_str().unwrap())], false);
    let tmp = tempfile::tempdir().unwrap();
    let out = run(&ml, tmp.path(), &["train", "--dry-run"]);
    ml.assert_failed(&out, 2, needles)
}

#[test]
fn the_dry_run_catches_a_missing_model() {
    // The issue's job: a `model` channel that does not hold the model, default name.
    let ml = job(&[], true);
    ml.add_channel_file("model", "README.txt", "weights went elsewhere");
    let tmp = tempfile::tempdir().unwrap();
    let out = run(&ml, tmp.path(), &["train", "--dry-run"]);
    ml.assert_failed(
        &out,
        2,
        &[
            "model `distilbert-base-uncased` not found",
            "input/data/model",
        ],
    );
    dry_run_fails(Path::new("/nonexistent/model"), &["/nonexistent/model"]);
}

#[test]
fn the_dry_run_catches_a_broken_config() {
    let (_tmp, dir) = model_copy();
    std::fs::write(dir.join("config.json"), "{\"model_type\": \"distilbert\",").unwrap();
    dry_run_fails(&dir, &["config.json", "not valid JSON"]);

    // Parses, but describes a model the weights are not: 3 layers, a larger vocabulary.
    let mut config = read_json(&fixture("tiny-distilbert-trainable/config.json"));
    config["n_layers"] = 3.into();
    config["vocab_size"] = 200.into();
    std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
    dry_run_fails(
        &dir,
        &[
            "model.safetensors",
            "missing: distilbert.transformer.layer.2.",
            "distilbert.embeddings.word_embeddings.weight is [144, 32] in the file, config.json implies [200, 32]",
        ],
    );
}

#[test]
fn the_dry_run_catches_a_bad_safetensors_header() {
    let (_tmp, dir) = model_copy();
    let weights = dir.join("model.safetensors");
    let bytes = std::fs::read(&weights).unwrap();
    // Truncated copy: the header is intact, the data is cut short.
    std::fs::write(&weights, &bytes[..bytes.len() / 2]).unwrap();
    dry_run_fails(
        &dir,
        &[
            "model.safetensors",
            "not a valid safetensors file",
            "the file has",
        ],
    );
    // A header length pointing past the end of the file.
    let mut broken = bytes.clone();
    broken[..8].copy_from_slice(&(bytes.len() as u64).to_le_bytes());
    std::fs::write(&weights, &broken).unwrap();
    dry_run_fails(&dir, &["not a valid safetensors file", "runs past the end"]);
    // Valid length, header that is not JSON.
    let mut garbage = bytes.clone();
    garbage[8..16].copy_from_slice(b"not-json");
    std::fs::write(&weights, &garbage).unwrap();
    dry_run_fails(&dir, &["not a valid safetensors file", "invalid header"]);
    // And the tokenizer must be there too.
    std::fs::write(&weights, &bytes).unwrap();
    for name in ["tokenizer.json", "vocab.txt"] {
        std::fs::remove_file(dir.join(name)).unwrap();
    }
    dry_run_fails(&dir, &["no tokenizer.json or vocab.txt"]);
}

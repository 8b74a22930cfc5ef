//! The bad-input matrix: hostile inputs, each run through the built binary against a temporary
//! /opt/ml tree. Every case must fail with a non-zero exit, a one-line failure file naming the
//! cause (asserted by key words), no panic text as the reason, and nothing in the model dir.

mod common;

use common::{describe, OptMl};
use std::path::{Path, PathBuf};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// 4 separable classes.
fn csv(rows: usize) -> String {
    let classes = [
        ("FEES", "fee"),
        ("FUEL", "shell"),
        ("GROCERIES", "spar"),
        ("INCOME", "salary"),
    ];
    let mut s = String::from("text,category\n");
    for i in 0..rows {
        let (label, word) = classes[i % 4];
        s.push_str(&format!("pos {word} {i},{label}\n"));
    }
    s
}

/// A good tree (which trains) that each case then breaks.
fn base(model: &Path, extra: &[(&str, &str)]) -> OptMl {
    let ml = OptMl::new();
    ml.add_channel_file("train", "train.csv", csv(40));
    ml.add_channel_file("validation", "val.csv", csv(12));
    let mut hp: Vec<(&str, &str)> = vec![
        ("model_name_or_path", model.to_str().expect("utf-8 path")),
        ("epochs", "1"),
        ("train_batch_size", "8"),
        ("max_length", "32"),
        ("num_threads", "1"),
        ("save_strategy", "no"),
    ];
    for (k, v) in extra {
        hp.retain(|(key, _)| key != k);
        hp.push((k, v));
    }
    ml.write_hyperparameters(&hp);
    ml
}

fn copy_model(to: &Path) -> PathBuf {
    let from = fixture("tiny-distilbert-trainable");
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(&from).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
    }
    to.to_path_buf()
}

struct Case {
    name: &'static str,
    /// Builds the broken tree; gets a scratch dir for model copies.
    setup: Box<dyn Fn(&Path) -> OptMl>,
    /// Key words the failure line must contain (case-insensitive), naming cause and fix.
    needles: &'static [&'static str],
}

fn case(
    name: &'static str,
    needles: &'static [&'static str],
    setup: impl Fn(&Path) -> OptMl + 'static,
) -> Case {
    Case {
        name,
        setup: Box::new(setup),
        needles,
    }
}

fn model() -> PathBuf {
    fixture("tiny-distilbert-trainable")
}

fn with_train(bytes: Vec<u8>) -> impl Fn(&Path) -> OptMl {
    move |_| {
        let ml = base(&model(), &[]);
        ml.add_channel_file("train", "train.csv", &bytes);
        ml
    }
}

fn with_hp(key: &'static str, value: &'static str) -> impl Fn(&Path) -> OptMl {
    move |_| base(&model(), &[(key, value)])
}

fn cases() -> Vec<Case> {
    let mut garbage = vec![0u8; 4096];
    for (i, b) in garbage.iter_mut().enumerate() {
        *b = (i * 7919 % 251) as u8;
    }
    vec![
        case("empty file", &["train.csv"], with_train(Vec::new())),
        case(
            "header only",
            &["train"],
            with_train(b"text,category\n".to_vec()),
        ),
        case(
            "missing text column",
            &["text", "text_column"],
            with_train(b"description,category\nfee,FEES\n".to_vec()),
        ),
        case(
            "missing label column",
            &["category", "label_column"],
            with_train(b"text,label\nfee,FEES\n".to_vec()),
        ),
        case(
            "wrong delimiter",
            &["no column `text`", "set csv_delimiter=;"],
            |_| {
                let ml = base(&model(), &[("csv_delimiter", ",")]);
                ml.add_channel_file(
                    "train",
                    "train.csv",
                    b"text;category\nfee;FEES\nshell;FUEL\n",
                );
                ml
            },
        ),
        case(
            "windows-1252 text in a UTF-8 job",
            &["train.csv:2", "csv_encoding"],
            with_train(b"text,category\nCaf\xe9 \xa35,FOOD\nshell,FUEL\n".to_vec()),
        ),
        case(
            "ragged rows",
            &["train.csv"],
            with_train(b"text,category\nfee,FEES,extra,more\nshell\n".to_vec()),
        ),
        case(
            "invalid UTF-8",
            &["train.csv", "utf-8"],
            with_train(b"text,category\n\xff\xfe fee,FEES\nshell,FUEL\n".to_vec()),
        ),
        case("binary garbage", &["train.csv"], with_train(garbage)),
        case(
            "unterminated quote",
            &["train.csv"],
            with_train(b"text,category\n\"fee,FEES\nshell,FUEL\n".to_vec()),
        ),
        case(
            "all rows one class",
            &["class"],
            with_train(b"text,category\nfee 1,FEES\nfee 2,FEES\nfee 3,FEES\n".to_vec()),
        ),
        case(
            "evaluation label unseen in training",
            &["NEWCAT", "unseen_eval_labels"],
            |_| {
                let ml = base(&model(), &[]);
                ml.add_channel_file(
                    "validation",
                    "val.csv",
                    format!("{}pos novel,NEWCAT\n", csv(12)),
                );
                ml
            },
        ),
        case(
            "hyperparameters.json is not JSON",
            &["hyperparameters.json"],
            |_| {
                let ml = base(&model(), &[]);
                ml.write_config("hyperparameters.json", "{\"epochs\": 1,");
                ml
            },
        ),
        case("wrong type", &["epochs", "abc"], with_hp("epochs", "abc")),
        case(
            "unknown key",
            &["learnin_rate", "learning_rate"],
            with_hp("learnin_rate", "0.1"),
        ),
        case(
            "negative batch size",
            &["train_batch_size"],
            with_hp("train_batch_size", "-8"),
        ),
        case(
            "zero batch size",
            &["train_batch_size"],
            with_hp("train_batch_size", "0"),
        ),
        case(
            "max_length above the hyperparameter range",
            &["max_length"],
            with_hp("max_length", "100000"),
        ),
        case(
            "max_length above the model limit",
            &["max_length"],
            with_hp("max_length", "4096"),
        ),
        case(
            "learning rate 0",
            &["learning_rate"],
            with_hp("learning_rate", "0"),
        ),
        case(
            "learning rate NaN",
            &["learning_rate"],
            with_hp("learning_rate", "NaN"),
        ),
        case("missing channel directory", &["train"], |_| {
            let ml = base(&model(), &[]);
            std::fs::remove_dir_all(ml.path("input/data/train")).unwrap();
            ml
        }),
        case(
            "unreadable file (dangling link)",
            &["train", "no data files"],
            |_| {
                let ml = base(&model(), &[]);
                let file = ml.path("input/data/train/train.csv");
                std::fs::remove_file(&file).unwrap();
                std::os::unix::fs::symlink("/nonexistent/train.csv", &file).unwrap();
                ml
            },
        ),
        case("missing model files", &["model"], |scratch| {
            let empty = scratch.join("empty-model");
            std::fs::create_dir_all(&empty).unwrap();
            base(&empty, &[])
        }),
        case("truncated safetensors", &["model.safetensors"], |scratch| {
            let dir = copy_model(&scratch.join("truncated"));
            let w = dir.join("model.safetensors");
            let len = std::fs::metadata(&w).unwrap().len();
            std::fs::OpenOptions::new()
                .write(true)
                .open(&w)
                .unwrap()
                .set_len(len / 2)
                .unwrap();
            base(&dir, &[])
        }),
        case("invalid tokenizer.json", &["tokenizer.json"], |scratch| {
            let dir = copy_model(&scratch.join("badtok"));
            std::fs::write(dir.join("tokenizer.json"), "{not json").unwrap();
            base(&dir, &[])
        }),
        case("model directory not writable (a file)", &["model"], |_| {
            let ml = base(&model(), &[]);
            std::fs::remove_dir_all(ml.model_dir()).unwrap();
            std::fs::write(ml.model_dir(), b"not a directory").unwrap();
            ml
        }),
    ]
}

#[test]
fn every_hostile_input_fails_cleanly() {
    let scratch = tempfile::tempdir().unwrap();
    let mut problems = Vec::new();
    let all = cases();
    assert!(all.len() >= 25, "{} cases", all.len());
    for c in &all {
        let ml = (c.setup)(scratch.path());
        let out = ml.run(&["train"]);
        let log = describe(&out);
        let text = ml.failure_text().unwrap_or_default();
        let lower = text.to_lowercase();
        let mut why = Vec::new();
        if out.status.success() {
            why.push("exit 0".to_string());
        }
        if text.trim().is_empty() {
            why.push("no failure file".to_string());
        } else if text.trim_end_matches('\n').lines().count() != 1 {
            why.push("failure file is not one line".to_string());
        }
        for needle in c.needles {
            if !lower.contains(&needle.to_lowercase()) {
                why.push(format!("lacks {needle:?}"));
            }
        }
        if lower.contains("panicked") || lower.contains("internal error") {
            why.push("panic as the reason".to_string());
        }
        let model_dir = ml.model_dir();
        let model_empty = !model_dir.is_dir() || ml.model_dir_is_empty();
        if !model_empty {
            why.push("model dir written".to_string());
        }
        if !why.is_empty() {
            problems.push(format!(
                "[{}] {}: failure={:?} exit={:?}\n{}",
                c.name,
                why.join(", "),
                text.trim(),
                out.status.code(),
                log.lines().rev().take(6).collect::<Vec<_>>().join(" | ")
            ));
        } else {
            eprintln!("[{}] ok: {}", c.name, text.trim());
        }
    }
    assert!(
        problems.is_empty(),
        "{} of {} cases:\n{}",
        problems.len(),
        all.len(),
        problems.join("\n")
    );
}

/// A 10 MB field and a million-character line are valid CSV: txcat either trains on them
/// (the tokenizer truncates at max_length) or refuses them cleanly; it must never crash or
/// publish a partial model.
#[test]
fn oversized_fields_train_or_fail_cleanly() {
    for (name, text) in [
        ("10 MB field", format!("\"{}\"", "x".repeat(10 << 20))),
        ("million-character line", "y ".repeat(500_000)),
    ] {
        let ml = base(&model(), &[]);
        ml.add_channel_file("train", "train.csv", format!("{}{text},FEES\n", csv(40)));
        let out = ml.run(&["train"]);
        let log = describe(&out);
        assert!(!log.contains("panicked"), "[{name}] panic\n{log}");
        if out.status.success() {
            assert!(
                ml.failure_text().is_none(),
                "[{name}] failure file after success"
            );
            assert!(
                ml.model_dir().join("model.safetensors").is_file(),
                "[{name}] no model"
            );
        } else {
            let text = ml.failure_text().unwrap_or_default();
            assert_eq!(
                text.trim_end_matches('\n').lines().count(),
                1,
                "[{name}] {text:?}"
            );
            assert!(
                ml.model_dir_is_empty(),
                "[{name}] model dir written on failure"
            );
        }
        eprintln!(
            "[{name}] exit={:?} failure={:?}",
            out.status.code(),
            ml.failure_text()
        );
    }
}

/// Disk full while saving: the model directory is a 16 KiB tmpfs (needs root and mount
/// permission, as in the dev container; elsewhere the case says so and is skipped).
#[test]
fn disk_full_while_saving_fails_cleanly() {
    let ml = base(&model(), &[]);
    let dir = ml.model_dir();
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=16k", "tmpfs"])
        .arg(&dir)
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !mounted {
        eprintln!("SKIPPED disk-full case: cannot mount a tmpfs here (not root?)");
        return;
    }
    struct Unmount(PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount").arg(&self.0).status();
        }
    }
    let _unmount = Unmount(dir.clone());
    let out = ml.run(&["train"]);
    let log = describe(&out);
    assert!(!out.status.success(), "trained onto a full disk\n{log}");
    let text = ml.failure_text().unwrap_or_default();
    assert_eq!(
        text.trim_end_matches('\n').lines().count(),
        1,
        "{text:?}\n{log}"
    );
    let lower = text.to_lowercase();
    assert!(
        lower.contains("space") || lower.contains("no space left"),
        "{text}"
    );
    assert!(
        !lower.contains("panicked") && !lower.contains("internal error"),
        "{text}"
    );
    assert!(
        ml.model_dir_is_empty(),
        "partial model left on the full disk\n{log}"
    );
}

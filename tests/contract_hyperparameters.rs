//! Hyperparameters through the built binary: SDK and raw encodings, reserved keys, unknown and
//! mistyped keys, `--hp` overrides, and `txcat` with no subcommand.

mod common;
use common::{sdk_encode, OptMl};

/// A small valid tree: train and test channels with two labels.
fn tree() -> OptMl {
    let ml = OptMl::new();
    ml.write_inputdataconfig(&[("train", "File"), ("test", "File")]);
    ml.write_resourceconfig();
    ml.add_channel_file(
        "train",
        "train.csv",
        "text,category\nwoolies,Food\nengen,Fuel\nspar,Food\nshell,Fuel\n",
    );
    ml.add_channel_file("test", "test.csv", "text,category\npnp,Food\nsasol,Fuel\n");
    ml
}

fn hp_line<'a>(summary: &'a str, key: &str) -> &'a str {
    let prefix = format!("  {key} = ");
    summary
        .lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("no hyperparameter {key} in\n{summary}"))
}

#[test]
fn sdk_encoded_values_with_sagemaker_keys_pass_the_dry_run() {
    let ml = tree();
    let model = sdk_encode("distilbert-base-uncased");
    let program = sdk_encode("train.py");
    ml.write_hyperparameters(&[
        ("epochs", "1"),
        ("train_batch_size", "32"),
        ("model_name", &model),
        ("learning_rate", "5e-05"),
        ("fp16", "true"),
        ("sagemaker_program", &program),
        (
            "sagemaker_submit_directory",
            "\"s3://bucket/sourcedir.tar.gz\"",
        ),
        ("sagemaker_container_log_level", "20"),
        ("sagemaker_region", "\"eu-west-1\""),
        ("_tuning_objective_metric", "eval_loss"),
    ]);
    let out = ml.run(&["train", "--dry-run"]);
    let summary = ml.assert_dry_run_ok(&out);
    assert_eq!(
        hp_line(&summary, "model_name_or_path"),
        "distilbert-base-uncased"
    );
    assert_eq!(hp_line(&summary, "epochs").parse::<f64>(), Ok(1.0));
    assert_eq!(hp_line(&summary, "train_batch_size"), "32");
    assert_eq!(hp_line(&summary, "learning_rate").parse::<f64>(), Ok(5e-5));
    assert_eq!(hp_line(&summary, "fp16"), "true");
    assert!(!summary.contains("sagemaker_program"), "{summary}");
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(
        log.contains("sagemaker_program"),
        "reserved keys are logged: {log}"
    );
}

#[test]
fn raw_strings_from_other_launchers_pass_the_dry_run() {
    let ml = tree();
    ml.write_hyperparameters(&[
        ("model_name", "distilbert-base-uncased"),
        ("fp16", "True"),
        ("group_by_length", "FALSE"),
        ("eval_batch_size", "100"),
    ]);
    let summary = ml.assert_dry_run_ok(&ml.run(&["train", "--dry-run"]));
    assert_eq!(
        hp_line(&summary, "model_name_or_path"),
        "distilbert-base-uncased"
    );
    assert_eq!(hp_line(&summary, "fp16"), "true");
    assert_eq!(hp_line(&summary, "group_by_length"), "false");
    assert_eq!(hp_line(&summary, "eval_batch_size"), "100");
}

#[test]
fn no_subcommand_means_train() {
    // `txcat` alone must run the train command: it reads the tree's hyperparameters and fails on
    // the bad one exactly as `txcat train` does (and unlike a usage error).
    let ml = tree();
    ml.write_hyperparameters(&[("epochs", "zero")]);
    let bare = ml.command().output().expect("run");
    let bare_text = ml.assert_failed(&bare, 2, &["`epochs` = `zero`"]);
    let train = ml.run(&["train"]);
    let train_text = ml.assert_failed(&train, 2, &["`epochs` = `zero`"]);
    assert_eq!(bare_text, train_text);
}

#[test]
fn unknown_key_names_the_nearest_valid_key() {
    let ml = tree();
    ml.write_hyperparameters(&[("train_bach_size", "32")]);
    let out = ml.run(&["train", "--dry-run"]);
    ml.assert_failed(
        &out,
        2,
        &[
            "unknown hyperparameter `train_bach_size`",
            "did you mean `train_batch_size`?",
        ],
    );
    assert!(out.stdout.is_empty(), "no summary on failure");
}

#[test]
fn wrong_type_names_key_value_and_expectation() {
    let ml = tree();
    ml.write_hyperparameters(&[("epochs", "\"three\"")]);
    ml.assert_failed(
        &ml.run(&["train", "--dry-run"]),
        2,
        &["`epochs`", "three", "expected a number >= 0"],
    );
}

#[test]
fn out_of_range_value_is_rejected() {
    let ml = tree();
    ml.write_hyperparameters(&[("validation_split", "1.5")]);
    ml.assert_failed(
        &ml.run(&["train", "--dry-run"]),
        2,
        &["`validation_split` = `1.5`", "between 0 and 1"],
    );
}

#[test]
fn command_line_overrides_win_and_are_validated() {
    let ml = tree();
    ml.write_hyperparameters(&[("train_batch_size", "32")]);
    let summary = ml.assert_dry_run_ok(&ml.run(&[
        "train",
        "--dry-run",
        "--hp",
        "per_device_train_batch_size=7",
    ]));
    assert_eq!(hp_line(&summary, "train_batch_size"), "7");
    ml.assert_failed(
        &ml.run(&["train", "--dry-run", "--hp", "device=tpu"]),
        2,
        &["`device` = `tpu`", "(in --hp)", "auto, cpu, cuda"],
    );
}

#[test]
fn invalid_hyperparameters_json_is_reported() {
    let ml = tree();
    ml.write_config("hyperparameters.json", "{\"epochs\": \"1\"");
    ml.assert_failed(
        &ml.run(&["train", "--dry-run"]),
        2,
        &["hyperparameters.json is not valid JSON"],
    );
}

#[test]
fn example_files_in_hyperparameters_folder_are_valid() {
    let folder = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("hyperparameters");
    let mut checked = 0;
    for entry in std::fs::read_dir(&folder).expect("hyperparameters/") {
        let path = entry.expect("entry").path();
        if path.extension().and_then(|e| e.to_str()) != Some("json") {
            continue;
        }
        let text = std::fs::read_to_string(&path).expect("read example");
        let map: serde_json::Map<String, serde_json::Value> =
            serde_json::from_str(&text).expect("example is a JSON object");
        assert!(
            map.values().all(serde_json::Value::is_string),
            "{}: SageMaker writes string values only",
            path.display()
        );
        let ml = tree();
        ml.write_config("hyperparameters.json", &text);
        let out = ml.run(&["train", "--dry-run"]);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}\n{}",
            path.display(),
            common::describe(&out)
        );
        checked += 1;
    }
    assert!(
        checked >= 4,
        "expected the seed, seed-batch100, cpu-smoke and gpu-default examples"
    );
}

//! Failure handling through the built binary: the failure file, exit codes, panics, stale files.

mod common;
use common::OptMl;

fn valid_tree() -> OptMl {
    let ml = OptMl::new();
    ml.write_inputdataconfig(&[("train", "File")]);
    ml.add_channel_file("train", "t.csv", "text,category\na,X\nb,Y\nc,X\nd,Y\n");
    ml
}

#[test]
fn panic_is_reported_as_an_internal_error() {
    let ml = valid_tree();
    let out = ml.run(&["train", "--test-panic"]);
    let text = ml.assert_failed(&out, 3, &["internal error in txcat", "src/main.rs:"]);
    assert!(
        !text.contains("requested with --test-panic"),
        "raw panic text stays in the log: {text}"
    );
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(log.contains("panic requested with --test-panic"), "{log}");
}

#[test]
fn long_reasons_are_one_line_within_1024_bytes() {
    let ml = valid_tree();
    let long_key = format!("k{}", "x".repeat(3000));
    ml.write_hyperparameters(&[(&long_key, "1")]);
    let text = ml.assert_failed(
        &ml.run(&["train", "--dry-run"]),
        2,
        &["unknown hyperparameter"],
    );
    assert!(text.trim_end().len() <= 1024, "{}", text.len());
}

#[test]
fn stale_failure_file_is_removed_by_a_successful_run() {
    let ml = valid_tree();
    std::fs::write(ml.path("output/failure"), "old reason\n").unwrap();
    ml.assert_dry_run_ok(&ml.run(&["train", "--dry-run", "--hp", "validation_split=0.5"]));
}

#[test]
fn failure_dirs_are_created_and_logs_are_timestamped_lines() {
    let ml = OptMl::new();
    std::fs::remove_dir_all(ml.path("output")).unwrap();
    let out = ml.run(&["train", "--dry-run"]);
    ml.assert_failed(&out, 2, &["no `train` channel"]);
    let log = String::from_utf8_lossy(&out.stderr);
    let error_line = log
        .lines()
        .find(|l| l.contains("ERROR"))
        .expect("an error event");
    assert!(
        error_line.starts_with("20"),
        "timestamp first: {error_line}"
    );
}

#[test]
fn bad_command_line_exits_2() {
    let ml = valid_tree();
    let out = ml.run(&["train", "--no-such-flag"]);
    ml.assert_failed(&out, 2, &["invalid command line"]);
}

#[test]
fn a_bad_cuda_backend_setting_exits_2_with_the_failure_file_naming_it() {
    let ml = valid_tree();
    let out = ml
        .command()
        .args(["train", "--dry-run"])
        .env("TXCAT_CUDA_BACKEND", "maybe")
        .output()
        .expect("run txcat");
    ml.assert_failed(
        &out,
        2,
        &["TXCAT_CUDA_BACKEND=\"maybe\"", "auto, load, skip"],
    );
}

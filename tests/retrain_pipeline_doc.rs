//! docs/pipelines.md's SageMaker Pipelines definition is real (issue 12, part 3): its Python
//! block runs against the SageMaker Python SDK v2 and builds the pipeline definition JSON offline,
//! and that definition trains with the previous model as the `model` channel, reads
//! `improvement` with `JsonGet` at a path that exists in the `evaluation.json` txcat writes, and
//! registers the model only in the condition's true branch.
//!
//! The SDK is not in scripts/requirements-test.txt (installing `sagemaker<3` downgrades
//! `packaging` and `attrs` in the shared test environment), so the interpreter is
//! `TXCAT_SAGEMAKER_PYTHON`, else `TXCAT_PYTHON`; without the SDK there the test prints why it is
//! skipped and passes.

use std::path::Path;
use std::process::Command;

use serde_json::Value;
use txcat::champion::{ChampionScore, JobChampion};
use txcat::metrics;

/// The first ```python block of the document.
fn python_block(doc: &str) -> String {
    let start = doc
        .find("```python\n")
        .expect("docs/pipelines.md has a ```python block")
        + 10;
    let len = doc[start..]
        .find("\n```")
        .expect("the python block is closed");
    doc[start..start + len].to_string()
}

fn interpreter() -> Option<String> {
    ["TXCAT_SAGEMAKER_PYTHON", "TXCAT_PYTHON"]
        .iter()
        .find_map(|k| std::env::var(k).ok().filter(|v| !v.is_empty()))
}

/// An environment that keeps the SDK offline and away from the user's AWS settings: fake
/// credentials, a region, no instance metadata, telemetry off through an SDK config file.
fn sdk_command(python: &str, home: &Path) -> Command {
    let config = home.join("sagemaker-config.yaml");
    std::fs::write(
        &config,
        "SchemaVersion: '1.0'\nSageMaker:\n  PythonSDK:\n    Modules:\n      TelemetryOptOut: true\n",
    )
    .unwrap();
    let mut cmd = Command::new(python);
    for (key, _) in std::env::vars_os() {
        let key = key.to_string_lossy().into_owned();
        if key.starts_with("AWS_") || key.starts_with("SAGEMAKER_") {
            cmd.env_remove(key);
        }
    }
    cmd.env("HOME", home)
        .env("AWS_DEFAULT_REGION", "eu-west-1")
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("AWS_CONFIG_FILE", home.join("aws-config"))
        .env("AWS_SHARED_CREDENTIALS_FILE", home.join("aws-credentials"))
        .env("SAGEMAKER_USER_CONFIG_OVERRIDE", &config)
        .env("SAGEMAKER_ADMIN_CONFIG_OVERRIDE", &config)
        .env("SAGEMAKER_SUPPRESS_V2_WARNING", "1");
    cmd
}

/// Why the SDK cannot be used, if it cannot.
fn sdk_missing(python: &str, home: &Path) -> Option<String> {
    let probe = "import sagemaker, sys; v = sagemaker.__version__; sys.exit(0 if v.startswith('2.') else 3)";
    match sdk_command(python, home).args(["-c", probe]).output() {
        Err(e) => Some(format!("cannot start {python}: {e}")),
        Ok(out) if out.status.code() == Some(3) => {
            Some(format!("{python} has a SageMaker SDK other than v2"))
        }
        Ok(out) if !out.status.success() => Some(format!(
            "the SageMaker Python SDK v2 is not importable with {python} (install `sagemaker<3` into a venv and set TXCAT_SAGEMAKER_PYTHON): {}",
            String::from_utf8_lossy(&out.stderr).lines().last().unwrap_or("")
        )),
        Ok(_) => None,
    }
}

/// The definition the document's block builds.
fn build_definition(python: &str, home: &Path) -> Value {
    let doc =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/pipelines.md"))
            .expect("read docs/pipelines.md");
    let out_path = home.join("definition.json");
    let script = format!(
        "{}\n\nimport sys\nopen(sys.argv[1], 'w').write(pipeline.definition())\n",
        python_block(&doc)
    );
    let out = sdk_command(python, home)
        .args(["-c", &script])
        .arg(&out_path)
        .output()
        .expect("run python");
    assert!(
        out.status.success(),
        "the document's pipeline does not build:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(&std::fs::read_to_string(&out_path).unwrap()).unwrap()
}

/// `evaluation.json` as a job with a champion writes it, through the binary's own code.
fn champion_evaluation(dir: &Path) -> (Value, f64) {
    let labels: Vec<String> = ["FEES", "FUEL", "INCOME"].map(String::from).to_vec();
    let old = metrics::classification_report(&[0, 1, 2, 2], &[0, 0, 2, 1], &labels, None).unwrap();
    let new = metrics::classification_report(&[0, 1, 2, 2], &[0, 1, 2, 1], &labels, None).unwrap();
    let champion = JobChampion::Scored(Box::new(ChampionScore {
        origin: "s3://txcat-example/runs/2026-11/output/model.tar.gz (unpacked)".into(),
        chosen_by: "starting_model",
        labels: labels.clone(),
        report: old.clone(),
        eval_rows: 4,
        unknown_label_rows: 0,
        unknown_labels: Vec::new(),
        seconds: 0.0,
    }));
    metrics::write_reports_with(dir, &new, &[], &champion.side_reports(&new)).unwrap();
    let text = std::fs::read_to_string(dir.join("evaluation.json")).unwrap();
    (
        serde_json::from_str(&text).unwrap(),
        new.macro_avg.f1 - old.macro_avg.f1,
    )
}

fn steps(definition: &Value) -> Vec<&Value> {
    definition["Steps"]
        .as_array()
        .expect("Steps")
        .iter()
        .collect()
}

#[test]
fn the_documented_pipeline_builds_and_reads_what_txcat_writes() {
    let Some(python) = interpreter() else {
        println!("skipped: neither TXCAT_SAGEMAKER_PYTHON nor TXCAT_PYTHON is set");
        return;
    };
    let home = tempfile::tempdir().unwrap();
    if let Some(why) = sdk_missing(&python, home.path()) {
        println!("skipped: {why}");
        return;
    }
    let definition = build_definition(&python, home.path());
    let all = steps(&definition);

    // Training: the txcat image, the previous model as the `model` channel.
    let train = all
        .iter()
        .find(|s| s["Type"] == "Training")
        .expect("a training step");
    let args = &train["Arguments"];
    let image = args["AlgorithmSpecification"]["TrainingImage"]
        .as_str()
        .unwrap();
    assert!(image.contains("txcat"), "{image}");
    let channels = args["InputDataConfig"].as_array().unwrap();
    let model = channels
        .iter()
        .find(|c| c["ChannelName"] == "model")
        .expect("a `model` channel");
    let previous = model["DataSource"]["S3DataSource"]["S3Uri"]["Get"]
        .as_str()
        .expect("the model channel is a pipeline parameter");
    let parameter = previous.trim_start_matches("Parameters.");
    assert!(
        definition["Parameters"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["Name"] == parameter),
        "{previous}"
    );

    // The condition reads `improvement` through a property file of evaluation.json.
    let condition = all
        .iter()
        .find(|s| s["Type"] == "Condition")
        .expect("a condition step");
    let left = &condition["Arguments"]["Conditions"][0]["LeftValue"]["Std:JsonGet"];
    let path = left["Path"].as_str().expect("a JsonGet path");
    let (evaluation, improvement) = champion_evaluation(home.path());
    let mut value = &evaluation;
    for segment in path.split('.') {
        value = &value[segment];
    }
    assert_eq!(
        value.as_f64(),
        Some(improvement),
        "`{path}` is not the macro-F1 improvement in txcat's evaluation.json: {evaluation}"
    );
    let source = left["PropertyFile"]["Get"].as_str().unwrap();
    let reader_name = source
        .strip_prefix("Steps.")
        .and_then(|s| s.split(".PropertyFiles.").next())
        .unwrap();
    let reader = all
        .iter()
        .find(|s| s["Name"] == reader_name)
        .expect("the step holding the property file");
    assert_eq!(reader["PropertyFiles"][0]["FilePath"], "evaluation.json");
    let input = reader["Arguments"]["ProcessingInputs"][0].to_string();
    assert!(
        input.contains("output.tar.gz")
            && input.contains(&format!("Steps.{}", train["Name"].as_str().unwrap())),
        "{input}"
    );

    // Registering happens only when the new model wins.
    let if_steps = condition["Arguments"]["IfSteps"].as_array().unwrap();
    let register = if_steps
        .iter()
        .find(|s| s["Type"] == "RegisterModel")
        .expect("RegisterModel in the true branch");
    let container = &register["Arguments"]["InferenceSpecification"]["Containers"][0];
    assert_eq!(container["Image"], image);
    assert_eq!(
        container["ModelDataUrl"]["Get"],
        format!(
            "Steps.{}.ModelArtifacts.S3ModelArtifacts",
            train["Name"].as_str().unwrap()
        )
    );
    let else_steps = condition["Arguments"]["ElseSteps"].as_array().unwrap();
    assert!(else_steps.iter().all(|s| s["Type"] != "RegisterModel"));
}

//! Loading failures: each is one line naming the file and what to do.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use safetensors::tensor::TensorView;
use tch::Device;
use txcat::model::{ModelError, SequenceClassifier};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn labels() -> Vec<String> {
    vec!["groceries".into(), "transport".into(), "income".into()]
}

/// A copy of a fixture the test may damage.
fn copy_fixture(name: &str) -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(fixture(name)).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), tmp.path().join(entry.file_name())).unwrap();
    }
    tmp
}

fn load_err(dir: &Path) -> (ModelError, String) {
    let err = SequenceClassifier::load(dir, &labels(), Device::Cpu).unwrap_err();
    let msg = err.to_string();
    assert!(!msg.contains('\n'), "error must be one line: {msg}");
    (err, msg)
}

/// Rewrites the fixture's model.safetensors through `edit` (name -> (dtype, shape, bytes)).
fn rewrite_weights(
    dir: &Path,
    edit: impl FnOnce(&mut HashMap<String, (safetensors::Dtype, Vec<usize>, Vec<u8>)>),
) {
    let path = dir.join("model.safetensors");
    let bytes = std::fs::read(&path).unwrap();
    let file = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut tensors: HashMap<String, (safetensors::Dtype, Vec<usize>, Vec<u8>)> = file
        .iter()
        .map(|(n, v)| {
            (
                n.to_string(),
                (v.dtype(), v.shape().to_vec(), v.data().to_vec()),
            )
        })
        .collect();
    edit(&mut tensors);
    let views: Vec<(String, TensorView)> = tensors
        .iter()
        .map(|(n, (d, s, b))| (n.clone(), TensorView::new(*d, s.clone(), b).unwrap()))
        .collect();
    safetensors::serialize_to_file(views, None, &path).unwrap();
}

#[test]
fn missing_directory_names_config_json() {
    let tmp = tempfile::tempdir().unwrap();
    let (err, msg) = load_err(&tmp.path().join("nope"));
    assert!(matches!(err, ModelError::Config { .. }), "{err:?}");
    assert!(msg.contains("config.json"), "{msg}");
}

#[test]
fn missing_weights_file() {
    let tmp = copy_fixture("tiny-bert");
    std::fs::remove_file(tmp.path().join("model.safetensors")).unwrap();
    let (err, msg) = load_err(tmp.path());
    assert!(matches!(err, ModelError::MissingWeights { .. }), "{err:?}");
    assert!(msg.contains("model.safetensors"), "{msg}");
}

#[test]
fn pickle_checkpoint_is_refused_with_conversion_hint() {
    let tmp = copy_fixture("tiny-bert");
    std::fs::remove_file(tmp.path().join("model.safetensors")).unwrap();
    std::fs::write(tmp.path().join("pytorch_model.bin"), b"\x80\x02not really").unwrap();
    let (err, msg) = load_err(tmp.path());
    assert!(matches!(err, ModelError::PickleRefused { .. }), "{err:?}");
    assert!(
        msg.contains("pytorch_model.bin") && msg.contains("pickle"),
        "{msg}"
    );
    assert!(msg.contains("safe_serialization=True"), "{msg}");
}

#[test]
fn truncated_safetensors() {
    let tmp = copy_fixture("tiny-distilbert");
    let path = tmp.path().join("model.safetensors");
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
    let (err, msg) = load_err(tmp.path());
    assert!(matches!(err, ModelError::Safetensors { .. }), "{err:?}");
    assert!(msg.contains("model.safetensors"), "{msg}");
}

#[test]
fn wrong_shapes_are_all_listed() {
    let tmp = copy_fixture("tiny-distilbert");
    let cfg_path = tmp.path().join("config.json");
    let mut cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&cfg_path).unwrap()).unwrap();
    cfg["hidden_dim"] = 48.into();
    std::fs::write(&cfg_path, cfg.to_string()).unwrap();
    let (err, msg) = load_err(tmp.path());
    assert!(matches!(err, ModelError::Mismatch { .. }), "{err:?}");
    for layer in 0..2 {
        for t in ["ffn.lin1.weight", "ffn.lin1.bias", "ffn.lin2.weight"] {
            let name = format!("distilbert.transformer.layer.{layer}.{t}");
            assert!(msg.contains(&name), "{name} not in: {msg}");
        }
    }
    assert!(
        !msg.contains("ffn.lin2.bias"),
        "lin2.bias has the right shape: {msg}"
    );
}

#[test]
fn unknown_model_type() {
    let tmp = copy_fixture("tiny-bert");
    let cfg_path = tmp.path().join("config.json");
    let text = std::fs::read_to_string(&cfg_path).unwrap();
    std::fs::write(
        &cfg_path,
        text.replace("\"model_type\": \"bert\"", "\"model_type\": \"roberta\""),
    )
    .unwrap();
    let (err, msg) = load_err(tmp.path());
    assert!(matches!(err, ModelError::Config { .. }), "{err:?}");
    assert!(
        msg.contains("roberta") && msg.contains("config.json"),
        "{msg}"
    );
}

#[test]
fn missing_and_unexpected_tensors_listed_together() {
    let tmp = copy_fixture("tiny-bert");
    rewrite_weights(tmp.path(), |t| {
        t.remove("bert.encoder.layer.1.attention.self.key.weight")
            .unwrap();
        t.remove("bert.embeddings.token_type_embeddings.weight")
            .unwrap();
        let extra = t["classifier.bias"].clone();
        t.insert("bert.encoder.layer.9.mystery".into(), extra);
    });
    let (err, msg) = load_err(tmp.path());
    assert!(matches!(err, ModelError::Mismatch { .. }), "{err:?}");
    assert!(msg.contains("missing: bert.embeddings.token_type_embeddings.weight, bert.encoder.layer.1.attention.self.key.weight"), "{msg}");
    assert!(
        msg.contains("unexpected: bert.encoder.layer.9.mystery"),
        "{msg}"
    );
}

#[test]
fn known_extras_legacy_names_and_missing_head_are_accepted() {
    let tmp = copy_fixture("tiny-bert");
    rewrite_weights(tmp.path(), |t| {
        // Legacy LayerNorm names, a pretraining head, position_ids, and no classifier.
        let w = t.remove("bert.embeddings.LayerNorm.weight").unwrap();
        let b = t.remove("bert.embeddings.LayerNorm.bias").unwrap();
        t.insert("bert.embeddings.LayerNorm.gamma".into(), w);
        t.insert("bert.embeddings.LayerNorm.beta".into(), b.clone());
        t.insert("cls.predictions.bias".into(), b);
        let pos: Vec<u8> = (0i64..64).flat_map(|i| i.to_le_bytes()).collect();
        t.insert(
            "bert.embeddings.position_ids".into(),
            (safetensors::Dtype::I64, vec![1, 64], pos),
        );
        t.remove("classifier.weight").unwrap();
        t.remove("classifier.bias").unwrap();
    });
    let (model, report) = SequenceClassifier::load(tmp.path(), &labels(), Device::Cpu).unwrap();
    assert_eq!(report.renamed_legacy, 2);
    let mut ignored = report.ignored.clone();
    ignored.sort();
    assert_eq!(
        ignored,
        vec!["bert.embeddings.position_ids", "cls.predictions.bias"]
    );
    assert_eq!(report.fresh, vec!["classifier.bias", "classifier.weight"]);
    // HF init: zero bias, normal(0, 0.02) weights.
    use txcat::model::ClassifierModel;
    let vars = model.var_store().variables();
    assert_eq!(
        vars["classifier.bias"]
            .abs()
            .sum(tch::Kind::Float)
            .double_value(&[]),
        0.0
    );
    let std = vars["classifier.weight"].std(true).double_value(&[]);
    assert!((0.005..0.05).contains(&std), "init std {std}");
}

#[test]
fn empty_label_list_is_rejected() {
    let err = SequenceClassifier::load(&fixture("tiny-bert"), &[], Device::Cpu).unwrap_err();
    assert!(err.to_string().contains("label"), "{err}");
}

//! Parity of txcat's DistilBERT/BERT (tokenizer, encoder, heads, save format) with transformers.
//!
//! - committed fixtures (scripts/make_fixtures.py): ids exact, logits within 1e-4;
//! - the pretrained MiniLM (TXCAT_MINILM_DIR): last hidden states within 1e-4;
//! - round trips through transformers (TXCAT_PYTHON): logits within 1e-5, labels preserved.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{json, Value};
use tch::{Device, Kind, Tensor};
use txcat::model::{ClassifierModel, SequenceClassifier};
use txcat::tokenize::{copy_tokenizer_files, Encoding, TextEncoder};

const LABELS: [&str; 3] = ["groceries", "transport", "income"];

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn labels(names: &[&str]) -> Vec<String> {
    names.iter().map(|s| s.to_string()).collect()
}

fn read_json(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn texts() -> Vec<String> {
    serde_json::from_value(read_json(&fixture("texts.json"))).unwrap()
}

/// Runs tests/fixtures/hf_reference.py on `request` and returns its JSON answer.
fn hf_reference(request: Value) -> Value {
    let tmp = tempfile::tempdir().unwrap();
    let req = tmp.path().join("request.json");
    let resp = tmp.path().join("response.json");
    std::fs::write(&req, request.to_string()).unwrap();
    let out = Command::new(support::python::interpreter())
        .arg(fixture("hf_reference.py"))
        .arg(&req)
        .arg(&resp)
        .output()
        .expect("cannot start TXCAT_PYTHON");
    assert!(
        out.status.success(),
        "hf_reference.py failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    read_json(&resp)
}

fn json_ids(v: &Value) -> Vec<Vec<u32>> {
    serde_json::from_value(v.clone()).unwrap()
}

fn json_matrix(v: &Value) -> Vec<Vec<f64>> {
    serde_json::from_value(v.clone()).unwrap()
}

/// Right-pads encodings into `[b, s]` i64 ids and mask, as the batch collator will.
fn pad(encodings: &[Encoding], pad_id: u32) -> (Tensor, Tensor) {
    let seq = encodings.iter().map(|e| e.ids.len()).max().unwrap();
    let mut ids = Vec::new();
    let mut mask = Vec::new();
    for e in encodings {
        for i in 0..seq {
            ids.push(e.ids.get(i).map_or(pad_id as i64, |&x| x as i64));
            mask.push(i64::from(i < e.ids.len()));
        }
    }
    let b = encodings.len() as i64;
    (
        Tensor::from_slice(&ids).view([b, seq as i64]),
        Tensor::from_slice(&mask).view([b, seq as i64]),
    )
}

fn tensor_2d(rows: &[Vec<u32>]) -> Tensor {
    let flat: Vec<i64> = rows.iter().flatten().map(|&x| x as i64).collect();
    Tensor::from_slice(&flat).view([rows.len() as i64, -1])
}

fn to_rows(t: &Tensor) -> Vec<Vec<f64>> {
    let t = t.to_kind(Kind::Double).to_device(Device::Cpu);
    Vec::<Vec<f64>>::try_from(&t).unwrap()
}

fn max_abs_diff(a: &[Vec<f64>], b: &[Vec<f64>]) -> f64 {
    assert_eq!(a.len(), b.len(), "row count");
    a.iter()
        .zip(b)
        .flat_map(|(x, y)| {
            assert_eq!(x.len(), y.len(), "column count");
            x.iter().zip(y).map(|(p, q)| (p - q).abs())
        })
        .fold(0.0, f64::max)
}

fn texts_ref(texts: &[String]) -> Vec<&str> {
    texts.iter().map(String::as_str).collect()
}

/// Tokenizer ids exact (tokenizer.json and vocab.txt fallback), logits within 1e-4.
fn check_golden(name: &str) -> SequenceClassifier {
    let dir = fixture(name);
    let golden = read_json(&dir.join("golden.json"));
    let max_length = golden["max_length"].as_u64().unwrap() as usize;
    let texts = texts();
    let expected_ids = json_ids(&golden["input_ids"]);

    let encoder = TextEncoder::from_model_dir(&dir, max_length).unwrap();
    let encodings = encoder.encode_batch(&texts_ref(&texts)).unwrap();
    let ids: Vec<Vec<u32>> = encodings.iter().map(|e| e.ids.clone()).collect();
    assert_eq!(ids, expected_ids, "{name}: ids from tokenizer.json");
    assert!(
        ids.iter().any(|r| r.len() == max_length),
        "some text must hit truncation"
    );
    assert!(encodings.iter().all(|e| e.type_ids.iter().all(|&t| t == 0)));

    // Fallback: WordPiece from vocab.txt + tokenizer_config.json only.
    let bare = tempfile::tempdir().unwrap();
    for f in ["vocab.txt", "tokenizer_config.json"] {
        std::fs::copy(dir.join(f), bare.path().join(f)).unwrap();
    }
    let fallback = TextEncoder::from_model_dir(bare.path(), max_length).unwrap();
    let fallback_ids: Vec<Vec<u32>> = fallback
        .encode_batch(&texts_ref(&texts))
        .unwrap()
        .into_iter()
        .map(|e| e.ids)
        .collect();
    assert_eq!(
        fallback_ids, expected_ids,
        "{name}: ids from vocab.txt fallback"
    );

    let (input_ids, mask) = pad(&encodings, encoder.pad_id());
    assert!(input_ids.equal(&tensor_2d(&json_ids(&golden["padded_input_ids"]))));
    assert!(mask.equal(&tensor_2d(&json_ids(&golden["attention_mask"]))));

    let (model, report) = SequenceClassifier::load(&dir, &labels(&LABELS), Device::Cpu).unwrap();
    assert!(!report.has_fresh_head(), "{report:?}");
    let logits = tch::no_grad(|| model.forward_t(&input_ids, &mask, None, false));
    assert_eq!(logits.kind(), Kind::Float);
    let diff = max_abs_diff(&to_rows(&logits), &json_matrix(&golden["logits"]));
    eprintln!("{name}: max |logit diff| vs transformers = {diff:e}");
    assert!(
        diff < 1e-4,
        "{name}: logits differ from transformers by {diff}"
    );
    model
}

#[test]
fn tiny_distilbert_matches_transformers() {
    let model = check_golden("tiny-distilbert");
    assert_eq!(model.model_type(), "distilbert");
    assert!(!model.uses_token_type_ids());
    assert_eq!(model.max_positions(), 64);
    assert_eq!(model.num_labels(), 3);
}

#[test]
fn tiny_bert_matches_transformers_with_token_types() {
    let model = check_golden("tiny-bert");
    assert!(model.uses_token_type_ids());
    let golden = read_json(&fixture("tiny-bert/golden.json"));
    let ids = tensor_2d(&json_ids(&golden["padded_input_ids"]));
    let mask = tensor_2d(&json_ids(&golden["attention_mask"]));
    let types = tensor_2d(&json_ids(&golden["token_type_ids"]));
    let logits = tch::no_grad(|| model.forward_t(&ids, &mask, Some(&types), false));
    let diff = max_abs_diff(
        &to_rows(&logits),
        &json_matrix(&golden["logits_with_token_type_ids"]),
    );
    eprintln!("tiny-bert with token types: max |logit diff| = {diff:e}");
    assert!(diff < 1e-4, "logits with token types differ by {diff}");
}

/// The VarStore holds exactly the tensors transformers saved, under the same names.
#[test]
fn var_store_names_are_the_checkpoint_names() {
    for name in ["tiny-distilbert", "tiny-bert"] {
        let dir = fixture(name);
        let bytes = std::fs::read(dir.join("model.safetensors")).unwrap();
        let file = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        let mut in_file: Vec<String> = file.names().into_iter().map(String::from).collect();
        in_file.sort();
        let (model, _) = SequenceClassifier::load(&dir, &labels(&LABELS), Device::Cpu).unwrap();
        let mut ours: Vec<String> = model.var_store().variables().into_keys().collect();
        ours.sort();
        assert_eq!(ours, in_file, "{name}");
    }
}

#[test]
fn dropout_only_in_training_and_bf16_stays_close() {
    let dir = fixture("tiny-distilbert");
    let golden = read_json(&dir.join("golden.json"));
    let ids = tensor_2d(&json_ids(&golden["padded_input_ids"]));
    let mask = tensor_2d(&json_ids(&golden["attention_mask"]));
    let (mut model, _) = SequenceClassifier::load(&dir, &labels(&LABELS), Device::Cpu).unwrap();
    tch::manual_seed(7);
    let eval_a = model.forward_t(&ids, &mask, None, false);
    let eval_b = model.forward_t(&ids, &mask, None, false);
    assert!(eval_a.equal(&eval_b), "eval must be deterministic");
    let train = model.forward_t(&ids, &mask, None, true);
    assert!(
        !train.allclose(&eval_a, 1e-6, 1e-6, false),
        "dropout must act in training"
    );
    assert!(
        train.requires_grad(),
        "training forward must track gradients"
    );

    model.set_compute_kind(Some(Kind::BFloat16));
    let bf16 = tch::no_grad(|| model.forward_t(&ids, &mask, None, false));
    assert_eq!(bf16.kind(), Kind::Float, "logits stay fp32");
    let diff = max_abs_diff(&to_rows(&bf16), &to_rows(&eval_a));
    let scale = eval_a.abs().max().double_value(&[]);
    eprintln!("bf16 vs fp32: max |logit diff| = {diff:e} (logit scale {scale:.3})");
    assert!(diff > 0.0, "bf16 path must actually run in bf16");
    // bf16 keeps 8 mantissa bits; through 2 layers a few percent of the logit scale is expected.
    assert!(
        diff < 0.05 * scale,
        "bf16 logits drift {diff} from fp32 (scale {scale})"
    );
    model.set_compute_kind(None);
    let back = tch::no_grad(|| model.forward_t(&ids, &mask, None, false));
    assert!(back.equal(&eval_a));
}

fn minilm_dir() -> PathBuf {
    match std::env::var_os("TXCAT_MINILM_DIR") {
        Some(p) => PathBuf::from(p),
        None => panic!(
            "TXCAT_MINILM_DIR is unset: run scripts/test, or export TXCAT_MINILM_DIR=\"$(source scripts/lib.sh && setup_test && minilm_dir)\""
        ),
    }
}

#[test]
fn minilm_hidden_states_match_transformers() {
    let dir = minilm_dir();
    let texts = texts();
    let max_length = 128;
    let reference = hf_reference(json!({
        "mode": "hidden", "model_dir": dir, "texts": texts, "max_length": max_length,
    }));
    let encoder = TextEncoder::from_model_dir(&dir, max_length).unwrap();
    let encodings = encoder.encode_batch(&texts_ref(&texts)).unwrap();
    let (ids, mask) = pad(&encodings, encoder.pad_id());
    // The package's tokenizer.json pads to 128; ours pads per batch, to the longest text.
    assert!(
        ids.size()[1] < 128,
        "tokenizer.json padding must be overridden"
    );
    assert!(
        ids.equal(&tensor_2d(&json_ids(&reference["input_ids"]))),
        "MiniLM ids"
    );
    assert!(mask.equal(&tensor_2d(&json_ids(&reference["attention_mask"]))));

    let (model, report) =
        SequenceClassifier::load(&dir, &labels(&["a", "b"]), Device::Cpu).unwrap();
    assert_eq!(model.model_type(), "bert");
    assert_eq!(
        report.fresh,
        vec![
            "classifier.bias".to_string(),
            "classifier.weight".to_string()
        ]
    );
    assert!(report.fresh_reason.is_some());
    assert!(
        report.ignored.iter().any(|n| n.ends_with("position_ids")),
        "{report:?}"
    );

    let hidden = tch::no_grad(|| model.encoder_hidden_states(&ids, &mask, None));
    let expected: Vec<Vec<Vec<f64>>> = serde_json::from_value(reference["hidden"].clone()).unwrap();
    let ours = Vec::<Vec<Vec<f64>>>::try_from(&hidden.to_kind(Kind::Double)).unwrap();
    let mut diff: f64 = 0.0;
    for (a, b) in ours.iter().zip(&expected) {
        diff = diff.max(max_abs_diff(a, b));
    }
    eprintln!("MiniLM: max |hidden diff| vs transformers = {diff:e}");
    assert!(
        diff < 1e-4,
        "MiniLM hidden states differ from transformers by {diff}"
    );
}

/// txcat saves -> transformers loads: same logits (1e-5), same labels, nothing missing.
fn round_trip(src: &Path, new_labels: &[&str], max_length: usize) {
    let (model, report) = SequenceClassifier::load(src, &labels(new_labels), Device::Cpu).unwrap();
    assert!(report.has_fresh_head(), "{report:?}");
    let out = tempfile::tempdir().unwrap();
    model.save(out.path()).unwrap();
    copy_tokenizer_files(src, out.path()).unwrap();

    let encoder = TextEncoder::from_model_dir(out.path(), max_length).unwrap();
    let texts = texts();
    let (ids, mask) = pad(
        &encoder.encode_batch(&texts_ref(&texts)).unwrap(),
        encoder.pad_id(),
    );
    let ours = to_rows(&tch::no_grad(|| model.forward_t(&ids, &mask, None, false)));
    let reference = hf_reference(json!({
        "mode": "logits", "model_dir": out.path(),
        "input_ids": to_rows(&ids), "attention_mask": to_rows(&mask),
    }));
    for key in ["missing_keys", "unexpected_keys", "mismatched_keys"] {
        let list = &reference["loading_info"][key];
        assert!(
            list.as_array().is_none_or(|l| l.is_empty()),
            "{key}: {list}"
        );
    }
    assert_eq!(reference["dtype"], "torch.float32");
    assert_eq!(reference["problem_type"], "single_label_classification");
    for (i, l) in new_labels.iter().enumerate() {
        assert_eq!(reference["id2label"][i.to_string()], *l);
    }
    let diff = max_abs_diff(&ours, &json_matrix(&reference["logits"]));
    eprintln!("round trip {}: max |logit diff| = {diff:e}", src.display());
    assert!(
        diff < 1e-5,
        "{}: transformers' logits differ by {diff}",
        src.display()
    );

    // And back: the saved directory loads in txcat with its head and the same logits.
    let (again, report) =
        SequenceClassifier::load(out.path(), &labels(new_labels), Device::Cpu).unwrap();
    assert!(!report.has_fresh_head(), "{report:?}");
    let back = to_rows(&tch::no_grad(|| again.forward_t(&ids, &mask, None, false)));
    assert_eq!(back, ours);
}

#[test]
fn round_trip_distilbert_with_new_label_set() {
    // 4 labels against a 3-label head: the classifier is re-initialised.
    round_trip(
        &fixture("tiny-distilbert"),
        &["food", "fuel", "pay", "rent"],
        16,
    );
}

#[test]
fn round_trip_bert_with_new_label_set() {
    round_trip(&fixture("tiny-bert"), &["x", "y"], 16);
}

#[test]
fn round_trip_minilm_base_model() {
    round_trip(
        &minilm_dir(),
        &["groceries", "transport", "income", "fees"],
        64,
    );
}

/// Serving in bf16 (`TXCAT_SERVE_PRECISION=bf16`): the linear layers' weights kept in bf16 give
/// fp32 logits within bf16's rounding of transformers' fp32 ones, on any CPU (libtorch emulates
/// bf16 where the CPU lacks it; `serve` refuses bf16 there for speed, not correctness).
#[test]
fn serving_in_bf16_keeps_the_logits_within_bf16_rounding() {
    for name in ["tiny-distilbert", "tiny-bert"] {
        let dir = fixture(name);
        let golden = read_json(&dir.join("golden.json"));
        let ids = tensor_2d(&json_ids(&golden["padded_input_ids"]));
        let mask = tensor_2d(&json_ids(&golden["attention_mask"]));
        let expected = json_matrix(&golden["logits"]);
        let (mut model, _) = SequenceClassifier::load(&dir, &labels(&LABELS), Device::Cpu).unwrap();
        model.serve_in(Kind::BFloat16);
        assert_eq!(model.compute_kind(), Some(Kind::BFloat16));
        let logits = tch::no_grad(|| model.forward_t(&ids, &mask, None, false));
        assert_eq!(logits.kind(), Kind::Float);
        let diff = max_abs_diff(&to_rows(&logits), &expected);
        let scale = expected.iter().flatten().fold(0f64, |m, v| m.max(v.abs()));
        eprintln!("{name} in bf16: max |logit diff| = {diff:e} (largest logit {scale:e})");
        assert!(
            diff > 0.0,
            "{name}: bf16 gave fp32's logits bit for bit; did it run in bf16?"
        );
        // bf16 keeps 8 mantissa bits: a few per cent of the largest logit after two layers.
        assert!(
            diff < 5e-2 * (1.0 + scale),
            "{name}: bf16 logits off by {diff}"
        );
    }
}

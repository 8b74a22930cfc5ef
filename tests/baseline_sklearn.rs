//! The tf-idf baseline agrees with scikit-learn's `TfidfVectorizer(ngram_range=(1, 2))` +
//! `LinearSVC()` on generated transaction-like sets: the same vocabulary, idf and tf-idf rows,
//! and the same predictions on at least 99% of held-out rows, for many classes with the dual
//! solver, many classes with the primal one (more rows than features), and two classes.

mod support;

use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use txcat::baseline::linear_svm::{fit_and_score, Formulation};
use txcat::baseline::tfidf::{SparseRows, TfidfVectorizer};

const PY: &str = r#"
import json, sys
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.svm import LinearSVC
d = json.load(sys.stdin)
vec = TfidfVectorizer(ngram_range=(1, 2))
x_train = vec.fit_transform(d["train"])
x_test = vec.transform(d["test"])
clf = LinearSVC().fit(x_train, d["y"])
def csr(x):
    x = x.tocsr()
    x.sort_indices()
    return {"indptr": x.indptr.tolist(), "indices": x.indices.tolist(), "data": x.data.tolist()}
dec = clf.decision_function(x_test)
print(json.dumps({
    "features": vec.get_feature_names_out().tolist(),
    "idf": vec.idf_.tolist(),
    "train": csr(x_train),
    "test": csr(x_test),
    "classes": clf.classes_.tolist(),
    "pred": clf.predict(x_test).tolist(),
    "decision": dec.tolist(),
}))
"#;

/// Words no class owns, and spellings that test the tokenizer on the way.
const NOISE: &[&str] = &[
    "pos", "card", "purchase", "ref", "online", "payment", "bank", "debit", "visa", "Café", "N°12",
    "ŞEKER", "a-b", "_ref", "O'Brien", "x", "Ⅻ", "٣٤", "e-mail", "JHB", "ct",
];

/// A seeded set of `rows` descriptors over `classes` classes: noise words around markers of the
/// row's class, with a marker of a random class in a share `foreign` of the rows (so the set is
/// not separable and the solvers' small differences could show). `numbers` adds a random number
/// per row, which makes the vocabulary larger than the row count.
fn generate(
    rows: usize,
    classes: usize,
    (markers, noise, foreign): (usize, usize, f64),
    numbers: bool,
    seed: u64,
) -> (Vec<String>, Vec<usize>) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let marker = |c: usize, m: usize| format!("m{c}w{m}");
    let mut texts = Vec::with_capacity(rows);
    let mut labels = Vec::with_capacity(rows);
    for i in 0..rows {
        let class = if i < classes {
            i
        } else {
            rng.gen_range(0..classes)
        };
        let mut words: Vec<String> = (0..rng.gen_range(1..5))
            .map(|_| NOISE[..noise].choose(&mut rng).unwrap().to_string())
            .collect();
        for _ in 0..rng.gen_range(1..3) {
            words.push(marker(class, rng.gen_range(0..markers)));
        }
        if rng.gen_bool(foreign) {
            words.push(marker(rng.gen_range(0..classes), rng.gen_range(0..markers)));
        }
        if numbers {
            words.push(rng.gen_range(10..100_000).to_string());
        }
        words.shuffle(&mut rng);
        let mut text = words.join(if rng.gen_bool(0.5) { " " } else { ", " });
        if rng.gen_bool(0.3) {
            text = text.to_uppercase();
        }
        texts.push(text);
        labels.push(class);
    }
    (texts, labels)
}

fn rows_of(x: &SparseRows) -> (Vec<usize>, Vec<u32>, Vec<f64>) {
    let mut indptr = vec![0];
    let (mut indices, mut data) = (Vec::new(), Vec::new());
    for i in 0..x.num_rows() {
        let (ids, values) = x.row(i);
        indices.extend_from_slice(ids);
        data.extend_from_slice(values);
        indptr.push(indices.len());
    }
    (indptr, indices, data)
}

fn assert_same_matrix(mine: &SparseRows, theirs: &serde_json::Value, what: &str) {
    let (indptr, indices, data) = rows_of(mine);
    let ptr: Vec<usize> = serde_json::from_value(theirs["indptr"].clone()).unwrap();
    let idx: Vec<u32> = serde_json::from_value(theirs["indices"].clone()).unwrap();
    let val: Vec<f64> = serde_json::from_value(theirs["data"].clone()).unwrap();
    assert_eq!(indptr, ptr, "{what}: row lengths");
    assert_eq!(indices, idx, "{what}: feature ids");
    for (k, (a, b)) in data.iter().zip(&val).enumerate() {
        assert!(
            (a - b).abs() < 1e-12,
            "{what}: entry {k}: {a} vs sklearn {b}"
        );
    }
}

/// Fits both sides and compares them; returns (agreement, sklearn accuracy).
fn compare(
    train: (Vec<String>, Vec<usize>),
    test: (Vec<String>, Vec<usize>),
    classes: usize,
    formulation: Formulation,
) -> (f64, f64) {
    let input = serde_json::json!({"train": train.0, "y": train.1, "test": test.0});
    let sk = support::python::run_json(PY, &input, "scikit-learn TfidfVectorizer + LinearSVC");

    let (vectorizer, x_train) = TfidfVectorizer::fit_transform(&train.0).unwrap();
    let x_test = vectorizer.transform(&test.0);
    let features: Vec<String> = serde_json::from_value(sk["features"].clone()).unwrap();
    assert_eq!(vectorizer.feature_names(), features, "vocabulary");
    let idf: Vec<f64> = serde_json::from_value(sk["idf"].clone()).unwrap();
    for (k, (a, b)) in vectorizer.idf().iter().zip(&idf).enumerate() {
        assert!((a - b).abs() < 1e-12, "idf of {}: {a} vs {b}", features[k]);
    }
    assert_same_matrix(&x_train, &sk["train"], "train tf-idf");
    assert_same_matrix(&x_test, &sk["test"], "test tf-idf");

    let fit = fit_and_score(&x_train, &train.1, classes, &x_test, 2).unwrap();
    assert_eq!(fit.fit.formulation, formulation, "dual=\"auto\" choice");
    assert_eq!(fit.fit.problems, if classes == 2 { 1 } else { classes });
    let mine = fit.decision.predict();
    let theirs: Vec<usize> = serde_json::from_value(sk["pred"].clone()).unwrap();
    assert_eq!(mine.len(), theirs.len());
    let same = mine.iter().zip(&theirs).filter(|(a, b)| a == b).count();
    let agreement = same as f64 / mine.len() as f64;
    let correct = theirs.iter().zip(&test.1).filter(|(a, b)| a == b).count();

    // Decision values agree to the solvers' tolerance, not only their argmax.
    let decision = &sk["decision"];
    let mut worst = 0.0f64;
    for row in 0..mine.len() {
        for class in 0..classes {
            let theirs = if classes == 2 {
                let d = decision[row].as_f64().unwrap();
                if class == 1 {
                    d
                } else {
                    -d
                }
            } else {
                decision[row][class].as_f64().unwrap()
            };
            worst = worst.max((fit.decision.value(row, class) - theirs).abs());
        }
    }
    assert!(worst < 0.02, "decision values differ by up to {worst}");
    (agreement, correct as f64 / mine.len() as f64)
}

fn check(agreement: f64, accuracy: f64) {
    assert!(
        agreement >= 0.99,
        "predictions agree on {agreement:.4} of rows"
    );
    // The premise: a set both models get (nearly) all right would prove nothing.
    assert!(accuracy < 0.97, "the set is too easy: accuracy {accuracy}");
}

#[test]
fn many_classes_dual_solver_agrees_with_scikit_learn() {
    let (a, acc) = compare(
        generate(700, 8, (6, NOISE.len(), 0.2), true, 1),
        generate(800, 8, (6, NOISE.len(), 0.2), true, 2),
        8,
        Formulation::Dual,
    );
    check(a, acc);
}

#[test]
fn many_classes_primal_solver_agrees_with_scikit_learn() {
    // A small vocabulary and many rows: fewer features than rows, so scikit-learn's
    // dual="auto" solves the primal problem.
    let (a, acc) = compare(
        generate(3000, 6, (3, 8, 0.2), false, 3),
        generate(800, 6, (3, 8, 0.2), false, 4),
        6,
        Formulation::Primal,
    );
    check(a, acc);
}

#[test]
fn two_classes_agree_with_scikit_learn() {
    let (a, acc) = compare(
        generate(600, 2, (6, NOISE.len(), 0.6), true, 5),
        generate(800, 2, (6, NOISE.len(), 0.6), true, 6),
        2,
        Formulation::Dual,
    );
    check(a, acc);
}

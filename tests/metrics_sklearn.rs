//! The metrics agree with scikit-learn on random predictions, including a class that is never
//! predicted and one that never occurs in the true labels.

mod support;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use txcat::metrics::classification_report;

const PY: &str = r#"
import json, sys
from sklearn.metrics import accuracy_score, confusion_matrix, precision_recall_fscore_support
d = json.load(sys.stdin)
t, p, n = d["y_true"], d["y_pred"], d["n"]
out = {"accuracy": accuracy_score(t, p),
       "confusion": confusion_matrix(t, p, labels=list(range(n))).tolist()}
for avg in ["micro", "macro", "weighted"]:
    out[avg] = list(precision_recall_fscore_support(t, p, average=avg, zero_division=0)[:3])
pc = precision_recall_fscore_support(t, p, labels=list(range(n)), average=None, zero_division=0)
out["per_class"] = [list(map(float, x)) for x in pc]
print(json.dumps(out))
"#;

fn close(a: f64, b: f64, what: &str) {
    assert!((a - b).abs() < 1e-12, "{what}: {a} vs sklearn {b}");
}

#[test]
fn metrics_match_scikit_learn() {
    let n = 7;
    for seed in 0..4u64 {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        // Class 5 is never predicted, class 6 never true; predictions right ~60% of the time.
        let y_true: Vec<usize> = (0..300).map(|_| rng.gen_range(0..6)).collect();
        let y_pred: Vec<usize> = y_true
            .iter()
            .map(|&t| {
                let p = if rng.gen_bool(0.6) {
                    t
                } else {
                    rng.gen_range(0..7)
                };
                if p == 5 {
                    0
                } else {
                    p
                }
            })
            .collect();
        let names: Vec<String> = (0..n).map(|i| format!("L{i}")).collect();
        let r = classification_report(&y_true, &y_pred, &names, None).unwrap();

        let input = serde_json::json!({"y_true": y_true, "y_pred": y_pred, "n": n});
        let sk = support::python::run_json(PY, &input, "scikit-learn reference");
        let f = |v: &serde_json::Value| v.as_f64().unwrap();

        close(r.accuracy, f(&sk["accuracy"]), "accuracy");
        for (avg, mine) in [
            ("micro", r.micro),
            ("macro", r.macro_avg),
            ("weighted", r.weighted),
        ] {
            close(mine.precision, f(&sk[avg][0]), &format!("{avg} precision"));
            close(mine.recall, f(&sk[avg][1]), &format!("{avg} recall"));
            close(mine.f1, f(&sk[avg][2]), &format!("{avg} f1"));
        }
        for c in 0..n {
            let pc = &r.per_class[c];
            close(
                pc.precision,
                f(&sk["per_class"][0][c]),
                &format!("precision[{c}]"),
            );
            close(
                pc.recall,
                f(&sk["per_class"][1][c]),
                &format!("recall[{c}]"),
            );
            close(pc.f1, f(&sk["per_class"][2][c]), &format!("f1[{c}]"));
            close(
                pc.support as f64,
                f(&sk["per_class"][3][c]),
                &format!("support[{c}]"),
            );
        }
        let confusion: Vec<Vec<u64>> = serde_json::from_value(sk["confusion"].clone()).unwrap();
        assert_eq!(r.confusion, confusion);
        assert_eq!(r.per_class[5].precision, 0.0, "never-predicted class");
        assert_eq!(r.per_class[6].support, 0, "never-true class");
    }
}

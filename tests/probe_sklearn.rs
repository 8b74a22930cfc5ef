//! The linear probe's solver (`txcat::train::probe::fit_logistic`) against scikit-learn's
//! `StandardScaler` + `LogisticRegression(C)` (L-BFGS, multinomial, sample weights) on the
//! same rows: the same optimum, so the same probabilities.

mod support;

use tch::{Device, Kind, Tensor};
use txcat::train::probe::fit_logistic;

const PY: &str = r#"
import json, sys
import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler
d = json.load(sys.stdin)
x, y, w = np.array(d["x"]), np.array(d["y"]), np.array(d["w"])
z = StandardScaler().fit_transform(x)
clf = LogisticRegression(C=d["c"], tol=1e-10, max_iter=100000).fit(z, y, sample_weight=w)
print(json.dumps({"p": clf.predict_proba(z).tolist()}))
"#;

#[test]
fn the_probe_finds_scikit_learns_optimum_with_and_without_sample_weights() {
    tch::manual_seed(11);
    let (n, d, k) = (240i64, 16i64, 5i64);
    let opts = (Kind::Float, Device::Cpu);
    // Uneven scales and offsets (the standardisation matters) and overlapping, uneven classes.
    let scales = Tensor::linspace(0.1, 20.0, d, opts);
    let unit = Tensor::randn([n, d], opts);
    let x = &unit * &scales + 3.0;
    let truth = Tensor::randn([k, d], opts) * 0.5;
    let bias = Tensor::from_slice(&[1.0f32, 0.5, 0.0, -0.5, -1.0]);
    let y = (unit.matmul(&truth.t_copy()) + bias + Tensor::randn([n, k], opts)).argmax(-1, false);
    let labels: Vec<i64> = Vec::try_from(&y).unwrap();
    assert!(
        (0..k).all(|c| labels.iter().filter(|&&l| l == c).count() >= 10),
        "{labels:?}"
    );
    for balanced in [false, true] {
        let mut counts = vec![0usize; k as usize];
        for &l in &labels {
            counts[l as usize] += 1;
        }
        let w: Vec<f32> = labels
            .iter()
            .map(|&l| match balanced {
                true => n as f32 / (k as f32 * counts[l as usize] as f32),
                false => 1.0,
            })
            .collect();
        for c in [0.1, 1.0] {
            let fit = fit_logistic(&x, &y, &Tensor::from_slice(&w), k, c).unwrap();
            assert!(
                fit.converged,
                "balanced={balanced} C={c}: {} iterations",
                fit.iterations
            );
            let ours: Vec<f32> = Vec::try_from(
                fit.logits(&x)
                    .unwrap()
                    .softmax(-1, Kind::Float)
                    .flatten(0, -1),
            )
            .unwrap();
            let rows: Vec<Vec<f32>> = (0..n).map(|i| Vec::try_from(x.get(i)).unwrap()).collect();
            let input = serde_json::json!({"x": rows, "y": labels, "w": w, "c": c});
            let sk = support::python::run_json(PY, &input, "scikit-learn LogisticRegression");
            let theirs: Vec<f32> = sk["p"]
                .as_array()
                .unwrap()
                .iter()
                .flat_map(|r| {
                    r.as_array()
                        .unwrap()
                        .iter()
                        .map(|v| v.as_f64().unwrap() as f32)
                })
                .collect();
            let worst = ours
                .iter()
                .zip(&theirs)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0f32, f32::max);
            assert!(
                worst < 5e-4,
                "balanced={balanced} C={c}: probabilities differ by up to {worst}"
            );
        }
    }
}

//! Linear probing before fine-tuning (`linear_probe=true`): the fresh rows of the
//! classification head (all of a new head; on a warm start, those of labels the last model did
//! not have) are fitted as an L2-regularised multinomial logistic regression on the encoder's
//! features of the training rows, with the rows carried over held fixed; then fine-tuning
//! starts from it.
//!
//! Why: on a few hundred rows a random head sends large, noisy gradients into a pretrained
//! encoder for the first epochs and wears away what it knew; a head that already fits the
//! frozen features changes the encoder far less (Kumar et al. 2022, "Fine-Tuning can Distort
//! Pretrained Features"). Measured on za-bank-txn and oxford-pcard: bench/RESULTS.md.
//!
//! What is fitted: the head's last linear layer (`classifier`) on its own input, i.e. [CLS]
//! through the pooler (BERT) or `pre_classifier` + ReLU (DistilBERT), without dropout. The
//! objective is scikit-learn's `LogisticRegression(C)` (multinomial, intercept not penalised,
//! `class_weight` as the job's `class_weights`), on standardised features; the scaling is then
//! folded into the weights, so the saved head is an ordinary `classifier` layer.
//!
//! Solver: accelerated gradient descent (FISTA with gradient restarts) with step 1/L, L bounded
//! by a power iteration; the problem is smooth and strongly convex, so it converges to the one
//! optimum scikit-learn's L-BFGS finds.

use std::time::Instant;

use tch::{Device, Kind, Tensor};

use super::device::TensorBatch;
use super::error::TrainError;
use crate::model::ClassifierModel;
use crate::tokenize::batch::TokenizedSet;

/// Rows the probe reads at most (a seeded sample beyond that): it only has to start the head
/// well, and its cost is one forward over these rows plus a small dense solve.
pub const MAX_PROBE_ROWS: usize = 8192;
/// scikit-learn's default inverse regularisation strength.
pub const PROBE_C: f64 = 1.0;
const MAX_ITERATIONS: usize = 3000;
/// Stop when the gradient's norm falls below this fraction of its norm at the start.
const TOLERANCE: f64 = 1e-5;

/// What the probe did, for the log and `run_summary.json`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ProbeReport {
    /// Training rows whose features were fitted.
    pub rows: usize,
    pub features: usize,
    /// Classifier rows fitted (the rest were carried over from the last model).
    pub head_rows: usize,
    pub iterations: usize,
    /// Whether the gradient fell below the tolerance within the iteration limit.
    pub converged: bool,
    /// Accuracy of the fitted head on those rows.
    pub train_accuracy: f64,
    pub seconds: f64,
}

/// The inputs of one probe.
pub struct ProbeRequest<'a> {
    pub set: &'a TokenizedSet,
    pub num_labels: usize,
    /// Classifier rows (class ids) to fit; the others keep their values and are fitted around.
    pub fresh_rows: &'a [usize],
    /// Per class (the job's `class_weights`), or `None` for equal weights.
    pub class_weights: Option<&'a [f32]>,
    pub batch_size: usize,
    pub pad_id: u32,
    pub device: Device,
    pub seed: u64,
}

/// Fits the fresh rows of `classifier.weight`/`classifier.bias` of `model` on its own features
/// of the training rows (see the module docs). Returns `None`, changing nothing, when there is
/// no fresh row, no training row or no feature output.
pub fn fit_head<M: ClassifierModel>(
    model: &mut M,
    request: &ProbeRequest<'_>,
) -> Result<Option<ProbeReport>, TrainError> {
    let started = Instant::now();
    let rows = sample_rows(request.set.len(), MAX_PROBE_ROWS, request.seed);
    if rows.is_empty() || request.fresh_rows.is_empty() {
        return Ok(None);
    }
    let Some(features) = features_of(model, request, &rows)? else {
        return Ok(None);
    };
    let _guard = tch::no_grad_guard();
    let device = request.device;
    let labels: Vec<i64> = rows
        .iter()
        .map(|&r| i64::from(request.set.labels()[r]))
        .collect();
    let y = Tensor::f_from_slice(&labels)?.f_to_device(device)?;
    let sample_weights = match request.class_weights {
        Some(w) => {
            let per_row: Vec<f32> = labels.iter().map(|&l| w[l as usize]).collect();
            Tensor::f_from_slice(&per_row)?.f_to_device(device)?
        }
        None => Tensor::f_ones([rows.len() as i64], (Kind::Float, device))?,
    };
    let variables = model.var_store().variables();
    let classifier = |name: &str| {
        variables.get(name).ok_or_else(|| {
            TrainError::Probe(format!("the model has no {name} for the probe to set"))
        })
    };
    let (weight, bias) = (
        classifier("classifier.weight")?,
        classifier("classifier.bias")?,
    );
    let fixed = (request.fresh_rows.len() < request.num_labels).then(|| FixedRows {
        fresh: request.fresh_rows,
        weight: weight.detach().to_kind(Kind::Float),
        bias: bias.detach().to_kind(Kind::Float),
    });
    let fit = fit_logistic_around(
        &features,
        &y,
        &sample_weights,
        request.num_labels as i64,
        PROBE_C,
        fixed.as_ref(),
    )?;
    let accuracy = f64::try_from(
        fit.logits(&features)?
            .f_argmax(-1, false)?
            .f_eq_tensor(&y)?
            .f_to_kind(Kind::Double)?
            .f_mean(Kind::Double)?,
    )?;
    // Only the fresh rows are written: carried-over rows stay bit for bit (the fit's copy of
    // them went through the standardisation and back).
    let fresh: Vec<i64> = request.fresh_rows.iter().map(|&r| r as i64).collect();
    let fresh = Tensor::f_from_slice(&fresh)?.f_to_device(weight.device())?;
    for (var, fitted) in [(weight, &fit.weight), (bias, &fit.bias)] {
        let rows = fitted.f_index_select(0, &fresh)?.f_to_kind(var.kind())?;
        var.shallow_clone().f_index_copy_(0, &fresh, &rows)?;
    }
    Ok(Some(ProbeReport {
        rows: rows.len(),
        features: features.size()[1] as usize,
        head_rows: request.fresh_rows.len(),
        iterations: fit.iterations,
        converged: fit.converged,
        train_accuracy: accuracy,
        seconds: started.elapsed().as_secs_f64(),
    }))
}

/// All of `0..n` when it fits in `max`, else a seeded sample of `max` of them (sorted).
fn sample_rows(n: usize, max: usize, seed: u64) -> Vec<usize> {
    if n <= max {
        return (0..n).collect();
    }
    // Seeded partial Fisher-Yates with a splitmix64 stream: one seed gives one sample.
    let mut state = seed ^ 0x9E37_79B9_7F4A_7C15;
    let mut next = move || {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    };
    let mut all: Vec<usize> = (0..n).collect();
    for i in 0..max {
        let j = i + (next() % (n - i) as u64) as usize;
        all.swap(i, j);
    }
    all.truncate(max);
    all.sort_unstable();
    all
}

/// The head features `[rows, features]` (fp32, on the device) of `rows`, in that order.
fn features_of<M: ClassifierModel>(
    model: &M,
    request: &ProbeRequest<'_>,
    rows: &[usize],
) -> Result<Option<Tensor>, TrainError> {
    let _guard = tch::no_grad_guard();
    let device = request.device;
    let mut parts = Vec::new();
    let mut order = Vec::with_capacity(rows.len());
    for batch in request.set.longest_first_batches(rows, request.batch_size) {
        let ids: Vec<usize> = batch.iter().map(|&i| rows[i]).collect();
        let b = TensorBatch::from_host(&request.set.assemble(&ids, request.pad_id), device)?
            .to_device(device)?;
        let Some(f) =
            model.head_features(&b.input_ids, &b.attention_mask, b.token_type_ids.as_ref())
        else {
            return Ok(None);
        };
        parts.push(f);
        order.extend(batch.iter().map(|&i| i as i64));
    }
    // Row k of the concatenation is rows[order[k]]: scatter back to the given order.
    let stacked = Tensor::f_cat(&parts, 0)?;
    let inverse = Tensor::f_from_slice(&order)?
        .f_to_device(device)?
        .f_argsort(0, false)?;
    Ok(Some(stacked.f_index_select(0, &inverse)?))
}

/// A fitted multinomial logistic regression on the raw (unstandardised) features.
#[derive(Debug)]
pub struct LogisticFit {
    /// `[labels, features]`
    pub weight: Tensor,
    /// `[labels]`
    pub bias: Tensor,
    pub iterations: usize,
    pub converged: bool,
}

impl LogisticFit {
    /// `x [n, features]` -> logits `[n, labels]`.
    pub fn logits(&self, x: &Tensor) -> Result<Tensor, TrainError> {
        Ok(x.f_matmul(&self.weight.f_transpose(0, 1)?)?
            .f_add(&self.bias)?)
    }
}

/// Minimises `C * sum_i s_i * CE(x_i W^T + b, y_i) + |W|^2 / 2` over `W`, `b` (scikit-learn's
/// objective with `StandardScaler` in front: features standardised per column, population
/// standard deviation); returns the fit on the raw features. `y` holds class ids (i64).
pub fn fit_logistic(
    x: &Tensor,
    y: &Tensor,
    sample_weights: &Tensor,
    num_labels: i64,
    c: f64,
) -> Result<LogisticFit, TrainError> {
    fit_logistic_around(x, y, sample_weights, num_labels, c, None)
}

/// Rows of a head held at their values while the `fresh` ones are fitted.
pub struct FixedRows<'a> {
    /// The rows that are fitted; every other row of `weight`/`bias` stays.
    pub fresh: &'a [usize],
    /// `[labels, features]` and `[labels]` on raw features.
    pub weight: Tensor,
    pub bias: Tensor,
}

/// [`fit_logistic`] over the fresh rows only when `fixed` is given (the penalty then counts
/// the fresh rows alone, as the others do not move).
pub fn fit_logistic_around(
    x: &Tensor,
    y: &Tensor,
    sample_weights: &Tensor,
    num_labels: i64,
    c: f64,
    fixed: Option<&FixedRows<'_>>,
) -> Result<LogisticFit, TrainError> {
    let x = x.f_to_kind(Kind::Float)?;
    let (n, d) = match x.size()[..] {
        [n, d] => (n, d),
        ref other => {
            return Err(TrainError::Probe(format!(
                "features must be 2-D, got {other:?}"
            )))
        }
    };
    let opts = (Kind::Float, x.device());
    let mean = x.f_mean_dim(0, false, Kind::Float)?;
    let std = x.f_std_correction(0, 0, false)?.f_clamp_min(1e-6)?;
    let z = x.f_sub(&mean)?.f_div(&std)?;
    let onehot = y.f_one_hot(num_labels)?.f_to_kind(Kind::Float)?;
    // Divided by C * n: the mean weighted loss plus lambda/2 |W|^2.
    let lambda = 1.0 / (c * n as f64);
    let scale = sample_weights.f_div_scalar(n as f64)?.f_unsqueeze(1)?; // [n, 1]
    let full_gradient = |w: &Tensor, b: &Tensor| -> Result<(Tensor, Tensor), TrainError> {
        let p = z
            .f_matmul(&w.f_t_copy()?)?
            .f_add(b)?
            .f_softmax(-1, Kind::Float)?;
        let g = p.f_sub(&onehot)?.f_mul(&scale)?; // [n, k]
        let gw = g
            .f_t_copy()?
            .f_matmul(&z)?
            .f_add(&w.f_mul_scalar(lambda)?)?;
        let gb = g.f_sum_dim_intlist(0, false, Kind::Float)?;
        Ok((gw, gb))
    };
    // Softmax cross-entropy has curvature at most 1/2 per logit; the bias adds a column of ones.
    let max_weight = f64::try_from(sample_weights.f_max()?)?;
    let top = top_singular_value_squared(&z)? / n as f64;
    let lipschitz = 0.5 * max_weight * (top + 1.0) + lambda;
    let step = 1.0 / lipschitz;

    // Fixed rows start (and stay) at their values in standardised space: W z + b = W' x + b'
    // with W = W' * std and b = b' + W' . mean; `free` masks their gradient to zero.
    let (mut w, mut b, free) = match fixed {
        None => (
            Tensor::f_zeros([num_labels, d], opts)?,
            Tensor::f_zeros([num_labels], opts)?,
            None,
        ),
        Some(f) => {
            let raw_w = f.weight.f_to_device(x.device())?;
            let raw_b = f.bias.f_to_device(x.device())?;
            let mut mask = vec![0f32; num_labels as usize];
            for &r in f.fresh {
                mask[r] = 1.0;
            }
            let mask = Tensor::f_from_slice(&mask)?.f_to_device(x.device())?;
            let keep = mask.f_neg()?.f_add_scalar(1.0)?;
            let w0 = raw_w
                .f_mul(&std.f_unsqueeze(0)?)?
                .f_mul(&keep.f_unsqueeze(1)?)?;
            let b0 = raw_b.f_add(&raw_w.f_matmul(&mean)?)?.f_mul(&keep)?;
            (w0, b0, Some(mask))
        }
    };
    let gradient = |w: &Tensor, b: &Tensor| -> Result<(Tensor, Tensor), TrainError> {
        let (gw, gb) = full_gradient(w, b)?;
        Ok(match &free {
            None => (gw, gb),
            Some(m) => (gw.f_mul(&m.f_unsqueeze(1)?)?, gb.f_mul(m)?),
        })
    };
    let (mut vw, mut vb) = (w.shallow_clone(), b.shallow_clone());
    let mut t = 1.0f64;
    let (g0w, g0b) = gradient(&w, &b)?;
    let start_norm = grad_norm(&g0w, &g0b)?.max(1e-12);
    let mut iterations = 0;
    let mut converged = false;
    while iterations < MAX_ITERATIONS {
        iterations += 1;
        let (gw, gb) = gradient(&vw, &vb)?;
        if grad_norm(&gw, &gb)? <= TOLERANCE * start_norm {
            w = vw;
            b = vb;
            converged = true;
            break;
        }
        let next_w = vw.f_sub(&gw.f_mul_scalar(step)?)?;
        let next_b = vb.f_sub(&gb.f_mul_scalar(step)?)?;
        // Gradient restart (O'Donoghue & Candes): momentum that points uphill is dropped.
        let uphill = f64::try_from(
            gw.f_mul(&next_w.f_sub(&w)?)?
                .f_sum(Kind::Double)?
                .f_add(&gb.f_mul(&next_b.f_sub(&b)?)?.f_sum(Kind::Double)?)?,
        )? > 0.0;
        if uphill {
            t = 1.0;
        }
        let t_next = (1.0 + (1.0 + 4.0 * t * t).sqrt()) / 2.0;
        let momentum = (t - 1.0) / t_next;
        vw = next_w.f_add(&next_w.f_sub(&w)?.f_mul_scalar(momentum)?)?;
        vb = next_b.f_add(&next_b.f_sub(&b)?.f_mul_scalar(momentum)?)?;
        w = next_w;
        b = next_b;
        t = t_next;
    }
    // On raw features: W z + b = (W / std) x + (b - (W / std) . mean).
    let weight = w.f_div(&std.f_unsqueeze(0)?)?;
    let bias = b.f_sub(&weight.f_matmul(&mean)?)?;
    Ok(LogisticFit {
        weight,
        bias,
        iterations,
        converged,
    })
}

fn grad_norm(gw: &Tensor, gb: &Tensor) -> Result<f64, TrainError> {
    let sq = gw
        .f_square()?
        .f_sum(Kind::Double)?
        .f_add(&gb.f_square()?.f_sum(Kind::Double)?)?;
    Ok(f64::try_from(sq)?.sqrt())
}

/// The largest eigenvalue of `z^T z` (power iteration, slightly over-estimated for safety).
fn top_singular_value_squared(z: &Tensor) -> Result<f64, TrainError> {
    let d = z.size()[1];
    let mut v = Tensor::f_ones([d], (Kind::Float, z.device()))?.f_div_scalar((d as f64).sqrt())?;
    let mut value = 0.0;
    for _ in 0..50 {
        let u = z.f_t_copy()?.f_matmul(&z.f_matmul(&v)?)?;
        let norm = f64::try_from(u.f_norm()?)?;
        if norm == 0.0 {
            return Ok(0.0);
        }
        let done = (norm - value).abs() <= 1e-4 * norm;
        value = norm;
        v = u.f_div_scalar(norm)?;
        if done {
            break;
        }
    }
    Ok(value * 1.05)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The objective scikit-learn minimises, on raw features.
    fn objective(fit: &LogisticFit, x: &Tensor, y: &Tensor, c: f64, std: &Tensor) -> f64 {
        let ce = fit.logits(x).unwrap().cross_entropy_loss::<Tensor>(
            y,
            None,
            tch::Reduction::Sum,
            -100,
            0.0,
        );
        // The penalty is on the standardised problem's weights.
        let w_std = fit.weight.shallow_clone() * std.unsqueeze(0);
        c * f64::try_from(ce).unwrap()
            + 0.5 * f64::try_from(w_std.square().sum(Kind::Double)).unwrap()
    }

    #[test]
    fn the_fit_is_the_regularised_optimum_a_small_step_from_it_costs_more() {
        tch::manual_seed(3);
        let (n, d, k) = (300, 12, 4);
        let x = Tensor::randn([n, d], (Kind::Float, Device::Cpu)) * 3.0 + 1.0;
        let truth = Tensor::randn([k, d], (Kind::Float, Device::Cpu));
        let noisy =
            x.matmul(&truth.t_copy()) + Tensor::randn([n, k], (Kind::Float, Device::Cpu)) * 2.0;
        let y = noisy.argmax(-1, false);
        let ones = Tensor::ones([n], (Kind::Float, Device::Cpu));
        let fit = fit_logistic(&x, &y, &ones, k, 1.0).unwrap();
        assert!(
            fit.converged,
            "did not converge in {} iterations",
            fit.iterations
        );
        let std = x.std_correction(0, 0, false);
        let best = objective(&fit, &x, &y, 1.0, &std);
        for dir in 0..5 {
            tch::manual_seed(100 + dir);
            let nudged = LogisticFit {
                weight: &fit.weight + Tensor::randn([k, d], (Kind::Float, Device::Cpu)) * 1e-2,
                bias: &fit.bias + Tensor::randn([k], (Kind::Float, Device::Cpu)) * 1e-2,
                iterations: 0,
                converged: true,
            };
            assert!(
                objective(&nudged, &x, &y, 1.0, &std) > best,
                "direction {dir} lowers the objective"
            );
        }
        let accuracy = f64::try_from(
            fit.logits(&x)
                .unwrap()
                .argmax(-1, false)
                .eq_tensor(&y)
                .to_kind(Kind::Double)
                .mean(Kind::Double),
        )
        .unwrap();
        assert!(accuracy > 0.7, "train accuracy {accuracy}");
    }

    #[test]
    fn fresh_rows_fitted_around_fixed_ones_land_on_the_joint_optimum_and_fixed_rows_stay() {
        tch::manual_seed(5);
        let (n, d, k) = (200, 8, 4);
        let x = Tensor::randn([n, d], (Kind::Float, Device::Cpu)) * 2.0 - 1.0;
        let truth = Tensor::randn([k, d], (Kind::Float, Device::Cpu));
        let y = (x.matmul(&truth.t_copy()) + Tensor::randn([n, k], (Kind::Float, Device::Cpu)))
            .argmax(-1, false);
        let ones = Tensor::ones([n], (Kind::Float, Device::Cpu));
        let joint = fit_logistic(&x, &y, &ones, k, 1.0).unwrap();
        // Rows 0 and 1 held at the joint optimum, rows 2 and 3 scrambled and refitted.
        let weight = &joint.weight + Tensor::randn([k, d], (Kind::Float, Device::Cpu));
        let _ = weight.narrow(0, 0, 2).copy_(&joint.weight.narrow(0, 0, 2));
        let fixed = FixedRows {
            fresh: &[2, 3],
            weight,
            bias: joint.bias.shallow_clone(),
        };
        let fit = fit_logistic_around(&x, &y, &ones, k, 1.0, Some(&fixed)).unwrap();
        assert!(fit.converged);
        let diff = |a: &Tensor, b: &Tensor| f64::try_from((a - b).abs().max()).unwrap();
        for row in 0..k {
            let gap = diff(&fit.weight.get(row), &joint.weight.get(row));
            assert!(gap < 1e-3, "row {row} is {gap} from the joint optimum");
        }
        assert!(diff(&fit.weight.narrow(0, 0, 2), &joint.weight.narrow(0, 0, 2)) < 1e-5);
        assert!(diff(&fit.bias.narrow(0, 0, 2), &joint.bias.narrow(0, 0, 2)) < 1e-5);
    }

    #[test]
    fn sample_weights_pull_the_boundary_towards_the_lighter_class() {
        // One feature, class 0 left of 0 and class 1 right, overlapping: weighting class 1
        // up moves more of the overlap to it.
        let x = Tensor::from_slice(&[-2.0f32, -1.0, -0.5, 0.2, -0.2, 0.5, 1.0, 2.0]).unsqueeze(1);
        let y = Tensor::from_slice(&[0i64, 0, 0, 0, 1, 1, 1, 1]);
        let even = Tensor::ones([8], (Kind::Float, Device::Cpu));
        let heavy = Tensor::from_slice(&[1.0f32, 1.0, 1.0, 1.0, 5.0, 5.0, 5.0, 5.0]);
        let p1 = |w: &Tensor| {
            let fit = fit_logistic(&x, &y, w, 2, 1.0).unwrap();
            let probe = Tensor::from_slice(&[0.0f32]).unsqueeze(1);
            f64::try_from(
                fit.logits(&probe)
                    .unwrap()
                    .softmax(-1, Kind::Float)
                    .get(0)
                    .get(1),
            )
            .unwrap()
        };
        assert!(
            p1(&heavy) > p1(&even) + 0.1,
            "{} vs {}",
            p1(&heavy),
            p1(&even)
        );
    }

    #[test]
    fn samples_are_all_rows_when_they_fit_else_a_seeded_distinct_subset() {
        assert_eq!(sample_rows(5, 10, 1), vec![0, 1, 2, 3, 4]);
        let a = sample_rows(1000, 100, 7);
        assert_eq!(a, sample_rows(1000, 100, 7));
        assert_ne!(a, sample_rows(1000, 100, 8));
        assert_eq!(a.len(), 100);
        assert!(a.windows(2).all(|w| w[0] < w[1]) && *a.last().unwrap() < 1000);
    }
}

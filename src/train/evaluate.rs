//! Evaluation: the one forward loop every evaluation runs (length-sorted, prefetched batches, no
//! autograd or dropout), its classification report and, when asked, the rows' probabilities, so
//! a job's blend reuses the final evaluation instead of a second pass over the same rows.

use tch::{Device, Kind, Reduction, Tensor};

use super::device::{TensorBatch, PREFETCH_DEPTH};
use super::distributed::{DataParallel, ReduceOp};
use super::error::TrainError;
use crate::metrics::{self, ClassificationReport};
use crate::model::ClassifierModel;
use crate::tokenize::batch::{prefetch, TokenizedSet};

/// One evaluation's outcome.
#[derive(Debug, Clone)]
pub struct Evaluation {
    pub report: ClassificationReport,
    /// Softmax probabilities, row-major `[rows x labels]` in the set's row order (what
    /// [`crate::inference::probabilities`] computes), when they were kept.
    pub probabilities: Option<Vec<f32>>,
}

/// Evaluates `model` on `set`: mean plain cross-entropy (no smoothing, no class weights) and
/// the classification report. Batches are sorted by length so padding stays small.
pub fn evaluate<M: ClassifierModel>(
    model: &M,
    set: &TokenizedSet,
    batch_size: usize,
    pad_id: u32,
    device: Device,
    label_names: &[String],
) -> Result<ClassificationReport, TrainError> {
    let options = EvalOptions {
        batch_size,
        pad_id,
        device,
        keep_probabilities: false,
    };
    Ok(evaluate_shared(model, set, options, label_names, None)?.report)
}

/// How [`evaluate_shared`] runs.
#[derive(Debug, Clone, Copy)]
pub(super) struct EvalOptions {
    pub batch_size: usize,
    pub pad_id: u32,
    pub device: Device,
    /// Keep the rows' probabilities (single-process runs only: a rank sees only its share).
    pub keep_probabilities: bool,
}

/// [`evaluate`] with each rank of `dp` (if any) predicting every `world`-th row: the
/// predictions are assembled by an allreduce (each row is non-zero on at most one rank) and the
/// loss sums added, so every rank reports what one process would (the loss up to summation
/// order).
pub(super) fn evaluate_shared<M: ClassifierModel>(
    model: &M,
    set: &TokenizedSet,
    options: EvalOptions,
    label_names: &[String],
    dp: Option<&DataParallel>,
) -> Result<Evaluation, TrainError> {
    let (first, step) = dp.map_or((0, 1), |dp| (dp.rank(), dp.world()));
    let rows: Vec<usize> = (first..set.len()).step_by(step).collect();
    let options = EvalOptions {
        keep_probabilities: options.keep_probabilities && dp.is_none(),
        ..options
    };
    let predicted = predict_subset(model, set, &rows, options)?;
    let (y_pred, loss_sum) = match dp {
        None => (predicted.classes, predicted.loss_sum),
        Some(dp) => {
            let mut all = vec![0i64; set.len()];
            for (&row, &p) in rows.iter().zip(&predicted.classes) {
                all[row] = p as i64;
            }
            let group = dp.group();
            let all = group.reduce_values(&all, ReduceOp::Sum, "evaluation (predictions)")?;
            let loss_sum = group.sum_f64(predicted.loss_sum, "evaluation (loss)")?;
            (all.into_iter().map(|p| p as usize).collect(), loss_sum)
        }
    };
    let y_true: Vec<usize> = set.labels().iter().map(|&l| l as usize).collect();
    let report = metrics::classification_report(
        &y_true,
        &y_pred,
        label_names,
        Some(mean(loss_sum, set.len())),
    )?;
    Ok(Evaluation {
        report,
        probabilities: predicted.probabilities,
    })
}

/// `sum / n`, 0 for no rows.
fn mean(sum: f64, n: usize) -> f64 {
    if n == 0 {
        0.0
    } else {
        sum / n as f64
    }
}

/// The predicted class of each of the first `limit` rows of `set` (in row order) and their mean
/// loss, in length-sorted, prefetched batches: the one forward loop every evaluation runs.
pub fn predict_rows<M: ClassifierModel>(
    model: &M,
    set: &TokenizedSet,
    limit: usize,
    batch_size: usize,
    pad_id: u32,
    device: Device,
) -> Result<(Vec<usize>, f64), TrainError> {
    let all: Vec<usize> = (0..limit.min(set.len())).collect();
    let options = EvalOptions {
        batch_size,
        pad_id,
        device,
        keep_probabilities: false,
    };
    let predicted = predict_subset(model, set, &all, options)?;
    Ok((predicted.classes, mean(predicted.loss_sum, all.len())))
}

/// What [`predict_subset`] returns, each in the order of the rows it was given.
struct Predicted {
    classes: Vec<usize>,
    loss_sum: f64,
    probabilities: Option<Vec<f32>>,
}

/// The predicted class of each of `rows` (in that order), their summed loss and, when
/// `options.keep_probabilities`, their probabilities.
fn predict_subset<M: ClassifierModel>(
    model: &M,
    set: &TokenizedSet,
    rows: &[usize],
    options: EvalOptions,
) -> Result<Predicted, TrainError> {
    let EvalOptions {
        batch_size,
        pad_id,
        device,
        keep_probabilities: keep,
    } = options;
    let _guard = tch::no_grad_guard();
    // Positions into `rows`, longest first; `order` restores `rows` order below.
    let batches = set.longest_first_batches(rows, batch_size);
    let order: Vec<usize> = batches.iter().flatten().copied().collect();
    let plan: Vec<Vec<usize>> = batches
        .iter()
        .map(|c| c.iter().map(|&i| rows[i]).collect())
        .collect();
    let mut loss_sum = Tensor::f_zeros([], (Kind::Float, device))?;
    let mut preds = Vec::with_capacity(plan.len());
    let mut probs = Vec::new();
    std::thread::scope(|scope| -> Result<(), TrainError> {
        let rx = prefetch(scope, plan.clone(), PREFETCH_DEPTH, |rows| {
            TensorBatch::from_host(&set.assemble(rows, pad_id), device)
        });
        for item in rx.iter() {
            let b = item?.to_device(device)?;
            let logits = model.forward_t(
                &b.input_ids,
                &b.attention_mask,
                b.token_type_ids.as_ref(),
                false,
            );
            let logits = logits.f_to_kind(Kind::Float)?;
            let loss = logits.f_cross_entropy_loss::<Tensor>(
                &b.labels,
                None,
                Reduction::Sum,
                -100,
                0.0,
            )?;
            loss_sum = loss_sum.f_add(&loss)?;
            preds.push(logits.f_argmax(-1, false)?);
            if keep {
                probs.push(logits.f_softmax(-1, Kind::Float)?);
            }
        }
        Ok(())
    })?;
    let sorted: Vec<i64> = match on_host(&preds)? {
        Some(t) => Vec::<i64>::try_from(t)?,
        None => Vec::new(),
    };
    let mut classes = vec![0usize; rows.len()];
    for (&pos, &p) in order.iter().zip(&sorted) {
        classes[pos] = p as usize;
    }
    let probabilities = match probs.first() {
        Some(first) if keep => {
            let labels = first.size()[1] as usize;
            let sorted: Vec<f32> = match on_host(&probs)? {
                Some(t) => Vec::<f32>::try_from(t)?,
                None => Vec::new(),
            };
            let mut out = vec![0f32; rows.len() * labels];
            for (slot, &pos) in order.iter().enumerate() {
                out[pos * labels..(pos + 1) * labels]
                    .copy_from_slice(&sorted[slot * labels..(slot + 1) * labels]);
            }
            Some(out)
        }
        _ if keep => Some(Vec::new()),
        _ => None,
    };
    Ok(Predicted {
        classes,
        loss_sum: loss_sum.f_double_value(&[])?,
        probabilities,
    })
}

/// The batches' values concatenated on the host, flattened (`None` for no batches).
fn on_host(parts: &[Tensor]) -> Result<Option<Tensor>, TrainError> {
    if parts.is_empty() {
        return Ok(None);
    }
    let all = Tensor::f_cat(parts, 0)?.f_to_device(Device::Cpu)?;
    Ok(Some(all.f_flatten(0, -1)?))
}

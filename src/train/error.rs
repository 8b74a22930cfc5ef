//! The error that ends training, shared by the loop ([`super::fit`]) and evaluation
//! ([`super::evaluate`]).

use tch::TchError;

use super::distributed::DistError;
use super::optim::OptimError;
use crate::metrics::MetricsError;

/// Errors that end training.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error("training data is empty; the train channel must hold at least one labelled row")]
    EmptyTrain,
    #[error("{set} row {row} has class id {id} but the model has {num_labels} labels; the label map and the data disagree")]
    LabelOutOfRange {
        set: &'static str,
        row: usize,
        id: u32,
        num_labels: usize,
    },
    #[error("hyperparameter metric_for_best_model={name} is not a metric this job reports; use one of: {known}")]
    UnknownMetric { name: String, known: String },
    #[error("training loss became non-finite at optimizer step {step}; lower learning_rate, set max_grad_norm, or check the data")]
    NonFinite { step: u64 },
    #[error("fp16 loss scaling skipped {skips} steps in a row up to step {step}: gradients stay inf/NaN; lower learning_rate or use bf16/fp32")]
    ScalingFailed { step: u64, skips: u32 },
    #[error("linear probe: {0}")]
    Probe(String),
    #[error("resume state is for another run: {0}")]
    Resume(String),
    #[error("checkpoint hook failed at step {step}: {message}")]
    Hook { step: u64, message: String },
    #[error(transparent)]
    Optim(#[from] OptimError),
    #[error(transparent)]
    Metrics(#[from] MetricsError),
    #[error("libtorch failed during training: {0}")]
    Torch(#[from] TchError),
    #[error(transparent)]
    Distributed(#[from] DistError),
}

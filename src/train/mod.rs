//! Fine-tuning: the training loop and its parts (optimizer, schedule, mixed precision, device
//! transfer).
//!
//! [`fit`] drives any [`crate::model::ClassifierModel`] over a [`crate::tokenize::batch::TokenizedSet`]:
//! bucketed batches assembled on a background thread, AdamW with HF semantics, warm-up + decay,
//! gradient accumulation, clipping, fp16 loss scaling, periodic evaluation, best-model
//! selection, early stopping, log lines SageMaker can parse, and seams ([`StepHook`],
//! [`TrainState`], a stop flag) for checkpoints and spot interruption; [`step_profile`] says
//! where the steps' time went.

pub mod amp;
pub mod device;
pub mod distributed;
mod error;
mod evaluate;
mod fit;
pub mod optim;
pub mod probe;
pub mod schedule;
pub mod step_profile;

pub use error::TrainError;
pub use evaluate::{evaluate, predict_rows};
pub use fit::{
    class_weight_values, fit, plan_steps, BestModel, FitOptions, HookAction, LoopTimings,
    ResumePoint, SteadyThroughput, StepContext, StepHook, StepPlan, StopReason, TrainOutcome,
    TrainState, WeightSnapshot,
};

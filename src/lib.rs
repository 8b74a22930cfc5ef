//! txcat: fine-tunes DistilBERT/BERT sequence classifiers on CSV channels, as a SageMaker
//! training entrypoint.
//!
//! Data flows one way: `sagemaker` (contract, config) -> `hyperparams` -> `storage` (where bytes
//! come from) -> `data` (rows, labels, split) -> `tokenize` (ids, batches) -> `model` / `train`
//! -> `artifacts` -> `report` (the HTML page drawn from the written outputs); `baseline` scores the
//! tf-idf yardstick on the same rows, `blend` mixes it with the encoder where that scores better,
//! `champion` the model the new one may replace. `job` wires
//! the steps for the `train` command; `inference` loads a trained model directory once and labels
//! texts, for `predict` (CSV / JSON Lines files) and `serve` (HTTP endpoints); `report` also
//! serves the `report` command.
//! `cuda_backend` loads libtorch's CUDA libraries at start-up where a GPU driver is present.
//! Only `sagemaker` and `cli` read the environment (and `main`, for `TXCAT_CUDA_BACKEND`); only `storage` talks to S3; `tch` types stay in
//! model, train, checkpoint, artifacts, champion, inference and the model threads of `serve`.

pub mod artifacts;
pub mod baseline;
pub mod blend;
pub mod champion;
pub mod checkpoint;
pub mod cli;
pub mod cuda_backend;
pub mod data;
pub mod fine_tune;
pub mod hyperparams;
pub mod inference;
pub mod job;
pub mod metrics;
pub mod model;
pub mod phases;
pub mod predict;
pub mod report;
pub mod sagemaker;
pub mod serve;
mod shim;
pub mod signals;
pub mod storage;
pub mod text;
pub mod tokenize;
pub mod train;

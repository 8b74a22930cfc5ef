//! DistilBERT and BERT sequence classifiers in tch, loaded from and saved to Hugging Face
//! safetensors with Hugging Face names.
//!
//! - [`source::resolve_source`] finds the directory a `model_name_or_path` refers to (a folder,
//!   a `model.tar.gz`, the `model` channel, `s3://`), unpacking or downloading into scratch;
//!   [`hub`] fetches a Hub id (`org/name`) into the Hugging Face cache.
//! - [`SequenceClassifier::load_with`] reads `config.json` + `model.safetensors` (never pickle),
//!   checks every tensor name and shape, matches a classifier head to the labels by name
//!   ([`warm_start`]) and gives fresh parts the HF initialisation.
//! - [`check_model_dir`] runs the same checks on the safetensors header alone (the dry run).
//! - [`SequenceClassifier::save`] writes a directory `AutoModelForSequenceClassification`
//!   opens as is.
//!
//! Invariants: VarStore variable names are exactly the transformers state-dict names (the
//! optimizer and checkpoints rely on them); master weights stay fp32; logits are fp32.

mod classifier;
mod config;
mod error;
pub mod hub;
mod layers;
mod quantized;
pub mod source;
pub mod warm_start;
mod weights;

pub use classifier::{
    check_model_dir, classifier_labels, LoadReport, ModelCheck, SequenceClassifier,
};
pub use config::{Activation, EncoderSpec, HeadKind, ModelFamily};
pub use error::ModelError;
pub use source::{resolve_source, ModelSource, SourceRequest};
pub use warm_start::{HeadMatch, HeadOrigin};

use tch::{nn, Tensor};

/// A sequence classifier the training loop can drive.
pub trait ClassifierModel {
    /// Logits `[batch, num_labels]` (fp32) for `input_ids`/`attention_mask` `[batch, seq]` (i64,
    /// mask 1 = attend). `token_type_ids` may be `None` (all zeros). Dropout only when `train`.
    fn forward_t(
        &self,
        input_ids: &Tensor,
        attention_mask: &Tensor,
        token_type_ids: Option<&Tensor>,
        train: bool,
    ) -> Tensor;

    /// The variables, named exactly as Hugging Face names them (e.g.
    /// `distilbert.transformer.layer.0.attention.q_lin.weight`): the optimizer uses the names to
    /// pick weight-decay groups, checkpoints use them as keys.
    fn var_store(&self) -> &nn::VarStore;

    /// Mutable access, for loading checkpoints and best-model snapshots.
    fn var_store_mut(&mut self) -> &mut nn::VarStore;

    /// The variable `input_ids` index (the word embeddings), if the model can hand back its
    /// gradient sparse: optimizers may then update only the rows a batch used.
    fn input_table(&self) -> Option<String> {
        None
    }

    /// The final linear layer's input `[batch, features]` (fp32, no dropout), for models that
    /// can hand it out: a linear probe fits the head on it. Its weight and bias are the
    /// variables `classifier.weight` `[labels, features]` and `classifier.bias` `[labels]`.
    fn head_features(
        &self,
        _input_ids: &Tensor,
        _attention_mask: &Tensor,
        _token_type_ids: Option<&Tensor>,
    ) -> Option<Tensor> {
        None
    }

    /// Makes [`ClassifierModel::input_table`]'s gradient sparse (only the looked-up rows) or
    /// dense (the default) again.
    fn set_sparse_input_grad(&mut self, _sparse: bool) {}
}

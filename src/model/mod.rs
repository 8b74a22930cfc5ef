//! DistilBERT and BERT sequence classifiers in tch, loaded from and saved to Hugging Face
//! safetensors with Hugging Face names (TO BE WRITTEN, issue 3).
//!
//! This file so far pins the trait the training loop drives, so `train` never depends on a
//! concrete architecture.

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
}

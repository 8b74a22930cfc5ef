//! Device choice and host-to-device batch transfer.
//!
//! On CUDA, batch buffers are created in pinned host memory on the prefetch thread, so the copy
//! in the training thread is asynchronous (`non_blocking`) and overlaps the previous step.

use tch::{Device, Kind, TchError, Tensor};

use crate::hyperparams::DeviceChoice;
use crate::tokenize::batch::Batch;

/// Errors choosing a device.
#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    #[error("hyperparameters: device=cuda but libtorch sees no CUDA GPU; use device=auto or device=cpu, or a GPU instance")]
    NoCuda,
}

/// Resolves `auto` to CUDA when libtorch sees a GPU.
pub fn resolve_device(choice: DeviceChoice) -> Result<Device, DeviceError> {
    match choice {
        DeviceChoice::Cpu => Ok(Device::Cpu),
        DeviceChoice::Cuda if tch::Cuda::is_available() => Ok(Device::Cuda(0)),
        DeviceChoice::Cuda => Err(DeviceError::NoCuda),
        DeviceChoice::Auto => Ok(Device::cuda_if_available()),
    }
}

/// Batches assembled (on a background thread) ahead of the device, by training and evaluation.
pub(crate) const PREFETCH_DEPTH: usize = 4;

/// A batch as i64 tensors `[rows, seq]` (labels `[rows]`).
#[derive(Debug)]
pub struct TensorBatch {
    pub input_ids: Tensor,
    pub attention_mask: Tensor,
    pub token_type_ids: Option<Tensor>,
    pub labels: Tensor,
    pub rows: usize,
    pub real_tokens: usize,
    pub padded_tokens: usize,
}

impl TensorBatch {
    /// Host tensors for `batch`; pinned when the target is CUDA (call on the prefetch thread).
    pub fn from_host(batch: &Batch, target: Device) -> Result<Self, TchError> {
        let shape = [batch.num_rows() as i64, batch.seq_len as i64];
        let make = |v: &[i64], shape: &[i64]| -> Result<Tensor, TchError> {
            let t = Tensor::f_from_slice(v)?.f_view(shape)?;
            if target.is_cuda() {
                t.f_pin_memory(target)
            } else {
                Ok(t)
            }
        };
        Ok(Self {
            input_ids: make(&batch.input_ids, &shape)?,
            attention_mask: make(&batch.attention_mask, &shape)?,
            token_type_ids: batch
                .token_type_ids
                .as_deref()
                .map(|t| make(t, &shape))
                .transpose()?,
            labels: make(&batch.labels, &[batch.num_rows() as i64])?,
            rows: batch.num_rows(),
            real_tokens: batch.real_tokens,
            padded_tokens: batch.padded_tokens(),
        })
    }

    /// The same batch on `device` (asynchronous from pinned memory; no-op on CPU).
    pub fn to_device(self, device: Device) -> Result<Self, TchError> {
        if device == Device::Cpu {
            return Ok(self);
        }
        let mv = |t: &Tensor| t.f_to_device_(device, Kind::Int64, true, false);
        Ok(Self {
            input_ids: mv(&self.input_ids)?,
            attention_mask: mv(&self.attention_mask)?,
            token_type_ids: self.token_type_ids.as_ref().map(mv).transpose()?,
            labels: mv(&self.labels)?,
            ..self
        })
    }
}

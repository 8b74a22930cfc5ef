//! AdamW with Hugging Face / PyTorch semantics over flat parameter and moment buffers.
//!
//! At construction every trainable variable of the `VarStore` is re-pointed (`set_data`) at a
//! slice of one contiguous buffer, decay group first (libtorch's `_foreach_*`/fused AdamW ops
//! are not exposed by tch 0.24). Two update paths:
//! - devices (CUDA, or non-fp32): gradients are re-pointed into a flat gradient buffer the first
//!   time they appear, autograd accumulates there, and clipping, unscaling, zeroing and the update
//!   are a dozen whole-buffer kernels per step;
//! - fp32 on the CPU ([`host`]): [`AdamW::backward`] receives each gradient as autograd made it
//!   (no zero fill, no accumulation pass), and clipping and the update are fused host loops. A
//!   lookup table named with [`AdamW::make_lazy`] gets sparse gradients and is updated
//!   row-lazily ([`lazy`]), with results identical to the dense update.
//!
//! Invariants: all trainable variables share one device and one floating kind. If something
//! replaces a variable's storage later (e.g. a load that assigns new tensors), [`AdamW::step`]
//! notices the changed data pointer and re-binds the variable, copying its current value in.
//! With a lazy table, weights are only current after [`AdamW::sync_params`] (or for the rows
//! [`AdamW::prepare_rows`] saw).
//!
//! Update (PyTorch `AdamW`, `foreach=False`), with `t` the step count after incrementing:
//! `p *= 1 - lr*wd` (decay group only); `m = lerp(m, g, 1-b1)`; `v = b2*v + (1-b2)*g*g`;
//! `p -= lr/(1-b1^t) * m / (sqrt(v)/sqrt(1-b2^t) + eps)`. A variable without a gradient in a step
//! is updated with a zero gradient (PyTorch would skip it); every variable of a classifier
//! normally receives one.

mod host;
mod lazy;

use std::cell::RefCell;

use tch::{nn, Device, Kind, TchError, Tensor};

use lazy::{LazyTable, TableBuffers};

use super::distributed::{DistError, ProcessGroup, ReduceOp};

/// Errors from the optimizer.
#[derive(Debug, thiserror::Error)]
pub enum OptimError {
    #[error("optimizer: the model has no trainable variables")]
    NoParameters,
    #[error("optimizer: variable `{name}` is {kind:?} on {device:?} but `{first}` is {first_kind:?} on {first_device:?}; all trainable variables must share device and kind")]
    MixedParameters {
        name: String,
        kind: Kind,
        device: Device,
        first: String,
        first_kind: Kind,
        first_device: Device,
    },
    #[error("optimizer state: {0}")]
    State(String),
    #[error("optimizer: libtorch failed: {0}")]
    Torch(#[from] TchError),
    #[error(transparent)]
    Distributed(#[from] DistError),
}

/// AdamW hyperparameters (HF `TrainingArguments` names).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamWConfig {
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
    /// The classification head's learning rate as a multiple of everyone else's (1 = the same):
    /// its step size and decoupled weight decay scale with it, every step of the schedule.
    pub head_lr_scale: f64,
}

impl Default for AdamWConfig {
    fn default() -> Self {
        Self {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.0,
            head_lr_scale: 1.0,
        }
    }
}

/// Whether a variable belongs to the classification head the fine-tune adds on top of the
/// encoder: `classifier.*` and DistilBERT's `pre_classifier.*` (BERT's pooler comes pretrained).
pub fn is_head(name: &str) -> bool {
    name.starts_with("classifier.") || name.starts_with("pre_classifier.")
}

/// Whether HF's `Trainer` applies weight decay to a variable: never to biases or normalisation
/// weights (`LayerNorm`, `layer_norm`, `*_norm`, `.norm.`, RMSNorm).
pub fn decays(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    let no_decay = lower.contains("bias")
        || lower.contains("layernorm")
        || lower.contains("layer_norm")
        || lower.contains("rmsnorm")
        || lower
            .split('.')
            .any(|part| part == "norm" || part.ends_with("_norm"));
    !no_decay
}

/// One variable's slice of the flat buffers.
#[derive(Debug)]
struct Slot {
    name: String,
    var: Tensor,
    shape: Vec<i64>,
    offset: i64,
    numel: i64,
    /// This variable's learning rate as a multiple of the step's ([`AdamWConfig::head_lr_scale`]
    /// for the head, else 1).
    lr_scale: f64,
    /// Where the variable's data must live while bound to the flat buffer.
    param_ptr: usize,
    grad_ptr: usize,
}

/// Exported optimizer state of one variable, as CPU tensors.
#[derive(Debug)]
pub struct VarState {
    pub name: String,
    pub exp_avg: Tensor,
    pub exp_avg_sq: Tensor,
}

/// Exported optimizer state, keyed by variable name; `step` is shared by all variables.
#[derive(Debug)]
pub struct AdamWState {
    pub step: u64,
    pub vars: Vec<VarState>,
}

/// AdamW over the trainable variables of one `VarStore`.
#[derive(Debug)]
pub struct AdamW {
    config: AdamWConfig,
    slots: Vec<Slot>,
    /// Elements `0..decay_numel` of the flat buffers belong to the decay group.
    decay_numel: i64,
    params: Tensor,
    exp_avg: Tensor,
    exp_avg_sq: Tensor,
    step: u64,
    /// Where gradients live: one flat buffer (devices), or tensors handed over by backward (CPU).
    grads: Grads,
    /// Host path: the clipping factor for the pending gradients, applied by the update.
    host_grad_scale: f32,
    /// Host path, data-parallel: the buffer the dense gradients are summed in, kept across steps
    /// (the pending gradients are views of it until the update).
    reduce_buf: Option<Tensor>,
}

/// Gradient storage of the two update paths.
#[derive(Debug)]
enum Grads {
    /// Autograd accumulates into views of `flat`; the update is a dozen whole-buffer kernels.
    Flat {
        flat: Tensor,
        /// Per-step workspace `[total_numel]` (g^2, then the denominator), kept so steps
        /// allocate nothing.
        scratch: Tensor,
    },
    /// fp32 on the CPU: [`AdamW::backward`] takes each gradient as autograd produced it (no
    /// zeroing, no accumulation pass) and the update is one fused host loop.
    Host {
        /// Per slot: this step's gradient so far (dense, or sparse for the lazy table).
        pending: Vec<Option<Tensor>>,
        /// `pending` has been through [`AdamW::settle_host_grads`] since the last backward.
        settled: bool,
        /// The table updated row-lazily, when [`AdamW::make_lazy`] named one.
        lazy: Option<RefCell<LazyTable>>,
    },
}

impl AdamW {
    /// Binds the trainable variables of `vs` to flat buffers. Call once, before training.
    pub fn new(vs: &nn::VarStore, config: AdamWConfig) -> Result<Self, OptimError> {
        let mut vars: Vec<(String, Tensor)> = vs
            .variables()
            .into_iter()
            .filter(|(_, t)| t.requires_grad())
            .collect();
        if vars.is_empty() {
            return Err(OptimError::NoParameters);
        }
        // Decay group first, then by name: a stable layout for every run.
        vars.sort_by(|(a, _), (b, _)| (!decays(a), a).cmp(&(!decays(b), b)));
        let (first_name, first) = &vars[0];
        let (kind, device) = (first.f_kind()?, first.device());
        for (name, t) in &vars {
            if t.f_kind()? != kind || t.device() != device {
                return Err(OptimError::MixedParameters {
                    name: name.clone(),
                    kind: t.f_kind()?,
                    device: t.device(),
                    first: first_name.clone(),
                    first_kind: kind,
                    first_device: device,
                });
            }
        }
        let mut slots = Vec::with_capacity(vars.len());
        let mut offset = 0i64;
        let mut decay_numel = 0i64;
        for (name, var) in vars {
            let numel = var.numel() as i64;
            if decays(&name) {
                decay_numel += numel;
            }
            slots.push(Slot {
                shape: var.size(),
                lr_scale: if is_head(&name) {
                    config.head_lr_scale
                } else {
                    1.0
                },
                name,
                var,
                offset,
                numel,
                param_ptr: 0,
                grad_ptr: 0,
            });
            offset += numel;
        }
        let opts = (kind, device);
        let grads = if device == Device::Cpu && kind == Kind::Float {
            Grads::Host {
                pending: (0..slots.len()).map(|_| None).collect(),
                settled: false,
                lazy: None,
            }
        } else {
            Grads::Flat {
                flat: Tensor::f_zeros([offset], opts)?,
                scratch: Tensor::f_empty([offset], opts)?,
            }
        };
        let mut optim = Self {
            config,
            slots,
            decay_numel,
            params: Tensor::f_zeros([offset], opts)?,
            exp_avg: Tensor::f_zeros([offset], opts)?,
            exp_avg_sq: Tensor::f_zeros([offset], opts)?,
            step: 0,
            grads,
            host_grad_scale: 1.0,
            reduce_buf: None,
        };
        for i in 0..optim.slots.len() {
            optim.bind_param(i)?;
        }
        Ok(optim)
    }

    fn elt_size(&self) -> usize {
        self.params.kind().elt_size_in_bytes()
    }

    /// True when the update runs as fused host loops (fp32 buffers on the CPU).
    pub fn on_host(&self) -> bool {
        matches!(self.grads, Grads::Host { .. })
    }

    /// Copies variable `i` into its flat slice and points the variable at that slice.
    fn bind_param(&mut self, i: usize) -> Result<(), OptimError> {
        let _guard = tch::no_grad_guard();
        let elt = self.elt_size();
        let slot = &mut self.slots[i];
        let mut view = self
            .params
            .f_narrow(0, slot.offset, slot.numel)?
            .f_view(slot.shape.as_slice())?;
        view.f_copy_(&slot.var)?;
        slot.var.set_data(&view);
        slot.param_ptr = self.params.data_ptr() as usize + slot.offset as usize * elt;
        Ok(())
    }

    /// Re-binds variables whose storage something replaced (copying their current value in).
    fn rebind_params(&mut self) -> Result<(), OptimError> {
        for i in 0..self.slots.len() {
            if self.slots[i].var.data_ptr() as usize != self.slots[i].param_ptr {
                self.bind_param(i)?;
            }
        }
        Ok(())
    }

    /// Makes sure every gradient lives in the flat gradient buffer (a no-op after the first
    /// step unless something replaced a gradient or a variable).
    fn gather_flat_grads(&mut self) -> Result<(), OptimError> {
        self.rebind_params()?;
        let _guard = tch::no_grad_guard();
        let elt = self.elt_size();
        let Grads::Flat { flat, .. } = &self.grads else {
            return Ok(());
        };
        for slot in &mut self.slots {
            let mut grad = slot.var.f_grad()?;
            if !grad.defined() || grad.data_ptr() as usize == slot.grad_ptr {
                continue;
            }
            let mut view = flat
                .f_narrow(0, slot.offset, slot.numel)?
                .f_view(slot.shape.as_slice())?;
            view.f_copy_(&grad)?;
            grad.set_data(&view);
            slot.grad_ptr = flat.data_ptr() as usize + slot.offset as usize * elt;
        }
        Ok(())
    }

    /// Updates the variable named `name` (a `[rows, dim]` lookup table) row-lazily; see
    /// [`lazy`]. Its gradients must then come sparse (the table's lookup built with sparse
    /// gradients), and [`AdamW::prepare_rows`] must see every batch's ids before its forward.
    /// Returns false (and changes nothing) off the host path or when `name` is not a 2-D
    /// trainable variable.
    pub fn make_lazy(&mut self, name: &str) -> Result<bool, OptimError> {
        let Some(slot) = self.slots.iter().position(|s| s.name == name) else {
            return Ok(false);
        };
        let [rows, dim] = self.slots[slot].shape[..] else {
            return Ok(false);
        };
        let (offset, step) = (self.slots[slot].offset as usize, self.step);
        let (rows, dim) = (rows as usize, dim as usize);
        // SAFETY: host buffers (checked below before use), the table's range lies inside them.
        let touched = match &self.grads {
            Grads::Host { .. } => {
                let (m, v) = unsafe {
                    (
                        host_range(&self.exp_avg, offset, rows * dim),
                        host_range(&self.exp_avg_sq, offset, rows * dim),
                    )
                };
                m.chunks(dim)
                    .zip(v.chunks(dim))
                    .map(|(m, v)| m.iter().chain(v).any(|&x| x != 0.0))
                    .collect()
            }
            Grads::Flat { .. } => return Ok(false),
        };
        if let Grads::Host { lazy, .. } = &mut self.grads {
            *lazy = Some(RefCell::new(LazyTable::new(
                slot, offset, rows, dim, step, touched,
            )));
        }
        Ok(true)
    }

    /// The table's buffers.
    ///
    /// # Safety
    /// Host path only; nothing else may use the table's part of the buffers meanwhile.
    unsafe fn table_buffers(&self, t: &LazyTable) -> TableBuffers<'_> {
        let len = t.rows * t.dim;
        TableBuffers {
            p: host_range(&self.params, t.offset, len),
            m: host_range(&self.exp_avg, t.offset, len),
            v: host_range(&self.exp_avg_sq, t.offset, len),
        }
    }

    /// Brings the lazy table's rows that `input_ids` (any shape, i64) look up to the current
    /// step; call before each forward pass. A no-op without a lazy table.
    pub fn prepare_rows(&self, input_ids: &Tensor) -> Result<(), OptimError> {
        let Grads::Host {
            lazy: Some(table), ..
        } = &self.grads
        else {
            return Ok(());
        };
        let mut ids = Vec::<i64>::try_from(input_ids.f_reshape([-1])?.f_to_kind(Kind::Int64)?)?;
        ids.sort_unstable();
        ids.dedup();
        let mut table = table.borrow_mut();
        // SAFETY: host path; autograd is idle before the forward pass.
        let buffers = unsafe { self.table_buffers(&table) };
        table.catch_up_rows(&ids, buffers);
        Ok(())
    }

    /// Makes every weight reflect the steps taken so far (the lazy table's rows included); call
    /// before anything reads the weights other than a prepared forward pass: evaluation,
    /// snapshots, checkpoints, saving. Cheap when nothing is pending.
    pub fn sync_params(&self) {
        if let Grads::Host {
            lazy: Some(table), ..
        } = &self.grads
        {
            let mut table = table.borrow_mut();
            if !table.is_current(self.step) {
                // SAFETY: host path; called between steps, when autograd is idle.
                let buffers = unsafe { self.table_buffers(&table) };
                table.catch_up_all(buffers);
            }
        }
    }

    /// Backpropagates `loss` into this step's gradients (accumulating over micro-batches).
    pub fn backward(&mut self, loss: &Tensor) -> Result<(), OptimError> {
        let Grads::Host {
            pending, settled, ..
        } = &mut self.grads
        else {
            return Ok(loss.f_backward()?);
        };
        *settled = false;
        let vars: Vec<&Tensor> = self.slots.iter().map(|s| &s.var).collect();
        let grads = Tensor::f_run_backward(&[loss], &vars, false, false)?;
        let _guard = tch::no_grad_guard();
        for (slot, g) in pending.iter_mut().zip(grads) {
            if !g.defined() {
                continue;
            }
            *slot = Some(match slot.take() {
                None => g,
                Some(sum) => sum.f_add(&g)?,
            });
        }
        Ok(())
    }

    /// Handles on every gradient of this step (the flat buffer, or each pending tensor: a
    /// sparse one's values), for in-place unscaling.
    pub fn gradients(&mut self) -> Result<Vec<Tensor>, OptimError> {
        self.settle_host_grads()?;
        self.gather_flat_grads()?;
        Ok(match &self.grads {
            Grads::Flat { flat, .. } => vec![flat.shallow_clone()],
            Grads::Host { pending, .. } => pending
                .iter()
                .flatten()
                .map(|g| {
                    if g.is_sparse() {
                        g.f_values()
                    } else {
                        Ok(g.shallow_clone())
                    }
                })
                .collect::<Result<_, _>>()?,
        })
    }

    /// Turns the pending host gradients into owned, contiguous fp32 tensors (dense ones for
    /// every slot but the lazy table, whose gradient is coalesced), so they can be unscaled in
    /// place and read as slices. Once per step: clipping and the update both need it.
    fn settle_host_grads(&mut self) -> Result<(), OptimError> {
        let Grads::Host {
            pending,
            settled,
            lazy,
        } = &mut self.grads
        else {
            return Ok(());
        };
        if *settled {
            return Ok(());
        }
        let lazy_slot = lazy.as_ref().map(|t| t.borrow().slot);
        let _guard = tch::no_grad_guard();
        let mut seen = std::collections::HashSet::new();
        for (i, (slot, pending)) in self.slots.iter().zip(pending.iter_mut()).enumerate() {
            if slot.var.f_grad()?.defined() {
                return Err(OptimError::State(format!(
                    "variable `{}` has a .grad: on the CPU, gradients must come from AdamW::backward",
                    slot.name
                )));
            }
            let Some(g) = pending.take() else { continue };
            let g = if Some(i) == lazy_slot {
                if !g.is_sparse() {
                    return Err(OptimError::State(format!(
                        "variable `{}` is updated row-lazily but got a dense gradient; build its lookup with sparse gradients",
                        slot.name
                    )));
                }
                let g = g.f_coalesce()?;
                Tensor::f_sparse_coo_tensor_indices_size(
                    &g.f_indices()?,
                    &g.f_values()?.f_to_kind(Kind::Float)?.f_contiguous()?,
                    slot.shape.as_slice(),
                    (Kind::Float, Device::Cpu),
                    true,
                )?
            } else {
                let mut g = if g.is_sparse() {
                    g.f_to_dense(None, false)?
                } else {
                    g
                };
                if g.f_kind()? != Kind::Float {
                    g = g.f_to_kind(Kind::Float)?;
                }
                g = g.f_contiguous()?;
                // Autograd may hand the same tensor to two variables; unscaling in place needs
                // each to own its storage.
                if !seen.insert(g.data_ptr() as usize) {
                    g = g.copy();
                }
                g
            };
            *pending = Some(g);
        }
        *settled = true;
        Ok(())
    }

    /// The pending host gradients' elements in slot order (the lazy table's sparse values in
    /// its place).
    ///
    /// # Safety
    /// After [`AdamW::settle_host_grads`]; the slices must not outlive the pending tensors.
    unsafe fn host_grad_parts(&self) -> Vec<&[f32]> {
        let Grads::Host { pending, .. } = &self.grads else {
            return Vec::new();
        };
        pending
            .iter()
            .flatten()
            .map(|g| -> &[f32] {
                if g.is_sparse() {
                    host_slice_owned(g.values())
                } else {
                    host_slice(g)
                }
            })
            .collect()
    }

    /// Global L2 norm of all gradients `[]` (stays on the device), then scales gradients so the
    /// norm is at most `max_norm` like `torch.nn.utils.clip_grad_norm_` (`max_norm <= 0`: no
    /// clipping, the norm is still returned).
    pub fn clip_grad_norm(&mut self, max_norm: f64) -> Result<Tensor, OptimError> {
        if self.on_host() {
            self.settle_host_grads()?;
            // SAFETY: the pending gradients are owned contiguous fp32 CPU tensors, untouched by
            // anything else until the step.
            let parts = unsafe { self.host_grad_parts() };
            let norm = host::sum_squares(parts).sqrt();
            self.host_grad_scale = 1.0;
            if max_norm > 0.0 {
                let coef = max_norm / (norm + 1e-6);
                if coef < 1.0 {
                    // Applied while the update reads the gradients (see host::Coefficients).
                    self.host_grad_scale = coef as f32;
                }
            }
            return Ok(Tensor::f_from_slice(&[norm as f32])?.f_reshape([])?);
        }
        self.gather_flat_grads()?;
        let _guard = tch::no_grad_guard();
        let Grads::Flat { flat, .. } = &mut self.grads else {
            unreachable!("checked on_host above");
        };
        let norm = flat.f_norm()?;
        if max_norm > 0.0 {
            // clip = min(1, max_norm / (norm + 1e-6)), applied without a host sync.
            let coef = (norm.f_add_scalar(1e-6)?.f_reciprocal()? * max_norm).f_clamp_max(1.0)?;
            let _ = flat.f_mul_(&coef)?;
        }
        Ok(norm)
    }

    /// One AdamW update at learning rate `lr` with the current gradients.
    pub fn step(&mut self, lr: f64) -> Result<(), OptimError> {
        if self.on_host() {
            return self.host_step(lr);
        }
        self.gather_flat_grads()?;
        let _guard = tch::no_grad_guard();
        self.step += 1;
        let c = self.config;
        let Grads::Flat { flat: g, scratch } = &mut self.grads else {
            unreachable!("checked on_host above");
        };
        if c.weight_decay != 0.0 && self.decay_numel > 0 {
            let decay = 1.0 - lr * c.weight_decay;
            let _ = self
                .params
                .f_narrow(0, 0, self.decay_numel)?
                .f_mul_scalar_(decay)?;
            // Head variables decay at their own rate: the ratio on their slices.
            for slot in self.slots.iter().filter(|s| s.lr_scale != 1.0) {
                if slot.offset < self.decay_numel && decay != 0.0 {
                    let head = 1.0 - lr * slot.lr_scale * c.weight_decay;
                    let _ = self
                        .params
                        .f_narrow(0, slot.offset, slot.numel)?
                        .f_mul_scalar_(head / decay)?;
                }
            }
        }
        let _ = self.exp_avg.f_lerp_(g, 1.0 - c.beta1)?;
        // v = b2*v + (1-b2)*g^2 as a lerp towards g^2, staged in the scratch buffer: two passes
        // and no allocation instead of a scaled temporary plus mul_/addcmul_.
        let _ = g.f_mul_out(scratch, g)?;
        let _ = self.exp_avg_sq.f_lerp_(scratch, 1.0 - c.beta2)?;
        let t = self.step as i32;
        let bias_correction1 = 1.0 - c.beta1.powi(t);
        let bias_correction2_sqrt = (1.0 - c.beta2.powi(t)).sqrt();
        let step_size = lr / bias_correction1;
        if step_size == 0.0 {
            return Ok(()); // lr 0 (first warm-up step): the moments move, the weights do not.
        }
        // p -= step_size * m / (sqrt(v)/bc2 + eps), written as p += m / d with
        // d = sqrt(v) * (-1/(step_size*bc2)) - eps/step_size, so the step size folds into the
        // denominator (tch's addcdiv_ has no `value`) and no m-sized temporary is needed.
        let _ = self.exp_avg_sq.f_sqrt_out(scratch)?;
        let _ = scratch.f_mul_scalar_(-1.0 / (step_size * bias_correction2_sqrt))?;
        let _ = scratch.f_add_scalar_(-c.eps / step_size)?;
        // A head variable's step is lr_scale times larger: its denominators that much smaller.
        for slot in self.slots.iter().filter(|s| s.lr_scale != 1.0) {
            let _ = scratch
                .f_narrow(0, slot.offset, slot.numel)?
                .f_mul_scalar_(1.0 / slot.lr_scale)?;
        }
        let _ = self.params.f_addcdiv_(&self.exp_avg, scratch)?;
        Ok(())
    }

    /// The fused CPU update: dense slots in one split pass, the lazy table's gradient rows
    /// directly (its other rows catch up when next read).
    fn host_step(&mut self, lr: f64) -> Result<(), OptimError> {
        self.rebind_params()?;
        self.settle_host_grads()?;
        self.step += 1;
        let c = self.config;
        let t = self.step as i32;
        let k = host::Coefficients {
            beta1: c.beta1 as f32,
            beta2: c.beta2 as f32,
            eps: c.eps as f32,
            bias_correction2_sqrt: (1.0 - c.beta2.powi(t)).sqrt() as f32,
            step_size: (lr / (1.0 - c.beta1.powi(t))) as f32,
            grad_scale: std::mem::replace(&mut self.host_grad_scale, 1.0),
        };
        let decay = (1.0 - lr * c.weight_decay) as f32;
        let Grads::Host { pending, lazy, .. } = &self.grads else {
            unreachable!("host_step runs on the host path");
        };
        let lazy_slot = lazy.as_ref().map(|t| t.borrow().slot);
        let mut spans = Vec::with_capacity(self.slots.len());
        for (i, (slot, g)) in self.slots.iter().zip(pending).enumerate() {
            if Some(i) == lazy_slot {
                continue;
            }
            let (offset, len) = (slot.offset as usize, slot.numel as usize);
            let (decay, k) = if slot.lr_scale == 1.0 {
                (self.decay_of(slot, decay), k)
            } else {
                let scaled = (1.0 - lr * slot.lr_scale * c.weight_decay) as f32;
                let step_size = (f64::from(k.step_size) * slot.lr_scale) as f32;
                (
                    self.decay_of(slot, scaled),
                    host::Coefficients { step_size, ..k },
                )
            };
            // SAFETY: distinct ranges of the three flat fp32 CPU buffers, and an owned
            // contiguous fp32 gradient (settled above); nothing else runs during the update
            // (autograd is idle between backward and step).
            let (p, m, v) = unsafe {
                (
                    host_range(&self.params, offset, len),
                    host_range(&self.exp_avg, offset, len),
                    host_range(&self.exp_avg_sq, offset, len),
                )
            };
            match g {
                // SAFETY: as above.
                Some(g) => spans.push(host::Span {
                    p,
                    g: unsafe { host_slice(g) },
                    m,
                    v,
                    decay,
                    k,
                }),
                // No gradient this step: PyTorch would skip the variable; HF models always
                // produce one, so a zero gradient keeps the update uniform.
                None => host::adamw_zero_grad(p, m, v, decay, k),
            }
        }
        host::adamw(spans);
        if let Some(table) = lazy {
            let mut table = table.borrow_mut();
            let table_decay = self.decay_of(&self.slots[table.slot], decay);
            table.record(self.step, table_decay, k);
            if let Some(g) = &pending[table.slot] {
                let rows = Vec::<i64>::try_from(g.f_indices()?.f_reshape([-1])?)?;
                // SAFETY: coalesced values are an owned contiguous fp32 tensor (settled above).
                let values = unsafe { host_slice_owned(g.values()) };
                // SAFETY: host path, autograd idle; the table's range of the buffers.
                let buffers = unsafe { self.table_buffers(&table) };
                table.apply(self.step, &rows, values, buffers);
            }
        }
        if let Grads::Host { pending, .. } = &mut self.grads {
            pending.iter_mut().for_each(|g| *g = None);
        }
        Ok(())
    }

    /// Clears the gradients: the flat buffer is zeroed with one kernel; host gradients are
    /// dropped.
    pub fn zero_grad(&mut self) -> Result<(), OptimError> {
        match &mut self.grads {
            Grads::Host { pending, .. } => {
                pending.iter_mut().for_each(|g| *g = None);
                self.host_grad_scale = 1.0;
            }
            Grads::Flat { .. } => {
                self.gather_flat_grads()?;
                if let Grads::Flat { flat, .. } = &mut self.grads {
                    let _ = flat.f_zero_()?;
                }
            }
        }
        Ok(())
    }

    /// Overwrites every trainable weight with rank `root`'s: one broadcast of the flat parameter
    /// buffer (data-parallel runs start from identical weights).
    pub fn broadcast_params(
        &mut self,
        group: &ProcessGroup,
        root: usize,
        phase: &str,
    ) -> Result<(), OptimError> {
        self.rebind_params()?;
        self.sync_params();
        let _guard = tch::no_grad_guard();
        group.broadcast(&mut self.params, root, phase)?;
        Ok(())
    }

    /// Sums this step's gradients over the ranks of `group`, in place, so every rank takes the
    /// same update (each rank's loss was normalised by the global batch, so the sum is the
    /// gradient of the global batch). Call once per optimizer step, after the last backward.
    ///
    /// Host path: the dense gradients travel as one flat buffer, followed by a mask of the lazy
    /// table's rows each rank touched; then the gradient rows of the union of those rows are
    /// summed, so the row-lazy update sees exactly the rows (and sums) one process would.
    pub fn all_reduce_gradients(
        &mut self,
        group: &ProcessGroup,
        phase: &str,
    ) -> Result<(), OptimError> {
        if !self.on_host() {
            self.gather_flat_grads()?;
            let Grads::Flat { flat, .. } = &mut self.grads else {
                unreachable!("checked on_host above");
            };
            group.all_reduce(flat, ReduceOp::Sum, phase)?;
            return Ok(());
        }
        self.settle_host_grads()?;
        let _guard = tch::no_grad_guard();
        let Grads::Host { pending, lazy, .. } = &mut self.grads else {
            unreachable!("checked on_host above");
        };
        let lazy_slot = lazy.as_ref().map(|t| t.borrow().slot);
        let table_rows = lazy_slot.map_or(0, |s| self.slots[s].shape[0]);
        let dense: i64 = self
            .slots
            .iter()
            .enumerate()
            .filter(|(i, _)| Some(*i) != lazy_slot)
            .map(|(_, s)| s.numel)
            .sum();
        let host = (Kind::Float, Device::Cpu);
        let mut buf = match self.reduce_buf.take() {
            Some(b) if b.numel() as i64 == dense + table_rows => b,
            _ => Tensor::f_empty([dense + table_rows], host)?,
        };
        let mut offset = 0i64;
        for (i, slot) in self.slots.iter().enumerate() {
            if Some(i) == lazy_slot {
                continue;
            }
            let mut part = buf.f_narrow(0, offset, slot.numel)?;
            match &pending[i] {
                Some(g) => part.f_copy_(&g.f_reshape([-1])?)?,
                None => {
                    let _ = part.f_zero_()?;
                }
            };
            offset += slot.numel;
        }
        let _ = buf.f_narrow(0, dense, table_rows)?.f_zero_()?;
        let local_rows = match lazy_slot.and_then(|s| pending[s].as_ref()) {
            Some(g) => Some(g.f_indices()?.f_reshape([-1])?),
            None => None,
        };
        if let Some(rows) = &local_rows {
            let _ = buf
                .f_narrow(0, dense, table_rows)?
                .f_index_fill_(0, rows, 1.0)?;
        }
        group.all_reduce(&mut buf, ReduceOp::Sum, phase)?;
        let mut offset = 0i64;
        for (i, slot) in self.slots.iter().enumerate() {
            if Some(i) == lazy_slot {
                continue;
            }
            pending[i] = Some(
                buf.f_narrow(0, offset, slot.numel)?
                    .f_view(slot.shape.as_slice())?,
            );
            offset += slot.numel;
        }
        // Reused next step: by then the update has dropped the views handed out above.
        self.reduce_buf = Some(buf.shallow_clone());
        if let Some(s) = lazy_slot {
            let touched = buf.f_narrow(0, dense, table_rows)?.f_gt(0.0)?;
            // Sorted row ids, so the summed gradient is already coalesced.
            let union = touched.f_nonzero()?.f_reshape([-1])?;
            let n = union.size()[0];
            let local = pending[s].take();
            if n > 0 {
                let dim = self.slots[s].shape[1];
                let mut values = Tensor::f_zeros([n, dim], host)?;
                if let (Some(g), Some(rows)) = (local, &local_rows) {
                    // Where each of this rank's rows sits in the union.
                    let position = touched
                        .f_to_kind(Kind::Int64)?
                        .f_cumsum(0, Kind::Int64)?
                        .f_sub_scalar(1)?
                        .f_index_select(0, rows)?;
                    let _ = values.f_index_add_(0, &position, &g.f_values()?)?;
                }
                group.all_reduce(&mut values, ReduceOp::Sum, phase)?;
                pending[s] = Some(Tensor::f_sparse_coo_tensor_indices_size(
                    &union.f_reshape([1, -1])?,
                    &values,
                    self.slots[s].shape.as_slice(),
                    host,
                    true,
                )?);
            }
        }
        Ok(())
    }

    /// The step's weight-decay factor for `slot` (1 outside the decay group).
    fn decay_of(&self, slot: &Slot, decay: f32) -> f32 {
        if slot.offset < self.decay_numel {
            decay
        } else {
            1.0
        }
    }

    /// Optimizer steps taken so far.
    pub fn step_count(&self) -> u64 {
        self.step
    }

    /// Names of the variables in the decay group, in layout order.
    pub fn decay_names(&self) -> Vec<&str> {
        self.slots
            .iter()
            .filter(|s| s.offset < self.decay_numel)
            .map(|s| s.name.as_str())
            .collect()
    }

    /// Copies the moment estimates to CPU, per variable name, for a checkpoint (bringing lazy
    /// rows up to date first).
    pub fn export_state(&self) -> Result<AdamWState, OptimError> {
        let host_copy = |t: &Tensor| -> Result<Tensor, TchError> {
            let mut out = Tensor::f_zeros(t.size().as_slice(), (t.f_kind()?, Device::Cpu))?;
            out.f_copy_(t)?;
            Ok(out)
        };
        let mut state = self.state_views()?;
        for v in &mut state.vars {
            v.exp_avg = host_copy(&v.exp_avg)?;
            v.exp_avg_sq = host_copy(&v.exp_avg_sq)?;
        }
        Ok(state)
    }

    /// The optimizer state as views into the live moment buffers (no copy, so a checkpoint of
    /// a large model does not hold its moments twice): read them before the next step.
    pub fn state_views(&self) -> Result<AdamWState, OptimError> {
        self.sync_params();
        let mut vars = Vec::with_capacity(self.slots.len());
        for s in &self.slots {
            let view = |buf: &Tensor| -> Result<Tensor, TchError> {
                buf.f_narrow(0, s.offset, s.numel)?
                    .f_view(s.shape.as_slice())
            };
            vars.push(VarState {
                name: s.name.clone(),
                exp_avg: view(&self.exp_avg)?,
                exp_avg_sq: view(&self.exp_avg_sq)?,
            });
        }
        Ok(AdamWState {
            step: self.step,
            vars,
        })
    }

    /// Restores state written by [`AdamW::export_state`]; every trainable variable must be
    /// present with its shape. Call before [`AdamW::make_lazy`].
    pub fn import_state(&mut self, state: &AdamWState) -> Result<(), OptimError> {
        if let Grads::Host { lazy: Some(_), .. } = &self.grads {
            return Err(OptimError::State(
                "import the optimizer state before making a table lazy".into(),
            ));
        }
        let _guard = tch::no_grad_guard();
        for s in &self.slots {
            let found = state.vars.iter().find(|v| v.name == s.name).ok_or_else(|| {
                OptimError::State(format!(
                    "variable `{}` is missing from the saved optimizer state; the checkpoint belongs to another model",
                    s.name
                ))
            })?;
            for (src, dst) in [
                (&found.exp_avg, &self.exp_avg),
                (&found.exp_avg_sq, &self.exp_avg_sq),
            ] {
                if src.size() != s.shape {
                    return Err(OptimError::State(format!(
                        "variable `{}` has shape {:?} in the saved optimizer state but {:?} in the model",
                        s.name,
                        src.size(),
                        s.shape
                    )));
                }
                let mut view = dst.f_narrow(0, s.offset, s.numel)?;
                view.f_copy_(&src.f_reshape([-1])?)?;
            }
        }
        self.step = state.step;
        Ok(())
    }
}

/// A contiguous fp32 CPU tensor's elements.
///
/// # Safety
/// `t` must be a contiguous `Kind::Float` CPU tensor, and no other reference to its storage may
/// be used while the slice lives.
#[allow(clippy::mut_from_ref)]
unsafe fn host_slice(t: &Tensor) -> &mut [f32] {
    std::slice::from_raw_parts_mut(t.data_ptr() as *mut f32, t.numel())
}

/// [`host_slice`] of a tensor handle that shares storage with one the caller keeps alive
/// (e.g. a sparse tensor's `values()`).
///
/// # Safety
/// As [`host_slice`]; the storage's owner must outlive the slice.
#[allow(clippy::mut_from_ref)]
unsafe fn host_slice_owned<'a>(t: Tensor) -> &'a mut [f32] {
    std::slice::from_raw_parts_mut(t.data_ptr() as *mut f32, t.numel())
}

/// Elements `offset..offset + len` of a flat host buffer.
///
/// # Safety
/// As [`host_slice`]; the range must lie inside the buffer.
#[allow(clippy::mut_from_ref)]
unsafe fn host_range(t: &Tensor, offset: usize, len: usize) -> &mut [f32] {
    std::slice::from_raw_parts_mut((t.data_ptr() as *mut f32).add(offset), len)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decay_groups_follow_hf_names() {
        for name in [
            "distilbert.embeddings.LayerNorm.weight",
            "distilbert.transformer.layer.0.sa_layer_norm.weight",
            "distilbert.transformer.layer.0.output_layer_norm.bias",
            "classifier.bias",
            "bert.encoder.layer.0.attention.output.LayerNorm.weight",
            "model.norm.weight",
        ] {
            assert!(!decays(name), "{name} must not decay");
        }
        for name in [
            "classifier.weight",
            "distilbert.transformer.layer.0.attention.q_lin.weight",
            "distilbert.embeddings.word_embeddings.weight",
            "bert.pooler.dense.weight",
        ] {
            assert!(decays(name), "{name} must decay");
        }
    }

    /// The fused CPU loop (fp32) and the tensor-kernel path (taken here for fp64, as on CUDA)
    /// must compute the same AdamW + clipping, weight decay and lr-0 steps included.
    #[test]
    fn host_update_matches_tensor_kernel_path() {
        for scale in [1.0, 3.0] {
            host_update_matches_tensor_kernel_path_with(scale);
        }
    }

    fn host_update_matches_tensor_kernel_path_with(head_lr_scale: f64) {
        let run = |kind: Kind| -> Vec<f64> {
            let mut vs = nn::VarStore::new(Device::Cpu);
            let init = Tensor::from_slice(&[0.5f64, -1.0, 2.0, 0.25, -0.75, 1.5]);
            let w = vs
                .root()
                .sub("classifier")
                .var_copy("weight", &init.view([2, 3]));
            let b = vs
                .root()
                .sub("classifier")
                .var_copy("bias", &init.narrow(0, 0, 2));
            vs.set_kind(kind);
            let config = AdamWConfig {
                weight_decay: 0.1,
                head_lr_scale,
                ..AdamWConfig::default()
            };
            let mut opt = AdamW::new(&vs, config).unwrap();
            assert_eq!(opt.on_host(), kind == Kind::Float);
            let x = Tensor::from_slice(&[1.0f64, -2.0, 3.0]).to_kind(kind);
            for (step, lr) in [0.0, 0.05, 0.02, 0.01].into_iter().enumerate() {
                let y = w.matmul(&x) + &b;
                let loss = (&y * &y).sum(kind) * (step as f64 + 1.0);
                opt.backward(&loss).unwrap();
                // Large gradients: the first clipped steps exercise the scaling pass.
                let _ = opt.clip_grad_norm(1.0).unwrap();
                opt.step(lr).unwrap();
                opt.zero_grad().unwrap();
            }
            let flat = Tensor::cat(&[w.reshape([-1]), b.reshape([-1])], 0).to_kind(Kind::Double);
            Vec::try_from(flat).unwrap()
        };
        let host = run(Kind::Float);
        let kernels = run(Kind::Double);
        assert_ne!(
            host,
            run(Kind::Float).iter().map(|x| x + 1.0).collect::<Vec<_>>()
        );
        for (h, k) in host.iter().zip(&kernels) {
            assert!((h - k).abs() < 1e-5, "host {host:?} vs kernels {kernels:?}");
        }
        // The weights did move (lr 0 on the first step only).
        assert!((host[0] - 0.5).abs() > 1e-3, "{host:?}");
    }

    #[test]
    fn the_head_steps_head_lr_scale_times_as_far_as_the_encoder_on_both_paths() {
        for kind in [Kind::Float, Kind::Double] {
            let mut vs = nn::VarStore::new(Device::Cpu);
            let encoder = vs
                .root()
                .sub("encoder")
                .var_copy("weight", &Tensor::ones([3], (Kind::Float, Device::Cpu)));
            let head = vs
                .root()
                .sub("classifier")
                .var_copy("weight", &Tensor::ones([3], (Kind::Float, Device::Cpu)));
            vs.set_kind(kind);
            let config = AdamWConfig {
                head_lr_scale: 4.0,
                ..AdamWConfig::default()
            };
            let mut opt = AdamW::new(&vs, config).unwrap();
            let loss = (&encoder * &head).sum(kind);
            opt.backward(&loss).unwrap();
            opt.step(0.01).unwrap();
            // Adam's first step moves every element by ~lr against the gradient's sign.
            let moved =
                |t: &Tensor| 1.0 - t.to_kind(Kind::Double).mean(Kind::Double).double_value(&[]);
            assert!((moved(&encoder) - 0.01).abs() < 1e-6, "{kind:?}");
            assert!((moved(&head) - 0.04).abs() < 1e-6, "{kind:?}");
        }
    }

    /// Trains a lookup table + linear head with the host optimizer, the table either lazy
    /// (sparse gradients) or dense; returns the weights and moments, flattened.
    fn train_table(lazy: bool, max_norm: f64, accumulate: bool) -> Vec<Vec<f32>> {
        let vs = nn::VarStore::new(Device::Cpu);
        let root = vs.root();
        let table_init = Tensor::arange(20 * 6, (Kind::Float, Device::Cpu))
            .view([20, 6])
            .sin();
        let table = root
            .sub("embeddings")
            .sub("word_embeddings")
            .var_copy("weight", &table_init);
        let w = root
            .sub("classifier")
            .var_copy("weight", &(table_init.narrow(0, 0, 3) * 0.5));
        let b = root.sub("classifier").zeros("bias", &[3]);
        let mut opt = AdamW::new(
            &vs,
            AdamWConfig {
                weight_decay: 0.1,
                head_lr_scale: 1.0,
                ..AdamWConfig::default()
            },
        )
        .unwrap();
        let name = "embeddings.word_embeddings.weight";
        assert!(opt.on_host());
        if lazy {
            assert!(opt.make_lazy(name).unwrap());
        }
        let lrs = [0.0, 0.05, 0.02, 0.04, 0.01, 0.03, 0.0, 0.02];
        let mut snapshots = Vec::new();
        for (step, lr) in lrs.into_iter().enumerate() {
            // Unique ids per batch; rows 15.. are never used, 5..=9 only now and then.
            let s = step as i64;
            let batches: Vec<Vec<i64>> = if accumulate {
                vec![vec![s % 3, 4, 5 + s % 5], vec![4, 12, s % 3 + 1]]
            } else {
                vec![vec![s % 3, 4, 5 + (s * 3) % 5, 11 + s % 4]]
            };
            for ids in batches {
                let ids = Tensor::from_slice(&ids);
                opt.prepare_rows(&ids).unwrap();
                let x = Tensor::embedding(&table, &ids, -1, false, lazy);
                let y = x.linear(&w, Some(&b));
                let loss = (&y * &y).sum(Kind::Float) * (s as f64 + 1.0) * 0.1;
                opt.backward(&loss).unwrap();
            }
            let _ = opt.clip_grad_norm(max_norm).unwrap();
            opt.step(lr).unwrap();
            if step == 3 {
                opt.sync_params();
                snapshots.push(Vec::<f32>::try_from(table.reshape([-1])).unwrap());
            }
        }
        let state = opt.export_state().unwrap();
        let flat = |t: &Tensor| Vec::<f32>::try_from(t.reshape([-1])).unwrap();
        for t in [&table, &w, &b] {
            snapshots.push(flat(t));
        }
        for v in &state.vars {
            snapshots.push(flat(&v.exp_avg));
            snapshots.push(flat(&v.exp_avg_sq));
        }
        snapshots
    }

    /// [`train_table`]'s model trained on per-step id batches, each rank of `group` (if any)
    /// taking its share of every batch; the loss is a sum over rows, so the shares' gradients
    /// add up to the whole batch's. Returns table, weight and bias, flattened.
    fn train_shards(lazy: bool, group: Option<&ProcessGroup>) -> Vec<Vec<f32>> {
        let vs = nn::VarStore::new(Device::Cpu);
        let root = vs.root();
        let init = Tensor::arange(20 * 6, (Kind::Float, Device::Cpu))
            .view([20, 6])
            .cos();
        let table = root.sub("emb").var_copy("weight", &init);
        let w = root
            .sub("head")
            .var_copy("weight", &(init.narrow(0, 2, 3) * 0.3));
        let b = root.sub("head").zeros("bias", &[3]);
        let mut opt = AdamW::new(
            &vs,
            AdamWConfig {
                weight_decay: 0.05,
                head_lr_scale: 1.0,
                ..AdamWConfig::default()
            },
        )
        .unwrap();
        if lazy {
            assert!(opt.make_lazy("emb.weight").unwrap());
        }
        for step in 0..6i64 {
            // Rank 1's rows and rank 0's overlap in some steps and not in others.
            let all = vec![step % 4, 7, 3 + step % 3, 12 + step % 5, 7, 19 - step];
            let (rank, world) = group.map_or((0, 1), |g| (g.rank(), g.size()));
            let ids = super::super::distributed::shard(&all, rank, world).to_vec();
            let ids = Tensor::from_slice(&ids);
            opt.prepare_rows(&ids).unwrap();
            let x = Tensor::embedding(&table, &ids, -1, false, lazy);
            let y = x.linear(&w, Some(&b));
            opt.backward(&((&y * &y).sum(Kind::Float) * 0.2)).unwrap();
            if let Some(g) = group {
                opt.all_reduce_gradients(g, "test gradients").unwrap();
            }
            let _ = opt.clip_grad_norm(1.0).unwrap();
            opt.step(0.01 + 0.01 * step as f64).unwrap();
        }
        opt.sync_params();
        [&table, &w, &b]
            .iter()
            .map(|t| Vec::<f32>::try_from(t.reshape([-1])).unwrap())
            .collect()
    }

    #[test]
    fn summed_shard_gradients_train_like_the_whole_batch_lazy_or_dense() {
        use super::super::distributed::{GlooDevice, Store};
        use std::time::Duration;
        for lazy in [true, false] {
            let single = train_shards(lazy, None);
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            let ranks: Vec<_> = (0..2)
                .map(|rank| {
                    std::thread::spawn(move || {
                        let t = Duration::from_secs(20);
                        let store = Store::tcp("127.0.0.1", port, rank == 0, 2, t).unwrap();
                        let device = GlooDevice::Hostname("127.0.0.1".into());
                        let group = ProcessGroup::gloo(&store, rank, 2, &device, t).unwrap();
                        train_shards(lazy, Some(&group))
                    })
                })
                .collect();
            let ranks: Vec<_> = ranks.into_iter().map(|t| t.join().unwrap()).collect();
            assert_eq!(ranks[0], ranks[1], "ranks diverged (lazy={lazy})");
            for (d, s) in ranks[0].iter().flatten().zip(single.iter().flatten()) {
                assert!(
                    (d - s).abs() <= 1e-5 * s.abs().max(1.0),
                    "lazy={lazy}: {d} vs {s}"
                );
            }
            // The run moved the weights, so agreeing is not trivial.
            let init: Vec<f32> = (0..120).map(|i| (i as f32).cos()).collect();
            let moved = single[0]
                .iter()
                .zip(&init)
                .filter(|(a, b)| (*a - *b).abs() > 1e-3);
            assert!(
                moved.count() > 10,
                "lazy={lazy}: training barely moved the table"
            );
        }
    }

    /// The lazy table catches rows up with the dense update's own arithmetic, so without
    /// clipping (whose norm sums in a different order) the results are bit for bit the same,
    /// weight decay, lr-0 steps, never-used rows and gradient accumulation included.
    #[test]
    fn lazy_table_matches_the_dense_update_exactly() {
        for accumulate in [false, true] {
            let dense = train_table(false, 0.0, accumulate);
            let lazy = train_table(true, 0.0, accumulate);
            assert_eq!(dense, lazy, "accumulate={accumulate}");
        }
        // Never-used rows only decayed; used rows moved further.
        let dense = train_table(false, 0.0, false);
        let init = Tensor::arange(20 * 6, (Kind::Float, Device::Cpu)).sin();
        let init = Vec::<f32>::try_from(init).unwrap();
        let table = &dense[1];
        assert_ne!(table[19 * 6], init[19 * 6]);
        assert!((table[19 * 6] - init[19 * 6]).abs() < 0.05 * init[19 * 6].abs() + 1e-6);
        assert!((table[4 * 6] - init[4 * 6]).abs() > 1e-2);
    }

    #[test]
    fn lazy_table_clips_like_the_dense_update() {
        let dense = train_table(false, 0.5, true);
        let lazy = train_table(true, 0.5, true);
        for (d, l) in dense.iter().flatten().zip(lazy.iter().flatten()) {
            assert!((d - l).abs() <= 1e-6 * d.abs().max(1.0), "{d} vs {l}");
        }
    }

    /// A row whose gradient arrives without a `prepare_rows` first (a caller that forgot) is
    /// still caught up before its update: with a loss whose gradient ignores the weights the
    /// result equals the dense update.
    #[test]
    fn unprepared_rows_are_caught_up_before_their_update() {
        let run = |lazy: bool| -> Vec<f32> {
            let vs = nn::VarStore::new(Device::Cpu);
            let init = Tensor::arange(8 * 3, (Kind::Float, Device::Cpu))
                .view([8, 3])
                .cos();
            let table = vs.root().sub("emb").var_copy("weight", &init);
            let config = AdamWConfig {
                weight_decay: 0.05,
                head_lr_scale: 1.0,
                ..AdamWConfig::default()
            };
            let mut opt = AdamW::new(&vs, config).unwrap();
            if lazy {
                assert!(opt.make_lazy("emb.weight").unwrap());
            }
            let weights = Tensor::from_slice(&[0.5f32, -1.0, 2.0]);
            for (step, ids) in [[1i64, 2], [3, 4], [1, 5], [2, 1]].iter().enumerate() {
                let ids = Tensor::from_slice(ids);
                let x = Tensor::embedding(&table, &ids, -1, false, lazy);
                opt.backward(&(x * &weights).sum(Kind::Float)).unwrap();
                opt.step(0.1 / (step as f64 + 1.0)).unwrap();
            }
            opt.sync_params();
            Vec::<f32>::try_from(table.reshape([-1])).unwrap()
        };
        assert_eq!(run(true), run(false));
    }

    #[test]
    fn a_dense_gradient_for_the_lazy_table_is_refused() {
        let vs = nn::VarStore::new(Device::Cpu);
        let table = vs.root().sub("emb").ones("weight", &[4, 2]);
        let mut opt = AdamW::new(&vs, AdamWConfig::default()).unwrap();
        assert!(opt.make_lazy("emb.weight").unwrap());
        assert!(!opt.make_lazy("nope").unwrap());
        let ids = Tensor::from_slice(&[1i64, 2]);
        let loss = Tensor::embedding(&table, &ids, -1, false, false).sum(Kind::Float);
        opt.backward(&loss).unwrap();
        let err = opt.step(0.1).unwrap_err().to_string();
        assert!(
            err.contains("emb.weight") && err.contains("sparse"),
            "{err}"
        );
    }

    #[test]
    fn variables_stay_bound_and_replaced_storage_is_rebound() {
        let vs = nn::VarStore::new(Device::Cpu);
        let w = vs.root().sub("classifier").ones("weight", &[2, 2]);
        let b = vs.root().sub("classifier").zeros("bias", &[2]);
        let mut opt = AdamW::new(&vs, AdamWConfig::default()).unwrap();
        assert_eq!(opt.decay_names(), vec!["classifier.weight"]);
        let loss = (&w * 2.0).sum(Kind::Float) + b.sum(Kind::Float);
        opt.backward(&loss).unwrap();
        opt.step(0.1).unwrap();
        // Adam's first step moves every element by ~lr against the gradient sign.
        let moved: Vec<f32> = Vec::try_from(w.reshape([-1])).unwrap();
        for x in moved {
            assert!((x - 0.9).abs() < 1e-5, "{x}");
        }
        // Replace storage behind the optimizer's back: the next step re-binds, keeping values.
        let mut w2 = w.shallow_clone();
        tch::no_grad(|| w2.set_data(&Tensor::full([2, 2], 5.0, (Kind::Float, Device::Cpu))));
        opt.zero_grad().unwrap();
        let loss = w.sum(Kind::Float);
        opt.backward(&loss).unwrap();
        opt.step(0.0).unwrap();
        let now: Vec<f32> = Vec::try_from(w.reshape([-1])).unwrap();
        assert_eq!(now, vec![5.0; 4]);
    }
}

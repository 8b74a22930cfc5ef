//! AdamW with Hugging Face / PyTorch semantics over a flat parameter buffer.
//!
//! At construction every trainable variable of the `VarStore` is re-pointed (`set_data`) at a
//! slice of one contiguous fp32 buffer, decay group first; gradients are re-pointed the same way
//! the first time they appear. Autograd then accumulates straight into the flat gradient buffer,
//! so clipping, unscaling, zeroing and the AdamW update are a dozen kernels per step whatever the
//! number of tensors (libtorch's `_foreach_*`/fused AdamW ops are not exposed by tch 0.24).
//!
//! Invariants: all trainable variables share one device and one floating kind. If something
//! replaces a variable's storage later (e.g. a load that assigns new tensors), [`AdamW::step`]
//! notices the changed data pointer and re-binds the variable, copying its current value in.
//!
//! Update (PyTorch `AdamW`, `foreach=False`), with `t` the step count after incrementing:
//! `p *= 1 - lr*wd` (decay group only); `m = lerp(m, g, 1-b1)`; `v = b2*v + (1-b2)*g*g`;
//! `p -= lr/(1-b1^t) * m / (sqrt(v)/sqrt(1-b2^t) + eps)`. A variable without a gradient in a step
//! is updated with a zero gradient (PyTorch would skip it); every variable of a classifier
//! normally receives one.

use tch::{nn, Device, Kind, TchError, Tensor};

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
}

/// AdamW hyperparameters (HF `TrainingArguments` names).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamWConfig {
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
}

impl Default for AdamWConfig {
    fn default() -> Self {
        Self {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.0,
        }
    }
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
    grads: Tensor,
    exp_avg: Tensor,
    exp_avg_sq: Tensor,
    /// Per-step workspace `[total_numel]` (g^2, then the denominator), kept so steps allocate
    /// nothing.
    scratch: Tensor,
    step: u64,
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
        let mut optim = Self {
            config,
            slots,
            decay_numel,
            params: Tensor::f_zeros([offset], opts)?,
            grads: Tensor::f_zeros([offset], opts)?,
            exp_avg: Tensor::f_zeros([offset], opts)?,
            exp_avg_sq: Tensor::f_zeros([offset], opts)?,
            scratch: Tensor::f_empty([offset], opts)?,
            step: 0,
        };
        for i in 0..optim.slots.len() {
            optim.bind_param(i)?;
        }
        Ok(optim)
    }

    fn elt_size(&self) -> usize {
        self.params.kind().elt_size_in_bytes()
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

    /// Makes sure every gradient lives in the flat gradient buffer (a no-op after the first
    /// step unless something replaced a gradient or a variable).
    fn gather_grads(&mut self) -> Result<(), OptimError> {
        let _guard = tch::no_grad_guard();
        let elt = self.elt_size();
        for i in 0..self.slots.len() {
            if self.slots[i].var.data_ptr() as usize != self.slots[i].param_ptr {
                self.bind_param(i)?;
            }
            let slot = &mut self.slots[i];
            let mut grad = slot.var.f_grad()?;
            if !grad.defined() || grad.data_ptr() as usize == slot.grad_ptr {
                continue;
            }
            let mut view = self
                .grads
                .f_narrow(0, slot.offset, slot.numel)?
                .f_view(slot.shape.as_slice())?;
            view.f_copy_(&grad)?;
            grad.set_data(&view);
            slot.grad_ptr = self.grads.data_ptr() as usize + slot.offset as usize * elt;
        }
        Ok(())
    }

    /// The flat gradient buffer `[total_numel]` after gathering (for unscaling and checks).
    pub fn flat_grads(&mut self) -> Result<&mut Tensor, OptimError> {
        self.gather_grads()?;
        Ok(&mut self.grads)
    }

    /// Global L2 norm of all gradients `[]` (stays on the device), then scales gradients so the
    /// norm is at most `max_norm` like `torch.nn.utils.clip_grad_norm_` (`max_norm <= 0`: no
    /// clipping, the norm is still returned).
    pub fn clip_grad_norm(&mut self, max_norm: f64) -> Result<Tensor, OptimError> {
        self.gather_grads()?;
        let _guard = tch::no_grad_guard();
        if self.on_host() {
            // SAFETY: `grads` is a contiguous fp32 CPU buffer of `numel` elements that nothing
            // else reads or writes during this call.
            let g = unsafe { host_slice(&self.grads) };
            let norm = host::sum_squares(g).sqrt();
            if max_norm > 0.0 {
                let coef = max_norm / (norm + 1e-6);
                if coef < 1.0 {
                    host::scale(g, coef as f32);
                }
            }
            return Ok(Tensor::f_from_slice(&[norm as f32])?.f_reshape([])?);
        }
        let norm = self.grads.f_norm()?;
        if max_norm > 0.0 {
            // clip = min(1, max_norm / (norm + 1e-6)), applied without a host sync.
            let coef = (norm.f_add_scalar(1e-6)?.f_reciprocal()? * max_norm).f_clamp_max(1.0)?;
            let _ = self.grads.f_mul_(&coef)?;
        }
        Ok(norm)
    }

    /// One AdamW update at learning rate `lr` with the current gradients.
    pub fn step(&mut self, lr: f64) -> Result<(), OptimError> {
        self.gather_grads()?;
        let _guard = tch::no_grad_guard();
        self.step += 1;
        let c = self.config;
        if self.on_host() {
            let t = self.step as i32;
            let k = host::Coefficients {
                beta1: c.beta1 as f32,
                beta2: c.beta2 as f32,
                eps: c.eps as f32,
                bias_correction2_sqrt: (1.0 - c.beta2.powi(t)).sqrt() as f32,
                step_size: (lr / (1.0 - c.beta1.powi(t))) as f32,
            };
            // SAFETY: four distinct contiguous fp32 CPU buffers of the same length, used by
            // nothing else during the update (autograd is idle between backward and step).
            let (p, g, m, v) = unsafe {
                (
                    host_slice(&self.params),
                    host_slice(&self.grads),
                    host_slice(&self.exp_avg),
                    host_slice(&self.exp_avg_sq),
                )
            };
            let d = self.decay_numel as usize;
            let (p_decay, p_rest) = p.split_at_mut(d);
            let (g_decay, g_rest) = g.split_at(d);
            let (m_decay, m_rest) = m.split_at_mut(d);
            let (v_decay, v_rest) = v.split_at_mut(d);
            let decay = (1.0 - lr * c.weight_decay) as f32;
            host::adamw(p_decay, g_decay, m_decay, v_decay, decay, k);
            host::adamw(p_rest, g_rest, m_rest, v_rest, 1.0, k);
            return Ok(());
        }
        if c.weight_decay != 0.0 && self.decay_numel > 0 {
            let _ = self
                .params
                .f_narrow(0, 0, self.decay_numel)?
                .f_mul_scalar_(1.0 - lr * c.weight_decay)?;
        }
        let g = &self.grads;
        let _ = self.exp_avg.f_lerp_(g, 1.0 - c.beta1)?;
        // v = b2*v + (1-b2)*g^2 as a lerp towards g^2, staged in the scratch buffer: two passes
        // and no allocation instead of a scaled temporary plus mul_/addcmul_.
        let _ = g.f_mul_out(&self.scratch, g)?;
        let _ = self.exp_avg_sq.f_lerp_(&self.scratch, 1.0 - c.beta2)?;
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
        let _ = self.exp_avg_sq.f_sqrt_out(&self.scratch)?;
        let _ = self
            .scratch
            .f_mul_scalar_(-1.0 / (step_size * bias_correction2_sqrt))?;
        let _ = self.scratch.f_add_scalar_(-c.eps / step_size)?;
        let _ = self.params.f_addcdiv_(&self.exp_avg, &self.scratch)?;
        Ok(())
    }

    /// True when the buffers are fp32 on the CPU: the update then runs as one fused host loop
    /// ([`host::adamw`]) instead of a chain of whole-buffer tensor kernels.
    fn on_host(&self) -> bool {
        self.params.device() == Device::Cpu
            && self.params.kind() == Kind::Float
            && self.params.is_contiguous()
    }

    /// Zeroes all gradients with one kernel (they are views of the flat buffer).
    pub fn zero_grad(&mut self) -> Result<(), OptimError> {
        self.gather_grads()?;
        let _ = self.grads.f_zero_()?;
        Ok(())
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

    /// Copies the moment estimates to CPU, per variable name, for a checkpoint.
    pub fn export_state(&self) -> Result<AdamWState, OptimError> {
        let mut vars = Vec::with_capacity(self.slots.len());
        for s in &self.slots {
            let take = |buf: &Tensor| -> Result<Tensor, TchError> {
                let slice = buf
                    .f_narrow(0, s.offset, s.numel)?
                    .f_view(s.shape.as_slice())?;
                let mut out = Tensor::f_zeros(s.shape.as_slice(), (slice.f_kind()?, Device::Cpu))?;
                out.f_copy_(&slice)?;
                Ok(out)
            };
            vars.push(VarState {
                name: s.name.clone(),
                exp_avg: take(&self.exp_avg)?,
                exp_avg_sq: take(&self.exp_avg_sq)?,
            });
        }
        Ok(AdamWState {
            step: self.step,
            vars,
        })
    }

    /// Restores state written by [`AdamW::export_state`]; every trainable variable must be
    /// present with its shape.
    pub fn import_state(&mut self, state: &AdamWState) -> Result<(), OptimError> {
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

/// The CPU update as single passes over the flat buffers, split across libtorch's thread count.
///
/// The tensor-kernel version reads and writes every buffer about ten times per step (lerp, mul,
/// addcmul, sqrt, div, add, addcdiv, plus temporaries); for models whose embeddings dominate the
/// parameter count that was more than half of a CPU training step. Here each element of
/// `p, g, m, v` is loaded once and `p, m, v` stored once, with PyTorch's operation order.
mod host {
    /// Scalars of one AdamW step.
    #[derive(Debug, Clone, Copy)]
    pub struct Coefficients {
        pub beta1: f32,
        pub beta2: f32,
        pub eps: f32,
        pub bias_correction2_sqrt: f32,
        /// `lr / (1 - beta1^t)`.
        pub step_size: f32,
    }

    /// Below this many elements a step stays on the calling thread.
    const PARALLEL_MIN: usize = 1 << 16;

    fn threads_for(len: usize) -> usize {
        if len < PARALLEL_MIN {
            1
        } else {
            (tch::get_num_threads().max(1) as usize).min(len / PARALLEL_MIN + 1)
        }
    }

    /// `p *= decay; m = lerp(m, g, 1-b1); v = b2*v + (1-b2)*g*g;
    /// p -= step_size * m / (sqrt(v)/bc2 + eps)`, element-wise.
    pub fn adamw(
        p: &mut [f32],
        g: &[f32],
        m: &mut [f32],
        v: &mut [f32],
        decay: f32,
        k: Coefficients,
    ) {
        let n = threads_for(p.len());
        if n <= 1 {
            return adamw_serial(p, g, m, v, decay, k);
        }
        let chunk = p.len().div_ceil(n);
        std::thread::scope(|scope| {
            for (((p, g), m), v) in p
                .chunks_mut(chunk)
                .zip(g.chunks(chunk))
                .zip(m.chunks_mut(chunk))
                .zip(v.chunks_mut(chunk))
            {
                scope.spawn(move || adamw_serial(p, g, m, v, decay, k));
            }
        });
    }

    fn adamw_serial(
        p: &mut [f32],
        g: &[f32],
        m: &mut [f32],
        v: &mut [f32],
        decay: f32,
        k: Coefficients,
    ) {
        let w1 = 1.0 - k.beta1;
        let w2 = 1.0 - k.beta2;
        for (((p, &g), m), v) in p.iter_mut().zip(g).zip(m.iter_mut()).zip(v.iter_mut()) {
            // torch.lerp with weight < 0.5: start + weight * (end - start).
            let mi = *m + w1 * (g - *m);
            let vi = *v * k.beta2 + w2 * (g * g);
            let denom = vi.sqrt() / k.bias_correction2_sqrt + k.eps;
            *p = *p * decay - k.step_size * (mi / denom);
            *m = mi;
            *v = vi;
        }
    }

    /// Sum of squares in f64 (one pass).
    pub fn sum_squares(g: &[f32]) -> f64 {
        let n = threads_for(g.len());
        let serial = |g: &[f32]| -> f64 {
            // Eight f32 lanes per f64 partial keeps the loop vectorisable and accurate.
            let mut acc = 0.0f64;
            for block in g.chunks(1024) {
                acc += block.iter().map(|&x| x * x).sum::<f32>() as f64;
            }
            acc
        };
        if n <= 1 {
            return serial(g);
        }
        let chunk = g.len().div_ceil(n);
        std::thread::scope(|scope| {
            let parts: Vec<_> = g
                .chunks(chunk)
                .map(|part| scope.spawn(move || serial(part)))
                .collect();
            parts
                .into_iter()
                .map(|h| h.join().unwrap_or(f64::NAN))
                .sum()
        })
    }

    /// `g *= coef`.
    pub fn scale(g: &mut [f32], coef: f32) {
        let n = threads_for(g.len());
        if n <= 1 {
            g.iter_mut().for_each(|x| *x *= coef);
            return;
        }
        let chunk = g.len().div_ceil(n);
        std::thread::scope(|scope| {
            for part in g.chunks_mut(chunk) {
                scope.spawn(move || part.iter_mut().for_each(|x| *x *= coef));
            }
        });
    }
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
                ..AdamWConfig::default()
            };
            let mut opt = AdamW::new(&vs, config).unwrap();
            assert_eq!(opt.on_host(), kind == Kind::Float);
            let x = Tensor::from_slice(&[1.0f64, -2.0, 3.0]).to_kind(kind);
            for (step, lr) in [0.0, 0.05, 0.02, 0.01].into_iter().enumerate() {
                let y = w.matmul(&x) + &b;
                let loss = (&y * &y).sum(kind) * (step as f64 + 1.0);
                loss.backward();
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
    fn variables_stay_bound_and_replaced_storage_is_rebound() {
        let vs = nn::VarStore::new(Device::Cpu);
        let w = vs.root().sub("classifier").ones("weight", &[2, 2]);
        let b = vs.root().sub("classifier").zeros("bias", &[2]);
        let mut opt = AdamW::new(&vs, AdamWConfig::default()).unwrap();
        assert_eq!(opt.decay_names(), vec!["classifier.weight"]);
        let loss = (&w * 2.0).sum(Kind::Float) + b.sum(Kind::Float);
        loss.backward();
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
        loss.backward();
        opt.step(0.0).unwrap();
        let now: Vec<f32> = Vec::try_from(w.reshape([-1])).unwrap();
        assert_eq!(now, vec![5.0; 4]);
    }
}

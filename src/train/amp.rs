//! Mixed-precision settings and fp16 dynamic loss scaling.
//!
//! The model casts its own matmuls (it exposes the compute kind on its concrete type); the loop
//! only needs to know whether gradients come scaled. [`GradScaler`] follows PyTorch's
//! `torch.amp.GradScaler`: initial scale 2^16, doubled after 2000 consecutive finite steps,
//! halved (and the optimizer step skipped) when any gradient is inf/NaN. Scale and growth counter
//! live on the device and are updated by libtorch's `_amp_update_scale_`, so only the skip decision
//! reads a value back.

use tch::{Device, Kind, TchError, Tensor};

use crate::hyperparams::Hyperparameters;

/// Numeric precision of the forward/backward pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    Fp32,
    /// bfloat16 compute, no loss scaling.
    Bf16,
    /// float16 compute with dynamic loss scaling.
    Fp16,
}

/// Errors resolving the precision.
#[derive(Debug, thiserror::Error)]
pub enum PrecisionError {
    #[error("hyperparameters: fp16 and bf16 are both set; choose one")]
    Both,
    #[error("hyperparameters: fp16=true needs a CUDA device, but training runs on {device:?}; drop the flag (bf16=true is the CPU's reduced precision) or use a GPU instance")]
    Fp16NeedsCuda { device: Device },
    #[error(
        "hyperparameters: bf16=true but this GPU has no bfloat16 support; use fp16=true instead"
    )]
    NoBf16Gpu,
    #[error("hyperparameters: bf16=true but this CPU has no bfloat16 instructions (avx512_bf16 or amx_bf16); drop the flag or pick an instance type with them")]
    NoBf16Cpu,
}

/// Picks the precision: explicit flags win; `bf16=None` (auto) means bf16 where a GPU supports
/// it and fp32 on the CPU, where bf16 is opt-in (`bf16=true` on CPUs with bf16 instructions).
pub fn resolve_precision(
    hp: &Hyperparameters,
    device: Device,
    bf16_supported: bool,
) -> Result<Precision, PrecisionError> {
    let cuda = device.is_cuda();
    match (hp.fp16, hp.bf16) {
        (true, Some(true)) => Err(PrecisionError::Both),
        (true, _) if !cuda => Err(PrecisionError::Fp16NeedsCuda { device }),
        (true, _) => Ok(Precision::Fp16),
        (false, Some(true)) if !bf16_supported && cuda => Err(PrecisionError::NoBf16Gpu),
        (false, Some(true)) if !bf16_supported => Err(PrecisionError::NoBf16Cpu),
        (false, Some(true)) => Ok(Precision::Bf16),
        (false, None) if cuda && bf16_supported => Ok(Precision::Bf16),
        _ => Ok(Precision::Fp32),
    }
}

/// True when `device` computes in bfloat16 at full speed: on the CPU, instructions for it
/// (without them libtorch emulates bf16 and is slower than fp32); on a GPU, a tiny bf16 matmul
/// succeeds.
pub fn bf16_supported(device: Device) -> bool {
    if device.is_cuda() {
        let probe = std::panic::catch_unwind(|| {
            let x = Tensor::ones([8, 8], (Kind::BFloat16, device));
            x.f_matmul(&x).is_ok()
        });
        return matches!(probe, Ok(true));
    }
    cpu_has_bf16()
}

#[cfg(target_arch = "x86_64")]
fn cpu_has_bf16() -> bool {
    std::arch::is_x86_feature_detected!("avx512bf16")
        || std::fs::read_to_string("/proc/cpuinfo")
            .map(|info| info.split_whitespace().any(|flag| flag == "amx_bf16"))
            .unwrap_or(false)
}

#[cfg(target_arch = "aarch64")]
fn cpu_has_bf16() -> bool {
    std::arch::is_aarch64_feature_detected!("bf16")
}

#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
fn cpu_has_bf16() -> bool {
    false
}

/// Dynamic loss scaling for fp16 (PyTorch `GradScaler` defaults).
#[derive(Debug)]
pub struct GradScaler {
    /// `[1]` f32 on the device.
    scale: Tensor,
    /// `[1]` i32 on the device: consecutive finite steps.
    growth_tracker: Tensor,
    pub growth_factor: f64,
    pub backoff_factor: f64,
    pub growth_interval: i64,
}

impl GradScaler {
    /// A scaler at 2^16 on `device`.
    pub fn new(device: Device) -> Result<Self, TchError> {
        Self::with_scale(device, 65536.0, 0)
    }

    /// A scaler at a given scale and growth count (for resuming).
    pub fn with_scale(device: Device, scale: f64, growth: i32) -> Result<Self, TchError> {
        Ok(Self {
            scale: Tensor::f_full([1], scale, (Kind::Float, device))?,
            growth_tracker: Tensor::f_full([1], growth as i64, (Kind::Int, device))?,
            growth_factor: 2.0,
            backoff_factor: 0.5,
            growth_interval: 2000,
        })
    }

    /// `loss * scale` (a graph op, so backward produces scaled gradients).
    pub fn scale_loss(&self, loss: &Tensor) -> Result<Tensor, TchError> {
        loss.f_mul(&self.scale)
    }

    /// Divides every gradient by the scale in place and returns `[1]` f32: 1.0 when any value
    /// is inf/NaN.
    pub fn unscale(&self, grads: &[Tensor]) -> Result<Tensor, TchError> {
        let _guard = tch::no_grad_guard();
        let inv = self.scale.f_reciprocal()?;
        let mut found = Tensor::f_zeros([], (Kind::Bool, self.scale.device()))?;
        for g in grads {
            let _ = g.shallow_clone().f_mul_(&inv)?;
            found = found.f_logical_or(&g.f_isfinite()?.f_all()?.f_logical_not()?)?;
        }
        found.f_to_kind(Kind::Float)?.f_reshape([1])
    }

    /// Updates the scale after a step: back off on `found_inf`, grow after `growth_interval`
    /// finite steps.
    pub fn update(&mut self, found_inf: &Tensor) -> Result<(), TchError> {
        let _ = self.scale.f_internal_amp_update_scale_(
            &self.growth_tracker,
            found_inf,
            self.growth_factor,
            self.backoff_factor,
            self.growth_interval,
        )?;
        Ok(())
    }

    /// Current scale (reads the device).
    pub fn scale_value(&self) -> Result<f64, TchError> {
        self.scale.f_double_value(&[0])
    }

    /// Current growth count (reads the device).
    pub fn growth_value(&self) -> Result<i64, TchError> {
        self.growth_tracker.f_int64_value(&[0])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn precision_resolution() {
        let mut hp = Hyperparameters::default();
        let gpu = Device::Cuda(0);
        assert_eq!(
            resolve_precision(&hp, Device::Cpu, false).unwrap(),
            Precision::Fp32
        );
        assert_eq!(resolve_precision(&hp, gpu, true).unwrap(), Precision::Bf16);
        assert_eq!(resolve_precision(&hp, gpu, false).unwrap(), Precision::Fp32);
        hp.fp16 = true;
        assert_eq!(resolve_precision(&hp, gpu, true).unwrap(), Precision::Fp16);
        assert!(matches!(
            resolve_precision(&hp, Device::Cpu, true),
            Err(PrecisionError::Fp16NeedsCuda { .. })
        ));
        hp.bf16 = Some(true);
        assert!(matches!(
            resolve_precision(&hp, gpu, true),
            Err(PrecisionError::Both)
        ));
        hp.fp16 = false;
        assert!(matches!(
            resolve_precision(&hp, gpu, false),
            Err(PrecisionError::NoBf16Gpu)
        ));
        // On the CPU bf16 is opt-in, and only where the instructions exist.
        assert_eq!(
            resolve_precision(&hp, Device::Cpu, true).unwrap(),
            Precision::Bf16
        );
        assert!(matches!(
            resolve_precision(&hp, Device::Cpu, false),
            Err(PrecisionError::NoBf16Cpu)
        ));
        hp.bf16 = Some(false);
        assert_eq!(resolve_precision(&hp, gpu, true).unwrap(), Precision::Fp32);
        hp.bf16 = None;
        assert_eq!(
            resolve_precision(&hp, Device::Cpu, true).unwrap(),
            Precision::Fp32
        );
    }

    #[test]
    fn scaler_backs_off_on_inf_and_grows_after_interval() {
        let mut s = GradScaler::new(Device::Cpu).unwrap();
        s.growth_interval = 3;
        let g = [
            Tensor::from_slice(&[65536.0f32]),
            Tensor::from_slice(&[f32::INFINITY]),
        ];
        let inf = s.unscale(&g).unwrap();
        assert_eq!(inf.double_value(&[0]), 1.0);
        s.update(&inf).unwrap();
        assert_eq!(s.scale_value().unwrap(), 32768.0);
        for _ in 0..3 {
            let g = Tensor::from_slice(&[32768.0f32, -65536.0]);
            let inf = s.unscale(&[g.shallow_clone()]).unwrap();
            assert_eq!(Vec::<f32>::try_from(&g).unwrap(), vec![1.0, -2.0]);
            s.update(&inf).unwrap();
        }
        assert_eq!(s.scale_value().unwrap(), 65536.0);
        assert_eq!(s.growth_value().unwrap(), 0);
    }
}

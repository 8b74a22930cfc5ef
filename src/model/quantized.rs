//! int8 linear layers for CPU serving: weights quantised once per output channel, activations
//! per call (dynamic quantisation, fbgemm), through csrc/quantized_linear.cpp.
//!
//! A short text is a few rows per matrix product, where an fp32 GEMM is bound by reading the
//! weights; int8 reads a quarter of the bytes and multiplies in int32 (a 384x1536 layer on 7
//! rows, one thread: 93 us vs 332 us in fp32, 2026-12-03), at about one percent relative error
//! on the layer's output.

use std::ffi::{c_char, c_void};
use std::ptr::NonNull;

use tch::{TchError, Tensor};

mod ffi {
    use std::ffi::{c_char, c_void};

    #[repr(C)]
    pub struct QLinear {
        _private: [u8; 0],
    }

    extern "C" {
        pub fn txcat_qlinear_pack(
            weight: *const c_void,
            bias: *const c_void,
            out: *mut *mut QLinear,
        ) -> *mut c_char;
        pub fn txcat_qlinear_forward(
            layer: *const QLinear,
            input: *const c_void,
            out: *mut *mut c_void,
        ) -> *mut c_char;
        pub fn txcat_qlinear_free(layer: *mut QLinear);
    }
}

/// `y = x W^T + b` with `W` held as packed int8.
#[derive(Debug)]
pub(crate) struct QuantizedLinear {
    raw: NonNull<ffi::QLinear>,
}

// SAFETY: the packed weights are immutable after packing, and fbgemm's dynamic linear only reads
// them (torch runs one packed module from many threads).
unsafe impl Send for QuantizedLinear {}
unsafe impl Sync for QuantizedLinear {}

impl QuantizedLinear {
    /// Quantises and packs `weight` `[out, in]` with `bias` `[out]` (CPU tensors, any float dtype).
    pub fn pack(weight: &Tensor, bias: &Tensor) -> Result<Self, TchError> {
        let mut raw = std::ptr::null_mut();
        // SAFETY: defined tensors whose C_tensor pointers are at::Tensor*; `raw` is written on success.
        let error = unsafe {
            ffi::txcat_qlinear_pack(
                weight.as_ptr() as *const c_void,
                bias.as_ptr() as *const c_void,
                &mut raw,
            )
        };
        check(error)?;
        NonNull::new(raw)
            .map(|raw| Self { raw })
            .ok_or_else(|| TchError::Torch("quantized linear: packing returned nothing".into()))
    }

    /// `[.., in]` fp32 -> `[.., out]` fp32.
    pub fn forward(&self, xs: &Tensor) -> Result<Tensor, TchError> {
        let mut out = std::ptr::null_mut();
        // SAFETY: a live packed layer and a defined tensor; on success `out` is a new at::Tensor*
        // that the returned Tensor owns.
        let error = unsafe {
            ffi::txcat_qlinear_forward(self.raw.as_ptr(), xs.as_ptr() as *const c_void, &mut out)
        };
        check(error)?;
        if out.is_null() {
            return Err(TchError::Torch("quantized linear: no output".into()));
        }
        // SAFETY: allocated with `new at::Tensor` by the shim, as tch's own wrappers allocate.
        Ok(unsafe { Tensor::from_ptr(out as *mut _) })
    }
}

impl Drop for QuantizedLinear {
    fn drop(&mut self) {
        // SAFETY: allocated by txcat_qlinear_pack and freed only here.
        unsafe { ffi::txcat_qlinear_free(self.raw.as_ptr()) };
    }
}

/// The shim's error string (freed) as a TchError.
fn check(error: *mut c_char) -> Result<(), TchError> {
    crate::shim::take_error(error)
        .map_err(|message| TchError::Torch(format!("quantized linear: {message}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind};

    #[test]
    fn int8_products_stay_within_two_percent_of_fp32_on_any_leading_shape() {
        let _guard = tch::no_grad_guard();
        tch::manual_seed(7);
        let weight = Tensor::randn([96, 64], (Kind::Float, Device::Cpu)) * 0.05;
        let bias = Tensor::randn([96], (Kind::Float, Device::Cpu));
        let layer = QuantizedLinear::pack(&weight, &bias).unwrap();
        for shape in [vec![5i64, 64], vec![2, 7, 64]] {
            let xs = Tensor::randn(shape.as_slice(), (Kind::Float, Device::Cpu));
            let exact = xs.linear(&weight, Some(&bias));
            let got = layer.forward(&xs).unwrap();
            assert_eq!(got.size(), exact.size());
            let error = f64::try_from((&got - &exact).norm() / exact.norm()).unwrap();
            assert!(error < 0.02, "relative error {error} for {shape:?}");
            assert!(error > 0.0, "int8 that equals fp32 exactly is not int8");
        }
    }

    #[test]
    fn a_wrong_input_width_is_an_error_not_a_crash() {
        let weight = Tensor::ones([4, 8], (Kind::Float, Device::Cpu));
        let bias = Tensor::zeros([4], (Kind::Float, Device::Cpu));
        let layer = QuantizedLinear::pack(&weight, &bias).unwrap();
        let error = layer
            .forward(&Tensor::ones([2, 5], (Kind::Float, Device::Cpu)))
            .unwrap_err();
        assert!(error.to_string().contains("quantized linear"), "{error}");
    }
}

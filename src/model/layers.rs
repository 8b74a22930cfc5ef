//! Building blocks shared by both families: linear layers that can run in a reduced compute
//! dtype (or, for serving, in int8), fp32 LayerNorm, embeddings, and SDPA self-attention.
//!
//! Mixed precision: `kind = Some(BFloat16 | Half)` casts a linear layer's input and weights to
//! that dtype (the fp32 master weights keep receiving fp32 gradients through the cast);
//! LayerNorm always runs in fp32, so the residual stream stays fp32 as under torch autocast.

use tch::{nn, Kind, TchError, Tensor};

use super::config::Activation;
use super::quantized::QuantizedLinear;

/// `nn::Path` for a dotted Hugging Face module name (tch forbids dots inside one component).
pub(crate) fn sub_path<'a>(p: &nn::Path<'a>, dotted: &str) -> nn::Path<'a> {
    dotted.split('.').fold(p.clone(), |acc, part| acc.sub(part))
}

/// How a fresh variable is initialised: loaded tensors overwrite `Zeros`; heads use `Normal`.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Fresh {
    /// Placeholder until the checkpoint value is copied in.
    Zeros,
    /// transformers' `_init_weights`: normal(0, std) weights, zero bias.
    Normal(f64),
}

/// `y = x W^T + b` with `W: [out, in]` as in torch.
#[derive(Debug)]
pub(crate) struct Linear {
    pub ws: Tensor,
    pub bs: Tensor,
    /// Packed int8 weights that replace `ws`/`bs` once [`Linear::quantize_int8`] ran.
    int8: Option<QuantizedLinear>,
}

impl Linear {
    pub fn new(p: &nn::Path, dotted: &str, in_dim: i64, out_dim: i64, fresh: Fresh) -> Self {
        let p = sub_path(p, dotted);
        let init = match fresh {
            Fresh::Zeros => nn::Init::Const(0.0),
            Fresh::Normal(std) => nn::Init::Randn {
                mean: 0.0,
                stdev: std,
            },
        };
        Linear {
            ws: p.var("weight", &[out_dim, in_dim], init),
            bs: p.var("bias", &[out_dim], nn::Init::Const(0.0)),
            int8: None,
        }
    }

    /// Keeps the weights in `kind` from now on, for inference: the values are replaced in place
    /// (in the VarStore too, so no fp32 copy stays behind), and `forward` in `kind` then casts
    /// nothing.
    pub fn store_in(&mut self, kind: Kind) {
        let _guard = tch::no_grad_guard();
        let ws = self.ws.to_kind(kind);
        self.ws.set_data(&ws);
        let bs = self.bs.to_kind(kind);
        self.bs.set_data(&bs);
    }

    /// Replaces the weights by packed int8 ones, for CPU inference in fp32 activations: the
    /// fp32 tensors are emptied (in the VarStore too), so only the int8 copy stays.
    pub fn quantize_int8(&mut self) -> Result<(), TchError> {
        let _guard = tch::no_grad_guard();
        let packed = QuantizedLinear::pack(&self.ws, &self.bs)?;
        let empty = Tensor::empty([0], (Kind::Float, self.ws.device()));
        self.ws.set_data(&empty);
        self.bs.set_data(&empty);
        self.int8 = Some(packed);
        Ok(())
    }

    /// `[.., in] -> [.., out]`, computed in `kind` when given (output in that dtype).
    pub fn forward(&self, xs: &Tensor, kind: Option<Kind>) -> Tensor {
        if let Some(int8) = &self.int8 {
            // As tch's own non-`f_` operations do, a libtorch error here is a panic.
            return int8.forward(xs).unwrap_or_else(|e| panic!("{e}"));
        }
        match kind {
            None => xs.linear(&self.ws, Some(&self.bs)),
            Some(k) => xs
                .to_kind(k)
                .linear(&self.ws.to_kind(k), Some(self.bs.to_kind(k))),
        }
    }
}

/// LayerNorm over the last dimension, always in fp32.
#[derive(Debug)]
pub(crate) struct LayerNorm {
    ws: Tensor,
    bs: Tensor,
    eps: f64,
    dim: i64,
}

impl LayerNorm {
    pub fn new(p: &nn::Path, dotted: &str, dim: i64, eps: f64) -> Self {
        let p = sub_path(p, dotted);
        LayerNorm {
            ws: p.var("weight", &[dim], nn::Init::Const(1.0)),
            bs: p.var("bias", &[dim], nn::Init::Const(0.0)),
            eps,
            dim,
        }
    }

    /// `[.., dim]` in any float dtype -> fp32.
    pub fn forward(&self, xs: &Tensor) -> Tensor {
        xs.to_kind(Kind::Float).layer_norm(
            [self.dim],
            Some(&self.ws),
            Some(&self.bs),
            self.eps,
            true,
        )
    }
}

/// Lookup table `[rows, dim]`.
#[derive(Debug)]
pub(crate) struct Embedding {
    ws: Tensor,
    padding_idx: i64,
    /// Backward yields a sparse gradient holding only the looked-up rows.
    pub sparse_grad: bool,
}

impl Embedding {
    /// `padding_idx` (-1 for none) only zeroes that row's gradient, as in torch.
    pub fn new(p: &nn::Path, dotted: &str, rows: i64, dim: i64, padding_idx: i64) -> Self {
        let p = sub_path(p, dotted);
        Embedding {
            ws: p.var("weight", &[rows, dim], nn::Init::Const(0.0)),
            padding_idx,
            sparse_grad: false,
        }
    }

    /// Row `i` `[dim]` (the embedding of an all-`i` input, broadcastable).
    pub fn row(&self, i: i64) -> Tensor {
        self.ws.get(i)
    }

    /// `[b, s]` i64 -> `[b, s, dim]` fp32.
    pub fn forward(&self, ids: &Tensor) -> Tensor {
        Tensor::embedding(&self.ws, ids, self.padding_idx, false, self.sparse_grad)
    }
}

pub(crate) fn activate(xs: &Tensor, act: Activation) -> Tensor {
    match act {
        Activation::Gelu => xs.gelu("none"),
        Activation::GeluTanh => xs.gelu("tanh"),
        Activation::Relu => xs.relu(),
        Activation::Silu => xs.silu(),
    }
}

/// Names of one family's sub-modules inside a transformer layer.
pub(crate) struct LayerNames {
    pub query: &'static str,
    pub key: &'static str,
    pub value: &'static str,
    pub attn_out: &'static str,
    pub attn_norm: &'static str,
    pub ffn_in: &'static str,
    pub ffn_out: &'static str,
    pub out_norm: &'static str,
    /// BERT applies hidden dropout to the attention output; DistilBERT does not.
    pub dropout_after_attention: bool,
}

/// Dimensions and rates of a transformer layer.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LayerDims {
    pub hidden: i64,
    pub heads: i64,
    pub ffn: i64,
    pub eps: f64,
    pub activation: Activation,
    pub drop_hidden: f64,
    pub drop_attn: f64,
}

/// One post-LayerNorm transformer block (both families have the same shape).
#[derive(Debug)]
pub(crate) struct TransformerLayer {
    query: Linear,
    key: Linear,
    value: Linear,
    attn_out: Linear,
    attn_norm: LayerNorm,
    ffn_in: Linear,
    ffn_out: Linear,
    out_norm: LayerNorm,
    dims: LayerDims,
    dropout_after_attention: bool,
}

impl TransformerLayer {
    /// [`Linear::store_in`] for every linear layer of the block (LayerNorms stay fp32).
    pub fn store_linears_in(&mut self, kind: Kind) {
        for linear in self.linears_mut() {
            linear.store_in(kind);
        }
    }

    /// [`Linear::quantize_int8`] for every linear layer of the block (LayerNorms stay fp32).
    pub fn quantize_linears_int8(&mut self) -> Result<(), TchError> {
        self.linears_mut()
            .into_iter()
            .try_for_each(Linear::quantize_int8)
    }

    fn linears_mut(&mut self) -> [&mut Linear; 6] {
        [
            &mut self.query,
            &mut self.key,
            &mut self.value,
            &mut self.attn_out,
            &mut self.ffn_in,
            &mut self.ffn_out,
        ]
    }

    pub fn new(p: &nn::Path, names: &LayerNames, dims: LayerDims) -> Self {
        let h = dims.hidden;
        TransformerLayer {
            query: Linear::new(p, names.query, h, h, Fresh::Zeros),
            key: Linear::new(p, names.key, h, h, Fresh::Zeros),
            value: Linear::new(p, names.value, h, h, Fresh::Zeros),
            attn_out: Linear::new(p, names.attn_out, h, h, Fresh::Zeros),
            attn_norm: LayerNorm::new(p, names.attn_norm, h, dims.eps),
            ffn_in: Linear::new(p, names.ffn_in, h, dims.ffn, Fresh::Zeros),
            ffn_out: Linear::new(p, names.ffn_out, dims.ffn, h, Fresh::Zeros),
            out_norm: LayerNorm::new(p, names.out_norm, h, dims.eps),
            dims,
            dropout_after_attention: names.dropout_after_attention,
        }
    }

    /// `xs: [b, s, h]` fp32, `mask: [b, 1, 1, s]` bool (true = attend) -> `[b, s, h]` fp32.
    pub fn forward(&self, xs: &Tensor, mask: &Tensor, train: bool, kind: Option<Kind>) -> Tensor {
        self.forward_rows(xs, xs, mask, train, kind)
    }

    /// [`Self::forward`] at the first position only, `[b, 1, h]`: all a classifier reads from the
    /// last layer ([CLS]). Keys and values still come from every position; the query, the
    /// output projection and the feed-forward block run on one row per text instead of `s`
    /// (about a seventh of a 6-layer encoder's arithmetic), with the same result.
    pub fn forward_first(
        &self,
        xs: &Tensor,
        mask: &Tensor,
        train: bool,
        kind: Option<Kind>,
    ) -> Tensor {
        self.forward_rows(xs, &xs.narrow(1, 0, 1), mask, train, kind)
    }

    /// The block's output at the positions `rows` (`[b, r, h]`, `xs` itself or its first `r`
    /// positions) attending over all of `xs`.
    fn forward_rows(
        &self,
        xs: &Tensor,
        rows: &Tensor,
        mask: &Tensor,
        train: bool,
        kind: Option<Kind>,
    ) -> Tensor {
        let (b, s, h) = match xs.size()[..] {
            [b, s, h] => (b, s, h),
            _ => unreachable!("hidden states are always [batch, seq, hidden]"),
        };
        let r = rows.size()[1];
        let heads = self.dims.heads;
        let head_dim = h / heads;
        // [b, n, h] -> [b, heads, n, head_dim], the layout SDPA expects (a view, no copy).
        let split = |t: Tensor, n: i64| t.view([b, n, heads, head_dim]).transpose(1, 2);
        let q = split(self.query.forward(rows, kind), r);
        let k = split(self.key.forward(xs, kind), s);
        let v = split(self.value.forward(xs, kind), s);
        let p_attn = if train { self.dims.drop_attn } else { 0.0 };
        // Default scale 1/sqrt(head_dim), as both families use.
        let ctx = Tensor::scaled_dot_product_attention(
            &q,
            &k,
            &v,
            Some(mask),
            p_attn,
            false,
            None::<f64>,
            false,
        );
        // [b, heads, r, head_dim] -> [b, r, h]
        let ctx = ctx.transpose(1, 2).reshape([b, r, h]);
        let mut attn = self.attn_out.forward(&ctx, kind);
        if self.dropout_after_attention {
            attn = attn.dropout(self.dims.drop_hidden, train);
        }
        // fp32 + (bf16|fp32) promotes to fp32: the residual stream stays fp32.
        let sa = self.attn_norm.forward(&(rows + attn));
        let inner = activate(&self.ffn_in.forward(&sa, kind), self.dims.activation);
        let ffn = self
            .ffn_out
            .forward(&inner, kind)
            .dropout(self.dims.drop_hidden, train);
        self.out_norm.forward(&(sa + ffn))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    #[test]
    fn the_first_position_alone_equals_the_full_layers_first_position() {
        let _guard = tch::no_grad_guard();
        tch::manual_seed(3);
        let vs = nn::VarStore::new(Device::Cpu);
        let names = LayerNames {
            query: "q",
            key: "k",
            value: "v",
            attn_out: "o",
            attn_norm: "ln1",
            ffn_in: "fi",
            ffn_out: "fo",
            out_norm: "ln2",
            dropout_after_attention: true,
        };
        let dims = LayerDims {
            hidden: 16,
            heads: 4,
            ffn: 32,
            eps: 1e-12,
            activation: Activation::Gelu,
            drop_hidden: 0.1,
            drop_attn: 0.1,
        };
        let layer = TransformerLayer::new(&vs.root(), &names, dims);
        for (_, mut var) in vs.variables() {
            var.copy_(&(Tensor::randn(var.size(), (Kind::Float, Device::Cpu)) * 0.3));
        }
        let xs = Tensor::randn([3, 5, 16], (Kind::Float, Device::Cpu));
        // Text 1 has two padding positions, text 2 four.
        let mask = Tensor::from_slice(&[
            true, true, true, true, true, true, true, true, false, false, true, false, false,
            false, false,
        ])
        .view([3, 1, 1, 5]);
        let full = layer.forward(&xs, &mask, false, None).narrow(1, 0, 1);
        let first = layer.forward_first(&xs, &mask, false, None);
        assert_eq!(first.size(), [3, 1, 16]);
        let diff = f64::try_from((&full - &first).abs().max()).unwrap();
        assert!(diff < 1e-5, "max difference {diff}");
    }
}

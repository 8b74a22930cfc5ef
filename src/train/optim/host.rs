//! The CPU fp32 update as single passes over the buffers, split across libtorch's thread count.
//!
//! A chain of tensor kernels reads and writes every buffer about ten times per step (lerp, mul,
//! addcmul, sqrt, div, add, addcdiv, plus temporaries); for models whose embeddings dominate the
//! parameter count that was more than half of a CPU training step. Here each element of
//! `p, g, m, v` is loaded once and `p, m, v` stored once, with PyTorch's operation order.

/// Scalars of one AdamW step.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Coefficients {
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
    pub bias_correction2_sqrt: f32,
    /// `lr / (1 - beta1^t)`.
    pub step_size: f32,
    /// Gradient clipping's factor, applied as gradients are read (1 = none): the same product
    /// as scaling the gradients in place first, without that extra pass.
    pub grad_scale: f32,
}

/// Below this many elements work stays on the calling thread.
const PARALLEL_MIN: usize = 1 << 16;

/// Threads worth using for `len` elements of work.
pub fn threads_for(len: usize) -> usize {
    if len < PARALLEL_MIN {
        1
    } else {
        (tch::get_num_threads().max(1) as usize).min(len / PARALLEL_MIN + 1)
    }
}

/// Work that can be cut into two at an element index.
pub trait Split: Sized {
    fn len(&self) -> usize;
    fn split_at(self, at: usize) -> (Self, Self);
}

impl Split for &[f32] {
    fn len(&self) -> usize {
        <[f32]>::len(self)
    }
    fn split_at(self, at: usize) -> (Self, Self) {
        <[f32]>::split_at(self, at)
    }
}

impl Split for &mut [f32] {
    fn len(&self) -> usize {
        <[f32]>::len(self)
    }
    fn split_at(self, at: usize) -> (Self, Self) {
        self.split_at_mut(at)
    }
}

/// Matching slices of parameters, gradients and moments, with the step's weight-decay factor
/// and coefficients (a variable with its own learning rate has its own step size).
#[derive(Debug)]
pub struct Span<'a> {
    pub p: &'a mut [f32],
    pub g: &'a [f32],
    pub m: &'a mut [f32],
    pub v: &'a mut [f32],
    pub decay: f32,
    pub k: Coefficients,
}

impl Split for Span<'_> {
    fn len(&self) -> usize {
        self.p.len()
    }
    fn split_at(self, at: usize) -> (Self, Self) {
        let (p0, p1) = self.p.split_at_mut(at);
        let (g0, g1) = self.g.split_at(at);
        let (m0, m1) = self.m.split_at_mut(at);
        let (v0, v1) = self.v.split_at_mut(at);
        (
            Span {
                p: p0,
                g: g0,
                m: m0,
                v: v0,
                decay: self.decay,
                k: self.k,
            },
            Span {
                p: p1,
                g: g1,
                m: m1,
                v: v1,
                decay: self.decay,
                k: self.k,
            },
        )
    }
}

/// Cuts `items` into at most `groups` runs of about equal total length, in order.
fn balance<T: Split>(items: Vec<T>, groups: usize) -> Vec<Vec<T>> {
    let total: usize = items.iter().map(Split::len).sum();
    let target = total.div_ceil(groups.max(1)).max(1);
    let mut out: Vec<Vec<T>> = vec![Vec::new()];
    let mut room = target;
    for mut item in items {
        while item.len() >= room {
            let (head, tail) = item.split_at(room);
            if let Some(last) = out.last_mut() {
                last.push(head);
            }
            out.push(Vec::new());
            room = target;
            item = tail;
        }
        room -= item.len();
        if item.len() > 0 {
            if let Some(last) = out.last_mut() {
                last.push(item);
            }
        }
    }
    out.retain(|g| !g.is_empty());
    out
}

/// Runs `work` over `items`, split across threads when there is enough of it; the results come
/// back in item order (so reductions are deterministic for a given thread count).
pub fn map_split<T, R>(items: Vec<T>, work: impl Fn(Vec<T>) -> R + Sync) -> Vec<R>
where
    T: Split + Send,
    R: Send,
{
    let total: usize = items.iter().map(Split::len).sum();
    map_split_n(items, threads_for(total), work)
}

/// [`map_split`] over `n` threads.
pub fn map_split_n<T, R>(items: Vec<T>, n: usize, work: impl Fn(Vec<T>) -> R + Sync) -> Vec<R>
where
    T: Split + Send,
    R: Send,
{
    if n <= 1 {
        return vec![work(items)];
    }
    let mut groups = balance(items, n).into_iter();
    let Some(first) = groups.next() else {
        return Vec::new();
    };
    let work = &work;
    std::thread::scope(|scope| {
        let rest: Vec<_> = groups.map(|g| scope.spawn(move || work(g))).collect();
        let mut out = vec![work(first)];
        // A panicking worker re-raises its panic here.
        out.extend(rest.into_iter().map(|h| match h.join() {
            Ok(r) => r,
            Err(panic) => std::panic::resume_unwind(panic),
        }));
        out
    })
}

/// One AdamW step over every span, each with its own coefficients.
pub fn adamw(spans: Vec<Span<'_>>) {
    map_split(spans, |group| {
        for s in group {
            adamw_serial(s.p, s.g, s.m, s.v, s.decay, s.k);
        }
    });
}

/// `g *= grad_scale; p *= decay; m = lerp(m, g, 1-b1); v = b2*v + (1-b2)*g*g;
/// p -= step_size * m / (sqrt(v)/bc2 + eps)`, element-wise.
pub fn adamw_serial(
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
        let g = g * k.grad_scale;
        // torch.lerp with weight < 0.5: start + weight * (end - start).
        let mi = *m + w1 * (g - *m);
        let vi = *v * k.beta2 + w2 * (g * g);
        let denom = vi.sqrt() / k.bias_correction2_sqrt + k.eps;
        *p = *p * decay - k.step_size * (mi / denom);
        *m = mi;
        *v = vi;
    }
}

/// [`adamw_serial`] with a zero gradient: what a variable (or an embedding row) without a
/// gradient goes through in a step.
pub fn adamw_zero_grad(p: &mut [f32], m: &mut [f32], v: &mut [f32], decay: f32, k: Coefficients) {
    const ZEROS: [f32; 1024] = [0.0; 1024];
    for start in (0..p.len()).step_by(ZEROS.len()) {
        let end = (start + ZEROS.len()).min(p.len());
        adamw_serial(
            &mut p[start..end],
            &ZEROS[..end - start],
            &mut m[start..end],
            &mut v[start..end],
            decay,
            k,
        );
    }
}

/// Sum of squares of all parts, accumulated in f64 per block.
pub fn sum_squares(parts: Vec<&[f32]>) -> f64 {
    map_split(parts, |group| {
        group.into_iter().map(sum_squares_serial).sum::<f64>()
    })
    .into_iter()
    .sum()
}

fn sum_squares_serial(x: &[f32]) -> f64 {
    const LANES: usize = 16;
    let mut total = 0.0f64;
    for block in x.chunks(4096) {
        // Independent lanes let the compiler vectorise (f32 addition is not reassociated).
        let mut lanes = [0.0f32; LANES];
        let mut chunks = block.chunks_exact(LANES);
        for c in &mut chunks {
            for (acc, &x) in lanes.iter_mut().zip(c) {
                *acc += x * x;
            }
        }
        let tail: f32 = chunks.remainder().iter().map(|&x| x * x).sum();
        total += (lanes.iter().sum::<f32>() + tail) as f64;
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn balance_keeps_order_and_sizes() {
        let data: Vec<f32> = (0..10).map(|i| i as f32).collect();
        let parts: Vec<&[f32]> = vec![&data[..3], &data[3..4], &data[4..10]];
        let groups = balance(parts, 3);
        let sizes: Vec<usize> = groups
            .iter()
            .map(|g| g.iter().map(|s| s.len()).sum())
            .collect();
        assert_eq!(sizes, vec![4, 4, 2]);
        let flat: Vec<f32> = groups.into_iter().flatten().flatten().copied().collect();
        assert_eq!(flat, data);
        assert_eq!(balance(vec![&data[..0]], 2).len(), 0);
    }

    #[test]
    fn sum_squares_matches_f64_reference() {
        let x: Vec<f32> = (0..10_007).map(|i| ((i as f32) * 0.37).sin()).collect();
        let exact: f64 = x.iter().map(|&v| (v as f64) * (v as f64)).sum();
        let got = sum_squares(vec![&x[..5000], &x[5000..]]);
        assert!((got - exact).abs() < 1e-6 * exact, "{got} vs {exact}");
    }
}

//! Row-lazy AdamW for the word-embedding table on the CPU.
//!
//! A batch of short texts touches a few hundred of the table's ~30k rows, yet dense AdamW
//! rewrites every row each step (the untouched ones with a zero gradient: their moments decay and
//! the weight still moves). Here a row is only brought up to date when it is next read: before a
//! forward pass that looks it up, before evaluation or a checkpoint, and at the end. Catching up
//! replays the skipped steps with the same scalars and the same element-wise code the dense
//! update used, so the weights are bit-for-bit those of the dense update; the work is just done
//! later, on a row that sits in cache, and not at all for rows whose moments are still zero and
//! that no weight decay moves.

use super::host::{adamw_serial, adamw_zero_grad, map_split_n, threads_for, Coefficients, Split};

/// What the dense update did in one step.
#[derive(Debug, Clone, Copy)]
struct StepRecord {
    decay: f32,
    k: Coefficients,
}

/// Bookkeeping for one `[rows, dim]` table inside the flat buffers.
#[derive(Debug)]
pub struct LazyTable {
    /// Index of the table's slot among the optimizer's variables.
    pub slot: usize,
    /// First element of the table in the flat buffers.
    pub offset: usize,
    pub rows: usize,
    pub dim: usize,
    /// The optimizer step each row's weight and moments reflect.
    current: Vec<u64>,
    /// Rows whose moments have ever been non-zero; the others only follow weight decay.
    touched: Vec<bool>,
    /// Steps `base + 1 ..= base + history.len()`.
    history: Vec<StepRecord>,
    base: u64,
}

/// The flat parameter and moment buffers of the table (`rows * dim` each).
pub struct TableBuffers<'a> {
    pub p: &'a mut [f32],
    pub m: &'a mut [f32],
    pub v: &'a mut [f32],
}

/// The rows of a table that a replay covers, as matching sub-slices.
struct RowRun<'a> {
    first_row: usize,
    dim: usize,
    p: &'a mut [f32],
    m: &'a mut [f32],
    v: &'a mut [f32],
}

impl Split for RowRun<'_> {
    /// Counted in rows, so splits never cut one.
    fn len(&self) -> usize {
        self.p.len() / self.dim
    }
    fn split_at(self, at: usize) -> (Self, Self) {
        let cut = at * self.dim;
        let (p0, p1) = self.p.split_at_mut(cut);
        let (m0, m1) = self.m.split_at_mut(cut);
        let (v0, v1) = self.v.split_at_mut(cut);
        (
            RowRun {
                first_row: self.first_row,
                dim: self.dim,
                p: p0,
                m: m0,
                v: v0,
            },
            RowRun {
                first_row: self.first_row + at,
                dim: self.dim,
                p: p1,
                m: m1,
                v: v1,
            },
        )
    }
}

impl LazyTable {
    /// All rows up to date at `step`; `touched` says which rows have non-zero moments.
    pub fn new(
        slot: usize,
        offset: usize,
        rows: usize,
        dim: usize,
        step: u64,
        touched: Vec<bool>,
    ) -> Self {
        debug_assert_eq!(touched.len(), rows);
        Self {
            slot,
            offset,
            rows,
            dim,
            current: vec![step; rows],
            touched,
            history: Vec::new(),
            base: step,
        }
    }

    /// Whether every row reflects `step`.
    pub fn is_current(&self, step: u64) -> bool {
        self.history.is_empty() && self.base == step
    }

    /// Records the dense step `step` (the next one) and its scalars.
    pub fn record(&mut self, step: u64, decay: f32, k: Coefficients) {
        debug_assert_eq!(step, self.base + self.history.len() as u64 + 1);
        self.history.push(StepRecord { decay, k });
    }

    /// Brings the rows in `ids` up to date with the last recorded step (ids outside the table
    /// are left to the lookup to reject).
    pub fn catch_up_rows(&mut self, ids: &[i64], buf: TableBuffers<'_>) {
        let to = self.base + self.history.len() as u64;
        for &id in ids {
            let Ok(row) = usize::try_from(id) else {
                continue;
            };
            if row >= self.rows || self.current[row] == to {
                continue;
            }
            let span = row * self.dim..(row + 1) * self.dim;
            replay(
                &self.history,
                self.current[row] - self.base,
                self.touched[row],
                &mut buf.p[span.clone()],
                &mut buf.m[span.clone()],
                &mut buf.v[span],
            );
            self.current[row] = to;
        }
    }

    /// Brings every row up to date and forgets the history.
    pub fn catch_up_all(&mut self, buf: TableBuffers<'_>) {
        let to = self.base + self.history.len() as u64;
        if !self.history.is_empty() {
            let run = RowRun {
                first_row: 0,
                dim: self.dim,
                p: buf.p,
                m: buf.m,
                v: buf.v,
            };
            let (history, base, current, touched) =
                (&self.history, self.base, &self.current, &self.touched);
            let dim = self.dim;
            let threads = threads_for(self.rows * self.dim);
            map_split_n(vec![run], threads, |runs| {
                for run in runs {
                    for (i, ((p, m), v)) in run
                        .p
                        .chunks_mut(dim)
                        .zip(run.m.chunks_mut(dim))
                        .zip(run.v.chunks_mut(dim))
                        .enumerate()
                    {
                        let row = run.first_row + i;
                        replay(history, current[row] - base, touched[row], p, m, v);
                    }
                }
            });
        }
        self.current.iter_mut().for_each(|c| *c = to);
        self.history.clear();
        self.base = to;
    }

    /// Applies step `step` (already recorded) to the rows that have a gradient: `rows[i]` gets
    /// `grads[i*dim..(i+1)*dim]`. Rows should have been caught up before the forward pass that
    /// read them ([`LazyTable::catch_up_rows`]); one that was not is caught up here first.
    pub fn apply(&mut self, step: u64, rows: &[i64], grads: &[f32], buf: TableBuffers<'_>) {
        let at = (step - self.base - 1) as usize;
        let record = self.history[at];
        for (&id, g) in rows.iter().zip(grads.chunks_exact(self.dim)) {
            let row = id as usize;
            let span = row * self.dim..(row + 1) * self.dim;
            if self.current[row] + 1 < step {
                replay(
                    &self.history[..at],
                    self.current[row] - self.base,
                    self.touched[row],
                    &mut buf.p[span.clone()],
                    &mut buf.m[span.clone()],
                    &mut buf.v[span.clone()],
                );
            }
            adamw_serial(
                &mut buf.p[span.clone()],
                g,
                &mut buf.m[span.clone()],
                &mut buf.v[span],
                record.decay,
                record.k,
            );
            self.current[row] = step;
            self.touched[row] = true;
        }
    }
}

/// Replays `history[from..]` on one row with a zero gradient, exactly as the dense update did.
fn replay(
    history: &[StepRecord],
    from: u64,
    touched: bool,
    p: &mut [f32],
    m: &mut [f32],
    v: &mut [f32],
) {
    for rec in &history[from as usize..] {
        if !touched {
            // m = v = 0 stay 0, and p*decay - step_size*(0/eps) is exactly p*decay.
            if rec.decay != 1.0 {
                p.iter_mut().for_each(|x| *x *= rec.decay);
            }
            continue;
        }
        adamw_zero_grad(p, m, v, rec.decay, rec.k);
    }
}

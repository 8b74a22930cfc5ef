//! Compact storage of a tokenized data set, epoch batch plans, padded batch assembly and a
//! bounded background prefetcher.
//!
//! Invariants:
//! - [`TokenizedSet`] keeps every row's ids in one flat `Vec<u32>` addressed by `offsets`
//!   (`offsets.len() == rows + 1`); type ids (0/1 segments) are kept as bytes only when asked for.
//! - [`plan_epoch`] returns each row index `0..n` exactly once, in batches of `batch_size` with at
//!   most one shorter batch (the last partial batch is kept, like `dataloader_drop_last=false`),
//!   and depends only on `(lengths, batch_size, seed, epoch, group_by_length)`.
//! - A [`Batch`] is padded to its own longest row, never to a global maximum.

use std::sync::mpsc::{sync_channel, Receiver};
use std::thread::Scope;

use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// Batches per sorting window ("mega-batch") when grouping by length: large enough that rows of
/// similar length meet, small enough that batch composition stays random across epochs.
pub const MEGA_BATCH_BATCHES: usize = 64;

/// Errors while building a [`TokenizedSet`].
#[derive(Debug, thiserror::Error)]
pub enum BatchError {
    #[error("tokenized row {row}: {ids} ids but {type_ids} type ids; the encoder must return one type id per token")]
    TypeIdLength {
        row: usize,
        ids: usize,
        type_ids: usize,
    },
    #[error("tokenized row {row}: type id {value} does not fit a segment id (0..=255)")]
    TypeIdRange { row: usize, value: u32 },
}

/// Token ids (and optionally type ids) of every row, plus the row's class id.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TokenizedSet {
    ids: Vec<u32>,
    /// Row `i` is `ids[offsets[i]..offsets[i + 1]]`.
    offsets: Vec<usize>,
    type_ids: Option<Vec<u8>>,
    labels: Vec<u32>,
}

impl TokenizedSet {
    /// An empty set; `keep_type_ids` for models with a token-type embedding (BERT, not DistilBERT).
    pub fn new(keep_type_ids: bool) -> Self {
        Self {
            ids: Vec::new(),
            offsets: vec![0],
            type_ids: keep_type_ids.then(Vec::new),
            labels: Vec::new(),
        }
    }

    /// Appends one row. `type_ids` is ignored unless the set keeps them.
    pub fn push(&mut self, ids: &[u32], type_ids: &[u32], label: u32) -> Result<(), BatchError> {
        let row = self.labels.len();
        if let Some(store) = self.type_ids.as_mut() {
            if type_ids.len() != ids.len() {
                return Err(BatchError::TypeIdLength {
                    row,
                    ids: ids.len(),
                    type_ids: type_ids.len(),
                });
            }
            for &t in type_ids {
                store.push(u8::try_from(t).map_err(|_| BatchError::TypeIdRange { row, value: t })?);
            }
        }
        self.ids.extend_from_slice(ids);
        self.offsets.push(self.ids.len());
        self.labels.push(label);
        Ok(())
    }

    /// Number of rows.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// True when the set has no rows.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Whether type ids are stored (and batches carry `token_type_ids`).
    pub fn has_type_ids(&self) -> bool {
        self.type_ids.is_some()
    }

    /// Token ids of row `i`.
    pub fn ids(&self, i: usize) -> &[u32] {
        &self.ids[self.offsets[i]..self.offsets[i + 1]]
    }

    /// Length in tokens of every row.
    pub fn lengths(&self) -> Vec<usize> {
        self.offsets.windows(2).map(|w| w[1] - w[0]).collect()
    }

    /// Inference batches over `rows`: positions into `rows`, longest row first (the largest
    /// batch shows memory trouble at once), at most `batch_size` per batch. Callers put the
    /// results back in `rows` order through the positions.
    pub fn longest_first_batches(&self, rows: &[usize], batch_size: usize) -> Vec<Vec<usize>> {
        let lengths = self.lengths();
        let mut order: Vec<usize> = (0..rows.len()).collect();
        order.sort_by_key(|&i| std::cmp::Reverse(lengths[rows[i]]));
        order
            .chunks(batch_size.max(1))
            .map(<[usize]>::to_vec)
            .collect()
    }

    /// Class ids of every row.
    pub fn labels(&self) -> &[u32] {
        &self.labels
    }

    /// Total real tokens.
    pub fn num_tokens(&self) -> usize {
        self.ids.len()
    }

    /// Pads rows `rows` (in that order) to their longest row with `pad_id`.
    pub fn assemble(&self, rows: &[usize], pad_id: u32) -> Batch {
        // A zero-length row still gets one (masked) position so tensors are never empty.
        let seq_len = rows
            .iter()
            .map(|&r| self.offsets[r + 1] - self.offsets[r])
            .max();
        let seq_len = seq_len.unwrap_or(0).max(1);
        let cells = rows.len() * seq_len;
        let mut input_ids = vec![i64::from(pad_id); cells];
        let mut attention_mask = vec![0i64; cells];
        let mut token_type_ids = self.type_ids.as_ref().map(|_| vec![0i64; cells]);
        let mut real_tokens = 0;
        for (b, &r) in rows.iter().enumerate() {
            let (start, end) = (self.offsets[r], self.offsets[r + 1]);
            let out = b * seq_len;
            for (j, &id) in self.ids[start..end].iter().enumerate() {
                input_ids[out + j] = i64::from(id);
                attention_mask[out + j] = 1;
            }
            if let (Some(dst), Some(src)) = (token_type_ids.as_mut(), self.type_ids.as_ref()) {
                for (j, &t) in src[start..end].iter().enumerate() {
                    dst[out + j] = i64::from(t);
                }
            }
            real_tokens += end - start;
        }
        Batch {
            input_ids,
            attention_mask,
            token_type_ids,
            labels: rows.iter().map(|&r| i64::from(self.labels[r])).collect(),
            rows: rows.to_vec(),
            seq_len,
            real_tokens,
        }
    }
}

/// One padded batch, row-major `[rows, seq_len]` buffers ready to become i64 tensors.
#[derive(Debug, Clone, PartialEq)]
pub struct Batch {
    pub input_ids: Vec<i64>,
    /// 1 = real token, 0 = padding.
    pub attention_mask: Vec<i64>,
    pub token_type_ids: Option<Vec<i64>>,
    /// `[rows]` class ids.
    pub labels: Vec<i64>,
    /// Row indices into the [`TokenizedSet`], in batch order.
    pub rows: Vec<usize>,
    pub seq_len: usize,
    /// Non-padding tokens.
    pub real_tokens: usize,
}

impl Batch {
    /// Rows in the batch.
    pub fn num_rows(&self) -> usize {
        self.rows.len()
    }

    /// Token cells including padding (`rows * seq_len`).
    pub fn padded_tokens(&self) -> usize {
        self.rows.len() * self.seq_len
    }
}

/// Running count of real versus padded tokens.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct PaddingStats {
    pub real_tokens: u64,
    pub padded_tokens: u64,
}

impl PaddingStats {
    /// Adds one batch's counts.
    pub fn add(&mut self, real: usize, padded: usize) {
        self.real_tokens += real as u64;
        self.padded_tokens += padded as u64;
    }

    /// Real tokens / padded tokens (1.0 when nothing was counted).
    pub fn efficiency(&self) -> f64 {
        if self.padded_tokens == 0 {
            1.0
        } else {
            self.real_tokens as f64 / self.padded_tokens as f64
        }
    }
}

/// The seeded RNG of one epoch: one ChaCha stream per epoch, so epochs differ and any epoch can be
/// regenerated on resume without replaying earlier ones.
fn epoch_rng(seed: u64, epoch: u64) -> ChaCha8Rng {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(epoch);
    rng
}

/// The batches of one epoch as row indices.
///
/// `group_by_length`: shuffle, sort by length (longest first) inside windows of
/// [`MEGA_BATCH_BATCHES`] batches, cut into batches, shuffle the batch order, then move the
/// longest batch to the front so an out-of-memory shows on the first step (as the HF
/// `LengthGroupedSampler` does). Otherwise a plain seeded shuffle cut into batches.
pub fn plan_epoch(
    lengths: &[usize],
    batch_size: usize,
    seed: u64,
    epoch: u64,
    group_by_length: bool,
) -> Vec<Vec<usize>> {
    let batch_size = batch_size.max(1);
    let mut rng = epoch_rng(seed, epoch);
    let mut order: Vec<usize> = (0..lengths.len()).collect();
    order.shuffle(&mut rng);
    if !group_by_length {
        return order.chunks(batch_size).map(<[usize]>::to_vec).collect();
    }
    let window = batch_size * MEGA_BATCH_BATCHES;
    let mut batches: Vec<Vec<usize>> = Vec::with_capacity(lengths.len().div_ceil(batch_size));
    for mega in order.chunks_mut(window) {
        // Stable sort keeps the shuffled order among equal lengths.
        mega.sort_by_key(|&i| std::cmp::Reverse(lengths[i]));
        batches.extend(mega.chunks(batch_size).map(<[usize]>::to_vec));
    }
    batches.shuffle(&mut rng);
    let longest = batches
        .iter()
        .enumerate()
        .max_by_key(|(i, b)| {
            (
                b.iter().map(|&r| lengths[r]).max().unwrap_or(0),
                std::cmp::Reverse(*i),
            )
        })
        .map(|(i, _)| i);
    if let Some(i) = longest {
        batches.swap(0, i);
    }
    batches
}

/// Runs `make` for each planned batch on a scoped background thread, at most `depth` results
/// ahead of the consumer. Dropping the receiver stops the thread at its next send.
pub fn prefetch<'scope, T, F>(
    scope: &'scope Scope<'scope, '_>,
    plan: Vec<Vec<usize>>,
    depth: usize,
    mut make: F,
) -> Receiver<T>
where
    T: Send + 'scope,
    F: FnMut(&[usize]) -> T + Send + 'scope,
{
    let (tx, rx) = sync_channel(depth.max(1));
    scope.spawn(move || {
        for rows in &plan {
            if tx.send(make(rows)).is_err() {
                break;
            }
        }
    });
    rx
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Uneven lengths: mostly short rows with a long tail, like bank-transaction texts.
    fn uneven_lengths(n: usize) -> Vec<usize> {
        (0..n)
            .map(|i| 4 + (i * 7919 % 97) % 13 + if i % 17 == 0 { 60 } else { 0 })
            .collect()
    }

    fn efficiency(lengths: &[usize], plan: &[Vec<usize>]) -> f64 {
        let mut s = PaddingStats::default();
        for b in plan {
            let max = b.iter().map(|&r| lengths[r]).max().unwrap();
            s.add(b.iter().map(|&r| lengths[r]).sum(), max * b.len());
        }
        s.efficiency()
    }

    #[test]
    fn every_row_exactly_once_and_last_partial_batch_kept() {
        let lengths = uneven_lengths(1003);
        for group in [false, true] {
            let plan = plan_epoch(&lengths, 16, 7, 0, group);
            let mut seen: Vec<usize> = plan.iter().flatten().copied().collect();
            seen.sort_unstable();
            assert_eq!(seen, (0..1003).collect::<Vec<_>>(), "group={group}");
            assert_eq!(plan.len(), 63);
            let short: Vec<usize> = plan.iter().map(Vec::len).filter(|&l| l != 16).collect();
            assert_eq!(short, vec![1003 % 16], "group={group}");
        }
    }

    #[test]
    fn deterministic_per_seed_and_different_across_epochs_and_seeds() {
        let lengths = uneven_lengths(500);
        for group in [false, true] {
            let a = plan_epoch(&lengths, 8, 42, 1, group);
            assert_eq!(a, plan_epoch(&lengths, 8, 42, 1, group));
            assert_ne!(a, plan_epoch(&lengths, 8, 42, 2, group));
            assert_ne!(a, plan_epoch(&lengths, 8, 43, 1, group));
        }
    }

    #[test]
    fn bucketing_raises_padding_efficiency() {
        let lengths = uneven_lengths(4000);
        let plain = efficiency(&lengths, &plan_epoch(&lengths, 32, 3, 0, false));
        let grouped = efficiency(&lengths, &plan_epoch(&lengths, 32, 3, 0, true));
        assert!(plain < 0.5, "plain={plain}");
        assert!(grouped > 0.9, "grouped={grouped}");
    }

    #[test]
    fn grouped_plan_starts_with_the_longest_batch() {
        let lengths = uneven_lengths(999);
        let plan = plan_epoch(&lengths, 10, 5, 3, true);
        let max_of = |b: &Vec<usize>| b.iter().map(|&r| lengths[r]).max().unwrap();
        let top = plan.iter().map(max_of).max().unwrap();
        assert_eq!(max_of(&plan[0]), top);
    }

    #[test]
    fn assemble_pads_to_longest_row_in_batch() {
        let mut set = TokenizedSet::new(true);
        set.push(&[101, 7, 102], &[0, 0, 0], 2).unwrap();
        set.push(&[101, 102], &[0, 1], 0).unwrap();
        set.push(&[101, 5, 6, 7, 8, 102], &[0; 6], 1).unwrap();
        let b = set.assemble(&[1, 0], 0);
        assert_eq!(b.seq_len, 3);
        assert_eq!(b.input_ids, vec![101, 102, 0, 101, 7, 102]);
        assert_eq!(b.attention_mask, vec![1, 1, 0, 1, 1, 1]);
        assert_eq!(b.token_type_ids, Some(vec![0, 1, 0, 0, 0, 0]));
        assert_eq!(b.labels, vec![0, 2]);
        assert_eq!((b.real_tokens, b.padded_tokens()), (5, 6));
        assert_eq!(set.lengths(), vec![3, 2, 6]);
    }

    #[test]
    fn type_ids_dropped_unless_kept_and_checked_when_kept() {
        let mut set = TokenizedSet::new(false);
        set.push(&[1, 2], &[], 0).unwrap();
        assert_eq!(set.assemble(&[0], 0).token_type_ids, None);
        let mut kept = TokenizedSet::new(true);
        assert!(matches!(
            kept.push(&[1, 2], &[0], 0),
            Err(BatchError::TypeIdLength { row: 0, .. })
        ));
    }

    #[test]
    fn prefetch_yields_batches_in_plan_order_and_stops_when_dropped() {
        let mut set = TokenizedSet::new(false);
        for i in 0..50u32 {
            set.push(&vec![1; 1 + i as usize % 5], &[], i % 3).unwrap();
        }
        let plan = plan_epoch(&set.lengths(), 4, 1, 0, true);
        let got: Vec<Vec<usize>> = std::thread::scope(|s| {
            let rx = prefetch(s, plan.clone(), 2, |rows| set.assemble(rows, 0));
            rx.iter().map(|b| b.rows).collect()
        });
        assert_eq!(got, plan);
        // Consumer leaves after one batch: the scope must still end (thread not stuck).
        std::thread::scope(|s| {
            let rx = prefetch(s, plan.clone(), 1, |rows| set.assemble(rows, 0));
            assert!(rx.recv().is_ok());
        });
    }
}

//! A seeded, stratified hold-out of training rows, used when no evaluation channel exists.
//!
//! Invariants: the same labels, fraction and seed give the same split on every platform (ChaCha8
//! with our own Fisher-Yates over `next_u64`, independent of `rand`'s shuffle algorithm); a class
//! with a single row stays in train; every class keeps at least one training row; the held-out
//! count is `ceil(fraction * eligible rows)` spread over classes by largest remainder, like
//! scikit-learn's `train_test_split(stratify=...)`.

use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Row indices of each side, each sorted ascending.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SplitIndices {
    pub train: Vec<usize>,
    pub eval: Vec<usize>,
}

/// Splits rows labelled `ids` (class ids `< num_classes`), holding out about `fraction` of them.
pub fn stratified(ids: &[usize], num_classes: usize, fraction: f64, seed: u64) -> SplitIndices {
    let mut by_class: Vec<Vec<usize>> = vec![Vec::new(); num_classes];
    for (row, &id) in ids.iter().enumerate() {
        if let Some(rows) = by_class.get_mut(id) {
            rows.push(row);
        }
    }
    let quotas = eval_quotas(&by_class.iter().map(Vec::len).collect::<Vec<_>>(), fraction);

    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut train = Vec::with_capacity(ids.len());
    let mut eval = Vec::new();
    for (rows, quota) in by_class.iter_mut().zip(quotas) {
        shuffle(rows, &mut rng);
        eval.extend_from_slice(&rows[..quota]);
        train.extend_from_slice(&rows[quota..]);
    }
    train.sort_unstable();
    eval.sort_unstable();
    SplitIndices { train, eval }
}

/// Held-out rows per class: floors of `fraction * count`, then the remaining rows to the largest
/// fractional parts (ties: lower class id), never more than `count - 1`.
fn eval_quotas(counts: &[usize], fraction: f64) -> Vec<usize> {
    let cap = |c: usize| c.saturating_sub(1);
    let eligible: usize = counts.iter().filter(|&&c| c >= 2).sum();
    let target = (fraction * eligible as f64).ceil() as usize;
    let mut quotas: Vec<usize> = counts
        .iter()
        .map(|&c| {
            if c >= 2 {
                ((fraction * c as f64).floor() as usize).min(cap(c))
            } else {
                0
            }
        })
        .collect();
    let mut order: Vec<usize> = (0..counts.len()).filter(|&i| counts[i] >= 2).collect();
    let remainder = |i: usize| fraction * counts[i] as f64 - (fraction * counts[i] as f64).floor();
    order.sort_by(|&a, &b| remainder(b).total_cmp(&remainder(a)).then(a.cmp(&b)));
    let mut assigned: usize = quotas.iter().sum();
    // Passes repeat only when caps stop some classes from taking a row.
    while assigned < target {
        let before = assigned;
        for &i in &order {
            if assigned >= target {
                break;
            }
            if quotas[i] < cap(counts[i]) {
                quotas[i] += 1;
                assigned += 1;
            }
        }
        if assigned == before {
            break;
        }
    }
    quotas
}

/// Fisher-Yates over the raw ChaCha stream (stable across `rand` versions).
fn shuffle(items: &mut [usize], rng: &mut ChaCha8Rng) {
    for i in (1..items.len()).rev() {
        let j = (rng.next_u64() % (i as u64 + 1)) as usize;
        items.swap(i, j);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(counts: &[usize]) -> Vec<usize> {
        counts
            .iter()
            .enumerate()
            .flat_map(|(id, &n)| std::iter::repeat_n(id, n))
            .collect()
    }

    #[test]
    fn stratified_proportions_and_partition() {
        let ids = labels(&[50, 30, 20]);
        let split = stratified(&ids, 3, 0.2, 7);
        let mut per_class = [0; 3];
        for &row in &split.eval {
            per_class[ids[row]] += 1;
        }
        assert_eq!(per_class, [10, 6, 4]);
        let mut all: Vec<usize> = split.train.iter().chain(&split.eval).copied().collect();
        all.sort_unstable();
        assert_eq!(all, (0..100).collect::<Vec<_>>());
    }

    #[test]
    fn singletons_stay_in_train_and_each_class_keeps_a_row() {
        let ids = labels(&[1, 2, 3, 1]);
        let split = stratified(&ids, 4, 0.9, 1);
        for class in 0..4 {
            assert!(
                split.train.iter().any(|&r| ids[r] == class),
                "class {class}"
            );
        }
        assert!(split.eval.iter().all(|&r| ids[r] == 1 || ids[r] == 2));
        // ceil(0.9 * 5) = 5, but caps allow only 1 + 2.
        assert_eq!(split.eval.len(), 3);
    }

    #[test]
    fn deterministic_for_a_seed_and_seed_dependent() {
        let ids = labels(&[40, 40]);
        let a = stratified(&ids, 2, 0.25, 42);
        assert_eq!(a, stratified(&ids, 2, 0.25, 42));
        let b = stratified(&ids, 2, 0.25, 43);
        assert_ne!(a.eval, b.eval);
        assert_eq!(a.eval.len(), 20);
    }

    #[test]
    fn largest_remainder_reaches_the_ceiling() {
        // 0.1 * 5 = 0.5 per class, 0.1 * 15 = 1.5 -> ceil = 2 rows, both to the lowest ids.
        assert_eq!(eval_quotas(&[5, 5, 5], 0.1), vec![1, 1, 0]);
        assert_eq!(eval_quotas(&[1, 1], 0.5), vec![0, 0]);
    }
}

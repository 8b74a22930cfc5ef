//! Label names <-> class ids, the way scikit-learn's `LabelEncoder` assigns them.
//!
//! Invariant: `id2label` is sorted by Unicode code point (Rust's `str` order, which is Python's
//! `sorted()` order for `str`) and holds no duplicates; ids are `0..len`.

use super::DataError;
use std::collections::BTreeMap;

/// The class ids of a training job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabelMap {
    id2label: Vec<String>,
    label2id: BTreeMap<String, usize>,
}

/// Evaluation labels encoded against a [`LabelMap`], with unseen ones removed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Encoded {
    /// Ids of the rows kept.
    pub ids: Vec<usize>,
    /// Indices (into the input) of the rows kept.
    pub kept_rows: Vec<usize>,
    /// Unseen label -> number of rows carrying it (sorted).
    pub unseen: BTreeMap<String, usize>,
}

impl LabelMap {
    /// The sorted distinct labels of `labels`. Fewer than two is an error.
    pub fn fit<'a>(labels: impl IntoIterator<Item = &'a str>) -> Result<Self, DataError> {
        let mut distinct: Vec<String> = labels.into_iter().map(str::to_string).collect();
        distinct.sort();
        distinct.dedup();
        if distinct.len() < 2 {
            return Err(DataError::TooFewClasses {
                count: distinct.len(),
                labels: distinct.join(", "),
            });
        }
        Ok(Self::from_sorted_unique(distinct))
    }

    /// A map with the given id order (e.g. read back from a saved model's `id2label`).
    /// Returns `None` when a label repeats.
    pub fn from_id2label(id2label: Vec<String>) -> Option<Self> {
        let label2id: BTreeMap<String, usize> = id2label
            .iter()
            .enumerate()
            .map(|(i, l)| (l.clone(), i))
            .collect();
        (label2id.len() == id2label.len()).then_some(Self { id2label, label2id })
    }

    fn from_sorted_unique(id2label: Vec<String>) -> Self {
        let label2id = id2label
            .iter()
            .enumerate()
            .map(|(i, l)| (l.clone(), i))
            .collect();
        Self { id2label, label2id }
    }

    /// Number of classes.
    pub fn len(&self) -> usize {
        self.id2label.len()
    }

    /// Always false for a fitted map (at least two classes); here for clippy's `len` rule.
    pub fn is_empty(&self) -> bool {
        self.id2label.is_empty()
    }

    /// Label names by id.
    pub fn id2label(&self) -> &[String] {
        &self.id2label
    }

    /// The id of `label`, if known.
    pub fn id(&self, label: &str) -> Option<usize> {
        self.label2id.get(label).copied()
    }

    /// The name of class `id`, if in range.
    pub fn label(&self, id: usize) -> Option<&str> {
        self.id2label.get(id).map(String::as_str)
    }

    /// Ids of training labels; every label must be known (true for the labels it was fitted on).
    pub fn encode_known(&self, labels: &[String]) -> Option<Vec<usize>> {
        labels.iter().map(|l| self.id(l)).collect()
    }

    /// Ids of `labels`, separating rows whose label is unknown.
    pub fn encode(&self, labels: &[String]) -> Encoded {
        let mut out = Encoded {
            ids: Vec::with_capacity(labels.len()),
            kept_rows: Vec::with_capacity(labels.len()),
            unseen: BTreeMap::new(),
        };
        for (row, label) in labels.iter().enumerate() {
            match self.id(label) {
                Some(id) => {
                    out.ids.push(id);
                    out.kept_rows.push(row);
                }
                None => *out.unseen.entry(label.clone()).or_default() += 1,
            }
        }
        out
    }

    /// Rows per class id for `ids`.
    pub fn counts(&self, ids: &[usize]) -> Vec<usize> {
        let mut counts = vec![0; self.len()];
        for &id in ids {
            if let Some(c) = counts.get_mut(id) {
                *c += 1;
            }
        }
        counts
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sorted_by_code_point_like_label_encoder() {
        // Python: sorted(["b", "B", "a", "É", "Z", "b"]) == ['B', 'Z', 'a', 'b', 'É']
        let map = LabelMap::fit(["b", "B", "a", "É", "Z", "b"]).unwrap();
        assert_eq!(map.id2label(), &["B", "Z", "a", "b", "É"]);
        assert_eq!(map.id("a"), Some(2));
        assert_eq!(map.label(4), Some("É"));
        assert_eq!(map.label(5), None);
    }

    #[test]
    fn fewer_than_two_classes_is_an_error() {
        let err = LabelMap::fit(["x", "x"]).unwrap_err().to_string();
        assert!(err.contains("1 distinct label(s) (x)"), "{err}");
        assert!(LabelMap::fit([]).is_err());
    }

    #[test]
    fn encode_separates_unseen_labels() {
        let map = LabelMap::fit(["a", "b"]).unwrap();
        let labels: Vec<String> = ["b", "c", "a", "c", "d"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let enc = map.encode(&labels);
        assert_eq!(enc.ids, vec![1, 0]);
        assert_eq!(enc.kept_rows, vec![0, 2]);
        assert_eq!(
            enc.unseen.into_iter().collect::<Vec<_>>(),
            vec![("c".into(), 2), ("d".into(), 1)]
        );
        assert_eq!(map.counts(&[1, 1, 0]), vec![1, 2]);
        assert!(LabelMap::from_id2label(vec!["x".into(), "x".into()]).is_none());
    }
}

//! Warm start across label changes: which rows of a classifier checkpoint's head a run keeps.
//!
//! Rows are matched to the new label map by label *name*, never by position: a kept label keeps
//! its trained row (weight and bias, bit for bit), a new label gets a freshly initialised row
//! (transformers' init: normal(0, `initializer_range`) weight, zero bias), a removed label's row
//! is dropped. A checkpoint whose rows cannot be named (no `id2label`, or one that disagrees with
//! the classifier's size) gets a fresh classifier, with the reason logged.

use serde::Serialize;

use crate::hyperparams::WarmStart;

/// Where the classifier of a run comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum HeadOrigin {
    /// Rows of the checkpoint's classifier, matched by label name (new labels fresh).
    ByLabel,
    /// A whole fresh classifier.
    Fresh,
}

/// How the checkpoint's head maps onto this run's labels; recorded in `run_summary.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HeadMatch {
    /// The `warm_start` setting in force.
    pub warm_start: WarmStart,
    /// Whether trained rows are reused.
    pub head: HeadOrigin,
    /// Labels whose trained rows are kept (in this run's label order).
    pub kept: Vec<String>,
    /// Labels whose rows are initialised fresh (in this run's label order).
    pub added: Vec<String>,
    /// Labels of the checkpoint not in this run, whose rows are dropped (checkpoint order).
    pub removed: Vec<String>,
    /// Why the classifier (or part of it) is fresh, when it is.
    pub reason: Option<String>,
    /// `(checkpoint row, new row)` of every kept label.
    #[serde(skip)]
    pub rows: Vec<(usize, usize)>,
}

impl HeadMatch {
    fn fresh(
        warm_start: WarmStart,
        labels: &[String],
        removed: Vec<String>,
        reason: String,
    ) -> Self {
        Self {
            warm_start,
            head: HeadOrigin::Fresh,
            kept: Vec::new(),
            added: labels.to_vec(),
            removed,
            reason: Some(reason),
            rows: Vec::new(),
        }
    }

    /// True when no trained classifier row is reused.
    pub fn is_fresh(&self) -> bool {
        self.rows.is_empty()
    }
}

/// Matches the checkpoint's classifier (`rows` outputs named by its config's `id2label`, `None`
/// rows for a base model without one) to `labels` under `warm_start`.
pub fn match_head(
    warm_start: WarmStart,
    checkpoint_labels: Option<&[String]>,
    rows: Option<usize>,
    labels: &[String],
) -> HeadMatch {
    let Some(rows) = rows else {
        return HeadMatch::fresh(
            warm_start,
            labels,
            Vec::new(),
            "the checkpoint has no classification head (a base model); head initialised as transformers does".into(),
        );
    };
    let named = checkpoint_labels.filter(|l| l.len() == rows);
    let old_labels = named.map(<[String]>::to_vec).unwrap_or_default();
    if warm_start == WarmStart::Encoder {
        return HeadMatch::fresh(
            warm_start,
            labels,
            old_labels,
            "warm_start=encoder: the encoder is reused, the head initialised as transformers does"
                .into(),
        );
    }
    let Some(old) = named else {
        let why = match checkpoint_labels {
            None => "its config.json has no id2label".to_string(),
            Some(l) => format!("its config.json's id2label names {} labels", l.len()),
        };
        return HeadMatch::fresh(
            warm_start,
            labels,
            Vec::new(),
            format!("the checkpoint's classifier has {rows} outputs but {why}, so its rows cannot be matched to labels by name; classifier initialised fresh"),
        );
    };
    let mut seen = std::collections::BTreeSet::new();
    if let Some(dup) = old.iter().find(|l| !seen.insert(l.as_str())) {
        return HeadMatch::fresh(
            warm_start,
            labels,
            Vec::new(),
            format!("the checkpoint's id2label names `{dup}` twice, so its rows cannot be matched to labels by name; classifier initialised fresh"),
        );
    }
    let mut kept = Vec::new();
    let mut added = Vec::new();
    let mut pairs = Vec::new();
    for (new_row, label) in labels.iter().enumerate() {
        match old.iter().position(|l| l == label) {
            Some(old_row) => {
                kept.push(label.clone());
                pairs.push((old_row, new_row));
            }
            None => added.push(label.clone()),
        }
    }
    let removed: Vec<String> = old
        .iter()
        .filter(|l| !labels.contains(l))
        .cloned()
        .collect();
    let reason = match (kept.is_empty(), added.is_empty()) {
        (true, _) => Some(format!(
            "no label in common with the checkpoint's labels ({}); classifier initialised fresh",
            old.join(", ")
        )),
        (false, false) => Some(format!(
            "new labels {} get freshly initialised classifier rows",
            added.join(", ")
        )),
        (false, true) => None,
    };
    HeadMatch {
        warm_start,
        head: match pairs.is_empty() {
            true => HeadOrigin::Fresh,
            false => HeadOrigin::ByLabel,
        },
        kept,
        added,
        removed,
        reason,
        rows: pairs,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn rows_follow_names_not_positions() {
        // Same count, one renamed: position reuse would give TRANSPORT the FUEL row.
        let old = names(&["FEES", "FUEL", "GROCERIES", "INCOME"]);
        let new = names(&["FEES", "GROCERIES", "INCOME", "TRANSPORT"]);
        let m = match_head(WarmStart::Auto, Some(&old), Some(4), &new);
        assert_eq!(m.head, HeadOrigin::ByLabel);
        assert_eq!(m.kept, names(&["FEES", "GROCERIES", "INCOME"]));
        assert_eq!(m.added, names(&["TRANSPORT"]));
        assert_eq!(m.removed, names(&["FUEL"]));
        assert_eq!(m.rows, vec![(0, 0), (2, 1), (3, 2)]);
        assert!(m.reason.unwrap().contains("TRANSPORT"));
    }

    #[test]
    fn unchanged_labels_keep_every_row() {
        let old = names(&["a", "b"]);
        let m = match_head(WarmStart::Auto, Some(&old), Some(2), &old);
        assert_eq!(m.rows, vec![(0, 0), (1, 1)]);
        assert!(m.added.is_empty() && m.removed.is_empty() && m.reason.is_none());
    }

    #[test]
    fn fresh_heads_and_their_reasons() {
        let new = names(&["a", "b"]);
        let base = match_head(WarmStart::Auto, None, None, &new);
        assert!(base.is_fresh() && base.reason.unwrap().contains("base model"));
        let old = names(&["a", "c"]);
        let encoder = match_head(WarmStart::Encoder, Some(&old), Some(2), &new);
        assert_eq!(encoder.head, HeadOrigin::Fresh);
        assert_eq!(encoder.added, new);
        assert_eq!(encoder.removed, old);
        let unnamed = match_head(WarmStart::Auto, None, Some(2), &new);
        assert!(unnamed.is_fresh() && unnamed.reason.unwrap().contains("no id2label"));
        let disagree = match_head(WarmStart::Auto, Some(&old), Some(3), &new);
        assert!(disagree.is_fresh());
        let dup = match_head(WarmStart::Auto, Some(&names(&["a", "a"])), Some(2), &new);
        assert!(dup.is_fresh() && dup.reason.unwrap().contains("twice"));
        let disjoint = match_head(WarmStart::Auto, Some(&names(&["x", "y"])), Some(2), &new);
        assert!(disjoint.is_fresh());
        assert_eq!(disjoint.removed, names(&["x", "y"]));
    }
}

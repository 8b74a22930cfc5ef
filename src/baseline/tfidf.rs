//! Word uni+bigram tf-idf, as scikit-learn's `TfidfVectorizer(ngram_range=(1, 2))` with every
//! other setting at its default: lowercase (Python's `str.lower`, which Rust's `to_lowercase`
//! mirrors, final sigma included), token pattern `(?u)\b\w\w+\b`, raw term counts
//! (`sublinear_tf=False`), smooth idf `ln((1 + n) / (1 + df)) + 1`, rows scaled to unit l2 norm,
//! features numbered in sorted term order.
//!
//! Rows are kept sparse ([`SparseRows`]): a short descriptor has a handful of terms while the
//! vocabulary of a real set runs to hundreds of thousands, so a dense rows x vocabulary matrix
//! would not fit in memory.

use std::collections::HashMap;
use std::sync::OnceLock;

/// Why tf-idf features could not be built.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TfidfError {
    #[error("tf-idf: the {rows} training texts hold no word of two or more letters or digits; the baseline needs some")]
    EmptyVocabulary { rows: usize },
    #[error("tf-idf: {terms} distinct terms exceed the solver's limit of {limit} features")]
    TooManyFeatures { terms: usize, limit: usize },
}

/// The most features liblinear can index (its feature ids are C `int`s, one taken by the bias).
pub const MAX_FEATURES: usize = i32::MAX as usize - 1;

/// Python's `\w` under `re.UNICODE` is exactly the letters (`L*`), numbers (`N*`) and `_`
/// (checked over every code point), so `\b\w\w+\b` is a maximal run of two or more of them.
/// Rust's `char::is_alphanumeric` would also take combining marks and circled letters.
fn token_regex() -> &'static regex::Regex {
    static RE: OnceLock<regex::Regex> = OnceLock::new();
    // Invariant: the pattern is a constant that compiles.
    RE.get_or_init(|| regex::Regex::new(r"[\p{L}\p{N}_]{2,}").expect("token pattern compiles"))
}

/// The tokens of `text` as scikit-learn's default analyzer finds them (before n-grams).
pub fn tokenize(text: &str) -> Vec<String> {
    let lower = text.to_lowercase();
    token_regex()
        .find_iter(&lower)
        .map(|m| m.as_str().to_string())
        .collect()
}

/// Calls `f` with every term of `text`, duplicates included: its unigrams in order, then its
/// bigrams joined by one space, as scikit-learn's `_word_ngrams` lists them.
fn for_each_term(text: &str, mut f: impl FnMut(&str)) {
    let lower = text.to_lowercase();
    let tokens: Vec<&str> = token_regex()
        .find_iter(&lower)
        .map(|m| m.as_str())
        .collect();
    for token in &tokens {
        f(token);
    }
    let mut bigram = String::new();
    for pair in tokens.windows(2) {
        bigram.clear();
        bigram.push_str(pair[0]);
        bigram.push(' ');
        bigram.push_str(pair[1]);
        f(&bigram);
    }
}

/// Every term of `text` (unigrams, then bigrams), duplicates included.
pub fn terms(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for_each_term(text, |t| out.push(t.to_string()));
    out
}

/// Rows of a sparse matrix (CSR): row `i` holds `indices[indptr[i]..indptr[i + 1]]`, feature
/// ids ascending, with their values.
#[derive(Debug, Clone, PartialEq)]
pub struct SparseRows {
    indptr: Vec<usize>,
    indices: Vec<u32>,
    values: Vec<f64>,
    num_features: usize,
}

impl SparseRows {
    fn with_features(num_features: usize) -> Self {
        Self {
            indptr: vec![0],
            indices: Vec::new(),
            values: Vec::new(),
            num_features,
        }
    }

    fn push_row(&mut self, entries: impl IntoIterator<Item = (u32, f64)>) {
        for (id, value) in entries {
            self.indices.push(id);
            self.values.push(value);
        }
        self.indptr.push(self.indices.len());
    }

    pub fn num_rows(&self) -> usize {
        self.indptr.len() - 1
    }

    /// Columns: the vocabulary size.
    pub fn num_features(&self) -> usize {
        self.num_features
    }

    /// Stored (non-zero) entries.
    pub fn nnz(&self) -> usize {
        self.indices.len()
    }

    /// Feature ids (ascending) and values of row `i`.
    pub fn row(&self, i: usize) -> (&[u32], &[f64]) {
        let span = self.indptr[i]..self.indptr[i + 1];
        (&self.indices[span.clone()], &self.values[span])
    }
}

/// A fitted vocabulary with its idf weights.
#[derive(Debug, Clone)]
pub struct TfidfVectorizer {
    /// term -> feature id (the term's rank in sorted order).
    vocabulary: HashMap<String, u32>,
    idf: Vec<f64>,
}

/// Term ids of one text, sorted, with their counts.
fn counted(mut ids: Vec<u32>) -> Vec<(u32, u32)> {
    ids.sort_unstable();
    let mut out: Vec<(u32, u32)> = Vec::with_capacity(ids.len());
    for id in ids {
        match out.last_mut() {
            Some((last, n)) if *last == id => *n += 1,
            _ => out.push((id, 1)),
        }
    }
    out
}

impl TfidfVectorizer {
    /// Learns the vocabulary and idf from `texts` and returns their tf-idf rows.
    pub fn fit_transform(texts: &[String]) -> Result<(Self, SparseRows), TfidfError> {
        // Pass 1: provisional ids in order of first sight, counts per text.
        let mut vocabulary: HashMap<String, u32> = HashMap::new();
        let mut rows: Vec<Vec<(u32, u32)>> = Vec::with_capacity(texts.len());
        let mut too_many = false;
        for text in texts {
            let mut ids = Vec::new();
            for_each_term(text, |term| {
                let next = vocabulary.len() as u32;
                let id = match vocabulary.get(term) {
                    Some(&id) => id,
                    None if vocabulary.len() < MAX_FEATURES => {
                        vocabulary.insert(term.to_string(), next);
                        next
                    }
                    None => {
                        too_many = true;
                        return;
                    }
                };
                ids.push(id);
            });
            rows.push(counted(ids));
        }
        if too_many {
            return Err(TfidfError::TooManyFeatures {
                terms: MAX_FEATURES + 1,
                limit: MAX_FEATURES,
            });
        }
        if vocabulary.is_empty() {
            return Err(TfidfError::EmptyVocabulary { rows: texts.len() });
        }

        // Feature ids in sorted term order (code point order, as Python sorts strings).
        let mut by_term: Vec<(&str, u32)> =
            vocabulary.iter().map(|(t, &id)| (t.as_str(), id)).collect();
        by_term.sort_unstable_by(|a, b| a.0.cmp(b.0));
        let mut rank = vec![0u32; by_term.len()];
        for (r, (_, provisional)) in by_term.iter().enumerate() {
            rank[*provisional as usize] = r as u32;
        }
        drop(by_term);
        for id in vocabulary.values_mut() {
            *id = rank[*id as usize];
        }

        let num_features = vocabulary.len();
        let mut df = vec![0u64; num_features];
        for row in &mut rows {
            for (id, _) in row.iter_mut() {
                *id = rank[*id as usize];
                df[*id as usize] += 1;
            }
            row.sort_unstable_by_key(|&(id, _)| id);
        }
        let n = texts.len() as f64;
        let idf: Vec<f64> = df
            .iter()
            .map(|&d| ((1.0 + n) / (1.0 + d as f64)).ln() + 1.0)
            .collect();
        let this = Self { vocabulary, idf };
        let mut matrix = SparseRows::with_features(num_features);
        for row in rows {
            matrix.push_row(this.weigh(&row));
        }
        Ok((this, matrix))
    }

    /// Rebuilds a fitted vectorizer from its terms in feature-id order and their idf weights
    /// (what [`Self::feature_names`] and [`Self::idf`] return); `None` when the lengths differ,
    /// a term repeats, or the terms are not in sorted order (the ids would not be the fitted ones).
    pub fn from_parts(terms: Vec<String>, idf: Vec<f64>) -> Option<Self> {
        if terms.len() != idf.len() || terms.is_empty() || terms.windows(2).any(|w| w[0] >= w[1]) {
            return None;
        }
        let vocabulary = terms
            .into_iter()
            .enumerate()
            .map(|(id, term)| (term, id as u32))
            .collect();
        Some(Self { vocabulary, idf })
    }

    /// The tf-idf rows of `texts` over the fitted vocabulary (unknown terms are dropped).
    pub fn transform<S: AsRef<str>>(&self, texts: &[S]) -> SparseRows {
        let mut matrix = SparseRows::with_features(self.idf.len());
        for text in texts {
            let mut ids = Vec::new();
            for_each_term(text.as_ref(), |term| {
                if let Some(&id) = self.vocabulary.get(term) {
                    ids.push(id);
                }
            });
            matrix.push_row(self.weigh(&counted(ids)));
        }
        matrix
    }

    /// Counts times idf, scaled to unit l2 norm (a row without terms stays empty).
    fn weigh(&self, counts: &[(u32, u32)]) -> Vec<(u32, f64)> {
        let mut row: Vec<(u32, f64)> = counts
            .iter()
            .map(|&(id, n)| (id, n as f64 * self.idf[id as usize]))
            .collect();
        let norm = row.iter().map(|(_, v)| v * v).sum::<f64>().sqrt();
        if norm > 0.0 {
            for (_, v) in &mut row {
                *v /= norm;
            }
        }
        row
    }

    /// The number of features (distinct terms seen in training).
    pub fn num_features(&self) -> usize {
        self.idf.len()
    }

    /// The terms in feature-id order (scikit-learn's `get_feature_names_out()`).
    pub fn feature_names(&self) -> Vec<&str> {
        let mut names = vec![""; self.idf.len()];
        for (term, &id) in &self.vocabulary {
            names[id as usize] = term.as_str();
        }
        names
    }

    /// The idf weight of each feature (scikit-learn's `idf_`).
    pub fn idf(&self) -> &[f64] {
        &self.idf
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn tokens_follow_the_default_token_pattern() {
        // Punctuation splits, single characters drop out, digits and underscores stay.
        assert_eq!(
            tokenize("POS*Purchase: WOOLWORTHS-123, a 7 x9 ref_no=42!"),
            strings(&["pos", "purchase", "woolworths", "123", "x9", "ref_no", "42"])
        );
        // Apostrophes and dots split words ("o'brien" -> "brien"; "st." -> "st").
        assert_eq!(
            tokenize("O'Brien's St. 1.5kg"),
            strings(&["brien", "st", "5kg"])
        );
        assert!(tokenize("a b c - . ,").is_empty());
    }

    #[test]
    fn tokens_follow_pythons_unicode_rules() {
        // Letters of any script and non-ASCII digits are word characters; lowercasing is Unicode.
        assert_eq!(
            tokenize("CAFÉ Straße ΣΟΦΟΣ ٣٤ 東京"),
            strings(&["café", "straße", "σοφος", "٣٤", "東京"])
        );
        // A combining mark (a decomposed é) and a circled letter are not `\w` in Python.
        assert_eq!(tokenize("cafe\u{301}s"), strings(&["cafe"]));
        assert_eq!(tokenize("ⓐⓑ ab"), strings(&["ab"]));
        // Superscript digits and Roman numerals are numbers (`N*`).
        assert_eq!(tokenize("x² ⅻⅻ"), strings(&["x²", "ⅻⅻ"]));
        // Capital dotted I lowercases to i + combining dot, which ends the token.
        assert_eq!(tokenize("İSTANBUL"), strings(&["stanbul"]));
    }

    #[test]
    fn terms_are_unigrams_then_bigrams() {
        assert_eq!(
            terms("Card fee, card FEE"),
            strings(&["card", "fee", "card", "fee", "card fee", "fee card", "card fee"])
        );
        // A dropped single letter does not break the bigram chain, as in scikit-learn.
        assert_eq!(terms("pos a spar"), strings(&["pos", "spar", "pos spar"]));
    }

    #[test]
    fn weights_follow_smooth_idf_and_l2_norm() {
        let texts = strings(&["fee fee card", "card spar", "zz"]);
        let (v, x) = TfidfVectorizer::fit_transform(&texts).unwrap();
        assert_eq!(
            v.feature_names(),
            [
                "card",
                "card spar",
                "fee",
                "fee card",
                "fee fee",
                "spar",
                "zz"
            ]
        );
        let idf = |df: f64| (4.0 / (1.0 + df)).ln() + 1.0;
        assert!((v.idf()[0] - idf(2.0)).abs() < 1e-15);
        assert!((v.idf()[2] - idf(1.0)).abs() < 1e-15);
        // Row 0: card x1, fee x2, "fee card" x1, "fee fee" x1.
        let (ids, values) = x.row(0);
        assert_eq!(ids, [0, 2, 3, 4]);
        let raw = [idf(2.0), 2.0 * idf(1.0), idf(1.0), idf(1.0)];
        let norm = raw.iter().map(|r| r * r).sum::<f64>().sqrt();
        for (got, want) in values.iter().zip(raw) {
            assert!(
                (got - want / norm).abs() < 1e-15,
                "{got} vs {}",
                want / norm
            );
        }
        assert_eq!(x.num_rows(), 3);
        assert_eq!(x.num_features(), 7);

        // Unknown terms are dropped; a text with none known is an empty row.
        let y = v.transform(&["spar UNKNOWN", "nothing here"]);
        assert_eq!(y.row(0).0, [5]);
        assert!((y.row(0).1[0] - 1.0).abs() < 1e-15);
        assert!(y.row(1).0.is_empty());

        // Rebuilt from its saved parts it transforms the same; broken parts are refused.
        let names: Vec<String> = v.feature_names().iter().map(|t| t.to_string()).collect();
        let again = TfidfVectorizer::from_parts(names.clone(), v.idf().to_vec()).unwrap();
        assert_eq!(again.transform(&texts), x);
        let mut unsorted = names.clone();
        unsorted.swap(0, 1);
        assert!(TfidfVectorizer::from_parts(unsorted, v.idf().to_vec()).is_none());
        assert!(TfidfVectorizer::from_parts(names, vec![1.0]).is_none());
    }

    #[test]
    fn a_set_without_tokens_is_a_typed_error() {
        let err = TfidfVectorizer::fit_transform(&strings(&["a", "- 1"])).unwrap_err();
        assert_eq!(err, TfidfError::EmptyVocabulary { rows: 2 });
    }
}

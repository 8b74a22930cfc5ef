//! One-vs-rest linear SVM as scikit-learn's `LinearSVC()` defaults: L2 penalty, squared hinge
//! loss, `C=1`, `tol=1e-4`, an intercept learned as a regularised constant feature of value 1
//! (`intercept_scaling=1`), and `dual="auto"` (the dual solver when there are fewer rows than
//! features, else the primal one). The solver is LIBLINEAR, through the `liblinear` crate, as
//! scikit-learn's is.
//!
//! Each class's binary problem (the class against the rest) is independent, so they are solved
//! in parallel, one worker per core; with two classes there is one problem, as in scikit-learn.
//! The weights are kept ([`LinearSvm`], `f32`): the job scores its evaluation rows with them and
//! may save them beside the encoder for `predict` and `serve` (see `crate::blend`).
//!
//! LIBLINEAR shuffles with the C library's shared `rand()`: with several workers the draws
//! interleave, so results can differ in the last digits from run to run (within the solver's
//! tolerance).

use std::sync::atomic::{AtomicUsize, Ordering};

use liblinear::util::TrainingInput;
use liblinear::{Builder, LibLinearModel, SolverType};

use super::tfidf::SparseRows;

/// scikit-learn's `LinearSVC` defaults.
const C: f64 = 1.0;
const TOL: f64 = 1e-4;
const INTERCEPT_SCALING: f64 = 1.0;

/// Why the SVM could not be fitted.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SvmError {
    #[error("linear SVM: {rows} training rows but {labels} labels")]
    LengthMismatch { rows: usize, labels: usize },
    #[error("linear SVM: label {id} is outside 0..{num_classes}")]
    LabelOutOfRange { id: usize, num_classes: usize },
    #[error("linear SVM: evaluation rows have {eval} features, training rows {train}")]
    FeatureMismatch { train: usize, eval: usize },
    #[error("linear SVM: the training rows hold {present} class(es); it needs at least two")]
    TooFewClasses { present: usize },
    #[error("linear SVM: LIBLINEAR failed on class {class}: {message}")]
    Solver { class: usize, message: String },
    #[error("linear SVM: a solver worker panicked")]
    WorkerPanicked,
}

/// Which LIBLINEAR solver `dual="auto"` picked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Formulation {
    /// Dual coordinate descent (`L2R_L2LOSS_SVC_DUAL`).
    Dual,
    /// Primal trust-region Newton (`L2R_L2LOSS_SVC`).
    Primal,
}

/// Decision values of the evaluation rows, one column per class.
#[derive(Debug, Clone, PartialEq)]
pub struct DecisionValues {
    /// `columns[class][row]`; a class without training rows is `-inf` (never predicted, as
    /// scikit-learn, which never saw it).
    columns: Vec<Vec<f64>>,
    rows: usize,
}

impl DecisionValues {
    /// Decision values given per class (`columns[class][row]`); `None` when there are no
    /// classes or the columns differ in length.
    pub fn from_columns(columns: Vec<Vec<f64>>) -> Option<Self> {
        let rows = columns.first()?.len();
        columns
            .iter()
            .all(|c| c.len() == rows)
            .then_some(Self { columns, rows })
    }

    pub fn num_rows(&self) -> usize {
        self.rows
    }

    pub fn num_classes(&self) -> usize {
        self.columns.len()
    }

    /// The decision value of `row` for `class`.
    pub fn value(&self, row: usize, class: usize) -> f64 {
        self.columns[class][row]
    }

    /// The class with the largest decision value per row; ties go to the lowest class id, as
    /// NumPy's `argmax` (and `decision > 0` for two classes) in scikit-learn.
    pub fn predict(&self) -> Vec<usize> {
        (0..self.rows)
            .map(|row| {
                let mut best = 0;
                for class in 1..self.columns.len() {
                    if self.columns[class][row] > self.columns[best][row] {
                        best = class;
                    }
                }
                best
            })
            .collect()
    }
}

/// The fitted one-vs-rest weights: what the decision values of any rows are computed from, and
/// what a model directory keeps so `predict` and `serve` score texts as the job did.
///
/// Weights are `f32`, feature-major (`weights[feature * classes + class]`), so scoring a sparse
/// row touches one contiguous run per term; a class without training rows has bias `-inf` (never
/// predicted, as scikit-learn, which never saw it).
#[derive(Debug, Clone, PartialEq)]
pub struct LinearSvm {
    weights: Vec<f32>,
    bias: Vec<f32>,
    num_features: usize,
}

impl LinearSvm {
    /// Rebuilds a model from saved parts; `None` when the sizes disagree.
    pub fn from_parts(weights: Vec<f32>, bias: Vec<f32>, num_features: usize) -> Option<Self> {
        (!bias.is_empty() && weights.len() == num_features * bias.len()).then_some(Self {
            weights,
            bias,
            num_features,
        })
    }

    pub fn num_classes(&self) -> usize {
        self.bias.len()
    }

    pub fn num_features(&self) -> usize {
        self.num_features
    }

    /// `[features x classes]`, feature-major.
    pub fn weights(&self) -> &[f32] {
        &self.weights
    }

    pub fn bias(&self) -> &[f32] {
        &self.bias
    }

    /// The decision values of `rows` (built by the vectorizer this model was fitted with).
    pub fn decision(&self, rows: &SparseRows) -> Result<DecisionValues, SvmError> {
        if rows.num_features() != self.num_features {
            return Err(SvmError::FeatureMismatch {
                train: self.num_features,
                eval: rows.num_features(),
            });
        }
        let classes = self.num_classes();
        let mut columns = vec![vec![0.0f64; rows.num_rows()]; classes];
        let mut acc = vec![0.0f64; classes];
        for row in 0..rows.num_rows() {
            for (c, a) in acc.iter_mut().enumerate() {
                *a = f64::from(self.bias[c]);
            }
            let (ids, values) = rows.row(row);
            for (&id, &v) in ids.iter().zip(values) {
                let w = &self.weights[id as usize * classes..(id as usize + 1) * classes];
                for (a, &wc) in acc.iter_mut().zip(w) {
                    *a += f64::from(wc) * v;
                }
            }
            for (column, &a) in columns.iter_mut().zip(&acc) {
                column[row] = a;
            }
        }
        Ok(DecisionValues {
            columns,
            rows: rows.num_rows(),
        })
    }
}

/// A fitted model with how it was fitted.
#[derive(Debug, Clone)]
pub struct SvmFit {
    pub model: LinearSvm,
    pub formulation: Formulation,
    /// Binary problems solved (1 for two classes, else one per class with training rows).
    pub problems: usize,
    /// Workers that solved them.
    pub threads: usize,
}

/// A fitted model's scores on the evaluation rows, with how it was fitted.
#[derive(Debug, Clone)]
pub struct SvmScored {
    pub fit: SvmFit,
    pub decision: DecisionValues,
}

/// Fits on `train` (class ids in `labels`, `< num_classes`) with up to `threads` workers and
/// scores `eval`.
pub fn fit_and_score(
    train: &SparseRows,
    labels: &[usize],
    num_classes: usize,
    eval: &SparseRows,
    threads: usize,
) -> Result<SvmScored, SvmError> {
    let fit = fit(train, labels, num_classes, threads)?;
    let decision = fit.model.decision(eval)?;
    Ok(SvmScored { fit, decision })
}

/// Fits on `train` (class ids in `labels`, `< num_classes`) with up to `threads` workers.
pub fn fit(
    train: &SparseRows,
    labels: &[usize],
    num_classes: usize,
    threads: usize,
) -> Result<SvmFit, SvmError> {
    if train.num_rows() != labels.len() {
        return Err(SvmError::LengthMismatch {
            rows: train.num_rows(),
            labels: labels.len(),
        });
    }
    let mut counts = vec![0usize; num_classes];
    for &id in labels {
        if id >= num_classes {
            return Err(SvmError::LabelOutOfRange { id, num_classes });
        }
        counts[id] += 1;
    }
    let present: Vec<usize> = (0..num_classes).filter(|&c| counts[c] > 0).collect();
    // Two classes: one problem, the higher class id positive (scikit-learn's `classes_[1]`).
    let positives: Vec<usize> = match present.len() {
        0 | 1 => {
            return Err(SvmError::TooFewClasses {
                present: present.len(),
            })
        }
        2 => vec![present[1]],
        _ => present.clone(),
    };
    let formulation = if train.num_rows() < train.num_features() {
        Formulation::Dual
    } else {
        Formulation::Primal
    };
    let threads = threads.clamp(1, positives.len());
    liblinear::toggle_liblinear_stdout_output(false);

    let next = AtomicUsize::new(0);
    type Solved = Vec<(usize, Result<(Vec<f64>, f64), SvmError>)>;
    let workers: Vec<Result<Solved, SvmError>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                scope.spawn(|| {
                    let mut done = Vec::new();
                    loop {
                        let k = next.fetch_add(1, Ordering::Relaxed);
                        let Some(&class) = positives.get(k) else {
                            break;
                        };
                        done.push((class, solve(formulation, train, labels, class)));
                    }
                    done
                })
            })
            .collect();
        // A panic inside the crate becomes an error of the baseline, not of the job.
        handles
            .into_iter()
            .map(|h| h.join().map_err(|_| SvmError::WorkerPanicked))
            .collect()
    });

    let features = train.num_features();
    let mut weights = vec![0.0f32; features * num_classes];
    let mut bias = vec![f32::NEG_INFINITY; num_classes];
    let mut put = |class: usize, w: &[f64], b: f64, sign: f64| {
        for (f, &wf) in w.iter().enumerate() {
            weights[f * num_classes + class] = (sign * wf) as f32;
        }
        bias[class] = (sign * b) as f32;
    };
    for worker in workers {
        for (class, solved) in worker? {
            let (w, b) = solved?;
            put(class, &w, b, 1.0);
            if positives.len() == 1 {
                put(present[0], &w, b, -1.0);
            }
        }
    }
    Ok(SvmFit {
        model: LinearSvm {
            weights,
            bias,
            num_features: features,
        },
        formulation,
        problems: positives.len(),
        threads,
    })
}

/// Solves `class` against the rest and returns its weight per feature and its bias.
fn solve(
    formulation: Formulation,
    train: &SparseRows,
    labels: &[usize],
    class: usize,
) -> Result<(Vec<f64>, f64), SvmError> {
    let failed = |message: String| SvmError::Solver { class, message };
    let y: Vec<f64> = labels
        .iter()
        .map(|&l| if l == class { 1.0 } else { -1.0 })
        .collect();
    // LIBLINEAR numbers features from 1.
    let x: Vec<Vec<(u32, f64)>> = (0..train.num_rows())
        .map(|i| {
            let (ids, values) = train.row(i);
            ids.iter()
                .map(|&id| id + 1)
                .zip(values.iter().copied())
                .collect()
        })
        .collect();
    let input = TrainingInput::from_sparse_features(y, x).map_err(|e| failed(e.to_string()))?;
    let mut builder = Builder::new();
    builder.problem().input_data(input).bias(INTERCEPT_SCALING);
    builder
        .parameters()
        .solver_type(match formulation {
            Formulation::Dual => SolverType::L2R_L2LOSS_SVC_DUAL,
            Formulation::Primal => SolverType::L2R_L2LOSS_SVC,
        })
        .stopping_criterion(TOL)
        .constraints_violation_cost(C);
    let model = builder.build_model().map_err(|e| failed(e.to_string()))?;
    // LIBLINEAR orders labels as it meets them; read the weights of the +1 side.
    let label = model
        .labels()
        .iter()
        .position(|&l| l == 1)
        .ok_or_else(|| failed("the model has no weights for the class".into()))?
        as i32;
    // Features past the last one LIBLINEAR saw (none, for a vocabulary fitted on these rows)
    // weigh 0.
    let known = model.num_features().min(train.num_features());
    let mut w = vec![0.0; train.num_features()];
    for (f, weight) in w.iter_mut().enumerate().take(known) {
        *weight = model.feature_coefficient(f as i32 + 1, label);
    }
    let bias = model.label_bias(label);
    Ok((w, bias))
}

#[cfg(test)]
mod tests {
    use super::super::tfidf::TfidfVectorizer;
    use super::*;

    fn texts(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn one_vs_rest_learns_words_and_never_predicts_an_unseen_class() {
        let train = texts(&[
            "shell fuel",
            "engen fuel pos",
            "sasol card",
            "spar food",
            "checkers pos",
            "woolworths food",
            "salary in",
            "interest in card",
            "deposit pos",
        ]);
        // Class 3 has no training rows.
        let labels = [0, 0, 0, 1, 1, 1, 2, 2, 2];
        let (v, x) = TfidfVectorizer::fit_transform(&train).unwrap();
        let eval = v.transform(&texts(&["shell", "checkers", "salary deposit", "unknown"]));
        let scored = fit_and_score(&x, &labels, 4, &eval, 3).unwrap();
        let fit = &scored.fit;
        assert_eq!((fit.problems, fit.threads), (3, 3));
        assert_eq!(fit.formulation, Formulation::Dual);
        let fit = &scored;
        assert_eq!(&fit.decision.predict()[..3], [0, 1, 2]);
        assert!(fit.decision.value(0, 3).is_infinite());
        assert!(fit.decision.value(0, 0) > fit.decision.value(0, 1));
    }

    #[test]
    fn two_classes_are_one_problem_with_mirrored_scores() {
        let train = texts(&["fee charge", "fee bank", "salary in", "salary deposit"]);
        let (v, x) = TfidfVectorizer::fit_transform(&train).unwrap();
        let eval = v.transform(&texts(&["fee", "salary", "zzz"]));
        // More workers than problems: one is used.
        let fit = fit_and_score(&x, &[0, 0, 1, 1], 2, &eval, 8).unwrap();
        assert_eq!((fit.fit.problems, fit.fit.threads), (1, 1));
        for row in 0..3 {
            assert_eq!(fit.decision.value(row, 0), -fit.decision.value(row, 1));
        }
        assert_eq!(&fit.decision.predict()[..2], [0, 1]);
    }

    #[test]
    fn ties_go_to_the_lowest_class() {
        let d = DecisionValues {
            columns: vec![
                vec![0.5, -0.0],
                vec![0.5, 0.0],
                vec![0.1, f64::NEG_INFINITY],
            ],
            rows: 2,
        };
        assert_eq!(d.predict(), [0, 0]);
    }

    #[test]
    fn bad_inputs_are_typed_errors() {
        let (v, x) = TfidfVectorizer::fit_transform(&texts(&["ab cd", "ef gh"])).unwrap();
        let eval = v.transform(&texts(&["ab"]));
        assert_eq!(
            fit_and_score(&x, &[0], 2, &eval, 1).unwrap_err(),
            SvmError::LengthMismatch { rows: 2, labels: 1 }
        );
        assert_eq!(
            fit_and_score(&x, &[1, 1], 3, &eval, 1).unwrap_err(),
            SvmError::TooFewClasses { present: 1 }
        );
        assert_eq!(
            fit_and_score(&x, &[0, 5], 3, &eval, 1).unwrap_err(),
            SvmError::LabelOutOfRange {
                id: 5,
                num_classes: 3
            }
        );
        let (_, other) = TfidfVectorizer::fit_transform(&texts(&["zz"])).unwrap();
        assert!(matches!(
            fit_and_score(&x, &[0, 1], 2, &other, 1).unwrap_err(),
            SvmError::FeatureMismatch { .. }
        ));
    }
}

//! What every row format yields: `(text, label)` rows, per channel, and the shared bad-row budget.

use super::DataError;

/// Which columns to read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Columns {
    pub text: String,
    pub label: String,
}

/// Rows of one or more files, in file then line order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rows {
    pub texts: Vec<String>,
    /// Trimmed, never empty.
    pub labels: Vec<String>,
}

impl Rows {
    pub fn len(&self) -> usize {
        self.texts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.texts.is_empty()
    }
}

/// How many bad rows the whole job may skip; shared by every channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadRowBudget {
    /// The `max_bad_rows` hyperparameter.
    pub max: usize,
    /// Skipped so far.
    pub used: usize,
}

impl BadRowBudget {
    pub fn new(max: usize) -> Self {
        Self { max, used: 0 }
    }

    /// Skips the bad row at `file:line` (counted, logged) while the budget allows, else fails
    /// the job naming the row. Every row format reports bad rows through here.
    pub fn skip(&mut self, file: &str, line: u64, problem: String) -> Result<(), DataError> {
        self.skip_at(format!("{file}:{line}"), problem)
    }

    /// [`Self::skip`] for rows that are not lines (a Parquet row group and row): `at` says where.
    pub fn skip_at(&mut self, at: String, problem: String) -> Result<(), DataError> {
        if self.used >= self.max {
            return Err(DataError::BadRow {
                at,
                problem,
                max_bad_rows: self.max,
            });
        }
        self.used += 1;
        tracing::warn!(at = %at, problem = %problem, "skipping bad row ({} of max_bad_rows={})", self.used, self.max);
        Ok(())
    }
}

/// What was read from one channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelRows {
    pub channel: String,
    /// Names of the objects read, in order.
    pub files: Vec<String>,
    pub rows: Rows,
    /// Bad rows skipped in this channel.
    pub skipped_bad_rows: usize,
}

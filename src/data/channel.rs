//! A channel's objects -> rows, each object read in its format (CSV or JSON Lines).

use super::dialect::Dialect;
use super::format::RowFormat;
use super::rows::{BadRowBudget, ChannelRows, Columns, Rows};
use super::{csv, jsonl, DataError};
use crate::storage::ObjectStream;

/// Reads every object of `stream`, each in `format` when the channel declares one, else in the
/// format its name implies ([`RowFormat::from_name`]).
pub fn read_channel(
    channel: &str,
    stream: &mut dyn ObjectStream,
    columns: &Columns,
    dialect: &Dialect,
    format: Option<RowFormat>,
    budget: &mut BadRowBudget,
) -> Result<ChannelRows, DataError> {
    let mut out = ChannelRows {
        channel: channel.to_string(),
        files: Vec::new(),
        rows: Rows::default(),
        skipped_bad_rows: 0,
    };
    while let Some(object) = stream.next_object()? {
        out.files.push(object.name.clone());
        let before = budget.used;
        match format.unwrap_or_else(|| RowFormat::from_name(&object.name)) {
            RowFormat::Csv => csv::read_object(object, columns, dialect, budget, &mut out.rows)?,
            RowFormat::JsonLines => jsonl::read_object(object, columns, budget, &mut out.rows)?,
        }
        out.skipped_bad_rows += budget.used - before;
    }
    if out.rows.is_empty() {
        return Err(DataError::NoRows {
            channel: channel.to_string(),
            files: out.files.join(", "),
        });
    }
    Ok(out)
}

//! A channel's objects -> rows, each object read in its format (CSV, JSON Lines or Parquet).

use super::dialect::Dialect;
use super::format::RowFormat;
use super::rows::{BadRowBudget, ChannelRows, Columns, Rows};
use super::{csv, jsonl, parquet, DataError};
use crate::storage::{InputObject, ObjectStream, StorageError};
use std::io::Read;

/// Reads every object of `stream`, each in `format` when the channel declares one, else in the
/// format its name implies ([`RowFormat::from_name`]); an undeclared object that starts like a
/// Parquet file is read as one whatever its name (a Pipe-mode FIFO is named `<channel>_0`).
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
        let (format, object) = match format {
            Some(format) => (format, object),
            None => sniffed(object)?,
        };
        match format {
            RowFormat::Csv => csv::read_object(object, columns, dialect, budget, &mut out.rows)?,
            RowFormat::JsonLines => jsonl::read_object(object, columns, budget, &mut out.rows)?,
            RowFormat::Parquet => parquet::read_object(object, columns, budget, &mut out.rows)?,
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

/// The format of an object no `ContentType` declares: by its name, except that what the name
/// takes for CSV but starts with Parquet's magic bytes is Parquet.
fn sniffed(object: InputObject) -> Result<(RowFormat, InputObject), DataError> {
    let by_name = RowFormat::from_name(&object.name);
    if by_name != RowFormat::Csv {
        return Ok((by_name, object));
    }
    let (head, rest) =
        super::stream::peek(object.reader, 4).map_err(|source| StorageError::Io {
            path: object.name.clone(),
            source,
        })?;
    let format = match parquet::is_parquet_magic(&head) {
        true => RowFormat::Parquet,
        false => RowFormat::Csv,
    };
    let reader = Box::new(std::io::Cursor::new(head).chain(rest));
    Ok((format, InputObject { reader, ..object }))
}

//! Parquet in, Parquet out: the input file's columns copied unchanged, predictions appended.
//!
//! Every column chunk of the input (nested columns too) is spliced into the output as its
//! encoded bytes, so values, types, encodings and compression stay exactly as the input wrote
//! them and nothing is decoded twice; only the prediction columns (`predicted_label` / `score`, or
//! `label_i` / `score_i`) are encoded here, row group by row group in the input's row groups.
//! The schema-describing key-value metadata that Arrow and pandas write (`ARROW:schema`,
//! `pandas`) is dropped, since it would not list the new columns; other key-value pairs are kept.

use ::parquet::basic::{Compression, LogicalType, Repetition, Type as PhysicalType};
use ::parquet::bloom_filter::Sbbf;
use ::parquet::column::writer::ColumnCloseResult;
use ::parquet::data_type::{ByteArray, ByteArrayType, FloatType};
use ::parquet::errors::{ParquetError, Result};
use ::parquet::file::metadata::{KeyValue, ParquetMetaDataReader};
use ::parquet::file::properties::WriterProperties;
use ::parquet::file::writer::SerializedFileWriter;
use ::parquet::schema::types::Type;
use std::fs::File;
use std::io::Write;
use std::sync::Arc;

/// Key-value metadata that describes the whole schema, which the added columns would contradict.
const SCHEMA_KEYS: [&str; 2] = ["ARROW:schema", "pandas"];

/// Writes `source`'s columns and `predictions` (per row, in file order: `(label, score)` per
/// rank; `names` holds a label and a score column name per rank) to `out`.
pub fn write(
    source: &File,
    names: &[String],
    predictions: &[Vec<(String, f32)>],
    out: impl Write + Send,
) -> Result<()> {
    let metadata = ParquetMetaDataReader::new().parse_and_finish(source)?;
    let file_metadata = metadata.file_metadata();
    let rows: i64 = metadata.row_groups().iter().map(|g| g.num_rows()).sum();
    if usize::try_from(rows).ok() != Some(predictions.len()) {
        return Err(ParquetError::General(format!(
            "the file holds {rows} rows but {} were predicted (did it change while txcat read it?)",
            predictions.len()
        )));
    }
    let root = file_metadata.schema_descr().root_schema();
    if let Some(taken) = root
        .get_fields()
        .iter()
        .find(|f| names.contains(&f.name().into()))
    {
        return Err(ParquetError::General(format!(
            "the input already has a column `{}`, which txcat's predictions would repeat; rename it",
            taken.name()
        )));
    }
    let mut fields = root.get_fields().to_vec();
    for (i, name) in names.iter().enumerate() {
        let column = match i % 2 {
            0 => Type::primitive_type_builder(name, PhysicalType::BYTE_ARRAY)
                .with_logical_type(Some(LogicalType::String)),
            _ => Type::primitive_type_builder(name, PhysicalType::FLOAT),
        };
        fields.push(Arc::new(
            column.with_repetition(Repetition::REQUIRED).build()?,
        ));
    }
    let schema = Arc::new(
        Type::group_type_builder(root.name())
            .with_fields(fields)
            .build()?,
    );
    let kept: Vec<KeyValue> = file_metadata
        .key_value_metadata()
        .into_iter()
        .flatten()
        .filter(|kv| !SCHEMA_KEYS.contains(&kv.key.as_str()))
        .cloned()
        .collect();
    let props = WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .set_key_value_metadata((!kept.is_empty()).then_some(kept))
        .build();
    let mut writer = SerializedFileWriter::new(out, schema, Arc::new(props))?;
    let mut first = 0usize;
    for group in metadata.row_groups() {
        let count = usize::try_from(group.num_rows()).unwrap_or(0);
        let mut group_out = writer.next_row_group()?;
        for column in group.columns() {
            let chunk = ColumnCloseResult {
                bytes_written: column.compressed_size() as u64,
                rows_written: count as u64,
                metadata: column.clone(),
                bloom_filter: Sbbf::read_from_column_chunk(column, source).ok().flatten(),
                column_index: None,
                offset_index: None,
            };
            group_out.append_column(source, chunk)?;
        }
        let group_rows = &predictions[first..first + count];
        for rank in 0..names.len() / 2 {
            let labels: Vec<ByteArray> = group_rows
                .iter()
                .map(|r| ByteArray::from(r[rank].0.as_str()))
                .collect();
            let mut column = group_out.next_column()?.ok_or_else(no_column)?;
            column
                .typed::<ByteArrayType>()
                .write_batch(&labels, None, None)?;
            column.close()?;
            let scores: Vec<f32> = group_rows.iter().map(|r| r[rank].1).collect();
            let mut column = group_out.next_column()?.ok_or_else(no_column)?;
            column
                .typed::<FloatType>()
                .write_batch(&scores, None, None)?;
            column.close()?;
        }
        group_out.close()?;
        first += count;
    }
    writer.close()?;
    Ok(())
}

fn no_column() -> ParquetError {
    ParquetError::General("the writer ran out of columns (a txcat bug)".into())
}

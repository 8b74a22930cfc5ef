//! Parquet files for tests, written with the parquet crate's own writer: chosen columns
//! dictionary-encoded, several row groups, nulls, a compression codec.

use ::parquet::basic::Compression;
use ::parquet::data_type::{ByteArray, ByteArrayType, DoubleType, Int32Type};
use ::parquet::file::properties::WriterProperties;
use ::parquet::file::reader::{FileReader, SerializedFileReader};
use ::parquet::file::writer::SerializedFileWriter;
use ::parquet::schema::parser::parse_message_type;
use ::parquet::schema::types::ColumnPath;
use std::sync::Arc;

/// One column's values (`None` is null); every column is `optional`.
pub enum Col {
    /// `binary (STRING)`: a string column (Arrow's string and large-string both write this).
    Str(Vec<Option<String>>),
    /// `binary` with no annotation (older writers' strings).
    Binary(Vec<Option<String>>),
    Int(Vec<Option<i32>>),
    Double(Vec<Option<f64>>),
}

impl Col {
    fn len(&self) -> usize {
        match self {
            Col::Str(v) | Col::Binary(v) => v.len(),
            Col::Int(v) => v.len(),
            Col::Double(v) => v.len(),
        }
    }

    fn schema(&self, name: &str) -> String {
        match self {
            Col::Str(_) => format!("optional binary {name} (STRING);"),
            Col::Binary(_) => format!("optional binary {name};"),
            Col::Int(_) => format!("optional int32 {name};"),
            Col::Double(_) => format!("optional double {name};"),
        }
    }
}

/// A Parquet file of `columns` (equal lengths), `rows_per_group` rows per row group, compressed
/// with `compression`; the columns named in `dictionary` are dictionary-encoded, others plain.
pub fn parquet_bytes(
    columns: &[(&str, Col)],
    rows_per_group: usize,
    compression: Compression,
    dictionary: &[&str],
) -> Vec<u8> {
    let rows = columns[0].1.len();
    assert!(
        columns.iter().all(|(_, c)| c.len() == rows),
        "ragged columns"
    );
    let fields: String = columns.iter().map(|(n, c)| c.schema(n)).collect();
    let schema =
        Arc::new(parse_message_type(&format!("message spark_schema {{ {fields} }}")).unwrap());
    let mut props = WriterProperties::builder()
        .set_compression(compression)
        .set_dictionary_enabled(false);
    for name in dictionary {
        props = props.set_column_dictionary_enabled(ColumnPath::from(*name), true);
    }
    let mut out = Vec::new();
    let mut writer = SerializedFileWriter::new(&mut out, schema, Arc::new(props.build())).unwrap();
    for start in (0..rows).step_by(rows_per_group) {
        let end = (start + rows_per_group).min(rows);
        let mut group = writer.next_row_group().unwrap();
        for (_, col) in columns {
            let mut column = group.next_column().unwrap().unwrap();
            fn split<T: Clone>(v: &[Option<T>]) -> (Vec<T>, Vec<i16>) {
                (
                    v.iter().flatten().cloned().collect(),
                    v.iter().map(|x| i16::from(x.is_some())).collect(),
                )
            }
            match col {
                Col::Str(v) | Col::Binary(v) => {
                    let (values, defs) = split(&v[start..end]);
                    let values: Vec<ByteArray> = values
                        .into_iter()
                        .map(|s| ByteArray::from(s.into_bytes()))
                        .collect();
                    column
                        .typed::<ByteArrayType>()
                        .write_batch(&values, Some(&defs), None)
                        .unwrap();
                }
                Col::Int(v) => {
                    let (values, defs) = split(&v[start..end]);
                    column
                        .typed::<Int32Type>()
                        .write_batch(&values, Some(&defs), None)
                        .unwrap();
                }
                Col::Double(v) => {
                    let (values, defs) = split(&v[start..end]);
                    column
                        .typed::<DoubleType>()
                        .write_batch(&values, Some(&defs), None)
                        .unwrap();
                }
            }
            column.close().unwrap();
        }
        group.close().unwrap();
    }
    writer.close().unwrap();
    out
}

/// `(row groups, whether column `name` is dictionary-encoded in every row group)` of a file, read
/// back with the parquet crate, to check a fixture is what a test says it is.
pub fn layout(bytes: &[u8], name: &str) -> (usize, bool) {
    let reader = SerializedFileReader::new(bytes::Bytes::from(bytes.to_vec())).unwrap();
    let groups = reader.metadata().row_groups();
    let dictionary = groups.iter().all(|g| {
        let column = g
            .columns()
            .iter()
            .find(|c| c.column_path().string() == name)
            .expect("column");
        column.dictionary_page_offset().is_some()
    });
    (groups.len(), dictionary)
}

//! Parquet objects -> `(text, label)` rows, read one row group at a time.
//!
//! The text and label columns are top-level columns named by `text_column` / `label_column`;
//! only those two are decoded. Text columns may be UTF-8 strings or plain binary (checked to be
//! UTF-8), dictionary-encoded or not; Arrow's string and large-string types are both stored as
//! Parquet `BYTE_ARRAY`, so both read the same. Integer, float and boolean values are used as the
//! text Python's `str()` gives them (what pandas then LabelEncoder would see: `3`, `2.5`, `True`).
//!
//! A Parquet reader starts at the footer, so it needs to seek: a local file is read in place and a
//! stream (an S3 object) is first copied to an unnamed temporary file (under `$TMPDIR`). A Pipe-mode
//! stream, or a file gzipped as a whole, is refused with what to do instead.
//!
//! Invariant: a null or empty value fails the job naming the file, row group and row, or (while
//! the shared [`BadRowBudget`] allows) is skipped and counted.

use super::rows::{BadRowBudget, Columns, Rows};
use super::DataError;
use crate::storage::{InputObject, StorageError};
use ::parquet::basic::{ConvertedType, LogicalType, Repetition, Type as PhysicalType};
use ::parquet::file::reader::{FileReader, SerializedFileReader};
use ::parquet::record::Field;
use ::parquet::schema::types::{Type, TypePtr};
use std::fs::File;
use std::io::{Read, Seek};
use std::sync::Arc;

const PARQUET_MAGIC: &[u8; 4] = b"PAR1";
const GZIP_MAGIC: &[u8; 2] = &[0x1f, 0x8b];

/// True when `head` (the first bytes of an object) is the start of a Parquet file.
pub fn is_parquet_magic(head: &[u8]) -> bool {
    head.starts_with(PARQUET_MAGIC)
}

/// Appends the rows of one object to `rows`.
pub fn read_object(
    object: InputObject,
    columns: &Columns,
    budget: &mut BadRowBudget,
    rows: &mut Rows,
) -> Result<(), DataError> {
    let name = object.name.clone();
    let reader = open(object)?;
    let parquet_error = |what: &str, e: ::parquet::errors::ParquetError| DataError::Parquet {
        file: name.clone(),
        problem: format!("{what}: {}", describe_error(&e)),
    };
    let schema = reader.metadata().file_metadata().schema_descr_ptr();
    let fields = schema.root_schema().get_fields();
    let text = find_column(&name, fields, &columns.text, "text_column")?;
    let label = find_column(&name, fields, &columns.label, "label_column")?;
    let mut projected = vec![Arc::clone(text)];
    if label.name() != text.name() {
        projected.push(Arc::clone(label));
    }
    let projection = Type::group_type_builder(schema.root_schema().name())
        .with_fields(projected)
        .build()
        .map_err(|e| parquet_error("cannot select the columns", e))?;

    let mut file_row = 0u64;
    for group in 0..reader.num_row_groups() {
        let group_reader = reader
            .get_row_group(group)
            .map_err(|e| parquet_error(&format!("cannot read row group {group}"), e))?;
        let iter = group_reader
            .get_row_iter(Some(projection.clone()))
            .map_err(|e| parquet_error(&format!("cannot read row group {group}"), e))?;
        for (in_group, row) in iter.enumerate() {
            let at = || {
                format!(
                    "{name}: row {file_row} (row group {group}, row {in_group}; counted from 0)"
                )
            };
            let row = row.map_err(|e| DataError::Parquet {
                file: name.clone(),
                problem: format!(
                    "cannot read row {file_row} (row group {group}, row {in_group}): {}",
                    describe_error(&e)
                ),
            })?;
            let value = |column: &str| {
                let field = row
                    .get_column_iter()
                    .find(|(n, _)| n.as_str() == column)
                    .map(|(_, f)| f)
                    .unwrap_or(&Field::Null);
                let text = as_text(field).map_err(|kind| format!("column `{column}` is {kind}"))?;
                if text.trim().is_empty() {
                    return Err(format!("column `{column}` is empty"));
                }
                Ok(text)
            };
            match value(&columns.text).and_then(|t| Ok((t, value(&columns.label)?))) {
                Ok((text, label)) => {
                    rows.texts.push(text);
                    rows.labels.push(label.trim().to_string());
                }
                Err(problem) => budget.skip_at(at(), problem)?,
            }
            file_row += 1;
        }
    }
    Ok(())
}

/// A seekable Parquet reader over `object`, after refusing what cannot be one.
fn open(object: InputObject) -> Result<SerializedFileReader<File>, DataError> {
    let name = object.name;
    if object.concatenated {
        return Err(DataError::ParquetInPipeMode { file: name });
    }
    let io = |source: std::io::Error| {
        DataError::Storage(StorageError::Io {
            path: name.clone(),
            source,
        })
    };
    let file = match &object.local_path {
        Some(path) => File::open(path).map_err(io)?,
        None => {
            let mut spool = tempfile::tempfile().map_err(io)?;
            let mut reader = object.reader;
            std::io::copy(&mut reader, &mut spool).map_err(io)?;
            spool
        }
    };
    open_file(&name, file)
}

/// A Parquet reader over the local `file` (shown as `name`), after refusing a gzipped or
/// non-Parquet file.
pub fn open_file(name: &str, mut file: File) -> Result<SerializedFileReader<File>, DataError> {
    let name = name.to_string();
    let io = |source: std::io::Error| {
        DataError::Storage(StorageError::Io {
            path: name.clone(),
            source,
        })
    };
    let mut head = Vec::with_capacity(4);
    file.rewind().map_err(io)?;
    (&mut file).take(4).read_to_end(&mut head).map_err(io)?;
    file.rewind().map_err(io)?;
    if head.starts_with(GZIP_MAGIC) {
        return Err(DataError::ParquetGzipped { file: name });
    }
    if !is_parquet_magic(&head) {
        return Err(DataError::Parquet {
            file: name,
            problem: "not a Parquet file (it does not start with PAR1); name CSV files .csv and JSON Lines files .jsonl, or fix the channel's ContentType".to_string(),
        });
    }
    SerializedFileReader::new(file).map_err(|e| DataError::Parquet {
        file: name.clone(),
        problem: format!(
            "cannot read the Parquet footer: {}; is the file complete?",
            describe_error(&e)
        ),
    })
}

/// The top-level column `name`, checked to be one txcat can read as text.
pub fn find_column<'a>(
    file: &str,
    fields: &'a [TypePtr],
    name: &str,
    key: &'static str,
) -> Result<&'a TypePtr, DataError> {
    let Some(field) = fields.iter().find(|f| f.name() == name) else {
        let names: Vec<&str> = fields.iter().map(|f| f.name()).collect();
        let hint = names
            .iter()
            .find(|n| n.to_lowercase() == name.to_lowercase())
            .map(|near| {
                format!(
                    "; did you mean `{}`? (names are case-sensitive)",
                    crate::text::printable(near)
                )
            })
            .unwrap_or_default();
        return Err(DataError::MissingColumn {
            file: file.to_string(),
            column: name.to_string(),
            key,
            found: crate::text::printable(&names.join(", ")),
            hint,
        });
    };
    match unreadable_kind(field) {
        None => Ok(field),
        Some(kind) => Err(DataError::ParquetColumnType {
            file: file.to_string(),
            column: name.to_string(),
            key,
            kind,
        }),
    }
}

/// What the column is when txcat cannot read it as text (nested, dates, decimals, ...).
fn unreadable_kind(field: &Type) -> Option<String> {
    if !field.is_primitive() {
        return Some("a nested column (a struct, list or map)".to_string());
    }
    let info = field.get_basic_info();
    if info.has_repetition() && info.repetition() == Repetition::REPEATED {
        return Some("a repeated (list) column".to_string());
    }
    let physical = field.get_physical_type();
    let converted = info.converted_type();
    let logical_ok = match info.logical_type_ref() {
        None => true,
        Some(logical) => matches!(
            logical,
            LogicalType::String
                | LogicalType::Enum
                | LogicalType::Json
                | LogicalType::Bson
                | LogicalType::Integer { .. }
        ),
    };
    let ok = logical_ok
        && match physical {
            PhysicalType::BOOLEAN | PhysicalType::FLOAT | PhysicalType::DOUBLE => true,
            PhysicalType::BYTE_ARRAY => matches!(
                converted,
                ConvertedType::NONE
                    | ConvertedType::UTF8
                    | ConvertedType::ENUM
                    | ConvertedType::JSON
                    | ConvertedType::BSON
            ),
            PhysicalType::INT32 | PhysicalType::INT64 => matches!(
                converted,
                ConvertedType::NONE
                    | ConvertedType::INT_8
                    | ConvertedType::INT_16
                    | ConvertedType::INT_32
                    | ConvertedType::INT_64
                    | ConvertedType::UINT_8
                    | ConvertedType::UINT_16
                    | ConvertedType::UINT_32
                    | ConvertedType::UINT_64
            ),
            PhysicalType::INT96 | PhysicalType::FIXED_LEN_BYTE_ARRAY => false,
        };
    match (ok, info.logical_type_ref()) {
        (true, _) => None,
        (false, Some(logical)) => Some(format!("{physical} ({logical:?})")),
        (false, None) if converted != ConvertedType::NONE => {
            Some(format!("{physical} ({converted})"))
        }
        (false, None) => Some(format!("{physical}")),
    }
}

/// A value as Python's `str()` writes it, or what kind of value it is instead.
pub fn as_text(field: &Field) -> Result<String, String> {
    Ok(match field {
        Field::Null => return Err("null".to_string()),
        Field::Str(s) => s.clone(),
        Field::Bytes(b) => std::str::from_utf8(b.data())
            .map_err(|e| format!("not valid UTF-8 (byte {})", e.valid_up_to()))?
            .to_string(),
        Field::Bool(true) => "True".to_string(),
        Field::Bool(false) => "False".to_string(),
        Field::Byte(x) => x.to_string(),
        Field::Short(x) => x.to_string(),
        Field::Int(x) => x.to_string(),
        Field::Long(x) => x.to_string(),
        Field::UByte(x) => x.to_string(),
        Field::UShort(x) => x.to_string(),
        Field::UInt(x) => x.to_string(),
        Field::ULong(x) => x.to_string(),
        Field::Float(x) => super::jsonl::python_float_digits(f64::from(*x), x.to_string()),
        Field::Double(x) => super::jsonl::python_float_digits(*x, x.to_string()),
        other => return Err(format!("`{other}`, not a string, number or boolean")),
    })
}

/// The parquet crate's message, with what to do for codecs this build leaves out.
pub fn describe_error(e: &::parquet::errors::ParquetError) -> String {
    let text = e.to_string();
    if text.contains("Disabled feature") || text.contains("not supported") {
        format!("{text} (txcat reads Parquet compressed with snappy, gzip or zstd, or uncompressed; rewrite the file with one of them)")
    } else {
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ::parquet::data_type::{ByteArray, ByteArrayType, Int64Type};
    use ::parquet::file::properties::WriterProperties;
    use ::parquet::file::writer::SerializedFileWriter;
    use ::parquet::schema::parser::parse_message_type;
    use std::io::Cursor;

    /// A file of `(text, label)` row groups; `None` text is null.
    fn file(groups: &[&[(Option<&str>, i64)]]) -> Vec<u8> {
        let schema = Arc::new(
            parse_message_type(
                "message m { optional binary text (UTF8); required int64 category; }",
            )
            .unwrap(),
        );
        let props = Arc::new(WriterProperties::builder().build());
        let mut out = Vec::new();
        let mut writer = SerializedFileWriter::new(&mut out, schema, props).unwrap();
        for group in groups {
            let mut rg = writer.next_row_group().unwrap();
            let mut col = rg.next_column().unwrap().unwrap();
            let values: Vec<ByteArray> = group
                .iter()
                .filter_map(|(t, _)| t.map(ByteArray::from))
                .collect();
            let defs: Vec<i16> = group.iter().map(|(t, _)| i16::from(t.is_some())).collect();
            col.typed::<ByteArrayType>()
                .write_batch(&values, Some(&defs), None)
                .unwrap();
            col.close().unwrap();
            let mut col = rg.next_column().unwrap().unwrap();
            let labels: Vec<i64> = group.iter().map(|(_, l)| *l).collect();
            col.typed::<Int64Type>()
                .write_batch(&labels, None, None)
                .unwrap();
            col.close().unwrap();
            rg.close().unwrap();
        }
        writer.close().unwrap();
        out
    }

    fn read(bytes: Vec<u8>, max_bad: usize, label: &str) -> Result<(Rows, usize), DataError> {
        let mut rows = Rows::default();
        let mut budget = BadRowBudget::new(max_bad);
        let object = InputObject {
            name: "f.parquet".into(),
            reader: Box::new(Cursor::new(bytes)),
            concatenated: false,
            local_path: None,
        };
        let columns = Columns {
            text: "text".into(),
            label: label.into(),
        };
        read_object(object, &columns, &mut budget, &mut rows)?;
        Ok((rows, budget.used))
    }

    #[test]
    fn row_groups_in_order_with_int_labels_as_text_and_nulls_counted() {
        let bytes = file(&[
            &[(Some("Costa"), 4000), (None, 5000)],
            &[(Some("TFL"), 5000)],
        ]);
        let err = read(bytes.clone(), 0, "category").unwrap_err().to_string();
        assert!(
            err.starts_with(
                "f.parquet: row 1 (row group 0, row 1; counted from 0): column `text` is null;"
            ),
            "{err}"
        );
        let (rows, skipped) = read(bytes, 1, "category").unwrap();
        assert_eq!(rows.texts, vec!["Costa", "TFL"]);
        assert_eq!(rows.labels, vec!["4000", "5000"]);
        assert_eq!(skipped, 1);
    }

    #[test]
    fn missing_column_names_the_columns_and_a_case_near_miss() {
        let bytes = file(&[&[(Some("a"), 1)]]);
        let err = read(bytes, 0, "Category").unwrap_err().to_string();
        assert!(
            err.contains("no column `Category`")
                && err.contains("(columns: text, category)")
                && err.contains("did you mean `category`"),
            "{err}"
        );
    }

    #[test]
    fn gzip_pipe_and_non_parquet_are_refused() {
        use std::io::Write;
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&file(&[&[(Some("a"), 1)]])).unwrap();
        let err = read(gz.finish().unwrap(), 0, "category").unwrap_err();
        assert!(matches!(err, DataError::ParquetGzipped { .. }), "{err}");
        let err = read(b"text,category\n".to_vec(), 0, "category").unwrap_err();
        assert!(err.to_string().contains("not a Parquet file"), "{err}");
        let object = InputObject {
            name: "train_0".into(),
            reader: Box::new(Cursor::new(file(&[&[(Some("a"), 1)]]))),
            concatenated: true,
            local_path: None,
        };
        let columns = Columns {
            text: "text".into(),
            label: "category".into(),
        };
        let err = read_object(
            object,
            &columns,
            &mut BadRowBudget::new(0),
            &mut Rows::default(),
        )
        .unwrap_err();
        assert!(err.to_string().contains("File or FastFile"), "{err}");
    }

    #[test]
    fn scalars_as_python_text() {
        assert_eq!(as_text(&Field::Bool(true)).unwrap(), "True");
        assert_eq!(as_text(&Field::Double(2.0)).unwrap(), "2.0");
        assert_eq!(as_text(&Field::Float(0.1)).unwrap(), "0.1");
        assert_eq!(as_text(&Field::Int(-3)).unwrap(), "-3");
        assert!(as_text(&Field::Date(3)).is_err());
    }
}

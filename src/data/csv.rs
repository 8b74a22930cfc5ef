//! CSV channel objects -> `(text, label)` rows.
//!
//! Accepts gzip (sniffed by magic bytes, multi-member), a UTF-8 BOM, CRLF or LF, RFC 4180 quoting
//! (commas and newlines inside quotes). A header row is required; the text and label columns are
//! found by name, other columns are ignored. Labels are trimmed; texts are kept as written.
//!
//! Invariant: a bad row (ragged, missing or empty field, invalid UTF-8) either fails the job with
//! `file:line` or, while the shared [`BadRowBudget`] allows, is skipped and counted.

use super::DataError;
use crate::storage::{InputObject, ObjectStream};
use std::io::{BufReader, Cursor, Read};

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

/// Reads every object of `stream` as CSV.
pub fn read_channel(
    channel: &str,
    stream: &mut dyn ObjectStream,
    columns: &Columns,
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
        read_object(object, columns, budget, &mut out.rows)?;
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

/// Appends the rows of one object to `rows`.
pub fn read_object(
    object: InputObject,
    columns: &Columns,
    budget: &mut BadRowBudget,
    rows: &mut Rows,
) -> Result<(), DataError> {
    let file = object.name;
    let reader = decoded(object.reader).map_err(|e| read_error(&file, 1, &e))?;
    let mut csv = ::csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_reader(reader);
    let mut record = ::csv::ByteRecord::new();

    let has_header = csv
        .read_byte_record(&mut record)
        .map_err(|e| read_error(&file, 1, &e))?;
    if !has_header {
        return Err(DataError::NoHeader { file });
    }
    let header: Vec<String> = match record
        .iter()
        .map(std::str::from_utf8)
        .collect::<Result<Vec<_>, _>>()
    {
        Ok(fields) => fields.iter().map(|f| f.trim().to_string()).collect(),
        Err(_) => return Err(DataError::HeaderNotUtf8 { file }),
    };
    let text_at = column_index(&file, &header, &columns.text, "text_column")?;
    let label_at = column_index(&file, &header, &columns.label, "label_column")?;

    loop {
        let line = csv.position().line();
        match csv.read_byte_record(&mut record) {
            Ok(true) => {}
            Ok(false) => break,
            Err(e) => return Err(read_error(&file, line, &e)),
        }
        let line = record.position().map_or(line, |p| p.line());
        if object.concatenated && is_header_repeat(&record, &header) {
            continue; // Pipe mode: the next file's header.
        }
        match parse_row(&record, header.len(), text_at, label_at, columns) {
            Ok((text, label)) => {
                rows.texts.push(text);
                rows.labels.push(label);
            }
            Err(problem) => {
                if budget.used >= budget.max {
                    return Err(DataError::BadRow {
                        file,
                        line,
                        problem,
                        max_bad_rows: budget.max,
                    });
                }
                budget.used += 1;
                tracing::warn!(file = %file, line, problem = %problem, "skipping bad row ({} of max_bad_rows={})", budget.used, budget.max);
            }
        }
    }
    Ok(())
}

fn read_error(file: &str, line: u64, error: &dyn std::fmt::Display) -> DataError {
    DataError::Read {
        file: file.to_string(),
        line,
        problem: format!("cannot read: {error}"),
    }
}

fn column_index(
    file: &str,
    header: &[String],
    name: &str,
    key: &'static str,
) -> Result<usize, DataError> {
    let mut hits = header.iter().enumerate().filter(|(_, h)| *h == name);
    match (hits.next(), hits.next()) {
        (Some((i, _)), None) => Ok(i),
        (Some(_), Some(_)) => Err(DataError::DuplicateColumn {
            file: file.to_string(),
            column: name.to_string(),
        }),
        (None, _) => Err(DataError::MissingColumn {
            file: file.to_string(),
            column: name.to_string(),
            key,
            found: crate::text::printable(&header.join(", ")),
        }),
    }
}

fn is_header_repeat(record: &::csv::ByteRecord, header: &[String]) -> bool {
    record.len() == header.len()
        && record
            .iter()
            .zip(header)
            .enumerate()
            .all(|(i, (field, name))| {
                let field = if i == 0 {
                    field.strip_prefix(BOM).unwrap_or(field)
                } else {
                    field
                };
                std::str::from_utf8(field).is_ok_and(|f| f.trim() == name)
            })
}

/// `(text, label)` of a data row, or what is wrong with it.
fn parse_row(
    record: &::csv::ByteRecord,
    width: usize,
    text_at: usize,
    label_at: usize,
    columns: &Columns,
) -> Result<(String, String), String> {
    if record.len() != width {
        return Err(format!(
            "the row has {} fields but the header has {width}",
            record.len()
        ));
    }
    let field = |at: usize, name: &str| -> Result<String, String> {
        let bytes = record.get(at).unwrap_or_default();
        std::str::from_utf8(bytes)
            .map(str::to_string)
            .map_err(|_| format!("column `{name}` is not valid UTF-8"))
    };
    let text = field(text_at, &columns.text)?;
    if text.trim().is_empty() {
        return Err(format!("column `{}` is empty", columns.text));
    }
    let label = field(label_at, &columns.label)?.trim().to_string();
    if label.is_empty() {
        return Err(format!("column `{}` is empty", columns.label));
    }
    Ok((text, label))
}

const GZIP_MAGIC: &[u8] = &[0x1f, 0x8b];
const BOM: &[u8] = &[0xef, 0xbb, 0xbf];

/// Reads up to `n` bytes (fewer only at end of stream), for sniffing without losing them.
fn peek(
    mut reader: Box<dyn Read + Send>,
    n: usize,
) -> std::io::Result<(Vec<u8>, Box<dyn Read + Send>)> {
    let mut head = Vec::with_capacity(n);
    (&mut reader).take(n as u64).read_to_end(&mut head)?;
    Ok((head, reader))
}

/// The object's bytes, gunzipped when they start with the gzip magic, without a leading BOM.
fn decoded(raw: Box<dyn Read + Send>) -> std::io::Result<Box<dyn Read + Send>> {
    let (head, rest) = peek(raw, GZIP_MAGIC.len())?;
    let is_gzip = head == GZIP_MAGIC;
    let joined: Box<dyn Read + Send> = Box::new(Cursor::new(head).chain(rest));
    let plain: Box<dyn Read + Send> = if is_gzip {
        Box::new(BufReader::new(flate2::read::MultiGzDecoder::new(joined)))
    } else {
        joined
    };
    let (head, rest) = peek(plain, BOM.len())?;
    let head = if head == BOM { Vec::new() } else { head };
    Ok(Box::new(Cursor::new(head).chain(rest)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn object(name: &str, bytes: Vec<u8>, concatenated: bool) -> InputObject {
        InputObject {
            name: name.into(),
            reader: Box::new(Cursor::new(bytes)),
            concatenated,
        }
    }

    fn cols() -> Columns {
        Columns {
            text: "text".into(),
            label: "category".into(),
        }
    }

    fn read(bytes: &[u8], max_bad: usize) -> Result<(Rows, usize), DataError> {
        let mut rows = Rows::default();
        let mut budget = BadRowBudget::new(max_bad);
        read_object(
            object("f.csv", bytes.to_vec(), false),
            &cols(),
            &mut budget,
            &mut rows,
        )?;
        Ok((rows, budget.used))
    }

    fn gzip(bytes: &[u8]) -> Vec<u8> {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        enc.write_all(bytes).unwrap();
        enc.finish().unwrap()
    }

    #[test]
    fn bom_crlf_quotes_and_extra_columns() {
        let data = "\u{feff}id,category,text\r\n1, Food ,\"Woolworths, Sandton\"\r\n2,Fuel,\"Engen\nline two\"\r\n";
        let (rows, skipped) = read(data.as_bytes(), 0).unwrap();
        assert_eq!(rows.texts, vec!["Woolworths, Sandton", "Engen\nline two"]);
        assert_eq!(rows.labels, vec!["Food", "Fuel"]);
        assert_eq!(skipped, 0);
    }

    #[test]
    fn gzip_is_sniffed_and_multi_member() {
        let mut bytes = gzip(b"text,category\na,X\n");
        bytes.extend(gzip(b"b,Y\n"));
        let (rows, _) = read(&bytes, 0).unwrap();
        assert_eq!(rows.labels, vec!["X", "Y"]);
    }

    #[test]
    fn bad_rows_fail_with_line_or_are_skipped_within_budget() {
        let data = b"text,category\nok,A\n,B\nragged,A,extra\nfine,\"\"\n\xff\xfe,A\nlast,B\n";
        let err = read(data, 0).unwrap_err().to_string();
        assert!(err.starts_with("f.csv:3: column `text` is empty"), "{err}");
        let err = read(data, 2).unwrap_err().to_string();
        assert!(
            err.starts_with("f.csv:5: column `category` is empty"),
            "{err}"
        );
        let (rows, skipped) = read(data, 4).unwrap();
        assert_eq!(skipped, 4);
        assert_eq!(rows.texts, vec!["ok", "last"]);
        let err = read(data, 3).unwrap_err().to_string();
        assert!(
            err.starts_with("f.csv:6: column `text` is not valid UTF-8"),
            "{err}"
        );
    }

    #[test]
    fn line_numbers_count_quoted_newlines() {
        let data = "text,category\n\"a\nb\nc\",A\n\"\",B\n";
        let err = read(data.as_bytes(), 0).unwrap_err().to_string();
        assert!(err.starts_with("f.csv:5:"), "{err}");
    }

    #[test]
    fn header_problems() {
        let err = read(b"description,label\nx,y\n", 0)
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "f.csv: no column `text` in the header (columns: description, label); set text_column to one of them"
        );
        assert!(matches!(read(b"", 0), Err(DataError::NoHeader { .. })));
        assert!(matches!(
            read(b"text,text,category\n", 0),
            Err(DataError::DuplicateColumn { .. })
        ));
    }

    #[test]
    fn repeated_header_skipped_only_when_concatenated() {
        let data = b"text,category\na,X\n\xef\xbb\xbftext,category\nb,Y\n".to_vec();
        let mut rows = Rows::default();
        let mut budget = BadRowBudget::new(0);
        read_object(
            object("pipe", data.clone(), true),
            &cols(),
            &mut budget,
            &mut rows,
        )
        .unwrap();
        assert_eq!(rows.texts, vec!["a", "b"]);
        let mut rows = Rows::default();
        read_object(object("file", data, false), &cols(), &mut budget, &mut rows).unwrap();
        assert_eq!(rows.labels, vec!["X", "category", "Y"]);
    }
}

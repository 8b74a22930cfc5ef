//! CSV channel objects -> `(text, label)` rows.
//!
//! Accepts gzip (sniffed by magic bytes, multi-member), the encodings and delimiters of
//! [`super::dialect`] (a BOM is accepted), CRLF or LF, RFC 4180 quoting (delimiters and newlines
//! inside quotes). A header row is required; the text and label columns are found by name, other
//! columns are ignored. Labels are trimmed; texts are kept as written.
//!
//! Invariant: a bad row (ragged, missing or empty field, invalid UTF-8) either fails the job with
//! `file:line` or, while the shared [`BadRowBudget`] allows, is skipped and counted.

use super::dialect::{self, Decision, Dialect};
use super::rows::{BadRowBudget, Columns, Rows};
use super::stream::gunzipped;
use super::DataError;
use crate::hyperparams::{CsvDelimiter, CsvEncoding, CSV_DELIMITERS};
use crate::storage::InputObject;

/// Appends the rows of one object to `rows`.
pub fn read_object(
    object: InputObject,
    columns: &Columns,
    dialect: &Dialect,
    budget: &mut BadRowBudget,
    rows: &mut Rows,
) -> Result<(), DataError> {
    let file = object.name;
    let open = |raw| {
        let (text, used) = dialect::transcode(gunzipped(raw)?, dialect.encoding)?;
        let (line, text) = dialect::header_line(text)?;
        Ok::<_, std::io::Error>((text, used, line))
    };
    let (reader, encoding_used, header_line) =
        open(object.reader).map_err(|e| read_error(&file, 1, &e))?;
    let crlf_shift = u64::from(header_line.crlf);
    let header_line = header_line.text;
    let delimiter = dialect::sniff_delimiter(dialect.delimiter, &header_line);
    if dialect.delimiter == CsvDelimiter::Auto && delimiter != b',' {
        tracing::info!(file = %file, delimiter = %dialect::delimiter_name(delimiter), "csv_delimiter=auto: delimiter from the header line");
    }
    let mut csv = ::csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .delimiter(delimiter)
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
    let find = |name: &str, key| {
        column_index(&file, &header, name, key)
            .map_err(|e| with_header_hints(e, &header, &header_line, delimiter, dialect.delimiter))
    };
    let text_at = find(&columns.text, "text_column")?;
    let label_at = find(&columns.label, "label_column")?;

    loop {
        let line = csv.position().line();
        match csv.read_byte_record(&mut record) {
            Ok(true) => {}
            Ok(false) => break,
            Err(e) => return Err(read_error(&file, line, &e)),
        }
        let line = record.position().map_or(line, |p| p.line() + crlf_shift);
        if object.concatenated && is_header_repeat(&record, &header) {
            continue; // Pipe mode: the next file's header.
        }
        match parse_row(
            &record,
            header.len(),
            (text_at, label_at),
            columns,
            dialect.encoding,
            crlf_shift,
        ) {
            Ok((text, label)) => {
                rows.texts.push(text);
                rows.labels.push(label);
            }
            Err(problem) => budget.skip(&file, line, problem)?,
        }
    }
    log_encoding(&file, encoding_used.decision());
    Ok(())
}

fn log_encoding(file: &str, decision: Option<Decision>) {
    match decision {
        Some(Decision::Windows1252 {
            first_non_utf8_byte,
        }) => {
            tracing::info!(file = %file, first_non_utf8_byte, "csv_encoding=auto: read as windows-1252")
        }
        Some(Decision::Utf16) => {
            tracing::info!(file = %file, "csv_encoding=auto: read as UTF-16 (BOM)")
        }
        Some(Decision::Utf8) => tracing::debug!(file = %file, "csv_encoding=auto: read as UTF-8"),
        None => {}
    }
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
            hint: String::new(),
        }),
    }
}

/// Adds to a missing-column error what would find the column: another delimiter (the header
/// split differently has it), or the same name in another case.
fn with_header_hints(
    error: DataError,
    header: &[String],
    line: &[u8],
    used: u8,
    choice: CsvDelimiter,
) -> DataError {
    let DataError::MissingColumn {
        file,
        column,
        key,
        found,
        ..
    } = error
    else {
        return error;
    };
    let other = CSV_DELIMITERS
        .iter()
        .copied()
        .filter(|&d| d != used)
        .find(|&d| dialect::split_header(line, d).contains(&column));
    let how = match choice {
        CsvDelimiter::Auto => "csv_delimiter=auto chose it",
        CsvDelimiter::Byte(_) => "from csv_delimiter",
    };
    let hint = if let Some(d) = other {
        format!(
            "; the header was split at `{}` ({how}), split at `{}` it has `{column}`: set csv_delimiter={}",
            dialect::delimiter_name(used),
            dialect::delimiter_name(d),
            dialect::delimiter_name(d),
        )
    } else if let Some(near) = header
        .iter()
        .find(|h| h.to_lowercase() == column.to_lowercase())
    {
        format!(
            "; did you mean `{}`? (names are case-sensitive)",
            crate::text::printable(near)
        )
    } else {
        String::new()
    };
    DataError::MissingColumn {
        file,
        column,
        key,
        found,
        hint,
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
    (text_at, label_at): (usize, usize),
    columns: &Columns,
    encoding: CsvEncoding,
    byte_shift: u64,
) -> Result<(String, String), String> {
    if record.len() != width {
        return Err(format!(
            "the row has {} fields but the header has {width}",
            record.len()
        ));
    }
    let field = |at: usize, name: &str| -> Result<String, String> {
        let bytes = record.get(at).unwrap_or_default();
        std::str::from_utf8(bytes).map(str::to_string).map_err(|e| {
            let byte = field_offset(record, at) + byte_shift + e.valid_up_to() as u64;
            let fix = match encoding {
                CsvEncoding::Utf8 => "set csv_encoding (windows-1252, latin-1, utf-16 or auto) to the file's encoding",
                _ => "the bytes are not valid in csv_encoding; set it to the file's encoding",
            };
            format!("column `{name}` is not valid UTF-8 (near byte {byte} of the file); {fix}")
        })
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

/// Where field `at` of `record` starts in the (decoded) file: exact for unquoted fields, a byte
/// or two early after quoted ones.
fn field_offset(record: &::csv::ByteRecord, at: usize) -> u64 {
    let start = record.position().map_or(0, |p| p.byte());
    let before: usize = (0..at)
        .map(|i| record.get(i).map_or(0, <[u8]>::len) + 1)
        .sum();
    start + before as u64
}

const BOM: &[u8] = &[0xef, 0xbb, 0xbf];

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Cursor, Write};

    fn object(name: &str, bytes: Vec<u8>, concatenated: bool) -> InputObject {
        InputObject {
            name: name.into(),
            reader: Box::new(Cursor::new(bytes)),
            concatenated,
            local_path: None,
        }
    }

    fn cols() -> Columns {
        Columns {
            text: "text".into(),
            label: "category".into(),
        }
    }

    fn read(bytes: &[u8], max_bad: usize) -> Result<(Rows, usize), DataError> {
        read_as(bytes, max_bad, Dialect::default())
    }

    fn read_as(bytes: &[u8], max_bad: usize, dialect: Dialect) -> Result<(Rows, usize), DataError> {
        let mut rows = Rows::default();
        let mut budget = BadRowBudget::new(max_bad);
        read_object(
            object("f.csv", bytes.to_vec(), false),
            &cols(),
            &dialect,
            &mut budget,
            &mut rows,
        )?;
        Ok((rows, budget.used))
    }

    fn encoding(encoding: CsvEncoding) -> Dialect {
        Dialect {
            encoding,
            ..Dialect::default()
        }
    }

    #[test]
    fn delimiters_are_sniffed_per_file_and_header_spaces_trimmed() {
        for data in [
            "TRANS DATE; text; category\n2024-01-02; Costa Coffee; Food\n",
            "TRANS DATE\ttext\tcategory\n2024-01-02\tCosta Coffee\tFood\n",
            "TRANS DATE|text|category\n2024-01-02|Costa Coffee|Food\n",
            "TRANS DATE,text,category\n\"2024;01;02\",Costa Coffee,Food\n",
        ] {
            let (rows, _) = read(data.as_bytes(), 0).unwrap();
            assert_eq!(rows.labels, vec!["Food"], "{data}");
            assert!(rows.texts[0].trim() == "Costa Coffee", "{data}");
        }
    }

    #[test]
    fn missing_column_says_which_delimiter_or_case_would_find_it() {
        let fixed = Dialect {
            delimiter: CsvDelimiter::Byte(b','),
            ..Dialect::default()
        };
        let err = read_as(b"id;text;category\n1;a;B\n", 0, fixed)
            .unwrap_err()
            .to_string();
        assert!(err.contains("split at `,` (from csv_delimiter), split at `;` it has `text`: set csv_delimiter=;"), "{err}");
        let err = read(b"id,Text,category\n1,a,B\n", 0)
            .unwrap_err()
            .to_string();
        assert!(
            err.ends_with("did you mean `Text`? (names are case-sensitive)"),
            "{err}"
        );
    }

    #[test]
    fn encodings_decode_and_utf8_errors_say_where_and_what_to_set() {
        let cp1252 = b"text;category\nTesco \x96 \xa35 off;Food\n";
        let (rows, _) = read_as(cp1252, 0, encoding(CsvEncoding::Windows1252)).unwrap();
        assert_eq!(rows.texts, vec!["Tesco – £5 off"]);
        let (rows, _) = read_as(cp1252, 0, encoding(CsvEncoding::Auto)).unwrap();
        assert_eq!(rows.texts, vec!["Tesco – £5 off"]);
        let err = read(cp1252, 0).unwrap_err().to_string();
        assert!(err.starts_with("f.csv:2: column `text` is not valid UTF-8 (near byte 20 of the file); set csv_encoding"), "{err}");
        let mut utf16 = vec![0xff, 0xfe];
        for u in "text\tcategory\r\nCafé\tFood\r\n".encode_utf16() {
            utf16.extend(u.to_le_bytes());
        }
        let (rows, _) = read_as(&utf16, 0, encoding(CsvEncoding::Utf16)).unwrap();
        assert_eq!(rows.texts, vec!["Café"]);
        let (rows, _) = read_as(&gzip(&utf16), 0, encoding(CsvEncoding::Auto)).unwrap();
        assert_eq!(rows.labels, vec!["Food"]);
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
    fn crlf_files_report_the_line_and_byte_an_editor_shows() {
        let data = b"text,category\r\nok,A\r\nalso ok,B\r\nbad \xa3,C\r\n";
        let err = read(data, 0).unwrap_err().to_string();
        assert!(
            err.starts_with("f.csv:4: column `text` is not valid UTF-8 (near byte 36 "),
            "{err}"
        );
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
            &Dialect::default(),
            &mut budget,
            &mut rows,
        )
        .unwrap();
        assert_eq!(rows.texts, vec!["a", "b"]);
        let mut rows = Rows::default();
        read_object(
            object("file", data, false),
            &cols(),
            &Dialect::default(),
            &mut budget,
            &mut rows,
        )
        .unwrap();
        assert_eq!(rows.labels, vec!["X", "category", "Y"]);
    }
}

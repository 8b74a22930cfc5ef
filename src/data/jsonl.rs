//! JSON Lines objects -> `(text, label)` rows: one JSON object per line, streamed a line at a time.
//!
//! The text and label fields are named by `text_column` / `label_column`. Strings are used as
//! they are; numbers and booleans as the text Python's `str()` gives them (what pandas then
//! LabelEncoder would see: `3`, `2.5`, `True`). Blank lines are skipped; a UTF-8 BOM on the first
//! line is accepted; gzip is sniffed like CSV.
//!
//! Invariant: a bad line (not JSON, not an object, a field missing, null, empty or nested) either
//! fails the job with `file:line` or, while the shared [`BadRowBudget`] allows, is skipped.

use super::rows::{BadRowBudget, Columns, Rows};
use super::stream::gunzipped;
use super::DataError;
use crate::storage::InputObject;
use std::io::BufRead;

/// Appends the rows of one object to `rows`.
pub fn read_object(
    object: InputObject,
    columns: &Columns,
    budget: &mut BadRowBudget,
    rows: &mut Rows,
) -> Result<(), DataError> {
    let file = object.name;
    let read_error = |line: u64, e: std::io::Error| DataError::Read {
        file: file.clone(),
        line,
        problem: format!("cannot read: {e}"),
    };
    let reader = gunzipped(object.reader).map_err(|e| read_error(1, e))?;
    let mut reader = std::io::BufReader::new(reader);
    let mut buf = Vec::new();
    let mut line = 0u64;
    loop {
        buf.clear();
        if reader
            .read_until(b'\n', &mut buf)
            .map_err(|e| read_error(line + 1, e))?
            == 0
        {
            break;
        }
        line += 1;
        let bytes = match line {
            1 => buf.strip_prefix(b"\xef\xbb\xbf").unwrap_or(&buf),
            _ => &buf[..],
        };
        if bytes.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        match parse_line(bytes, columns) {
            Ok((text, label)) => {
                rows.texts.push(text);
                rows.labels.push(label);
            }
            Err(_) if line == 1 && bytes.trim_ascii_start().starts_with(b"[") => {
                return Err(DataError::JsonArray { file });
            }
            Err(problem) => budget.skip(&file, line, problem)?,
        }
    }
    Ok(())
}

/// `(text, label)` of one line, or what is wrong with it.
fn parse_line(bytes: &[u8], columns: &Columns) -> Result<(String, String), String> {
    let text = std::str::from_utf8(bytes).map_err(|e| {
        format!(
            "the line is not valid UTF-8 (byte {} of the line); JSON Lines must be UTF-8",
            e.valid_up_to()
        )
    })?;
    let value: serde_json::Value =
        serde_json::from_str(text).map_err(|e| format!("not valid JSON ({e})"))?;
    let serde_json::Value::Object(map) = value else {
        return Err("the line is not a JSON object".to_string());
    };
    let field = |name: &str| -> Result<String, String> {
        let value = map
            .get(name)
            .ok_or_else(|| format!("no field `{name}` (fields: {})", field_names(&map)))?;
        let text = as_text(value).ok_or_else(|| {
            format!(
                "field `{name}` is {}, not a string, number or boolean",
                kind(value)
            )
        })?;
        if text.trim().is_empty() {
            return Err(format!("field `{name}` is empty"));
        }
        Ok(text)
    };
    let text = field(&columns.text)?;
    let label = field(&columns.label)?.trim().to_string();
    Ok((text, label))
}

/// A scalar as Python's `str()` writes it; `None` for null, arrays and objects.
pub fn as_text(value: &serde_json::Value) -> Option<String> {
    match value {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Bool(true) => Some("True".into()),
        serde_json::Value::Bool(false) => Some("False".into()),
        serde_json::Value::Number(n) if n.is_f64() => n.as_f64().map(python_float),
        serde_json::Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// Python's `repr(float)` for the values JSON can hold: shortest round-trip digits, and a `.0`
/// on whole numbers (Rust prints `3` where Python prints `3.0`).
fn python_float(x: f64) -> String {
    python_float_digits(x, x.to_string())
}

/// [`python_float`] of `x` whose shortest round-trip digits are `s` (for an `f32`, its own).
pub(super) fn python_float_digits(x: f64, s: String) -> String {
    if x.is_nan() {
        "nan".to_string()
    } else if x.is_finite() && x.fract() == 0.0 && x.abs() < 1e16 {
        format!("{s}.0")
    } else {
        s
    }
}

fn kind(value: &serde_json::Value) -> &'static str {
    match value {
        serde_json::Value::Null => "null",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
        _ => "a scalar",
    }
}

fn field_names(map: &serde_json::Map<String, serde_json::Value>) -> String {
    let names: Vec<&str> = map.keys().map(String::as_str).take(20).collect();
    crate::text::printable(&names.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    fn cols() -> Columns {
        Columns {
            text: "text".into(),
            label: "category".into(),
        }
    }

    fn read(bytes: &[u8], max_bad: usize) -> Result<(Rows, usize), DataError> {
        let mut rows = Rows::default();
        let mut budget = BadRowBudget::new(max_bad);
        let object = InputObject {
            name: "f.jsonl".into(),
            reader: Box::new(Cursor::new(bytes.to_vec())),
            concatenated: false,
            local_path: None,
        };
        read_object(object, &cols(), &mut budget, &mut rows)?;
        Ok((rows, budget.used))
    }

    #[test]
    fn objects_per_line_with_scalars_as_python_text() {
        let data = "\u{feff}{\"text\": \"Costa, Oxford\", \"category\": \" Food \", \"id\": 1}\r\n\n{\"category\": 7, \"text\": \"Tesco\"}\n{\"text\":\"x\",\"category\":2.0}\n{\"text\":\"y\",\"category\":true}";
        let (rows, skipped) = read(data.as_bytes(), 0).unwrap();
        assert_eq!(rows.texts, vec!["Costa, Oxford", "Tesco", "x", "y"]);
        assert_eq!(rows.labels, vec!["Food", "7", "2.0", "True"]);
        assert_eq!(skipped, 0);
    }

    #[test]
    fn bad_lines_fail_with_line_or_are_skipped_within_budget() {
        let data = b"{\"text\":\"a\",\"category\":\"A\"}\n{\"text\":\"b\"}\n[1]\n{\"text\":null,\"category\":\"A\"}\nnot json\n{\"text\":\"\xff\",\"category\":\"B\"}\n{\"text\":\"c\",\"category\":\"B\"}\n";
        let err = read(data, 0).unwrap_err().to_string();
        assert!(
            err.starts_with("f.jsonl:2: no field `category` (fields: text)"),
            "{err}"
        );
        let err = read(data, 2).unwrap_err().to_string();
        assert!(
            err.starts_with("f.jsonl:4: field `text` is null, not a string"),
            "{err}"
        );
        let err = read(data, 4).unwrap_err().to_string();
        assert!(
            err.starts_with("f.jsonl:6: the line is not valid UTF-8"),
            "{err}"
        );
        let (rows, skipped) = read(data, 5).unwrap();
        assert_eq!(
            (rows.texts, skipped),
            (vec!["a".to_string(), "c".to_string()], 5)
        );
    }

    #[test]
    fn a_json_array_file_says_to_write_json_lines() {
        let err = read(
            b"[{\"text\":\"a\",\"category\":\"A\"},\n{\"text\":\"b\",\"category\":\"B\"}]\n",
            9,
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.starts_with("f.jsonl:1: ") && err.contains("lines=True"),
            "{err}"
        );
    }

    #[test]
    fn python_float_text() {
        assert_eq!(python_float(2.0), "2.0");
        assert_eq!(python_float(2.5), "2.5");
        assert_eq!(python_float(-0.1), "-0.1");
    }
}

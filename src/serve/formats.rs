//! Request and response codecs of `/invocations`: which texts a body holds, and how predictions
//! are written for an `Accept` type. Pure functions over bytes, no I/O.
//!
//! Records: every format yields one record per text in input order. In the line formats
//! (`text/csv`, `application/jsonlines`, and `text/plain` in batch mode) every line is a record
//! (a final newline ends the last line, it does not start a new one; `\r\n` is accepted), and a
//! blank line is a blank record. Blank records (empty or whitespace-only texts) are never sent to
//! the model: they come back as an empty line, or `null` inside a JSON array, so a response has
//! exactly one record per input record.
//!
//! Responses: `application/json` is one array with an element per record (`{"label", "score"}`,
//! or a best-first list of them when `top_k` was asked for), except in batch transform, where
//! every format writes one line per record (SageMaker assembles a job's output by lines). Line
//! responses have no final newline: SageMaker's `AssembleWith=Line` adds one per response.

use crate::inference::Scored;

use super::errors::RequestError;

/// A body type `/invocations` reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InputFormat {
    /// `{"inputs": "text" | ["text", ...], "parameters": {"top_k": k}}`, as the Hugging Face
    /// inference toolkit takes it.
    Json,
    /// One text per line, or a header row naming an `inputs` or `text` column.
    Csv,
    /// One `{"inputs": "text"}` or `{"text": "text"}` object (or a JSON string) per line.
    JsonLines,
    /// The whole body is one text (one per line in batch transform).
    Text,
}

/// Content types accepted for requests.
pub const INPUT_TYPES: &str = "application/json, text/csv, application/jsonlines, text/plain";
/// Content types responses can be written in.
pub const OUTPUT_TYPES: &str = "application/json, application/jsonlines, text/csv";

/// The media type of a header value: the part before `;`, trimmed and lower-cased.
fn essence(value: &str) -> String {
    value
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase()
}

fn is_jsonlines(mime: &str) -> bool {
    matches!(
        mime,
        "application/jsonlines" | "application/jsonl" | "application/x-jsonlines"
    )
}

impl InputFormat {
    /// The format of a `Content-Type` header (415 when absent or unsupported).
    pub fn from_content_type(value: Option<&str>) -> Result<Self, RequestError> {
        let Some(value) = value.filter(|v| !v.trim().is_empty()) else {
            return Err(RequestError::UnsupportedMediaType(format!(
                "the request has no Content-Type; send one of {INPUT_TYPES}"
            )));
        };
        match essence(value).as_str() {
            "application/json" => Ok(Self::Json),
            "text/csv" => Ok(Self::Csv),
            "text/plain" => Ok(Self::Text),
            m if is_jsonlines(m) => Ok(Self::JsonLines),
            _ => Err(RequestError::UnsupportedMediaType(format!(
                "Content-Type {value:?} is not supported; send one of {INPUT_TYPES}"
            ))),
        }
    }
}

/// A response type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputFormat {
    Json,
    JsonLines,
    Csv,
}

impl OutputFormat {
    /// The format of one media type, `None` when it is not one txcat writes. Wildcards count:
    /// `*/*` is `default`, `application/*` JSON, `text/*` CSV.
    pub fn from_mime(mime: &str, default: OutputFormat) -> Option<Self> {
        match essence(mime).as_str() {
            "*/*" => Some(default),
            "application/json" | "application/*" => Some(Self::Json),
            "text/csv" | "text/*" => Some(Self::Csv),
            m if is_jsonlines(m) => Some(Self::JsonLines),
            _ => None,
        }
    }

    /// The best format an `Accept` header allows (highest `q` first, then header order);
    /// `default` when there is no header; 406 when nothing in it can be produced.
    pub fn negotiate(accept: Option<&str>, default: OutputFormat) -> Result<Self, RequestError> {
        let Some(accept) = accept.filter(|a| !a.trim().is_empty()) else {
            return Ok(default);
        };
        let mut choices: Vec<(f32, usize, &str)> = Vec::new();
        for (position, item) in accept.split(',').enumerate() {
            let mut parts = item.split(';');
            let mime = parts.next().unwrap_or("").trim();
            let q = parts
                .filter_map(|p| p.trim().strip_prefix("q="))
                .find_map(|q| q.trim().parse::<f32>().ok())
                .unwrap_or(1.0);
            if q > 0.0 && !mime.is_empty() {
                choices.push((q, position, mime));
            }
        }
        choices.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        choices
            .iter()
            .find_map(|(_, _, mime)| Self::from_mime(mime, default))
            .ok_or_else(|| {
                RequestError::NotAcceptable(format!(
                    "Accept {accept:?} names no type txcat can write; ask for one of {OUTPUT_TYPES}"
                ))
            })
    }

    /// The `Content-Type` of a response in this format.
    pub fn mime(self) -> &'static str {
        match self {
            Self::Json => "application/json",
            Self::JsonLines => "application/jsonlines",
            Self::Csv => "text/csv",
        }
    }
}

/// The texts of a request (blank records as `None`) and the `top_k` it asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parsed {
    pub records: Vec<Option<String>>,
    pub top_k: Option<usize>,
}

impl Parsed {
    /// Records that are not blank.
    pub fn texts(&self) -> usize {
        self.records.iter().filter(|r| r.is_some()).count()
    }
}

fn record(text: &str) -> Option<String> {
    (!text.trim().is_empty()).then(|| text.to_string())
}

/// The lines of a body: split on `\n`, a trailing `\r` dropped, no record after a final newline.
fn lines(text: &str) -> Vec<&str> {
    let body = text.strip_suffix('\n').unwrap_or(text);
    if text.is_empty() {
        return Vec::new();
    }
    body.split('\n')
        .map(|l| l.strip_suffix('\r').unwrap_or(l))
        .collect()
}

/// Reads the records of a body in `format`. `batch` (batch transform) reads `text/plain` by lines.
pub fn parse(format: InputFormat, body: &[u8], batch: bool) -> Result<Parsed, RequestError> {
    let text = std::str::from_utf8(body).map_err(|e| {
        RequestError::BadRequest(format!(
            "the body is not UTF-8 (invalid byte at offset {}); send UTF-8 text",
            e.valid_up_to()
        ))
    })?;
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    match format {
        InputFormat::Json => parse_json(text),
        InputFormat::Csv => parse_csv(text),
        InputFormat::JsonLines => parse_jsonlines(text),
        InputFormat::Text if batch => Ok(Parsed {
            records: lines(text).into_iter().map(record).collect(),
            top_k: None,
        }),
        InputFormat::Text => {
            let one = text.strip_suffix('\n').unwrap_or(text);
            let one = one.strip_suffix('\r').unwrap_or(one);
            Ok(Parsed {
                records: vec![record(one)],
                top_k: None,
            })
        }
    }
}

fn parse_json(text: &str) -> Result<Parsed, RequestError> {
    let value: serde_json::Value = serde_json::from_str(text).map_err(|e| {
        RequestError::BadRequest(format!(
            "the body is not valid JSON ({e}); send {{\"inputs\": \"text\"}} or {{\"inputs\": [\"text\", ...]}}"
        ))
    })?;
    let object = value.as_object().ok_or_else(|| {
        RequestError::BadRequest(format!(
            "expected a JSON object {{\"inputs\": ...}}, got {}",
            json_type(&value)
        ))
    })?;
    let inputs = object.get("inputs").ok_or_else(|| {
        RequestError::BadRequest(
            "the JSON object has no \"inputs\"; send {\"inputs\": \"text\"} or {\"inputs\": [\"text\", ...]}".into(),
        )
    })?;
    let records = match inputs {
        serde_json::Value::String(s) => vec![record(s)],
        serde_json::Value::Array(items) => items
            .iter()
            .enumerate()
            .map(|(i, item)| match item {
                serde_json::Value::String(s) => Ok(record(s)),
                other => Err(RequestError::BadRequest(format!(
                    "\"inputs\"[{i}] is {}; every input must be a string",
                    json_type(other)
                ))),
            })
            .collect::<Result<_, _>>()?,
        other => {
            return Err(RequestError::BadRequest(format!(
                "\"inputs\" is {}; it must be a string or a list of strings",
                json_type(other)
            )))
        }
    };
    let top_k = match object.get("parameters") {
        None | Some(serde_json::Value::Null) => None,
        Some(serde_json::Value::Object(p)) => match p.get("top_k") {
            None | Some(serde_json::Value::Null) => None,
            Some(k) => Some(top_k_value(k)?),
        },
        Some(other) => {
            return Err(RequestError::BadRequest(format!(
                "\"parameters\" is {}; it must be an object such as {{\"top_k\": 3}}",
                json_type(other)
            )))
        }
    };
    Ok(Parsed { records, top_k })
}

fn top_k_value(k: &serde_json::Value) -> Result<usize, RequestError> {
    k.as_u64()
        .filter(|&k| k >= 1)
        .map(|k| k as usize)
        .ok_or_else(|| {
            RequestError::BadRequest(format!(
                "\"parameters\".\"top_k\" is {k}; it must be a whole number >= 1"
            ))
        })
}

fn json_type(value: &serde_json::Value) -> &'static str {
    match value {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "a list",
        serde_json::Value::Object(_) => "an object",
    }
}

fn parse_jsonlines(text: &str) -> Result<Parsed, RequestError> {
    let mut records = Vec::new();
    for (i, line) in lines(text).into_iter().enumerate() {
        if line.trim().is_empty() {
            records.push(None);
            continue;
        }
        let bad = |what: String| {
            RequestError::BadRequest(format!(
                "line {}: {what}; each line must be {{\"inputs\": \"text\"}} or {{\"text\": \"text\"}}",
                i + 1
            ))
        };
        let value: serde_json::Value =
            serde_json::from_str(line).map_err(|e| bad(format!("not valid JSON ({e})")))?;
        let text = match &value {
            serde_json::Value::String(s) => s,
            serde_json::Value::Object(o) => match o.get("inputs").or_else(|| o.get("text")) {
                Some(serde_json::Value::String(s)) => s,
                Some(other) => return Err(bad(format!("the text is {}", json_type(other)))),
                None => return Err(bad("the object has no \"inputs\" or \"text\"".into())),
            },
            other => return Err(bad(format!("got {}", json_type(other)))),
        };
        records.push(record(text));
    }
    Ok(Parsed {
        records,
        top_k: None,
    })
}

/// One CSV line as fields (RFC 4180 quoting within the line).
fn csv_fields(line: &str) -> Result<Vec<String>, csv::Error> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_reader(line.as_bytes());
    match reader.records().next() {
        Some(record) => Ok(record?.iter().map(str::to_owned).collect()),
        None => Ok(Vec::new()),
    }
}

fn parse_csv(text: &str) -> Result<Parsed, RequestError> {
    let all = lines(text);
    let header_column = all.first().and_then(|first| {
        let fields = csv_fields(first).ok()?;
        let find = |name: &str| {
            fields
                .iter()
                .position(|f| f.trim().eq_ignore_ascii_case(name))
        };
        find("inputs")
            .or_else(|| find("text"))
            .map(|i| (i, fields.len()))
    });
    let mut records = Vec::with_capacity(all.len());
    match header_column {
        // Without a header a line is one text: commas are part of it (bank texts have them),
        // unless the line is a single quoted field.
        None => {
            for line in all {
                let text = match csv_fields(line) {
                    Ok(fields) if line.trim_start().starts_with('"') && fields.len() == 1 => {
                        fields.into_iter().next().unwrap_or_default()
                    }
                    _ => line.to_string(),
                };
                records.push(record(&text));
            }
        }
        Some((column, width)) => {
            for (i, line) in all.into_iter().enumerate().skip(1) {
                if line.trim().is_empty() {
                    records.push(None);
                    continue;
                }
                let fields = csv_fields(line).map_err(|e| {
                    RequestError::BadRequest(format!("line {}: not valid CSV ({e})", i + 1))
                })?;
                let text = fields.get(column).ok_or_else(|| {
                    RequestError::BadRequest(format!(
                        "line {}: {} fields, but the header has {width} and names the text column at position {}",
                        i + 1,
                        fields.len(),
                        column + 1
                    ))
                })?;
                records.push(record(text));
            }
        }
    }
    Ok(Parsed {
        records,
        top_k: None,
    })
}

/// `top_k=N` from SageMaker's `X-Amzn-SageMaker-Custom-Attributes` (`key=value` pairs split by
/// `,` or `;`), the way to ask for top_k with the formats that carry no parameters.
pub fn custom_attributes_top_k(value: &str) -> Result<Option<usize>, RequestError> {
    for pair in value.split([',', ';']) {
        if let Some((key, k)) = pair.split_once('=') {
            if key.trim().eq_ignore_ascii_case("top_k") {
                return k
                    .trim()
                    .parse::<usize>()
                    .ok()
                    .filter(|&k| k >= 1)
                    .map(Some)
                    .ok_or_else(|| {
                        RequestError::BadRequest(format!(
                            "custom attribute top_k={:?}: it must be a whole number >= 1",
                            k.trim()
                        ))
                    });
            }
        }
    }
    Ok(None)
}

/// The response body for `results` (one per record, `None` for blank ones).
pub fn render(
    format: OutputFormat,
    batch: bool,
    results: &[Option<Vec<Scored>>],
    labels: &[String],
    with_top_k: bool,
) -> Vec<u8> {
    let json = |best: &[Scored]| -> serde_json::Value {
        let one = |s: &Scored| {
            serde_json::json!({
                "label": labels[s.label],
                "score": s.score,
            })
        };
        if with_top_k {
            serde_json::Value::Array(best.iter().map(one).collect())
        } else {
            best.first().map(one).unwrap_or(serde_json::Value::Null)
        }
    };
    match format {
        OutputFormat::Json if !batch => {
            let array: Vec<serde_json::Value> = results
                .iter()
                .map(|r| r.as_deref().map_or(serde_json::Value::Null, json))
                .collect();
            serde_json::Value::Array(array).to_string().into_bytes()
        }
        OutputFormat::Json | OutputFormat::JsonLines => join_lines(results.iter().map(|r| {
            r.as_deref()
                .map(|b| json(b).to_string())
                .unwrap_or_default()
        })),
        OutputFormat::Csv => join_lines(results.iter().map(|r| {
            r.as_deref()
                .map(|best| {
                    let mut fields = Vec::with_capacity(best.len() * 2);
                    for s in best {
                        fields.push(labels[s.label].clone());
                        fields.push(s.score.to_string());
                    }
                    csv_line(&fields)
                })
                .unwrap_or_default()
        })),
    }
}

fn csv_line(fields: &[String]) -> String {
    let mut writer = csv::WriterBuilder::new()
        .terminator(csv::Terminator::Any(b'\n'))
        .from_writer(Vec::new());
    // Writing to a Vec cannot fail.
    let _ = writer.write_record(fields);
    let bytes = writer.into_inner().unwrap_or_default();
    String::from_utf8_lossy(&bytes)
        .trim_end_matches('\n')
        .to_string()
}

fn join_lines(lines: impl Iterator<Item = String>) -> Vec<u8> {
    lines.collect::<Vec<_>>().join("\n").into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(p: &Parsed) -> Vec<Option<&str>> {
        p.records.iter().map(|r| r.as_deref()).collect()
    }

    #[test]
    fn content_types_and_their_parameters() {
        assert_eq!(
            InputFormat::from_content_type(Some("application/json; charset=utf-8")).unwrap(),
            InputFormat::Json
        );
        assert_eq!(
            InputFormat::from_content_type(Some("TEXT/CSV")).unwrap(),
            InputFormat::Csv
        );
        assert_eq!(
            InputFormat::from_content_type(Some("application/jsonlines")).unwrap(),
            InputFormat::JsonLines
        );
        for bad in [None, Some(""), Some("application/x-npy"), Some("image/png")] {
            let e = InputFormat::from_content_type(bad).unwrap_err();
            assert_eq!(e.status(), 415, "{bad:?}");
        }
    }

    #[test]
    fn accept_negotiation_honours_q_and_wildcards() {
        let d = OutputFormat::Json;
        assert_eq!(OutputFormat::negotiate(None, d).unwrap(), d);
        assert_eq!(
            OutputFormat::negotiate(Some("*/*"), OutputFormat::Csv).unwrap(),
            OutputFormat::Csv
        );
        assert_eq!(
            OutputFormat::negotiate(Some("image/png, text/csv"), d).unwrap(),
            OutputFormat::Csv
        );
        assert_eq!(
            OutputFormat::negotiate(Some("application/json;q=0.5, application/jsonlines"), d)
                .unwrap(),
            OutputFormat::JsonLines
        );
        assert_eq!(
            OutputFormat::negotiate(Some("text/csv;q=0, application/json"), d).unwrap(),
            OutputFormat::Json
        );
        let e = OutputFormat::negotiate(Some("application/x-protobuf"), d).unwrap_err();
        assert_eq!(e.status(), 406);
    }

    #[test]
    fn json_inputs_string_list_and_top_k() {
        let p = parse(InputFormat::Json, br#"{"inputs": "shell 12"}"#, false).unwrap();
        assert_eq!(texts(&p), [Some("shell 12")]);
        assert_eq!(p.top_k, None);
        let p = parse(
            InputFormat::Json,
            br#"{"inputs": ["a", " ", "b"], "parameters": {"top_k": 2, "truncation": true}}"#,
            false,
        )
        .unwrap();
        assert_eq!(texts(&p), [Some("a"), None, Some("b")]);
        assert_eq!(p.top_k, Some(2));
        for bad in [
            &b"{"[..],
            b"[\"a\"]",
            b"{\"text\": \"a\"}",
            b"{\"inputs\": 3}",
            b"{\"inputs\": [\"a\", 1]}",
            b"{\"inputs\": \"a\", \"parameters\": {\"top_k\": 0}}",
            b"{\"inputs\": \"a\", \"parameters\": {\"top_k\": \"2\"}}",
            b"{\"inputs\": \"a\", \"parameters\": 2}",
            b"\xff\xfe",
        ] {
            let e = parse(InputFormat::Json, bad, false).unwrap_err();
            assert_eq!(e.status(), 400, "{}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn csv_plain_lines_keep_commas_and_blank_lines() {
        let p = parse(
            InputFormat::Csv,
            b"woolworths, pos purchase\r\n\n\"spar \"\"x\"\"\"\nsalary\n",
            false,
        )
        .unwrap();
        assert_eq!(
            texts(&p),
            [
                Some("woolworths, pos purchase"),
                None,
                Some("spar \"x\""),
                Some("salary")
            ]
        );
        assert!(parse(InputFormat::Csv, b"", false)
            .unwrap()
            .records
            .is_empty());
    }

    #[test]
    fn csv_header_picks_the_inputs_or_text_column() {
        let p = parse(
            InputFormat::Csv,
            b"id,Text,amount\n1,\"fee, monthly\",3\n\n2,shell,4",
            false,
        )
        .unwrap();
        assert_eq!(texts(&p), [Some("fee, monthly"), None, Some("shell")]);
        let p = parse(InputFormat::Csv, b"text,inputs\nx,y\n", false).unwrap();
        assert_eq!(texts(&p), [Some("y")], "inputs wins over text");
        let e = parse(InputFormat::Csv, b"id,text\n1\n", false).unwrap_err();
        assert!(e.message().contains("line 2"), "{}", e.message());
    }

    #[test]
    fn jsonlines_objects_strings_and_blank_lines() {
        let p = parse(
            InputFormat::JsonLines,
            b"{\"inputs\": \"a\"}\n\n{\"text\": \"b\"}\n\"c\"\n",
            false,
        )
        .unwrap();
        assert_eq!(texts(&p), [Some("a"), None, Some("b"), Some("c")]);
        let e = parse(
            InputFormat::JsonLines,
            b"{\"inputs\": \"a\"}\n{\"x\": 1}",
            false,
        )
        .unwrap_err();
        assert!(e.message().starts_with("line 2"), "{}", e.message());
    }

    #[test]
    fn plain_text_is_one_text_except_in_batch() {
        let p = parse(InputFormat::Text, b"a\nb\n", false).unwrap();
        assert_eq!(texts(&p), [Some("a\nb")]);
        let p = parse(InputFormat::Text, b"a\n\nb\n", true).unwrap();
        assert_eq!(texts(&p), [Some("a"), None, Some("b")]);
    }

    #[test]
    fn custom_attribute_top_k() {
        assert_eq!(custom_attributes_top_k("x=1, top_k=3").unwrap(), Some(3));
        assert_eq!(custom_attributes_top_k("trace=on").unwrap(), None);
        assert_eq!(
            custom_attributes_top_k("top_k=zero").unwrap_err().status(),
            400
        );
    }

    fn sample() -> (Vec<Option<Vec<Scored>>>, Vec<String>) {
        let labels = vec!["FEES".to_string(), "A,B".to_string()];
        let results = vec![
            Some(vec![
                Scored {
                    label: 1,
                    score: 0.75,
                },
                Scored {
                    label: 0,
                    score: 0.25,
                },
            ]),
            None,
            Some(vec![
                Scored {
                    label: 0,
                    score: 0.5,
                },
                Scored {
                    label: 1,
                    score: 0.5,
                },
            ]),
        ];
        (results, labels)
    }

    #[test]
    fn responses_in_every_format() {
        let (results, labels) = sample();
        let body = |f, batch, k| String::from_utf8(render(f, batch, &results, &labels, k)).unwrap();
        let json: serde_json::Value =
            serde_json::from_str(&body(OutputFormat::Json, false, false)).unwrap();
        assert_eq!(
            json,
            serde_json::json!([{"label": "A,B", "score": 0.75}, null, {"label": "FEES", "score": 0.5}])
        );
        let json: serde_json::Value =
            serde_json::from_str(&body(OutputFormat::Json, false, true)).unwrap();
        assert_eq!(json[0][1]["label"], "FEES");
        assert_eq!(json[2].as_array().unwrap().len(), 2);
        // Line formats: one line per record, blank for blank, no final newline.
        for (format, batch) in [
            (OutputFormat::JsonLines, false),
            (OutputFormat::Json, true),
            (OutputFormat::Csv, false),
        ] {
            let text = body(format, batch, false);
            let lines: Vec<&str> = text.split('\n').collect();
            assert_eq!(lines.len(), 3, "{format:?}: {text:?}");
            assert_eq!(lines[1], "");
        }
        assert_eq!(
            body(OutputFormat::Csv, false, true),
            "\"A,B\",0.75,FEES,0.25\n\nFEES,0.5,\"A,B\",0.5"
        );
    }
}

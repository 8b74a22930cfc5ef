//! Which row format a channel's objects are in: declared by the channel's `ContentType`, else
//! implied by each object's name, else CSV.

/// A row format txcat reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RowFormat {
    Csv,
    /// One JSON object per line.
    JsonLines,
    /// Apache Parquet (needs a seekable file, so never Pipe mode; never gzipped as a whole).
    Parquet,
}

/// `ContentType` values accepted in `inputdataconfig.json`, for error messages.
pub const CONTENT_TYPES: &str =
    "text/csv, application/jsonlines (or application/json-lines, application/x-jsonlines), application/x-parquet";

impl RowFormat {
    /// The format a channel's `ContentType` declares (parameters such as `; charset=utf-8` and
    /// case are ignored); `Err` names the value when txcat cannot read it.
    pub fn from_content_type(content_type: &str) -> Result<Self, String> {
        let essence = content_type
            .split(';')
            .next()
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase();
        match essence.as_str() {
            "text/csv" | "text/x-csv" | "application/csv" => Ok(RowFormat::Csv),
            "application/jsonlines"
            | "application/json-lines"
            | "application/x-jsonlines"
            | "application/jsonl"
            | "application/x-ndjson" => Ok(RowFormat::JsonLines),
            "application/x-parquet" | "application/parquet" | "application/vnd.apache.parquet" => {
                Ok(RowFormat::Parquet)
            }
            _ => Err(content_type.to_string()),
        }
    }

    /// The format a file name implies: `.jsonl`, `.ndjson`, `.json` (each optionally `.gz`) are
    /// JSON Lines; `.parquet` (and `.parquet.gz`, which the Parquet reader then refuses with a
    /// message) is Parquet; anything else is CSV.
    pub fn from_name(name: &str) -> Self {
        let lower = name.to_ascii_lowercase();
        let stem = lower.strip_suffix(".gz").unwrap_or(&lower);
        if stem.ends_with(".parquet") {
            RowFormat::Parquet
        } else if [".jsonl", ".ndjson", ".json"]
            .iter()
            .any(|ext| stem.ends_with(ext))
        {
            RowFormat::JsonLines
        } else {
            RowFormat::Csv
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_types_and_names() {
        for ct in ["text/csv", "TEXT/CSV; charset=utf-8"] {
            assert_eq!(RowFormat::from_content_type(ct), Ok(RowFormat::Csv));
        }
        for ct in [
            "application/jsonlines",
            "application/json-lines",
            "application/x-jsonlines",
        ] {
            assert_eq!(RowFormat::from_content_type(ct), Ok(RowFormat::JsonLines));
        }
        assert_eq!(
            RowFormat::from_content_type("application/x-recordio-protobuf"),
            Err("application/x-recordio-protobuf".to_string())
        );
        assert_eq!(
            RowFormat::from_name("s3://b/k/part-0.JSONL.gz"),
            RowFormat::JsonLines
        );
        assert_eq!(RowFormat::from_name("a.json"), RowFormat::JsonLines);
        assert_eq!(RowFormat::from_name("a.csv.gz"), RowFormat::Csv);
        assert_eq!(
            RowFormat::from_name("part-0.snappy.PARQUET"),
            RowFormat::Parquet
        );
        assert_eq!(RowFormat::from_name("a.parquet.gz"), RowFormat::Parquet);
        assert_eq!(
            RowFormat::from_content_type("application/x-parquet"),
            Ok(RowFormat::Parquet)
        );
        assert_eq!(
            RowFormat::from_name("/opt/ml/input/data/train_0"),
            RowFormat::Csv
        );
    }
}

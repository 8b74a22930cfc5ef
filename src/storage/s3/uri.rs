//! `s3://bucket/key` parsing and the key rules shared by channels and model downloads: which
//! keys are data (hidden parts, `_SUCCESS`-style markers and "directory" keys are not) and how
//! a key maps to a relative local path without ever escaping the destination directory.

use crate::storage::StorageError;
use std::path::PathBuf;

/// A parsed `s3://bucket/key-or-prefix` URI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Uri {
    /// Bucket name (never empty).
    pub bucket: String,
    /// Key or prefix (may be empty: the whole bucket).
    pub key: String,
}

impl S3Uri {
    /// Parses `s3://bucket/key`; the key may be empty or end with `/`.
    pub fn parse(uri: &str) -> Result<Self, StorageError> {
        let bad = |reason: &str| StorageError::BadUri {
            uri: uri.to_string(),
            reason: reason.to_string(),
        };
        let rest = uri
            .strip_prefix("s3://")
            .ok_or_else(|| bad("it does not start with s3://"))?;
        let (bucket, key) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(bad("the bucket name is empty"));
        }
        // Bucket names are 3-63 of [a-z0-9.-]; reject obvious typos (spaces, uppercase, `?`)
        // early instead of sending them to the service.
        let valid_bucket_char =
            |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || "-._".contains(c);
        if !bucket.chars().all(valid_bucket_char) {
            return Err(bad(
                "the bucket name may only hold lowercase letters, digits, '.', '-' and '_'",
            ));
        }
        Ok(Self {
            bucket: bucket.to_string(),
            key: key.to_string(),
        })
    }

    /// The URI of another key in the same bucket.
    pub fn with_key(&self, key: &str) -> String {
        format!("s3://{}/{}", self.bucket, key)
    }

    /// The prefix to list when this URI names a "folder": the key with a trailing `/` (empty for
    /// the whole bucket), so `s3://b/train` never picks up `s3://b/training-old/x.csv`.
    pub fn folder_prefix(&self) -> String {
        if self.key.is_empty() || self.key.ends_with('/') {
            self.key.clone()
        } else {
            format!("{}/", self.key)
        }
    }
}

impl std::fmt::Display for S3Uri {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "s3://{}/{}", self.bucket, self.key)
    }
}

/// True when `uri` is an `s3://` URI (the job layer's switch between local paths and S3).
pub fn is_s3_uri(uri: &str) -> bool {
    uri.starts_with("s3://")
}

/// True for keys that are data under `prefix`: not a "directory" key (trailing `/`), no part of
/// the path below the prefix hidden (`.`-prefixed) or a Hadoop/Spark-style marker (`_`-prefixed
/// such as `_SUCCESS`, `_committed_*`; `*_$folder$`).
pub fn is_data_key(prefix: &str, key: &str) -> bool {
    if key.ends_with('/') {
        return false;
    }
    let relative = key.strip_prefix(prefix).unwrap_or(key);
    !relative
        .split('/')
        .any(|part| part.starts_with('.') || part.starts_with('_') || part.ends_with("_$folder$"))
}

/// The local relative path for `key` listed under `prefix`, or an error when it would land
/// outside the destination (`..` parts, an absolute path, a NUL byte).
pub fn safe_relative_path(uri: &str, prefix: &str, key: &str) -> Result<PathBuf, StorageError> {
    let relative = key.strip_prefix(prefix).unwrap_or(key);
    let unsafe_key = || StorageError::UnsafeKey {
        uri: uri.to_string(),
        key: key.to_string(),
    };
    if relative.starts_with('/') || relative.contains('\0') || relative.contains('\\') {
        return Err(unsafe_key());
    }
    let mut path = PathBuf::new();
    for part in relative.split('/') {
        match part {
            ".." => return Err(unsafe_key()),
            "" | "." => continue,
            _ => path.push(part),
        }
    }
    if path.as_os_str().is_empty() {
        return Err(unsafe_key());
    }
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_bucket_and_key() {
        let uri = S3Uri::parse("s3://my-bucket/data/train/").unwrap();
        assert_eq!(uri.bucket, "my-bucket");
        assert_eq!(uri.key, "data/train/");
        assert_eq!(uri.folder_prefix(), "data/train/");
        let bare = S3Uri::parse("s3://my-bucket").unwrap();
        assert_eq!(bare.key, "");
        assert_eq!(bare.folder_prefix(), "");
        assert_eq!(S3Uri::parse("s3://b1/x").unwrap().folder_prefix(), "x/");
    }

    #[test]
    fn rejects_malformed_uris_with_the_uri_in_the_message() {
        for bad in [
            "/local/path",
            "s3://",
            "s3:///key",
            "s3://My Bucket/k",
            "https://b/k",
        ] {
            let err = S3Uri::parse(bad).unwrap_err().to_string();
            assert!(err.contains(bad), "{err}");
        }
    }

    #[test]
    fn markers_hidden_and_directory_keys_are_not_data() {
        let p = "data/";
        assert!(is_data_key(p, "data/a.csv"));
        assert!(is_data_key(p, "data/sub/b.csv.gz"));
        assert!(!is_data_key(p, "data/_SUCCESS"));
        assert!(!is_data_key(p, "data/.hidden.csv"));
        assert!(!is_data_key(p, "data/.tmp/a.csv"));
        assert!(!is_data_key(p, "data/sub/"));
        assert!(!is_data_key(p, "data/sub_$folder$"));
        // A hidden part above the listed prefix is the user's choice, not a marker.
        assert!(is_data_key(".staging/", ".staging/a.csv"));
    }

    #[test]
    fn relative_paths_never_escape() {
        let ok = safe_relative_path("s3://b/m/", "m/", "m/sub/config.json").unwrap();
        assert_eq!(ok, PathBuf::from("sub/config.json"));
        assert_eq!(
            safe_relative_path("u", "m/", "m/a//b").unwrap(),
            PathBuf::from("a/b")
        );
        for key in ["m/../x", "m/a/../../x", "m//etc/passwd", "m/..", "m/"] {
            let err = safe_relative_path("s3://b/m/", "m/", key)
                .unwrap_err()
                .to_string();
            assert!(err.contains(key), "{key}: {err}");
        }
    }
}

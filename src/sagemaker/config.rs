//! The JSON files SageMaker writes into `input/config`: hyperparameters (raw strings),
//! channels (`inputdataconfig.json`) and hosts (`resourceconfig.json`).
//!
//! Invariant: this module only parses; typed hyperparameters are built in `crate::hyperparams`,
//! and deciding which channel feeds what happens in `crate::job`.

use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::Path;

/// Failures reading the contract's configuration files.
#[derive(Debug, thiserror::Error)]
pub enum ContractError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not valid JSON ({source}); SageMaker writes a JSON object here, fix or remove the file")]
    Json {
        path: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("{path}: {problem}")]
    Shape { path: String, problem: String },
}

/// Reads a config file, `None` when it does not exist.
fn read_optional(path: &Path) -> Result<Option<String>, ContractError> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(Some(text)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(ContractError::Io {
            path: path.display().to_string(),
            source,
        }),
    }
}

fn parse_json<T: serde::de::DeserializeOwned>(path: &Path, text: &str) -> Result<T, ContractError> {
    serde_json::from_str(text).map_err(|source| ContractError::Json {
        path: path.display().to_string(),
        source,
    })
}

/// `hyperparameters.json` as `(key, raw value)` pairs in file order of keys (sorted).
///
/// SageMaker writes string values only; a hand-written file with numbers or booleans is accepted
/// too (the value's JSON text is kept, which decodes the same way). A missing file means no
/// hyperparameters (local runs).
pub fn read_hyperparameters(path: &Path) -> Result<Vec<(String, String)>, ContractError> {
    let Some(text) = read_optional(path)? else {
        tracing::info!(path = %path.display(), "no hyperparameters.json; using defaults and --hp");
        return Ok(Vec::new());
    };
    let map: BTreeMap<String, serde_json::Value> = parse_json(path, &text)?;
    map.into_iter()
        .map(|(key, value)| match value {
            serde_json::Value::String(s) => Ok((key, s)),
            serde_json::Value::Number(_) | serde_json::Value::Bool(_) => {
                Ok((key, value.to_string()))
            }
            other => Err(ContractError::Shape {
                path: path.display().to_string(),
                problem: format!(
                    "hyperparameter `{key}` is {other}; values must be strings, numbers or booleans"
                ),
            }),
        })
        .collect()
}

/// How SageMaker delivers a channel's data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
pub enum InputMode {
    /// Copied to `input/data/<channel>` before start.
    File,
    /// Mounted at `input/data/<channel>`, streamed on access.
    FastFile,
    /// FIFOs `input/data/<channel>_<epoch>`.
    Pipe,
}

/// One entry of `inputdataconfig.json` (unknown fields are ignored).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ChannelConfig {
    /// `File` when absent (SageMaker local mode writes `File` anyway).
    #[serde(default = "default_mode")]
    pub training_input_mode: InputMode,
    #[serde(default)]
    pub content_type: Option<String>,
    #[serde(default)]
    pub s3_distribution_type: Option<String>,
    #[serde(default)]
    pub record_wrapper_type: Option<String>,
    #[serde(default)]
    pub compression_type: Option<String>,
}

fn default_mode() -> InputMode {
    InputMode::File
}

/// Channel name -> settings; `None` when the file does not exist (local runs).
pub fn read_input_data_config(
    path: &Path,
) -> Result<Option<BTreeMap<String, ChannelConfig>>, ContractError> {
    let Some(text) = read_optional(path)? else {
        return Ok(None);
    };
    let map: BTreeMap<String, ChannelConfig> = parse_json(path, &text)?;
    for (name, config) in &map {
        if name.is_empty() || name.contains(['/', '\\']) {
            return Err(ContractError::Shape {
                path: path.display().to_string(),
                problem: format!("channel name `{name}` is not a valid SageMaker channel name"),
            });
        }
        if config.record_wrapper_type.as_deref() == Some("RecordIO") {
            return Err(ContractError::Shape {
                path: path.display().to_string(),
                problem: format!(
                    "channel `{name}` uses RecordWrapperType RecordIO; txcat reads plain CSV, set it to None"
                ),
            });
        }
    }
    Ok(Some(map))
}

/// `resourceconfig.json`: the hosts of the job (logged now, used by multi-host training later).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, serde::Serialize)]
pub struct ResourceConfig {
    pub current_host: String,
    /// Sorted lexicographically by SageMaker; use the index, not the digits.
    pub hosts: Vec<String>,
    #[serde(default)]
    pub network_interface_name: Option<String>,
    #[serde(default)]
    pub current_instance_type: Option<String>,
    /// The toolkit reads `current_group_name`; its offline stub writes `current_instance_group`.
    #[serde(default, alias = "current_instance_group")]
    pub current_group_name: Option<String>,
}

impl ResourceConfig {
    /// The configuration of a single-host job, used when the file is absent.
    pub fn single_host() -> Self {
        Self {
            current_host: "algo-1".into(),
            hosts: vec!["algo-1".into()],
            network_interface_name: None,
            current_instance_type: None,
            current_group_name: None,
        }
    }

    /// Index of this host in `hosts` (its node rank).
    pub fn host_rank(&self) -> Option<usize> {
        self.hosts.iter().position(|h| *h == self.current_host)
    }
}

/// Reads `resourceconfig.json`; `None` when absent.
pub fn read_resource_config(path: &Path) -> Result<Option<ResourceConfig>, ContractError> {
    let Some(text) = read_optional(path)? else {
        return Ok(None);
    };
    let config: ResourceConfig = parse_json(path, &text)?;
    if config.host_rank().is_none() {
        return Err(ContractError::Shape {
            path: path.display().to_string(),
            problem: format!(
                "current_host `{}` is not in hosts {:?}",
                config.current_host, config.hosts
            ),
        });
    }
    Ok(Some(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &tempfile::TempDir, name: &str, text: &str) -> std::path::PathBuf {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn hyperparameters_keep_raw_strings_and_number_text() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(
            &dir,
            "hp.json",
            r#"{"epochs": "3", "model_name": "\"x\"", "fp16": true}"#,
        );
        let hp = read_hyperparameters(&path).unwrap();
        assert_eq!(
            hp,
            vec![
                ("epochs".to_string(), "3".to_string()),
                ("fp16".to_string(), "true".to_string()),
                ("model_name".to_string(), "\"x\"".to_string()),
            ]
        );
        assert!(read_hyperparameters(&dir.path().join("absent"))
            .unwrap()
            .is_empty());
        let bad = write(&dir, "bad.json", r#"{"a": [1]}"#);
        assert!(read_hyperparameters(&bad)
            .unwrap_err()
            .to_string()
            .contains("`a`"));
    }

    #[test]
    fn input_data_config_modes() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(
            &dir,
            "idc.json",
            r#"{"train": {"ContentType": "text/csv", "TrainingInputMode": "Pipe", "S3DistributionType": "FullyReplicated", "RecordWrapperType": "None"}, "test": {}}"#,
        );
        let cfg = read_input_data_config(&path).unwrap().unwrap();
        assert_eq!(cfg["train"].training_input_mode, InputMode::Pipe);
        assert_eq!(cfg["train"].content_type.as_deref(), Some("text/csv"));
        assert_eq!(cfg["test"].training_input_mode, InputMode::File);
    }

    #[test]
    fn resource_config_rank_and_group_alias() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(
            &dir,
            "rc.json",
            r#"{"current_host": "algo-2", "hosts": ["algo-1", "algo-2"], "current_instance_group": "g"}"#,
        );
        let rc = read_resource_config(&path).unwrap().unwrap();
        assert_eq!(rc.host_rank(), Some(1));
        assert_eq!(rc.current_group_name.as_deref(), Some("g"));
        let bad = write(
            &dir,
            "bad.json",
            r#"{"current_host": "x", "hosts": ["algo-1"]}"#,
        );
        assert!(read_resource_config(&bad).is_err());
    }
}

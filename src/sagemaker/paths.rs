//! Where every file of the SageMaker training contract lives.
//!
//! Invariant: every path derives from one root (`/opt/ml`, `SAGEMAKER_BASE_DIR`, or `--root`),
//! except those a `SM_*` variable overrides one by one. [`Paths::from_root`] is pure;
//! [`Paths::resolve`] is the one function that consults the environment.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The default root SageMaker mounts into a training container.
pub const DEFAULT_ROOT: &str = "/opt/ml";

/// Environment variables that replace the root or single paths (documented in docs/contract.md).
pub const ENV_BASE_DIR: &str = "SAGEMAKER_BASE_DIR";
pub const ENV_MODEL_DIR: &str = "SM_MODEL_DIR";
pub const ENV_OUTPUT_DIR: &str = "SM_OUTPUT_DIR";
pub const ENV_OUTPUT_DATA_DIR: &str = "SM_OUTPUT_DATA_DIR";
pub const ENV_INPUT_CONFIG_DIR: &str = "SM_INPUT_CONFIG_DIR";
/// txcat's own name (the toolkit defines none): local directory for checkpoints.
pub const ENV_CHECKPOINT_DIR: &str = "SM_CHECKPOINT_DIR";
/// Prefix of the per-channel overrides, e.g. `SM_CHANNEL_TRAIN`.
pub const ENV_CHANNEL_PREFIX: &str = "SM_CHANNEL_";
/// Folder of models baked into the image (`$TXCAT_MODEL_HOME/<model_name>`).
pub const ENV_MODEL_HOME: &str = "TXCAT_MODEL_HOME";
/// `true`/`false`: force (or forbid) path-style S3 addressing.
pub const ENV_S3_FORCE_PATH_STYLE: &str = "TXCAT_S3_FORCE_PATH_STYLE";
/// S3 attempts per request without progress.
pub const ENV_S3_MAX_ATTEMPTS: &str = "TXCAT_S3_MAX_ATTEMPTS";
/// Seconds without progress after which an S3 request gives up.
pub const ENV_S3_RETRY_SECONDS: &str = "TXCAT_S3_RETRY_SECONDS";

/// Every location of the contract, resolved once at start-up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Paths {
    /// `/opt/ml` or its replacement.
    pub root: PathBuf,
    /// `<root>/input/config` (`SM_INPUT_CONFIG_DIR`).
    pub config_dir: PathBuf,
    /// `<config_dir>/hyperparameters.json`.
    pub hyperparameters_file: PathBuf,
    /// `<config_dir>/inputdataconfig.json`.
    pub input_data_config_file: PathBuf,
    /// `<config_dir>/resourceconfig.json`.
    pub resource_config_file: PathBuf,
    /// `<config_dir>/checkpointconfig.json` (present only when checkpointing is configured).
    pub checkpoint_config_file: PathBuf,
    /// `<root>/input/data`: channel directories and Pipe-mode FIFOs.
    pub data_dir: PathBuf,
    /// `<root>/model` (`SM_MODEL_DIR`): packed into model.tar.gz; written only on success.
    pub model_dir: PathBuf,
    /// `<root>/output` (`SM_OUTPUT_DIR`).
    pub output_dir: PathBuf,
    /// `<output_dir>/data` (`SM_OUTPUT_DATA_DIR`): packed into output.tar.gz.
    pub output_data_dir: PathBuf,
    /// `<output_dir>/failure`: the one-line failure reason.
    pub failure_file: PathBuf,
    /// `<root>/checkpoints` (`SM_CHECKPOINT_DIR`): SageMaker's default checkpoint LocalPath.
    pub checkpoint_dir: PathBuf,
    /// `SM_CHANNEL_<NAME>` overrides, keyed by the upper-cased channel name.
    pub channel_overrides: BTreeMap<String, PathBuf>,
    /// `TXCAT_MODEL_HOME`: models baked into the image, looked up by name.
    pub model_home: Option<PathBuf>,
    /// The `TXCAT_S3_*` switches (unset: the storage defaults).
    pub s3: S3Settings,
}

/// S3 client switches from the environment; each `None` keeps the storage default.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct S3Settings {
    pub force_path_style: Option<bool>,
    pub max_attempts: Option<u32>,
    pub retry_seconds: Option<u64>,
}

impl Paths {
    /// The layout under `root`, with no overrides. Reads no environment.
    pub fn from_root(root: impl Into<PathBuf>) -> Self {
        let root = root.into();
        let config_dir = root.join("input").join("config");
        let output_dir = root.join("output");
        Self {
            hyperparameters_file: config_dir.join("hyperparameters.json"),
            input_data_config_file: config_dir.join("inputdataconfig.json"),
            resource_config_file: config_dir.join("resourceconfig.json"),
            checkpoint_config_file: config_dir.join("checkpointconfig.json"),
            config_dir,
            data_dir: root.join("input").join("data"),
            model_dir: root.join("model"),
            output_data_dir: output_dir.join("data"),
            failure_file: output_dir.join("failure"),
            output_dir,
            checkpoint_dir: root.join("checkpoints"),
            channel_overrides: BTreeMap::new(),
            model_home: None,
            s3: S3Settings::default(),
            root,
        }
    }

    /// The layout from `--root` (wins), else `SAGEMAKER_BASE_DIR`, else `/opt/ml`, then the
    /// single-path `SM_*` overrides present in the process environment.
    pub fn resolve(cli_root: Option<&Path>) -> Self {
        Self::resolve_with(cli_root, |name| std::env::var_os(name), std::env::vars_os())
    }

    /// [`Paths::resolve`] with an injected environment (tests).
    pub fn resolve_with(
        cli_root: Option<&Path>,
        var: impl Fn(&str) -> Option<std::ffi::OsString>,
        all_vars: impl IntoIterator<Item = (std::ffi::OsString, std::ffi::OsString)>,
    ) -> Self {
        let non_empty = |name: &str| var(name).filter(|v| !v.is_empty()).map(PathBuf::from);
        let root = cli_root
            .map(Path::to_path_buf)
            .or_else(|| non_empty(ENV_BASE_DIR))
            .unwrap_or_else(|| PathBuf::from(DEFAULT_ROOT));
        let mut paths = Self::from_root(root);
        if let Some(dir) = non_empty(ENV_INPUT_CONFIG_DIR) {
            paths.hyperparameters_file = dir.join("hyperparameters.json");
            paths.input_data_config_file = dir.join("inputdataconfig.json");
            paths.resource_config_file = dir.join("resourceconfig.json");
            paths.checkpoint_config_file = dir.join("checkpointconfig.json");
            paths.config_dir = dir;
        }
        if let Some(dir) = non_empty(ENV_MODEL_DIR) {
            paths.model_dir = dir;
        }
        if let Some(dir) = non_empty(ENV_OUTPUT_DIR) {
            paths.output_data_dir = dir.join("data");
            paths.failure_file = dir.join("failure");
            paths.output_dir = dir;
        }
        if let Some(dir) = non_empty(ENV_OUTPUT_DATA_DIR) {
            paths.output_data_dir = dir;
        }
        if let Some(dir) = non_empty(ENV_CHECKPOINT_DIR) {
            paths.checkpoint_dir = dir;
        }
        paths.model_home = non_empty(ENV_MODEL_HOME);
        paths.s3 = S3Settings {
            force_path_style: parsed(&var, ENV_S3_FORCE_PATH_STYLE),
            max_attempts: parsed(&var, ENV_S3_MAX_ATTEMPTS),
            retry_seconds: parsed(&var, ENV_S3_RETRY_SECONDS),
        };
        for (name, value) in all_vars {
            let (Some(name), false) = (name.to_str(), value.is_empty()) else {
                continue;
            };
            if let Some(channel) = name.strip_prefix(ENV_CHANNEL_PREFIX) {
                if !channel.is_empty() {
                    paths
                        .channel_overrides
                        .insert(channel.to_string(), PathBuf::from(value));
                }
            }
        }
        paths
    }

    /// Directory of a File/FastFile channel: `SM_CHANNEL_<NAME>` if set, else
    /// `<data_dir>/<name>`. The toolkit upper-cases the name verbatim, and so do we.
    pub fn channel_dir(&self, channel: &str) -> PathBuf {
        self.channel_overrides
            .get(&channel.to_uppercase())
            .cloned()
            .unwrap_or_else(|| self.data_dir.join(channel))
    }

    /// The Pipe-mode FIFO of `channel` for pass `epoch` (`<data_dir>/<channel>_<epoch>`).
    pub fn pipe_fifo(&self, channel: &str, epoch: usize) -> PathBuf {
        self.data_dir.join(format!("{channel}_{epoch}"))
    }
}

/// `name`'s value parsed (trimmed, case-insensitive); an unparseable one is ignored with a
/// warning, so a typo never stops a job that would otherwise run.
fn parsed<T: std::str::FromStr>(
    var: &impl Fn(&str) -> Option<std::ffi::OsString>,
    name: &str,
) -> Option<T> {
    let raw = var(name)?;
    let text = raw.to_string_lossy();
    match text.trim().to_ascii_lowercase().parse() {
        Ok(value) => Some(value),
        Err(_) => {
            tracing::warn!("ignoring {name}={text}: not a valid value");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsString;

    fn env(pairs: &[(&str, &str)]) -> Vec<(OsString, OsString)> {
        pairs
            .iter()
            .map(|(k, v)| (OsString::from(k), OsString::from(v)))
            .collect()
    }

    fn resolve(cli: Option<&Path>, pairs: &[(&str, &str)]) -> Paths {
        let vars = env(pairs);
        let lookup = vars.clone();
        Paths::resolve_with(
            cli,
            move |name| {
                lookup
                    .iter()
                    .find(|(k, _)| k == name)
                    .map(|(_, v)| v.clone())
            },
            vars,
        )
    }

    #[test]
    fn s3_switches_come_from_the_environment_and_typos_are_ignored() {
        assert_eq!(resolve(None, &[]).s3, S3Settings::default());
        let p = resolve(
            None,
            &[
                ("TXCAT_S3_FORCE_PATH_STYLE", " TRUE "),
                ("TXCAT_S3_MAX_ATTEMPTS", "3"),
                ("TXCAT_S3_RETRY_SECONDS", "ten"),
            ],
        );
        assert_eq!(
            p.s3,
            S3Settings {
                force_path_style: Some(true),
                max_attempts: Some(3),
                retry_seconds: None,
            }
        );
    }

    #[test]
    fn default_root_is_opt_ml() {
        let p = resolve(None, &[]);
        assert_eq!(p.model_dir, PathBuf::from("/opt/ml/model"));
        assert_eq!(p.failure_file, PathBuf::from("/opt/ml/output/failure"));
        assert_eq!(
            p.hyperparameters_file,
            PathBuf::from("/opt/ml/input/config/hyperparameters.json")
        );
        assert_eq!(
            p.channel_dir("train"),
            PathBuf::from("/opt/ml/input/data/train")
        );
        assert_eq!(
            p.pipe_fifo("train", 0),
            PathBuf::from("/opt/ml/input/data/train_0")
        );
    }

    #[test]
    fn cli_root_beats_base_dir_and_sm_vars_override_single_paths() {
        let p = resolve(
            Some(Path::new("/cli")),
            &[
                ("SAGEMAKER_BASE_DIR", "/base"),
                ("SM_MODEL_DIR", "/m"),
                ("SM_CHANNEL_TRAIN", "/t"),
                ("SM_OUTPUT_DATA_DIR", "/od"),
            ],
        );
        assert_eq!(p.root, PathBuf::from("/cli"));
        assert_eq!(p.model_dir, PathBuf::from("/m"));
        assert_eq!(p.output_data_dir, PathBuf::from("/od"));
        assert_eq!(p.failure_file, PathBuf::from("/cli/output/failure"));
        assert_eq!(p.channel_dir("train"), PathBuf::from("/t"));
        assert_eq!(p.channel_dir("test"), PathBuf::from("/cli/input/data/test"));
        let base = resolve(None, &[("SAGEMAKER_BASE_DIR", "/base")]);
        assert_eq!(base.model_dir, PathBuf::from("/base/model"));
    }
}

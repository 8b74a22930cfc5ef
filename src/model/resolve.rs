//! Resolves `model_name_or_path` to a local directory (S3 URIs are fetched by the caller
//! first). Order: an existing path, the `model` input channel (itself or `<channel>/<name>`),
//! then `$TXCAT_MODEL_HOME/<name>`.

use std::path::{Path, PathBuf};

use super::ModelError;

/// A directory counts as a model when it holds `config.json`.
fn holds_model(dir: &Path) -> bool {
    dir.join("config.json").is_file()
}

/// Finds the model directory for `name_or_path`; the error lists every place looked at and says
/// where to put the files.
pub fn resolve_model_dir(
    name_or_path: &str,
    model_channel: Option<&Path>,
    model_home: Option<&Path>,
) -> Result<PathBuf, ModelError> {
    let mut searched = Vec::new();
    let as_path = Path::new(name_or_path);
    if !name_or_path.is_empty() {
        if holds_model(as_path) {
            return Ok(as_path.to_path_buf());
        }
        searched.push(as_path.display().to_string());
    }
    if let Some(channel) = model_channel {
        if holds_model(channel) {
            return Ok(channel.to_path_buf());
        }
        searched.push(channel.display().to_string());
        if !name_or_path.is_empty() && as_path.is_relative() {
            let named = channel.join(name_or_path);
            if holds_model(&named) {
                return Ok(named);
            }
            searched.push(named.display().to_string());
        }
    }
    if let Some(home) = model_home {
        if !name_or_path.is_empty() && as_path.is_relative() {
            let named = home.join(name_or_path);
            if holds_model(&named) {
                return Ok(named);
            }
            searched.push(named.display().to_string());
        }
    }
    Err(ModelError::NotFound {
        name: name_or_path.to_string(),
        searched: if searched.is_empty() {
            "nowhere: no name, no model channel, no TXCAT_MODEL_HOME".to_string()
        } else {
            searched.join(", ")
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model_dir(root: &Path, rel: &str) -> PathBuf {
        let dir = root.join(rel);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("config.json"), "{}").unwrap();
        dir
    }

    #[test]
    fn order_is_path_then_channel_then_home() {
        let tmp = tempfile::tempdir().unwrap();
        let home = tmp.path().join("home");
        let channel = tmp.path().join("channel");
        let in_home = model_dir(&home, "org/mini");
        assert_eq!(
            resolve_model_dir("org/mini", Some(&channel), Some(&home)).unwrap(),
            in_home
        );
        let in_channel_named = model_dir(&channel, "org/mini");
        assert_eq!(
            resolve_model_dir("org/mini", Some(&channel), Some(&home)).unwrap(),
            in_channel_named
        );
        std::fs::write(channel.join("config.json"), "{}").unwrap();
        assert_eq!(
            resolve_model_dir("org/mini", Some(&channel), Some(&home)).unwrap(),
            channel
        );
        let explicit = model_dir(tmp.path(), "explicit");
        assert_eq!(
            resolve_model_dir(explicit.to_str().unwrap(), Some(&channel), Some(&home)).unwrap(),
            explicit
        );
    }

    #[test]
    fn not_found_lists_places_and_fix() {
        let tmp = tempfile::tempdir().unwrap();
        let err = resolve_model_dir(
            "distilbert-base-uncased",
            Some(tmp.path()),
            Some(tmp.path()),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("distilbert-base-uncased"), "{err}");
        assert!(err.contains(&tmp.path().display().to_string()), "{err}");
        assert!(err.contains("TXCAT_MODEL_HOME"), "{err}");
        assert!(!err.contains('\n'));
    }
}

//! Where a run's starting model comes from: a directory, a packed model (`model.tar.gz`, `.tgz`,
//! `.tar`), the `model` input channel (File mode drops SageMaker's `model.tar.gz` there as is),
//! `$TXCAT_MODEL_HOME/<name>`, an `s3://` prefix or key (a prefix holding the model files, or
//! the tarball itself), or else the Hugging Face Hub ([`super::hub`]) for a Hub id.
//!
//! Order for local names: the path itself, the `model` channel (itself, then
//! `<channel>/<name>`), then `$TXCAT_MODEL_HOME/<name>`, then (for `name` or `org/name`, when
//! the request allows it) the Hub. At each place a folder holding
//! `config.json` is the model; a folder without one that holds a tarball (`model.tar.gz` first,
//! else the only one) or a path naming a tarball is unpacked ([`crate::storage::archive`]) into a
//! scratch folder that lives as long as the [`ModelSource`]. An unpacked archive is the model
//! when `config.json` is at its root or inside its single top-level folder.

use std::path::{Path, PathBuf};

use super::hub::{self, HubSettings};
use super::ModelError;
use crate::storage::archive::{self, is_archive_name, UnpackLimits};
use crate::storage::s3::{self, S3Options};

/// Where to look for the starting model.
#[derive(Debug, Clone)]
pub struct SourceRequest<'a> {
    /// `model_name_or_path`: a path, a name, or an `s3://` URI.
    pub name_or_path: &'a str,
    /// The `model` input channel's folder, when the job has one.
    pub model_channel: Option<&'a Path>,
    /// `$TXCAT_MODEL_HOME`.
    pub model_home: Option<&'a Path>,
    /// How to reach S3 for `s3://` names.
    pub s3: S3Options,
    /// Caps on what an archive may unpack to.
    pub limits: UnpackLimits,
    /// Fetch Hub ids found nowhere else from the Hub (`None`: never).
    pub hub: Option<HubRequest<'a>>,
}

/// How to fetch a Hub id.
#[derive(Debug, Clone)]
pub struct HubRequest<'a> {
    /// `model_revision`: a branch, tag or commit hash.
    pub revision: &'a str,
    pub settings: HubSettings,
}

/// A resolved model directory; holds the scratch folder of a download or an unpacked archive.
#[derive(Debug)]
pub struct ModelSource {
    /// The directory holding `config.json`, the weights and the tokenizer files.
    pub dir: PathBuf,
    /// Where it came from, for logs and the dry run (`/x/model.tar.gz (unpacked)`).
    pub origin: String,
    _scratch: Option<tempfile::TempDir>,
}

/// What a place turned out to hold.
enum Found {
    Dir(PathBuf),
    Archive(PathBuf),
}

/// A folder counts as a model when it holds `config.json`.
fn holds_model(dir: &Path) -> bool {
    dir.join("config.json").is_file()
}

/// The tarball a folder without `config.json` carries: `model.tar.gz` if present, else the only
/// archive-named file; several candidates are an error rather than a guess.
fn archive_in(dir: &Path) -> Result<Option<PathBuf>, ModelError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(_) => return Ok(None),
    };
    let mut archives: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .filter(|p| {
            p.file_name()
                .map(|n| is_archive_name(&n.to_string_lossy()))
                .unwrap_or(false)
        })
        .collect();
    archives.sort();
    if let Some(model) = archives
        .iter()
        .find(|p| p.file_name().is_some_and(|n| n == "model.tar.gz"))
    {
        return Ok(Some(model.clone()));
    }
    match archives.len() {
        0 => Ok(None),
        1 => Ok(archives.pop()),
        _ => Err(ModelError::Config {
            path: dir.to_path_buf(),
            reason: format!(
                "holds several model archives ({}) and no config.json; keep one, or name it in model_name_or_path",
                archives
                    .iter()
                    .filter_map(|p| p.file_name())
                    .map(|n| n.to_string_lossy().into_owned())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }),
    }
}

/// What `place` holds: a model folder, a tarball, or nothing usable.
fn look_at(place: &Path) -> Result<Option<Found>, ModelError> {
    if place.is_dir() {
        if holds_model(place) {
            return Ok(Some(Found::Dir(place.to_path_buf())));
        }
        return Ok(archive_in(place)?.map(Found::Archive));
    }
    let named_archive = place
        .file_name()
        .is_some_and(|n| is_archive_name(&n.to_string_lossy()));
    Ok((place.is_file() && named_archive).then(|| Found::Archive(place.to_path_buf())))
}

fn scratch() -> Result<tempfile::TempDir, ModelError> {
    tempfile::Builder::new()
        .prefix("txcat-model-")
        .tempdir()
        .map_err(|e| ModelError::io(std::env::temp_dir(), e))
}

/// Unpacks `archive` into `scratch` and finds the model folder inside it.
fn unpack_model(
    archive: &Path,
    scratch: &Path,
    limits: UnpackLimits,
) -> Result<PathBuf, ModelError> {
    let dest = scratch.join("unpacked");
    std::fs::create_dir(&dest).map_err(|e| ModelError::io(&dest, e))?;
    let unpacked = archive::unpack(archive, &dest, limits)?;
    tracing::info!(
        archive = %archive.display(),
        files = unpacked.files,
        bytes = unpacked.bytes,
        dest = %dest.display(),
        "model archive unpacked"
    );
    if holds_model(&dest) {
        return Ok(dest);
    }
    // `tar -czf model.tar.gz my-model/` packs the folder itself.
    let top: Vec<PathBuf> = std::fs::read_dir(&dest)
        .map_err(|e| ModelError::io(&dest, e))?
        .flatten()
        .map(|e| e.path())
        .collect();
    let dirs: Vec<&PathBuf> = top.iter().filter(|p| p.is_dir()).collect();
    if let [only] = dirs[..] {
        if holds_model(only) {
            return Ok(only.clone());
        }
    }
    let mut names: Vec<String> = top
        .iter()
        .filter_map(|p| p.file_name())
        .map(|n| n.to_string_lossy().into_owned())
        .collect();
    names.sort();
    names.truncate(10);
    Err(ModelError::Config {
        path: archive.to_path_buf(),
        reason: format!(
            "the archive holds no config.json at its root or in its single top-level folder (it holds: {}); pack the model folder's contents, e.g. `tar -czf model.tar.gz -C model_dir .`",
            if names.is_empty() { "nothing".to_string() } else { names.join(", ") }
        ),
    })
}

/// Finds (downloading or unpacking as needed) the starting model. The not-found error lists
/// every place looked at and says where to put the files.
pub fn resolve_source(request: &SourceRequest<'_>) -> Result<ModelSource, ModelError> {
    let name = request.name_or_path;
    if s3::is_s3_uri(name) {
        return from_s3(request);
    }
    let mut places = Vec::new();
    let as_path = Path::new(name);
    if !name.is_empty() {
        places.push(as_path.to_path_buf());
    }
    if let Some(channel) = request.model_channel {
        places.push(channel.to_path_buf());
        if !name.is_empty() && as_path.is_relative() {
            places.push(channel.join(name));
        }
    }
    if let Some(home) = request.model_home {
        if !name.is_empty() && as_path.is_relative() {
            places.push(home.join(name));
        }
    }
    for place in &places {
        match look_at(place)? {
            Some(Found::Dir(dir)) => {
                return Ok(ModelSource {
                    origin: dir.display().to_string(),
                    dir,
                    _scratch: None,
                })
            }
            Some(Found::Archive(archive)) => {
                let tmp = scratch()?;
                let dir = unpack_model(&archive, tmp.path(), request.limits)?;
                return Ok(ModelSource {
                    dir,
                    origin: format!("{} (unpacked)", archive.display()),
                    _scratch: Some(tmp),
                });
            }
            None => {}
        }
    }
    let searched = if places.is_empty() {
        "nowhere: no name, no model channel, no TXCAT_MODEL_HOME".to_string()
    } else {
        places
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    };
    if let Some(request) = request.hub.as_ref().filter(|_| hub::is_hub_id(name)) {
        let dir = hub::fetch(name, request.revision, &request.settings, &searched)?;
        return Ok(ModelSource {
            dir,
            origin: format!("{name} (Hugging Face Hub, revision {})", request.revision),
            _scratch: None,
        });
    }
    Err(ModelError::NotFound {
        name: name.to_string(),
        searched,
    })
}

/// Mirrors an `s3://` prefix (or the one tarball a key names) into scratch, then unpacks a
/// tarball found there.
fn from_s3(request: &SourceRequest<'_>) -> Result<ModelSource, ModelError> {
    let uri = request.name_or_path;
    let tmp = scratch()?;
    let download = tmp.path().join("download");
    std::fs::create_dir(&download).map_err(|e| ModelError::io(&download, e))?;
    tracing::info!(uri, dest = %download.display(), "downloading the model from S3");
    s3::download_prefix(uri, &download, request.s3.clone())?;
    let dir = match look_at(&download)? {
        Some(Found::Dir(dir)) => dir,
        Some(Found::Archive(archive)) => {
            let dir = unpack_model(&archive, tmp.path(), request.limits)?;
            // The download is no longer needed; free its disk space.
            let _ = std::fs::remove_file(&archive);
            dir
        }
        None => {
            return Err(ModelError::Config {
                path: PathBuf::from(uri),
                reason: "holds neither config.json nor a model.tar.gz; point model_name_or_path at the model folder's prefix or at the tarball".into(),
            })
        }
    };
    let origin = match dir.starts_with(tmp.path().join("unpacked")) {
        true => format!("{uri} (unpacked)"),
        false => uri.to_string(),
    };
    Ok(ModelSource {
        dir,
        origin,
        _scratch: Some(tmp),
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

    fn request<'a>(
        name: &'a str,
        channel: Option<&'a Path>,
        home: Option<&'a Path>,
    ) -> SourceRequest<'a> {
        SourceRequest {
            name_or_path: name,
            model_channel: channel,
            model_home: home,
            s3: S3Options::default(),
            limits: UnpackLimits::default(),
            hub: None,
        }
    }

    /// The directory of a folder source (no scratch to keep alive).
    fn resolve(name: &str, channel: Option<&Path>, home: Option<&Path>) -> PathBuf {
        resolve_source(&request(name, channel, home)).unwrap().dir
    }

    /// A gzip tarball of `dir`'s contents, as `txcat train`'s upload writes it.
    fn pack(dir: &Path, out: &Path) {
        let mut file = std::fs::File::create(out).unwrap();
        crate::storage::s3::write_tarball(dir, &mut file).unwrap();
    }

    #[test]
    fn order_is_path_then_channel_then_home() {
        let tmp = tempfile::tempdir().unwrap();
        let home = tmp.path().join("home");
        let channel = tmp.path().join("channel");
        let in_home = model_dir(&home, "org/mini");
        assert_eq!(resolve("org/mini", Some(&channel), Some(&home)), in_home);
        let in_channel_named = model_dir(&channel, "org/mini");
        assert_eq!(
            resolve("org/mini", Some(&channel), Some(&home)),
            in_channel_named
        );
        std::fs::write(channel.join("config.json"), "{}").unwrap();
        assert_eq!(resolve("org/mini", Some(&channel), Some(&home)), channel);
        let explicit = model_dir(tmp.path(), "explicit");
        assert_eq!(
            resolve(explicit.to_str().unwrap(), Some(&channel), Some(&home)),
            explicit
        );
    }

    #[test]
    fn tarballs_in_the_channel_or_named_are_unpacked() {
        let tmp = tempfile::tempdir().unwrap();
        let model = model_dir(tmp.path(), "trained");
        std::fs::write(model.join("vocab.txt"), "[PAD]\n").unwrap();
        let channel = tmp.path().join("channel");
        std::fs::create_dir_all(&channel).unwrap();
        pack(&model, &channel.join("model.tar.gz"));
        // The default name does not exist anywhere: the channel's tarball is the model.
        let source =
            resolve_source(&request("distilbert-base-uncased", Some(&channel), None)).unwrap();
        assert!(source.dir.join("vocab.txt").is_file());
        assert!(source.origin.ends_with("model.tar.gz (unpacked)"));
        let scratch = source.dir.clone();
        drop(source);
        assert!(!scratch.exists(), "scratch folder outlived the source");

        let named = channel.join("model.tar.gz");
        let source = resolve_source(&request(named.to_str().unwrap(), None, None)).unwrap();
        assert!(source.dir.join("config.json").is_file());
    }

    #[test]
    fn a_packed_folder_and_an_archive_without_a_model() {
        let tmp = tempfile::tempdir().unwrap();
        let outer = tmp.path().join("outer");
        model_dir(&outer, "my-model");
        let archive = tmp.path().join("folder.tgz");
        pack(&outer, &archive);
        let source = resolve_source(&request(archive.to_str().unwrap(), None, None)).unwrap();
        assert!(source.dir.ends_with("my-model"), "{}", source.dir.display());
        assert!(source.dir.join("config.json").is_file());

        let junk = tmp.path().join("junk");
        std::fs::create_dir_all(&junk).unwrap();
        std::fs::write(junk.join("notes.txt"), "x").unwrap();
        let bad = tmp.path().join("junk.tar.gz");
        pack(&junk, &bad);
        let err = resolve_source(&request(bad.to_str().unwrap(), None, None))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("no config.json") && err.contains("notes.txt"),
            "{err}"
        );
    }

    #[test]
    fn several_archives_are_not_guessed() {
        let tmp = tempfile::tempdir().unwrap();
        let model = model_dir(tmp.path(), "m");
        let channel = tmp.path().join("channel");
        std::fs::create_dir_all(&channel).unwrap();
        pack(&model, &channel.join("a.tar.gz"));
        pack(&model, &channel.join("b.tgz"));
        let err = resolve_source(&request("x", Some(&channel), None))
            .unwrap_err()
            .to_string();
        assert!(err.contains("a.tar.gz, b.tgz"), "{err}");
    }

    #[test]
    fn not_found_lists_places_and_fix() {
        let tmp = tempfile::tempdir().unwrap();
        let err = resolve_source(&request(
            "distilbert-base-uncased",
            Some(tmp.path()),
            Some(tmp.path()),
        ))
        .unwrap_err()
        .to_string();
        assert!(err.contains("distilbert-base-uncased"), "{err}");
        assert!(err.contains(&tmp.path().display().to_string()), "{err}");
        assert!(err.contains("TXCAT_MODEL_HOME"), "{err}");
        assert!(err.contains("model.tar.gz"), "{err}");
        assert!(!err.contains('\n'));
    }
}

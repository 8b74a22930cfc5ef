//! Hugging Face safetensors in and out.
//!
//! Reading: the `safetensors` crate parses and validates the file (offsets, sizes), names are
//! normalised (legacy `gamma`/`beta`, bare encoder saves without the family prefix) and known
//! extras are set aside. Writing: contiguous CPU fp32 tensors with metadata `{"format": "pt"}`,
//! which older transformers versions require.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use safetensors::{Dtype, SafeTensors, View};
use tch::{Kind, Tensor};

use super::config::ModelFamily;
use super::ModelError;

/// File name of the weights, as transformers writes it.
pub(crate) const WEIGHTS_FILE: &str = "model.safetensors";

/// Pickle checkpoints we refuse to open.
const PICKLE_FILES: [&str; 2] = ["pytorch_model.bin", "model.bin"];

/// Tensors of a checkpoint, keyed by transformers' task-model names.
pub(crate) struct Checkpoint {
    pub path: PathBuf,
    /// name -> CPU tensor in the file's dtype.
    pub tensors: BTreeMap<String, Tensor>,
    /// Known extras that classification does not use (MLM/pretraining heads, position_ids).
    pub ignored: Vec<String>,
    /// How many legacy `gamma`/`beta` names were renamed.
    pub renamed_legacy: usize,
}

/// Locates `model.safetensors` in `dir`, refusing pickle files with an explanation.
pub(crate) fn weights_path(dir: &Path) -> Result<PathBuf, ModelError> {
    let path = dir.join(WEIGHTS_FILE);
    if path.is_file() {
        return Ok(path);
    }
    if dir.join("model.safetensors.index.json").is_file() {
        return Err(ModelError::Safetensors {
            path: dir.join("model.safetensors.index.json"),
            reason: "sharded checkpoints are not supported; save the model unsharded (max_shard_size larger than the model)".into(),
        });
    }
    for name in PICKLE_FILES {
        let pickle = dir.join(name);
        if pickle.is_file() {
            return Err(ModelError::PickleRefused { path: pickle });
        }
    }
    Err(ModelError::MissingWeights {
        dir: dir.to_path_buf(),
    })
}

fn kind_of(dtype: Dtype) -> Option<Kind> {
    match dtype {
        Dtype::F32 => Some(Kind::Float),
        Dtype::F16 => Some(Kind::Half),
        Dtype::BF16 => Some(Kind::BFloat16),
        Dtype::F64 => Some(Kind::Double),
        Dtype::I64 => Some(Kind::Int64),
        Dtype::I32 => Some(Kind::Int),
        _ => None,
    }
}

/// True for tensors a sequence classifier never uses.
fn is_known_extra(name: &str, family: ModelFamily) -> bool {
    if name.ends_with("position_ids") {
        return true;
    }
    match family {
        ModelFamily::DistilBert => ["vocab_transform.", "vocab_layer_norm.", "vocab_projector."]
            .iter()
            .any(|p| name.starts_with(p)),
        ModelFamily::Bert => name.starts_with("cls."),
    }
}

/// transformers' historical rename of LayerNorm parameters.
fn rename_legacy(name: &str) -> Option<String> {
    if let Some(stem) = name.strip_suffix(".gamma") {
        return Some(format!("{stem}.weight"));
    }
    name.strip_suffix(".beta")
        .map(|stem| format!("{stem}.bias"))
}

/// Top-level module names of a bare encoder save (no `distilbert.`/`bert.` prefix).
fn is_bare_encoder_name(name: &str, family: ModelFamily) -> bool {
    let roots: &[&str] = match family {
        ModelFamily::DistilBert => &["embeddings.", "transformer."],
        ModelFamily::Bert => &["embeddings.", "encoder.", "pooler."],
    };
    roots.iter().any(|r| name.starts_with(r))
}

/// Maps checkpoint names to the task model's names: legacy `gamma`/`beta` renamed, bare encoder
/// saves prefixed; known extras map to `None`. Shared by the full read and the header check so
/// both see the same names.
struct NameMap {
    family: ModelFamily,
    prefix: String,
    /// Bare saves (`DistilBertModel`, `BertModel`, e.g. MiniLM) carry no prefix at all.
    has_prefix: bool,
}

impl NameMap {
    fn new<'a>(family: ModelFamily, names: impl IntoIterator<Item = &'a str>) -> Self {
        let prefix = format!("{}.", family.prefix());
        let has_prefix = names.into_iter().any(|n| n.starts_with(&prefix));
        Self {
            family,
            prefix,
            has_prefix,
        }
    }

    /// `(name, renamed_legacy)`, or `None` for a tensor classification does not use.
    fn map(&self, raw_name: &str) -> Option<(String, bool)> {
        let mut name = raw_name.to_string();
        let mut renamed = false;
        if let Some(new_name) = rename_legacy(&name) {
            name = new_name;
            renamed = true;
        }
        if !self.has_prefix && is_bare_encoder_name(&name, self.family) {
            name = format!("{}{name}", self.prefix);
        }
        let unprefixed = name.strip_prefix(&self.prefix).unwrap_or(&name);
        if is_known_extra(&name, self.family) || is_known_extra(unprefixed, self.family) {
            return None;
        }
        Some((name, renamed))
    }
}

fn unsupported_dtype(path: &Path, raw_name: &str, dtype: Dtype) -> ModelError {
    ModelError::Safetensors {
        path: path.to_path_buf(),
        reason: format!("tensor `{raw_name}` has unsupported dtype {dtype:?}"),
    }
}

fn duplicate(path: &Path, name: &str) -> ModelError {
    ModelError::Safetensors {
        path: path.to_path_buf(),
        reason: format!("tensor `{name}` appears twice after renaming legacy names"),
    }
}

/// Reads and normalises the checkpoint at `path` for `family`.
pub(crate) fn read_checkpoint(path: &Path, family: ModelFamily) -> Result<Checkpoint, ModelError> {
    let bytes = std::fs::read(path).map_err(|e| ModelError::io(path, e))?;
    let parsed = SafeTensors::deserialize(&bytes).map_err(|e| ModelError::Safetensors {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    let names = NameMap::new(family, parsed.names());
    let mut tensors = BTreeMap::new();
    let mut ignored = Vec::new();
    let mut renamed_legacy = 0;
    for (raw_name, view) in parsed.iter() {
        let Some((name, renamed)) = names.map(raw_name) else {
            ignored.push(raw_name.to_string());
            continue;
        };
        renamed_legacy += usize::from(renamed);
        let kind =
            kind_of(view.dtype()).ok_or_else(|| unsupported_dtype(path, raw_name, view.dtype()))?;
        let shape: Vec<i64> = view.shape().iter().map(|&d| d as i64).collect();
        let tensor = Tensor::f_from_data_size(view.data(), &shape, kind)?;
        if tensors.insert(name.clone(), tensor).is_some() {
            return Err(duplicate(path, &name));
        }
    }
    Ok(Checkpoint {
        path: path.to_path_buf(),
        tensors,
        ignored,
        renamed_legacy,
    })
}

/// A checkpoint's tensor names and shapes, from its safetensors header alone.
pub(crate) struct HeaderShapes {
    pub path: PathBuf,
    /// Task-model name -> shape (known extras classification does not use left out).
    pub shapes: BTreeMap<String, Vec<i64>>,
}

/// The safetensors crate's own header limit: anything longer is not a safetensors file.
const MAX_HEADER_BYTES: u64 = 100_000_000;

/// Reads only the header of `path` (the 8-byte length and the JSON after it) and checks it as
/// the full parser would: valid JSON, contiguous offsets that match each dtype and shape, and a
/// file exactly as long as the header says (a truncated copy fails here). No weights are read.
pub(crate) fn read_header(path: &Path, family: ModelFamily) -> Result<HeaderShapes, ModelError> {
    use std::io::Read;
    let bad = |reason: String| ModelError::Safetensors {
        path: path.to_path_buf(),
        reason,
    };
    let mut file = std::fs::File::open(path).map_err(|e| ModelError::io(path, e))?;
    let file_len = file.metadata().map_err(|e| ModelError::io(path, e))?.len();
    let mut length = [0u8; 8];
    file.read_exact(&mut length).map_err(|_| {
        bad(format!(
            "the file has {file_len} bytes, fewer than the 8-byte header length"
        ))
    })?;
    let header_len = u64::from_le_bytes(length);
    if header_len > MAX_HEADER_BYTES {
        return Err(bad(format!(
            "header length {header_len} is over {MAX_HEADER_BYTES} bytes"
        )));
    }
    if 8 + header_len > file_len {
        return Err(bad(format!(
            "the header of {header_len} bytes runs past the end of the {file_len}-byte file"
        )));
    }
    let mut header = vec![0u8; header_len as usize];
    file.read_exact(&mut header)
        .map_err(|e| ModelError::io(path, e))?;
    // Deserialising `Metadata` runs the crate's own validation of offsets, dtypes and shapes.
    let metadata: safetensors::tensor::Metadata =
        serde_json::from_slice(&header).map_err(|e| bad(format!("invalid header: {e}")))?;
    let infos = metadata.tensors();
    let data_len = infos
        .values()
        .map(|info| info.data_offsets.1 as u64)
        .max()
        .unwrap_or(0);
    if 8 + header_len + data_len != file_len {
        return Err(bad(format!(
            "the header describes {} bytes but the file has {file_len}",
            8 + header_len + data_len
        )));
    }
    let mut sorted: Vec<(&String, _)> = infos.iter().collect();
    sorted.sort_by(|a, b| a.0.cmp(b.0));
    let names = NameMap::new(family, sorted.iter().map(|(n, _)| n.as_str()));
    let mut shapes = BTreeMap::new();
    for (raw_name, info) in sorted {
        let Some((name, _)) = names.map(raw_name) else {
            continue;
        };
        kind_of(info.dtype).ok_or_else(|| unsupported_dtype(path, raw_name, info.dtype))?;
        let shape = info.shape.iter().map(|&d| d as i64).collect();
        if shapes.insert(name.clone(), shape).is_some() {
            return Err(duplicate(path, &name));
        }
    }
    Ok(HeaderShapes {
        path: path.to_path_buf(),
        shapes,
    })
}

/// One tensor ready to be written: shape and little-endian fp32 bytes.
struct Fp32Bytes {
    shape: Vec<usize>,
    bytes: Vec<u8>,
}

impl View for &Fp32Bytes {
    fn dtype(&self) -> Dtype {
        Dtype::F32
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn data(&self) -> Cow<'_, [u8]> {
        Cow::Borrowed(&self.bytes)
    }
    fn data_len(&self) -> usize {
        self.bytes.len()
    }
}

fn to_fp32_bytes(name: &str, t: &Tensor) -> Result<Fp32Bytes, ModelError> {
    let cpu = t
        .f_to_device(tch::Device::Cpu)?
        .f_to_kind(Kind::Float)?
        .f_contiguous()?;
    let shape: Vec<usize> = cpu.size().iter().map(|&d| d as usize).collect();
    let numel: usize = shape.iter().product();
    let mut bytes = vec![0u8; numel * 4];
    cpu.f_copy_data_u8(&mut bytes, numel)?;
    if cfg!(target_endian = "big") {
        return Err(ModelError::Invalid(format!(
            "{name}: saving safetensors on a big-endian machine is not supported"
        )));
    }
    Ok(Fp32Bytes { shape, bytes })
}

/// Writes `tensors` (HF names) as `path`, via a temporary file renamed into place.
pub(crate) fn write_safetensors(
    path: &Path,
    tensors: &HashMap<String, Tensor>,
) -> Result<(), ModelError> {
    let mut prepared = BTreeMap::new();
    for (name, t) in tensors {
        prepared.insert(name.clone(), to_fp32_bytes(name, t)?);
    }
    let metadata = HashMap::from([("format".to_string(), "pt".to_string())]);
    let tmp = path.with_extension("safetensors.tmp");
    safetensors::serialize_to_file(prepared.iter(), Some(metadata), &tmp).map_err(|e| {
        ModelError::Safetensors {
            path: tmp.clone(),
            reason: format!("cannot write: {e}"),
        }
    })?;
    std::fs::rename(&tmp, path).map_err(|e| ModelError::io(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn legacy_and_extras() {
        assert_eq!(
            rename_legacy("bert.embeddings.LayerNorm.gamma").as_deref(),
            Some("bert.embeddings.LayerNorm.weight")
        );
        assert_eq!(rename_legacy("x.beta").as_deref(), Some("x.bias"));
        assert_eq!(rename_legacy("x.weight"), None);
        assert!(is_known_extra("cls.predictions.bias", ModelFamily::Bert));
        assert!(!is_known_extra(
            "cls.predictions.bias",
            ModelFamily::DistilBert
        ));
        assert!(is_known_extra(
            "vocab_projector.bias",
            ModelFamily::DistilBert
        ));
        assert!(is_known_extra("embeddings.position_ids", ModelFamily::Bert));
        assert!(!is_known_extra("classifier.weight", ModelFamily::Bert));
    }

    #[test]
    fn written_file_round_trips_with_metadata() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join(WEIGHTS_FILE);
        let a = Tensor::from_slice(&[1.5f32, -2.0, 3.25, 4.0, 5.0, 6.0]).view([2, 3]);
        // A transposed (non-contiguous) bf16 tensor must come back contiguous fp32.
        let b = Tensor::from_slice(&[1.0f32, 2.0, 3.0, 4.0])
            .view([2, 2])
            .to_kind(Kind::BFloat16)
            .tr();
        let map = HashMap::from([
            ("a.weight".to_string(), a.shallow_clone()),
            ("b".to_string(), b),
        ]);
        write_safetensors(&path, &map).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        let (_, meta) = SafeTensors::read_metadata(&bytes).unwrap();
        assert_eq!(
            meta.metadata()
                .as_ref()
                .and_then(|m| m.get("format"))
                .map(String::as_str),
            Some("pt")
        );
        let ck = read_checkpoint(&path, ModelFamily::Bert).unwrap();
        assert!(ck.tensors["a.weight"].equal(&a));
        let back_b = &ck.tensors["b"];
        assert_eq!(back_b.kind(), Kind::Float);
        assert!(back_b.equal(&Tensor::from_slice(&[1.0f32, 3.0, 2.0, 4.0]).view([2, 2])));
    }
}

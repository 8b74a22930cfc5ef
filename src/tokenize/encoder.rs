//! [`TextEncoder`]: the model's tokenizer with txcat's truncation and no padding.

use std::path::{Path, PathBuf};

use serde_json::Value;
use tokenizers::models::wordpiece::WordPiece;
use tokenizers::normalizers::bert::BertNormalizer;
use tokenizers::pre_tokenizers::bert::BertPreTokenizer;
use tokenizers::processors::bert::BertProcessing;
use tokenizers::{
    AddedToken, Tokenizer, TruncationDirection, TruncationParams, TruncationStrategy,
};

/// Files that make up a Hugging Face tokenizer, copied next to a saved model.
pub const TOKENIZER_FILES: [&str; 4] = [
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.txt",
];

/// Why a tokenizer could not be built or used.
#[derive(Debug, thiserror::Error)]
pub enum TokenizeError {
    /// The model directory has neither tokenizer.json nor vocab.txt.
    #[error(
        "{dir}: no tokenizer.json or vocab.txt; ship the tokenizer files that came with the model"
    )]
    Missing {
        /// The model directory.
        dir: PathBuf,
    },
    /// A tokenizer file is unreadable or invalid.
    #[error("{path}: {reason}")]
    Load {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// `max_length` is unusable.
    #[error("max_length {max_length} is not allowed: {reason}")]
    MaxLength {
        /// The requested length.
        max_length: usize,
        /// The limit and how to fix it.
        reason: String,
    },
    /// The tokenizer failed on some input.
    #[error("tokenizing failed: {0}")]
    Encode(String),
    /// Copying a tokenizer file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

/// One tokenized text: ids with [CLS]/[SEP], truncated, unpadded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Encoding {
    /// Token ids.
    pub ids: Vec<u32>,
    /// Segment ids (all 0 for single texts).
    pub type_ids: Vec<u32>,
}

/// Checks `max_length` against the model's position table: it must hold [CLS] + [SEP] and
/// not exceed `max_positions`.
pub fn check_max_length(max_length: usize, max_positions: usize) -> Result<(), TokenizeError> {
    if max_length < 2 {
        return Err(TokenizeError::MaxLength {
            max_length,
            reason: "it must leave room for [CLS] and [SEP] (at least 2)".into(),
        });
    }
    if max_length > max_positions {
        return Err(TokenizeError::MaxLength {
            max_length,
            reason: format!(
                "the model has {max_positions} position embeddings (max_position_embeddings); set max_length to at most {max_positions}"
            ),
        });
    }
    Ok(())
}

/// The model's tokenizer, configured for txcat.
#[derive(Debug, Clone)]
pub struct TextEncoder {
    tokenizer: Tokenizer,
    max_length: usize,
    pad_id: u32,
}

fn read_json(path: &Path) -> Result<Option<Value>, TokenizeError> {
    if !path.is_file() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(path).map_err(|e| TokenizeError::Io {
        path: path.to_path_buf(),
        source: e,
    })?;
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|e| TokenizeError::Load {
            path: path.to_path_buf(),
            reason: format!("not valid JSON: {e}"),
        })
}

/// A special token's text from tokenizer_config.json (plain string or AddedToken object).
fn special_token(config: Option<&Value>, key: &str, default: &str) -> String {
    let value = config.and_then(|c| c.get(key));
    match value {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Object(o)) => o
            .get("content")
            .and_then(Value::as_str)
            .unwrap_or(default)
            .to_string(),
        _ => default.to_string(),
    }
}

impl TextEncoder {
    /// Builds the tokenizer of the model in `dir`, truncating to `max_length` tokens (incl.
    /// [CLS]/[SEP]) and never padding.
    pub fn from_model_dir(dir: &Path, max_length: usize) -> Result<Self, TokenizeError> {
        check_max_length(max_length, usize::MAX)?;
        let config_path = dir.join("tokenizer_config.json");
        let config = read_json(&config_path)?;
        let json_path = dir.join("tokenizer.json");
        let vocab_path = dir.join("vocab.txt");
        let pad_token = special_token(config.as_ref(), "pad_token", "[PAD]");
        let (mut tokenizer, stored_pad_id) = if json_path.is_file() {
            let tokenizer = Tokenizer::from_file(&json_path).map_err(|e| TokenizeError::Load {
                path: json_path.clone(),
                reason: e.to_string(),
            })?;
            let stored_pad_id = tokenizer.get_padding().map(|p| p.pad_id);
            (tokenizer, stored_pad_id)
        } else if vocab_path.is_file() {
            (wordpiece_from_vocab(&vocab_path, config.as_ref())?, None)
        } else {
            return Err(TokenizeError::Missing {
                dir: dir.to_path_buf(),
            });
        };
        // The file's own settings (e.g. MiniLM pads every row to 128) would waste compute;
        // padding happens per batch later.
        tokenizer.with_padding(None);
        tokenizer
            .with_truncation(Some(TruncationParams {
                direction: TruncationDirection::Right,
                max_length,
                strategy: TruncationStrategy::LongestFirst,
                stride: 0,
            }))
            .map_err(|e| TokenizeError::Load {
                path: dir.to_path_buf(),
                reason: format!("cannot set truncation: {e}"),
            })?;
        // Padded positions are masked out, so the pad id only has to be a valid row.
        let pad_id = tokenizer
            .token_to_id(&pad_token)
            .or(stored_pad_id)
            .unwrap_or(0);
        Ok(TextEncoder {
            tokenizer,
            max_length,
            pad_id,
        })
    }

    /// Encodes `texts` in parallel (rayon, inside `tokenizers`), one [`Encoding`] per text.
    pub fn encode_batch(&self, texts: &[&str]) -> Result<Vec<Encoding>, TokenizeError> {
        let encodings = self
            .tokenizer
            .encode_batch(texts.to_vec(), true)
            .map_err(|e| TokenizeError::Encode(e.to_string()))?;
        Ok(encodings
            .into_iter()
            .map(|e| Encoding {
                ids: e.get_ids().to_vec(),
                type_ids: e.get_type_ids().to_vec(),
            })
            .collect())
    }

    /// The id to pad batches with.
    pub fn pad_id(&self) -> u32 {
        self.pad_id
    }

    /// The truncation length (incl. [CLS]/[SEP]).
    pub fn max_length(&self) -> usize {
        self.max_length
    }

    /// Vocabulary size including added tokens.
    pub fn vocab_size(&self) -> usize {
        self.tokenizer.get_vocab_size(true)
    }
}

/// The BERT tokenizer transformers' `BertTokenizer` implements, rebuilt from `vocab.txt`.
fn wordpiece_from_vocab(vocab: &Path, config: Option<&Value>) -> Result<Tokenizer, TokenizeError> {
    let load_err = |reason: String| TokenizeError::Load {
        path: vocab.to_path_buf(),
        reason,
    };
    let flag = |key: &str| config.and_then(|c| c.get(key)).and_then(Value::as_bool);
    let lowercase = flag("do_lower_case").unwrap_or(true);
    let chinese = flag("tokenize_chinese_chars").unwrap_or(true);
    let strip_accents = flag("strip_accents");
    let unk = special_token(config, "unk_token", "[UNK]");
    let cls = special_token(config, "cls_token", "[CLS]");
    let sep = special_token(config, "sep_token", "[SEP]");
    let pad = special_token(config, "pad_token", "[PAD]");
    let mask = special_token(config, "mask_token", "[MASK]");
    let vocab_str = vocab
        .to_str()
        .ok_or_else(|| load_err("path is not valid UTF-8".into()))?;
    let model = WordPiece::from_file(vocab_str)
        .unk_token(unk.clone())
        .build()
        .map_err(|e| load_err(e.to_string()))?;
    let mut tokenizer = Tokenizer::new(model);
    let id_of = |tok: &Tokenizer, t: &str| {
        tok.token_to_id(t)
            .ok_or_else(|| load_err(format!("special token `{t}` is not in the vocabulary")))
    };
    let cls_id = id_of(&tokenizer, &cls)?;
    let sep_id = id_of(&tokenizer, &sep)?;
    tokenizer.with_normalizer(Some(BertNormalizer::new(
        true,
        chinese,
        strip_accents,
        lowercase,
    )));
    tokenizer.with_pre_tokenizer(Some(BertPreTokenizer));
    tokenizer.with_post_processor(Some(BertProcessing::new((sep, sep_id), (cls, cls_id))));
    let specials: Vec<AddedToken> = [unk, pad, mask]
        .into_iter()
        .chain([
            special_token(config, "cls_token", "[CLS]"),
            special_token(config, "sep_token", "[SEP]"),
        ])
        .filter(|t| tokenizer.token_to_id(t).is_some())
        .map(|t| AddedToken::from(t, true))
        .collect();
    tokenizer.add_special_tokens(&specials);
    Ok(tokenizer)
}

/// Copies the tokenizer files present in `src_dir` into `dest_dir` byte for byte; returns the
/// copied destinations.
pub fn copy_tokenizer_files(
    src_dir: &Path,
    dest_dir: &Path,
) -> Result<Vec<PathBuf>, TokenizeError> {
    std::fs::create_dir_all(dest_dir).map_err(|e| TokenizeError::Io {
        path: dest_dir.to_path_buf(),
        source: e,
    })?;
    let mut copied = Vec::new();
    for name in TOKENIZER_FILES {
        let src = src_dir.join(name);
        if src.is_file() {
            let dest = dest_dir.join(name);
            std::fs::copy(&src, &dest).map_err(|e| TokenizeError::Io {
                path: src.clone(),
                source: e,
            })?;
            copied.push(dest);
        }
    }
    Ok(copied)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_length_limits() {
        assert!(check_max_length(128, 512).is_ok());
        assert!(check_max_length(512, 512).is_ok());
        let err = check_max_length(513, 512).unwrap_err().to_string();
        assert!(err.contains("513") && err.contains("512"), "{err}");
        assert!(check_max_length(1, 512).is_err());
    }

    #[test]
    fn missing_tokenizer_is_an_error_naming_the_dir() {
        let tmp = tempfile::tempdir().unwrap();
        let err = TextEncoder::from_model_dir(tmp.path(), 16)
            .unwrap_err()
            .to_string();
        assert!(err.contains(&tmp.path().display().to_string()), "{err}");
    }

    #[test]
    fn copies_only_present_files() {
        let src = tempfile::tempdir().unwrap();
        let dest = tempfile::tempdir().unwrap();
        std::fs::write(src.path().join("vocab.txt"), "[PAD]\n").unwrap();
        std::fs::write(src.path().join("model.safetensors"), "x").unwrap();
        let copied = copy_tokenizer_files(src.path(), &dest.path().join("out")).unwrap();
        assert_eq!(copied, vec![dest.path().join("out").join("vocab.txt")]);
        assert!(!dest.path().join("out").join("model.safetensors").exists());
    }
}

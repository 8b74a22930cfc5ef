//! Text -> token ids, with the model's own tokenizer.
//!
//! [`TextEncoder`] wraps the `tokenizers` crate: `tokenizer.json` when the model has one (its
//! stored padding/truncation are replaced by txcat's: no padding, truncation to `max_length`),
//! else a BERT WordPiece tokenizer rebuilt from `vocab.txt` + `tokenizer_config.json`.
//! Encodings are unpadded, carry [CLS]/[SEP] and never exceed `max_length`; batching and
//! padding happen later, per batch.

pub mod batch;
mod encoder;

pub use encoder::{
    check_max_length, copy_tokenizer_files, Encoding, TextEncoder, TokenizeError, TOKENIZER_FILES,
};

use batch::{BatchError, TokenizedSet};

/// Texts tokenized per call: bounds the memory held by unpacked encodings.
const TOKENIZE_CHUNK: usize = 8192;

/// Why texts could not be turned into a [`TokenizedSet`].
#[derive(Debug, thiserror::Error)]
pub enum EncodeSetError {
    #[error(transparent)]
    Tokenize(#[from] TokenizeError),
    #[error("tokenized data: {0}")]
    Batch(#[from] BatchError),
}

/// Tokenizes `texts` once into compact storage (parallel inside the tokenizer), row `i` with
/// class id `label_ids[i]`.
pub fn tokenize_texts(
    encoder: &TextEncoder,
    texts: &[String],
    label_ids: &[usize],
    keep_type_ids: bool,
) -> Result<TokenizedSet, EncodeSetError> {
    let mut set = TokenizedSet::new(keep_type_ids);
    for (chunk, labels) in texts
        .chunks(TOKENIZE_CHUNK)
        .zip(label_ids.chunks(TOKENIZE_CHUNK))
    {
        let refs: Vec<&str> = chunk.iter().map(String::as_str).collect();
        for (encoding, &label) in encoder.encode_batch(&refs)?.iter().zip(labels) {
            set.push(&encoding.ids, &encoding.type_ids, label as u32)?;
        }
    }
    Ok(set)
}

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

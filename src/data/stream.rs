//! Byte-level steps every row format takes before parsing: looking ahead, gunzipping.

use std::io::{BufReader, Cursor, Read};

const GZIP_MAGIC: &[u8] = &[0x1f, 0x8b];

/// Reads up to `n` bytes (fewer only at end of stream), for sniffing without losing them.
pub fn peek(
    mut reader: Box<dyn Read + Send>,
    n: usize,
) -> std::io::Result<(Vec<u8>, Box<dyn Read + Send>)> {
    let mut head = Vec::with_capacity(n);
    (&mut reader).take(n as u64).read_to_end(&mut head)?;
    Ok((head, reader))
}

/// The object's bytes, gunzipped (multi-member) when they start with the gzip magic.
pub fn gunzipped(raw: Box<dyn Read + Send>) -> std::io::Result<Box<dyn Read + Send>> {
    let (head, rest) = peek(raw, GZIP_MAGIC.len())?;
    let is_gzip = head == GZIP_MAGIC;
    let joined: Box<dyn Read + Send> = Box::new(Cursor::new(head).chain(rest));
    Ok(if is_gzip {
        Box::new(BufReader::new(flate2::read::MultiGzDecoder::new(joined)))
    } else {
        joined
    })
}

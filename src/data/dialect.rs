//! CSV dialects as real exports have them: the text encoding and the field delimiter of a file.
//!
//! - [`transcode`]: bytes in any [`CsvEncoding`] -> UTF-8, streamed (encoding_rs does the tables
//!   and the state across chunk edges; we only pump bytes). `auto` keeps UTF-8 until the first
//!   byte that is not UTF-8 and then reads the file as windows-1252 (see [`Transcoder`]).
//! - [`sniff_delimiter`]: the delimiter of a file from its header line.
//!
//! Invariant: nothing here buffers more than one chunk or the header line of a file.

use super::stream::peek;
use crate::hyperparams::{CsvDelimiter, CsvEncoding, CSV_DELIMITERS};
use std::io::{Cursor, Read};
use std::sync::{Arc, Mutex};

/// How one file's bytes are split into fields and decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dialect {
    pub delimiter: CsvDelimiter,
    pub encoding: CsvEncoding,
}

impl Default for Dialect {
    fn default() -> Self {
        Self {
            delimiter: CsvDelimiter::Auto,
            encoding: CsvEncoding::Utf8,
        }
    }
}

/// The encoding a file was read as, known once the file has been read (`auto` decides late).
#[derive(Debug, Clone, Default)]
pub struct EncodingUsed(Arc<Mutex<Option<Decision>>>);

/// What `csv_encoding=auto` decided for a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Utf8,
    Utf16,
    /// The first byte that is not UTF-8, counted in the (gunzipped) file.
    Windows1252 {
        first_non_utf8_byte: u64,
    },
}

impl EncodingUsed {
    /// `None` for a fixed encoding, or for an `auto` file that held only ASCII.
    pub fn decision(&self) -> Option<Decision> {
        self.0.lock().map(|d| d.clone()).unwrap_or(None)
    }

    fn set(&self, decision: Decision) {
        if let Ok(mut d) = self.0.lock() {
            *d = Some(decision);
        }
    }
}

const CHUNK: usize = 64 * 1024;
const UTF8_BOM: &[u8] = &[0xef, 0xbb, 0xbf];
const UTF16LE_BOM: &[u8] = &[0xff, 0xfe];
const UTF16BE_BOM: &[u8] = &[0xfe, 0xff];

/// `raw` decoded from `encoding` into UTF-8 without a BOM. For UTF-8 the bytes pass through
/// unchanged (invalid sequences are left for the row checks, which name file and line).
pub fn transcode(
    raw: Box<dyn Read + Send>,
    encoding: CsvEncoding,
) -> std::io::Result<(Box<dyn Read + Send>, EncodingUsed)> {
    let used = EncodingUsed::default();
    let (head, rest) = peek(raw, 3)?;
    let has = |bom: &[u8]| head.starts_with(bom);
    let mode = match encoding {
        CsvEncoding::Utf8 => Mode::Passthrough,
        // encoding_rs decoders made by `new_decoder` sniff and drop a BOM themselves.
        CsvEncoding::Utf16 => Mode::Decode(encoding_rs::UTF_16LE.new_decoder()),
        CsvEncoding::Windows1252 => Mode::Decode(encoding_rs::WINDOWS_1252.new_decoder()),
        CsvEncoding::Latin1 => Mode::Latin1,
        CsvEncoding::Auto if has(UTF8_BOM) => {
            used.set(Decision::Utf8);
            Mode::Passthrough
        }
        CsvEncoding::Auto if has(UTF16LE_BOM) || has(UTF16BE_BOM) => {
            used.set(Decision::Utf16);
            Mode::Decode(encoding_rs::UTF_16LE.new_decoder())
        }
        CsvEncoding::Auto => Mode::Sniff,
    };
    let skip_utf8_bom = matches!(mode, Mode::Passthrough | Mode::Sniff) && has(UTF8_BOM);
    let head = if skip_utf8_bom {
        head[UTF8_BOM.len()..].to_vec()
    } else {
        head
    };
    let reader = Transcoder {
        inner: Box::new(Cursor::new(head).chain(rest)),
        mode,
        input: Vec::with_capacity(CHUNK),
        consumed: 0,
        output: Vec::new(),
        output_at: 0,
        eof: false,
        finished: false,
        used: used.clone(),
    };
    Ok((Box::new(reader), used))
}

enum Mode {
    Passthrough,
    Latin1,
    Decode(encoding_rs::Decoder),
    /// `auto`, only ASCII so far: the first non-ASCII sequence decides.
    Sniff,
}

/// A `Read` that yields UTF-8 for the bytes of `inner`.
struct Transcoder {
    inner: Box<dyn Read + Send>,
    mode: Mode,
    /// Raw bytes read but not yet converted (an incomplete sequence at a chunk edge waits here).
    input: Vec<u8>,
    /// Raw bytes converted so far (for the offset `auto` reports).
    consumed: u64,
    output: Vec<u8>,
    output_at: usize,
    /// `inner` has reported end of stream: read it no more.
    eof: bool,
    /// Everything, including a decoder's final flush, has been converted.
    finished: bool,
    used: EncodingUsed,
}

impl Transcoder {
    /// Reads one more chunk of raw bytes onto `input`; sets `eof` at the end of `inner`.
    fn fill(&mut self) -> std::io::Result<()> {
        let start = self.input.len();
        self.input.resize(start + CHUNK, 0);
        let n = loop {
            match self.inner.read(&mut self.input[start..]) {
                Ok(n) => break n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    self.input.truncate(start);
                    return Err(e);
                }
            }
        };
        self.input.truncate(start + n);
        if n == 0 {
            self.eof = true;
        }
        Ok(())
    }

    /// Moves the first `n` input bytes to the output unchanged.
    fn pass(&mut self, n: usize) {
        self.output.extend_from_slice(&self.input[..n]);
        self.input.drain(..n);
        self.consumed += n as u64;
    }

    /// Converts what `input` holds into `output`; may convert nothing when more bytes are needed.
    fn convert(&mut self) {
        match &mut self.mode {
            Mode::Passthrough => self.pass(self.input.len()),
            Mode::Latin1 => {
                let mut out = vec![0; self.input.len() * 2];
                let written = encoding_rs::mem::convert_latin1_to_utf8(&self.input, &mut out);
                self.output.extend_from_slice(&out[..written]);
                self.consumed += self.input.len() as u64;
                self.input.clear();
            }
            Mode::Decode(decoder) => {
                let cap = decoder
                    .max_utf8_buffer_length(self.input.len())
                    .unwrap_or(self.input.len() * 3 + 16);
                let mut out = vec![0; cap];
                let (_, read, written, _) = decoder.decode_to_utf8(&self.input, &mut out, self.eof);
                self.output.extend_from_slice(&out[..written]);
                self.input.drain(..read);
                self.consumed += read as u64;
                if self.eof {
                    self.finished = true;
                }
            }
            Mode::Sniff => match std::str::from_utf8(&self.input) {
                Ok(text) => {
                    if !text.is_ascii() {
                        self.commit_utf8();
                    }
                    self.pass(self.input.len());
                }
                Err(e) => {
                    let valid = e.valid_up_to();
                    if !self.input[..valid].is_ascii() {
                        self.commit_utf8();
                        self.pass(self.input.len());
                    } else if e.error_len().is_none() && !self.eof {
                        // A sequence cut at the chunk edge: pass the ASCII, wait for the rest.
                        self.pass(valid);
                    } else {
                        self.used.set(Decision::Windows1252 {
                            first_non_utf8_byte: self.consumed + valid as u64,
                        });
                        self.mode = Mode::Decode(
                            encoding_rs::WINDOWS_1252.new_decoder_without_bom_handling(),
                        );
                        self.convert();
                    }
                }
            },
        }
        if self.eof && self.input.is_empty() && !matches!(self.mode, Mode::Decode(_)) {
            self.finished = true;
        }
    }

    /// Once a real multi-byte UTF-8 sequence is seen the file is UTF-8: later invalid bytes are
    /// errors in their rows, not a reason to re-read what was already delivered as UTF-8.
    fn commit_utf8(&mut self) {
        self.used.set(Decision::Utf8);
        self.mode = Mode::Passthrough;
    }
}

impl Read for Transcoder {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        loop {
            if self.output_at < self.output.len() {
                let n = buf.len().min(self.output.len() - self.output_at);
                buf[..n].copy_from_slice(&self.output[self.output_at..self.output_at + n]);
                self.output_at += n;
                return Ok(n);
            }
            if self.finished {
                return Ok(0);
            }
            self.output.clear();
            self.output_at = 0;
            if !self.eof {
                self.fill()?;
            }
            self.convert();
        }
    }
}

/// Header lines longer than this are not sniffed (the delimiter falls back to `,`).
const MAX_HEADER_LINE: usize = 1 << 20;

/// The first line of a file, read ahead of the CSV parser.
pub struct HeaderLine {
    /// Without its line end.
    pub text: Vec<u8>,
    /// The line ended in `\r\n`. The csv crate then positions each later record at the `\n`
    /// left over from the previous one, a line (and a byte) early.
    pub crlf: bool,
}

/// The first line of `reader`, and a reader that still yields all bytes.
pub fn header_line(
    reader: Box<dyn Read + Send>,
) -> std::io::Result<(HeaderLine, Box<dyn Read + Send>)> {
    let mut reader = std::io::BufReader::with_capacity(CHUNK, reader);
    let mut line = Vec::new();
    std::io::BufRead::read_until(
        &mut (&mut reader).take(MAX_HEADER_LINE as u64),
        b'\n',
        &mut line,
    )?;
    let joined: Box<dyn Read + Send> = Box::new(Cursor::new(line.clone()).chain(reader));
    let crlf = line.ends_with(b"\r\n");
    while matches!(line.last(), Some(b'\n' | b'\r')) {
        line.pop();
    }
    Ok((HeaderLine { text: line, crlf }, joined))
}

/// The delimiter to use for a file whose header line is `line`: the fixed one, or for `auto` the
/// candidate that occurs most often outside quotes (ties in [`CSV_DELIMITERS`] order; `,` if none).
pub fn sniff_delimiter(choice: CsvDelimiter, line: &[u8]) -> u8 {
    let CsvDelimiter::Byte(fixed) = choice else {
        let counts = count_outside_quotes(line);
        return CSV_DELIMITERS
            .iter()
            .zip(counts)
            .fold(
                (b',', 0),
                |best, (&d, n)| if n > best.1 { (d, n) } else { best },
            )
            .0;
    };
    fixed
}

fn count_outside_quotes(line: &[u8]) -> [usize; 4] {
    let mut counts = [0; 4];
    let mut quoted = false;
    for &b in line {
        if b == b'"' {
            quoted = !quoted;
        } else if !quoted {
            if let Some(i) = CSV_DELIMITERS.iter().position(|&d| d == b) {
                counts[i] += 1;
            }
        }
    }
    counts
}

/// The header `line` split at `delimiter`, names trimmed.
pub fn split_header(line: &[u8], delimiter: u8) -> Vec<String> {
    let mut reader = ::csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .delimiter(delimiter)
        .from_reader(line);
    let mut record = ::csv::ByteRecord::new();
    match reader.read_byte_record(&mut record) {
        Ok(true) => record
            .iter()
            .map(|f| String::from_utf8_lossy(f).trim().to_string())
            .collect(),
        _ => Vec::new(),
    }
}

/// How a delimiter is written in a hyperparameter value.
pub fn delimiter_name(d: u8) -> String {
    CsvDelimiter::Byte(d).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(bytes: &[u8], encoding: CsvEncoding) -> (Vec<u8>, Option<Decision>) {
        let (mut r, used) = transcode(Box::new(Cursor::new(bytes.to_vec())), encoding).unwrap();
        let mut out = Vec::new();
        r.read_to_end(&mut out).unwrap();
        (out, used.decision())
    }

    /// Yields one byte per read, so every multi-byte sequence is cut at a read edge.
    struct Trickle(Vec<u8>, usize);
    impl Read for Trickle {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            if self.1 >= self.0.len() || buf.is_empty() {
                return Ok(0);
            }
            buf[0] = self.0[self.1];
            self.1 += 1;
            Ok(1)
        }
    }

    #[test]
    fn fixed_encodings_decode_to_utf8() {
        let cp1252 = b"text;cat\nCaf\xe9 \x96 \xa32\n";
        assert_eq!(
            decode_all(cp1252, CsvEncoding::Windows1252).0,
            "text;cat\nCafé – £2\n".as_bytes()
        );
        // Latin-1 keeps 0x96 as the C1 control U+0096, unlike windows-1252.
        assert_eq!(
            decode_all(b"\xe9\x96", CsvEncoding::Latin1).0,
            "é\u{96}".as_bytes()
        );
        let mut utf16 = vec![0xff, 0xfe];
        for u in "a,£\n".encode_utf16() {
            utf16.extend(u.to_le_bytes());
        }
        assert_eq!(decode_all(&utf16, CsvEncoding::Utf16).0, "a,£\n".as_bytes());
        let mut be = vec![0xfe, 0xff];
        for u in "x–".encode_utf16() {
            be.extend(u.to_be_bytes());
        }
        assert_eq!(decode_all(&be, CsvEncoding::Utf16).0, "x–".as_bytes());
        assert_eq!(decode_all(&be, CsvEncoding::Auto).1, Some(Decision::Utf16));
    }

    #[test]
    fn utf8_passes_through_without_bom_and_keeps_bad_bytes_for_row_checks() {
        let (out, used) = decode_all(b"\xef\xbb\xbfa,\xff\n", CsvEncoding::Utf8);
        assert_eq!(out, b"a,\xff\n");
        assert_eq!(used, None);
    }

    #[test]
    fn auto_reads_utf8_as_utf8_and_switches_on_the_first_non_utf8_byte() {
        let (out, used) = decode_all("a,£\n".as_bytes(), CsvEncoding::Auto);
        assert_eq!(out, "a,£\n".as_bytes());
        assert_eq!(used, Some(Decision::Utf8));
        let (out, used) = decode_all(b"abc\n\xa3 \x96\n", CsvEncoding::Auto);
        assert_eq!(out, "abc\n£ –\n".as_bytes());
        assert_eq!(
            used,
            Some(Decision::Windows1252 {
                first_non_utf8_byte: 4
            })
        );
        assert_eq!(decode_all(b"ascii only\n", CsvEncoding::Auto).1, None);
        // A file that ends in the middle of a UTF-8 sequence is not UTF-8.
        assert_eq!(decode_all(b"ab\xc2", CsvEncoding::Auto).0, "abÂ".as_bytes());
    }

    #[test]
    fn sequences_cut_at_read_edges_decode_whole() {
        for (bytes, encoding, want) in [
            ("x£–y".as_bytes().to_vec(), CsvEncoding::Auto, "x£–y"),
            (b"x\xa3\x96y".to_vec(), CsvEncoding::Auto, "x£–y"),
            (b"x\xa3\x96y".to_vec(), CsvEncoding::Windows1252, "x£–y"),
        ] {
            let (mut r, _) = transcode(Box::new(Trickle(bytes, 0)), encoding).unwrap();
            let mut out = String::new();
            r.read_to_string(&mut out).unwrap();
            assert_eq!(out, want);
        }
    }

    #[test]
    fn reading_past_the_end_stays_at_the_end() {
        for encoding in [
            CsvEncoding::Auto,
            CsvEncoding::Windows1252,
            CsvEncoding::Utf8,
        ] {
            let (mut r, _) = transcode(Box::new(Cursor::new(b"a\xa3".to_vec())), encoding).unwrap();
            let mut out = Vec::new();
            r.read_to_end(&mut out).unwrap();
            let mut buf = [0u8; 8];
            assert_eq!(r.read(&mut buf).unwrap(), 0);
            assert_eq!(r.read(&mut buf).unwrap(), 0);
        }
    }

    #[test]
    fn delimiter_is_sniffed_from_the_header_line_outside_quotes() {
        let auto = CsvDelimiter::Auto;
        assert_eq!(
            sniff_delimiter(auto, b"TRANS DATE; MERCHANT NAME; AMOUNT"),
            b';'
        );
        assert_eq!(sniff_delimiter(auto, b"a\tb\tc"), b'\t');
        assert_eq!(sniff_delimiter(auto, b"a|b"), b'|');
        assert_eq!(sniff_delimiter(auto, b"\"x;y;z\",b"), b',');
        assert_eq!(sniff_delimiter(auto, b"single"), b',');
        assert_eq!(sniff_delimiter(auto, b"a,b;c"), b',');
        assert_eq!(sniff_delimiter(CsvDelimiter::Byte(b';'), b"a,b,c"), b';');
    }

    #[test]
    fn header_line_is_returned_and_nothing_is_lost() {
        let (line, mut rest) =
            header_line(Box::new(Cursor::new(b"a;b\r\n1;2\n".to_vec()))).unwrap();
        assert!(line.crlf);
        let line = line.text;
        assert_eq!(line, b"a;b");
        let mut all = Vec::new();
        rest.read_to_end(&mut all).unwrap();
        assert_eq!(all, b"a;b\r\n1;2\n");
        assert_eq!(split_header(&line, b';'), vec!["a", "b"]);
    }
}

//! Deterministic labelled CSV bodies for end-to-end tests, plus an independent count of their
//! rows and labels (the `csv` crate, gzip sniffed by its magic bytes) to compare txcat's dry-run
//! summary with.
#![allow(dead_code)]

use flate2::read::GzDecoder;
use flate2::write::GzEncoder;
use flate2::Compression;
use std::collections::BTreeMap;
use std::io::{Read, Write};

/// Classes and marker words (all in the tiny fixtures' vocabulary); every row also carries
/// noise words shared by all classes.
pub const CLASSES: &[(&str, &[&str])] = &[
    ("FEES", &["fee", "charges", "service"]),
    ("FUEL", &["shell", "sasol", "engen"]),
    ("GROCERIES", &["woolworths", "spar", "checkers"]),
    ("INCOME", &["salary", "interest", "deposit"]),
];
const NOISE: &[&str] = &[
    "pos", "card", "purchase", "ref", "online", "payment", "bank",
];

/// A splitmix-style step: a small deterministic generator, so test data needs no RNG crate.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// `text,category` CSV with `rows` rows cycling through [`CLASSES`] (offset by `seed`). Some
/// texts need CSV quoting (a comma, a doubled quote) so the count below is a real parse.
pub fn labelled_csv(rows: usize, seed: u64) -> String {
    let mut csv = String::from("text,category\n");
    for i in 0..rows {
        let r = mix(seed.wrapping_mul(1_000_003).wrapping_add(i as u64));
        let (label, markers) = CLASSES[(i + seed as usize) % CLASSES.len()];
        let noise = NOISE[(r % NOISE.len() as u64) as usize];
        let marker = markers[((r >> 8) % markers.len() as u64) as usize];
        let number = 10 + (r >> 16) % 9990;
        let text = match (r >> 40) % 5 {
            0 => format!("\"{noise}, {marker} {number}\""),
            1 => format!("\"{marker} \"\"{noise}\"\" {number}\""),
            _ => format!("{noise} {marker} {number}"),
        };
        csv.push_str(&format!("{text},{label}\n"));
    }
    csv
}

/// Gzip of `bytes`.
pub fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = GzEncoder::new(Vec::new(), Compression::default());
    encoder.write_all(bytes).expect("gzip write");
    encoder.finish().expect("gzip finish")
}

/// `category` -> rows over every body (each a CSV file with a header; gzip is decoded), counted
/// with the `csv` crate.
pub fn label_counts<'a>(bodies: impl IntoIterator<Item = &'a [u8]>) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for body in bodies {
        let mut plain = Vec::new();
        if body.starts_with(&[0x1f, 0x8b]) {
            GzDecoder::new(body)
                .read_to_end(&mut plain)
                .expect("gunzip test body");
        } else {
            plain.extend_from_slice(body);
        }
        let mut reader = csv::Reader::from_reader(plain.as_slice());
        let at = reader
            .headers()
            .expect("header")
            .iter()
            .position(|h| h == "category")
            .expect("category column");
        for record in reader.records() {
            let record = record.expect("test CSV row");
            *counts.entry(record[at].to_string()).or_insert(0) += 1;
        }
    }
    counts
}

/// Total rows of a label count map.
pub fn total(counts: &BTreeMap<String, usize>) -> usize {
    counts.values().sum()
}

//! `storage::s3` against a real S3 API (moto_server): channel listing and streaming, markers,
//! pagination, errors, model download and output upload.

mod support;

use flate2::write::GzEncoder;
use flate2::Compression;
use std::io::{Read, Write};
use std::time::Duration;
use support::moto::{MotoServer, S3Admin};
use support::objects::read_all_objects;
use txcat::storage::s3::{self, RetryPolicy, S3Options};
use txcat::storage::StorageError;

fn options(endpoint: &str) -> S3Options {
    S3Options {
        endpoint_url: Some(endpoint.to_string()),
        retry: RetryPolicy {
            max_attempts: 3,
            initial_backoff: Duration::from_millis(20),
            max_backoff: Duration::from_millis(100),
            deadline: Duration::from_secs(10),
        },
        ..S3Options::default()
    }
}

/// Every object of a channel as (name, bytes, concatenated).
fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = GzEncoder::new(Vec::new(), Compression::default());
    encoder.write_all(bytes).unwrap();
    encoder.finish().unwrap()
}

fn setup_channel(admin: &S3Admin) -> Vec<(String, Vec<u8>)> {
    admin.create_bucket("bkt");
    let wanted = vec![
        (
            "data/a.csv".to_string(),
            b"text,label\ncoffee shop,food\n".to_vec(),
        ),
        (
            "data/b.csv.gz".to_string(),
            gzip(b"text,label\nuber trip,transport\n"),
        ),
        (
            "data/sub/c.csv".to_string(),
            b"text,label\nrent,housing\n".to_vec(),
        ),
    ];
    for (key, body) in &wanted {
        admin.put("bkt", key, body);
    }
    // Not data: markers, hidden files, a "directory" object, and a sibling prefix.
    for key in [
        "data/_SUCCESS",
        "data/.hidden.csv",
        "data/.tmp/x.csv",
        "data/sub/",
        "data-old/z.csv",
        "datax.csv",
    ] {
        admin.put("bkt", key, b"not,data\n");
    }
    wanted
}

#[test]
fn prefix_yields_data_objects_in_key_order_with_exact_bytes() {
    let moto = MotoServer::start();
    let admin = moto.admin();
    let wanted = setup_channel(&admin);
    for uri in ["s3://bkt/data", "s3://bkt/data/"] {
        let got = read_all_objects(
            s3::open_channel("train", uri, options(&moto.endpoint)).expect("open"),
        );
        let expected: Vec<_> = wanted
            .iter()
            .map(|(k, b)| (format!("s3://bkt/{k}"), b.clone()))
            .collect();
        assert_eq!(got, expected, "{uri}");
    }
}

#[test]
fn single_key_is_one_object_and_missing_key_names_the_uri() {
    let moto = MotoServer::start();
    let admin = moto.admin();
    let wanted = setup_channel(&admin);
    let got = read_all_objects(
        s3::open_channel("train", "s3://bkt/data/b.csv.gz", options(&moto.endpoint)).unwrap(),
    );
    assert_eq!(
        got,
        vec![("s3://bkt/data/b.csv.gz".to_string(), wanted[1].1.clone())]
    );

    let err = s3::open_channel("train", "s3://bkt/data/nope.csv", options(&moto.endpoint))
        .err()
        .expect("missing key must fail");
    assert!(matches!(err, StorageError::NoSuchKey { .. }), "{err:?}");
    let text = err.to_string();
    assert!(
        text.contains("s3://bkt/data/nope.csv") && !text.contains('\n'),
        "{text}"
    );
}

#[test]
fn missing_bucket_and_empty_prefixes_fail_with_one_line_naming_the_uri() {
    let moto = MotoServer::start();
    let admin = moto.admin();
    setup_channel(&admin);
    admin.put("bkt", "markers-only/_SUCCESS", b"");

    let cases = [
        ("s3://no-such-bucket/data/", "does not exist (NoSuchBucket)"),
        (
            "s3://bkt/empty/",
            "channel 'train': no data files in s3://bkt/empty/",
        ),
        (
            "s3://bkt/markers-only/",
            "channel 'train': no data files in s3://bkt/markers-only/",
        ),
        ("s3:/bkt/typo", "invalid S3 URI"),
    ];
    for (uri, expected) in cases {
        let err = s3::open_channel("train", uri, options(&moto.endpoint))
            .err()
            .expect(uri)
            .to_string();
        assert!(err.contains(uri) && err.contains(expected), "{uri}: {err}");
        assert!(!err.contains('\n'), "{uri}: {err}");
    }
}

#[test]
fn listing_follows_pagination_past_1000_keys() {
    let moto = MotoServer::start();
    let admin = moto.admin();
    admin.create_bucket("many");
    let count = 1234;
    let objects: Vec<_> = (0..count)
        .map(|i| {
            (
                format!("rows/part-{i:05}.csv"),
                format!("row {i}\n").into_bytes(),
            )
        })
        .collect();
    admin.put_many("many", objects.clone());
    let got = read_all_objects(
        s3::open_channel("train", "s3://many/rows/", options(&moto.endpoint)).unwrap(),
    );
    assert_eq!(got.len(), count);
    for ((name, bytes), (key, body)) in got.iter().zip(&objects) {
        assert_eq!(name, &format!("s3://many/{key}"));
        assert_eq!(bytes, body);
    }
}

#[test]
fn download_prefix_mirrors_relative_paths_and_skips_markers() {
    let moto = MotoServer::start();
    let admin = moto.admin();
    admin.create_bucket("models");
    admin.put("models", "runs/7/model/config.json", b"{\"dim\": 8}");
    admin.put("models", "runs/7/model/tok/vocab.txt", b"[PAD]\n[UNK]\n");
    admin.put("models", "runs/7/model/_SUCCESS", b"");
    let dest = tempfile::tempdir().unwrap();
    s3::download_prefix(
        "s3://models/runs/7/model",
        dest.path(),
        options(&moto.endpoint),
    )
    .unwrap();
    assert_eq!(
        std::fs::read(dest.path().join("config.json")).unwrap(),
        b"{\"dim\": 8}"
    );
    assert_eq!(
        std::fs::read(dest.path().join("tok/vocab.txt")).unwrap(),
        b"[PAD]\n[UNK]\n"
    );
    let mut names: Vec<_> = std::fs::read_dir(dest.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    names.sort();
    assert_eq!(names, ["config.json", "tok"]);
}

#[test]
fn download_prefix_refuses_keys_escaping_the_destination() {
    let moto = MotoServer::start();
    let admin = moto.admin();
    admin.create_bucket("evil");
    admin.put("evil", "m/config.json", b"{}");
    admin.put("evil", "m//etc/passwd-copy", b"root");
    let dest = tempfile::tempdir().unwrap();
    let err = s3::download_prefix(
        "s3://evil/m/",
        &dest.path().join("model"),
        options(&moto.endpoint),
    )
    .expect_err("an absolute key must be refused");
    assert!(matches!(err, StorageError::UnsafeKey { .. }), "{err:?}");
    assert!(err.to_string().contains("m//etc/passwd-copy"), "{err}");
    // Refused before anything was written.
    assert!(!dest.path().join("model").exists());
}

fn tar_entries(gz: &[u8]) -> Vec<(String, Vec<u8>)> {
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(gz));
    let mut entries = Vec::new();
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        let path = entry.path().unwrap().to_string_lossy().to_string();
        let mut bytes = Vec::new();
        entry.read_to_end(&mut bytes).unwrap();
        entries.push((path, bytes));
    }
    entries
}

#[test]
fn upload_outputs_writes_model_and_output_tarballs() {
    let moto = MotoServer::start();
    let admin = moto.admin();
    admin.create_bucket("out");
    let work = tempfile::tempdir().unwrap();
    let model = work.path().join("model");
    let output = work.path().join("output-data");
    std::fs::create_dir_all(model.join("tokenizer")).unwrap();
    std::fs::create_dir_all(&output).unwrap();
    // Incompressible and larger than one part, so the multipart path runs.
    let mut state = 0x1234_5678u32;
    let weights: Vec<u8> = (0..11 * 1024 * 1024)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            state as u8
        })
        .collect();
    std::fs::write(model.join("model.safetensors"), &weights).unwrap();
    std::fs::write(model.join("config.json"), b"{\"labels\": 3}").unwrap();
    std::fs::write(model.join("tokenizer/tokenizer.json"), b"{}").unwrap();
    std::fs::write(output.join("metrics.json"), b"{\"f1\": 0.9}").unwrap();

    let opts = S3Options {
        part_size: 5 * 1024 * 1024,
        ..options(&moto.endpoint)
    };
    s3::upload_outputs("s3://out/jobs/42", &model, &output, opts).unwrap();

    let mut keys = admin.keys("out");
    keys.sort();
    assert_eq!(
        keys,
        ["jobs/42/model.tar.gz", "jobs/42/output.tar.gz"],
        "no temporary keys left"
    );
    let model_entries = tar_entries(&admin.get("out", "jobs/42/model.tar.gz"));
    let names: Vec<_> = model_entries.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "config.json",
            "model.safetensors",
            "tokenizer",
            "tokenizer/tokenizer.json"
        ]
    );
    assert_eq!(model_entries[1].1, weights);
    assert_eq!(model_entries[3].1, b"{}");
    let output_entries = tar_entries(&admin.get("out", "jobs/42/output.tar.gz"));
    assert_eq!(
        output_entries,
        [("metrics.json".to_string(), b"{\"f1\": 0.9}".to_vec())]
    );
}

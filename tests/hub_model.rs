//! `model_name_or_path` as a Hugging Face Hub id, against a fake Hub this test runs on 127.0.0.1.
//!
//! The fake answers what hf-hub 0.4's blocking client asks (read from its source): the revision
//! info `GET /api/models/<repo>/revision/<rev>` (JSON `sha` + `siblings`), and
//! `GET /<repo>/resolve/<rev>/<file>` with `Range: bytes=0-0` (metadata: `ETag`, `X-Repo-Commit`,
//! `Content-Range: bytes 0-0/<size>`) then `Range: bytes=<start>-` (the body). It serves the
//! tiny test model, counts requests, can require a bearer token, and can stop sending a file's
//! body halfway (a stalled download).

mod common;

use common::{describe, fixture, separable_csv, OptMl};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::Output;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const SHA: &str = "0123456789abcdef0123456789abcdef01234567";
const TOKEN: &str = "hf_test_secret_token";

/// One repo: its files, whether it needs [`TOKEN`], and whether the body of
/// `model.safetensors` stops halfway with the connection left open.
struct FakeRepo {
    files: BTreeMap<String, Vec<u8>>,
    private: bool,
    stalls: bool,
}

/// The header `answer` adds to tell `serve` to stall that response (never sent).
const STALL: &str = "X-Fake-Stall";

/// The fake Hub: repos by id, and every request path it saw.
struct FakeHub {
    port: u16,
    seen: Arc<Mutex<Vec<String>>>,
}

impl FakeHub {
    fn start(repos: BTreeMap<String, FakeRepo>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = Arc::clone(&seen);
        let repos = Arc::new(repos);
        // Serves until the test process ends; each connection answers one request then closes.
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let repos = Arc::clone(&repos);
                let log = Arc::clone(&log);
                std::thread::spawn(move || serve(stream, &repos, &log));
            }
        });
        Self { port, seen }
    }

    fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn requests(&self) -> Vec<String> {
        self.seen.lock().unwrap().clone()
    }
}

fn serve(stream: TcpStream, repos: &BTreeMap<String, FakeRepo>, log: &Mutex<Vec<String>>) {
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut line = String::new();
    if reader.read_line(&mut line).is_err() {
        return;
    }
    let path = line.split_whitespace().nth(1).unwrap_or("").to_string();
    let mut headers = BTreeMap::new();
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
        }
    }
    log.lock().unwrap().push(path.clone());
    let (status, mut extra, mut body) = answer(&path, &headers, repos);
    let stall = extra.iter().any(|(k, _)| k == STALL);
    extra.retain(|(k, _)| k != STALL);
    let full = body.len();
    if stall {
        body.truncate(full / 2);
    }
    let mut out = stream;
    let mut head = format!("HTTP/1.1 {status}\r\nContent-Length: {full}\r\nConnection: close\r\n");
    for (k, v) in extra {
        head += &format!("{k}: {v}\r\n");
    }
    head += "\r\n";
    let _ = out.write_all(head.as_bytes());
    let _ = out.write_all(&body);
    if stall {
        let _ = out.flush();
        // Holds the connection open, sending nothing more, as a stuck proxy would.
        std::thread::sleep(Duration::from_secs(120));
    }
}

type Answer = (&'static str, Vec<(String, String)>, Vec<u8>);

fn answer(
    path: &str,
    headers: &BTreeMap<String, String>,
    repos: &BTreeMap<String, FakeRepo>,
) -> Answer {
    let not_found = (
        "404 Not Found",
        vec![],
        b"{\"error\":\"Repository Not Found\"}".to_vec(),
    );
    let authorized =
        headers.get("authorization").map(String::as_str) == Some(&*format!("Bearer {TOKEN}"));
    let (repo_id, rest) = if let Some(api) = path.strip_prefix("/api/models/") {
        match api.split_once("/revision/") {
            Some((id, rev)) => (id.to_string(), format!("info:{rev}")),
            None => return not_found,
        }
    } else {
        match path.trim_start_matches('/').split_once("/resolve/") {
            Some((id, rest)) => (id.to_string(), format!("file:{rest}")),
            None => return not_found,
        }
    };
    let Some(repo) = repos.get(&repo_id) else {
        return not_found;
    };
    if repo.private && !authorized {
        return (
            "401 Unauthorized",
            vec![],
            b"{\"error\":\"Invalid credentials\"}".to_vec(),
        );
    }
    if let Some(rev) = rest.strip_prefix("info:") {
        if rev != "main" && rev != SHA {
            return not_found;
        }
        let siblings: Vec<serde_json::Value> = repo
            .files
            .keys()
            .map(|f| serde_json::json!({ "rfilename": f }))
            .collect();
        let body = serde_json::json!({"id": repo_id, "sha": SHA, "siblings": siblings});
        return (
            "200 OK",
            vec![("Content-Type".into(), "application/json".into())],
            body.to_string().into_bytes(),
        );
    }
    let rest = rest.strip_prefix("file:").unwrap();
    let Some((rev, file)) = rest.split_once('/') else {
        return not_found;
    };
    let Some(bytes) = repo.files.get(file).filter(|_| rev == "main" || rev == SHA) else {
        return not_found;
    };
    let start: usize = headers
        .get("range")
        .and_then(|r| r.strip_prefix("bytes="))
        .and_then(|r| r.split('-').next())
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let end = match headers.get("range").map(String::as_str) {
        Some("bytes=0-0") => 1.min(bytes.len()),
        _ => bytes.len(),
    };
    let etag = format!("\"etag-{}-{}\"", file.replace('.', "-"), bytes.len());
    let mut extra = vec![
        ("ETag".to_string(), etag),
        ("X-Repo-Commit".to_string(), SHA.to_string()),
        (
            "Content-Range".to_string(),
            format!("bytes {start}-{}/{}", end.max(1) - 1, bytes.len()),
        ),
    ];
    if repo.stalls && file == "model.safetensors" && end > 1 {
        extra.push((STALL.to_string(), String::new()));
    }
    (
        "206 Partial Content",
        extra,
        bytes[start.min(end)..end].to_vec(),
    )
}

/// The tiny test model's files, plus a README and a pickle the client must not fetch.
fn tiny_repo(private: bool) -> FakeRepo {
    let dir = fixture("tiny-distilbert-trainable");
    let mut files = BTreeMap::new();
    for name in [
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
        "vocab.txt",
    ] {
        files.insert(name.to_string(), std::fs::read(dir.join(name)).unwrap());
    }
    files.insert("README.md".into(), b"# tiny".to_vec());
    files.insert("pytorch_model.bin".into(), b"not fetched".to_vec());
    FakeRepo {
        files,
        private,
        stalls: false,
    }
}

fn hub() -> FakeHub {
    let mut repos = BTreeMap::new();
    repos.insert("txcat-tests/tiny".to_string(), tiny_repo(false));
    repos.insert("txcat-tests/private".to_string(), tiny_repo(true));
    let mut pickle = tiny_repo(false);
    pickle.files.remove("model.safetensors");
    repos.insert("txcat-tests/pickle".to_string(), pickle);
    let mut stuck = tiny_repo(false);
    stuck.stalls = true;
    repos.insert("txcat-tests/stuck".to_string(), stuck);
    FakeHub::start(repos)
}

/// A small job whose model is `model` (a Hub id), quick settings plus `extra`.
fn job(model: &str, extra: &[(&str, &str)]) -> OptMl {
    let ml = OptMl::new();
    ml.add_channel_file("train", "train.csv", separable_csv(48, 1));
    ml.add_channel_file("validation", "val.csv", separable_csv(16, 2));
    let mut hp = vec![
        ("model_name_or_path", model),
        ("epochs", "2"),
        ("train_batch_size", "16"),
        ("max_length", "32"),
        ("num_threads", "1"),
        ("save_strategy", "no"),
    ];
    hp.extend_from_slice(extra);
    ml.write_hyperparameters(&hp);
    ml
}

/// Runs txcat against `endpoint` with the Hub cache in `home` (online unless `env` says else).
fn run(ml: &OptMl, endpoint: &str, home: &Path, env: &[(&str, &str)], args: &[&str]) -> Output {
    let mut cmd = ml.command();
    cmd.env_remove("HF_HUB_OFFLINE")
        .env_remove("TXCAT_MODEL_HOME")
        .env("HF_ENDPOINT", endpoint)
        .env("HF_HOME", home);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.args(args).output().expect("run txcat")
}

/// `txcat train --dry-run` through [`run`].
fn dry_run(ml: &OptMl, endpoint: &str, home: &Path, env: &[(&str, &str)]) -> Output {
    run(ml, endpoint, home, env, &["train", "--dry-run"])
}

#[test]
fn a_hub_model_is_fetched_once_cached_and_trained_on() {
    let hub = hub();
    let home = tempfile::tempdir().unwrap();
    let ml = job("txcat-tests/tiny", &[]);
    let out = run(&ml, &hub.endpoint(), home.path(), &[], &["train"]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let requests = hub.requests();
    assert!(
        requests.contains(&"/api/models/txcat-tests/tiny/revision/main".to_string()),
        "{requests:?}"
    );
    let fetched: Vec<&str> = requests
        .iter()
        .filter_map(|p| p.strip_prefix("/txcat-tests/tiny/resolve/main/"))
        .collect();
    for file in [
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
    ] {
        assert!(fetched.contains(&file), "{file} not fetched: {requests:?}");
    }
    for file in ["pytorch_model.bin", "README.md", "vocab.txt"] {
        assert!(!fetched.contains(&file), "{file} fetched: {requests:?}");
    }
    // The Hub cache layout, with the commit the server named.
    let snapshot = home
        .path()
        .join("hub/models--txcat-tests--tiny/snapshots")
        .join(SHA);
    let served =
        std::fs::read(fixture("tiny-distilbert-trainable").join("model.safetensors")).unwrap();
    assert_eq!(
        std::fs::read(snapshot.join("model.safetensors")).unwrap(),
        served
    );
    assert!(
        ml.model_dir().join("model.safetensors").is_file(),
        "trained model written"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("txcat-tests/tiny"), "{stderr}");

    // Second run, same cache: no request at all; and offline works from the cache too.
    let before = hub.requests().len();
    let ml = job("txcat-tests/tiny", &[]);
    let out = dry_run(&ml, &hub.endpoint(), home.path(), &[]);
    ml.assert_dry_run_ok(&out);
    let out = dry_run(
        &ml,
        &hub.endpoint(),
        home.path(),
        &[("HF_HUB_OFFLINE", "1")],
    );
    ml.assert_dry_run_ok(&out);
    assert_eq!(
        hub.requests().len(),
        before,
        "{:?}",
        &hub.requests()[before..]
    );

    // A pinned commit is its own cache entry: fetched once by that revision.
    let ml = job("txcat-tests/tiny", &[("model_revision", SHA)]);
    let out = dry_run(&ml, &hub.endpoint(), home.path(), &[]);
    ml.assert_dry_run_ok(&out);
    let pinned = format!("/api/models/txcat-tests/tiny/revision/{SHA}");
    assert!(
        hub.requests()[before..].contains(&pinned),
        "{:?}",
        hub.requests()
    );
}

#[test]
fn private_models_take_hf_token_and_never_log_it() {
    let hub = hub();
    let home = tempfile::tempdir().unwrap();
    let ml = job("txcat-tests/private", &[]);
    let out = dry_run(&ml, &hub.endpoint(), home.path(), &[]);
    ml.assert_failed(
        &out,
        2,
        &["txcat-tests/private", "HTTP 401", "set HF_TOKEN"],
    );
    std::fs::remove_file(ml.path("output/failure")).unwrap();

    let out = dry_run(
        &ml,
        &hub.endpoint(),
        home.path(),
        &[("HF_TOKEN", "hf_wrong")],
    );
    ml.assert_failed(&out, 2, &["refused the token in HF_TOKEN"]);
    std::fs::remove_file(ml.path("output/failure")).unwrap();

    let out = dry_run(&ml, &hub.endpoint(), home.path(), &[("HF_TOKEN", TOKEN)]);
    ml.assert_dry_run_ok(&out);
    let log = describe(&out);
    assert!(!log.contains(TOKEN), "the token is logged\n{log}");
}

#[test]
fn a_missing_or_pickle_only_model_and_no_hub_are_one_line_errors() {
    let hub = hub();
    let home = tempfile::tempdir().unwrap();

    let ml = job("txcat-tests/nope", &[]);
    let out = dry_run(&ml, &hub.endpoint(), home.path(), &[]);
    ml.assert_failed(&out, 2, &["txcat-tests/nope", "HTTP 404", "model_revision"]);

    let ml = job("txcat-tests/tiny", &[("model_revision", "no-such-branch")]);
    let out = dry_run(&ml, &hub.endpoint(), home.path(), &[]);
    ml.assert_failed(&out, 2, &["revision `no-such-branch`", "HTTP 404"]);

    let ml = job("txcat-tests/pickle", &[]);
    let out = dry_run(&ml, &hub.endpoint(), home.path(), &[]);
    ml.assert_failed(
        &out,
        2,
        &["only pickle weights (pytorch_model.bin)", "safetensors"],
    );
    assert!(
        !hub.requests()
            .iter()
            .any(|p| p.contains("/pickle/resolve/")),
        "nothing downloaded from a pickle-only repo: {:?}",
        hub.requests()
    );

    // A closed port: bounded retries, then one line naming the model and the other ways.
    let dead = {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://127.0.0.1:{}", listener.local_addr().unwrap().port())
    };
    let ml = job("txcat-tests/tiny", &[]);
    let started = Instant::now();
    let out = dry_run(&ml, &dead, home.path(), &[]);
    let took = started.elapsed();
    ml.assert_failed(
        &out,
        1,
        &[
            "model `txcat-tests/tiny` not found",
            "cannot be reached",
            "`model` input channel",
            "$TXCAT_MODEL_HOME",
            "baked into the image",
        ],
    );
    assert!(took < Duration::from_secs(30), "took {took:?}");

    // Offline with an empty cache: no request, fails at once.
    let ml = job("txcat-tests/tiny", &[]);
    let before = hub.requests().len();
    let started = Instant::now();
    let out = dry_run(
        &ml,
        &hub.endpoint(),
        home.path(),
        &[("HF_HUB_OFFLINE", "1")],
    );
    ml.assert_failed(&out, 2, &["HF_HUB_OFFLINE", "txcat-tests/tiny"]);
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(hub.requests().len(), before);
}

#[test]
fn an_endpoint_that_never_answers_fails_within_30_seconds() {
    // Connections are accepted by the kernel (the listener lives) but no byte ever comes back,
    // as with a proxy that swallows traffic.
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://127.0.0.1:{}", silent.local_addr().unwrap().port());
    let home = tempfile::tempdir().unwrap();
    let ml = job("txcat-tests/tiny", &[]);
    let started = Instant::now();
    let out = dry_run(&ml, &endpoint, home.path(), &[]);
    let took = started.elapsed();
    ml.assert_failed(
        &out,
        1,
        &["txcat-tests/tiny", "cannot be reached", "no answer within"],
    );
    assert!(took < Duration::from_secs(30), "took {took:?}");
    drop(silent);
}

#[test]
fn a_download_that_stops_sending_fails_after_hf_hub_download_timeout() {
    // The weights' body stops halfway and the connection stays open: without a stall limit the
    // job would wait for ever.
    let hub = hub();
    let home = tempfile::tempdir().unwrap();
    let ml = job("txcat-tests/stuck", &[]);
    let started = Instant::now();
    let out = dry_run(
        &ml,
        &hub.endpoint(),
        home.path(),
        &[("HF_HUB_DOWNLOAD_TIMEOUT", "2")],
    );
    let took = started.elapsed();
    ml.assert_failed(
        &out,
        1,
        &[
            "txcat-tests/stuck",
            "downloading model.safetensors",
            "no data for 2 s",
            "HF_HUB_DOWNLOAD_TIMEOUT",
        ],
    );
    assert!(took < Duration::from_secs(20), "took {took:?}");
    let snapshot = home
        .path()
        .join("hub/models--txcat-tests--stuck/snapshots")
        .join(SHA)
        .join("model.safetensors");
    assert!(
        !snapshot.exists(),
        "a half-downloaded file is in the snapshot"
    );
}

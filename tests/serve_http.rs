//! `txcat serve` through the real binary on a free loopback port, with a real HTTP client: every
//! request and response format, agreement with `txcat predict`, top_k, batch-transform line
//! counts, each error status, a caught model-thread panic, 64 concurrent clients with `/ping`
//! answering under load, start-up failures, and the SIGTERM drain.
//!
//! The model is trained once per test run by `txcat train` on the tiny DistilBERT fixture (a
//! separable 4-class set, max_length 32, so long texts are truncated as in training), so labels
//! differ between texts and a mix-up between texts or rows would show.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{describe, TXCAT};

const PANIC_TEXT: &str = "please panic now";

fn model() -> PathBuf {
    common::separable_model()
}

/// Bank-style texts: commas, quotes, non-ASCII, and one far longer than the model's 64 positions.
fn texts() -> Vec<String> {
    let mut texts: Vec<String> = [
        "shell 123 card",
        "salary deposit",
        "woolworths, pos purchase",
        "monthly service fee",
        "spar \"checkers\" 77",
        "unknown words here",
        "Caf\u{e9} Nero \u{2014} coffee & croissant",
        "\"quoted\" start, with comma",
        "POS PURCHASE WOOLWORTHS 1234",
        "EFT credit from J. Smith ref: rent march",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    texts.push("engen fuel card purchase ".repeat(400));
    texts
}

/// A running server; killed when dropped.
struct Server {
    child: Child,
    addr: SocketAddr,
    log: Arc<Mutex<String>>,
    agent: ureq::Agent,
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(120)))
        .build()
        .into()
}

/// `txcat serve` with a clean environment plus `env`, on 127.0.0.1 and a port the OS picks.
fn serve_command(model: &Path, env: &[(&str, &str)], extra: &[&str]) -> Command {
    let mut cmd = Command::new(TXCAT);
    for (key, _) in std::env::vars_os() {
        let key_text = key.to_string_lossy();
        if key_text.starts_with("SM_") || key_text.starts_with("SAGEMAKER_") {
            cmd.env_remove(&key);
        }
    }
    cmd.args(["serve", "--host", "127.0.0.1", "--port", "0", "--model"])
        .arg(model)
        .args(extra)
        .env("RUST_LOG", "info")
        .env_remove("OMP_WAIT_POLICY")
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    cmd
}

impl Server {
    fn start(env: &[(&str, &str)]) -> Server {
        let mut child = serve_command(&model(), env, &["--test-panic-text", PANIC_TEXT])
            .spawn()
            .expect("start txcat serve");
        let log = Arc::new(Mutex::new(String::new()));
        let (addr_tx, addr_rx) = mpsc::channel();
        let stderr = child.stderr.take().expect("stderr");
        let sink = Arc::clone(&log);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(at) = line.find("address=") {
                    let addr = line[at + "address=".len()..]
                        .split_whitespace()
                        .next()
                        .and_then(|a| a.parse::<SocketAddr>().ok());
                    if let Some(addr) = addr {
                        let _ = addr_tx.send(addr);
                    }
                }
                let mut log = sink.lock().unwrap();
                log.push_str(&line);
                log.push('\n');
            }
        });
        let addr = match addr_rx.recv_timeout(Duration::from_secs(60)) {
            Ok(addr) => addr,
            Err(_) => {
                let _ = child.kill();
                panic!("no listening line\n{}", log.lock().unwrap());
            }
        };
        let server = Server {
            child,
            addr,
            log,
            agent: agent(),
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let ping = server.get("/ping");
            if ping.0 == 200 {
                assert!(ping.2.is_empty(), "/ping body: {:?}", ping.2);
                break;
            }
            assert_eq!(ping.0, 503, "/ping before ready: {ping:?}");
            assert!(
                Instant::now() < deadline,
                "not ready in 60 s\n{}",
                server.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        server
    }

    fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// `(status, content type, body)`.
    fn get(&self, path: &str) -> (u16, String, String) {
        reply(self.agent.get(self.url(path)).call())
    }

    /// POSTs `body` to /invocations with these headers; `(status, content type, body)`.
    fn invoke(&self, headers: &[(&str, &str)], body: &[u8]) -> (u16, String, String) {
        let mut request = self.agent.post(self.url("/invocations"));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        reply(request.send(body))
    }

    fn json(&self, body: &serde_json::Value, accept: Option<&str>) -> (u16, String, String) {
        let mut headers = vec![("Content-Type", "application/json")];
        if let Some(a) = accept {
            headers.push(("Accept", a));
        }
        self.invoke(&headers, body.to_string().as_bytes())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn reply(result: Result<ureq::http::Response<ureq::Body>, ureq::Error>) -> (u16, String, String) {
    let mut response = result.expect("HTTP request");
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let body = response
        .body_mut()
        .with_config()
        .limit(64 << 20)
        .read_to_string()
        .expect("body");
    (status, content_type, body)
}

/// A best-first list of `(label, score)`.
type Ranked = Vec<(String, f64)>;

/// `txcat predict --top-k k` on `texts`, the reference every server answer must equal.
fn predict_reference(texts: &[String], k: usize) -> Vec<Ranked> {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.csv");
    let output = dir.path().join("out.csv");
    let mut writer = csv::Writer::from_path(&input).unwrap();
    writer.write_record(["text"]).unwrap();
    for t in texts {
        writer.write_record([t]).unwrap();
    }
    writer.flush().unwrap();
    let out = Command::new(TXCAT)
        .args(["predict", "--model"])
        .arg(model())
        .arg("--input")
        .arg(&input)
        .arg("--output")
        .arg(&output)
        .args(["--top-k", &k.to_string()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "predict\n{}", describe(&out));
    let mut reader = csv::Reader::from_path(&output).unwrap();
    reader
        .records()
        .map(|r| {
            let r = r.unwrap();
            (0..k)
                .map(|i| {
                    let (label, score) = if k == 1 {
                        (&r[1], &r[2])
                    } else {
                        (&r[1 + 2 * i], &r[2 + 2 * i])
                    };
                    (label.to_string(), score.parse().unwrap())
                })
                .collect()
        })
        .collect()
}

fn ranked_json(value: &serde_json::Value) -> Ranked {
    let one = |v: &serde_json::Value| {
        (
            v["label"].as_str().expect("label").to_string(),
            v["score"].as_f64().expect("score"),
        )
    };
    match value {
        serde_json::Value::Array(items) => items.iter().map(one).collect(),
        other => vec![one(other)],
    }
}

fn ranked_csv(line: &str) -> Ranked {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .from_reader(line.as_bytes());
    let record = reader.records().next().expect("a record").unwrap();
    assert_eq!(record.len() % 2, 0, "label,score pairs: {line:?}");
    (0..record.len() / 2)
        .map(|i| {
            (
                record[2 * i].to_string(),
                record[2 * i + 1].parse().unwrap(),
            )
        })
        .collect()
}

/// predict writes 6 decimals; the server's scores must agree to that.
fn assert_same(got: &Ranked, expected: &Ranked, what: &str) {
    assert_eq!(got.len(), expected.len(), "{what}: {got:?} vs {expected:?}");
    for ((gl, gs), (el, es)) in got.iter().zip(expected) {
        assert_eq!(gl, el, "{what}: {got:?} vs {expected:?}");
        assert!((gs - es).abs() < 2e-6, "{what}: {got:?} vs {expected:?}");
    }
}

fn top(reference: &[Ranked], k: usize) -> Vec<Ranked> {
    reference.iter().map(|r| r[..k].to_vec()).collect()
}

fn csv_quoted(text: &str) -> String {
    format!("\"{}\"", text.replace('"', "\"\""))
}

#[test]
fn every_format_agrees_with_predict() {
    let texts = texts();
    let labels = common::CLASSES.len();
    let reference = predict_reference(&texts, labels);
    let best = top(&reference, 1);
    let server = Server::start(&[]);
    // Unlike training, serving makes idle OpenMP workers sleep (they would steal the cores
    // from the threads answering requests).
    assert!(
        server.log().contains("omp_wait_policy=PASSIVE"),
        "serve should run with OMP_WAIT_POLICY=PASSIVE\n{}",
        server.log()
    );

    // JSON: one string, a list, top_k (list of lists), top_k above the label count (all labels).
    let (status, ct, body) = server.json(&serde_json::json!({"inputs": texts[0]}), None);
    assert_eq!((status, ct.as_str()), (200, "application/json"), "{body}");
    let value: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(value.as_array().unwrap().len(), 1);
    assert_same(&ranked_json(&value[0]), &best[0], "single string");

    let (status, _, body) = server.json(&serde_json::json!({"inputs": texts}), None);
    assert_eq!(status, 200, "{body}");
    let value: serde_json::Value = serde_json::from_str(&body).unwrap();
    let items = value.as_array().unwrap();
    assert_eq!(items.len(), texts.len());
    for (i, item) in items.iter().enumerate() {
        assert!(item.is_object(), "one object per text without top_k");
        assert_same(&ranked_json(item), &best[i], &format!("list item {i}"));
    }
    for (k, expected_k) in [(2, 2), (1, 1), (10, labels)] {
        let request = serde_json::json!({"inputs": texts, "parameters": {"top_k": k}});
        let (status, _, body) = server.json(&request, Some("application/json"));
        assert_eq!(status, 200, "{body}");
        let value: serde_json::Value = serde_json::from_str(&body).unwrap();
        for (i, item) in value.as_array().unwrap().iter().enumerate() {
            assert!(item.is_array(), "a list per text with top_k");
            assert_same(
                &ranked_json(item),
                &top(&reference, expected_k)[i],
                &format!("top_k={k} item {i}"),
            );
        }
    }

    // text/csv without a header: one text per line (commas kept), quoted lines unquoted.
    let plain: String = texts
        .iter()
        .map(|t| {
            if t.starts_with('"') {
                csv_quoted(t)
            } else {
                t.clone()
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    let (status, ct, body) = server.invoke(
        &[("Content-Type", "text/csv"), ("Accept", "text/csv")],
        format!("{plain}\n").as_bytes(),
    );
    assert_eq!((status, ct.as_str()), (200, "text/csv"), "{body}");
    let lines: Vec<&str> = body.split('\n').collect();
    assert_eq!(lines.len(), texts.len(), "{body:?}");
    for (i, line) in lines.iter().enumerate() {
        assert_same(&ranked_csv(line), &best[i], &format!("csv line {i}"));
    }

    // text/csv with a header row and a `text` column, answered as JSON Lines with top_k 2 from
    // SageMaker's custom attributes.
    let mut table = String::from("id,text,amount\r\n");
    for (i, t) in texts.iter().enumerate() {
        table.push_str(&format!("{i},{},1.00\r\n", csv_quoted(t)));
    }
    let (status, ct, body) = server.invoke(
        &[
            ("Content-Type", "text/csv; charset=utf-8"),
            ("Accept", "application/jsonlines"),
            ("X-Amzn-SageMaker-Custom-Attributes", "top_k=2"),
        ],
        table.as_bytes(),
    );
    assert_eq!(
        (status, ct.as_str()),
        (200, "application/jsonlines"),
        "{body}"
    );
    let lines: Vec<&str> = body.split('\n').collect();
    assert_eq!(lines.len(), texts.len());
    let top2 = top(&reference, 2);
    for (i, line) in lines.iter().enumerate() {
        let value: serde_json::Value = serde_json::from_str(line).unwrap();
        assert_same(
            &ranked_json(&value),
            &top2[i],
            &format!("jsonlines line {i}"),
        );
    }

    // application/jsonlines in ({"inputs"} and {"text"} objects), CSV out with top_k 3.
    let top3 = top(&reference, 3);
    let jsonl: Vec<String> = texts
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let key = if i % 2 == 0 { "inputs" } else { "text" };
            serde_json::json!({ key: t }).to_string()
        })
        .collect();
    let (status, _, body) = server.invoke(
        &[
            ("Content-Type", "application/jsonlines"),
            ("Accept", "text/csv"),
            ("X-Amzn-SageMaker-Custom-Attributes", "top_k=3"),
        ],
        jsonl.join("\n").as_bytes(),
    );
    assert_eq!(status, 200, "{body}");
    let lines: Vec<&str> = body.split('\n').collect();
    assert_eq!(lines.len(), texts.len());
    for (i, line) in lines.iter().enumerate() {
        assert_same(&ranked_csv(line), &top3[i], &format!("csv top 3 line {i}"));
    }

    // JSON Lines in, JSON (default Accept) out: one array in input order.
    let (status, ct, body) = server.invoke(
        &[("Content-Type", "application/jsonlines")],
        jsonl.join("\n").as_bytes(),
    );
    assert_eq!((status, ct.as_str()), (200, "application/json"), "{body}");
    let value: serde_json::Value = serde_json::from_str(&body).unwrap();
    for (i, item) in value.as_array().unwrap().iter().enumerate() {
        assert_same(&ranked_json(item), &best[i], &format!("jsonl->json {i}"));
    }

    // text/plain: the whole body is one text.
    for (i, t) in texts.iter().enumerate() {
        let (status, _, body) = server.invoke(
            &[("Content-Type", "text/plain"), ("Accept", "*/*")],
            t.as_bytes(),
        );
        assert_eq!(status, 200, "{body}");
        let value: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_same(&ranked_json(&value[0]), &best[i], &format!("plain {i}"));
    }
}

#[test]
fn batch_transform_returns_one_line_per_input_line() {
    let texts = texts();
    let reference = predict_reference(&texts, 1);
    let server = Server::start(&[("SAGEMAKER_BATCH", "true")]);

    let (status, ct, body) = server.get("/execution-parameters");
    assert_eq!((status, ct.as_str()), (200, "application/json"));
    let params: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(params["BatchStrategy"], "MULTI_RECORD");
    assert_eq!(params["MaxPayloadInMB"], 6);
    let concurrent = params["MaxConcurrentTransforms"].as_u64().unwrap();
    let cores = std::thread::available_parallelism().unwrap().get() as u64;
    assert!(concurrent >= 1 && concurrent <= cores && concurrent * 6 <= 100);

    // Many lines per request (SplitType=Line, MultiRecord): blank lines, a very long line,
    // whitespace-only lines, CRLF. Input line i is text (i * 7) % n, or blank every 5th line.
    let n = texts.len();
    let mut body_lines = Vec::new();
    let mut expected: Vec<Option<usize>> = Vec::new();
    for i in 0..300 {
        if i % 5 == 3 {
            body_lines.push(if i % 2 == 0 { "" } else { "   " }.to_string());
            expected.push(None);
        } else {
            let t = (i * 7) % n;
            let line = if texts[t].starts_with('"') {
                csv_quoted(&texts[t])
            } else {
                texts[t].clone()
            };
            body_lines.push(line);
            expected.push(Some(t));
        }
    }
    for (content_type, accept) in [
        ("text/csv", "text/csv"),
        ("text/csv", "application/json"),
        ("text/plain", "application/jsonlines"),
    ] {
        let plain = content_type == "text/plain";
        let lines: Vec<String> = body_lines
            .iter()
            .zip(&expected)
            .map(|(line, e)| match e {
                Some(t) if plain => texts[*t].clone(),
                _ => line.clone(),
            })
            .collect();
        let request = format!("{}\r\n", lines.join("\r\n"));
        let (status, _, body) = server.invoke(
            &[("Content-Type", content_type), ("Accept", accept)],
            request.as_bytes(),
        );
        assert_eq!(status, 200, "{content_type} -> {accept}: {body}");
        let out: Vec<&str> = body.split('\n').collect();
        assert_eq!(out.len(), expected.len(), "{content_type} -> {accept}");
        for (i, (line, e)) in out.iter().zip(&expected).enumerate() {
            match e {
                None => assert_eq!(*line, "", "blank in, blank out (line {i})"),
                Some(t) => {
                    let got = if accept == "text/csv" {
                        ranked_csv(line)
                    } else {
                        ranked_json(&serde_json::from_str(line).unwrap())
                    };
                    assert_same(&got, &reference[*t], &format!("{accept} line {i}"));
                }
            }
        }
    }

    // A mini-batch of blank lines only is still one output line per input line.
    let (status, _, body) = server.invoke(&[("Content-Type", "text/csv")], b"\n\n\n");
    assert_eq!(status, 200, "{body}");
    assert_eq!(body.split('\n').count(), 3, "{body:?}");
}

/// Sends raw bytes and reads the status line and body (for what a client library will not do:
/// a body promised but never sent, a chunked body past the limit).
fn raw_exchange(addr: SocketAddr, head: &str, body_chunks: &[Vec<u8>]) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    stream.write_all(head.as_bytes()).unwrap();
    for chunk in body_chunks {
        // The server may answer and close before the whole body is written.
        if stream.write_all(chunk).is_err() {
            break;
        }
    }
    let mut response = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                response.extend_from_slice(&buf[..n]);
                if let Some(end) = find_complete(&response) {
                    response.truncate(end);
                    break;
                }
            }
            Err(e) if response.is_empty() => panic!("no response: {e}"),
            Err(_) => break,
        }
    }
    let text = String::from_utf8_lossy(&response).to_string();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {text:?}"));
    let body = text.split("\r\n\r\n").nth(1).unwrap_or("").to_string();
    (status, body)
}

/// The end of a response with a Content-Length body, once all of it is in `bytes`.
fn find_complete(bytes: &[u8]) -> Option<usize> {
    let text = String::from_utf8_lossy(bytes);
    let head_end = text.find("\r\n\r\n")? + 4;
    let length: usize = text[..head_end].lines().find_map(|l| {
        let (name, value) = l.split_once(':')?;
        name.eq_ignore_ascii_case("content-length")
            .then(|| value.trim().parse().ok())?
    })?;
    (bytes.len() >= head_end + length).then_some(head_end + length)
}

fn assert_error(reply: (u16, String, String), status: u16, needle: &str) {
    let (got, ct, body) = reply;
    assert_eq!(got, status, "{body}");
    assert_eq!(ct, "application/json", "{body}");
    let value: serde_json::Value =
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"));
    assert_eq!(value["code"], status, "{body}");
    let message = value["message"].as_str().unwrap_or("");
    assert!(message.contains(needle), "{needle:?} not in {body}");
}

#[test]
fn bad_requests_get_json_errors_and_the_server_keeps_serving() {
    let mut server = Server::start(&[("SAGEMAKER_MAX_PAYLOAD_IN_MB", "1")]);
    let json = [("Content-Type", "application/json")];
    assert_error(
        server.invoke(&json, b"{\"inputs\": "),
        400,
        "not valid JSON",
    );
    assert_error(server.invoke(&json, b"{\"inputs\": 42}"), 400, "a number");
    assert_error(server.invoke(&json, b"[\"a\"]"), 400, "JSON object");
    assert_error(
        server.invoke(&json, b"{\"inputs\": [\"a\", null]}"),
        400,
        "[1]",
    );
    assert_error(server.invoke(&json, b"{\"inputs\": []}"), 400, "no text");
    assert_error(
        server.invoke(&json, b"{\"inputs\": \"  \"}"),
        400,
        "no text",
    );
    assert_error(
        server.invoke(
            &json,
            b"{\"inputs\": \"a\", \"parameters\": {\"top_k\": 0}}",
        ),
        400,
        "top_k",
    );
    assert_error(server.invoke(&json, b"\xff\xfe\xfd"), 400, "UTF-8");
    assert_error(
        server.invoke(&[("Content-Type", "text/csv")], b""),
        400,
        "no text",
    );
    assert_error(
        server.invoke(&[("Content-Type", "text/csv")], b"id,text\n1\n"),
        400,
        "line 2",
    );
    assert_error(
        server.invoke(&[("Content-Type", "application/jsonlines")], b"{\"x\": 1}"),
        400,
        "line 1",
    );
    assert_error(
        server.invoke(
            &[
                ("Content-Type", "text/csv"),
                ("X-Amzn-SageMaker-Custom-Attributes", "top_k=-1"),
            ],
            b"salary",
        ),
        400,
        "top_k",
    );
    assert_error(
        server.invoke(&[("Content-Type", "image/png")], b"\x89PNG"),
        415,
        "image/png",
    );
    assert_error(server.invoke(&[], b"salary"), 415, "Content-Type");
    assert_error(
        server.invoke(
            &[
                ("Content-Type", "text/plain"),
                ("Accept", "application/xml"),
            ],
            b"salary",
        ),
        406,
        "application/xml",
    );
    assert_error(server.get("/nope"), 404, "/ping");

    // 413 from Content-Length alone: the body is never sent, the answer comes anyway.
    let started = Instant::now();
    let (status, body) = raw_exchange(
        server.addr,
        "POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Type: text/csv\r\nContent-Length: 104857600\r\n\r\n",
        &[],
    );
    assert_eq!(status, 413, "{body}");
    assert!(body.contains("\"code\":413"), "{body}");
    assert!(started.elapsed() < Duration::from_secs(10));
    // 413 for a chunked body past the limit (1 MiB): refused while it streams. The client stops
    // right after the chunk that crosses the limit, so the server has read all it was sent.
    let chunk = {
        let data = "shell card\n".repeat(20_000); // 220 kB per chunk
        let mut c = format!("{:x}\r\n", data.len()).into_bytes();
        c.extend_from_slice(data.as_bytes());
        c.extend_from_slice(b"\r\n");
        c
    };
    let (status, body) = raw_exchange(
        server.addr,
        "POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Type: text/csv\r\nTransfer-Encoding: chunked\r\n\r\n",
        &vec![chunk; 5],
    );
    assert_eq!(status, 413, "{body}");
    // Just under the limit is fine.
    let long_line = format!("{}\n", "salary ".repeat(1428)); // 9,997 bytes
    let under = long_line.repeat((1 << 20) / long_line.len() - 1);
    let (status, _, body) = server.invoke(&[("Content-Type", "text/csv")], under.as_bytes());
    assert_eq!(status, 200, "{}", &body[..body.len().min(300)]);

    // A panic on the model thread is a 500 for that request only.
    let (status, ct, body) =
        server.json(&serde_json::json!({"inputs": ["salary", PANIC_TEXT]}), None);
    assert_eq!((status, ct.as_str()), (500, "application/json"), "{body}");
    assert!(body.contains("internal error"), "{body}");
    let (status, _, body) = server.json(&serde_json::json!({"inputs": "salary"}), None);
    assert_eq!(status, 200, "after a panic: {body}");
    assert_eq!(server.get("/ping").0, 200);
    assert!(
        server.child.try_wait().unwrap().is_none(),
        "server still running"
    );
}

#[test]
fn sixty_four_concurrent_clients_while_ping_stays_fast() {
    let texts = texts();
    let reference = Arc::new(predict_reference(&texts, 2));
    let server = Server::start(&[]);
    let texts = Arc::new(texts);
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));

    let pinger = {
        let agent = agent();
        let url = server.url("/ping");
        let done = Arc::clone(&done);
        std::thread::spawn(move || {
            let mut slowest = Duration::ZERO;
            let mut pings = 0;
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                let started = Instant::now();
                let (status, _, _) = reply(agent.get(&url).call());
                assert_eq!(status, 200, "/ping under load");
                slowest = slowest.max(started.elapsed());
                pings += 1;
                std::thread::sleep(Duration::from_millis(20));
            }
            (pings, slowest)
        })
    };

    let clients: Vec<_> = (0..64)
        .map(|c| {
            let agent = agent();
            let url = server.url("/invocations");
            let texts = Arc::clone(&texts);
            let reference = Arc::clone(&reference);
            std::thread::spawn(move || {
                for round in 0..4 {
                    // Each client its own mix and order of texts (1 to 40 of them).
                    let count = 1 + (c * 7 + round * 13) % 40;
                    let picks: Vec<usize> = (0..count)
                        .map(|i| (c * 31 + i * 17 + round) % texts.len())
                        .collect();
                    let inputs: Vec<&str> = picks.iter().map(|&i| texts[i].as_str()).collect();
                    let body = serde_json::json!({"inputs": inputs, "parameters": {"top_k": 2}});
                    let (status, _, body) = reply(
                        agent
                            .post(&url)
                            .header("Content-Type", "application/json")
                            .send(body.to_string().as_bytes()),
                    );
                    assert_eq!(status, 200, "client {c}: {body}");
                    let value: serde_json::Value = serde_json::from_str(&body).unwrap();
                    let items = value.as_array().unwrap();
                    assert_eq!(items.len(), picks.len());
                    for (item, &t) in items.iter().zip(&picks) {
                        assert_same(&ranked_json(item), &reference[t], &format!("client {c}"));
                    }
                }
            })
        })
        .collect();
    for client in clients {
        client.join().expect("a client failed");
    }
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    let (pings, slowest) = pinger.join().expect("the pinger failed");
    assert!(pings > 0);
    assert!(
        slowest < Duration::from_secs(2),
        "slowest /ping under load took {slowest:?}"
    );
}

#[test]
fn sigterm_finishes_the_request_in_flight_and_exits_zero() {
    let mut server = Server::start(&[("SAGEMAKER_MAX_PAYLOAD_IN_MB", "20")]);
    // Enough texts that the forward is still running when the signal arrives.
    let lines: Vec<String> = (0..60_000)
        .map(|i| format!("woolworths pos purchase {i} card shell salary fee"))
        .collect();
    let body = lines.join("\n");
    let url = server.url("/invocations");
    let agent = agent();
    let request = std::thread::spawn(move || {
        let reply = reply(
            agent
                .post(&url)
                .header("Content-Type", "text/csv")
                .header("Accept", "text/csv")
                .send(body.as_bytes()),
        );
        (reply, Instant::now())
    });
    // Wait until the request has reached the model (the log shows no sign of it, so poll the
    // connection count indirectly: give the client time to send 3 MB on loopback).
    std::thread::sleep(Duration::from_millis(300));
    let signalled = Instant::now();
    let pid = server.child.id() as i32;
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    let ((status, _, body), answered) = request.join().unwrap();
    assert_eq!(status, 200, "{}", &body[..body.len().min(300)]);
    assert_eq!(body.split('\n').count(), lines.len());
    assert!(
        answered > signalled,
        "the request finished before SIGTERM; make it bigger"
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    let code = loop {
        if let Some(status) = server.child.try_wait().unwrap() {
            break status.code();
        }
        assert!(
            Instant::now() < deadline,
            "no exit within 30 s\n{}",
            server.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(code, Some(0), "{}", server.log());
    assert!(server.log().contains("SIGTERM"), "{}", server.log());
    assert!(
        TcpStream::connect_timeout(&server.addr, Duration::from_secs(1)).is_err(),
        "still accepting after exit"
    );
}

#[test]
fn a_missing_or_broken_model_fails_start_up_with_one_line() {
    let broken = tempfile::tempdir().unwrap();
    for file in [
        "config.json",
        "tokenizer.json",
        "tokenizer_config.json",
        "vocab.txt",
    ] {
        std::fs::copy(model().join(file), broken.path().join(file)).unwrap();
    }
    std::fs::write(broken.path().join("model.safetensors"), b"not safetensors").unwrap();
    let missing = PathBuf::from("/nonexistent/txcat-model");
    for (dir, needle) in [
        (missing.as_path(), "/nonexistent/txcat-model"),
        (broken.path(), "model.safetensors"),
    ] {
        let mut child = serve_command(dir, &[], &[]).spawn().unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("serve did not exit for {}", dir.display());
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let mut stderr = String::new();
        child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut stderr)
            .unwrap();
        assert_eq!(status.code(), Some(2), "{stderr}");
        let errors: Vec<&str> = stderr.lines().filter(|l| l.contains("ERROR")).collect();
        assert_eq!(errors.len(), 1, "one error line:\n{stderr}");
        assert!(
            errors[0].contains(needle),
            "{needle:?} not in {}",
            errors[0]
        );
    }
}

#[test]
fn bf16_serving_keeps_predicts_labels_with_scores_a_hundredth_away() {
    let texts = texts();
    let env = [("TXCAT_SERVE_PRECISION", "bf16")];
    if !txcat::train::amp::bf16_supported(tch::Device::Cpu) {
        // Refused at start-up with one line saying what to do.
        assert_refused_with_one_line(&env, "TXCAT_SERVE_PRECISION=bf16");
        println!("this CPU has no bf16 instructions: checked the refusal only");
        return;
    }
    assert_close_to_predict(&texts, &env, "serving in bfloat16");
}

#[test]
fn int8_serving_keeps_predicts_labels_with_scores_a_hundredth_away() {
    assert_close_to_predict(
        &texts(),
        &[("TXCAT_SERVE_PRECISION", "int8")],
        "linear layers in int8",
    );
}

/// A server started with `env` (a reduced precision, announced by `log_line`) gives predict's
/// label to every text with a clear fp32 winner and predict's score within 0.03.
fn assert_close_to_predict(texts: &[String], env: &[(&str, &str)], log_line: &str) {
    let reference = predict_reference(texts, 2);
    let server = Server::start(env);
    assert!(server.log().contains(log_line), "{}", server.log());
    let (status, _, body) = server.json(&serde_json::json!({ "inputs": texts }), None);
    assert_eq!(status, 200, "{body}");
    let answers: Vec<serde_json::Value> = serde_json::from_str(&body).unwrap();
    assert_eq!(answers.len(), texts.len());
    let (mut labels_checked, mut scores_checked, mut scores_moved) = (0, 0, 0);
    for (i, (answer, fp32)) in answers.iter().zip(&reference).enumerate() {
        let got = ranked_json(answer);
        let (label, score) = &got[0];
        // A near tie in fp32 may flip at lower precision; a clear winner may not.
        if fp32[0].1 - fp32[1].1 > 0.05 {
            assert_eq!(label, &fp32[0].0, "text {i}: {got:?} vs {fp32:?}");
            labels_checked += 1;
        }
        if label == &fp32[0].0 {
            assert!(
                (score - fp32[0].1).abs() < 0.03,
                "text {i}: {got:?} vs {fp32:?}"
            );
            scores_checked += 1;
            if score != &fp32[0].1 {
                scores_moved += 1;
            }
        }
    }
    // Most texts have a clear winner: the checks above must not pass by skipping them all.
    assert!(
        labels_checked * 2 > texts.len() && scores_checked * 2 > texts.len(),
        "only {labels_checked} labels and {scores_checked} scores compared of {}",
        texts.len()
    );
    // And the server did compute at the lower precision: fp32 would repeat predict's scores.
    assert!(
        scores_moved > 0,
        "every score equals fp32's: {env:?} had no effect"
    );
}

/// The shared libraries a running process has mapped.
fn mapped_libraries(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/maps")).expect("read /proc/PID/maps")
}

#[test]
fn without_a_gpu_driver_serve_maps_no_cuda_library_and_forcing_the_backend_in_changes_no_answer() {
    let texts = texts();
    let body = serde_json::json!({ "inputs": texts, "parameters": { "top_k": 2 } });
    let server = Server::start(&[]);
    let maps = mapped_libraries(server.child.id());
    let torch_lib = maps
        .lines()
        .filter_map(|l| l.split_whitespace().nth(5))
        .find(|p| p.ends_with("/libtorch_cpu.so"))
        .map(|p| Path::new(p).parent().unwrap().to_path_buf())
        .expect("libtorch_cpu.so is mapped");
    if txcat::cuda_backend::driver_present() {
        assert!(
            maps.contains("libtorch_cuda.so"),
            "a driver is here: the backend loads"
        );
    } else {
        for lib in ["libtorch_cuda.so", "libcublas", "libnccl", "libcufft"] {
            assert!(!maps.contains(lib), "{lib} is mapped without a driver");
        }
    }
    let (status, _, default_answer) = server.json(&body, None);
    assert_eq!(status, 200, "{default_answer}");
    drop(server);

    if torch_lib.join("libtorch_cuda.so").exists() {
        let forced = Server::start(&[("TXCAT_CUDA_BACKEND", "load")]);
        let maps = mapped_libraries(forced.child.id());
        assert!(maps.contains("libtorch_cuda.so"), "TXCAT_CUDA_BACKEND=load");
        let (status, _, forced_answer) = forced.json(&body, None);
        assert_eq!(status, 200, "{forced_answer}");
        assert_eq!(forced_answer, default_answer);
    } else {
        println!(
            "{} has no libtorch_cuda.so: checked the CPU build only",
            torch_lib.display()
        );
    }

    assert_refused_with_one_line(
        &[("TXCAT_CUDA_BACKEND", "yes")],
        "TXCAT_CUDA_BACKEND=\"yes\"",
    );
}

/// `txcat serve` with `env` exits 2 at start-up with one ERROR line that contains `needle`.
fn assert_refused_with_one_line(env: &[(&str, &str)], needle: &str) {
    let out = serve_command(&model(), env, &[]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    let errors: Vec<&str> = stderr.lines().filter(|l| l.contains("ERROR")).collect();
    assert_eq!(errors.len(), 1, "one error line:\n{stderr}");
    assert!(errors[0].contains(needle), "{}", errors[0]);
}

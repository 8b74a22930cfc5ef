//! A small HTTP/1.1 proxy in front of an S3 server that injects the failures S3 clients must
//! survive: 500/503 error responses, connections reset before a response, and responses cut off
//! part-way through the body. One request per client connection (responses carry
//! `Connection: close`), std threads only.
//!
//! Use from an integration test with `mod support;` or `#[path = "support/fault_proxy.rs"]`.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

/// What the proxy does with one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Forward unchanged.
    Pass,
    /// Answer `503 SlowDown` without contacting the server.
    SlowDown,
    /// Answer `500 InternalError` without contacting the server.
    InternalError,
    /// Close the connection without answering.
    Reset,
    /// Forward, but send only the head and the first half of the body, then close.
    TruncateBody,
    /// Forward, but send only the response head, then close.
    HeadOnly,
    /// Answer `403 AccessDenied` without contacting the server.
    AccessDenied,
}

/// Picks the fault for the `index`-th request (0-based) with request line `request_line`.
pub type FaultPlan = dyn Fn(u64, &str) -> Fault + Send + Sync;

/// A plan failing roughly `percent`% of requests (seeded, reproducible), cycling through every
/// failure kind.
pub fn flaky(percent: u64, seed: u64) -> Arc<FaultPlan> {
    Arc::new(move |index, _line| {
        let mut x = index.wrapping_add(seed).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        x ^= x >> 29;
        x = x.wrapping_mul(0xBF58_476D_1CE4_E5B9);
        x ^= x >> 32;
        if x % 100 >= percent {
            return Fault::Pass;
        }
        match (x / 100) % 4 {
            0 => Fault::SlowDown,
            1 => Fault::InternalError,
            2 => Fault::Reset,
            _ => Fault::TruncateBody,
        }
    })
}

/// A plan failing every other request, cycling through 503, 500, reset and truncated body, so
/// every failure kind is exercised however few requests a test makes.
pub fn every_other() -> Arc<FaultPlan> {
    Arc::new(|index, _line| match (index % 2, (index / 2) % 4) {
        (1, _) => Fault::Pass,
        (_, 0) => Fault::TruncateBody,
        (_, 1) => Fault::SlowDown,
        (_, 2) => Fault::Reset,
        _ => Fault::InternalError,
    })
}

/// Counters of what the proxy did.
#[derive(Debug, Default)]
pub struct ProxyStats {
    pub requests: AtomicU64,
    pub faults: AtomicU64,
}

/// A running proxy; stops accepting when dropped.
pub struct FaultProxy {
    /// `http://127.0.0.1:<port>`
    pub endpoint: String,
    pub stats: Arc<ProxyStats>,
    stop: Arc<AtomicBool>,
    port: u16,
}

impl FaultProxy {
    /// Proxies to `upstream_port` on 127.0.0.1 following `plan`.
    pub fn start(upstream_port: u16, plan: Arc<FaultPlan>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind proxy port");
        let port = listener.local_addr().expect("proxy address").port();
        let stats = Arc::new(ProxyStats::default());
        let stop = Arc::new(AtomicBool::new(false));
        {
            let stats = Arc::clone(&stats);
            let stop = Arc::clone(&stop);
            thread::spawn(move || {
                for connection in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(client) = connection else { continue };
                    let stats = Arc::clone(&stats);
                    let plan = Arc::clone(&plan);
                    thread::spawn(move || {
                        let _ = serve(client, upstream_port, &plan, &stats);
                    });
                }
            });
        }
        Self {
            endpoint: format!("http://127.0.0.1:{port}"),
            stats,
            stop,
            port,
        }
    }

    pub fn faults(&self) -> u64 {
        self.stats.faults.load(Ordering::SeqCst)
    }

    pub fn requests(&self) -> u64 {
        self.stats.requests.load(Ordering::SeqCst)
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

/// Reads up to and including the blank line ending an HTTP head.
fn read_head(stream: &mut TcpStream) -> std::io::Result<Option<Vec<u8>>> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if stream.read(&mut byte)? == 0 {
            return Ok(None);
        }
        head.push(byte[0]);
    }
    Ok(Some(head))
}

fn header_value(head: &str, name: &str) -> Option<String> {
    head.lines().find_map(|line| {
        let (key, value) = line.split_once(':')?;
        key.trim()
            .eq_ignore_ascii_case(name)
            .then(|| value.trim().to_string())
    })
}

/// Replaces any `Connection` header with `Connection: close`.
fn with_connection_close(head: &str) -> String {
    let mut lines: Vec<&str> = head
        .trim_end_matches("\r\n")
        .split("\r\n")
        .filter(|line| !line.to_ascii_lowercase().starts_with("connection:"))
        .collect();
    lines.push("Connection: close");
    format!("{}\r\n\r\n", lines.join("\r\n"))
}

fn error_response(status: &str, code: &str) -> String {
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{code}</Code><Message>injected by the test proxy</Message><RequestId>proxy</RequestId></Error>"
    );
    format!(
        "HTTP/1.1 {status}\r\nContent-Type: application/xml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}

fn serve(
    mut client: TcpStream,
    upstream_port: u16,
    plan: &Arc<FaultPlan>,
    stats: &ProxyStats,
) -> std::io::Result<()> {
    client.set_read_timeout(Some(Duration::from_secs(30)))?;
    let Some(head) = read_head(&mut client)? else {
        return Ok(());
    };
    let head = String::from_utf8_lossy(&head).to_string();
    let length: usize = header_value(&head, "content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0u8; length];
    client.read_exact(&mut body)?;
    let index = stats.requests.fetch_add(1, Ordering::SeqCst);
    let request_line = head.lines().next().unwrap_or("").to_string();
    let fault = plan(index, &request_line);
    if fault != Fault::Pass {
        stats.faults.fetch_add(1, Ordering::SeqCst);
    }
    match fault {
        Fault::SlowDown => {
            return client.write_all(error_response("503 Slow Down", "SlowDown").as_bytes())
        }
        Fault::InternalError => {
            return client
                .write_all(error_response("500 Internal Server Error", "InternalError").as_bytes())
        }
        Fault::AccessDenied => {
            return client.write_all(error_response("403 Forbidden", "AccessDenied").as_bytes())
        }
        Fault::Reset => return client.shutdown(Shutdown::Both),
        _ => {}
    }
    let mut upstream = TcpStream::connect(("127.0.0.1", upstream_port))?;
    upstream.write_all(with_connection_close(&head).as_bytes())?;
    upstream.write_all(&body)?;
    let mut response = Vec::new();
    upstream.read_to_end(&mut response)?;
    let split = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map_or(response.len(), |p| p + 4);
    let (response_head, response_body) = response.split_at(split);
    let response_head = with_connection_close(&String::from_utf8_lossy(response_head));
    client.write_all(response_head.as_bytes())?;
    match fault {
        Fault::TruncateBody => {
            client.write_all(&response_body[..response_body.len() / 2])?;
            client.flush()?;
            client.shutdown(Shutdown::Both)
        }
        Fault::HeadOnly => {
            client.flush()?;
            client.shutdown(Shutdown::Both)
        }
        _ => client.write_all(response_body),
    }
}

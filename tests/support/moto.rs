//! A throwaway `moto_server` (PyPI `moto[server]`, run with `$TXCAT_PYTHON -m moto.server`) on
//! 127.0.0.1 at a free port, killed when dropped, plus a synchronous admin client for setting
//! up buckets and objects.
//!
//! Use from an integration test with `mod support;` (tests/support/mod.rs) or
//! `#[path = "support/moto.rs"] mod moto;`.
#![allow(dead_code)]

use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::Client;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::Once;
use std::time::{Duration, Instant};

/// Points the AWS default chain at dummy credentials and away from the developer's own
/// configuration and instance metadata (so nothing hangs on IMDS). Idempotent.
pub fn hermetic_aws_env() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        for (name, value) in [
            ("AWS_ACCESS_KEY_ID", "testing"),
            ("AWS_SECRET_ACCESS_KEY", "testing"),
            ("AWS_REGION", "us-east-1"),
            ("AWS_EC2_METADATA_DISABLED", "true"),
            ("AWS_CONFIG_FILE", "/nonexistent/txcat-test-aws-config"),
            (
                "AWS_SHARED_CREDENTIALS_FILE",
                "/nonexistent/txcat-test-aws-credentials",
            ),
        ] {
            std::env::set_var(name, value);
        }
        for name in [
            "AWS_PROFILE",
            "AWS_SESSION_TOKEN",
            "AWS_ENDPOINT_URL",
            "AWS_ENDPOINT_URL_S3",
        ] {
            std::env::remove_var(name);
        }
    });
}

/// The secret key the helpers below give child processes: distinctive, so a test can assert it
/// never appears in their output.
pub const CHILD_SECRET_KEY: &str = "txcatTestSecretKeyThatMustNeverBeLogged";

/// Configures `command` (a child process such as the txcat binary) to reach `endpoint` through
/// `AWS_ENDPOINT_URL` with dummy credentials ([`CHILD_SECRET_KEY`]), a region, no instance
/// metadata and no developer profile, and with short S3 retry limits (5 attempts, 20 s) that a
/// test may override afterwards.
pub fn point_child_at(command: &mut Command, endpoint: &str) {
    command
        .env("AWS_ENDPOINT_URL", endpoint)
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", CHILD_SECRET_KEY)
        .env("AWS_REGION", "us-east-1")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("AWS_CONFIG_FILE", "/nonexistent/txcat-test-aws-config")
        .env(
            "AWS_SHARED_CREDENTIALS_FILE",
            "/nonexistent/txcat-test-aws-credentials",
        )
        .env("TXCAT_S3_MAX_ATTEMPTS", "5")
        .env("TXCAT_S3_RETRY_SECONDS", "20")
        .env_remove("AWS_ENDPOINT_URL_S3")
        .env_remove("AWS_PROFILE")
        .env_remove("AWS_SESSION_TOKEN")
        .env_remove("AWS_DEFAULT_REGION")
        .env_remove("TXCAT_S3_FORCE_PATH_STYLE");
}

/// The Python interpreter from `TXCAT_PYTHON` (it provides moto[server]).
pub fn python() -> String {
    super::python::interpreter()
}

/// A free TCP port on 127.0.0.1 (released just before use; good enough for tests).
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    listener.local_addr().expect("local address").port()
}

/// A running moto server.
pub struct MotoServer {
    child: Child,
    log: tempfile::NamedTempFile,
    /// `http://127.0.0.1:<port>`
    pub endpoint: String,
    pub port: u16,
}

impl MotoServer {
    /// Starts moto and waits until it answers HTTP.
    pub fn start() -> Self {
        Self::start_with_env(&[])
    }

    /// Starts moto with extra environment variables (e.g. moto feature switches).
    pub fn start_with_env(env: &[(&str, &str)]) -> Self {
        hermetic_aws_env();
        let python = python();
        let port = free_port();
        // A file, not a pipe: moto logs every request, and an unread pipe would fill up and
        // freeze the server after a few hundred requests.
        let log = tempfile::NamedTempFile::new().expect("moto log file");
        let mut command = Command::new(&python);
        command
            .args([
                "-m",
                "moto.server",
                "-H",
                "127.0.0.1",
                "-p",
                &port.to_string(),
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log.reopen().expect("reopen moto log")));
        for (name, value) in env {
            command.env(name, value);
        }
        #[cfg(target_os = "linux")]
        unsafe {
            use std::os::unix::process::CommandExt;
            // Dies with the test thread even if the test process is killed before Drop runs.
            command.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let child = command
            .spawn()
            .unwrap_or_else(|err| panic!("cannot start `{python} -m moto.server`: {err}"));
        let mut server = Self {
            child,
            log,
            endpoint: format!("http://127.0.0.1:{port}"),
            port,
        };
        server.wait_ready(Duration::from_secs(60));
        server
    }

    fn wait_ready(&mut self, limit: Duration) {
        let started = Instant::now();
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                let stderr = std::fs::read_to_string(self.log.path()).unwrap_or_default();
                panic!("moto_server exited early ({status}); is moto[server] installed in $TXCAT_PYTHON? {stderr}");
            }
            if http_status(self.port, "/moto-api/").is_some() {
                return;
            }
            assert!(
                started.elapsed() < limit,
                "moto_server did not answer on port {} within {limit:?}",
                self.port
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// A synchronous admin client talking to this server directly.
    pub fn admin(&self) -> S3Admin {
        S3Admin::new(&self.endpoint)
    }
}

impl Drop for MotoServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The status code of `GET path`, or None when nothing answers.
pub fn http_status(port: u16, path: &str) -> Option<u16> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).ok()?;
    std::str::from_utf8(&head[9..12]).ok()?.parse().ok()
}

/// Blocking helpers over aws-sdk-s3 for test set-up and checks.
pub struct S3Admin {
    runtime: tokio::runtime::Runtime,
    pub client: Client,
}

impl S3Admin {
    /// A client for `endpoint` with moto's dummy credentials and path-style addressing.
    pub fn new(endpoint: &str) -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("tokio runtime");
        let config = aws_sdk_s3::config::Builder::new()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new("us-east-1"))
            .credentials_provider(Credentials::new("testing", "testing", None, None, "tests"))
            .endpoint_url(endpoint)
            .force_path_style(true)
            .build();
        Self {
            runtime,
            client: Client::from_conf(config),
        }
    }

    pub fn create_bucket(&self, bucket: &str) {
        self.runtime
            .block_on(self.client.create_bucket().bucket(bucket).send())
            .unwrap_or_else(|err| panic!("create bucket {bucket}: {err:?}"));
    }

    pub fn put(&self, bucket: &str, key: &str, body: &[u8]) {
        self.runtime
            .block_on(
                self.client
                    .put_object()
                    .bucket(bucket)
                    .key(key)
                    .body(ByteStream::from(body.to_vec()))
                    .send(),
            )
            .unwrap_or_else(|err| panic!("put s3://{bucket}/{key}: {err:?}"));
    }

    /// Puts many objects with up to 16 requests in flight.
    pub fn put_many(&self, bucket: &str, objects: Vec<(String, Vec<u8>)>) {
        self.runtime.block_on(async {
            let mut running: tokio::task::JoinSet<Result<(), String>> = tokio::task::JoinSet::new();
            for (key, body) in objects {
                while running.len() >= 16 {
                    running
                        .join_next()
                        .await
                        .expect("task")
                        .expect("join")
                        .expect("put");
                }
                let request = self
                    .client
                    .put_object()
                    .bucket(bucket)
                    .key(key)
                    .body(ByteStream::from(body));
                running.spawn(async move {
                    request
                        .send()
                        .await
                        .map(|_| ())
                        .map_err(|err| format!("{err:?}"))
                });
            }
            while let Some(done) = running.join_next().await {
                done.expect("join").expect("put");
            }
        });
    }

    pub fn get(&self, bucket: &str, key: &str) -> Vec<u8> {
        self.runtime.block_on(async {
            let object = self
                .client
                .get_object()
                .bucket(bucket)
                .key(key)
                .send()
                .await
                .unwrap_or_else(|err| panic!("get s3://{bucket}/{key}: {err:?}"));
            object
                .body
                .collect()
                .await
                .expect("body")
                .into_bytes()
                .to_vec()
        })
    }

    /// Every key in the bucket, following pagination.
    pub fn all_keys(&self, bucket: &str) -> Vec<String> {
        self.runtime.block_on(async {
            let mut keys = Vec::new();
            let mut pages = self
                .client
                .list_objects_v2()
                .bucket(bucket)
                .into_paginator()
                .send();
            while let Some(page) = pages.next().await {
                let page = page.unwrap_or_else(|err| panic!("list s3://{bucket}: {err:?}"));
                keys.extend(
                    page.contents()
                        .iter()
                        .filter_map(|o| o.key().map(str::to_string)),
                );
            }
            keys
        })
    }

    /// Keys of the multipart uploads started but neither completed nor aborted in `bucket`.
    pub fn incomplete_uploads(&self, bucket: &str) -> Vec<String> {
        self.runtime.block_on(async {
            let listing = self
                .client
                .list_multipart_uploads()
                .bucket(bucket)
                .send()
                .await
                .unwrap_or_else(|err| panic!("list multipart uploads of {bucket}: {err:?}"));
            listing
                .uploads()
                .iter()
                .filter_map(|u| u.key().map(str::to_string))
                .collect()
        })
    }

    /// Every key in the bucket (first page is enough for the small checks that use it).
    pub fn keys(&self, bucket: &str) -> Vec<String> {
        self.runtime.block_on(async {
            let page = self
                .client
                .list_objects_v2()
                .bucket(bucket)
                .send()
                .await
                .expect("list");
            page.contents()
                .iter()
                .filter_map(|o| o.key().map(str::to_string))
                .collect()
        })
    }
}

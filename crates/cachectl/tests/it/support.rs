//! Fixtures: a gateway over a private `redis-server`, a temporary working directory, a
//! `cachectl` command that cannot see the developer's configuration, a real chat-api in process,
//! and a tiny HTTP server for answers no chat-api gives.

use std::{path::Path, time::Duration};

use assert_cmd::Command;
use tempfile::TempDir;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use upstash_gateway::testing::TestGateway;

/// Variables `cachectl` reads that must come only from the test.
const CONFIG_VARS: [&str; 6] = [
    "UPSTASH_REDIS_REST_URL",
    "UPSTASH_REDIS_REST_TOKEN",
    "KV_REST_API_URL",
    "KV_REST_API_TOKEN",
    "CACHE_PREFIX",
    "NO_COLOR",
];

/// A `cachectl` command in `dir` with none of the configuration variables of this process.
pub(crate) fn cachectl_in(dir: &Path) -> Command {
    let mut cmd = Command::new(bin());
    cmd.current_dir(dir);
    for var in CONFIG_VARS {
        cmd.env_remove(var);
    }
    // A hung binary fails the test instead of hanging it.
    cmd.timeout(Duration::from_secs(60));
    cmd
}

/// The binary under test.
pub(crate) fn bin() -> &'static Path {
    assert_cmd::cargo::cargo_bin!("cachectl")
}

/// Redis + gateway + an empty working directory.
pub(crate) struct Env {
    pub(crate) gateway: TestGateway,
    pub(crate) dir: TempDir,
}

impl Env {
    pub(crate) async fn start() -> Env {
        Env {
            gateway: TestGateway::start().await,
            dir: tempfile::tempdir().expect("create a temporary directory"),
        }
    }

    /// `cachectl` configured for the gateway through the environment.
    pub(crate) fn cmd(&self) -> Command {
        let mut cmd = cachectl_in(self.dir.path());
        cmd.env("UPSTASH_REDIS_REST_URL", self.gateway.url())
            .env("UPSTASH_REDIS_REST_TOKEN", self.gateway.token());
        cmd
    }

    /// `cachectl` with no configuration at all.
    pub(crate) fn bare(&self) -> Command {
        cachectl_in(self.dir.path())
    }

    /// A client of the same gateway, for arranging data and checking effects.
    pub(crate) fn redis(&self) -> cache_upstash::Redis {
        cache_upstash::Redis::builder()
            .url(self.gateway.url())
            .token(self.gateway.token())
            .build()
            .expect("a client for the test gateway")
    }
}

/// The JSON document on stdout.
pub(crate) fn json(stdout: &[u8]) -> serde_json::Value {
    serde_json::from_slice(stdout).unwrap_or_else(|err| {
        panic!(
            "stdout is not one JSON document ({err}): {}",
            String::from_utf8_lossy(stdout)
        )
    })
}

/// The JSON documents of a JSON-lines stdout.
pub(crate) fn json_lines(stdout: &[u8]) -> Vec<serde_json::Value> {
    String::from_utf8_lossy(stdout)
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|err| panic!("{err}: {line}")))
        .collect()
}

pub(crate) fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A real chat-api, in this process, on a free loopback port: a SQLite database in the test's
/// directory, and a tiered cache whose L2 is the test gateway. Stops when dropped.
pub(crate) struct ChatApi {
    pub(crate) url: String,
    pub(crate) state: chat_api::AppState,
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl Env {
    pub(crate) async fn chat_api(&self) -> ChatApi {
        let config = chat_api::Config {
            database_url: format!("sqlite://{}", self.dir.path().join("chat.db").display()),
            cache_backend: chat_api::config::CacheBackendKind::Tiered,
            upstash_url: Some(self.gateway.url().to_owned()),
            upstash_token: chat_api::config::SecretString::new(self.gateway.token()),
            rate_limit: false,
            ..chat_api::Config::default()
        };
        let state = chat_api::AppState::from_config(config)
            .await
            .expect("start chat-api");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind chat-api");
        let url = format!(
            "http://{}",
            listener.local_addr().expect("chat-api address")
        );
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(chat_api::serve(
            listener,
            chat_api::app(state.clone()),
            chat_api::ServerLimits::default(),
            async move {
                let _ = stopped.await;
            },
        ));
        ChatApi {
            url,
            state,
            _stop: stop,
        }
    }
}

impl ChatApi {
    /// Some chat traffic: a user, a channel, a post, and `reads` reads of its latest page.
    pub(crate) async fn traffic(&self, reads: usize) {
        let http = reqwest::Client::new();
        let send = |request: reqwest::RequestBuilder, body: Option<&str>| {
            let request = match body {
                Some(body) => request
                    .header("content-type", "application/json")
                    .body(body.to_owned()),
                None => request,
            };
            async move {
                let response = request.send().await.expect("chat-api answers");
                let status = response.status();
                let text = response.text().await.expect("a body");
                assert!(status.is_success(), "{status}: {text}");
                serde_json::from_str::<serde_json::Value>(&text).expect("JSON")
            }
        };
        let user = send(
            http.post(format!("{}/api/v1/users", self.url)),
            Some(r#"{"name": "ann"}"#),
        )
        .await;
        let token = user["token"].as_str().expect("a token").to_owned();
        let channel = send(
            http.post(format!("{}/api/v1/channels", self.url))
                .bearer_auth(&token),
            Some(r#"{"name": "general", "kind": "public"}"#),
        )
        .await;
        let messages = format!(
            "{}/api/v1/channels/{}/messages",
            self.url,
            channel["id"].as_str().expect("a channel id")
        );
        send(
            http.post(&messages).bearer_auth(&token),
            Some(r#"{"content": "hello"}"#),
        )
        .await;
        for _ in 0..reads {
            send(http.get(&messages).bearer_auth(&token), None).await;
        }
    }

    /// What the cache counts now, straight from cache-core (not through chat-api's `/stats`).
    pub(crate) fn cache_stats(&self) -> cache_core::stats::CacheStats {
        self.state.cache().cache().stats()
    }

    /// Database statements so far, straight from the store.
    pub(crate) fn queries(&self) -> u64 {
        self.state.store().query_counts().total
    }
}

/// Serves `body` at `GET path` (404 elsewhere) on a free port until the test ends; returns the
/// base URL.
pub(crate) async fn stub_server(path: &'static str, body: &'static str) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind the stub");
    let url = format!("http://{}", listener.local_addr().expect("stub address"));
    let request_line = format!("GET {path} ");
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let request_line = request_line.clone();
            tokio::spawn(async move {
                let mut request = Vec::new();
                let mut chunk = [0u8; 1024];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    match socket.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => request.extend_from_slice(&chunk[..n]),
                    }
                }
                let (status, body) = if request.starts_with(request_line.as_bytes()) {
                    ("200 OK", body)
                } else {
                    ("404 Not Found", "not found\n")
                };
                let response = format!(
                    "HTTP/1.1 {status}\r\ncontent-type: application/json\r\n\
                     content-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = socket.write_all(response.as_bytes()).await;
            });
        }
    });
    url
}

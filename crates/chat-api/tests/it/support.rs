//! The test harness: an app on a fresh database (a temporary SQLite file, or a fresh PostgreSQL
//! database created for the test and dropped after it), requests through the router in process
//! (`tower::ServiceExt::oneshot`), and helpers for users, channels and messages.

use std::{path::PathBuf, sync::Arc};

use axum::{
    Router,
    body::Body,
    http::{HeaderMap, Method, Request, StatusCode, header},
};
use cache_core::DynBackend;
use cache_memory::MemoryBackend;
use chat_api::{AppState, Config, app, cache::CacheParts, store::SqlStore};
use serde_json::{Value, json};
use tower::ServiceExt as _;

/// Which database a test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Db {
    Sqlite,
    Postgres,
}

/// Generates `mod $name { sqlite, postgres }` tests running the function `$name(db)` on each
/// database (functions and modules live in different namespaces, so they share the name).
macro_rules! on_both_databases {
    ($($name:ident;)+) => {
        $(
            mod $name {
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn sqlite() {
                    super::$name($crate::support::Db::Sqlite).await;
                }

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn postgres() {
                    super::$name($crate::support::Db::Postgres).await;
                }
            }
        )+
    };
}
pub(crate) use on_both_databases;

const DEFAULT_PG: &str = "postgres://postgres@127.0.0.1:5432/postgres";

fn admin_url() -> String {
    std::env::var("TEST_DATABASE_URL").unwrap_or_else(|_| DEFAULT_PG.to_owned())
}

/// Replaces the database name of a postgres URL.
fn with_database(url: &str, db: &str) -> String {
    let (base, query) = url
        .split_once('?')
        .map_or((url, None), |(b, q)| (b, Some(q)));
    let scheme_end = base.find("://").map_or(0, |i| i + 3);
    let base = match base[scheme_end..].find('/') {
        Some(slash) => &base[..scheme_end + slash],
        None => base,
    };
    match query {
        Some(q) => format!("{base}/{db}?{q}"),
        None => format!("{base}/{db}"),
    }
}

/// A database that exists for one test.
pub(crate) struct TestDb {
    pub(crate) url: String,
    cleanup: Cleanup,
}

enum Cleanup {
    File(PathBuf),
    Postgres { admin: String, name: String },
}

impl TestDb {
    /// A fresh database, or `None` (after a loud message) when PostgreSQL is unreachable outside CI.
    pub(crate) async fn create(db: Db) -> Option<TestDb> {
        match db {
            Db::Sqlite => {
                let path =
                    std::env::temp_dir().join(format!("chat-api-test-{}.db", ulid::Ulid::new()));
                Some(TestDb {
                    url: format!("sqlite://{}", path.display()),
                    cleanup: Cleanup::File(path),
                })
            }
            Db::Postgres => {
                let admin = admin_url();
                // Not sqlx's 30 s default: an unreachable server is known well before that.
                let pool = match sqlx::postgres::PgPoolOptions::new()
                    .acquire_timeout(std::time::Duration::from_secs(5))
                    .connect(&admin)
                    .await
                {
                    Ok(pool) => pool,
                    Err(err) => {
                        if std::env::var("CI").is_ok_and(|v| v == "true") {
                            panic!(
                                "PostgreSQL is required under CI=true but unreachable at TEST_DATABASE_URL: {err}"
                            );
                        }
                        announce_postgres_skip(&err);
                        return None;
                    }
                };
                let name = format!("chat_test_{}", ulid::Ulid::new().to_string().to_lowercase());
                sqlx::query(&format!("CREATE DATABASE {name}"))
                    .execute(&pool)
                    .await
                    .expect("create the test database");
                pool.close().await;
                Some(TestDb {
                    url: with_database(&admin, &name),
                    cleanup: Cleanup::Postgres { admin, name },
                })
            }
        }
    }
}

/// Says once per test run, on the real stderr, that the PostgreSQL variants are skipped:
/// `eprintln!` inside a passing test is captured by the test harness and never shown.
fn announce_postgres_skip(err: &sqlx::Error) {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        use std::io::Write as _;
        let _ = writeln!(
            std::io::stderr(),
            "\n!!!!!!!! SKIPPED: every PostgreSQL variant: PostgreSQL unreachable ({err}); set \
             TEST_DATABASE_URL (default {DEFAULT_PG}) to run them, CI=true makes this a failure \
             !!!!!!!!\n"
        );
    });
}

impl Drop for TestDb {
    fn drop(&mut self) {
        match &self.cleanup {
            Cleanup::File(path) => {
                for suffix in ["", "-wal", "-shm"] {
                    let mut file = path.clone().into_os_string();
                    file.push(suffix);
                    let _ = std::fs::remove_file(file);
                }
            }
            Cleanup::Postgres { admin, name } => {
                let (admin, name) = (admin.clone(), name.clone());
                // Drop runs inside the test's runtime; a thread with its own runtime may block.
                let _ = std::thread::spawn(move || {
                    let runtime = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .expect("runtime");
                    runtime.block_on(async {
                        if let Ok(pool) = sqlx::PgPool::connect(&admin).await {
                            let _ = sqlx::query(&format!(
                                "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                            ))
                            .execute(&pool)
                            .await;
                            pool.close().await;
                        }
                    });
                })
                .join();
            }
        }
    }
}

/// A running app (in process) on its own database.
pub(crate) struct TestApp {
    pub(crate) state: AppState,
    pub(crate) router: Router,
    // Dropped last: the database outlives the state that uses it. Shared by the instances of a
    // multi-instance test.
    _db: Arc<TestDb>,
}

/// A response with its body parsed as JSON (`Value::Null` when empty or not JSON).
#[derive(Debug)]
pub(crate) struct TestResponse {
    pub(crate) status: StatusCode,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Value,
    pub(crate) text: String,
}

impl TestResponse {
    /// Asserts the status, printing the body when it differs.
    #[track_caller]
    pub(crate) fn expect(self, status: u16) -> Self {
        assert_eq!(
            self.status.as_u16(),
            status,
            "unexpected status; body: {}",
            self.text
        );
        self
    }

    /// Asserts an error response: the status, the one error shape, and the code.
    #[track_caller]
    pub(crate) fn expect_error(self, status: u16, code: &str) -> Self {
        let this = self.expect(status);
        assert_error_shape(&this);
        assert_eq!(this.body["error"]["code"], code, "body: {}", this.text);
        this
    }
}

/// Asserts `{"error": {"code": "…", "message": "…"}}` and a JSON content type.
#[track_caller]
pub(crate) fn assert_error_shape(response: &TestResponse) {
    let error = &response.body["error"];
    assert!(
        error["code"].is_string() && error["message"].is_string(),
        "not the error shape: {} {}",
        response.status,
        response.text
    );
    let content_type = response
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    assert!(
        content_type.starts_with("application/json"),
        "content-type {content_type}"
    );
}

/// A registered user.
#[derive(Debug, Clone)]
pub(crate) struct TestUser {
    pub(crate) id: String,
    pub(crate) token: String,
}

/// Settings for tests: rate limits off (they have their own test).
pub(crate) fn test_config(url: &str) -> Config {
    Config {
        database_url: url.to_owned(),
        database_max_connections: 8,
        rate_limit: false,
        ..Config::default()
    }
}

impl TestApp {
    /// An app on `db` with the memory cache. `None` when the database is unavailable (skipped).
    pub(crate) async fn start(db: Db) -> Option<TestApp> {
        TestApp::start_configured(db, |c| c).await
    }

    /// An app on `db` and the memory cache, with config adjusted by `configure`.
    pub(crate) async fn start_configured(
        db: Db,
        configure: impl FnOnce(Config) -> Config,
    ) -> Option<TestApp> {
        TestApp::start_with(db, configure, |_| Arc::new(MemoryBackend::default())).await
    }

    /// An app on `db` with config and backend adjusted by the closures.
    pub(crate) async fn start_with(
        db: Db,
        configure: impl FnOnce(Config) -> Config,
        backend: impl FnOnce(&Config) -> DynBackend,
    ) -> Option<TestApp> {
        let test_db = Arc::new(TestDb::create(db).await?);
        Some(
            TestApp::start_on(&test_db, configure, |config| {
                CacheParts::local(backend(config))
            })
            .await,
        )
    }

    /// One instance of several on the shared database `db`, with its cache built by `parts`
    /// (which may put it on a backplane).
    pub(crate) async fn start_on(
        db: &Arc<TestDb>,
        configure: impl FnOnce(Config) -> Config,
        parts: impl FnOnce(&Config) -> CacheParts,
    ) -> TestApp {
        let config = configure(test_config(&db.url));
        let store = SqlStore::connect(&config)
            .await
            .expect("open the test database");
        let parts = parts(&config);
        let state = AppState::from_parts(config, Arc::new(store), parts).expect("state");
        TestApp {
            router: app(state.clone()),
            state,
            _db: Arc::clone(db),
        }
    }

    /// Sends a request through the router.
    pub(crate) async fn send(&self, request: Request<Body>) -> TestResponse {
        let response = self
            .router
            .clone()
            .oneshot(request)
            .await
            .expect("the router is infallible");
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .expect("read the body");
        let text = String::from_utf8_lossy(&bytes).into_owned();
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        TestResponse {
            status,
            headers,
            body,
            text,
        }
    }

    /// A JSON request with an optional bearer token.
    pub(crate) async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> TestResponse {
        let mut builder = Request::builder().method(method).uri(path);
        if let Some(token) = token {
            builder = builder.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        let request = match body {
            Some(body) => builder
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(body.to_string())),
            None => builder.body(Body::empty()),
        }
        .expect("a valid request");
        self.send(request).await
    }

    pub(crate) async fn get(&self, path: &str, token: &str) -> TestResponse {
        self.call(Method::GET, path, Some(token), None).await
    }

    pub(crate) async fn post(&self, path: &str, token: &str, body: Value) -> TestResponse {
        self.call(Method::POST, path, Some(token), Some(body)).await
    }

    pub(crate) async fn put(&self, path: &str, token: &str) -> TestResponse {
        self.call(Method::PUT, path, Some(token), None).await
    }

    pub(crate) async fn delete(&self, path: &str, token: &str) -> TestResponse {
        self.call(Method::DELETE, path, Some(token), None).await
    }

    /// Registers `name`.
    pub(crate) async fn register(&self, name: &str) -> TestUser {
        let response = self
            .call(
                Method::POST,
                "/api/v1/users",
                None,
                Some(json!({ "name": name })),
            )
            .await
            .expect(201);
        TestUser {
            id: response.body["user"]["id"].as_str().unwrap().to_owned(),
            token: response.body["token"].as_str().unwrap().to_owned(),
        }
    }

    /// Creates a channel owned by `owner`; returns its id.
    pub(crate) async fn create_channel(&self, owner: &TestUser, name: &str, kind: &str) -> String {
        let response = self
            .post(
                "/api/v1/channels",
                &owner.token,
                json!({ "name": name, "kind": kind }),
            )
            .await
            .expect(201);
        response.body["id"].as_str().unwrap().to_owned()
    }

    /// Posts `content` in `channel` as `author`; returns the message.
    pub(crate) async fn post_message(
        &self,
        author: &TestUser,
        channel: &str,
        content: &str,
    ) -> Value {
        self.post(
            &format!("/api/v1/channels/{channel}/messages"),
            &author.token,
            json!({ "content": content }),
        )
        .await
        .expect(201)
        .body
    }

    /// Statements the store has run so far.
    pub(crate) fn queries(&self) -> u64 {
        self.state.store().query_counts().total
    }

    /// Statements of one store operation so far.
    pub(crate) fn queries_of(&self, op: &str) -> u64 {
        self.state
            .store()
            .query_counts()
            .by_op
            .iter()
            .find(|(name, _)| *name == op)
            .map_or(0, |(_, n)| *n)
    }
}

/// The ids of a page, in order.
pub(crate) fn ids(page: &Value) -> Vec<String> {
    page["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn database_names_are_replaced() {
    assert_eq!(
        with_database("postgres://postgres@127.0.0.1:5432/postgres", "x"),
        "postgres://postgres@127.0.0.1:5432/x"
    );
    assert_eq!(
        with_database("postgres://u:p@h/db?sslmode=disable", "x"),
        "postgres://u:p@h/x?sslmode=disable"
    );
    assert_eq!(
        with_database("postgres://h:5432", "x"),
        "postgres://h:5432/x"
    );
}

/// The real chat-api binary on a free port (memory cache, rate limits off), with `env` on top;
/// its output goes to `log` (or nowhere). Killed with SIGKILL, without a graceful shutdown, on drop.
pub(crate) struct Server {
    child: std::process::Child,
    pub(crate) base: String,
}

impl Server {
    pub(crate) async fn start(env: &[(&str, &str)], log: Option<std::fs::File>) -> Server {
        use std::process::{Command, Stdio};

        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let mut command = Command::new(env!("CARGO_BIN_EXE_chat-api"));
        command
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("CHAT_ADDR", format!("127.0.0.1:{port}"))
            .env("CACHE_BACKEND", "memory")
            .env("RATE_LIMIT", "off")
            .env("RUST_LOG", "warn")
            .envs(env.iter().copied())
            .current_dir(std::env::temp_dir())
            .stdin(Stdio::null());
        match log {
            Some(file) => command
                .stdout(file.try_clone().expect("log file"))
                .stderr(file),
            None => command.stdout(Stdio::null()),
        };
        let server = Server {
            child: command.spawn().expect("start chat-api"),
            base: format!("http://127.0.0.1:{port}"),
        };
        let client = reqwest::Client::new();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        loop {
            if let Ok(res) = client.get(format!("{}/health", server.base)).send().await {
                if res.status().is_success() {
                    return server;
                }
            }
            assert!(
                std::time::Instant::now() < deadline,
                "chat-api did not come up"
            );
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }

    /// `{base}/api/v1{path}`.
    pub(crate) fn api(&self, path: &str) -> String {
        format!("{}/api/v1{path}", self.base)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

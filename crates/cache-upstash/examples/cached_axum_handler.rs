//! Cache an axum handler in Upstash: `GET /users/{id}` reads a slow database through
//! `cache_core::Cache` over `UpstashBackend`, and `PUT /users/{id}` writes the database, then
//! invalidates the user's tag, so the next read never sees the old value.
//!
//! The example serves the app on a loopback port and is its own client: the first read loads
//! from the database, the second is a cache hit, and a read after a write sees the write.
//!
//! ```text
//! export UPSTASH_REDIS_REST_URL=https://….upstash.io UPSTASH_REDIS_REST_TOKEN=…
//! cargo run -p cache-upstash --example cached_axum_handler
//! ```
//!
//! `cargo xtask examples` runs it against a local `upstash-gateway` in front of `redis-server`.
//!
//! Upstash alone is the cache here: every instance of the app shares it, so a write on one
//! instance is seen by all. It sits behind `TieredBackend::l2_only`, the guard without an
//! in-process tier: with Upstash unreachable, reads go to the database after one timeout per
//! probe (not one per request), and an invalidation that cannot reach Upstash is remembered and
//! replayed before Upstash is read again, so `Cache::invalidate` never fails a committed write and
//! never lets a stale entry be served. An in-process L1 (`cache_memory::MemoryBackend` under
//! `cache_core::TieredBackend`) saves the round trip to Upstash, but with more than one instance
//! it needs a `cache_core::Backplane` to hear about the other instances' invalidations.

// An example prints what it shows.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU32, Ordering},
    },
    time::Duration,
};

use axum::{
    Json, Router,
    extract::{Path, State},
    http::StatusCode,
    routing::get,
};
use cache_core::{Cache, Key, Namespace, Tag, TieredBackend, TieredConfig, TtlPolicy};
use cache_upstash::{Redis, ScanOptions, UpstashBackend};
use futures_util::TryStreamExt;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct User {
    id: u64,
    name: String,
}

/// The source of truth, slow on purpose, counting its reads so the example can tell hits from
/// loads.
#[derive(Default)]
struct Database {
    users: Mutex<HashMap<u64, User>>,
    loads: AtomicU32,
}

impl Database {
    async fn load_user(&self, id: u64) -> Result<Option<User>, std::io::Error> {
        tokio::time::sleep(Duration::from_millis(50)).await;
        self.loads.fetch_add(1, Ordering::SeqCst);
        Ok(self.users.lock().map_err(poisoned)?.get(&id).cloned())
    }

    fn save_user(&self, user: User) -> Result<(), std::io::Error> {
        self.users.lock().map_err(poisoned)?.insert(user.id, user);
        Ok(())
    }
}

fn poisoned<T>(_: T) -> std::io::Error {
    std::io::Error::other("database lock poisoned")
}

#[derive(Clone)]
struct App {
    cache: Cache,
    ns: Namespace,
    db: Arc<Database>,
}

impl App {
    /// Everything cached about one user carries this tag; a write to the user invalidates it.
    fn user_tag(&self, id: u64) -> Tag {
        self.ns.tag("user", &[&id])
    }

    fn user_key(&self, id: u64) -> Key {
        self.ns.key("user", &[&id]).tagged(&[self.user_tag(id)])
    }
}

async fn get_user(State(app): State<App>, Path(id): Path<u64>) -> Result<Json<User>, StatusCode> {
    let policy = TtlPolicy::new(Duration::from_secs(60));
    let db = Arc::clone(&app.db);
    // A miss runs the loader once however many requests ask at the same time; a failing or
    // unreachable cache falls back to the loader instead of failing the request. "No such user"
    // is cached too (a PUT invalidates it); `get_or_load_if` can keep such answers out instead.
    let user: Option<User> = app
        .cache
        .get_or_load(&app.user_key(id), &policy, move || async move {
            db.load_user(id).await
        })
        .await
        .map_err(internal)?;
    user.map(Json).ok_or(StatusCode::NOT_FOUND)
}

#[derive(Deserialize)]
struct UserUpdate {
    name: String,
}

async fn put_user(
    State(app): State<App>,
    Path(id): Path<u64>,
    Json(update): Json<UserUpdate>,
) -> Result<StatusCode, StatusCode> {
    let user = User {
        id,
        name: update.name,
    };
    app.db.save_user(user).map_err(internal)?;
    // After the write committed: any entry of this user read before now is dead, including one
    // a concurrent load is about to store.
    app.cache
        .invalidate(&[app.user_tag(id)])
        .await
        .map_err(internal)?;
    Ok(StatusCode::NO_CONTENT)
}

fn internal(err: impl std::fmt::Display) -> StatusCode {
    eprintln!("request failed: {err}");
    StatusCode::INTERNAL_SERVER_ERROR
}

fn router(state: App) -> Router {
    Router::new()
        .route("/users/{id}", get(get_user).put(put_user))
        .with_state(state)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let redis = Redis::from_env()?;
    let upstash = Arc::new(UpstashBackend::new(redis.clone()));
    let cache = Cache::new(Arc::new(TieredBackend::l2_only(
        upstash,
        TieredConfig::default(),
    )));
    // An application uses a fixed prefix. The run-unique one lets repeated runs against one
    // Upstash database start with a cold cache.
    let namespace = Namespace::new(&format!("axum-example-{:08x}", fastrand::u32(..)), 1)?;
    let db = Arc::new(Database::default());
    db.save_user(User {
        id: 1,
        name: "ann".into(),
    })?;
    let state = App {
        cache,
        ns: namespace.clone(),
        db: Arc::clone(&db),
    };

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/users/1", listener.local_addr()?);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        axum::serve(listener, router(state))
            .with_graceful_shutdown(async {
                let _ = stopped.await;
            })
            .await
    });

    let client = reqwest::Client::new();
    let get_user = || async {
        let response = client.get(&url).send().await?.error_for_status()?;
        Ok::<User, Box<dyn std::error::Error>>(serde_json::from_slice(&response.bytes().await?)?)
    };

    let first = get_user().await?;
    assert_eq!(first.name, "ann");
    assert_eq!(db.loads.load(Ordering::SeqCst), 1, "a miss loads");
    println!("GET  {url}: {first:?} (database loads: 1)");

    let second = get_user().await?;
    assert_eq!(second, first);
    assert_eq!(db.loads.load(Ordering::SeqCst), 1, "a hit does not load");
    println!("GET  {url}: {second:?} (database loads: 1, a cache hit)");

    let status = client
        .put(&url)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(r#"{"name":"ann b."}"#)
        .send()
        .await?
        .status();
    assert_eq!(status, reqwest::StatusCode::NO_CONTENT);
    println!("PUT  {url}: {status}");

    let third = get_user().await?;
    assert_eq!(third.name, "ann b.", "a read after the write sees it");
    assert_eq!(
        db.loads.load(Ordering::SeqCst),
        2,
        "the write invalidated the entry"
    );
    println!("GET  {url}: {third:?} (database loads: 2, never stale)");

    drop(client);
    let _ = stop.send(());
    server.await??;

    // Not needed in an application: remove this run's entries and tag stamps from Redis.
    let pattern = format!("{}:*", namespace.as_str());
    let written: Vec<_> = redis
        .scan_iter(ScanOptions::new().pattern(pattern))
        .try_collect()
        .await?;
    redis.del(written).await?;
    Ok(())
}

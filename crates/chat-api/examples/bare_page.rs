//! The P2 baseline of `cargo xtask bench` (target: chat-api's cached latest page at ≥ 60 % of its
//! throughput, full dataset, server and load generator on separate cores): a bare axum handler that answers the latest
//! page route with a fixed JSON body of `BODY_BYTES` bytes, with no auth, database or cache. The
//! benchmark compares chat-api's cached latest page with it at the same body size.
//!
//! `CHAT_ADDR=127.0.0.1:3001 BODY_BYTES=12000 cargo run --release -p chat-api --example bare_page`

#![allow(clippy::print_stderr, reason = "an example binary")]

use axum::{Router, http::header, routing::get};
use bytes::Bytes;

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let addr = std::env::var("CHAT_ADDR").unwrap_or_else(|_| "127.0.0.1:3001".into());
    let size: usize = std::env::var("BODY_BYTES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(12_000);
    // A JSON document of exactly `size` bytes (at least the 30 bytes of its frame).
    let frame = r#"{"messages":[],"padding":""}"#;
    let body = Bytes::from(format!(
        r#"{{"messages":[],"padding":"{}"}}"#,
        "x".repeat(size.saturating_sub(frame.len()))
    ));
    let page = move || {
        let body = body.clone();
        async move { ([(header::CONTENT_TYPE, "application/json")], body) }
    };
    let app = Router::new()
        .route("/api/v1/channels/{cid}/messages", get(page))
        .route("/health", get(|| async { "{}" }))
        .route("/metrics", get(|| async { "" }));
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    eprintln!("bare_page listening on {addr}");
    axum::serve(listener, app).await
}

//! The browser side, served by chat-api itself: the chat client at `/` and the cache dashboard at
//! `/dashboard`, plain HTML, CSS and JavaScript under `crates/chat-api/web/`, embedded in the
//! binary at build time (no Node toolchain, no CDN, nothing to deploy beside the binary).
//!
//! Every page goes out with a strict Content-Security-Policy (scripts, styles and connections
//! from this origin only, no inline code, no framing) and the usual hardening headers; the pages
//! are written to work under it. `WEB_ASSETS_DIR` serves the same files from a directory instead,
//! re-read on every request, for working on the front end without rebuilding.

use std::{borrow::Cow, path::Path as FsPath};

use axum::{
    Router,
    extract::{Path, State},
    http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
    routing::get,
};

use crate::{AppError, AppState};

/// One embedded file: where it is served, its name under `web/`, its media type and bytes.
struct Asset {
    name: &'static str,
    content_type: &'static str,
    bytes: &'static [u8],
}

macro_rules! asset {
    ($name:literal, $content_type:literal) => {
        Asset {
            name: $name,
            content_type: $content_type,
            bytes: include_bytes!(concat!("../web/", $name)),
        }
    };
}

/// Every file the pages use; nothing outside this list is served, from the binary or a directory.
const ASSETS: &[Asset] = &[
    asset!("index.html", "text/html; charset=utf-8"),
    asset!("dashboard.html", "text/html; charset=utf-8"),
    asset!("app.js", "text/javascript; charset=utf-8"),
    asset!("app.css", "text/css; charset=utf-8"),
    asset!("dashboard.js", "text/javascript; charset=utf-8"),
    asset!("dashboard.css", "text/css; charset=utf-8"),
    asset!("common.css", "text/css; charset=utf-8"),
    asset!("favicon.svg", "image/svg+xml"),
];

/// The policy every page is served with. `connect-src 'self'` covers the same-origin WebSocket
/// (`ws:`/`wss:` to this host) in current browsers; the browser test checks that it does.
pub(crate) const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
    style-src 'self'; img-src 'self' data:; connect-src 'self'; manifest-src 'self'; \
    base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// The pages and their assets. The state's config says whether assets come from a directory.
pub(crate) fn router() -> Router<AppState> {
    Router::new()
        .route("/", get(|state: State<AppState>| page(state, "index.html")))
        .route(
            "/dashboard",
            get(|state: State<AppState>| page(state, "dashboard.html")),
        )
        .route("/assets/{name}", get(asset))
        .route(
            "/favicon.ico",
            get(|state: State<AppState>| page(state, "favicon.svg")),
        )
}

async fn page(State(state): State<AppState>, name: &'static str) -> Response {
    serve(&state, name).await
}

async fn asset(State(state): State<AppState>, Path(name): Path<String>) -> Response {
    // HTML is served only at its page's path.
    if name.ends_with(".html") {
        return AppError::RouteNotFound.into_response();
    }
    serve(&state, &name).await
}

async fn serve(state: &AppState, name: &str) -> Response {
    let Some(asset) = ASSETS.iter().find(|a| a.name == name) else {
        return AppError::RouteNotFound.into_response();
    };
    let bytes: Cow<'static, [u8]> = match &state.config().web_assets_dir {
        Some(dir) => match read_from(dir, asset.name).await {
            Ok(bytes) => Cow::Owned(bytes),
            Err(err) => {
                tracing::warn!(file = asset.name, error = %err, "WEB_ASSETS_DIR: cannot read");
                return AppError::RouteNotFound.into_response();
            }
        },
        None => Cow::Borrowed(asset.bytes),
    };
    let mut headers = security_headers();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(asset.content_type),
    );
    // Small files, and a new binary may change them: revalidate rather than guess a lifetime.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    (StatusCode::OK, headers, bytes).into_response()
}

async fn read_from(dir: &FsPath, name: &str) -> std::io::Result<Vec<u8>> {
    tokio::task::spawn_blocking({
        let path = dir.join(name);
        move || std::fs::read(path)
    })
    .await
    .map_err(std::io::Error::other)?
}

/// The headers of every page and asset: the CSP, no MIME sniffing, no framing, no referrer, an
/// isolated browsing context, and no powerful features.
pub(crate) fn security_headers() -> HeaderMap {
    let mut headers = HeaderMap::with_capacity(8);
    let static_headers: [(HeaderName, &'static str); 7] = [
        (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::REFERRER_POLICY, "no-referrer"),
        (
            HeaderName::from_static("cross-origin-opener-policy"),
            "same-origin",
        ),
        (
            HeaderName::from_static("cross-origin-resource-policy"),
            "same-origin",
        ),
        (
            HeaderName::from_static("permissions-policy"),
            "camera=(), microphone=(), geolocation=(), payment=(), usb=()",
        ),
    ];
    for (name, value) in static_headers {
        headers.insert(name, HeaderValue::from_static(value));
    }
    headers
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_asset_has_a_unique_name_and_a_body() {
        for (i, asset) in ASSETS.iter().enumerate() {
            assert!(!asset.bytes.is_empty(), "{} is empty", asset.name);
            assert!(
                ASSETS[..i].iter().all(|a| a.name != asset.name),
                "{} listed twice",
                asset.name
            );
        }
    }

    #[test]
    fn pages_load_only_assets_that_are_served() {
        // A script or stylesheet the list forgot would be a 404 only a browser notices.
        for page in ASSETS.iter().filter(|a| a.name.ends_with(".html")) {
            let html = std::str::from_utf8(page.bytes).expect("utf-8");
            for reference in html.split("/assets/").skip(1) {
                let name: String = reference
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
                    .collect();
                assert!(
                    ASSETS.iter().any(|a| a.name == name),
                    "{} loads /assets/{name}, which is not served",
                    page.name
                );
            }
            assert!(
                !html.contains("<script>") && !html.contains(" style=\""),
                "{}: inline code breaks under the CSP",
                page.name
            );
        }
    }
}

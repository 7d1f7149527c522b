//! Watches a user's realtime events: connects to `GET /api/v1/ws` with a bearer token and prints
//! every frame (hello, ready, events) as one JSON line. Pings are answered while reading, so the
//! session stays alive. Stop it with Ctrl-C.
//!
//! ```sh
//! cargo run -p chat-api --example watch -- "$TOKEN"            # ws://127.0.0.1:3000
//! cargo run -p chat-api --example watch -- "$TOKEN" ws://host:port
//! ```

// An example prints what it receives.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use futures_util::StreamExt;
use tokio_tungstenite::{
    connect_async,
    tungstenite::{Message, client::IntoClientRequest},
};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let Some(token) = args.next() else {
        eprintln!("usage: watch <token> [ws://127.0.0.1:3000]");
        std::process::exit(2);
    };
    let base = args
        .next()
        .unwrap_or_else(|| "ws://127.0.0.1:3000".to_owned());
    let mut request = format!("{base}/api/v1/ws").into_client_request()?;
    request
        .headers_mut()
        .insert("authorization", format!("Bearer {token}").parse()?);
    let (mut socket, _) = connect_async(request).await?;
    while let Some(frame) = socket.next().await {
        match frame? {
            Message::Text(text) => println!("{}", text.as_str()),
            Message::Close(frame) => {
                eprintln!("closed: {frame:?}");
                break;
            }
            _ => {}
        }
    }
    Ok(())
}

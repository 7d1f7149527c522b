//! SSE endpoints: `/subscribe`, `/psubscribe`, `/monitor`.

use std::time::Duration;

use serde_json::json;
use tokio::{io::AsyncReadExt, net::TcpStream};
use upstash_gateway::testing::TestGateway;

use crate::client::{Client, open};

/// Reads SSE `data:` lines from a raw HTTP stream.
struct SseReader {
    stream: TcpStream,
    buffer: String,
}

impl SseReader {
    async fn open(client: &Client, path: &str) -> SseReader {
        let auth = format!("Bearer {}", client.token);
        let headers = [
            ("Authorization", auth.as_str()),
            ("Accept", "text/event-stream"),
            ("Upstash-Encoding", "base64"),
        ];
        let stream = open(client.addr, "POST", path, &headers, b"[]").await;
        SseReader {
            stream,
            buffer: String::new(),
        }
    }

    /// The next `data:` payload, failing the test after 10 s.
    async fn next_data(&mut self) -> String {
        tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                while let Some(end) = self.buffer.find('\n') {
                    let line: String = self.buffer.drain(..=end).collect();
                    if let Some(data) = line.trim_end_matches(['\r', '\n']).strip_prefix("data: ") {
                        return data.to_owned();
                    }
                }
                let mut chunk = [0u8; 4096];
                let n = self.stream.read(&mut chunk).await.expect("read stream");
                assert!(n > 0, "stream ended; buffered: {:?}", self.buffer);
                self.buffer.push_str(&String::from_utf8_lossy(&chunk[..n]));
            }
        })
        .await
        .expect("an SSE event within 10 s")
    }

    async fn head(&mut self) -> String {
        // The status line and headers arrive before the first event.
        tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                if let Some(end) = self.buffer.find("\r\n\r\n") {
                    return self.buffer.drain(..end + 4).collect();
                }
                let mut chunk = [0u8; 4096];
                let n = self.stream.read(&mut chunk).await.expect("read stream");
                assert!(n > 0, "stream ended before the head");
                self.buffer.push_str(&String::from_utf8_lossy(&chunk[..n]));
            }
        })
        .await
        .expect("response head within 10 s")
    }
}

#[tokio::test]
async fn subscribe_streams_published_messages_in_upstash_format() {
    let env = TestGateway::start().await;
    let client = Client::new(&env);
    let mut events = SseReader::open(&client, "/subscribe/chat").await;
    let head = events.head().await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: text/event-stream"),
        "{head}"
    );
    assert_eq!(events.next_data().await, "subscribe,chat,1");

    let published = client
        .ok(json!(["PUBLISH", "chat", "{\"text\":\"hi, there\"}"]))
        .await;
    assert_eq!(published, json!(1));
    // Not base64, even though the request asked for it: the SDK does not decode events.
    assert_eq!(
        events.next_data().await,
        "message,chat,{\"text\":\"hi, there\"}"
    );
    env.shutdown().await;
}

#[tokio::test]
async fn psubscribe_and_monitor_stream_too() {
    let env = TestGateway::start().await;
    let client = Client::new(&env);
    let mut pattern = SseReader::open(&client, "/psubscribe/room:*").await;
    assert_eq!(pattern.next_data().await, "psubscribe,room:*,1");
    let mut monitor = SseReader::open(&client, "/monitor").await;
    assert_eq!(monitor.next_data().await, "\"OK\"");

    client.ok(json!(["PUBLISH", "room:42", "hello"])).await;
    assert_eq!(pattern.next_data().await, "pmessage,room:*,room:42,hello");
    let line = monitor.next_data().await;
    assert!(line.contains("\"PUBLISH\" \"room:42\" \"hello\""), "{line}");
    env.shutdown().await;
}

#[tokio::test]
async fn streams_require_auth_and_end_on_shutdown() {
    let env = TestGateway::start().await;
    let client = Client::new(&env);
    let stranger = Client {
        addr: client.addr,
        token: "wrong".into(),
    };
    let mut refused = SseReader::open(&stranger, "/subscribe/chat").await;
    assert!(refused.head().await.starts_with("HTTP/1.1 401"));

    let mut events = SseReader::open(&client, "/subscribe/chat").await;
    assert_eq!(events.next_data().await, "subscribe,chat,1");
    // Graceful shutdown must not wait forever on an open stream.
    tokio::time::timeout(Duration::from_secs(5), env.shutdown())
        .await
        .expect("shutdown ends open streams");
}

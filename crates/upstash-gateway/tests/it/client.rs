//! A minimal HTTP/1.1 client over a raw TCP socket.
//!
//! Tests need to send paths exactly as written (percent-encodings, odd methods) and to read SSE
//! incrementally; a raw client does both without a heavyweight dependency.

use std::{net::SocketAddr, time::Duration};

use serde_json::Value;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};
use upstash_gateway::testing::TestGateway;

/// No single request in these tests should take longer; a hang fails the test instead.
pub(crate) const REQUEST_DEADLINE: Duration = Duration::from_secs(15);

#[derive(Debug)]
pub(crate) struct HttpResponse {
    pub(crate) status: u16,
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) body: Vec<u8>,
}

impl HttpResponse {
    pub(crate) fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "body is not JSON ({e}): {:?}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The `error` text of a JSON error body.
    pub(crate) fn error(&self) -> String {
        self.json()["error"]
            .as_str()
            .unwrap_or_else(|| panic!("no error in {}", self.json()))
            .to_owned()
    }
}

/// Sends one request (with `Connection: close`) and reads the whole response.
pub(crate) async fn send(
    addr: SocketAddr,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> HttpResponse {
    tokio::time::timeout(
        REQUEST_DEADLINE,
        send_inner(addr, method, target, headers, body),
    )
    .await
    .unwrap_or_else(|_| panic!("{method} {target} did not complete within {REQUEST_DEADLINE:?}"))
}

async fn send_inner(
    addr: SocketAddr,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> HttpResponse {
    let mut stream = open(addr, method, target, headers, body).await;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await.expect("read response");
    parse_response(&raw, method == "HEAD")
}

/// Writes a request and returns the socket, for reading a streamed response.
pub(crate) async fn open(
    addr: SocketAddr,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> TcpStream {
    let mut stream = TcpStream::connect(addr).await.expect("connect to gateway");
    let mut request = format!(
        "{method} {target} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    stream
        .write_all(request.as_bytes())
        .await
        .expect("write request head");
    stream.write_all(body).await.expect("write request body");
    stream
}

fn parse_response(raw: &[u8], head_only: bool) -> HttpResponse {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("response head");
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut lines = head.split("\r\n");
    let status: u16 = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .expect("status line");
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let rest = &raw[split + 4..];
    let chunked = headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.eq_ignore_ascii_case("chunked"));
    let body = if head_only {
        Vec::new()
    } else if chunked {
        dechunk(rest)
    } else {
        rest.to_vec()
    };
    HttpResponse {
        status,
        headers,
        body,
    }
}

fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(line_end) = data.windows(2).position(|w| w == b"\r\n") {
        let size = usize::from_str_radix(
            std::str::from_utf8(&data[..line_end])
                .expect("chunk size")
                .trim(),
            16,
        )
        .expect("hex size");
        data = &data[line_end + 2..];
        if size == 0 {
            break;
        }
        out.extend_from_slice(&data[..size]);
        data = &data[size + 2..];
    }
    out
}

/// A client bound to one test gateway and its token.
pub(crate) struct Client {
    pub(crate) addr: SocketAddr,
    pub(crate) token: String,
}

impl Client {
    pub(crate) fn new(env: &TestGateway) -> Self {
        Client {
            addr: env.gateway().addr(),
            token: env.token().to_owned(),
        }
    }

    fn auth(&self) -> String {
        format!("Bearer {}", self.token)
    }

    /// POST a JSON body to `path` with the token and extra headers.
    pub(crate) async fn post_json(
        &self,
        path: &str,
        body: &Value,
        headers: &[(&str, &str)],
    ) -> HttpResponse {
        let auth = self.auth();
        let mut all = vec![
            ("Authorization", auth.as_str()),
            ("Content-Type", "application/json"),
        ];
        all.extend_from_slice(headers);
        send(self.addr, "POST", path, &all, body.to_string().as_bytes()).await
    }

    /// One command in the JSON body form.
    pub(crate) async fn cmd(&self, command: Value) -> HttpResponse {
        self.post_json("/", &command, &[]).await
    }

    /// One command in the JSON body form; panics unless it succeeded, returns `result`.
    pub(crate) async fn ok(&self, command: Value) -> Value {
        let response = self.cmd(command.clone()).await;
        assert_eq!(
            response.status,
            200,
            "{command} -> {}",
            String::from_utf8_lossy(&response.body)
        );
        response.json()["result"].clone()
    }

    /// Any request with the token in the Authorization header.
    pub(crate) async fn request(&self, method: &str, target: &str, body: &[u8]) -> HttpResponse {
        let auth = self.auth();
        send(
            self.addr,
            method,
            target,
            &[("Authorization", auth.as_str())],
            body,
        )
        .await
    }
}

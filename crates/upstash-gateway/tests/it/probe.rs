//! Looking at Redis directly (not through the gateway), and waiting for a condition with a
//! deadline instead of sleeping.

use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};
use upstash_gateway::testing::TestGateway;

/// How long any single wait in these tests may take before the test fails.
pub(crate) const DEADLINE: Duration = Duration::from_secs(15);

/// Sends one command straight to Redis (not through the gateway) and returns the raw reply.
pub(crate) async fn redis(addr: SocketAddr, args: &[&[u8]]) -> Vec<u8> {
    let mut stream = TcpStream::connect(addr).await.expect("connect to redis");
    let mut request = format!("*{}\r\n", args.len()).into_bytes();
    for arg in args {
        request.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
        request.extend_from_slice(arg);
        request.extend_from_slice(b"\r\n");
    }
    stream.write_all(&request).await.expect("write to redis");
    let mut reply = Vec::new();
    let mut chunk = [0u8; 64 * 1024];
    loop {
        let n = stream.read(&mut chunk).await.expect("read from redis");
        assert!(n > 0, "redis closed before replying");
        reply.extend_from_slice(&chunk[..n]);
        if let Some(line_end) = reply.windows(2).position(|w| w == b"\r\n") {
            if reply[0] != b'$' {
                return reply;
            }
            let len: usize = std::str::from_utf8(&reply[1..line_end])
                .expect("bulk length")
                .parse()
                .expect("bulk length");
            if reply.len() >= line_end + 2 + len + 2 {
                return reply[line_end + 2..line_end + 2 + len].to_vec();
            }
        }
    }
}

/// Redis's clients other than the one asking: the gateway's connections.
pub(crate) async fn gateway_connections(env: &TestGateway) -> Vec<String> {
    let list = redis(env.redis().addr(), &[b"CLIENT", b"LIST"]).await;
    String::from_utf8_lossy(&list)
        .lines()
        .filter(|line| !line.contains("cmd=client|list"))
        .map(str::to_owned)
        .collect()
}

/// Polls `condition` until it holds, failing the test after the deadline.
pub(crate) async fn eventually<F, Fut>(what: &str, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + DEADLINE;
    while !condition().await {
        assert!(Instant::now() < deadline, "never happened: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

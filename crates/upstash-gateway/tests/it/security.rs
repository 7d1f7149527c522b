//! Tokens, refused and admin commands, request limits, the body read timeout, what health tells,
//! and the sync token.

use std::time::{Duration, Instant};

use serde_json::json;
use upstash_gateway::testing::TestGateway;

use crate::client::{Client, send};

const UNAUTHORIZED: &str = "WRONGPASS invalid or missing auth token";

#[tokio::test]
async fn missing_or_wrong_tokens_get_401_with_upstash_text() {
    let env = TestGateway::start().await;
    let client = Client::new(&env);
    let body = br#"["SET","k","v"]"#;
    let wrong = format!("Bearer {}x", client.token);
    let cases: [(&str, Vec<(&str, &str)>); 5] = [
        ("/", vec![]),
        ("/", vec![("Authorization", wrong.as_str())]),
        ("/", vec![("Authorization", "Basic Zm9vOmJhcg==")]),
        ("/?_token=nope", vec![]),
        ("/pipeline", vec![("Authorization", "Bearer ")]),
    ];
    for (target, headers) in cases {
        let response = send(client.addr, "POST", target, &headers, body).await;
        assert_eq!(response.status, 401, "{target} {headers:?}");
        assert_eq!(response.error(), UNAUTHORIZED);
    }
    // Nothing was written by the refused requests.
    assert_eq!(client.ok(json!(["EXISTS", "k"])).await, json!(0));

    // `?_token=` works in place of the header, in both forms.
    let target = format!("/?_token={}", client.token);
    assert_eq!(
        send(client.addr, "POST", &target, &[], body).await.status,
        200
    );
    let target = format!("/get/k?_token={}", client.token);
    assert_eq!(
        send(client.addr, "GET", &target, &[], b"").await.json(),
        json!({"result": "v"})
    );
    env.shutdown().await;
}

#[tokio::test]
async fn read_only_token_reads_but_cannot_write() {
    let env = TestGateway::start_with(|builder| builder.read_only_token("read-only-secret")).await;
    let writer = Client::new(&env);
    let reader = Client {
        addr: writer.addr,
        token: "read-only-secret".into(),
    };
    writer.ok(json!(["SET", "k", "v"])).await;

    assert_eq!(reader.ok(json!(["GET", "k"])).await, json!("v"));
    assert_eq!(reader.ok(json!(["SCAN", 0])).await[1], json!(["k"]));
    for write in [
        json!(["SET", "k", "x"]),
        json!(["DEL", "k"]),
        json!(["EVAL", "return 1", 0]),
        json!(["FLUSHALL"]),
    ] {
        let response = reader.cmd(write.clone()).await;
        assert_eq!(response.status, 400, "{write}");
        assert!(
            response.error().starts_with("NOPERM"),
            "{write}: {}",
            response.error()
        );
    }
    let path_write = reader.request("GET", "/del/k", b"").await;
    assert_eq!(path_write.status, 400);

    // In a pipeline only the writes fail; in a transaction the whole thing is refused.
    let pipeline = reader
        .post_json("/pipeline", &json!([["GET", "k"], ["SET", "k", "x"]]), &[])
        .await;
    let results = pipeline.json();
    assert_eq!(results[0], json!({"result": "v"}));
    assert!(results[1]["error"].as_str().unwrap().starts_with("NOPERM"));
    let multi = reader
        .post_json(
            "/multi-exec",
            &json!([["GET", "k"], ["SET", "k", "x"]]),
            &[],
        )
        .await;
    assert_eq!(multi.status, 400);
    assert_eq!(writer.ok(json!(["GET", "k"])).await, json!("v"));
    env.shutdown().await;
}

#[tokio::test]
async fn sync_token_header_advances_on_writes_and_is_accepted_back() {
    let env = TestGateway::start().await;
    let client = Client::new(&env);
    let token_of = |response: &crate::client::HttpResponse| -> u64 {
        response
            .header("upstash-sync-token")
            .expect("sync token header")
            .parse()
            .expect("numeric sync token")
    };
    let first = token_of(&client.cmd(json!(["SET", "k", "1"])).await);
    let after_read = client
        .post_json(
            "/",
            &json!(["GET", "k"]),
            &[("upstash-sync-token", &first.to_string())],
        )
        .await;
    assert_eq!(after_read.status, 200);
    assert_eq!(
        token_of(&after_read),
        first,
        "a read does not move the token"
    );
    let after_write = token_of(
        &client
            .post_json("/pipeline", &json!([["INCR", "k"]]), &[])
            .await,
    );
    assert!(after_write > first);
    // Errors carry it too, and an empty or odd presented token is fine (one Redis: nothing to wait for).
    let unauthorized = send(client.addr, "POST", "/", &[], b"[]").await;
    assert!(unauthorized.header("upstash-sync-token").is_some());
    let odd = client
        .post_json("/", &json!(["GET", "k"]), &[("upstash-sync-token", "")])
        .await;
    assert_eq!(odd.status, 200);
    env.shutdown().await;
}

#[tokio::test]
async fn blocking_and_connection_state_commands_are_refused_without_waiting() {
    let env = TestGateway::start().await;
    let client = Client::new(&env);
    let started = Instant::now();
    for command in [
        json!(["BLPOP", "q", 0]),
        json!(["BRPOP", "q", 0]),
        json!(["BLMOVE", "a", "b", "LEFT", "RIGHT", 0]),
        json!(["BZPOPMIN", "z", 0]),
        json!(["XREAD", "BLOCK", 0, "STREAMS", "s", "$"]),
        json!(["WAIT", 1, 0]),
    ] {
        let response = client.cmd(command.clone()).await;
        assert_eq!(response.status, 400, "{command}");
        assert!(
            response.error().contains("blocking command"),
            "{command}: {}",
            response.error()
        );
    }
    for command in [
        json!(["SUBSCRIBE", "c"]),
        json!(["SELECT", 1]),
        json!(["HELLO", 3]),
        json!(["MULTI"]),
        json!(["CLIENT", "KILL", "TYPE", "normal"]),
    ] {
        let response = client.cmd(command.clone()).await;
        assert_eq!(response.status, 400, "{command}");
        assert!(
            response.error().contains("not supported"),
            "{command}: {}",
            response.error()
        );
    }
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "refusals must not wait on Redis"
    );
    // Refused commands in a pipeline fail in place; the rest runs.
    let pipeline = client
        .post_json("/pipeline", &json!([["BLPOP", "q", 0], ["PING"]]), &[])
        .await;
    let results = pipeline.json();
    assert!(results[0]["error"].as_str().unwrap().contains("blocking"));
    assert_eq!(results[1], json!({"result": "PONG"}));
    // And the pooled connections were not switched to another database or protocol.
    assert_eq!(client.ok(json!(["SET", "still", "db0"])).await, json!("OK"));
    assert_eq!(
        env.redis().raw_command(&[b"GET", b"still"]),
        b"$3\r\ndb0\r\n"
    );
    env.shutdown().await;
}

#[tokio::test]
async fn read_only_token_cannot_run_scripts_or_functions() {
    let env = TestGateway::start_with(|builder| builder.read_only_token("read-only-secret")).await;
    let reader = Client {
        addr: env.gateway().addr(),
        token: "read-only-secret".into(),
    };
    // A read-only script cannot write, but it can loop: the server would answer BUSY to everyone.
    for script in [
        json!(["EVAL_RO", "while true do end", 0]),
        json!(["EVALSHA_RO", "0000000000000000000000000000000000000000", 0]),
        json!(["FCALL_RO", "f", 0]),
    ] {
        let response = reader.cmd(script.clone()).await;
        assert_eq!(response.status, 400, "{script}");
        assert!(
            response.error().starts_with("NOPERM") && response.error().contains("read-only"),
            "{script}: {}",
            response.error()
        );
    }
    let pipeline = reader
        .post_json("/pipeline", &json!([["EVAL_RO", "return 1", 0]]), &[])
        .await;
    assert!(
        pipeline.json()[0]["error"]
            .as_str()
            .unwrap()
            .starts_with("NOPERM")
    );
    // Nothing reached Redis: it is not busy, and the full token works at once.
    let writer = Client::new(&env);
    assert_eq!(writer.ok(json!(["PING"])).await, json!("PONG"));
    env.shutdown().await;
}

#[tokio::test]
async fn admin_commands_are_refused_unless_the_gateway_allows_them() {
    let env = TestGateway::start().await;
    let client = Client::new(&env);
    for (command, shown) in [
        (
            json!(["CONFIG", "SET", "requirepass", "locked-out"]),
            "config",
        ),
        (json!(["config", "get", "*"]), "config"),
        (json!(["ACL", "SETUSER", "default", "off"]), "acl"),
        (json!(["SAVE"]), "save"),
        (json!(["BGREWRITEAOF"]), "bgrewriteaof"),
        (json!(["SWAPDB", 0, 1]), "swapdb"),
        (json!(["MODULE", "LIST"]), "module"),
        (json!(["SLOWLOG", "GET"]), "slowlog"),
        (json!(["MEMORY", "PURGE"]), "memory purge"),
    ] {
        let response = client.cmd(command.clone()).await;
        assert_eq!(response.status, 400, "{command}");
        assert_eq!(
            response.error(),
            format!(
                "ERR command '{shown}' is disabled on this gateway; start it with --allow-admin-commands"
            ),
            "{command}"
        );
    }
    // In a transaction the refusal discards everything, so the SET did not run either.
    let multi = client
        .post_json(
            "/multi-exec",
            &json!([["SET", "k", "v"], ["CONFIG", "SET", "requirepass", "x"]]),
            &[],
        )
        .await;
    assert_eq!(multi.status, 400);
    assert!(multi.error().contains("disabled on this gateway"));
    // Redis still takes connections without a password, and nothing was written.
    assert_eq!(env.redis().raw_command(&[b"EXISTS", b"k"]), b":0\r\n");
    // What Upstash also runs for the standard token stays available.
    for command in [
        json!(["FLUSHDB"]),
        json!(["SCRIPT", "FLUSH"]),
        json!(["MEMORY", "USAGE", "k"]),
        json!(["INFO", "server"]),
    ] {
        assert_eq!(client.cmd(command.clone()).await.status, 200, "{command}");
    }
    env.shutdown().await;

    let env = TestGateway::start_with(|builder| builder.allow_admin_commands(true)).await;
    let client = Client::new(&env);
    assert_eq!(
        client
            .ok(json!(["CONFIG", "SET", "slowlog-max-len", 200]))
            .await,
        json!("OK")
    );
    assert_eq!(
        client
            .ok(json!(["ACL", "SETUSER", "probe", "on", ">probe-password"]))
            .await,
        json!("OK")
    );
    assert_eq!(
        client.ok(json!(["ACL", "DELUSER", "probe"])).await,
        json!(1)
    );
    env.shutdown().await;
}

#[tokio::test]
async fn pipelines_over_the_command_limit_are_refused_with_400() {
    let env = TestGateway::start_with(|builder| builder.max_pipeline_commands(100)).await;
    let client = Client::new(&env);
    let commands = |n: usize| json!(vec![json!(["INCR", "counter"]); n]);
    let at_limit = client.post_json("/pipeline", &commands(100), &[]).await;
    assert_eq!(at_limit.status, 200);
    assert_eq!(at_limit.json()[99], json!({"result": 100}));
    for endpoint in ["/pipeline", "/multi-exec"] {
        let over = client.post_json(endpoint, &commands(101), &[]).await;
        assert_eq!(over.status, 400, "{endpoint}");
        assert_eq!(
            over.error(),
            "ERR too many commands in one request: at most 100 per /pipeline or /multi-exec"
        );
    }
    // Refused before anything ran.
    assert_eq!(client.ok(json!(["GET", "counter"])).await, json!("100"));
    env.shutdown().await;
}

#[tokio::test]
async fn requests_over_the_argument_limit_are_refused_with_400() {
    let env = TestGateway::start_with(|builder| builder.max_request_args(10)).await;
    let client = Client::new(&env);
    let keys: Vec<String> = (0..20).map(|i| format!("k{i}")).collect();
    let mut mget = vec!["MGET".to_owned()];
    mget.extend(keys);
    let response = client.cmd(json!(mget)).await;
    assert_eq!(response.status, 400);
    assert_eq!(
        response.error(),
        "ERR too many arguments in one request: at most 10 in all"
    );
    let pipeline = client
        .post_json("/pipeline", &json!(vec![json!(["GET", "k"]); 6]), &[])
        .await;
    assert_eq!(pipeline.status, 400);
    assert_eq!(
        client.ok(json!(["MGET", "a", "b"])).await,
        json!([null, null])
    );
    env.shutdown().await;
}

#[tokio::test]
async fn a_trickled_body_gets_408_and_the_connection_is_closed() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    let timeout = Duration::from_millis(500);
    let env = TestGateway::start_with(|builder| builder.body_read_timeout(timeout)).await;
    let mut stream = tokio::net::TcpStream::connect(env.gateway().addr())
        .await
        .unwrap();
    let head = format!(
        "POST / HTTP/1.1\r\nHost: gateway\r\nAuthorization: Bearer {}\r\nContent-Length: 1000\r\n\r\n[",
        env.token()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let started = Instant::now();
    let (mut reader, mut writer) = stream.into_split();
    // One byte every 100 ms: never idle for long, never done.
    let trickle = tokio::spawn(async move {
        while writer.write_all(b" ").await.is_ok() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    let mut raw = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), reader.read_to_end(&mut raw)).await;
    trickle.abort();
    assert!(
        read.is_ok(),
        "the connection was still open after 10 s; got {:?}",
        String::from_utf8_lossy(&raw)
    );
    let elapsed = started.elapsed();
    let text = String::from_utf8_lossy(&raw);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(
        text.contains("request body not received within 500 ms"),
        "{text}"
    );
    assert!(elapsed >= timeout / 2, "answered after {elapsed:?}");
    assert!(
        elapsed < Duration::from_secs(5),
        "answered after {elapsed:?}"
    );

    // Other clients were not held up meanwhile, and a prompt body still works.
    let client = Client::new(&env);
    assert_eq!(client.ok(json!(["PING"])).await, json!("PONG"));
    env.shutdown().await;
}

#[tokio::test]
async fn health_does_not_tell_where_redis_is() {
    let env = TestGateway::start().await;
    let addr = env.gateway().addr();
    let port = env.redis().port().to_string();
    env.redis().kill();
    let health = send(addr, "GET", "/__gateway/health", &[], b"").await;
    assert_eq!(health.status, 503);
    assert_eq!(
        health.json(),
        json!({"status": "degraded", "redis": "unavailable"})
    );
    let body = String::from_utf8_lossy(&health.body);
    assert!(
        !body.contains("127.0.0.1") && !body.contains(&port),
        "{body}"
    );
    // Nor does a command's error, even for a holder of the token.
    let client = Client::new(&env);
    let failed = client.cmd(json!(["GET", "k"])).await;
    assert_eq!(failed.status, 503);
    let error = failed.error();
    assert!(
        error.starts_with("ERR gateway: redis is unavailable"),
        "{error}"
    );
    assert!(
        !error.contains("127.0.0.1") && !error.contains(&port),
        "{error}"
    );
    env.shutdown().await;
}

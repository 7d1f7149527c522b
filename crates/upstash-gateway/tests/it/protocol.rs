//! The command forms, encodings and status codes.

use std::sync::Arc;

use serde_json::{Value, json};
use upstash_gateway::testing::TestGateway;

use crate::client::{Client, send};

#[tokio::test]
async fn json_body_form_runs_commands_and_maps_errors_to_400() {
    let env = TestGateway::start().await;
    let client = Client::new(&env);

    assert_eq!(
        client
            .ok(json!(["SET", "greeting", "héllo 😀", "EX", 100]))
            .await,
        json!("OK")
    );
    assert_eq!(
        client.ok(json!(["GET", "greeting"])).await,
        json!("héllo 😀")
    );
    assert_eq!(client.ok(json!(["get", "missing"])).await, Value::Null);
    assert_eq!(client.ok(json!(["INCRBY", "n", 5])).await, json!(5));
    assert_eq!(
        client
            .ok(json!(["TTL", "greeting"]))
            .await
            .as_i64()
            .map(|t| t > 0 && t <= 100),
        Some(true)
    );
    // JSON numbers are passed as their literal text: a float stays a float.
    assert_eq!(
        client.ok(json!(["INCRBYFLOAT", "f", 1.5])).await,
        json!("1.5")
    );

    let wrong_args = client.cmd(json!(["GET"])).await;
    assert_eq!(wrong_args.status, 400);
    assert_eq!(
        wrong_args.error(),
        "ERR wrong number of arguments for 'get' command"
    );
    assert_eq!(wrong_args.header("content-type"), Some("application/json"));

    let wrong_type = client.cmd(json!(["INCR", "greeting"])).await;
    assert_eq!(wrong_type.status, 400);
    assert!(
        wrong_type
            .error()
            .starts_with("ERR value is not an integer"),
        "{}",
        wrong_type.error()
    );

    for bad in [
        json!({"cmd": "GET"}),
        json!([]),
        json!(["SET", "k", null]),
        json!(["SET", ["nested"]]),
    ] {
        let response = client.cmd(bad.clone()).await;
        assert_eq!(response.status, 400, "{bad}");
        assert!(
            response.error().starts_with("ERR"),
            "{bad}: {}",
            response.error()
        );
    }
    env.shutdown().await;
}

#[tokio::test]
async fn any_content_type_and_methods_get_head_post_put_are_accepted() {
    let env = TestGateway::start().await;
    let client = Client::new(&env);
    let auth = format!("Bearer {}", client.token);
    // curl -d sends application/x-www-form-urlencoded; Upstash accepts it, so do we.
    let response = send(
        client.addr,
        "POST",
        "/",
        &[
            ("Authorization", &auth),
            ("Content-Type", "application/x-www-form-urlencoded"),
        ],
        br#"["SET","ct","1"]"#,
    )
    .await;
    assert_eq!(response.status, 200);
    for method in ["GET", "POST", "PUT"] {
        let response = client.request(method, "/get/ct", b"").await;
        assert_eq!(
            (response.status, response.json()),
            (200, json!({"result": "1"})),
            "{method}"
        );
    }
    let head = client.request("HEAD", "/get/ct", b"").await;
    assert_eq!(head.status, 200);
    for method in ["DELETE", "PATCH", "OPTIONS"] {
        let response = client.request(method, "/get/ct", b"").await;
        assert_eq!(response.status, 405, "{method}");
        assert!(response.error().contains("method not allowed"));
    }
    env.shutdown().await;
}

#[tokio::test]
async fn path_form_decodes_segments_appends_body_and_query_args() {
    let env = TestGateway::start().await;
    let client = Client::new(&env);

    assert_eq!(
        client.request("GET", "/set/foo/bar", b"").await.json(),
        json!({"result": "OK"})
    );
    assert_eq!(
        client.request("GET", "/GET/foo", b"").await.json(),
        json!({"result": "bar"})
    );

    // Percent-encoded segments decode to raw bytes, including '/' and invalid UTF-8.
    let response = client.request("GET", "/set/a%2Fb/x%FFy%20z", b"").await;
    assert_eq!(response.status, 200);
    assert_eq!(
        env.redis().raw_command(&[b"GET", b"a/b"]),
        b"$5\r\nx\xffy z\r\n"
    );

    // POST body becomes the last argument, then the query arguments; `_token` is not an argument.
    let body = br#"{"json": "value", "n": [1, 2]}"#;
    let target = format!("/set/doc?EX=100&_token={}", client.token);
    let response = send(client.addr, "POST", &target, &[], body).await;
    assert_eq!(
        (response.status, response.json()),
        (200, json!({"result": "OK"}))
    );
    assert_eq!(
        client.ok(json!(["GET", "doc"])).await,
        json!(std::str::from_utf8(body).unwrap())
    );
    let ttl = client.ok(json!(["TTL", "doc"])).await.as_i64().unwrap();
    assert!((1..=100).contains(&ttl), "{ttl}");

    // A flag-only query argument (`?NX`) is passed as a word.
    let response = client.request("POST", "/set/doc?NX", b"other").await;
    assert_eq!(
        response.json(),
        json!({"result": null}),
        "NX must refuse an existing key"
    );

    // Binary body is stored byte for byte.
    let response = client.request("PUT", "/set/bin", b"\x00\x01\xfe\xff").await;
    assert_eq!(response.status, 200);
    assert_eq!(
        env.redis().raw_command(&[b"GET", b"bin"]),
        b"$4\r\n\x00\x01\xfe\xff\r\n"
    );

    let unknown = client.request("GET", "/nosuchcommand/x", b"").await;
    assert_eq!(unknown.status, 400);
    assert!(
        unknown.error().starts_with("ERR unknown command"),
        "{}",
        unknown.error()
    );
    env.shutdown().await;
}

#[tokio::test]
async fn pipeline_returns_per_command_results_in_order() {
    let env = TestGateway::start().await;
    let client = Client::new(&env);
    let response = client
        .post_json(
            "/pipeline",
            &json!([
                ["SET", "p", "v"],
                ["INCR", "p"],
                ["SET", "c", 1],
                ["INCR", "c"],
                ["GET", "p"],
                ["LRANGE", "nope", 0, -1]
            ]),
            &[],
        )
        .await;
    assert_eq!(response.status, 200);
    assert_eq!(
        response.json(),
        json!([
            {"result": "OK"},
            {"error": "ERR value is not an integer or out of range"},
            {"result": "OK"},
            {"result": 2},
            {"result": "v"},
            {"result": []}
        ])
    );
    for bad in [json!([]), json!(["GET", "k"]), json!({"a": 1})] {
        assert_eq!(
            client.post_json("/pipeline", &bad, &[]).await.status,
            400,
            "{bad}"
        );
    }
    env.shutdown().await;
}

#[tokio::test]
async fn multi_exec_reports_per_command_errors_and_discards_on_queue_errors() {
    let env = TestGateway::start().await;
    let client = Client::new(&env);
    let response = client
        .post_json(
            "/multi-exec",
            &json!([
                ["SET", "t", "text"],
                ["INCR", "t"],
                ["SET", "u", 1],
                ["INCR", "u"]
            ]),
            &[],
        )
        .await;
    assert_eq!(response.status, 200);
    assert_eq!(
        response.json(),
        json!([{"result": "OK"}, {"error": "ERR value is not an integer or out of range"}, {"result": "OK"}, {"result": 2}])
    );

    // A command Redis cannot queue discards the whole transaction: nothing is applied.
    let response = client
        .post_json(
            "/multi-exec",
            &json!([["SET", "never", "1"], ["NOSUCHCMD"]]),
            &[],
        )
        .await;
    assert_eq!(response.status, 400);
    let error = response.error();
    assert!(
        error.starts_with("EXECABORT") && error.contains("unknown command"),
        "{error}"
    );
    assert_eq!(client.ok(json!(["EXISTS", "never"])).await, json!(0));

    // WATCH/MULTI inside a transaction are refused up front, also discarding it.
    let response = client
        .post_json(
            "/multi-exec",
            &json!([["SET", "never", "1"], ["MULTI"]]),
            &[],
        )
        .await;
    assert_eq!(response.status, 400);
    assert!(
        response.error().contains("transaction discarded"),
        "{}",
        response.error()
    );
    assert_eq!(client.ok(json!(["EXISTS", "never"])).await, json!(0));

    // The connection is clean afterwards: ordinary commands keep working.
    assert_eq!(client.ok(json!(["GET", "u"])).await, json!("2"));
    env.shutdown().await;
}

#[tokio::test]
async fn multi_exec_is_atomic_under_concurrent_writers() {
    let env = TestGateway::start().await;
    let client = Arc::new(Client::new(&env));
    let mut tasks = Vec::new();
    // Plain INCRs hammer the counter while transactions run INCR then GET: if anything ran in
    // between, GET would differ from the INCR's result.
    for _ in 0..8 {
        let client = Arc::clone(&client);
        tasks.push(tokio::spawn(async move {
            for _ in 0..25 {
                client.ok(json!(["INCR", "counter"])).await;
            }
            Vec::new()
        }));
    }
    for _ in 0..8 {
        let client = Arc::clone(&client);
        tasks.push(tokio::spawn(async move {
            let mut results = Vec::new();
            for _ in 0..25 {
                let response = client
                    .post_json(
                        "/multi-exec",
                        &json!([["INCR", "counter"], ["GET", "counter"]]),
                        &[],
                    )
                    .await;
                assert_eq!(response.status, 200);
                results.push(response.json());
            }
            results
        }));
    }
    let mut checked = 0;
    for task in tasks {
        for result in task.await.unwrap() {
            let incremented = result[0]["result"].as_i64().unwrap();
            let read: i64 = result[1]["result"].as_str().unwrap().parse().unwrap();
            assert_eq!(
                incremented, read,
                "another command ran inside the transaction: {result}"
            );
            checked += 1;
        }
    }
    assert_eq!(checked, 200);
    assert_eq!(client.ok(json!(["GET", "counter"])).await, json!("400"));
    env.shutdown().await;
}

#[tokio::test]
async fn base64_encoding_covers_nested_arrays_but_not_ok_or_errors() {
    let env = TestGateway::start().await;
    let client = Client::new(&env);
    let b64 = [("Upstash-Encoding", "base64")];

    let set = client
        .post_json("/", &json!(["SET", "k", "bar"]), &b64)
        .await;
    assert_eq!(set.json(), json!({"result": "OK"}));
    assert_eq!(
        client
            .post_json("/", &json!(["GET", "k"]), &b64)
            .await
            .json(),
        json!({"result": "YmFy"})
    );
    // Invalid UTF-8 survives only through base64.
    client.request("POST", "/set/bin", b"\xff\xfe").await;
    assert_eq!(
        client
            .post_json("/", &json!(["GET", "bin"]), &b64)
            .await
            .json(),
        json!({"result": "//4="})
    );
    assert_eq!(
        client.ok(json!(["GET", "bin"])).await,
        json!("\u{FFFD}\u{FFFD}")
    );

    // Nested arrays (a Lua table of tables) are encoded element by element; ints and nulls kept.
    let script = "return {'a', {'b', 7, {'c'}}, false}";
    let nested = client
        .post_json("/", &json!(["EVAL", script, 0]), &b64)
        .await;
    assert_eq!(
        nested.json(),
        json!({"result": ["YQ==", ["Yg==", 7, ["Yw=="]], null]})
    );
    // Status replies other than OK are strings like any other.
    assert_eq!(
        client.post_json("/", &json!(["PING"]), &b64).await.json(),
        json!({"result": "UE9ORw=="})
    );
    // Errors are never encoded.
    let error = client.post_json("/", &json!(["INCR", "k"]), &b64).await;
    assert_eq!(
        error.json(),
        json!({"error": "ERR value is not an integer or out of range"})
    );

    // Each pipeline element is encoded on its own.
    let pipeline = client
        .post_json(
            "/pipeline",
            &json!([
                ["SET", "a", "1"],
                ["GET", "a"],
                ["INCR", "k"],
                ["MGET", "a", "zz"]
            ]),
            &b64,
        )
        .await;
    assert_eq!(
        pipeline.json(),
        json!([{"result": "OK"}, {"result": "MQ=="}, {"error": "ERR value is not an integer or out of range"}, {"result": ["MQ==", null]}])
    );
    let multi = client
        .post_json(
            "/multi-exec",
            &json!([["GET", "a"], ["SET", "a", "2"]]),
            &b64,
        )
        .await;
    assert_eq!(multi.json(), json!([{"result": "MQ=="}, {"result": "OK"}]));
    env.shutdown().await;
}

#[tokio::test]
async fn resp2_response_format_returns_raw_resp() {
    let env = TestGateway::start().await;
    let client = Client::new(&env);
    client.ok(json!(["SET", "k", "bar"])).await;
    let resp2 = [("Upstash-Response-Format", "resp2")];
    let response = client.post_json("/", &json!(["GET", "k"]), &resp2).await;
    assert_eq!(response.status, 200);
    assert_eq!(
        response.header("content-type"),
        Some("application/octet-stream")
    );
    assert_eq!(response.body, b"$3\r\nbar\r\n");
    assert_eq!(
        client
            .post_json("/", &json!(["SET", "k", "v"]), &resp2)
            .await
            .body,
        b"+OK\r\n"
    );

    let both = client
        .post_json(
            "/",
            &json!(["GET", "k"]),
            &[
                ("Upstash-Response-Format", "resp2"),
                ("Upstash-Encoding", "base64"),
            ],
        )
        .await;
    assert_eq!(both.status, 400);
    assert_eq!(
        client
            .post_json(
                "/",
                &json!(["GET", "k"]),
                &[("Upstash-Response-Format", "xml")]
            )
            .await
            .status,
        400
    );
    assert_eq!(
        client
            .post_json("/multi-exec", &json!([["GET", "k"]]), &resp2)
            .await
            .status,
        400
    );
    env.shutdown().await;
}

#[tokio::test]
async fn oversized_bodies_are_refused_with_upstash_error() {
    let env = TestGateway::start_with(|builder| builder.max_body_bytes(1024)).await;
    let client = Client::new(&env);
    let big = "x".repeat(2000);
    let response = client.cmd(json!(["SET", "big", big])).await;
    assert_eq!(response.status, 400);
    assert!(
        response
            .error()
            .starts_with("ERR max request size exceeded"),
        "{}",
        response.error()
    );
    assert_eq!(
        client.ok(json!(["SET", "small", "x".repeat(100)])).await,
        json!("OK")
    );
    env.shutdown().await;
}

#[tokio::test]
async fn hostile_input_gets_4xx_never_5xx() {
    let env = TestGateway::start().await;
    let client = Client::new(&env);
    let bodies: [&[u8]; 9] = [
        b"",
        b"\xff\xfe\x00",
        b"[",
        b"[\"SET\"",
        br#"["\ud800"]"#,
        br#"[1e999999]"#,
        br#"[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]"#,
        br#"{"__proto__": 1}"#,
        br#"["\u0000\u0001", "x"]"#,
    ];
    for body in bodies {
        for path in ["/", "/pipeline", "/multi-exec"] {
            let response = client.request("POST", path, body).await;
            assert!(
                (400..500).contains(&response.status),
                "{path} {:?} -> {}",
                String::from_utf8_lossy(body),
                response.status
            );
            assert!(response.error().starts_with("ERR"), "{}", response.error());
        }
    }
    for target in [
        "/%zz/%",
        "/%FF%FE",
        "/get/%00%0A",
        "//",
        "/get//x",
        "/set/k?=&&=x&%ZZ",
    ] {
        let response = client.request("GET", target, b"").await;
        assert!(
            response.status == 200 || response.status == 400,
            "{target} -> {}",
            response.status
        );
    }
    // A big pipeline is fine.
    let many: Vec<serde_json::Value> = (0..2000)
        .map(|i| json!(["SET", format!("k{i}"), i]))
        .collect();
    let response = client.post_json("/pipeline", &json!(many), &[]).await;
    assert_eq!(response.status, 200);
    assert_eq!(response.json().as_array().unwrap().len(), 2000);
    assert_eq!(client.ok(json!(["DBSIZE"])).await, json!(2000));
    env.shutdown().await;
}

/// Redis passes a client's bytes through into status and error replies (a Lua `{ok=…}` or
/// `{err=…}` table, the echo in "unknown command"), so those lines need not be UTF-8. They are
/// replies like any other: byte for byte in `resp2`, lossy or base64 in JSON, and the connection
/// stays in use. (A client that insists on UTF-8 here, like redis-rs, tears the connection down
/// and would turn these into 5xx.)
#[tokio::test]
async fn non_utf8_status_and_error_replies_are_replies_and_keep_the_connection() {
    // One pooled connection: every request below goes over the same one unless it is dropped.
    let env = TestGateway::start_with(|builder| builder.pool_size(1)).await;
    let client = Client::new(&env);
    let auth = format!("Bearer {}", client.token);
    let resp2 = [
        ("Authorization", auth.as_str()),
        ("Upstash-Response-Format", "resp2"),
    ];
    let base64 = [
        ("Authorization", auth.as_str()),
        ("Upstash-Encoding", "base64"),
    ];
    let connections_received = || {
        let info = env.redis().raw_command(&[b"INFO", b"stats"]);
        let info = String::from_utf8_lossy(&info).into_owned();
        info.lines()
            .find_map(|line| line.strip_prefix("total_connections_received:"))
            .and_then(|n| n.trim().parse::<u64>().ok())
            .expect("INFO stats has total_connections_received")
    };
    assert_eq!(client.ok(json!(["PING"])).await, json!("PONG"));
    let before = connections_received();

    let status = "/eval/return%20%7Bok%3DARGV%5B1%5D%7D/0/%FFok";
    let response = send(client.addr, "GET", status, &resp2, b"").await;
    assert_eq!(
        (response.status, &response.body[..]),
        (200, &b"+\xffok\r\n"[..])
    );
    let response = client.request("GET", status, b"").await;
    assert_eq!(
        (response.status, response.json()),
        (200, json!({"result": "\u{FFFD}ok"}))
    );
    let response = send(client.addr, "GET", status, &base64, b"").await;
    assert_eq!(
        (response.status, response.json()),
        (200, json!({"result": "/29r"}))
    );

    let error = "/eval/return%20%7Berr%3DARGV%5B1%5D%7D/0/ERR%20%FFbad";
    let response = send(client.addr, "GET", error, &resp2, b"").await;
    assert_eq!(
        (response.status, &response.body[..]),
        (400, &b"-ERR \xffbad\r\n"[..])
    );
    let response = client.request("GET", error, b"").await;
    assert_eq!(
        (response.status, response.error()),
        (400, "ERR \u{FFFD}bad".to_owned())
    );

    let unknown = client.request("GET", "/%FF%FE/x", b"").await;
    assert_eq!(unknown.status, 400);
    assert!(
        unknown
            .error()
            .starts_with("ERR unknown command '\u{FFFD}\u{FFFD}'"),
        "{}",
        unknown.error()
    );
    // In a pipeline and a transaction, such an error is one element among the others.
    let pipeline = client
        .post_json(
            "/pipeline",
            &json!([["EVAL", "return {err='ERR \\255'}", 0], ["PING"]]),
            &[],
        )
        .await;
    assert_eq!(
        pipeline.json(),
        json!([{"error": "ERR \u{FFFD}"}, {"result": "PONG"}])
    );
    let transaction = client
        .post_json(
            "/multi-exec",
            &json!([["EVAL", "return {ok='\\255'}", 0], ["PING"]]),
            &[],
        )
        .await;
    assert_eq!(
        transaction.json(),
        json!([{"result": "\u{FFFD}"}, {"result": "PONG"}])
    );

    assert_eq!(client.ok(json!(["PING"])).await, json!("PONG"));
    // The only new connection Redis saw is the `INFO` probe's own.
    assert_eq!(connections_received(), before + 1);
    env.shutdown().await;
}

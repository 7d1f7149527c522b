//! `doctor`: every check passing against the gateway, failing with a fix when Redis is down or
//! nothing is configured, and reporting where the configuration came from.

use predicates::prelude::*;

use crate::support::{Env, json, text};

const CHECKS: [&str; 6] = [
    "configuration",
    "connectivity",
    "basic commands",
    "tags",
    "compression",
    "fallback",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_passes_against_the_gateway_with_config_from_dotenv_files() {
    let env = Env::start().await;
    // .env.local wins over .env, as in chat-api; the token never shows.
    std::fs::write(
        env.dir.path().join(".env"),
        "UPSTASH_REDIS_REST_URL=http://127.0.0.1:1\nUPSTASH_REDIS_REST_TOKEN=wrong\n",
    )
    .unwrap();
    std::fs::write(
        env.dir.path().join(".env.local"),
        format!(
            "UPSTASH_REDIS_REST_URL={}\nUPSTASH_REDIS_REST_TOKEN={}\n",
            env.gateway.url(),
            env.gateway.token()
        ),
    )
    .unwrap();
    let out = env
        .bare()
        .args(["doctor", "--timeout", "3s"])
        .assert()
        .success();
    let stdout = text(&out.get_output().stdout);
    for check in CHECKS {
        assert!(
            stdout.contains(&format!("pass  {check}")),
            "{check} should pass:\n{stdout}"
        );
    }
    assert!(stdout.contains("UPSTASH_REDIS_REST_URL in "), "{stdout}");
    assert!(stdout.contains(".env.local"), "{stdout}");
    assert!(stdout.contains("doctor: 6 of 6 checks passed"), "{stdout}");
    assert!(
        !stdout.contains(env.gateway.token()),
        "the token must never be printed"
    );

    let out = env
        .bare()
        .args(["doctor", "--json", "--timeout", "3s"])
        .assert()
        .success();
    let doc = json(&out.get_output().stdout);
    assert_eq!(doc["ok"], true);
    assert_eq!(doc["config"]["url"]["source"]["from"], ".env.local");
    assert_eq!(
        doc["config"]["token"]["source"]["variable"],
        "UPSTASH_REDIS_REST_TOKEN"
    );
    assert_eq!(doc["config"]["token"]["value"], "(redacted)");
    let names: Vec<&str> = doc["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, CHECKS);
    assert!(
        doc["checks"]
            .as_array()
            .unwrap()
            .iter()
            .all(|c| c["status"] == "pass")
    );
    assert!(!text(&out.get_output().stdout).contains(env.gateway.token()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_fails_with_the_failing_check_and_its_fix_when_redis_is_down() {
    let env = Env::start().await;
    env.gateway.redis().kill();
    let out = env
        .cmd()
        .args(["doctor", "--timeout", "2s"])
        .assert()
        .code(2)
        .stdout(predicate::str::contains("pass  configuration"))
        .stdout(predicate::str::contains("FAIL  connectivity"))
        .stdout(predicate::str::contains("fix: "))
        .stdout(predicate::str::contains("redis-server"))
        .stdout(predicate::str::contains("skip  basic commands"))
        .stdout(predicate::str::contains("pass  fallback"));
    let stdout = text(&out.get_output().stdout);
    assert!(stdout.contains("1 failed, 3 skipped"), "{stdout}");

    let out = env
        .cmd()
        .args(["doctor", "--json", "--timeout", "2s"])
        .assert()
        .code(2);
    let doc = json(&out.get_output().stdout);
    assert_eq!(doc["ok"], false);
    let connectivity = &doc["checks"][1];
    assert_eq!(connectivity["status"], "fail");
    assert!(
        connectivity["detail"].as_str().unwrap().contains("503"),
        "{connectivity}"
    );
    assert!(
        connectivity["fix"]
            .as_str()
            .unwrap()
            .contains("redis-server"),
        "{connectivity}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_without_configuration_says_what_to_set() {
    let env = Env::start().await;
    env.bare()
        .args(["doctor", "--timeout", "2s"])
        .assert()
        .code(2)
        .stdout(predicate::str::contains("FAIL  configuration"))
        .stdout(predicate::str::contains("URL: not set"))
        .stdout(predicate::str::contains(
            "fix: pass --url, or set UPSTASH_REDIS_REST_URL",
        ))
        .stdout(predicate::str::contains("pass  fallback"));
}

//! `cargo xtask setup-env`: writes `.env.local` from `.env.example` with the Upstash credentials
//! (or a local `upstash-gateway`), checked with a PING first.
//!
//! - Idempotent: running it again with the same answers changes nothing; other lines of an
//!   existing `.env.local` are kept as they are.
//! - Never replaces a secret that is already set without asking (interactive) or `--force`.
//! - `--non-interactive` with `--url`/`--token` (or `--local-gateway`) for scripts and CI.
//!
//! The token is never printed; validation passes it to the child process through a file only the
//! user can read, not on a command line.

use std::{
    io::{BufRead, Read, Write},
    net::TcpStream,
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use anyhow::{Context, bail};

use crate::util::project_root;

const URL_KEY: &str = "UPSTASH_REDIS_REST_URL";
const TOKEN_KEY: &str = "UPSTASH_REDIS_REST_TOKEN";
const BACKEND_KEY: &str = "CACHE_BACKEND";
const LOCAL_GATEWAY_URL: &str = "http://127.0.0.1:8079";

const HELP: &str = "\
cargo xtask setup-env [OPTIONS]

Writes .env.local (from .env.example) with your Upstash Redis REST URL and token, after checking
them with a PING. Asks for what is missing unless --non-interactive.

Options:
  --url URL           the Upstash REST URL (https://….upstash.io, or a local gateway)
  --token TOKEN       the REST token (prefer the prompt: flags show up in `ps`)
  --local-gateway     use a local upstash-gateway on 127.0.0.1:8079 with a generated token
  --non-interactive   never ask; fail instead
  --force             replace a token that is already set
  --no-validate       skip the PING
  --file PATH         write PATH instead of .env.local
";

#[derive(Debug, Default)]
struct Options {
    url: Option<String>,
    token: Option<String>,
    local_gateway: bool,
    non_interactive: bool,
    force: bool,
    validate: bool,
    file: Option<PathBuf>,
}

fn parse(args: &[String]) -> anyhow::Result<Option<Options>> {
    let mut options = Options {
        validate: true,
        ..Options::default()
    };
    let mut iter = args.iter();
    while let Some(arg) = iter.next() {
        let mut value = |name: &str| {
            iter.next()
                .cloned()
                .with_context(|| format!("{name} needs a value"))
        };
        match arg.as_str() {
            "--url" => options.url = Some(value("--url")?),
            "--token" => options.token = Some(value("--token")?),
            "--file" => options.file = Some(PathBuf::from(value("--file")?)),
            "--local-gateway" => options.local_gateway = true,
            "--non-interactive" => options.non_interactive = true,
            "--force" => options.force = true,
            "--no-validate" => options.validate = false,
            "-h" | "--help" => return Ok(None),
            other => bail!("unknown option {other:?}\n\n{HELP}"),
        }
    }
    Ok(Some(options))
}

pub(crate) fn run(args: &[String]) -> anyhow::Result<()> {
    let Some(options) = parse(args)? else {
        print!("{HELP}");
        return Ok(());
    };
    let root = project_root();
    let file = options
        .file
        .clone()
        .unwrap_or_else(|| root.join(".env.local"));
    let example =
        std::fs::read_to_string(root.join(".env.example")).context("reading .env.example")?;
    let existing = std::fs::read_to_string(&file).ok();
    let stdin = std::io::stdin();
    let mut input = stdin.lock();
    let outcome = setup(
        &options,
        &example,
        existing.as_deref(),
        &mut input,
        &|url, token| {
            if options.validate {
                ping(url, token)
            } else {
                Ok(())
            }
        },
    )?;
    match outcome {
        Outcome::Unchanged => eprintln!("{} is already up to date", file.display()),
        Outcome::Write { text, local_token } => {
            write_private(&file, &text)?;
            eprintln!("wrote {}", file.display());
            if local_token.is_some() {
                eprintln!(
                    "start the local gateway with:\n  redis-server --port 6379 --save '' --appendonly no &\n  \
                     set -a; . {}; set +a\n  UPSTASH_GATEWAY_TOKEN=$UPSTASH_REDIS_REST_TOKEN cargo run -p upstash-gateway",
                    file.display()
                );
            }
        }
    }
    Ok(())
}

/// What `setup` decided.
#[derive(Debug, PartialEq)]
enum Outcome {
    Unchanged,
    Write {
        text: String,
        /// The generated token of a local gateway, if one was set up.
        local_token: Option<String>,
    },
}

/// The whole decision, free of I/O but `input` and `validate`, so it can be tested.
fn setup(
    options: &Options,
    example: &str,
    existing: Option<&str>,
    input: &mut dyn BufRead,
    validate: &dyn Fn(&str, &str) -> anyhow::Result<()>,
) -> anyhow::Result<Outcome> {
    let current = existing.map(parse_env).unwrap_or_default();
    let current_value = |key: &str| {
        current
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
            .filter(|v| !v.is_empty())
    };

    let mut local_token = None;
    let (url, token) = if options.local_gateway {
        let token = current_value(TOKEN_KEY)
            .filter(|_| current_value(URL_KEY).as_deref() == Some(LOCAL_GATEWAY_URL))
            .unwrap_or_else(random_token);
        local_token = Some(token.clone());
        (LOCAL_GATEWAY_URL.to_owned(), token)
    } else {
        let url = match &options.url {
            Some(url) => url.clone(),
            // An existing URL is kept (pass --url to change it); otherwise ask.
            None => match current_value(URL_KEY) {
                Some(url) => url,
                None => {
                    let answer = ask(
                        options,
                        input,
                        "Upstash REST URL (https://….upstash.io; empty for a local gateway)",
                    )?;
                    if answer.is_empty() {
                        let local = Options {
                            local_gateway: true,
                            non_interactive: options.non_interactive,
                            force: options.force,
                            validate: options.validate,
                            ..Options::default()
                        };
                        return setup(&local, example, existing, input, validate);
                    }
                    answer
                }
            },
        };
        let token = match &options.token {
            Some(token) => token.clone(),
            None => match current_value(TOKEN_KEY) {
                Some(token) => token,
                None => ask(options, input, "Upstash REST token")?,
            },
        };
        (url, token)
    };
    check_url(&url)?;
    anyhow::ensure!(!token.is_empty(), "the token is empty");

    if let Some(old) = current_value(TOKEN_KEY) {
        if old != token && !options.force {
            if options.non_interactive {
                bail!("{TOKEN_KEY} is already set to another value; pass --force to replace it");
            }
            let answer = ask(
                options,
                input,
                "A different token is already set. Replace it? [y/N]",
            )?;
            if !matches!(answer.as_str(), "y" | "Y" | "yes") {
                bail!("kept the existing token; nothing written");
            }
        }
    }

    if local_token.is_none() {
        validate(&url, &token).context("the URL and token did not answer PING")?;
    }

    let backend = current_value(BACKEND_KEY).unwrap_or_else(|| "tiered".to_owned());
    let updates = [
        (URL_KEY, url.as_str()),
        (TOKEN_KEY, token.as_str()),
        (BACKEND_KEY, backend.as_str()),
    ];
    let text = merge(existing.unwrap_or(example), &updates);
    if existing == Some(text.as_str()) {
        return Ok(Outcome::Unchanged);
    }
    Ok(Outcome::Write { text, local_token })
}

/// Reads one answer from `input` after a prompt on stderr; refuses under `--non-interactive`.
fn ask(options: &Options, input: &mut dyn BufRead, prompt: &str) -> anyhow::Result<String> {
    if options.non_interactive {
        bail!("{prompt} is needed (give it as a flag; --non-interactive never asks)");
    }
    eprint!("{prompt}: ");
    std::io::stderr().flush()?;
    let mut line = String::new();
    input.read_line(&mut line)?;
    Ok(line.trim().to_owned())
}

fn check_url(url: &str) -> anyhow::Result<()> {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
        .with_context(|| format!("{url:?} is not an http(s) URL"))?;
    anyhow::ensure!(
        !rest.is_empty() && !rest.contains(char::is_whitespace),
        "{url:?} is not a valid URL"
    );
    Ok(())
}

/// `KEY=value` pairs of an env file (comments and blank lines skipped, `# KEY=` ignored).
fn parse_env(text: &str) -> Vec<(String, String)> {
    text.lines()
        .filter_map(|line| {
            let line = line.trim();
            if line.starts_with('#') {
                return None;
            }
            let (k, v) = line.split_once('=')?;
            Some((k.trim().to_owned(), v.trim().trim_matches('"').to_owned()))
        })
        .collect()
}

/// `base` with each key set to its value: an existing `KEY=` line (or a commented `# KEY=` line)
/// is replaced in place, a missing key is appended. Everything else is kept byte for byte.
fn merge(base: &str, updates: &[(&str, &str)]) -> String {
    let mut lines: Vec<String> = base.lines().map(str::to_owned).collect();
    for (key, value) in updates {
        let assignment = format!("{key}={value}");
        let is_line_for = |line: &str, commented: bool| {
            let line = line.trim_start();
            let line = if commented {
                line.strip_prefix('#').map(str::trim_start).unwrap_or("")
            } else {
                line
            };
            line.split_once('=').is_some_and(|(k, _)| k.trim() == *key)
        };
        if let Some(i) = lines.iter().position(|l| is_line_for(l, false)) {
            lines[i] = assignment;
        } else if let Some(i) = lines.iter().position(|l| is_line_for(l, true)) {
            lines[i] = assignment;
        } else {
            lines.push(assignment);
        }
    }
    let mut text = lines.join("\n");
    text.push('\n');
    text
}

fn random_token() -> String {
    let mut bytes = [0u8; 24];
    if let Ok(mut urandom) = std::fs::File::open("/dev/urandom") {
        let _ = urandom.read_exact(&mut bytes);
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn write_private(path: &Path, text: &str) -> anyhow::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    file.write_all(text.as_bytes())?;
    Ok(())
}

/// PING through the REST API: plain HTTP with std for `http://` (a local gateway), curl for
/// `https://` (Upstash), with the token in a private header file.
pub(crate) fn ping(url: &str, token: &str) -> anyhow::Result<()> {
    let body = if let Some(rest) = url.strip_prefix("http://") {
        let (authority, path) = rest.split_once('/').map_or((rest, ""), |(a, p)| (a, p));
        let mut stream = TcpStream::connect(authority)
            .with_context(|| format!("cannot connect to {authority}"))?;
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        let payload = r#"["PING"]"#;
        write!(
            stream,
            "POST /{path} HTTP/1.0\r\nHost: {authority}\r\nAuthorization: Bearer {token}\r\n\
             Content-Length: {}\r\n\r\n{payload}",
            payload.len()
        )?;
        let mut response = String::new();
        stream.read_to_string(&mut response)?;
        response
    } else {
        let header = std::env::temp_dir().join(format!("xtask-ping-{}", std::process::id()));
        write_private(&header, &format!("Authorization: Bearer {token}\n"))?;
        let output = Command::new("curl")
            .args(["-sS", "-i", "-m", "10", "-H"])
            .arg(format!("@{}", header.display()))
            .args(["-d", r#"["PING"]"#, url])
            .output();
        let _ = std::fs::remove_file(&header);
        let output = output.context("curl is needed to check an https URL")?;
        String::from_utf8_lossy(&output.stdout).into_owned()
    };
    if body.contains("PONG") {
        return Ok(());
    }
    if body.contains(" 401") {
        bail!("the server refused the token (401)");
    }
    let status = body.lines().next().unwrap_or("no answer").to_owned();
    bail!("unexpected answer: {status}")
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = "# comment\nCHAT_ADDR=127.0.0.1:3000\nUPSTASH_REDIS_REST_URL=\nUPSTASH_REDIS_REST_TOKEN=\n# KV_REST_API_URL=\n";

    fn options(args: &[&str]) -> Options {
        parse(&args.iter().map(|s| s.to_string()).collect::<Vec<_>>())
            .unwrap()
            .unwrap()
    }

    fn no_input() -> std::io::Cursor<Vec<u8>> {
        std::io::Cursor::new(Vec::new())
    }

    fn accept(_: &str, _: &str) -> anyhow::Result<()> {
        Ok(())
    }

    #[test]
    fn writes_the_file_from_the_example() {
        let opts = options(&[
            "--non-interactive",
            "--url",
            "https://x.upstash.io",
            "--token",
            "t1",
        ]);
        let Outcome::Write { text, .. } =
            setup(&opts, EXAMPLE, None, &mut no_input(), &accept).unwrap()
        else {
            panic!("expected a write")
        };
        assert!(text.contains("UPSTASH_REDIS_REST_URL=https://x.upstash.io\n"));
        assert!(text.contains("UPSTASH_REDIS_REST_TOKEN=t1\n"));
        assert!(text.contains("CACHE_BACKEND=tiered\n"));
        assert!(text.starts_with("# comment\nCHAT_ADDR=127.0.0.1:3000\n"));
    }

    #[test]
    fn running_twice_changes_nothing() {
        let opts = options(&[
            "--non-interactive",
            "--url",
            "https://x.upstash.io",
            "--token",
            "t1",
        ]);
        let Outcome::Write { text, .. } =
            setup(&opts, EXAMPLE, None, &mut no_input(), &accept).unwrap()
        else {
            panic!("expected a write")
        };
        let again = setup(&opts, EXAMPLE, Some(&text), &mut no_input(), &accept).unwrap();
        assert_eq!(again, Outcome::Unchanged);
    }

    #[test]
    fn refuses_to_clobber_a_token_without_force() {
        let existing =
            "UPSTASH_REDIS_REST_URL=https://x.upstash.io\nUPSTASH_REDIS_REST_TOKEN=old\nMY_OWN=1\n";
        let opts = options(&["--non-interactive", "--token", "new"]);
        let err = setup(&opts, EXAMPLE, Some(existing), &mut no_input(), &accept).unwrap_err();
        assert!(err.to_string().contains("--force"), "{err}");
        assert!(!err.to_string().contains("new"), "the token is not echoed");
        let forced = options(&["--non-interactive", "--token", "new", "--force"]);
        let Outcome::Write { text, .. } =
            setup(&forced, EXAMPLE, Some(existing), &mut no_input(), &accept).unwrap()
        else {
            panic!("expected a write")
        };
        assert!(text.contains("UPSTASH_REDIS_REST_TOKEN=new\n"));
        assert!(text.contains("MY_OWN=1\n"), "other lines are kept");
    }

    #[test]
    fn asks_before_replacing_a_token_interactively() {
        let existing =
            "UPSTASH_REDIS_REST_URL=https://x.upstash.io\nUPSTASH_REDIS_REST_TOKEN=old\n";
        let opts = options(&["--token", "new"]);
        let mut no = std::io::Cursor::new(b"n\n".to_vec());
        assert!(setup(&opts, EXAMPLE, Some(existing), &mut no, &accept).is_err());
        let mut yes = std::io::Cursor::new(b"y\n".to_vec());
        assert!(matches!(
            setup(&opts, EXAMPLE, Some(existing), &mut yes, &accept).unwrap(),
            Outcome::Write { .. }
        ));
    }

    #[test]
    fn asks_for_what_is_missing() {
        let opts = options(&[]);
        let mut answers = std::io::Cursor::new(b"https://y.upstash.io\nsecret\n".to_vec());
        let Outcome::Write { text, .. } =
            setup(&opts, EXAMPLE, None, &mut answers, &accept).unwrap()
        else {
            panic!("expected a write")
        };
        assert!(text.contains("UPSTASH_REDIS_REST_URL=https://y.upstash.io\n"));
        assert!(text.contains("UPSTASH_REDIS_REST_TOKEN=secret\n"));
    }

    #[test]
    fn non_interactive_without_credentials_fails_clearly() {
        let err = setup(
            &options(&["--non-interactive"]),
            EXAMPLE,
            None,
            &mut no_input(),
            &accept,
        )
        .unwrap_err();
        assert!(err.to_string().contains("--non-interactive"), "{err}");
    }

    #[test]
    fn bad_urls_are_rejected_before_anything_is_written() {
        let opts = options(&["--non-interactive", "--url", "ftp://x", "--token", "t"]);
        assert!(setup(&opts, EXAMPLE, None, &mut no_input(), &accept).is_err());
    }

    #[test]
    fn a_failed_ping_writes_nothing() {
        let opts = options(&[
            "--non-interactive",
            "--url",
            "https://x.upstash.io",
            "--token",
            "t",
        ]);
        let refuse = |_: &str, _: &str| -> anyhow::Result<()> { bail!("401") };
        let err = setup(&opts, EXAMPLE, None, &mut no_input(), &refuse).unwrap_err();
        assert!(format!("{err:#}").contains("PING"));
    }

    #[test]
    fn local_gateway_generates_a_token_and_keeps_it_on_rerun() {
        let opts = options(&["--non-interactive", "--local-gateway"]);
        let Outcome::Write { text, local_token } =
            setup(&opts, EXAMPLE, None, &mut no_input(), &accept).unwrap()
        else {
            panic!("expected a write")
        };
        let token = local_token.unwrap();
        assert_eq!(token.len(), 48);
        assert!(text.contains(&format!("UPSTASH_REDIS_REST_TOKEN={token}\n")));
        assert!(text.contains("UPSTASH_REDIS_REST_URL=http://127.0.0.1:8079\n"));
        assert_eq!(
            setup(&opts, EXAMPLE, Some(&text), &mut no_input(), &accept).unwrap(),
            Outcome::Unchanged
        );
    }

    #[test]
    fn ping_checks_a_real_gateway() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let env = rt.block_on(upstash_gateway::testing::TestGateway::start());
        let (url, token) = (env.url(), env.token().to_owned());
        // The gateway runs on this runtime; drive it from another thread while we block.
        let handle = std::thread::spawn(move || {
            (
                ping(&url, &token),
                ping(&url, "wrong-token").unwrap_err().to_string(),
            )
        });
        let (ok, wrong) = rt.block_on(async {
            loop {
                if handle.is_finished() {
                    break handle.join().unwrap();
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        });
        ok.unwrap();
        assert!(wrong.contains("401"), "{wrong}");
        assert!(!wrong.contains("wrong-token"));
        assert!(ping("http://127.0.0.1:1", "t").is_err());
    }
}

//! Where the REST URL, the token and the cache key prefix come from, read the way chat-api reads
//! them, and remembered per setting so `doctor` can say which source won.
//!
//! Precedence, highest first: the `--url`/`--token` flags, the process environment,
//! `.env.local`, `.env` (both in the current directory). For each of URL and token,
//! `UPSTASH_REDIS_REST_*` is looked up in all of those before Vercel's `KV_REST_API_*`, which is
//! what chat-api ends up doing after it loads the two files into its environment.
//!
//! The files are parsed, never loaded into the process environment, so nothing else in the
//! process sees their secrets.

use std::{
    fmt,
    path::{Path, PathBuf},
    time::Duration,
};

use cache_upstash::{Redis, RetryPolicy, Secret};

use crate::error::Hinted;

/// The URL variables, in order of preference (the same as `cache_upstash::Redis::from_env`).
pub(crate) const URL_VARS: [&str; 2] = ["UPSTASH_REDIS_REST_URL", "KV_REST_API_URL"];
/// The token variables, in order of preference.
pub(crate) const TOKEN_VARS: [&str; 2] = ["UPSTASH_REDIS_REST_TOKEN", "KV_REST_API_TOKEN"];
/// chat-api's key prefix variable.
pub(crate) const PREFIX_VAR: &str = "CACHE_PREFIX";
/// chat-api's default key prefix (`chat_api::cache::KEY_PREFIX`).
pub(crate) const DEFAULT_PREFIX: &str = "chat";
/// chat-api's cache format version (`chat_api::cache::FORMAT_VERSION`).
pub(crate) const DEFAULT_FORMAT_VERSION: u32 = 3;
/// The dotenv files read, weakest first.
const DOTENV_FILES: [&str; 2] = [".env", ".env.local"];

/// Where a setting came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Source {
    /// A command-line flag (`--url`).
    Flag(&'static str),
    /// A variable of the process environment.
    Env(&'static str),
    /// A variable in a dotenv file.
    File(&'static str, PathBuf),
    /// Nothing set it.
    Default,
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Flag(flag) => write!(f, "the {flag} flag"),
            Source::Env(var) => write!(f, "{var} in the environment"),
            Source::File(var, path) => write!(f, "{var} in {}", path.display()),
            Source::Default => f.write_str("the default"),
        }
    }
}

impl Source {
    /// A short machine-readable name: `flag`, `env`, `.env`, `.env.local`, `default`.
    pub(crate) fn kind(&self) -> String {
        match self {
            Source::Flag(_) => "flag".into(),
            Source::Env(_) => "env".into(),
            Source::File(_, path) => path.file_name().map_or_else(
                || path.display().to_string(),
                |n| n.to_string_lossy().into(),
            ),
            Source::Default => "default".into(),
        }
    }

    /// The variable name, when it came from one.
    pub(crate) fn variable(&self) -> Option<&'static str> {
        match self {
            Source::Env(var) | Source::File(var, _) => Some(var),
            Source::Flag(_) | Source::Default => None,
        }
    }
}

/// A value and where it came from.
#[derive(Debug, Clone)]
pub(crate) struct Setting<T> {
    pub(crate) value: T,
    pub(crate) source: Source,
}

/// A dotenv file as it was read.
#[derive(Debug, Clone)]
pub(crate) struct DotenvFile {
    pub(crate) path: PathBuf,
    /// Its variables, or why it could not be read (`None` if it does not exist).
    pub(crate) status: Result<Option<Vec<(String, String)>>, String>,
}

/// Everything cachectl reads from its configuration sources. `Debug` never shows the token.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub(crate) url: Option<Setting<String>>,
    pub(crate) token: Option<Setting<Secret>>,
    pub(crate) prefix: Setting<String>,
    pub(crate) files: Vec<DotenvFile>,
    pub(crate) timeout: Duration,
}

impl Settings {
    /// Reads the flags, the environment and the dotenv files of `dir`.
    pub(crate) fn load(
        url_flag: Option<String>,
        token_flag: Option<Secret>,
        timeout: Duration,
        dir: &Path,
    ) -> Settings {
        Settings::resolve(
            url_flag,
            token_flag,
            timeout,
            |name| std::env::var(name).ok(),
            DOTENV_FILES
                .iter()
                .map(|file| DotenvFile {
                    // Shown relative: they are always read from the current directory.
                    path: PathBuf::from(file),
                    ..read_dotenv(&dir.join(file))
                })
                .collect(),
        )
    }

    /// [`Settings::load`] with the environment and files supplied (testable without either).
    fn resolve(
        url_flag: Option<String>,
        token_flag: Option<Secret>,
        timeout: Duration,
        env: impl Fn(&str) -> Option<String>,
        files: Vec<DotenvFile>,
    ) -> Settings {
        let lookup = |name: &'static str| -> Option<Setting<String>> {
            if let Some(value) = env(name).filter(|v| !v.trim().is_empty()) {
                return Some(Setting {
                    value,
                    source: Source::Env(name),
                });
            }
            // The strongest file is the last one.
            files.iter().rev().find_map(|file| {
                let vars = file.status.as_ref().ok()?.as_ref()?;
                let (_, value) = vars
                    .iter()
                    .rev()
                    .find(|(key, value)| key == name && !value.trim().is_empty())?;
                Some(Setting {
                    value: value.clone(),
                    source: Source::File(name, file.path.clone()),
                })
            })
        };
        let first = |names: [&'static str; 2]| names.into_iter().find_map(lookup);
        let url = match url_flag.filter(|v| !v.trim().is_empty()) {
            Some(value) => Some(Setting {
                value,
                source: Source::Flag("--url"),
            }),
            None => first(URL_VARS),
        };
        let token = match token_flag.filter(|t| !t.expose().trim().is_empty()) {
            Some(value) => Some(Setting {
                value,
                source: Source::Flag("--token"),
            }),
            None => first(TOKEN_VARS).map(|s| Setting {
                value: Secret::new(s.value),
                source: s.source,
            }),
        };
        let prefix = lookup(PREFIX_VAR).unwrap_or_else(|| Setting {
            value: DEFAULT_PREFIX.to_owned(),
            source: Source::Default,
        });
        Settings {
            url,
            token,
            prefix,
            files,
            timeout,
        }
    }

    /// Problems with the dotenv files (unreadable or malformed), one line each.
    pub(crate) fn file_problems(&self) -> Vec<String> {
        self.files
            .iter()
            .filter_map(|file| {
                file.status
                    .as_ref()
                    .err()
                    .map(|err| format!("{}: {err}", file.path.display()))
            })
            .collect()
    }

    /// A client for the configured endpoint, every request bounded by the timeout.
    ///
    /// # Errors
    /// A [`Hinted`] error naming what is missing or malformed (never the token's value).
    pub(crate) fn redis(&self) -> anyhow::Result<Redis> {
        if let Some(problem) = self.file_problems().into_iter().next() {
            return Err(Hinted::new(
                format!("cannot read a dotenv file: {problem}"),
                "fix or remove the file (lines are NAME=value; quote values with spaces)",
            )
            .into());
        }
        let Some(url) = &self.url else {
            return Err(Hinted::new(
                "no Upstash REST URL configured",
                "pass --url, or set UPSTASH_REDIS_REST_URL (or KV_REST_API_URL) in the \
                 environment, .env or .env.local; locally: http://127.0.0.1:8079 from \
                 `cargo run -p upstash-gateway`",
            )
            .into());
        };
        let Some(token) = &self.token else {
            return Err(Hinted::new(
                "no Upstash REST token configured",
                "set UPSTASH_REDIS_REST_TOKEN (or KV_REST_API_TOKEN) in the environment, .env or \
                 .env.local, or pass --token (visible in `ps`: prefer the environment)",
            )
            .into());
        };
        self.client(&url.value, token.value.clone())
    }

    /// A client for `url` with `token` and this configuration's timeout.
    pub(crate) fn client(&self, url: &str, token: Secret) -> anyhow::Result<Redis> {
        Redis::builder()
            .url(url)
            .token(token)
            .timeout(self.timeout)
            .connect_timeout(self.timeout.min(Duration::from_secs(2)))
            // One retry of what is safe to retry; the command as a whole is still bounded by
            // the timeout (see `Context::bounded`).
            .retry(RetryPolicy::default().max_retries(1))
            .build()
            .map_err(anyhow::Error::new)
    }
}

/// Reads one dotenv file without touching the process environment.
fn read_dotenv(path: &Path) -> DotenvFile {
    let status = match dotenvy::from_path_iter(path) {
        Ok(iter) => iter
            .collect::<Result<Vec<_>, _>>()
            .map(Some)
            .map_err(|err| describe_dotenv_error(&err)),
        Err(err) if err.not_found() => Ok(None),
        Err(err) => Err(describe_dotenv_error(&err)),
    };
    DotenvFile {
        path: path.to_path_buf(),
        status,
    }
}

/// A dotenv error without the offending line, which may hold a secret.
fn describe_dotenv_error(err: &dotenvy::Error) -> String {
    match err {
        dotenvy::Error::LineParse(_, index) => format!("cannot parse it at character {index}"),
        dotenvy::Error::Io(io) => io.to_string(),
        dotenvy::Error::EnvVar(var) => var.to_string(),
        _ => "cannot read it".into(),
    }
}

/// `prefix:vN` (the `--namespace` flag), parsed by `cache_core` (the one parser of key names).
pub(crate) fn parse_namespace(text: &str) -> Result<cache_core::Namespace, String> {
    cache_core::Namespace::parse(text).map_err(|err| match err {
        cache_core::Error::InvalidKey(message) => message,
        other => other.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// cachectl cannot depend on chat-api (a server) to read these; a test that does keeps the
    /// copies equal, so a format bump in chat-api cannot leave cachectl on the old namespace.
    #[test]
    fn defaults_are_chat_apis_namespace() {
        assert_eq!(DEFAULT_PREFIX, chat_api::cache::KEY_PREFIX);
        assert_eq!(DEFAULT_FORMAT_VERSION, chat_api::cache::FORMAT_VERSION);
    }

    fn file(name: &str, vars: &[(&str, &str)]) -> DotenvFile {
        DotenvFile {
            path: PathBuf::from(name),
            status: Ok(Some(
                vars.iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                    .collect(),
            )),
        }
    }

    fn env(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |name| {
            pairs
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| (*v).to_owned())
        }
    }

    #[test]
    fn flag_beats_env_beats_env_local_beats_env_file() {
        let files = || {
            vec![
                file(
                    ".env",
                    &[
                        ("UPSTASH_REDIS_REST_URL", "http://dotenv"),
                        ("UPSTASH_REDIS_REST_TOKEN", "t1"),
                    ],
                ),
                file(".env.local", &[("UPSTASH_REDIS_REST_URL", "http://local")]),
            ]
        };
        let timeout = Duration::from_secs(1);
        let s = Settings::resolve(None, None, timeout, env(&[]), files());
        assert_eq!(s.url.as_ref().unwrap().value, "http://local");
        assert_eq!(s.url.unwrap().source.kind(), ".env.local");
        assert_eq!(s.token.as_ref().unwrap().source.kind(), ".env");
        let s = Settings::resolve(
            None,
            None,
            timeout,
            env(&[("UPSTASH_REDIS_REST_URL", "http://env")]),
            files(),
        );
        assert_eq!(s.url.unwrap().value, "http://env");
        let s = Settings::resolve(
            Some("http://flag".into()),
            Some(Secret::new("f")),
            timeout,
            env(&[]),
            files(),
        );
        assert_eq!(s.url.unwrap().source, Source::Flag("--url"));
        assert_eq!(s.token.unwrap().value.expose(), "f");
    }

    #[test]
    fn kv_names_are_a_fallback_after_every_upstash_source() {
        let s = Settings::resolve(
            None,
            None,
            Duration::from_secs(1),
            env(&[
                ("KV_REST_API_URL", "http://kv"),
                ("KV_REST_API_TOKEN", "kv"),
            ]),
            vec![file(".env", &[("UPSTASH_REDIS_REST_URL", "http://file")])],
        );
        assert_eq!(s.url.unwrap().value, "http://file");
        assert_eq!(s.token.unwrap().source, Source::Env("KV_REST_API_TOKEN"));
        assert_eq!(s.prefix.value, "chat");
    }

    #[test]
    fn debug_never_shows_the_token() {
        let s = Settings::resolve(
            None,
            Some(Secret::new("hunter2")),
            Duration::from_secs(1),
            env(&[]),
            vec![],
        );
        assert!(!format!("{s:?}").contains("hunter2"));
    }

    #[test]
    fn namespaces_parse_as_prefix_and_version() {
        let ns = |prefix, version| cache_core::Namespace::new(prefix, version).unwrap();
        assert_eq!(parse_namespace("chat:v1").unwrap(), ns("chat", 1));
        assert_eq!(parse_namespace("my.app:v12").unwrap(), ns("my.app", 12));
        assert_eq!(
            parse_namespace("chat").unwrap_err(),
            r#""chat" is not prefix:vN (for example chat:v1)"#
        );
        assert!(
            parse_namespace("chat:vx")
                .unwrap_err()
                .contains("the version after :v must be a number")
        );
        assert!(
            parse_namespace("bad prefix:v1")
                .unwrap_err()
                .contains("namespace prefix \"bad prefix\" must be 1-64")
        );
    }
}

//! `cachectl invalidate --tag`: invalidates cache entries by tag through `cache_core::Cache`,
//! exactly as chat-api does after a write.

use std::{fmt, sync::Arc, time::SystemTime};

use cache_core::{Cache, Namespace, Tag};
use cache_upstash::UpstashBackend;
use clap::Args;
use serde_json::json;

use crate::{
    cmd::Context,
    config::{DEFAULT_FORMAT_VERSION, Source, parse_namespace},
    error::{Hinted, Outcome},
};

const AFTER_HELP: &str = "\
Tags chat-api uses (CACHE_PREFIX chat, format v1; ids are ULIDs):
  channel-messages:<channel>     every cached page of a channel (posts, edits, deletes, reactions)
  user-channels:<user>           a user's channel list
  channel:<channel>              a channel
  membership:<channel>:<user>    one membership
  auth-user:<user>               a user's token record
  *                              every entry of the namespace

Examples:
  cachectl invalidate --tag channel-messages:01J9Z3K7QX8V5M2N4P6R8T0W1Y
  cachectl invalidate --tag 'chat:v1:#user-channels:01J9Z3K7QX8V5M2N4P6R8T0W1Y'
  cachectl invalidate --tag '*' --namespace chat:v1";

/// Invalidate cached entries by tag, as chat-api does after a write
///
/// A tag names a group of cache entries that are invalidated together: every cached page of a
/// channel carries the tag channel-messages:<channel>, so one invalidation covers all of them.
/// Invalidating stores one timestamp under the tag (one request however many entries share it);
/// from then on every entry of the tag created earlier reads as a miss and is loaded again from
/// the database. Nothing is deleted: hidden entries expire on their own. Other chat-api instances
/// see it at once in Upstash, and within CACHE_L1_MAX_TTL_MS (5 s by default) in their memory tier.
///
/// A TAG is `kind:part:…` in the namespace, the full stored tag (`chat:v1:#kind:part`), or `*`
/// for the whole namespace.
#[derive(Debug, Args)]
#[command(after_help = AFTER_HELP)]
pub(crate) struct Cmd {
    /// A tag to invalidate (repeat for several: one request for all)
    #[arg(long = "tag", value_name = "TAG", required = true)]
    pub(crate) tags: Vec<String>,

    /// The key namespace as PREFIX:vN [default: CACHE_PREFIX (else chat) at chat-api's format
    /// version, v1]
    #[arg(long, value_name = "PREFIX:vN", value_parser = parse_namespace)]
    pub(crate) namespace: Option<(String, u32)>,
}

impl Cmd {
    pub(crate) async fn run(&self, ctx: &Context) -> anyhow::Result<Outcome> {
        let (namespace, from) = match &self.namespace {
            Some((prefix, version)) => (
                Namespace::new(prefix, *version)?,
                Source::Flag("--namespace"),
            ),
            None => {
                let prefix = &ctx.settings.prefix;
                let ns = Namespace::new(&prefix.value, DEFAULT_FORMAT_VERSION).map_err(|err| {
                    Hinted::new(
                        format!(
                            "CACHE_PREFIX from {} is not a valid prefix: {err}",
                            prefix.source
                        ),
                        "fix CACHE_PREFIX, or pass --namespace PREFIX:vN",
                    )
                })?;
                (ns, prefix.source.clone())
            }
        };
        let tags = self
            .tags
            .iter()
            .map(|text| parse_tag(&namespace, text))
            .collect::<anyhow::Result<Vec<Tag>>>()?;
        let redis = ctx.redis()?;
        let cache = Cache::new(Arc::new(UpstashBackend::new(redis)));
        ctx.bounded("invalidating tags", cache.invalidate(&tags))
            .await?;
        let at = humantime::format_rfc3339_millis(SystemTime::now()).to_string();
        if ctx.out.is_json() {
            ctx.out.json_line(&json!({
                "namespace": namespace.as_str(),
                "tags": tags.iter().map(Tag::as_str).collect::<Vec<_>>(),
                "at": at,
            }))?;
        } else {
            let noun = if tags.len() == 1 { "tag" } else { "tags" };
            let mut text = format!(
                "{} {} {noun} in namespace {} (prefix from {from}):\n",
                ctx.out.style().good("invalidated"),
                tags.len(),
                namespace.as_str()
            );
            for tag in &tags {
                text.push_str(&format!("  {tag}\n"));
            }
            text.push_str(&format!(
                "{}\n",
                ctx.out.style().dim(&format!(
                    "entries of these tags created before {at} now read as misses"
                ))
            ));
            ctx.out.text(&text)?;
        }
        Ok(Outcome::Success)
    }
}

/// A tag from the command line: `*`, `kind:part…`, `#kind:part…`, or `prefix:vN:#kind:part…`.
pub(crate) fn parse_tag(namespace: &Namespace, text: &str) -> anyhow::Result<Tag> {
    let body = match text.split_once(":#") {
        Some((base, rest)) => {
            if base != namespace.as_str() {
                return Err(Hinted::new(
                    format!(
                        "tag {text:?} belongs to namespace {base}, not {}",
                        namespace.as_str()
                    ),
                    format!("pass --namespace {base}, or give the tag without its namespace"),
                )
                .into());
            }
            rest
        }
        None => text.strip_prefix('#').unwrap_or(text),
    };
    if body == "*" {
        return Ok(namespace.all_tag().clone());
    }
    let mut pieces = body.split(':');
    let kind = pieces.next().unwrap_or_default();
    let valid_kind = !kind.is_empty()
        && kind.len() <= 64
        && kind
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'-'));
    if !valid_kind {
        return Err(Hinted::new(
            format!("{text:?} is not a tag: it must start with a kind such as channel-messages"),
            "write KIND:PART (channel-messages:01J…), the stored tag (chat:v1:#KIND:PART), or *",
        )
        .into());
    }
    // Parts are stored escaped (`:` as %3A, `%` as %25); unescape so the namespace re-escapes
    // them to the same stored tag.
    let parts: Vec<Part> = pieces.map(|p| Part(unescape(p))).collect();
    let parts: Vec<&dyn fmt::Display> = parts.iter().map(|p| p as &dyn fmt::Display).collect();
    Ok(namespace.tag(kind, &parts))
}

struct Part(String);

impl fmt::Display for Part {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// `%3A` → `:`, `%25` → `%`, left to right; anything else stays.
fn unescape(part: &str) -> String {
    let mut out = String::with_capacity(part.len());
    let mut rest = part;
    while let Some(at) = rest.find('%') {
        out.push_str(&rest[..at]);
        let tail = &rest[at + 1..];
        // `get` rather than indexing: the bytes after a `%` may be inside a multi-byte char.
        match tail.get(..2) {
            Some(code) if code.eq_ignore_ascii_case("3a") => out.push(':'),
            Some("25") => out.push('%'),
            _ => {
                out.push('%');
                rest = tail;
                continue;
            }
        }
        rest = &tail[2..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_parse_in_every_form_to_the_stored_tag() {
        let ns = Namespace::new("chat", 1).unwrap();
        let expected = ns.tag("channel-messages", &[&"01J9"]);
        for text in [
            "channel-messages:01J9",
            "#channel-messages:01J9",
            "chat:v1:#channel-messages:01J9",
        ] {
            assert_eq!(parse_tag(&ns, text).unwrap(), expected, "{text}");
        }
        assert_eq!(parse_tag(&ns, "*").unwrap(), *ns.all_tag());
        assert_eq!(parse_tag(&ns, "chat:v1:#*").unwrap(), *ns.all_tag());
        assert_eq!(
            parse_tag(&ns, "membership:c1:u2").unwrap(),
            ns.tag("membership", &[&"c1", &"u2"])
        );
        assert_eq!(unescape("50%25%3a%é%"), "50%:%é%");
        let escaped = ns.tag("k", &[&"a:b%"]);
        assert_eq!(parse_tag(&ns, escaped.as_str()).unwrap(), escaped);
    }

    #[test]
    fn foreign_or_malformed_tags_are_refused() {
        let ns = Namespace::new("chat", 1).unwrap();
        let err = parse_tag(&ns, "other:v2:#channel:1").unwrap_err();
        assert!(
            crate::error::hint_for(&err)
                .unwrap()
                .contains("--namespace other:v2")
        );
        assert!(parse_tag(&ns, "Channel:1").is_err());
        assert!(parse_tag(&ns, "").is_err());
    }
}

//! `cachectl invalidate --tag`: invalidates cache entries by tag through `cache_core::Cache`,
//! exactly as chat-api does after a write.

use std::{sync::Arc, time::SystemTime};

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
  cachectl invalidate --tag 'chat:v3:#user-channels:01J9Z3K7QX8V5M2N4P6R8T0W1Y'
  cachectl invalidate --tag '*' --namespace chat:v3";

/// Invalidate cached entries by tag, as chat-api does after a write
///
/// A tag names a group of cache entries that are invalidated together: every cached page of a
/// channel carries the tag channel-messages:<channel>, so one invalidation covers all of them.
/// Invalidating stores one timestamp under the tag (one request however many entries share it);
/// from then on every entry of the tag created earlier reads as a miss and is loaded again from
/// the database. Nothing is deleted: hidden entries expire on their own. Other chat-api instances
/// see it at once in Upstash, and within CACHE_L1_MAX_TTL_MS (5 s by default) in their memory tier.
///
/// A TAG is `kind:part:…` in the namespace, the full stored tag (`chat:v3:#kind:part`), or `*`
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
    pub(crate) namespace: Option<Namespace>,
}

impl Cmd {
    pub(crate) async fn run(&self, ctx: &Context) -> anyhow::Result<Outcome> {
        let (namespace, from) = match &self.namespace {
            Some(namespace) => (namespace.clone(), Source::Flag("--namespace")),
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

/// A tag from the command line: `*`, `kind:part…`, `#kind:part…`, or `prefix:vN:#kind:part…`,
/// parsed by `cache_core` (the one parser of key names); this adds the hints.
pub(crate) fn parse_tag(namespace: &Namespace, text: &str) -> anyhow::Result<Tag> {
    if let Ok(tag) = Tag::parse(text) {
        let base = tag.namespace_str();
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
    }
    namespace.parse_tag(text).map_err(|err| {
        let reason = match err {
            cache_core::Error::InvalidKey(message) => message,
            other => other.to_string(),
        };
        Hinted::new(
            format!("{text:?} is not a tag: {reason}"),
            "write KIND:PART (channel-messages:01J…), the stored tag (chat:v3:#KIND:PART), or *; \
             in a PART write ':' as %3A and '%' as %25",
        )
        .into()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_parse_in_every_form_to_the_stored_tag() {
        let ns = Namespace::new("chat", 2).unwrap();
        let expected = ns.tag("channel-messages", &[&"01J9"]);
        for text in [
            "channel-messages:01J9",
            "#channel-messages:01J9",
            "chat:v2:#channel-messages:01J9",
        ] {
            assert_eq!(parse_tag(&ns, text).unwrap(), expected, "{text}");
        }
        assert_eq!(parse_tag(&ns, "*").unwrap(), *ns.all_tag());
        assert_eq!(parse_tag(&ns, "chat:v2:#*").unwrap(), *ns.all_tag());
        assert_eq!(
            parse_tag(&ns, "membership:c1:u2").unwrap(),
            ns.tag("membership", &[&"c1", &"u2"])
        );
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
        for text in ["Channel:1", "", "chat:v2:#Bad", "k:50%"] {
            let err = parse_tag(&ns, text).unwrap_err();
            assert!(err.to_string().contains("is not a tag"), "{text}: {err}");
            assert!(
                crate::error::hint_for(&err)
                    .unwrap()
                    .contains("write KIND:PART")
            );
        }
    }
}

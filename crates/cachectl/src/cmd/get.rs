//! `cachectl get`: a key's value, decoded for reading (cache-core entries, JSON, text, bytes),
//! or exactly as stored with `--raw`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use cache_core::{Codec, Entry, Timestamp};
use clap::Args;
use serde_json::{Value, json};

use crate::{
    cmd::Context,
    error::{Outcome, bail_hint},
    output::{self, Style},
};

/// The first bytes of a compressed (framed) cache-core entry.
const FRAME_MAGIC: &[u8] = b"\x00CZ\x01";

/// Print the value of a key (exit 1 if it does not exist)
///
/// Values are shown for reading: entries written through the cache (cache-core's wire format,
/// plain JSON or a compressed frame) are decoded and shown with their timestamps; other JSON is
/// pretty-printed; text is printed as is; other bytes are escaped as \xNN. With --raw the stored
/// bytes are written exactly as they are, for piping into a file or another tool.
#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  cachectl get greeting\n  cachectl get 'chat:v3:channel:01J9Z3K7QX8V5M2N4P6R8T0W1Y'\n  cachectl get avatar --raw > avatar.png\n  cachectl get greeting --json | jq .value"
)]
pub(crate) struct Cmd {
    /// The key, exactly as stored
    pub(crate) key: String,

    /// Write the stored bytes unchanged (no decoding, no newline)
    #[arg(long)]
    pub(crate) raw: bool,
}

impl Cmd {
    pub(crate) async fn run(&self, ctx: &Context) -> anyhow::Result<Outcome> {
        if self.raw && ctx.out.is_json() {
            bail_hint!(
                "--raw and --json cannot be combined",
                "--json already carries the bytes: as `value` for UTF-8, `value_base64` otherwise"
            );
        }
        let redis = ctx.redis()?;
        let value = ctx
            .bounded(&format!("GET {}", self.key), redis.get(self.key.as_str()))
            .await?;
        let Some(bytes) = value else {
            if ctx.out.is_json() {
                ctx.out
                    .json_line(&json!({ "key": self.key, "found": false }))?;
            } else {
                output::note(&format!("cachectl: key {:?} not found", self.key));
            }
            return Ok(Outcome::NotFound);
        };
        if self.raw {
            ctx.out.bytes(&bytes)?;
        } else if ctx.out.is_json() {
            ctx.out.json_line(&to_json(&self.key, &bytes))?;
        } else {
            ctx.out
                .text(&render(&bytes, ctx.out.style(), SystemTime::now()))?;
        }
        Ok(Outcome::Success)
    }
}

/// What stored bytes are.
#[derive(Debug)]
pub(crate) enum Decoded {
    /// A cache-core entry (wire format v1).
    Entry { entry: Entry, framed: bool },
    /// JSON that is not an entry.
    Json(Value),
    /// UTF-8 text.
    Text(String),
    /// Anything else.
    Binary,
}

/// Classifies stored bytes, decoding cache-core entries with the default codec.
pub(crate) fn decode(bytes: &[u8]) -> Decoded {
    let framed = bytes.starts_with(FRAME_MAGIC);
    if framed || bytes.starts_with(b"{\"c\":") {
        if let Ok(entry) = Codec::default().decode_entry(bytes) {
            return Decoded::Entry { entry, framed };
        }
    }
    match std::str::from_utf8(bytes) {
        Ok(text) => match serde_json::from_str(text) {
            Ok(value) => Decoded::Json(value),
            Err(_) => Decoded::Text(text.to_owned()),
        },
        Err(_) => Decoded::Binary,
    }
}

fn system_time(ts: Timestamp) -> SystemTime {
    UNIX_EPOCH + Duration::from_micros(ts.as_micros())
}

fn rfc3339(ts: Timestamp) -> String {
    humantime::format_rfc3339_millis(system_time(ts)).to_string()
}

/// `in 4m 48s` or `12s ago`, to the second.
fn relative(ts: Timestamp, now: SystemTime) -> String {
    let at = system_time(ts);
    let round =
        |d: Duration| humantime::format_duration(Duration::from_secs(d.as_secs())).to_string();
    match at.duration_since(now) {
        Ok(ahead) => format!("in {}", round(ahead)),
        Err(err) => format!("{} ago", round(err.duration())),
    }
}

/// The JSON document of `get --json`.
pub(crate) fn to_json(key: &str, bytes: &[u8]) -> Value {
    let mut doc = json!({ "key": key, "found": true, "bytes": bytes.len() });
    match std::str::from_utf8(bytes) {
        Ok(text) => doc["value"] = Value::String(text.to_owned()),
        Err(_) => {
            doc["value"] = Value::Null;
            doc["value_base64"] =
                Value::String(base64::engine::general_purpose::STANDARD.encode(bytes));
        }
    }
    if let Decoded::Entry { entry, framed } = decode(bytes) {
        doc["entry"] = json!({
            "compressed": framed,
            "created_at": rfc3339(entry.created_at()),
            "fresh_until": rfc3339(entry.fresh_until()),
            "expires_at": rfc3339(entry.expires_at()),
            "value": serde_json::from_slice::<Value>(entry.value())
                .unwrap_or_else(|_| Value::String(output::escape_bytes(entry.value()))),
        });
    }
    doc
}

/// The human rendering of stored bytes.
pub(crate) fn render(bytes: &[u8], style: Style, now: SystemTime) -> String {
    match decode(bytes) {
        Decoded::Entry { entry, framed } => {
            let form = if framed {
                "compressed frame"
            } else {
                "plain JSON"
            };
            let value = match serde_json::from_slice::<Value>(entry.value()) {
                Ok(json) => serde_json::to_string_pretty(&json).unwrap_or_default(),
                Err(_) => output::escape_bytes(entry.value()),
            };
            format!(
                "{}\n  created      {} ({})\n  fresh until  {} ({})\n  expires at   {} ({})\n{value}\n",
                style.dim(&format!(
                    "cache entry, wire format v1 ({form}, {} stored, value {})",
                    output::bytes(bytes.len() as u64),
                    output::bytes(entry.value().len() as u64)
                )),
                rfc3339(entry.created_at()),
                relative(entry.created_at(), now),
                rfc3339(entry.fresh_until()),
                relative(entry.fresh_until(), now),
                rfc3339(entry.expires_at()),
                relative(entry.expires_at(), now),
            )
        }
        Decoded::Json(json) => {
            format!(
                "{}\n",
                serde_json::to_string_pretty(&json).unwrap_or_default()
            )
        }
        Decoded::Text(text) => {
            if text.ends_with('\n') {
                text
            } else {
                format!("{text}\n")
            }
        }
        Decoded::Binary => format!(
            "{}\n{}\n",
            style.dim(&format!(
                "{} of binary data (use --raw for the bytes)",
                output::bytes(bytes.len() as u64)
            )),
            output::escape_bytes(bytes)
        ),
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;

    fn entry(value: &str) -> Entry {
        Entry::new(
            Bytes::from(value.to_owned()),
            Timestamp::from_micros(1_700_000_000_000_000),
            Timestamp::from_micros(1_700_000_060_000_000),
            Timestamp::from_micros(1_700_000_120_000_000),
        )
    }

    #[test]
    fn cache_entries_are_decoded_plain_and_compressed() {
        let codec = Codec::default();
        let plain = codec.encode_entry(&entry("[1,2,3]"));
        assert!(matches!(
            decode(&plain),
            Decoded::Entry { framed: false, .. }
        ));
        let big = format!("[{}]", vec!["\"hello\""; 2000].join(","));
        let framed = codec.encode_entry(&entry(&big));
        assert!(framed.starts_with(FRAME_MAGIC));
        let Decoded::Entry {
            entry,
            framed: true,
        } = decode(&framed)
        else {
            panic!("a compressed entry decodes");
        };
        assert_eq!(entry.value().as_ref(), big.as_bytes());
        let now = UNIX_EPOCH + Duration::from_secs(1_700_000_030);
        let shown = render(&plain, Style::plain(), now);
        assert!(
            shown.contains("created      2023-11-14T22:13:20.000Z (30s ago)"),
            "{shown}"
        );
        assert!(
            shown.contains("fresh until  2023-11-14T22:14:20.000Z (in 30s)"),
            "{shown}"
        );
        assert!(shown.ends_with("[\n  1,\n  2,\n  3\n]\n"), "{shown}");
        let doc = to_json("k", &framed);
        assert_eq!(doc["entry"]["compressed"], true);
        assert!(doc["value"].is_null() && doc["value_base64"].is_string());
    }

    #[test]
    fn other_values_are_json_text_or_binary() {
        assert!(matches!(
            decode(br#"{"c":"not an entry"}"#),
            Decoded::Json(_)
        ));
        assert!(matches!(decode(b"hello"), Decoded::Text(_)));
        assert!(matches!(decode(b"\xff\x00"), Decoded::Binary));
        assert_eq!(
            render(b"hello", Style::plain(), SystemTime::now()),
            "hello\n"
        );
        assert_eq!(to_json("k", b"hi")["value"], "hi");
    }
}

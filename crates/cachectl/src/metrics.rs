//! chat-api's numbers for `cachectl stats`: its `GET /stats` JSON document, read into the
//! `chat-stats` types chat-api writes it from, so the two cannot drift apart by name.

use chat_stats::Stats;

/// Reads the body of `GET /stats`.
///
/// # Errors
/// When the body is not a stats document (the address is not chat-api, or one too old to serve
/// `/stats`), or one of a version this cachectl does not read.
pub(crate) fn decode(body: &[u8]) -> anyhow::Result<Stats> {
    chat_stats::parse(body).map_err(|err| match err.kind() {
        chat_stats::ErrorKind::UnsupportedVersion => {
            anyhow::anyhow!("{err}: use the cachectl built with this chat-api")
        }
        chat_stats::ErrorKind::NotStats => {
            anyhow::anyhow!("{err}: is this chat-api's address?")
        }
        _ => anyhow::Error::new(err),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_is_not_a_current_stats_document_is_refused_with_a_reason() {
        let err = decode(b"up 1\n").unwrap_err().to_string();
        assert!(err.contains("is this chat-api"), "{err}");
        let err = decode(br#"{"version": 99}"#).unwrap_err().to_string();
        assert!(err.contains("version 99"), "{err}");
        let current = serde_json::to_vec(&Stats::default()).unwrap();
        assert_eq!(decode(&current).unwrap(), Stats::default());
    }
}

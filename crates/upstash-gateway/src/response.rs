//! Turning Redis replies into Upstash JSON: `{"result": …}` / `{"error": "…"}`, plain or base64.
//!
//! With `Upstash-Encoding: base64`, every string in a result is base64 (standard alphabet, padded)
//! except the status reply `OK`, recursively through nested arrays; integers and nulls are left as
//! they are, and error texts are never encoded. That is what both official SDKs decode. Without
//! it, invalid UTF-8 becomes U+FFFD.

use base64::Engine as _;
use serde_json::{Map, Value, json};

use crate::resp::Reply;

/// How strings in results are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Encoding {
    /// UTF-8 text, invalid sequences replaced.
    Utf8Lossy,
    /// `Upstash-Encoding: base64`.
    Base64,
}

/// A reply as the JSON value that goes in `"result"`.
pub(crate) fn result_value(reply: &Reply, encoding: Encoding) -> Value {
    match reply {
        Reply::Status(text) if encoding == Encoding::Base64 && &text[..] == b"OK" => {
            Value::String("OK".into())
        }
        Reply::Status(text) | Reply::Bulk(text) => string_value(text, encoding),
        // An error nested inside a result (rare outside EXEC, which is handled per element) is shown
        // as text; errors are never base64-encoded.
        Reply::Error(text) => Value::String(String::from_utf8_lossy(text).into_owned()),
        Reply::Integer(n) => Value::from(*n),
        Reply::Nil => Value::Null,
        Reply::Array(items) => Value::Array(
            items
                .iter()
                .map(|item| result_value(item, encoding))
                .collect(),
        ),
    }
}

fn string_value(bytes: &[u8], encoding: Encoding) -> Value {
    match encoding {
        Encoding::Utf8Lossy => Value::String(String::from_utf8_lossy(bytes).into_owned()),
        Encoding::Base64 => Value::String(base64::engine::general_purpose::STANDARD.encode(bytes)),
    }
}

/// `{"error": "…"}` for an error reply, `{"result": …}` for anything else.
pub(crate) fn envelope(reply: &Reply, encoding: Encoding) -> Value {
    match reply.as_error() {
        Some(message) => error_body(&String::from_utf8_lossy(message)),
        None => {
            let mut object = Map::with_capacity(1);
            object.insert("result".into(), result_value(reply, encoding));
            Value::Object(object)
        }
    }
}

/// `{"error": "…"}`.
pub(crate) fn error_body(message: &str) -> Value {
    json!({ "error": message })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &[u8]) -> Reply {
        Reply::Bulk(bytes::Bytes::copy_from_slice(s))
    }

    #[test]
    fn base64_encodes_every_string_but_ok_recursively() {
        let reply = Reply::Array(vec![
            bulk(b"bar"),
            Reply::Integer(3),
            Reply::Nil,
            Reply::Array(vec![
                bulk(b"\xff\x00"),
                Reply::Array(vec![Reply::Status("PONG".into())]),
            ]),
        ]);
        assert_eq!(
            result_value(&reply, Encoding::Base64),
            json!(["YmFy", 3, null, ["/wA=", ["UE9ORw=="]]])
        );
        assert_eq!(
            result_value(&Reply::Status("OK".into()), Encoding::Base64),
            json!("OK")
        );
        // A stored value that happens to be "OK" is data, and data is always encoded.
        assert_eq!(result_value(&bulk(b"OK"), Encoding::Base64), json!("T0s="));
    }

    #[test]
    fn plain_encoding_replaces_invalid_utf8() {
        assert_eq!(
            result_value(&bulk("é\u{1F600}".as_bytes()), Encoding::Utf8Lossy),
            json!("é😀")
        );
        assert_eq!(
            result_value(&bulk(b"a\xffb"), Encoding::Utf8Lossy),
            json!("a\u{FFFD}b")
        );
    }

    #[test]
    fn errors_become_error_objects_and_are_not_encoded() {
        let reply = Reply::Error("ERR wrong number of arguments for 'get' command".into());
        assert_eq!(
            envelope(&reply, Encoding::Base64),
            json!({"error": "ERR wrong number of arguments for 'get' command"})
        );
        assert_eq!(
            envelope(&Reply::Integer(1), Encoding::Base64),
            json!({"result": 1})
        );
        assert_eq!(
            envelope(&Reply::Nil, Encoding::Utf8Lossy),
            json!({"result": null})
        );
    }
}

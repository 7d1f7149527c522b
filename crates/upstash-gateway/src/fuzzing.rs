//! Entry points for the coverage-guided fuzz targets in `fuzz/` (feature `fuzzing`; not an API).
//!
//! Each function takes arbitrary bytes, runs one of the gateway's parsers (and, for replies, the
//! renderers) on them and checks the properties that must hold for every input: no panic, a typed
//! refusal for bad input, round-trips where the format has one, and renderings that say exactly
//! what the reply said. A violated property panics, which the fuzzer reports.

use bytes::{Bytes, BytesMut};
use serde_json::Value;

use crate::{
    request,
    resp::{self, Reply},
    response::{self, Encoding},
};

/// The request parsers: a JSON command, a JSON pipeline, and the path form.
///
/// The input is split at the first two NUL bytes into path, query and body for the path form;
/// the whole input is also tried as a JSON body.
pub fn request(data: &[u8]) {
    let limits = request::RequestLimits::default();
    let whole = Bytes::copy_from_slice(data);
    if let Ok(args) = request::parse_json_command(&whole, limits) {
        assert!(!args.is_empty(), "an empty command was accepted");
        // Arguments that are text round-trip through the JSON form unchanged.
        if let Ok(texts) = args
            .iter()
            .map(|arg| std::str::from_utf8(arg))
            .collect::<Result<Vec<_>, _>>()
        {
            let again = Bytes::from(serde_json::to_vec(&texts).expect("strings serialize"));
            assert_eq!(
                request::parse_json_command(&again, limits).as_ref(),
                Ok(&args)
            );
        }
    }
    if let Ok(commands) = request::parse_json_commands(&whole, limits) {
        assert!(!commands.is_empty(), "an empty pipeline was accepted");
        assert!(commands.iter().all(|args| !args.is_empty()));
    }

    let mut parts = data.splitn(3, |&b| b == 0);
    let path = String::from_utf8_lossy(parts.next().unwrap_or_default());
    let query = parts.next().map(String::from_utf8_lossy);
    let body = Bytes::copy_from_slice(parts.next().unwrap_or_default());
    let _ = request::query_token(query.as_deref());
    if let Ok(args) = request::parse_path_command(&path, query.as_deref(), body) {
        assert!(
            !args.is_empty() && !args[0].is_empty(),
            "a nameless command"
        );
    }
}

/// The RESP2 reply parser and the reply renderers, on a byte stream as it might come from a socket.
///
/// Every reply taken off the buffer consumes bytes, and writing it back out gives bytes that parse
/// to the same reply. Each reply is also rendered the three ways a client can ask for, and the
/// rendering must say exactly what the reply said: base64 strings decode to the reply's bytes
/// (only the status `OK` stays text), plain strings are the lossy UTF-8 of the bytes, integers and
/// nulls are themselves, arrays keep their length and order, and an error reply becomes
/// `{"error": …}` whatever the encoding.
pub fn resp(data: &[u8]) {
    let mut buf = BytesMut::from(data);
    while let Ok(Some(reply)) = resp::parse_reply(&mut buf) {
        let mut written = BytesMut::new();
        reply.write_resp(&mut written);
        let again = resp::parse_reply(&mut written);
        assert_eq!(again, Ok(Some(reply.clone())), "a reply did not round-trip");
        assert!(written.is_empty(), "writing a reply left extra bytes");

        for encoding in [Encoding::Utf8Lossy, Encoding::Base64] {
            let envelope = response::envelope(&reply, encoding);
            serde_json::to_vec(&envelope).expect("a rendered reply serializes");
            match reply.as_error() {
                Some(text) => assert_eq!(
                    envelope,
                    serde_json::json!({ "error": String::from_utf8_lossy(text) }),
                    "an error reply must render as its text, never encoded"
                ),
                None => check_rendering(&reply, &envelope["result"], encoding),
            }
        }
    }
}

/// `value` is what `reply` must render as with `encoding`.
fn check_rendering(reply: &Reply, value: &Value, encoding: Encoding) {
    use base64::Engine as _;
    match (reply, value) {
        (Reply::Status(text), Value::String(s)) if encoding == Encoding::Base64 => {
            if &text[..] == b"OK" {
                assert_eq!(s, "OK", "the status OK stays text under base64");
            } else {
                let decoded = base64::engine::general_purpose::STANDARD
                    .decode(s)
                    .expect("a base64 result decodes");
                assert_eq!(decoded, &text[..], "base64 changed a status reply");
            }
        }
        (Reply::Bulk(bytes), Value::String(s)) if encoding == Encoding::Base64 => {
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(s)
                .expect("a base64 result decodes");
            assert_eq!(decoded, &bytes[..], "base64 changed a bulk string");
        }
        (Reply::Status(bytes) | Reply::Bulk(bytes), Value::String(s)) => {
            assert_eq!(
                *s,
                String::from_utf8_lossy(bytes),
                "plain text changed a string"
            );
        }
        // Nested errors (EXEC results are rendered per element, not through here) stay text.
        (Reply::Error(text), Value::String(s)) => {
            assert_eq!(*s, String::from_utf8_lossy(text), "a nested error changed");
        }
        (Reply::Integer(n), Value::Number(m)) => assert_eq!(m.as_i64(), Some(*n)),
        (Reply::Nil, Value::Null) => {}
        (Reply::Array(items), Value::Array(values)) => {
            assert_eq!(items.len(), values.len(), "an array changed length");
            for (item, value) in items.iter().zip(values) {
                check_rendering(item, value, encoding);
            }
        }
        (reply, value) => panic!("{reply:?} rendered as {value} with {encoding:?}"),
    }
}

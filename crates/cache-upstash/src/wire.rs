//! The Upstash REST wire format: request bodies out, `{"result"}`/`{"error"}` replies in.
//!
//! # Requests
//!
//! - A command whose arguments are all UTF-8 is a JSON array POSTed to `/` (what the official SDKs
//!   send). Pipelines and transactions are arrays of such arrays POSTed to `/pipeline` and
//!   `/multi-exec`.
//! - JSON strings can only carry Unicode text, so a command with a non-UTF-8 argument uses the
//!   documented *path form*: `POST /SET/key?PX=100` with the raw bytes as the body, which Upstash
//!   appends as an argument before the query arguments. The body carries the last binary argument;
//!   other arguments are percent-encoded path segments and query items. Arguments before the body
//!   that are themselves binary are percent-encoded bytes (`%FF`): Upstash documents only the body
//!   as binary-safe, so keep binary data in the value. Empty arguments cannot be written in this
//!   form and are refused with [`Error::InvalidRequest`].
//!
//! # Replies
//!
//! With `Upstash-Encoding: base64`, every string in a result is the base64 of the bytes Redis
//! returned, except the status reply `OK`; integers and nulls are plain, arrays nest, errors are
//! never encoded. Decoding follows `@upstash/redis`: exactly `"OK"` stays `OK`, a string that is
//! not valid base64 is kept as it came (a server that ignores the header), and an encoded `OK`
//! (`"T0s="`, as SRH sends it) decodes to `OK` anyway.

use base64::Engine as _;
use bytes::Bytes;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};

use crate::{
    command::Command,
    error::{Error, Result},
    value::Value,
};

/// How strings in replies are encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum ResponseEncoding {
    /// `Upstash-Encoding: base64` (the default): every byte string round-trips exactly.
    #[default]
    Base64,
    /// Plain JSON strings: invalid UTF-8 in values is replaced with U+FFFD by the server.
    Json,
}

/// A request body and where to send it, relative to the base URL.
#[derive(Debug)]
pub(crate) struct Request {
    /// `""`, `"/pipeline"`, `"/multi-exec"` or a path-form path with its query.
    pub(crate) path: String,
    pub(crate) body: Bytes,
    pub(crate) content_type: &'static str,
}

/// Characters left as they are in path segments and query items: RFC 3986 unreserved.
pub(crate) const UNRESERVED: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// The request for one command: JSON body form when possible, path form otherwise.
pub(crate) fn single(command: &Command) -> Result<Request> {
    if command.is_text() {
        Ok(Request {
            path: String::new(),
            body: Bytes::from(json_array(command)),
            content_type: "application/json",
        })
    } else {
        path_form(command)
    }
}

/// The request for a pipeline or transaction: every argument must be text.
pub(crate) fn batch(commands: &[Command], path: &str) -> Result<Request> {
    let mut body = Vec::with_capacity(64 * commands.len());
    body.push(b'[');
    for (index, command) in commands.iter().enumerate() {
        if !command.is_text() {
            return Err(Error::invalid_request(format!(
                "command {index} ({}) has a non-UTF-8 argument, which a {path} JSON body cannot \
                 carry; send it as a single command (path form with a binary body)",
                command.name()
            )));
        }
        if index > 0 {
            body.push(b',');
        }
        body.extend_from_slice(&json_array(command));
    }
    body.push(b']');
    Ok(Request {
        path: path.to_owned(),
        body: Bytes::from(body),
        content_type: "application/json",
    })
}

fn json_array(command: &Command) -> Vec<u8> {
    let texts: Vec<&str> = command
        .as_args()
        .iter()
        .map(|arg| std::str::from_utf8(arg).unwrap_or_default())
        .collect();
    // Serializing a slice of strings into a Vec cannot fail.
    serde_json::to_vec(&texts).unwrap_or_default()
}

fn path_form(command: &Command) -> Result<Request> {
    let args = command.as_args();
    if args.iter().any(|arg| arg.is_empty()) {
        return Err(Error::invalid_request(format!(
            "{} has both a non-UTF-8 argument and an empty argument; the path form that carries \
             binary data cannot express an empty argument",
            command.name()
        )));
    }
    let body_index = args
        .iter()
        .rposition(|arg| std::str::from_utf8(arg).is_err())
        .unwrap_or(args.len() - 1);
    let mut path = String::with_capacity(64);
    for segment in &args[..body_index] {
        path.push('/');
        push_encoded(&mut path, segment);
    }
    // The query is `a=b&c=d&e`: the server adds `a`, `b`, `c`, `d`, `e` in order.
    let trailing = &args[body_index + 1..];
    for (pair_index, pair) in trailing.chunks(2).enumerate() {
        path.push(if pair_index == 0 { '?' } else { '&' });
        push_encoded(&mut path, &pair[0]);
        if let Some(value) = pair.get(1) {
            path.push('=');
            push_encoded(&mut path, value);
        }
    }
    Ok(Request {
        path,
        body: args[body_index].clone(),
        content_type: "application/octet-stream",
    })
}

fn push_encoded(out: &mut String, bytes: &[u8]) {
    match std::str::from_utf8(bytes) {
        Ok(text) => out.extend(utf8_percent_encode(text, UNRESERVED)),
        Err(_) => {
            for byte in bytes {
                if byte.is_ascii_alphanumeric() || b"-._~".contains(byte) {
                    out.push(char::from(*byte));
                } else {
                    out.push_str(&format!("%{byte:02X}"));
                }
            }
        }
    }
}

/// A reply slot: the result, or Redis's error text.
pub(crate) type Slot = std::result::Result<Value, String>;

/// Parses the body of a single-command response: `{"result": …}` or `{"error": "…"}`.
pub(crate) fn parse_single(body: &[u8], encoding: ResponseEncoding) -> Result<Slot> {
    let json: serde_json::Value = parse_json(body)?;
    slot(json, encoding)
}

/// What a pipeline or transaction answered.
#[derive(Debug)]
pub(crate) enum BatchReply {
    /// One slot per command.
    Slots(Vec<Slot>),
    /// The whole batch was refused (`{"error": …}`: a discarded transaction, a bad request).
    Refused(String),
}

/// Parses the body of a `/pipeline` or `/multi-exec` response.
pub(crate) fn parse_batch(
    body: &[u8],
    encoding: ResponseEncoding,
    expected: usize,
) -> Result<BatchReply> {
    match parse_json(body)? {
        serde_json::Value::Array(items) => {
            if items.len() != expected {
                return Err(Error::unexpected(format!(
                    "{expected} commands sent, {} replies received",
                    items.len()
                )));
            }
            items
                .into_iter()
                .map(|item| slot(item, encoding))
                .collect::<Result<Vec<_>>>()
                .map(BatchReply::Slots)
        }
        object @ serde_json::Value::Object(_) => match slot(object, encoding)? {
            Err(message) => Ok(BatchReply::Refused(message)),
            Ok(_) => Err(Error::unexpected(
                "a single result where an array of results was expected",
            )),
        },
        _ => Err(Error::unexpected(
            "a batch response that is neither an array nor an object",
        )),
    }
}

/// The `error` text of an error body, if the body is one (for non-2xx responses).
pub(crate) fn error_text(body: &[u8]) -> Option<String> {
    let json: serde_json::Value = serde_json::from_slice(body).ok()?;
    json.get("error")?.as_str().map(str::to_owned)
}

fn parse_json(body: &[u8]) -> Result<serde_json::Value> {
    serde_json::from_slice(body).map_err(|err| Error::UnexpectedResponse {
        message: format!("response body is not JSON: {err}"),
        status: None,
        body: Some(body_prefix(body)),
    })
}

/// At most 200 bytes of a body, for error messages.
pub(crate) fn body_prefix(body: &[u8]) -> String {
    let end = body.len().min(200);
    String::from_utf8_lossy(&body[..end]).into_owned()
}

fn slot(json: serde_json::Value, encoding: ResponseEncoding) -> Result<Slot> {
    let serde_json::Value::Object(mut object) = json else {
        return Err(Error::unexpected(
            "a reply that is not an object with `result` or `error`",
        ));
    };
    if let Some(error) = object.remove("error") {
        return match error {
            serde_json::Value::String(message) => Ok(Err(message)),
            other => Ok(Err(other.to_string())),
        };
    }
    match object.remove("result") {
        Some(result) => decode(result, encoding).map(Ok),
        None => Err(Error::unexpected(
            "a reply object without `result` or `error`",
        )),
    }
}

fn decode(json: serde_json::Value, encoding: ResponseEncoding) -> Result<Value> {
    Ok(match json {
        serde_json::Value::Null => Value::Nil,
        serde_json::Value::Number(number) => match number.as_i64() {
            Some(n) => Value::Int(n),
            // Not an integer Redis can send; keep its text rather than round it.
            None => Value::Data(Bytes::from(number.to_string())),
        },
        serde_json::Value::String(text) => Value::Data(decode_string(text, encoding)),
        serde_json::Value::Array(items) => Value::Array(
            items
                .into_iter()
                .map(|item| decode(item, encoding))
                .collect::<Result<_>>()?,
        ),
        serde_json::Value::Bool(_) | serde_json::Value::Object(_) => {
            return Err(Error::unexpected(
                "a result that is a boolean or an object, which Redis never sends",
            ));
        }
    })
}

fn decode_string(text: String, encoding: ResponseEncoding) -> Bytes {
    match encoding {
        ResponseEncoding::Json => Bytes::from(text),
        ResponseEncoding::Base64 if text == "OK" => Bytes::from_static(b"OK"),
        ResponseEncoding::Base64 => match base64::engine::general_purpose::STANDARD.decode(&text) {
            Ok(bytes) => Bytes::from(bytes),
            // As the official SDKs do: a string that is not base64 came from a server that does
            // not encode; keep it as it is.
            Err(_) => Bytes::from(text),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_commands_use_the_json_body() {
        let request = single(&Command::new("set").arg("k").arg("v é")).unwrap();
        assert_eq!(request.path, "");
        assert_eq!(&request.body[..], "[\"SET\",\"k\",\"v é\"]".as_bytes());
        assert_eq!(
            serde_json::from_slice::<Vec<String>>(&request.body).unwrap(),
            ["SET", "k", "v é"]
        );
    }

    #[test]
    fn binary_commands_use_the_path_form_with_the_value_as_body() {
        let command = Command::new("SET")
            .arg("a key/1")
            .arg(&[0xff, 0x00, 0x41][..])
            .arg("PX")
            .arg(1500)
            .arg("NX");
        let request = single(&command).unwrap();
        assert_eq!(request.path, "/SET/a%20key%2F1?PX=1500&NX");
        assert_eq!(&request.body[..], &[0xff, 0x00, 0x41]);
        let two_binary = Command::new("MSET")
            .arg(&[0xfe][..])
            .arg("x")
            .arg(&[0xff][..]);
        let request = single(&two_binary).unwrap();
        assert_eq!(request.path, "/MSET/%FE/x");
        assert_eq!(&request.body[..], &[0xff]);
        assert!(single(&Command::new("SET").arg("").arg(&[0xff][..])).is_err());
    }

    #[test]
    fn batches_refuse_binary_arguments() {
        let ok = batch(
            &[Command::new("GET").arg("a"), Command::new("INCR").arg("b")],
            "/pipeline",
        )
        .unwrap();
        assert_eq!(&ok.body[..], br#"[["GET","a"],["INCR","b"]]"#);
        let err = batch(
            &[Command::new("SET").arg("a").arg(&[0xff][..])],
            "/pipeline",
        )
        .unwrap_err();
        assert_eq!(err.kind(), crate::ErrorKind::InvalidRequest);
    }

    #[test]
    fn base64_replies_decode_recursively() {
        let body = br#"{"result":["YQ==",null,7,["Yg==",["OK"]],"T0s="]}"#;
        let value = parse_single(body, ResponseEncoding::Base64)
            .unwrap()
            .unwrap();
        let data = |s: &'static [u8]| Value::Data(Bytes::from_static(s));
        assert_eq!(
            value,
            Value::Array(vec![
                data(b"a"),
                Value::Nil,
                Value::Int(7),
                Value::Array(vec![data(b"b"), Value::Array(vec![data(b"OK")])]),
                data(b"OK"),
            ])
        );
        assert_eq!(
            parse_single(br#"{"error":"ERR nope"}"#, ResponseEncoding::Base64).unwrap(),
            Err("ERR nope".to_owned())
        );
    }

    #[test]
    fn malformed_bodies_are_unexpected_responses() {
        for body in [
            &b"{\"result\":\"YQ"[..],
            b"<html>",
            b"[]",
            b"{}",
            b"{\"result\":true}",
        ] {
            let err = parse_single(body, ResponseEncoding::Base64).unwrap_err();
            assert_eq!(err.kind(), crate::ErrorKind::UnexpectedResponse, "{body:?}");
        }
        assert!(matches!(
            parse_batch(br#"{"error":"EXECABORT"}"#, ResponseEncoding::Base64, 2).unwrap(),
            BatchReply::Refused(_)
        ));
        assert!(parse_batch(br#"[{"result":1}]"#, ResponseEncoding::Base64, 2).is_err());
    }
}

//! Turning an HTTP request into Redis commands: the JSON body form, the path form, and the
//! `/pipeline` / `/multi-exec` bodies.
//!
//! The JSON forms take strings as they are and numbers as their literal JSON text (so `100` stays
//! `100` and a 20-digit integer is not rounded through `f64`), booleans as `true`/`false`; `null`,
//! objects and nested arrays are refused because no Redis argument means that. The path form
//! percent-decodes each segment to raw bytes, so it can carry any binary value, and appends the raw
//! body and then the query arguments.

use bytes::Bytes;
use serde_json::value::RawValue;

use crate::command::Args;

/// A request the client got wrong: answered with 400 and this text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct BadRequest(pub(crate) String);

/// Parses `["SET","k","v",100]`.
pub(crate) fn parse_json_command(body: &[u8]) -> Result<Args, BadRequest> {
    let items: Vec<&RawValue> = serde_json::from_slice(body)
        .map_err(|e| BadRequest(format!("ERR failed to parse command: the body must be a JSON array of strings and numbers ({e})")))?;
    command_from_items(&items)
}

/// Parses `[["SET","k","v"],["GET","k"]]` for `/pipeline` and `/multi-exec`.
pub(crate) fn parse_json_commands(body: &[u8]) -> Result<Vec<Args>, BadRequest> {
    let commands: Vec<Vec<&RawValue>> = serde_json::from_slice(body).map_err(|e| {
        BadRequest(format!(
            "ERR failed to parse commands: the body must be a JSON array of command arrays ({e})"
        ))
    })?;
    if commands.is_empty() {
        return Err(BadRequest(
            "ERR empty pipeline: send at least one command".into(),
        ));
    }
    commands
        .iter()
        .enumerate()
        .map(|(i, items)| {
            command_from_items(items)
                .map_err(|BadRequest(e)| BadRequest(format!("{e} (command {i})")))
        })
        .collect()
}

fn command_from_items(items: &[&RawValue]) -> Result<Args, BadRequest> {
    if items.is_empty() {
        return Err(BadRequest("ERR empty command".into()));
    }
    items.iter().map(|item| json_arg(item)).collect()
}

fn json_arg(item: &RawValue) -> Result<Bytes, BadRequest> {
    let text = item.get();
    match text.as_bytes().first() {
        Some(b'"') => {
            let s: String = serde_json::from_str(text)
                .map_err(|e| BadRequest(format!("ERR invalid string argument ({e})")))?;
            Ok(Bytes::from(s))
        }
        // A number's JSON text is exactly what Redis expects (`100`, `-1.5`, `1e3`).
        Some(b'-' | b'0'..=b'9') | Some(b't' | b'f') => Ok(Bytes::copy_from_slice(text.as_bytes())),
        _ => Err(BadRequest(format!(
            "ERR invalid argument {text}: command arguments must be strings or numbers"
        ))),
    }
}

/// Builds the command of a path-form request: `/set/foo/bar?EX=100` with an optional raw body.
///
/// `path` is the raw (still percent-encoded) path. The body, when not empty, becomes the last
/// argument before the query arguments, as Upstash documents (`POST /set/foo?EX=100` with body
/// `bar` is `SET foo bar EX 100`). `_token` in the query is the credential, never an argument.
pub(crate) fn parse_path_command(
    path: &str,
    query: Option<&str>,
    body: Bytes,
) -> Result<Args, BadRequest> {
    let mut segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    // `/get/foo/` means `GET foo`: a trailing slash does not add an empty argument.
    if segments.len() > 1 && segments.last() == Some(&"") {
        segments.pop();
    }
    if segments.first().is_none_or(|name| name.is_empty()) {
        return Err(BadRequest(
            "ERR empty command: use /<command>/<arg>… or POST a JSON array to /".into(),
        ));
    }
    let mut args: Args = segments.iter().map(|s| percent_decode(s)).collect();
    if !body.is_empty() {
        args.push(body);
    }
    for (key, value) in query_pairs(query) {
        if key == b"_token".as_slice() {
            continue;
        }
        args.push(key);
        if let Some(value) = value.filter(|v| !v.is_empty()) {
            args.push(value);
        }
    }
    Ok(args)
}

/// The `_token` query parameter, if present.
pub(crate) fn query_token(query: Option<&str>) -> Option<Bytes> {
    query_pairs(query)
        .into_iter()
        .find(|(key, _)| key == b"_token".as_slice())
        .map(|(_, value)| value.unwrap_or_default())
}

/// `a=1&b&c=` as decoded `(key, value)` pairs. `+` is kept literally: these are path-style
/// arguments, not HTML form fields, and `+` is common in Redis arguments (`+inf`).
fn query_pairs(query: Option<&str>) -> Vec<(Bytes, Option<Bytes>)> {
    query
        .unwrap_or("")
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| match pair.split_once('=') {
            Some((key, value)) => (percent_decode(key), Some(percent_decode(value))),
            None => (percent_decode(pair), None),
        })
        .collect()
}

fn percent_decode(segment: &str) -> Bytes {
    Bytes::from(percent_encoding::percent_decode_str(segment).collect::<Vec<u8>>())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(args: &Args) -> Vec<String> {
        args.iter()
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect()
    }

    #[test]
    fn json_command_keeps_number_text_exactly() {
        let args = parse_json_command(
            br#"["SET","k","v","EX",100,"big",123456789012345678901234,-1.5,true]"#,
        )
        .unwrap();
        assert_eq!(
            strings(&args),
            [
                "SET",
                "k",
                "v",
                "EX",
                "100",
                "big",
                "123456789012345678901234",
                "-1.5",
                "true"
            ]
        );
    }

    #[test]
    fn json_command_decodes_escapes_and_unicode() {
        let args = parse_json_command(r#"["SET","k","a\"b\n😀\u00e9"]"#.as_bytes()).unwrap();
        assert_eq!(&args[2][..], "a\"b\n😀é".as_bytes());
    }

    #[test]
    fn json_command_rejects_bad_shapes() {
        for body in [
            &b""[..],
            b"{}",
            b"[]",
            b"[null]",
            br#"["SET",["x"]]"#,
            br#"["SET",{"a":1}]"#,
            b"not json",
        ] {
            assert!(
                parse_json_command(body).is_err(),
                "{:?}",
                String::from_utf8_lossy(body)
            );
        }
    }

    #[test]
    fn json_commands_parse_and_reject_empty() {
        let commands = parse_json_commands(br#"[["SET","a",1],["GET","a"]]"#).unwrap();
        assert_eq!(commands.len(), 2);
        assert_eq!(strings(&commands[0]), ["SET", "a", "1"]);
        assert!(parse_json_commands(b"[]").is_err());
        assert!(
            parse_json_commands(br#"[["GET","a"],[]]"#)
                .unwrap_err()
                .0
                .contains("command 1")
        );
        assert!(parse_json_commands(br#"["GET","a"]"#).is_err());
    }

    #[test]
    fn path_form_decodes_segments_and_appends_body_then_query() {
        let args = parse_path_command("/set/foo%2Fbar/b%C3%A9%FF", None, Bytes::new()).unwrap();
        assert_eq!(args[1], Bytes::from_static(b"foo/bar"));
        assert_eq!(args[2], Bytes::from_static(b"b\xc3\xa9\xff"));

        let args = parse_path_command(
            "/set/foo",
            Some("EX=100&_token=secret&NX"),
            Bytes::from_static(b"{\"a\":1}"),
        )
        .unwrap();
        assert_eq!(
            strings(&args),
            ["set", "foo", "{\"a\":1}", "EX", "100", "NX"]
        );

        let args = parse_path_command("/get/foo/", None, Bytes::new()).unwrap();
        assert_eq!(strings(&args), ["get", "foo"]);
        assert!(parse_path_command("/", None, Bytes::new()).is_err());
    }

    #[test]
    fn query_token_is_found_and_decoded() {
        assert_eq!(
            query_token(Some("a=1&_token=t%2Bk")),
            Some(Bytes::from_static(b"t+k"))
        );
        assert_eq!(query_token(Some("a=1")), None);
        assert_eq!(query_token(None), None);
    }
}

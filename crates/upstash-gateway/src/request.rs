//! Turning an HTTP request into Redis commands: the JSON body form, the path form, and the
//! `/pipeline` / `/multi-exec` bodies.
//!
//! The JSON forms take strings as they are and numbers as their literal JSON text (so `100` stays
//! `100` and a 20-digit integer is not rounded through `f64`), booleans as `true`/`false`; `null`,
//! objects and nested arrays are refused because no Redis argument means that. The path form
//! percent-decodes each segment to raw bytes, so it can carry any binary value, and appends the raw
//! body and then the query arguments.

use std::{
    cell::{Cell, RefCell},
    fmt,
};

use bytes::Bytes;
use serde::de::{self, DeserializeSeed, SeqAccess, Visitor};
use serde_json::value::RawValue;

use crate::command::Args;

/// A request the client got wrong: answered with 400 and this text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct BadRequest(pub(crate) String);

/// How much one JSON request may ask for, enforced while it is parsed.
///
/// The body limit alone does not bound memory: every argument becomes a `Bytes` handle (32 bytes)
/// and every command a `Vec`, so a 10 MiB body of `["PING"]`s or of one-character arguments would
/// expand many times over. Parsing stops at the first command or argument past these limits, so
/// a request holds at most about `32 × max_args + 24 × max_commands` bytes besides its body.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct RequestLimits {
    /// Commands in one `/pipeline` or `/multi-exec` body.
    pub(crate) max_commands: usize,
    /// Arguments (command names included) in one request, over all its commands.
    pub(crate) max_args: usize,
}

impl Default for RequestLimits {
    fn default() -> Self {
        RequestLimits {
            max_commands: crate::DEFAULT_MAX_PIPELINE_COMMANDS,
            max_args: crate::DEFAULT_MAX_REQUEST_ARGS,
        }
    }
}

/// Parses `["SET","k","v",100]`.
pub(crate) fn parse_json_command(body: &Bytes, limits: RequestLimits) -> Result<Args, BadRequest> {
    let parser = Parser::new(body, limits);
    let seed = CommandSeed {
        parser: &parser,
        index: None,
    };
    or_describe(parser.run(seed), |e| {
        format!(
            "ERR failed to parse command: the body must be a JSON array of strings and numbers ({e})"
        )
    })
}

/// Parses `[["SET","k","v"],["GET","k"]]` for `/pipeline` and `/multi-exec`.
pub(crate) fn parse_json_commands(
    body: &Bytes,
    limits: RequestLimits,
) -> Result<Vec<Args>, BadRequest> {
    let parser = Parser::new(body, limits);
    let commands = or_describe(parser.run(CommandsSeed { parser: &parser }), |e| {
        format!(
            "ERR failed to parse commands: the body must be a JSON array of command arrays ({e})"
        )
    })?;
    if commands.is_empty() {
        return Err(BadRequest(
            "ERR empty pipeline: send at least one command".into(),
        ));
    }
    Ok(commands)
}

/// One parse of one body: the body (arguments are slices of it, not copies), what is left of the
/// argument budget, and the first refusal that is not a plain JSON syntax error.
struct Parser<'b> {
    body: &'b Bytes,
    limits: RequestLimits,
    args_left: Cell<usize>,
    refusal: RefCell<Option<BadRequest>>,
}

impl<'b> Parser<'b> {
    fn new(body: &'b Bytes, limits: RequestLimits) -> Self {
        Parser {
            body,
            limits,
            args_left: Cell::new(limits.max_args),
            refusal: RefCell::new(None),
        }
    }

    /// Runs `seed` over the whole body; a refusal recorded on the way wins over the JSON error
    /// it was smuggled out as (serde visitors can only return the deserializer's error type).
    fn run<T>(&self, seed: impl DeserializeSeed<'b, Value = T>) -> Result<T, ParseError> {
        let body: &'b [u8] = self.body;
        let mut deserializer = serde_json::Deserializer::from_slice(body);
        let parsed = seed
            .deserialize(&mut deserializer)
            .and_then(|value| deserializer.end().map(|()| value));
        match (parsed, self.refusal.take()) {
            (_, Some(refusal)) => Err(ParseError::Refused(refusal)),
            (Ok(value), None) => Ok(value),
            (Err(err), None) => Err(ParseError::Json(err)),
        }
    }

    /// Records `refusal` and returns the error that makes serde stop at once.
    fn refuse<E: de::Error>(&self, refusal: String) -> E {
        let mut slot = self.refusal.borrow_mut();
        if slot.is_none() {
            *slot = Some(BadRequest(refusal));
        }
        E::custom("refused")
    }

    /// The argument `item`: a slice of the body when the JSON text is the argument itself (a
    /// string without escapes, a number, a boolean), a new buffer only for escaped strings.
    fn arg(&self, item: &RawValue) -> Result<Bytes, BadRequest> {
        let text = item.get();
        match text.as_bytes().first() {
            Some(b'"') if !text.contains('\\') => {
                Ok(self.body.slice_ref(&text.as_bytes()[1..text.len() - 1]))
            }
            Some(b'"') => {
                let s: String = serde_json::from_str(text)
                    .map_err(|e| BadRequest(format!("ERR invalid string argument ({e})")))?;
                Ok(Bytes::from(s))
            }
            // A number's JSON text is exactly what Redis expects (`100`, `-1.5`, `1e3`).
            Some(b'-' | b'0'..=b'9') | Some(b't' | b'f') => {
                Ok(self.body.slice_ref(text.as_bytes()))
            }
            _ => Err(BadRequest(format!(
                "ERR invalid argument {text}: command arguments must be strings or numbers"
            ))),
        }
    }
}

/// Why a body did not parse: a refusal of ours, or the JSON itself.
enum ParseError {
    Refused(BadRequest),
    Json(serde_json::Error),
}

/// A refusal as it is; a JSON error described by `describe`.
fn or_describe<T>(
    parsed: Result<T, ParseError>,
    describe: impl FnOnce(serde_json::Error) -> String,
) -> Result<T, BadRequest> {
    match parsed {
        Ok(value) => Ok(value),
        Err(ParseError::Refused(refusal)) => Err(refusal),
        Err(ParseError::Json(err)) => Err(BadRequest(describe(err))),
    }
}

/// The outer array of a pipeline body, counted as it is read.
struct CommandsSeed<'p, 'b> {
    parser: &'p Parser<'b>,
}

impl<'de> DeserializeSeed<'de> for CommandsSeed<'_, '_> {
    type Value = Vec<Args>;

    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<Vec<Args>, D::Error> {
        deserializer.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for CommandsSeed<'_, '_> {
    type Value = Vec<Args>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an array of command arrays")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<Args>, A::Error> {
        let mut commands = Vec::new();
        loop {
            let seed = CommandSeed {
                parser: self.parser,
                index: Some(commands.len()),
            };
            let Some(args) = seq.next_element_seed(seed)? else {
                return Ok(commands);
            };
            if commands.len() == self.parser.limits.max_commands {
                return Err(self.parser.refuse(format!(
                    "ERR too many commands in one request: at most {} per /pipeline or /multi-exec",
                    self.parser.limits.max_commands
                )));
            }
            commands.push(args);
        }
    }
}

/// One command array; `index` is its place in a pipeline, for error texts.
struct CommandSeed<'p, 'b> {
    parser: &'p Parser<'b>,
    index: Option<usize>,
}

impl CommandSeed<'_, '_> {
    fn location(&self) -> String {
        self.index
            .map(|i| format!(" (command {i})"))
            .unwrap_or_default()
    }
}

impl<'de> DeserializeSeed<'de> for CommandSeed<'_, '_> {
    type Value = Args;

    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<Args, D::Error> {
        deserializer.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for CommandSeed<'_, '_> {
    type Value = Args;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a command array")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Args, A::Error> {
        let parser = self.parser;
        let mut args = Args::new();
        while let Some(item) = seq.next_element::<&'de RawValue>()? {
            let left = parser.args_left.get();
            if left == 0 {
                return Err(parser.refuse(format!(
                    "ERR too many arguments in one request: at most {} in all",
                    parser.limits.max_args
                )));
            }
            parser.args_left.set(left - 1);
            match parser.arg(item) {
                Ok(arg) => args.push(arg),
                Err(BadRequest(e)) => return Err(parser.refuse(format!("{e}{}", self.location()))),
            }
        }
        if args.is_empty() {
            return Err(parser.refuse(format!("ERR empty command{}", self.location())));
        }
        Ok(args)
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

    fn json_command(body: &[u8]) -> Result<Args, BadRequest> {
        parse_json_command(&Bytes::copy_from_slice(body), RequestLimits::default())
    }

    fn json_commands(body: &[u8]) -> Result<Vec<Args>, BadRequest> {
        parse_json_commands(&Bytes::copy_from_slice(body), RequestLimits::default())
    }

    fn strings(args: &Args) -> Vec<String> {
        args.iter()
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect()
    }

    #[test]
    fn json_command_keeps_number_text_exactly() {
        let args =
            json_command(br#"["SET","k","v","EX",100,"big",123456789012345678901234,-1.5,true]"#)
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
        let args = json_command(r#"["SET","k","a\"b\n😀\u00e9"]"#.as_bytes()).unwrap();
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
                json_command(body).is_err(),
                "{:?}",
                String::from_utf8_lossy(body)
            );
        }
    }

    #[test]
    fn json_commands_parse_and_reject_empty() {
        let commands = json_commands(br#"[["SET","a",1],["GET","a"]]"#).unwrap();
        assert_eq!(commands.len(), 2);
        assert_eq!(strings(&commands[0]), ["SET", "a", "1"]);
        assert!(json_commands(b"[]").is_err());
        assert!(
            json_commands(br#"[["GET","a"],[]]"#)
                .unwrap_err()
                .0
                .contains("command 1")
        );
        assert!(json_commands(br#"["GET","a"]"#).is_err());
    }

    #[test]
    fn plain_arguments_are_slices_of_the_body() {
        let body = Bytes::from_static(br#"[["SET","key",12],["GET","a\"b"]]"#);
        let commands = parse_json_commands(&body, RequestLimits::default()).unwrap();
        let inside = |arg: &Bytes| body.as_ptr_range().contains(&arg.as_ptr());
        assert!(inside(&commands[0][1]) && inside(&commands[0][2]));
        assert_eq!(&commands[1][1][..], b"a\"b");
        assert!(!inside(&commands[1][1]), "an escaped string is decoded");
    }

    #[test]
    fn limits_stop_parsing_at_the_first_command_or_argument_past_them() {
        let limits = RequestLimits {
            max_commands: 2,
            max_args: 5,
        };
        let parse = |body: &[u8]| parse_json_commands(&Bytes::copy_from_slice(body), limits);
        assert_eq!(parse(br#"[["PING"],["GET","k"]]"#).unwrap().len(), 2);
        let too_many = parse(br#"[["PING"],["PING"],["PING"]]"#).unwrap_err().0;
        assert_eq!(
            too_many,
            "ERR too many commands in one request: at most 2 per /pipeline or /multi-exec"
        );
        // The refusal comes before the rest of the body is even looked at.
        let early = parse(br#"[["PING"],["PING"],["PING"], this is not JSON"#)
            .unwrap_err()
            .0;
        assert_eq!(early, too_many);
        let too_long = parse(br#"[["MSET","a","1","b","2"],["PING"]]"#)
            .unwrap_err()
            .0;
        assert_eq!(
            too_long,
            "ERR too many arguments in one request: at most 5 in all"
        );
        let single = parse_json_command(
            &Bytes::from_static(br#"["MSET","a","1","b","2","c"]"#),
            limits,
        );
        assert_eq!(single.unwrap_err().0, too_long);
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

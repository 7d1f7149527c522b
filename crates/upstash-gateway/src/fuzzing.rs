//! Entry points for the coverage-guided fuzz targets in `fuzz/` (feature `fuzzing`; not an API).
//!
//! Each function takes arbitrary bytes, runs one of the gateway's parsers on them and checks the
//! properties that must hold for every input: no panic, a typed refusal for bad input, and
//! round-trips where the format has one. A violated property panics, which the fuzzer reports.

use bytes::{Bytes, BytesMut};

use crate::{request, resp};

/// The request parsers: a JSON command, a JSON pipeline, and the path form.
///
/// The input is split at the first two NUL bytes into path, query and body for the path form;
/// the whole input is also tried as a JSON body.
pub fn request(data: &[u8]) {
    if let Ok(args) = request::parse_json_command(data) {
        assert!(!args.is_empty(), "an empty command was accepted");
        // Arguments that are text round-trip through the JSON form unchanged.
        if let Ok(texts) = args
            .iter()
            .map(|arg| std::str::from_utf8(arg))
            .collect::<Result<Vec<_>, _>>()
        {
            let again = serde_json::to_vec(&texts).expect("strings serialize");
            assert_eq!(request::parse_json_command(&again).as_ref(), Ok(&args));
        }
    }
    if let Ok(commands) = request::parse_json_commands(data) {
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

/// The RESP2 reply parser, on a byte stream as it might come from a socket.
///
/// Every reply taken off the buffer consumes bytes, and writing it back out gives bytes that parse
/// to the same reply.
pub fn resp(data: &[u8]) {
    let mut buf = BytesMut::from(data);
    while let Ok(Some(reply)) = resp::parse_reply(&mut buf) {
        let mut written = BytesMut::new();
        reply.write_resp(&mut written);
        let again = resp::parse_reply(&mut written);
        assert_eq!(again, Ok(Some(reply)), "a reply did not round-trip");
        assert!(written.is_empty(), "writing a reply left extra bytes");
    }
}

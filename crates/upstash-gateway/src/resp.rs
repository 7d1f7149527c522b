//! RESP2, the Redis wire protocol: encoding commands and parsing replies.
//!
//! The gateway speaks RESP2 only (it never sends `HELLO 3`, and refuses it from clients), so the
//! reply type has the five RESP2 shapes. Replies keep their bytes as they came: a bulk string may be
//! any binary, and so may a status or error line (Redis echoes client bytes into some errors, and
//! Lua scripts return any bytes as either); turning them into JSON (lossy UTF-8 or base64) is the
//! caller's decision, and nothing here requires UTF-8.

use bytes::{Buf, BufMut, Bytes, BytesMut};

/// One reply from Redis.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Reply {
    /// `+OK`: a simple string (status).
    Status(Bytes),
    /// `-ERR …`: an error, kept as a value because pipelines and `EXEC` carry errors per element.
    Error(Bytes),
    /// `:42`.
    Integer(i64),
    /// `$3 bar`: a binary-safe string.
    Bulk(Bytes),
    /// `$-1` or `*-1`: RESP2 has two nulls; both mean "no value" to an Upstash client.
    Nil,
    /// `*2 …`: possibly nested.
    Array(Vec<Reply>),
}

impl Reply {
    /// The text of an error reply, or `None` for any other reply.
    pub(crate) fn as_error(&self) -> Option<&[u8]> {
        match self {
            Reply::Error(message) => Some(message),
            _ => None,
        }
    }

    /// Writes the reply back as RESP2 bytes (for `Upstash-Response-Format: resp2`).
    pub(crate) fn write_resp(&self, out: &mut BytesMut) {
        match self {
            Reply::Status(text) => write_line(out, b'+', text),
            Reply::Error(text) => write_line(out, b'-', text),
            Reply::Integer(n) => write_line(out, b':', n.to_string().as_bytes()),
            Reply::Bulk(data) => {
                write_line(out, b'$', data.len().to_string().as_bytes());
                out.put_slice(data);
                out.put_slice(b"\r\n");
            }
            Reply::Nil => out.put_slice(b"$-1\r\n"),
            Reply::Array(items) => {
                write_line(out, b'*', items.len().to_string().as_bytes());
                for item in items {
                    item.write_resp(out);
                }
            }
        }
    }
}

fn write_line(out: &mut BytesMut, prefix: u8, text: &[u8]) {
    out.put_u8(prefix);
    out.put_slice(text);
    out.put_slice(b"\r\n");
}

/// Appends one command (`*N` array of bulk strings) to `out`.
pub(crate) fn encode_command(args: &[Bytes], out: &mut BytesMut) {
    write_line(out, b'*', args.len().to_string().as_bytes());
    for arg in args {
        write_line(out, b'$', arg.len().to_string().as_bytes());
        out.put_slice(arg);
        out.put_slice(b"\r\n");
    }
}

/// The bytes Redis sent do not follow RESP2: the connection cannot be trusted any more.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ProtocolError(pub(crate) String);

/// Tries to take one complete reply off the front of `buf`.
///
/// Returns `Ok(None)` when the buffer holds only part of a reply (read more and call again); on
/// success the reply's bytes are consumed from `buf`.
pub(crate) fn parse_reply(buf: &mut BytesMut) -> Result<Option<Reply>, ProtocolError> {
    let mut cursor = 0;
    match parse_at(buf, &mut cursor, 0)? {
        Some(reply) => {
            buf.advance(cursor);
            Ok(Some(reply))
        }
        None => Ok(None),
    }
}

/// Deeper nesting than this is not something Redis produces; refusing it keeps recursion bounded.
const MAX_DEPTH: usize = 64;

fn parse_at(
    buf: &BytesMut,
    cursor: &mut usize,
    depth: usize,
) -> Result<Option<Reply>, ProtocolError> {
    if depth > MAX_DEPTH {
        return Err(ProtocolError("reply nested too deeply".into()));
    }
    let Some(line) = read_line(buf, cursor) else {
        return Ok(None);
    };
    let (&kind, rest) = line
        .split_first()
        .ok_or_else(|| ProtocolError("empty line".into()))?;
    let reply = match kind {
        b'+' => Reply::Status(Bytes::copy_from_slice(rest)),
        b'-' => Reply::Error(Bytes::copy_from_slice(rest)),
        b':' => Reply::Integer(parse_int(rest)?),
        b'$' => {
            let len = parse_int(rest)?;
            if len < 0 {
                Reply::Nil
            } else {
                let len =
                    usize::try_from(len).map_err(|_| ProtocolError("bulk too long".into()))?;
                let end = *cursor + len;
                if buf.len() < end + 2 {
                    return Ok(None);
                }
                if &buf[end..end + 2] != b"\r\n" {
                    return Err(ProtocolError("bulk string not followed by CRLF".into()));
                }
                let data = Bytes::copy_from_slice(&buf[*cursor..end]);
                *cursor = end + 2;
                Reply::Bulk(data)
            }
        }
        b'*' => {
            let len = parse_int(rest)?;
            if len < 0 {
                Reply::Nil
            } else {
                let len =
                    usize::try_from(len).map_err(|_| ProtocolError("array too long".into()))?;
                // Do not trust the length for the allocation: it is capped by what is buffered.
                let mut items = Vec::with_capacity(len.min(buf.len()));
                for _ in 0..len {
                    match parse_at(buf, cursor, depth + 1)? {
                        Some(item) => items.push(item),
                        None => return Ok(None),
                    }
                }
                Reply::Array(items)
            }
        }
        other => {
            return Err(ProtocolError(format!(
                "unexpected reply type byte {other:#04x} (is this a Redis server speaking RESP2?)"
            )));
        }
    };
    Ok(Some(reply))
}

/// The next CRLF-terminated line from `cursor`, without the CRLF, advancing `cursor` past it.
fn read_line<'a>(buf: &'a [u8], cursor: &mut usize) -> Option<&'a [u8]> {
    let start = *cursor;
    let offset = buf.get(start..)?.windows(2).position(|w| w == b"\r\n")?;
    *cursor = start + offset + 2;
    Some(&buf[start..start + offset])
}

fn parse_int(text: &[u8]) -> Result<i64, ProtocolError> {
    std::str::from_utf8(text)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| {
            ProtocolError(format!(
                "invalid integer {:?}",
                String::from_utf8_lossy(text)
            ))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_all(input: &[u8]) -> Result<Option<Reply>, ProtocolError> {
        parse_reply(&mut BytesMut::from(input))
    }

    #[test]
    fn parses_every_reply_type() {
        assert_eq!(
            parse_all(b"+OK\r\n").unwrap(),
            Some(Reply::Status("OK".into()))
        );
        assert_eq!(
            parse_all(b"-ERR no\r\n").unwrap(),
            Some(Reply::Error("ERR no".into()))
        );
        assert_eq!(parse_all(b":-12\r\n").unwrap(), Some(Reply::Integer(-12)));
        assert_eq!(
            parse_all(b"$3\r\nb\r\n\r\n").unwrap(),
            Some(Reply::Bulk("b\r\n".into()))
        );
        assert_eq!(parse_all(b"$-1\r\n").unwrap(), Some(Reply::Nil));
        assert_eq!(parse_all(b"*-1\r\n").unwrap(), Some(Reply::Nil));
        assert_eq!(
            parse_all(b"*2\r\n$1\r\na\r\n*1\r\n:1\r\n").unwrap(),
            Some(Reply::Array(vec![
                Reply::Bulk("a".into()),
                Reply::Array(vec![Reply::Integer(1)])
            ]))
        );
    }

    #[test]
    fn status_and_error_lines_may_be_any_bytes() {
        assert_eq!(
            parse_all(b"+\xffok\r\n").unwrap(),
            Some(Reply::Status(Bytes::from_static(b"\xffok")))
        );
        let mut buf = BytesMut::from(&b"-ERR unknown command '\xfe'\r\n:1\r\n"[..]);
        assert_eq!(
            parse_reply(&mut buf).unwrap(),
            Some(Reply::Error(Bytes::from_static(
                b"ERR unknown command '\xfe'"
            )))
        );
        assert_eq!(parse_reply(&mut buf).unwrap(), Some(Reply::Integer(1)));
    }

    #[test]
    fn incomplete_input_asks_for_more_and_consumes_nothing() {
        for partial in [&b"+OK"[..], b"$3\r\nab", b"*2\r\n:1\r\n", b"$3\r\nabc\r"] {
            let mut buf = BytesMut::from(partial);
            assert_eq!(parse_reply(&mut buf).unwrap(), None, "{partial:?}");
            assert_eq!(&buf[..], partial);
        }
    }

    #[test]
    fn consumes_exactly_one_reply() {
        let mut buf = BytesMut::from(&b":1\r\n:2\r\n"[..]);
        assert_eq!(parse_reply(&mut buf).unwrap(), Some(Reply::Integer(1)));
        assert_eq!(&buf[..], b":2\r\n");
    }

    #[test]
    fn garbage_is_a_protocol_error() {
        assert!(parse_all(b"HTTP/1.1 400\r\n").is_err());
        assert!(parse_all(b":abc\r\n").is_err());
        assert!(parse_all(b"$1\r\nab\r\n").is_err());
    }

    #[test]
    fn encodes_commands_and_round_trips_replies() {
        let mut out = BytesMut::new();
        encode_command(
            &["SET".into(), "k".into(), Bytes::from_static(b"\xff\r\n")],
            &mut out,
        );
        assert_eq!(
            &out[..],
            b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$3\r\n\xff\r\n\r\n"
        );

        let reply = Reply::Array(vec![
            Reply::Status("OK".into()),
            Reply::Error("ERR x".into()),
            Reply::Integer(7),
            Reply::Bulk("v".into()),
            Reply::Nil,
        ]);
        let mut bytes = BytesMut::new();
        reply.write_resp(&mut bytes);
        assert_eq!(parse_reply(&mut bytes).unwrap(), Some(reply));
    }
}

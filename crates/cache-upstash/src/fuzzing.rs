//! Entry point for the coverage-guided fuzz target in `fuzz/` (feature `fuzzing`; not an API).
//!
//! [`replies`] runs the reply decoder on arbitrary bytes as a single-command, pipeline and
//! transaction body in both encodings, then converts every decoded value into the types commands
//! return. Bad input must come back as a typed error; a panic or a wrong-kind error is a bug.

use std::collections::HashMap;

use bytes::Bytes;

use crate::{
    error::{Error, ErrorKind},
    value::{FromValue, Value},
    wire::{self, BatchReply, ResponseEncoding},
};

/// Decodes `body` every way a response body is decoded and checks the results.
pub fn replies(body: &[u8]) {
    for encoding in [ResponseEncoding::Base64, ResponseEncoding::Json] {
        match wire::parse_single(body, encoding) {
            Ok(Ok(value)) => convert(value),
            Ok(Err(_redis_error)) => {}
            Err(error) => check_decode_error(&error),
        }
        for expected in [0, 1, 3] {
            match wire::parse_batch(body, encoding, expected) {
                Ok(BatchReply::Slots(slots)) => {
                    assert_eq!(slots.len(), expected, "a batch reply of the wrong length");
                    slots.into_iter().flatten().for_each(convert);
                }
                Ok(BatchReply::Refused(_)) => {}
                Err(error) => check_decode_error(&error),
            }
        }
    }
    let _ = wire::error_text(body);
}

fn check_decode_error(error: &Error) {
    assert_eq!(error.kind(), ErrorKind::UnexpectedResponse, "{error:?}");
    if let Error::UnexpectedResponse {
        body: Some(prefix), ..
    } = error
    {
        // At most 200 body bytes are kept, each at most 3 bytes as lossy UTF-8.
        assert!(prefix.len() <= 600, "an error kept {} bytes", prefix.len());
    }
}

/// Every conversion a typed command may apply: each either succeeds or is a typed error.
fn convert(value: Value) {
    fn check<T: FromValue>(value: &Value) {
        if let Err(error) = T::from_value(value.clone()) {
            assert_eq!(error.kind(), ErrorKind::UnexpectedResponse, "{error:?}");
        }
    }
    check::<Value>(&value);
    check::<()>(&value);
    check::<Bytes>(&value);
    check::<String>(&value);
    check::<i64>(&value);
    check::<u64>(&value);
    check::<f64>(&value);
    check::<bool>(&value);
    check::<Option<Bytes>>(&value);
    check::<Vec<Option<String>>>(&value);
    check::<Vec<(Bytes, f64)>>(&value);
    check::<HashMap<String, Bytes>>(&value);
    check::<(u64, Vec<String>)>(&value);
}

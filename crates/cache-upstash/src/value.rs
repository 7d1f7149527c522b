//! Replies as Rust values: the protocol's [`Value`], the [`FromValue`] conversions typed commands
//! use, and [`IntoArg`] for command arguments.
//!
//! Upstash answers in JSON, so a reply is `null`, an integer, a string or an array. With base64
//! response encoding (the default) every string is the base64 of the bytes Redis returned, so
//! [`Value::Data`] holds exact bytes, never lossy text.

use std::{collections::HashMap, hash::Hash};

use bytes::Bytes;

use crate::error::{Error, Result};

/// One Redis reply, as it came over the REST protocol.
///
/// Deliberately exhaustive: a REST reply is JSON null, an integer, a string or an array, so
/// these four cover every reply, and a `match` on them needs no catch-all arm.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    /// `null`: a missing key or an absent value.
    Nil,
    /// An integer reply.
    Int(i64),
    /// A bulk or status string (status replies such as `OK` and `PONG` included), as bytes.
    Data(Bytes),
    /// An array reply, possibly nested.
    Array(Vec<Value>),
}

impl Value {
    fn describe(&self) -> String {
        match self {
            Value::Nil => "nil".to_owned(),
            Value::Int(n) => format!("integer {n}"),
            Value::Data(bytes) if bytes.len() <= 40 => {
                format!("string {:?}", String::from_utf8_lossy(bytes))
            }
            Value::Data(bytes) => format!("string of {} bytes", bytes.len()),
            Value::Array(items) => format!("array of {} items", items.len()),
        }
    }

    fn mismatch<T>(&self, expected: &str) -> Result<T> {
        Err(Error::unexpected(format!(
            "expected {expected}, got {}",
            self.describe()
        )))
    }
}

/// Conversion of a [`Value`] into the Rust type a command returns.
///
/// Implemented for the usual reply types; implement it for your own types to use them with
/// [`Redis::query`](crate::Redis::query) and pipelines.
pub trait FromValue: Sized {
    /// Converts, or explains what did not fit.
    fn from_value(value: Value) -> Result<Self>;
}

impl FromValue for Value {
    fn from_value(value: Value) -> Result<Self> {
        Ok(value)
    }
}

/// Accepts any reply and discards it (`SET` answering `OK`, `LTRIM`, `FLUSHDB`).
impl FromValue for () {
    fn from_value(_: Value) -> Result<Self> {
        Ok(())
    }
}

impl FromValue for Bytes {
    fn from_value(value: Value) -> Result<Self> {
        match value {
            Value::Data(bytes) => Ok(bytes),
            // Redis turns integers into strings in some replies; accept them as text.
            Value::Int(n) => Ok(Bytes::from(n.to_string())),
            other => other.mismatch("a string"),
        }
    }
}

impl FromValue for Vec<u8> {
    fn from_value(value: Value) -> Result<Self> {
        Bytes::from_value(value).map(Vec::from)
    }
}

impl FromValue for String {
    fn from_value(value: Value) -> Result<Self> {
        match value {
            Value::Data(bytes) => String::from_utf8(bytes.to_vec())
                .map_err(|_| Error::unexpected("expected UTF-8 text, got binary data")),
            Value::Int(n) => Ok(n.to_string()),
            other => other.mismatch("a string"),
        }
    }
}

impl FromValue for i64 {
    fn from_value(value: Value) -> Result<Self> {
        match value {
            Value::Int(n) => Ok(n),
            // INFO-style numbers and stamps stored as strings parse too.
            Value::Data(ref bytes) => std::str::from_utf8(bytes)
                .ok()
                .and_then(|text| text.parse().ok())
                .map_or_else(|| value.mismatch("an integer"), Ok),
            other => other.mismatch("an integer"),
        }
    }
}

impl FromValue for u64 {
    fn from_value(value: Value) -> Result<Self> {
        let n = i64::from_value(value)?;
        u64::try_from(n).map_err(|_| Error::unexpected(format!("expected a count, got {n}")))
    }
}

impl FromValue for f64 {
    fn from_value(value: Value) -> Result<Self> {
        match value {
            // RESP2 has no doubles: INCRBYFLOAT and friends answer a string.
            Value::Int(n) => Ok(n as f64),
            Value::Data(ref bytes) => std::str::from_utf8(bytes)
                .ok()
                .and_then(|text| text.parse().ok())
                .map_or_else(|| value.mismatch("a number"), Ok),
            other => other.mismatch("a number"),
        }
    }
}

/// `1`/`0` integer replies, `OK`/nil for conditional `SET`.
impl FromValue for bool {
    fn from_value(value: Value) -> Result<Self> {
        match value {
            Value::Int(n) => Ok(n != 0),
            Value::Nil => Ok(false),
            Value::Data(ref bytes) if &bytes[..] == b"OK" => Ok(true),
            other => other.mismatch("a boolean (0/1, OK or nil)"),
        }
    }
}

/// A `TIME` reply: `[seconds, microseconds]` since the Unix epoch.
impl FromValue for std::time::SystemTime {
    fn from_value(value: Value) -> Result<Self> {
        let (seconds, micros) = <(u64, u64)>::from_value(value)?;
        if micros >= 1_000_000 {
            return Err(Error::unexpected(format!(
                "expected microseconds below 1000000 in a TIME reply, got {micros}"
            )));
        }
        std::time::UNIX_EPOCH
            .checked_add(
                std::time::Duration::from_secs(seconds) + std::time::Duration::from_micros(micros),
            )
            .ok_or_else(|| Error::unexpected(format!("TIME reply {seconds}s is out of range")))
    }
}

impl<T: FromValue> FromValue for Option<T> {
    fn from_value(value: Value) -> Result<Self> {
        match value {
            Value::Nil => Ok(None),
            other => T::from_value(other).map(Some),
        }
    }
}

impl<T: FromValue> FromValue for Vec<T> {
    fn from_value(value: Value) -> Result<Self> {
        match value {
            Value::Array(items) => items.into_iter().map(T::from_value).collect(),
            // LPOP/RPOP with a count answer nil for a missing key.
            Value::Nil => Ok(Vec::new()),
            other => other.mismatch("an array"),
        }
    }
}

impl<A: FromValue, B: FromValue> FromValue for (A, B) {
    fn from_value(value: Value) -> Result<Self> {
        match value {
            Value::Array(items) if items.len() == 2 => {
                let mut items = items.into_iter();
                let (Some(a), Some(b)) = (items.next(), items.next()) else {
                    unreachable!("length checked")
                };
                Ok((A::from_value(a)?, B::from_value(b)?))
            }
            other => other.mismatch("an array of 2 items"),
        }
    }
}

/// Flat `[field, value, field, value…]` replies (`HGETALL`).
impl<K: FromValue + Eq + Hash, V: FromValue> FromValue for HashMap<K, V> {
    fn from_value(value: Value) -> Result<Self> {
        let pairs = pairs_from_flat(value)?;
        pairs
            .into_iter()
            .map(|(k, v)| Ok((K::from_value(k)?, V::from_value(v)?)))
            .collect()
    }
}

/// Splits a flat `[a, b, c, d]` array into `[(a, b), (c, d)]`.
pub(crate) fn pairs_from_flat(value: Value) -> Result<Vec<(Value, Value)>> {
    match value {
        Value::Array(items) if items.len() % 2 == 0 => {
            let mut out = Vec::with_capacity(items.len() / 2);
            let mut iter = items.into_iter();
            while let (Some(k), Some(v)) = (iter.next(), iter.next()) {
                out.push((k, v));
            }
            Ok(out)
        }
        Value::Nil => Ok(Vec::new()),
        other => other.mismatch("an array of field/value pairs"),
    }
}

/// A command argument: anything that becomes bytes. Strings, byte slices, [`Bytes`] and numbers.
pub trait IntoArg {
    /// The argument's bytes.
    fn into_arg(self) -> Bytes;
}

impl IntoArg for Bytes {
    fn into_arg(self) -> Bytes {
        self
    }
}

impl IntoArg for &Bytes {
    fn into_arg(self) -> Bytes {
        self.clone()
    }
}

impl IntoArg for Vec<u8> {
    fn into_arg(self) -> Bytes {
        Bytes::from(self)
    }
}

impl IntoArg for &[u8] {
    fn into_arg(self) -> Bytes {
        Bytes::copy_from_slice(self)
    }
}

impl<const N: usize> IntoArg for &[u8; N] {
    fn into_arg(self) -> Bytes {
        Bytes::copy_from_slice(self)
    }
}

impl IntoArg for &str {
    fn into_arg(self) -> Bytes {
        Bytes::copy_from_slice(self.as_bytes())
    }
}

impl IntoArg for String {
    fn into_arg(self) -> Bytes {
        Bytes::from(self)
    }
}

impl IntoArg for &String {
    fn into_arg(self) -> Bytes {
        Bytes::copy_from_slice(self.as_bytes())
    }
}

macro_rules! int_args {
    ($($t:ty),*) => {$(
        impl IntoArg for $t {
            fn into_arg(self) -> Bytes {
                Bytes::from(self.to_string())
            }
        }
    )*};
}
int_args!(i32, i64, u32, u64, usize, isize, f64);

#[cfg(test)]
mod tests {
    use super::*;

    fn data(s: &str) -> Value {
        Value::Data(Bytes::copy_from_slice(s.as_bytes()))
    }

    #[test]
    fn conversions_of_common_replies() {
        assert_eq!(Option::<Bytes>::from_value(Value::Nil).unwrap(), None);
        assert_eq!(i64::from_value(data("42")).unwrap(), 42);
        assert_eq!(f64::from_value(data("1.5")).unwrap(), 1.5);
        assert!(bool::from_value(data("OK")).unwrap());
        assert!(!bool::from_value(Value::Nil).unwrap());
        let map: HashMap<String, i64> =
            FromValue::from_value(Value::Array(vec![data("a"), data("1")])).unwrap();
        assert_eq!(map["a"], 1);
        let err = i64::from_value(Value::Array(vec![])).unwrap_err();
        assert_eq!(
            err.to_string(),
            "unexpected response: expected an integer, got array of 0 items"
        );
        assert!(HashMap::<String, String>::from_value(Value::Array(vec![data("a")])).is_err());
    }
}

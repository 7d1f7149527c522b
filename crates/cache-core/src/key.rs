//! Typed cache keys and tags, built through a [`Namespace`] so that every key carries the
//! application prefix and the format version, and no call site writes a key with `format!`.
//! This module is also the only parser of that format ([`Namespace::parse`], [`Tag::parse`],
//! [`Namespace::parse_tag`]): tools that take names from people call these, never split strings.
//!
//! Layout: namespace `{prefix}:v{version}`, key `{namespace}:{kind}:{part}:…`, tag
//! `{namespace}:#{kind}:{part}:…`, and `{namespace}:#*` the tag of every key of the namespace.
//! A prefix is 1–64 ASCII letters, digits, `_`, `-` or `.`; a kind 1–64 lowercase ASCII letters,
//! digits, `_` or `-`; the version a decimal `u32` without leading zeros.
//! Parts are escaped (`%` → `%25`, `:` → `%3A`) so `("a:b", "c")` and `("a", "b:c")` never collide,
//! and the `#` keeps tags and keys apart. Bumping the version makes every old key unreachable, so a
//! changed value format never reads old bytes.

use std::{fmt, str::FromStr, sync::Arc};

use crate::error::{Error, Result};

/// Keys longer than this are rejected when built (Redis allows more, but such keys are a bug).
pub const MAX_KEY_LEN: usize = 1024;

/// The longest prefix or kind, in bytes.
const MAX_SEGMENT_LEN: usize = 64;

/// The one rule for a prefix or a kind: 1 to [`MAX_SEGMENT_LEN`] bytes, each `allowed`.
fn check_segment(what: &str, text: &str, allowed: fn(u8) -> bool, described: &str) -> Result<()> {
    if text.is_empty() || text.len() > MAX_SEGMENT_LEN || !text.bytes().all(allowed) {
        return Err(Error::InvalidKey(format!(
            "{what} {text:?} must be 1-{MAX_SEGMENT_LEN} {described}"
        )));
    }
    Ok(())
}

fn check_prefix(prefix: &str) -> Result<()> {
    check_segment(
        "namespace prefix",
        prefix,
        |b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'),
        "ASCII letters, digits, '_', '-' or '.'",
    )
}

fn check_kind(kind: &str) -> Result<()> {
    check_segment(
        "key kind",
        kind,
        |b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'-'),
        "lowercase ASCII letters, digits, '_' or '-'",
    )
}

/// `vN` → N. Only the form [`Namespace`] writes: no sign, no leading zeros, no overflow.
fn parse_version(text: &str, whole: &str) -> Result<u32> {
    let digits = text
        .strip_prefix('v')
        .ok_or_else(|| not_a_namespace(whole))?;
    let canonical = !digits.is_empty()
        && digits.bytes().all(|b| b.is_ascii_digit())
        && (digits == "0" || !digits.starts_with('0'));
    match digits.parse() {
        Ok(version) if canonical => Ok(version),
        _ => Err(Error::InvalidKey(format!(
            "{whole:?}: the version after :v must be a number from 0 to {} without leading zeros",
            u32::MAX
        ))),
    }
}

fn not_a_namespace(text: &str) -> Error {
    Error::InvalidKey(format!("{text:?} is not prefix:vN (for example chat:v1)"))
}

/// Splits a stored key or tag after its namespace: `chat:v1:#x:1` → (`chat:v1`, `#x:1`).
fn split_namespace(text: &str) -> Option<(&str, &str)> {
    let first = text.find(':')?;
    let second = first + 1 + text[first + 1..].find(':')?;
    Some((&text[..second], &text[second + 1..]))
}

/// Checks the part of a stored tag after `#`: `*`, or a kind and escaped parts.
fn check_tag_body(body: &str, whole: &str) -> Result<()> {
    if body == "*" {
        return Ok(());
    }
    let mut pieces = body.split(':');
    check_kind(pieces.next().unwrap_or_default())?;
    pieces.try_for_each(|part| check_escaped(part, whole))
}

/// A part as `Escaping` writes it: no `:`, and `%` only in `%25` or `%3A`.
fn check_escaped(part: &str, whole: &str) -> Result<()> {
    let bytes = part.as_bytes();
    let mut at = 0;
    while let Some(offset) = bytes[at..].iter().position(|&b| b == b'%') {
        let code = &bytes[at + offset + 1..];
        if !(code.starts_with(b"25") || code.starts_with(b"3A")) {
            return Err(Error::InvalidKey(format!(
                "{whole:?}: a '%' in a part must start %25 or %3A (how '%' and ':' are escaped)"
            )));
        }
        at += offset + 3;
    }
    Ok(())
}

fn check_len(text: &str) -> Result<()> {
    if text.len() > MAX_KEY_LEN {
        return Err(Error::InvalidKey(format!(
            "a name of {} bytes is over the {MAX_KEY_LEN} byte limit",
            text.len()
        )));
    }
    Ok(())
}

/// A key prefix and format version, from which all keys and tags of an application are built.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Namespace {
    base: Arc<str>,
    all_tag: Tag,
}

impl Namespace {
    /// A namespace `prefix` (1-64 ASCII letters, digits, `_`, `-`, `.`) at format `version`.
    pub fn new(prefix: &str, version: u32) -> Result<Self> {
        check_prefix(prefix)?;
        Ok(Namespace::from_base(&format!("{prefix}:v{version}")))
    }

    /// A namespace written as [`Namespace::as_str`] writes it: `prefix:vN` (e.g. `chat:v1`).
    ///
    /// # Errors
    /// [`Error::InvalidKey`] saying what is wrong: no `:v`, a version that is not a plain number,
    /// or a prefix outside the rule of [`Namespace::new`].
    pub fn parse(text: &str) -> Result<Self> {
        let (prefix, version) = text.split_once(':').ok_or_else(|| not_a_namespace(text))?;
        let version = parse_version(version, text)?;
        Namespace::new(prefix, version)
    }

    /// `base` must be a valid `prefix:vN`.
    fn from_base(base: &str) -> Self {
        Namespace {
            base: base.into(),
            all_tag: Tag {
                text: format!("{base}:#*").into(),
                base_len: base.len(),
            },
        }
    }

    /// `{prefix}:v{version}`, the start of every key of this namespace.
    pub fn as_str(&self) -> &str {
        &self.base
    }

    /// The prefix, without the version.
    pub fn prefix(&self) -> &str {
        self.base
            .split_once(':')
            .map_or(&self.base, |(prefix, _)| prefix)
    }

    /// The tag every key of this namespace carries: invalidating it invalidates the namespace.
    pub fn all_tag(&self) -> &Tag {
        &self.all_tag
    }

    /// A key of `kind` (e.g. `channel-messages`) identified by `parts`, tagged only with the
    /// namespace tag. Add tags with [`Key::tagged`].
    ///
    /// # Panics
    /// If `kind` is not a lowercase identifier (a programming error, caught by any test).
    pub fn key(&self, kind: &str, parts: &[&dyn fmt::Display]) -> Key {
        let name = self.join("", kind, parts);
        Key(Arc::new(KeyInner {
            name,
            tags: vec![self.all_tag.clone()].into(),
        }))
    }

    /// A key of `kind` identified by `parts` and tagged with `tags` (and the namespace tag;
    /// duplicates ignored): what `ns.key(kind, parts).tagged(tags)` builds, in one allocation of
    /// the key instead of two. Build keys on the request path this way.
    ///
    /// # Panics
    /// If `kind` is not a lowercase identifier.
    pub fn tagged_key(&self, kind: &str, parts: &[&dyn fmt::Display], tags: &[Tag]) -> Key {
        Key::new(self.join("", kind, parts), self, tags)
    }

    /// Like [`Namespace::key`] for keys built from untrusted input: errors instead of panicking,
    /// and rejects keys over [`MAX_KEY_LEN`] bytes.
    pub fn try_key(&self, kind: &str, parts: &[&dyn fmt::Display]) -> Result<Key> {
        check_kind(kind)?;
        let key = self.key(kind, parts);
        if key.as_str().len() > MAX_KEY_LEN {
            return Err(Error::InvalidKey(format!(
                "key of kind {kind:?} is {} bytes, over the {MAX_KEY_LEN} byte limit",
                key.as_str().len()
            )));
        }
        Ok(key)
    }

    /// A tag of `kind` identified by `parts`, e.g. `ns.tag("channel", &[&42])`.
    ///
    /// # Panics
    /// If `kind` is not a lowercase identifier.
    pub fn tag(&self, kind: &str, parts: &[&dyn fmt::Display]) -> Tag {
        Tag {
            text: self.join("#", kind, parts).into(),
            base_len: self.base.len(),
        }
    }

    /// A tag of this namespace as a person writes it: `*` (the namespace), `kind:part:…` or
    /// `#kind:part:…` with parts escaped as stored, or the whole stored tag, which must belong to
    /// this namespace. Text whose third `:`-separated segment starts with `#` is taken as a whole
    /// stored tag (`k:v1:#x` is the namespace `k:v1`, not kind `k` with parts `v1`, `#x`).
    ///
    /// # Errors
    /// [`Error::InvalidKey`] for a malformed tag or a tag of another namespace.
    pub fn parse_tag(&self, text: &str) -> Result<Tag> {
        if split_namespace(text).is_some_and(|(_, rest)| rest.starts_with('#')) {
            let tag = Tag::parse(text)?;
            if tag.namespace_str() != self.as_str() {
                return Err(Error::InvalidKey(format!(
                    "tag {text:?} belongs to namespace {}, not {}",
                    tag.namespace_str(),
                    self.as_str()
                )));
            }
            return Ok(tag);
        }
        let body = text.strip_prefix('#').unwrap_or(text);
        check_tag_body(body, text)?;
        let tag = Tag {
            text: format!("{}:#{body}", self.base).into(),
            base_len: self.base.len(),
        };
        check_len(tag.as_str())?;
        Ok(tag)
    }

    /// The name of a key of `kind` identified by `parts`, written on the stack: what
    /// [`Cache::get_or_load_named`](crate::Cache::get_or_load_named) needs to answer a hit from
    /// an in-process tier without allocating. [`KeyName::tagged`] builds the [`Key`] for a miss.
    ///
    /// # Panics
    /// If `kind` is not a lowercase identifier.
    pub fn key_name<'ns>(&'ns self, kind: &str, parts: &[&dyn fmt::Display]) -> KeyName<'ns> {
        let mut name = KeyName {
            ns: self,
            buf: NameBuf::Inline {
                len: 0,
                bytes: [0; INLINE_NAME],
            },
        };
        self.write_name(&mut name.buf, "", kind, parts);
        name
    }

    fn join(&self, marker: &str, kind: &str, parts: &[&dyn fmt::Display]) -> Box<str> {
        // Room for parts as long as a ULID, so the common keys are built without growing.
        let mut out = String::with_capacity(
            self.base.len() + marker.len() + kind.len() + 1 + parts.len() * 27,
        );
        self.write_name(&mut out, marker, kind, parts);
        out.into_boxed_str()
    }

    /// Writes `{namespace}:{marker}{kind}:{part}:…` to `out`, parts escaped: the one writer of
    /// key and tag names.
    fn write_name(
        &self,
        out: &mut impl fmt::Write,
        marker: &str,
        kind: &str,
        parts: &[&dyn fmt::Display],
    ) {
        if let Err(err) = check_kind(kind) {
            panic!("{err}");
        }
        let written = (|| {
            out.write_str(&self.base)?;
            out.write_char(':')?;
            out.write_str(marker)?;
            out.write_str(kind)?;
            for part in parts {
                out.write_char(':')?;
                // Written straight into the name, escaped on the way: no string per part.
                fmt::write(&mut Escaping(&mut *out), format_args!("{part}"))?;
            }
            Ok::<_, fmt::Error>(())
        })();
        if written.is_err() {
            panic!("a key part's Display implementation returned an error");
        }
    }
}

impl fmt::Debug for Namespace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Namespace").field(&self.base).finish()
    }
}

impl fmt::Display for Namespace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.base)
    }
}

impl FromStr for Namespace {
    type Err = Error;

    fn from_str(text: &str) -> Result<Self> {
        Namespace::parse(text)
    }
}

/// A `fmt::Write` that escapes what is written to it into a key name: `%` → `%25`, `:` → `%3A`.
struct Escaping<'a, W: fmt::Write>(&'a mut W);

impl<W: fmt::Write> fmt::Write for Escaping<'_, W> {
    fn write_str(&mut self, part: &str) -> fmt::Result {
        if !part.contains(['%', ':']) {
            return self.0.write_str(part);
        }
        for c in part.chars() {
            match c {
                '%' => self.0.write_str("%25")?,
                ':' => self.0.write_str("%3A")?,
                c => self.0.write_char(c)?,
            }
        }
        Ok(())
    }
}

/// Bytes of a [`KeyName`] kept on the stack; longer names (rare: a long prefix and long parts)
/// move to the heap.
const INLINE_NAME: usize = 160;

/// The name of a key, without its tags, written on the stack by [`Namespace::key_name`].
///
/// A hit on an in-process tier needs only the name (the tier keeps the tags of the key the
/// entry was stored under), so probing with a `KeyName` costs no allocation where a [`Key`]
/// costs several. One rule makes that sound: a name is always stored with the same tags, which
/// holds when, as with [`Namespace::tagged_key`], the tags are a function of the key's parts.
pub struct KeyName<'ns> {
    ns: &'ns Namespace,
    buf: NameBuf,
}

enum NameBuf {
    Inline {
        len: usize,
        bytes: [u8; INLINE_NAME],
    },
    Heap(String),
}

impl fmt::Write for NameBuf {
    fn write_str(&mut self, text: &str) -> fmt::Result {
        match self {
            NameBuf::Inline { len, bytes } => {
                if let Some(room) = bytes.get_mut(*len..*len + text.len()) {
                    room.copy_from_slice(text.as_bytes());
                    *len += text.len();
                } else {
                    let mut heap = String::with_capacity(*len + text.len());
                    // Whole `&str`s were copied in, so the bytes so far are UTF-8.
                    heap.push_str(std::str::from_utf8(&bytes[..*len]).map_err(|_| fmt::Error)?);
                    heap.push_str(text);
                    *self = NameBuf::Heap(heap);
                }
            }
            NameBuf::Heap(heap) => heap.push_str(text),
        }
        Ok(())
    }
}

impl KeyName<'_> {
    /// The name, as [`Key::as_str`] returns it for the key built from it.
    pub fn as_str(&self) -> &str {
        match &self.buf {
            // Only whole `&str`s are copied in, so the bytes are UTF-8; checking costs a pass
            // over ~80 bytes, which is still cheaper than the allocation it replaces.
            NameBuf::Inline { len, bytes } => std::str::from_utf8(&bytes[..*len]).unwrap_or(""),
            NameBuf::Heap(heap) => heap,
        }
    }

    /// The [`Key`] of this name, tagged with `tags` and the namespace tag: what
    /// [`Namespace::tagged_key`] builds from the same kind and parts.
    pub fn tagged(&self, tags: &[Tag]) -> Key {
        Key::new(self.as_str().into(), self.ns, tags)
    }
}

impl fmt::Debug for KeyName<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("KeyName").field(&self.as_str()).finish()
    }
}

impl fmt::Display for KeyName<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A cache key with the tags whose invalidation removes it. Cheap to clone.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Key(Arc<KeyInner>);

#[derive(PartialEq, Eq, Hash)]
struct KeyInner {
    name: Box<str>,
    // The namespace tag comes first.
    tags: Box<[Tag]>,
}

impl Key {
    /// The key `name` of namespace `ns`, tagged with `tags` and the namespace tag (first;
    /// duplicates ignored).
    fn new(name: Box<str>, ns: &Namespace, tags: &[Tag]) -> Key {
        let mut all = Vec::with_capacity(1 + tags.len());
        all.push(ns.all_tag.clone());
        for tag in tags {
            if !all.contains(tag) {
                all.push(tag.clone());
            }
        }
        Key(Arc::new(KeyInner {
            name,
            tags: all.into(),
        }))
    }

    /// The key as stored in the backend.
    pub fn as_str(&self) -> &str {
        &self.0.name
    }

    /// The tags of this key, the namespace tag first.
    pub fn tags(&self) -> &[Tag] {
        &self.0.tags
    }

    /// The namespace tag of this key.
    pub fn namespace_tag(&self) -> &Tag {
        &self.0.tags[0]
    }

    /// A key as stored (what [`Key::as_str`] returns), tagged only with its namespace tag: enough
    /// to address it in a backend, as a backplane receiver does with the keys of a notice.
    pub(crate) fn from_stored(text: &str) -> Result<Key> {
        check_len(text)?;
        let (base, rest) = split_namespace(text).ok_or_else(|| {
            Error::InvalidKey(format!(
                "{text:?} is not a key: it must start with prefix:vN:"
            ))
        })?;
        let namespace = Namespace::parse(base)?;
        let kind = rest.split(':').next().unwrap_or_default();
        check_kind(kind)?;
        Ok(Key(Arc::new(KeyInner {
            name: text.into(),
            tags: vec![namespace.all_tag].into(),
        })))
    }

    /// This key with `tags` added (duplicates ignored).
    #[must_use]
    pub fn tagged(&self, tags: &[Tag]) -> Key {
        let mut all = self.0.tags.to_vec();
        for tag in tags {
            if !all.contains(tag) {
                all.push(tag.clone());
            }
        }
        Key(Arc::new(KeyInner {
            name: self.0.name.clone(),
            tags: all.into(),
        }))
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Key")
            .field("name", &self.0.name)
            .field("tags", &self.0.tags)
            .finish()
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.name)
    }
}

/// A name for a group of keys that are invalidated together. Cheap to clone.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Tag {
    text: Arc<str>,
    // Bytes of `text` that are the namespace (`prefix:vN`): every tag has one.
    base_len: usize,
}

impl Tag {
    /// A tag as stored in the backend (what [`Tag::as_str`] returns):
    /// `prefix:vN:#kind:part:…` or `prefix:vN:#*`.
    ///
    /// # Errors
    /// [`Error::InvalidKey`] for anything [`Namespace::tag`] cannot have written.
    pub fn parse(text: &str) -> Result<Self> {
        check_len(text)?;
        let (base, rest) = split_namespace(text).ok_or_else(|| {
            Error::InvalidKey(format!(
                "{text:?} is not a tag: it must start with prefix:vN:#"
            ))
        })?;
        let namespace = Namespace::parse(base)?;
        let body = rest.strip_prefix('#').ok_or_else(|| {
            Error::InvalidKey(format!(
                "{text:?} is not a tag: '#' must follow the namespace {namespace}"
            ))
        })?;
        check_tag_body(body, text)?;
        Ok(Tag {
            text: text.into(),
            base_len: base.len(),
        })
    }

    /// The tag as stored in the backend.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The namespace this tag belongs to.
    pub fn namespace(&self) -> Namespace {
        Namespace::from_base(self.namespace_str())
    }

    /// `prefix:vN` of the namespace this tag belongs to.
    pub fn namespace_str(&self) -> &str {
        &self.text[..self.base_len]
    }
}

impl fmt::Debug for Tag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Tag({})", self.text)
    }
}

impl fmt::Display for Tag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl FromStr for Tag {
    type Err = Error;

    fn from_str(text: &str) -> Result<Self> {
        Tag::parse(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_carry_prefix_version_and_namespace_tag() {
        let ns = Namespace::new("chat", 3).unwrap();
        let key = ns.key("channel-messages", &[&42, &"latest"]);
        assert_eq!(key.as_str(), "chat:v3:channel-messages:42:latest");
        assert_eq!(key.tags(), std::slice::from_ref(ns.all_tag()));
        assert_eq!(ns.all_tag().as_str(), "chat:v3:#*");
        assert_eq!(ns.tag("channel", &[&42]).as_str(), "chat:v3:#channel:42");
        // Replay after a queue overflow maps any tag to its namespace tag.
        assert_eq!(
            ns.tag("channel", &[&42]).namespace().all_tag(),
            ns.all_tag()
        );
        assert_eq!(ns.all_tag().namespace(), ns);
    }

    #[test]
    fn parts_are_escaped_so_keys_never_collide() {
        let ns = Namespace::new("app", 1).unwrap();
        let a = ns.key("k", &[&"a:b", &"c"]);
        let b = ns.key("k", &[&"a", &"b:c"]);
        assert_ne!(a.as_str(), b.as_str());
        assert_eq!(a.as_str(), "app:v1:k:a%3Ab:c");
        assert_eq!(ns.key("k", &[&"50%"]).as_str(), "app:v1:k:50%25");
    }

    #[test]
    fn version_bump_changes_every_key() {
        let v1 = Namespace::new("app", 1).unwrap().key("user", &[&7]);
        let v2 = Namespace::new("app", 2).unwrap().key("user", &[&7]);
        assert_ne!(v1.as_str(), v2.as_str());
    }

    #[test]
    fn tagged_adds_tags_once() {
        let ns = Namespace::new("app", 1).unwrap();
        let t = ns.tag("channel", &[&1]);
        let key = ns.key("page", &[&1]).tagged(&[t.clone(), t.clone()]);
        assert_eq!(key.tags().len(), 2);
        assert_eq!(key.namespace_tag(), ns.all_tag());
    }

    #[test]
    fn tagged_key_is_key_then_tagged() {
        let ns = Namespace::new("app", 1).unwrap();
        let t = ns.tag("channel", &[&"a:b"]);
        let u = ns.tag("user", &[&7]);
        let tags = [t.clone(), u, t, ns.all_tag().clone()];
        let parts: [&dyn fmt::Display; 3] = [&"a:b", &50, &"100%"];
        let one = ns.tagged_key("page", &parts, &tags);
        let two = ns.key("page", &parts).tagged(&tags);
        assert_eq!(one, two);
        assert_eq!(one.as_str(), "app:v1:page:a%3Ab:50:100%25");
        assert_eq!(one.tags().len(), 3);
        assert_eq!(one.namespace_tag(), ns.all_tag());
    }

    /// A name built on the stack is the name of the key built from the same kind and parts,
    /// escapes included, also when it outgrows its inline buffer; its key carries the tags.
    #[test]
    fn key_names_name_the_keys_of_the_same_parts() {
        let ns = Namespace::new("app", 1).unwrap();
        let tag = ns.tag("channel", &[&7]);
        let long = "x:%".repeat(100);
        let cases: [&[&dyn fmt::Display]; 4] = [&[], &[&7, &"a:b"], &[&"100%", &long], &[&long]];
        for parts in cases {
            let name = ns.key_name("page", parts);
            let key = ns.tagged_key("page", parts, std::slice::from_ref(&tag));
            assert_eq!(name.as_str(), key.as_str());
            assert_eq!(name.to_string(), key.as_str());
            assert_eq!(name.tagged(std::slice::from_ref(&tag)), key);
        }
        assert!(ns.key_name("page", &[&long]).as_str().len() > INLINE_NAME);
    }

    /// A part whose `Display` writes in pieces is escaped piece by piece, as a whole.
    #[test]
    fn parts_written_in_pieces_are_escaped() {
        struct Pieces;
        impl fmt::Display for Pieces {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a:")?;
                f.write_str("%")?;
                write!(f, ":{}", 7)
            }
        }
        let ns = Namespace::new("app", 1).unwrap();
        assert_eq!(ns.key("k", &[&Pieces]).as_str(), "app:v1:k:a%3A%25%3A7");
    }

    #[test]
    fn bad_names_are_rejected() {
        assert!(Namespace::new("", 1).is_err());
        assert!(Namespace::new("a b", 1).is_err());
        let ns = Namespace::new("app", 1).unwrap();
        assert!(ns.try_key("Bad Kind", &[]).unwrap_err().kind() == crate::ErrorKind::InvalidKey);
        let long = "x".repeat(MAX_KEY_LEN);
        assert!(ns.try_key("k", &[&long]).is_err());
        assert_eq!(
            ns.try_key("k", &[&"✓ unicode"]).unwrap().as_str(),
            "app:v1:k:✓ unicode"
        );
    }

    /// A random part: mostly plain, often with the characters that need escaping, and unicode.
    fn random_part(rng: &mut fastrand::Rng) -> String {
        const ALPHABET: &[char] = &['a', 'Z', '0', ':', '%', '#', '*', ' ', '-', '✓', '3', 'A'];
        (0..rng.usize(0..12))
            .map(|_| ALPHABET[rng.usize(..ALPHABET.len())])
            .collect()
    }

    fn random_segment(rng: &mut fastrand::Rng, alphabet: &[u8]) -> String {
        (0..rng.usize(1..=MAX_SEGMENT_LEN))
            .map(|_| char::from(alphabet[rng.usize(..alphabet.len())]))
            .collect()
    }

    #[test]
    fn every_built_namespace_and_tag_parses_back_to_itself() {
        let mut rng = fastrand::Rng::with_seed(7);
        for _ in 0..2000 {
            let prefix = random_segment(&mut rng, b"aZ09_-.");
            let version = match rng.u8(..3) {
                0 => 0,
                1 => u32::MAX,
                _ => rng.u32(..),
            };
            let ns = Namespace::new(&prefix, version).unwrap();
            assert_eq!(Namespace::parse(&ns.to_string()).unwrap(), ns);
            assert_eq!(ns.prefix(), prefix);
            assert_eq!(Tag::parse(ns.all_tag().as_str()).unwrap(), *ns.all_tag());
            let kind = random_segment(&mut rng, b"az09_-");
            let parts: Vec<String> = (0..rng.usize(0..4))
                .map(|_| random_part(&mut rng))
                .collect();
            let parts: Vec<&dyn fmt::Display> = parts.iter().map(|p| p as _).collect();
            let tag = ns.tag(&kind, &parts);
            if tag.as_str().len() > MAX_KEY_LEN {
                continue;
            }
            let parsed = Tag::parse(&tag.to_string()).unwrap();
            assert_eq!(parsed, tag);
            assert_eq!(parsed.namespace(), ns);
            // The same tag written relative to its namespace, with or without the `#`.
            let relative = &tag.as_str()[ns.as_str().len() + 2..];
            // (Unless a part starts with `#` where a version would be: that reads as whole.)
            let looks_whole = split_namespace(relative).is_some_and(|(_, r)| r.starts_with('#'));
            if !looks_whole {
                assert_eq!(ns.parse_tag(relative).unwrap(), tag, "{relative}");
                assert_eq!(ns.parse_tag(&format!("#{relative}")).unwrap(), tag);
            }
            assert_eq!(ns.parse_tag(tag.as_str()).unwrap(), tag);
        }
    }

    /// Arbitrary text never panics a parser, and whatever a parser accepts is exactly what the
    /// builders would write (no second spelling of a name).
    #[test]
    fn arbitrary_text_parses_to_a_canonical_name_or_a_typed_error() {
        const ALPHABET: &[&str] = &["a", "v", "1", "0", ":", "#", "*", "%", "25", "3A", "é", "-"];
        let mut rng = fastrand::Rng::with_seed(11);
        let ns = Namespace::new("a", 1).unwrap();
        let mut accepted = 0;
        for _ in 0..20_000 {
            let text: String = (0..rng.usize(0..16))
                .map(|_| ALPHABET[rng.usize(..ALPHABET.len())])
                .collect();
            if let Ok(parsed) = Namespace::parse(&text) {
                assert_eq!(parsed.to_string(), text);
                accepted += 1;
            }
            if let Ok(tag) = Tag::parse(&text) {
                assert_eq!(tag.as_str(), text);
                assert_eq!(Tag::parse(tag.as_str()).unwrap(), tag);
                accepted += 1;
            }
            if let Ok(tag) = ns.parse_tag(&text) {
                assert_eq!(tag.namespace(), ns);
                assert_eq!(Tag::parse(tag.as_str()).unwrap(), tag, "{text:?}");
                accepted += 1;
            }
        }
        assert!(
            accepted > 100,
            "the generator reaches valid names ({accepted})"
        );
    }

    #[test]
    fn malformed_namespaces_are_refused_with_a_typed_error() {
        let too_long = format!("{}:v1", "a".repeat(MAX_SEGMENT_LEN + 1));
        for text in [
            "",
            "chat",
            "chat:",
            "chat:1",
            "chat:v",
            "chat:vx",
            "chat:v-1",
            "chat:v+1",
            "chat:v01",
            "chat:v 1",
            "chat:v4294967296",
            "chat:v1:",
            "chat:v1:x",
            ":v1",
            "bad prefix:v1",
            "ch#t:v1",
            "chät:v1",
            &too_long,
        ] {
            let err = Namespace::parse(text).unwrap_err();
            assert_eq!(err.kind(), crate::ErrorKind::InvalidKey, "{text:?}");
        }
        assert!(
            Namespace::parse("chat")
                .unwrap_err()
                .to_string()
                .contains("is not prefix:vN")
        );
        assert!(
            Namespace::parse("chat:vx")
                .unwrap_err()
                .to_string()
                .contains("must be a number")
        );
        let longest = format!("{}:v0", "a".repeat(MAX_SEGMENT_LEN));
        assert_eq!(Namespace::parse(&longest).unwrap().as_str(), longest);
        assert_eq!(
            "my.app:v12".parse::<Namespace>().unwrap().prefix(),
            "my.app"
        );
    }

    #[test]
    fn malformed_tags_are_refused_with_a_typed_error() {
        let too_long = format!("chat:v1:#k:{}", "x".repeat(MAX_KEY_LEN));
        let long_kind = format!("chat:v1:#{}", "k".repeat(MAX_SEGMENT_LEN + 1));
        for text in [
            "",
            "*",
            "chat:v1",
            "chat:v1:",
            "chat:v1:#",
            "chat:v1:channel:1",
            "chat:v1:##channel",
            "chat:v1:#Channel:1",
            "chat:v1:#chan nel",
            "chat:v1:#:1",
            "chat:v1:#*:1",
            "chat:v1:#**",
            "chat:v1:#k:50%",
            "chat:v1:#k:50%2",
            "chat:v1:#k:%3a",
            "chat:v1:#k:%41",
            "chat:vx:#k",
            "chat:v01:#k",
            "bad prefix:v1:#k",
            &too_long,
            &long_kind,
        ] {
            let err = Tag::parse(text).unwrap_err();
            assert_eq!(err.kind(), crate::ErrorKind::InvalidKey, "{text:?}");
        }
        let ns = Namespace::new("chat", 1).unwrap();
        for text in [
            "",
            "#",
            "Channel:1",
            "*:1",
            ":1",
            "k:%zz",
            "other:v2:#k:1",
            "chat:v1:#Bad",
        ] {
            let err = ns.parse_tag(text).unwrap_err();
            assert_eq!(err.kind(), crate::ErrorKind::InvalidKey, "{text:?}");
        }
        assert!(
            ns.parse_tag("other:v2:#k:1")
                .unwrap_err()
                .to_string()
                .contains("belongs to namespace other:v2, not chat:v1")
        );
        assert_eq!(ns.parse_tag("*").unwrap(), *ns.all_tag());
        assert_eq!(ns.parse_tag("#*").unwrap(), *ns.all_tag());
        assert_eq!(
            ns.parse_tag("membership:c1:u2").unwrap(),
            ns.tag("membership", &[&"c1", &"u2"])
        );
        assert_eq!(ns.parse_tag("k:a%3Ab%25").unwrap(), ns.tag("k", &[&"a:b%"]));
    }
}

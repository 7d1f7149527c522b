//! Typed cache keys and tags, built through a [`Namespace`] so that every key carries the
//! application prefix and the format version, and no call site writes a key with `format!`.
//!
//! Layout: key `{prefix}:v{version}:{kind}:{part}:…`, tag `{prefix}:v{version}:#{kind}:{part}:…`.
//! Parts are escaped (`%` → `%25`, `:` → `%3A`) so `("a:b", "c")` and `("a", "b:c")` never collide,
//! and the `#` keeps tags and keys apart. Bumping the version makes every old key unreachable, so a
//! changed value format never reads old bytes.

use std::{fmt, sync::Arc};

use crate::error::{Error, Result};

/// Keys longer than this are rejected when built (Redis allows more, but such keys are a bug).
pub const MAX_KEY_LEN: usize = 1024;

/// A key prefix and format version, from which all keys and tags of an application are built.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Namespace {
    base: Arc<str>,
    all_tag: Tag,
}

impl Namespace {
    /// A namespace `prefix` (ASCII letters, digits, `_`, `-`, `.`) at format `version`.
    pub fn new(prefix: &str, version: u32) -> Result<Self> {
        if prefix.is_empty()
            || prefix.len() > 64
            || !prefix
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
        {
            return Err(Error::InvalidKey(format!(
                "namespace prefix {prefix:?} must be 1-64 ASCII letters, digits, '_', '-' or '.'"
            )));
        }
        let base: Arc<str> = format!("{prefix}:v{version}").into();
        let all_tag = Tag(format!("{base}:#*").into());
        Ok(Namespace { base, all_tag })
    }

    /// `{prefix}:v{version}`, the start of every key of this namespace.
    pub fn as_str(&self) -> &str {
        &self.base
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
        Tag(self.join("#", kind, parts).into())
    }

    fn join(&self, marker: &str, kind: &str, parts: &[&dyn fmt::Display]) -> Box<str> {
        if let Err(err) = check_kind(kind) {
            panic!("{err}");
        }
        let mut out = String::with_capacity(self.base.len() + kind.len() + 2 + parts.len() * 12);
        out.push_str(&self.base);
        out.push(':');
        out.push_str(marker);
        out.push_str(kind);
        for part in parts {
            out.push(':');
            escape_into(&mut out, &part.to_string());
        }
        out.into_boxed_str()
    }
}

impl fmt::Debug for Namespace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Namespace").field(&self.base).finish()
    }
}

fn check_kind(kind: &str) -> Result<()> {
    if kind.is_empty()
        || kind.len() > 64
        || !kind
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'-'))
    {
        return Err(Error::InvalidKey(format!(
            "key kind {kind:?} must be 1-64 lowercase ASCII letters, digits, '_' or '-'"
        )));
    }
    Ok(())
}

fn escape_into(out: &mut String, part: &str) {
    for c in part.chars() {
        match c {
            '%' => out.push_str("%25"),
            ':' => out.push_str("%3A"),
            c => out.push(c),
        }
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
pub struct Tag(Arc<str>);

impl Tag {
    /// The tag as stored in the backend.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Tag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Tag({})", self.0)
    }
}

impl fmt::Display for Tag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
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
}

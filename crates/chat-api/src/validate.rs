//! Input rules, one function per kind of value, so every handler validates the same way and the
//! messages clients get are consistent. Every text is checked for length in characters and for
//! control characters (NUL would even make PostgreSQL fail the insert, a 500 instead of a 400).

use ulid::Ulid;
use unicode_normalization::UnicodeNormalization as _;
use unicode_security::{GeneralSecurityProfile, RestrictionLevel, RestrictionLevelDetection as _};

use crate::error::AppError;

/// Longest user name, in characters.
pub const MAX_USER_NAME: usize = 32;
/// Longest channel name, in characters.
pub const MAX_CHANNEL_NAME: usize = 64;
/// Longest message, in characters.
pub const MAX_CONTENT: usize = 2000;
/// Longest nonce, in characters.
pub const MAX_NONCE: usize = 64;
/// Longest emoji, in characters.
pub const MAX_EMOJI: usize = 32;
/// Largest page.
pub const MAX_PAGE: u32 = 100;
/// Page size when none is given.
pub const DEFAULT_PAGE: u32 = 50;

fn length(field: &str, value: &str, max: usize) -> Result<(), AppError> {
    let chars = value.chars().count();
    if chars == 0 || chars > max {
        return Err(AppError::Validation(format!(
            "{field} must be 1 to {max} characters"
        )));
    }
    Ok(())
}

/// A user name, as it is stored and shown: the NFKC form of what the client sent.
///
/// - NFKC first, so compatibility variants become their plain letters (full-width `ａｌｉｃｅ` is
///   `alice`, `ﬁ` is `fi`); the length and every rule below apply to the normalized name.
/// - Letters, digits, `_`, `-`, `.`, and only characters UTS 39's General Security Profile
///   allows in identifiers (no obsolete or limited-use scripts, no invisible characters).
/// - At UTS 39's "highly restrictive" level: one script (Latin, Cyrillic, Greek, Han, Arabic, …;
///   digits and `_-.` go with any), or Latin with Han and Japanese kana, Bopomofo or Hangul, as
///   people write those languages. So `аlice` with a Cyrillic `а` is refused: mixing Latin with
///   Cyrillic or Greek is how look-alikes of Latin names are made.
///
/// Why the `unicode-security` crate rather than a hand-written "one script per name" rule: it
/// carries the Unicode data the rule needs (script extensions, the identifier profile, the
/// confusables behind [`user_name_key`]) and the standard's treatment of Japanese and Korean,
/// which legitimately mix scripts; a simple rule would refuse those or need the same tables.
/// Whole-script look-alikes (all-Cyrillic `асе` beside Latin `ace`) pass this check; they are
/// caught by uniqueness on [`user_name_key`].
pub fn user_name(name: &str) -> Result<String, AppError> {
    // Bounded before normalizing, which can expand a character 18 times (or compose a few into
    // one, so the limit applies after it).
    if name.chars().nth(MAX_USER_NAME * 4).is_some() {
        return Err(AppError::Validation(format!(
            "name must be 1 to {MAX_USER_NAME} characters"
        )));
    }
    let name: String = name.nfkc().collect();
    length("name", &name, MAX_USER_NAME)?;
    if !name
        .chars()
        .all(|c| c.is_alphanumeric() || matches!(c, '_' | '-' | '.'))
    {
        return Err(AppError::Validation(
            "name may contain only letters, digits, '_', '-' and '.'".into(),
        ));
    }
    if !name.chars().all(GeneralSecurityProfile::identifier_allowed) {
        return Err(AppError::Validation(
            "name contains a character not allowed in names (an obsolete or special-use one)"
                .into(),
        ));
    }
    if !name
        .as_str()
        .check_restriction_level(RestrictionLevel::HighlyRestrictive)
    {
        return Err(AppError::Validation(
            "name mixes scripts (letters of one alphabet only, such as Latin or Cyrillic)".into(),
        ));
    }
    Ok(name)
}

/// What makes two user names the same name: the UTS 39 confusable skeleton of the lower-cased
/// name, so names that differ only in case or in look-alike characters (`ann`/`Ann`,
/// `alice`/`аlice`, `ace`/`асе`, `rn`/`m`, `l`/`1`) cannot both exist. Names are unique by this
/// key, not by their spelling. Expects a name [`user_name`] returned.
pub fn user_name_key(name: &str) -> String {
    let lower = name.to_lowercase();
    unicode_security::skeleton(&lower).collect()
}

/// A channel name: any printable text without leading or trailing spaces.
pub fn channel_name(name: &str) -> Result<(), AppError> {
    length("name", name, MAX_CHANNEL_NAME)?;
    if name.chars().any(char::is_control) || name.trim() != name {
        return Err(AppError::Validation(
            "name must be printable text without leading or trailing spaces".into(),
        ));
    }
    Ok(())
}

/// Message content: text with line breaks and tabs, not only whitespace.
pub fn content(content: &str) -> Result<(), AppError> {
    length("content", content, MAX_CONTENT)?;
    if content
        .chars()
        .any(|c| c.is_control() && !matches!(c, '\n' | '\r' | '\t'))
    {
        return Err(AppError::Validation(
            "content may not contain control characters".into(),
        ));
    }
    if content.trim().is_empty() {
        return Err(AppError::Validation("content may not be blank".into()));
    }
    Ok(())
}

/// A client nonce.
pub fn nonce(nonce: &str) -> Result<(), AppError> {
    length("nonce", nonce, MAX_NONCE)?;
    if nonce.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(AppError::Validation(
            "nonce may not contain whitespace or control characters".into(),
        ));
    }
    Ok(())
}

/// An emoji: a short string without whitespace or control characters.
pub fn emoji(emoji: &str) -> Result<(), AppError> {
    length("emoji", emoji, MAX_EMOJI)?;
    if emoji.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(AppError::Validation(
            "emoji may not contain whitespace or control characters".into(),
        ));
    }
    Ok(())
}

/// A ULID path or query parameter.
pub fn id(param: &str, value: &str) -> Result<Ulid, AppError> {
    if value.len() != ulid::ULID_LEN {
        return Err(AppError::InvalidParam(format!(
            "{param} must be a 26-character ULID"
        )));
    }
    // Only the canonical spelling (any case): the decoder also accepts values that overflow 128
    // bits and Crockford aliases, which would make two spellings name one id.
    Ulid::from_string(value)
        .ok()
        .filter(|id| id.to_string().eq_ignore_ascii_case(value))
        .ok_or_else(|| AppError::InvalidParam(format!("{param} must be a 26-character ULID")))
}

/// A page size: 1 to `max`, `default` when absent.
pub fn limit(value: Option<&str>, default: u32, max: u32) -> Result<u32, AppError> {
    let Some(value) = value else {
        return Ok(default);
    };
    match value.parse::<u32>() {
        Ok(n) if (1..=max).contains(&n) => Ok(n),
        _ => Err(AppError::InvalidParam(format!(
            "limit must be an integer from 1 to {max}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_names_are_normalized_and_single_script() {
        for ok in [
            "alice",
            "Zoë",
            "a-b.c_d9",
            "иван",
            "αλέξης",
            "山田太郎",
            "やまだ_taro",
            "김민준",
            "देवनागरी",
        ] {
            assert_eq!(user_name(ok).ok().as_deref(), Some(ok), "{ok}");
        }
        // Compatibility forms become their plain letters.
        assert_eq!(user_name("ａｌｉｃｅ").unwrap(), "alice");
        assert_eq!(user_name("ﬁle").unwrap(), "file");
        // A decomposed accent is composed.
        assert_eq!(user_name("Zoe\u{308}").unwrap(), "Zoë");
        for bad in [
            "\u{430}lice",  // Cyrillic а among Latin letters
            "p\u{430}ypal", // the same inside
            "\u{3b1}lpha",  // Greek α with Latin
            "ann\u{200b}",  // zero-width space
            "a\u{301}\u{301}\u{301}",
            "ᚠᚢᚦ", // runic: not for identifiers
        ] {
            assert!(user_name(bad).is_err(), "{bad:?} accepted");
        }
        // The length is checked on the normalized name.
        assert!(user_name(&"ａ".repeat(32)).is_ok());
        assert!(user_name(&"ａ".repeat(33)).is_err());
        assert!(user_name(&"\u{fdfa}".repeat(2)).is_err());
        assert!(matches!(
            user_name(&"x".repeat(1000)),
            Err(AppError::Validation(m)) if m == "name must be 1 to 32 characters"
        ));
    }

    #[test]
    fn look_alike_names_have_one_key() {
        let key = |n: &str| user_name_key(&user_name(n).unwrap());
        assert_eq!(key("alice"), key("ａｌｉｃｅ"));
        assert_eq!(key("alice"), key("Alice"));
        assert_eq!(key("ace"), key("\u{430}\u{441}\u{435}"), "all-Cyrillic асе");
        assert_eq!(key("modern"), key("rnodern"));
        assert_eq!(key("bob1"), key("bobl"));
        assert_ne!(key("alice"), key("alicia"));
        assert_ne!(key("ann"), key("anna"));
    }

    #[test]
    fn rules_hold() {
        assert!(user_name("ann").is_ok());
        assert!(user_name("").is_err());
        assert!(user_name("a b").is_err());
        assert!(user_name(&"x".repeat(33)).is_err());
        assert!(channel_name("general chat").is_ok());
        assert!(channel_name(" padded").is_err());
        assert!(content("hi\nthere").is_ok());
        assert!(content("   ").is_err());
        assert!(content("nul\0").is_err());
        assert!(content(&"é".repeat(2000)).is_ok());
        assert!(content(&"é".repeat(2001)).is_err());
        assert!(emoji("👍").is_ok());
        assert!(emoji("a b").is_err());
        assert!(id("before", "01ARZ3NDEKTSV4RRFFQ69G5FAV").is_ok());
        assert!(id("before", "not-a-ulid").is_err());
        assert!(id("before", "ZZZZZZZZZZZZZZZZZZZZZZZZZZ").is_err());
        assert_eq!(
            id("before", "01arz3ndektsv4rrffq69g5fav")
                .unwrap()
                .to_string(),
            "01ARZ3NDEKTSV4RRFFQ69G5FAV"
        );
        assert_eq!(limit(None, 50, 100).unwrap(), 50);
        assert!(limit(Some("0"), 50, 100).is_err());
        assert!(limit(Some("101"), 50, 100).is_err());
        assert!(limit(Some("99999999999999999999"), 50, 100).is_err());
        assert!(limit(Some("-1"), 50, 100).is_err());
    }
}

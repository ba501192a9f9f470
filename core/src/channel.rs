//! Channel names and kinds.
//!
//! A [`ChannelName`] is validated once, when it is parsed, and its kind is decided by an
//! anchored prefix match, longest prefix first.

use std::borrow::Borrow;
use std::fmt;
use std::sync::Arc;

use crate::error::ChannelNameError;

/// Prefix of the per-user channels that need sign-in.
const USER_CHANNEL_PREFIX: &str = "#server-to-user-";

/// The kind of a channel, which decides what subscribers need and what they may send.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ChannelKind {
    /// Anyone may subscribe; no client events.
    Public,
    /// `private-`: subscription needs a signature; client events allowed.
    Private,
    /// `private-encrypted-`: signed like private; data is relayed opaque; no client events.
    Encrypted,
    /// `presence-`: signature plus `channel_data`; members are tracked.
    Presence,
    /// `#server-to-user-{id}`: only the signed-in user `id` may subscribe.
    User,
}

/// A validated channel name. Cloning shares one allocation.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ChannelName(Arc<str>);

impl ChannelName {
    /// Validates `name` against the character set and the length limit `max_bytes`.
    pub fn parse(name: &str, max_bytes: usize) -> Result<Self, ChannelNameError> {
        if name.is_empty() {
            return Err(ChannelNameError::Empty);
        }
        if name.len() > max_bytes {
            return Err(ChannelNameError::TooLong {
                len: name.len(),
                max: max_bytes,
            });
        }
        let rest = match name.strip_prefix(USER_CHANNEL_PREFIX) {
            Some("") => return Err(ChannelNameError::ReservedName),
            Some(user_id) => user_id,
            None if name.starts_with('#') => return Err(ChannelNameError::ReservedName),
            None => name,
        };
        if !rest.bytes().all(is_channel_byte) {
            return Err(ChannelNameError::InvalidCharacter);
        }
        Ok(Self(Arc::from(name)))
    }

    /// Returns the name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Returns the channel's kind.
    pub fn kind(&self) -> ChannelKind {
        let name = self.as_str();
        if name.starts_with("private-encrypted-") {
            ChannelKind::Encrypted
        } else if name.starts_with("private-") {
            ChannelKind::Private
        } else if name.starts_with("presence-") {
            ChannelKind::Presence
        } else if name.starts_with(USER_CHANNEL_PREFIX) {
            ChannelKind::User
        } else {
            ChannelKind::Public
        }
    }

    /// Returns whether the channel keeps its last event for new subscribers (`cache-` forms).
    pub fn is_cache(&self) -> bool {
        let name = self.as_str();
        [
            "cache-",
            "private-cache-",
            "private-encrypted-cache-",
            "presence-cache-",
        ]
        .iter()
        .any(|prefix| name.starts_with(prefix))
    }
}

impl Borrow<str> for ChannelName {
    fn borrow(&self) -> &str {
        self.as_str()
    }
}

impl fmt::Debug for ChannelName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for ChannelName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

fn is_channel_byte(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || matches!(byte, b'_' | b'-' | b'=' | b'@' | b',' | b'.' | b';')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind(name: &str) -> ChannelKind {
        ChannelName::parse(name, 200).unwrap().kind()
    }

    #[test]
    fn kinds_match_anchored_prefixes() {
        assert_eq!(kind("orders"), ChannelKind::Public);
        assert_eq!(kind("cache-ticker"), ChannelKind::Public);
        assert_eq!(kind("private-orders"), ChannelKind::Private);
        assert_eq!(kind("private-cache-orders"), ChannelKind::Private);
        assert_eq!(kind("private-encrypted-vault"), ChannelKind::Encrypted);
        assert_eq!(
            kind("private-encrypted-cache-vault"),
            ChannelKind::Encrypted
        );
        assert_eq!(kind("presence-lobby"), ChannelKind::Presence);
        assert_eq!(kind("presence-cache-lobby"), ChannelKind::Presence);
        assert_eq!(kind("#server-to-user-u-1"), ChannelKind::User);
        // Prefixes in the middle of a name, or without the dash, do not count.
        assert_eq!(kind("my-private-orders"), ChannelKind::Public);
        assert_eq!(kind("privateorders"), ChannelKind::Public);
        assert_eq!(kind("presence"), ChannelKind::Public);
    }

    #[test]
    fn cache_forms_are_detected() {
        assert!(ChannelName::parse("cache-a", 200).unwrap().is_cache());
        assert!(
            ChannelName::parse("presence-cache-a", 200)
                .unwrap()
                .is_cache()
        );
        assert!(!ChannelName::parse("a-cache-a", 200).unwrap().is_cache());
    }

    #[test]
    fn names_are_validated() {
        assert!(ChannelName::parse("a_b-c=d@e,f.g;h", 200).is_ok());
        assert_eq!(ChannelName::parse("", 200), Err(ChannelNameError::Empty));
        assert_eq!(
            ChannelName::parse("bad channel", 200),
            Err(ChannelNameError::InvalidCharacter)
        );
        assert_eq!(
            ChannelName::parse("caf\u{e9}", 200),
            Err(ChannelNameError::InvalidCharacter)
        );
        assert_eq!(
            ChannelName::parse("a:b", 200),
            Err(ChannelNameError::InvalidCharacter)
        );
        assert_eq!(
            ChannelName::parse(&"a".repeat(201), 200),
            Err(ChannelNameError::TooLong { len: 201, max: 200 })
        );
        assert!(ChannelName::parse(&"a".repeat(200), 200).is_ok());
        assert_eq!(
            ChannelName::parse("#other", 200),
            Err(ChannelNameError::ReservedName)
        );
        assert_eq!(
            ChannelName::parse("#server-to-user-", 200),
            Err(ChannelNameError::ReservedName)
        );
        assert_eq!(
            ChannelName::parse("#server-to-user-a#b", 200),
            Err(ChannelNameError::InvalidCharacter)
        );
    }
}

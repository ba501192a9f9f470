//! Presence rosters: one member per `user_id`, however many sockets the user has open.
//!
//! A member is added by its user's first socket and removed after the last one leaves, so
//! `member_added` and `member_removed` fire once per user, not once per socket.

use std::collections::BTreeMap;
use std::collections::btree_map::Entry;
use std::sync::Arc;

use serde::Deserialize;
use serde_json::value::RawValue;

use crate::config::Limits;
use crate::error::SubscribeError;

/// A presence user id, always in string form (numbers are converted to their JSON text).
pub(crate) type UserId = Arc<str>;

/// The member a presence subscription adds, parsed from `channel_data`.
#[derive(Debug)]
pub(crate) struct MemberData {
    pub(crate) user_id: UserId,
    pub(crate) user_info: Option<Box<RawValue>>,
}

impl MemberData {
    /// Parses `channel_data`: a JSON object with a string or number `user_id` and an optional
    /// `user_info` of any JSON type.
    pub(crate) fn parse(channel_data: &str, limits: &Limits) -> Result<Self, SubscribeError> {
        #[derive(Deserialize)]
        struct ChannelData {
            user_id: Box<RawValue>,
            #[serde(default)]
            user_info: Option<Box<RawValue>>,
        }
        if !crate::frame::is_json_object(channel_data) {
            return Err(SubscribeError::InvalidChannelData);
        }
        let data: ChannelData =
            serde_json::from_str(channel_data).map_err(|_| SubscribeError::InvalidChannelData)?;
        let raw_id = data.user_id.get();
        let user_id = match raw_id.as_bytes().first() {
            Some(b'"') => serde_json::from_str::<String>(raw_id)
                .map_err(|_| SubscribeError::InvalidChannelData)?,
            Some(b'-' | b'0'..=b'9') => raw_id.to_owned(),
            _ => return Err(SubscribeError::InvalidChannelData),
        };
        if user_id.is_empty() {
            return Err(SubscribeError::InvalidChannelData);
        }
        let max_id = limits.max_presence_user_id_bytes;
        if user_id.len() > max_id {
            return Err(SubscribeError::InvalidUserId { max: max_id });
        }
        let max_info = limits.max_presence_user_info_bytes;
        if data
            .user_info
            .as_ref()
            .is_some_and(|info| info.get().len() > max_info)
        {
            return Err(SubscribeError::UserInfoTooLarge { max: max_info });
        }
        Ok(Self {
            user_id: Arc::from(user_id),
            user_info: data.user_info,
        })
    }
}

#[derive(Debug)]
struct Member {
    /// The first socket's `user_info`, kept until the user leaves entirely.
    info: Option<Box<RawValue>>,
    sockets: u32,
}

/// The members of one presence channel.
#[derive(Debug, Default)]
pub(crate) struct Roster {
    members: BTreeMap<UserId, Member>,
}

impl Roster {
    /// Returns the number of distinct users.
    pub(crate) fn len(&self) -> usize {
        self.members.len()
    }

    pub(crate) fn contains(&self, user_id: &str) -> bool {
        self.members.contains_key(user_id)
    }

    /// Adds one socket of `member`; returns `true` when the user was not a member before.
    pub(crate) fn join(&mut self, member: MemberData) -> bool {
        match self.members.entry(member.user_id) {
            Entry::Occupied(mut entry) => {
                entry.get_mut().sockets += 1;
                false
            }
            Entry::Vacant(entry) => {
                entry.insert(Member {
                    info: member.user_info,
                    sockets: 1,
                });
                true
            }
        }
    }

    /// Removes one socket of `user_id`; returns `true` when that was the user's last socket.
    pub(crate) fn leave(&mut self, user_id: &str) -> bool {
        let Some(member) = self.members.get_mut(user_id) else {
            return false;
        };
        member.sockets -= 1;
        if member.sockets == 0 {
            self.members.remove(user_id);
            return true;
        }
        false
    }

    /// Returns the `user_info` stored for a member.
    pub(crate) fn user_info(&self, user_id: &str) -> Option<&RawValue> {
        self.members.get(user_id)?.info.as_deref()
    }

    /// Iterates over `(user_id, user_info)` in user id order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (&str, Option<&RawValue>)> + Clone {
        self.members
            .iter()
            .map(|(id, member)| (id.as_ref(), member.info.as_deref()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(data: &str) -> Result<MemberData, SubscribeError> {
        MemberData::parse(data, &Limits::default())
    }

    #[test]
    fn user_id_string_or_number() {
        assert_eq!(&*member(r#"{"user_id":"u-1"}"#).unwrap().user_id, "u-1");
        assert_eq!(&*member(r#"{"user_id":77}"#).unwrap().user_id, "77");
        assert_eq!(
            &*member(r#"{"user_id":"J\u00fcrgen"}"#).unwrap().user_id,
            "J\u{fc}rgen"
        );
        for bad in [
            r#"{"user_id":null}"#,
            r#"{"user_id":true}"#,
            r#"{"user_id":{}}"#,
            r#"{"user_info":{}}"#,
            r#"[]"#,
            r#"[1,2]"#,
            r#"["u-1",{"name":"Ada"}]"#,
            "not json",
        ] {
            assert_eq!(
                member(bad).unwrap_err(),
                SubscribeError::InvalidChannelData,
                "{bad}"
            );
        }
    }

    #[test]
    fn user_id_and_info_limits() {
        let long_id = format!(r#"{{"user_id":"{}"}}"#, "a".repeat(129));
        assert_eq!(
            member(&long_id).unwrap_err(),
            SubscribeError::InvalidUserId { max: 128 }
        );
        assert_eq!(
            member(r#"{"user_id":""}"#).unwrap_err(),
            SubscribeError::InvalidChannelData
        );
        let big_info = format!(r#"{{"user_id":"a","user_info":"{}"}}"#, "x".repeat(1023));
        assert_eq!(
            member(&big_info).unwrap_err(),
            SubscribeError::UserInfoTooLarge { max: 1024 }
        );
        let info_at_limit = format!(r#"{{"user_id":"a","user_info":"{}"}}"#, "x".repeat(1022));
        assert!(member(&info_at_limit).is_ok());
    }

    #[test]
    fn roster_counts_users_not_sockets() {
        let mut roster = Roster::default();
        assert!(roster.join(member(r#"{"user_id":"a","user_info":{"n":1}}"#).unwrap()));
        assert!(!roster.join(member(r#"{"user_id":"a","user_info":{"n":2}}"#).unwrap()));
        assert!(roster.join(member(r#"{"user_id":"b"}"#).unwrap()));
        assert_eq!(roster.len(), 2);
        assert_eq!(roster.user_info("a").unwrap().get(), r#"{"n":1}"#);
        assert_eq!(
            crate::frame::presence_data(roster.iter()),
            r#"{"presence":{"ids":["a","b"],"hash":{"a":{"n":1},"b":null},"count":2}}"#
        );
        assert!(!roster.leave("a"));
        assert!(roster.leave("a"));
        assert!(!roster.leave("a"));
        assert_eq!(roster.len(), 1);
    }
}

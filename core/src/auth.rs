//! HMAC-SHA256 signatures: subscription `auth` values and HTTP API request signing.
//!
//! Every comparison of a presented signature with the expected one runs in constant time.

use hmac::{Hmac, KeyInit, Mac};
use md5::{Digest, Md5};
use sha2::Sha256;
use subtle::ConstantTimeEq;

use crate::config::AppConfig;
use crate::error::{ApiError, SubscribeError};

type HmacSha256 = Hmac<Sha256>;

/// Maximum distance in seconds between `auth_timestamp` and the server clock, exclusive.
const TIMESTAMP_WINDOW_SECS: u64 = 600;

/// Returns the lower-case hex HMAC-SHA256 of `message` keyed with `secret`.
pub fn sign_hex(secret: &str, message: &[u8]) -> String {
    let mut mac = HmacSha256::new_from_slice(secret.as_bytes()).expect("HMAC takes any key size");
    mac.update(message);
    to_hex(&mac.finalize().into_bytes())
}

/// Checks in constant time that `presented` is the lower-case hex HMAC-SHA256 of `message`.
pub fn verify_hex(secret: &str, message: &[u8], presented: &str) -> bool {
    let expected = sign_hex(secret, message);
    expected.as_bytes().ct_eq(presented.as_bytes()).into()
}

/// Returns the `auth` value (`key:hex`) a subscription to `channel` on `socket_id` needs.
///
/// `channel_data` is part of the signed string whenever the subscribe frame carries it.
pub fn sign_channel(
    key: &str,
    secret: &str,
    socket_id: &str,
    channel: &str,
    channel_data: Option<&str>,
) -> String {
    let message = channel_string_to_sign(socket_id, channel, channel_data);
    format!("{key}:{}", sign_hex(secret, message.as_bytes()))
}

/// Returns `auth_signature` for an API request whose query string (without `auth_signature`)
/// is `raw_query`, or `None` when the query string is invalid.
pub fn sign_api_request(secret: &str, method: &str, path: &str, raw_query: &str) -> Option<String> {
    let query = Query::parse(raw_query).ok()?;
    let message = api_string_to_sign(method, path, &query);
    Some(sign_hex(secret, message.as_bytes()))
}

pub(crate) fn channel_string_to_sign(
    socket_id: &str,
    channel: &str,
    channel_data: Option<&str>,
) -> String {
    match channel_data {
        Some(data) => format!("{socket_id}:{channel}:{data}"),
        None => format!("{socket_id}:{channel}"),
    }
}

/// Verifies a subscription `auth` value against the string it must sign.
pub(crate) fn verify_channel_auth(
    app: &AppConfig,
    string_to_sign: String,
    presented: Option<&str>,
) -> Result<(), SubscribeError> {
    let presented = match presented {
        None | Some("") => return Err(SubscribeError::MissingAuth),
        Some(auth) => auth,
    };
    let Some((key, signature)) = presented.split_once(':') else {
        return Err(SubscribeError::InvalidKey);
    };
    if key != app.key {
        return Err(SubscribeError::InvalidKey);
    }
    if verify_hex(app.secret.expose(), string_to_sign.as_bytes(), signature) {
        Ok(())
    } else {
        Err(SubscribeError::InvalidSignature {
            string_to_sign,
            presented: crate::error::truncate(signature, 128).to_owned(),
        })
    }
}

/// Verifies the `auth_*` parameters and `body_md5` of an HTTP API request.
pub(crate) fn verify_api_request(
    app: &AppConfig,
    method: &str,
    path: &str,
    query: &Query,
    body: &[u8],
    unix_secs: u64,
) -> Result<(), ApiError> {
    let key = query.required("auth_key")?;
    if key != app.key {
        return Err(ApiError::InvalidAuthKey);
    }
    let signature = query.required("auth_signature")?;
    let message = api_string_to_sign(method, path, query);
    if !verify_hex(app.secret.expose(), message.as_bytes(), signature) {
        return Err(ApiError::InvalidSignature);
    }
    if query.required("auth_version")? != "1.0" {
        return Err(ApiError::InvalidAuthVersion);
    }
    let timestamp: u64 = query
        .required("auth_timestamp")?
        .parse()
        .map_err(|_| ApiError::TimestampExpired)?;
    if timestamp.abs_diff(unix_secs) >= TIMESTAMP_WINDOW_SECS {
        return Err(ApiError::TimestampExpired);
    }
    match query.get("body_md5") {
        None if !body.is_empty() => Err(ApiError::MissingBodyMd5),
        None => Ok(()),
        Some(md5) if md5 == to_hex(&Md5::digest(body)) => Ok(()),
        Some(_) => Err(ApiError::BodyMd5Mismatch),
    }
}

fn api_string_to_sign(method: &str, path: &str, query: &Query) -> String {
    let mut message = method.to_ascii_uppercase();
    message.push('\n');
    message.push_str(path);
    message.push('\n');
    let mut first = true;
    for (key, value) in &query.params {
        if key == "auth_signature" {
            continue;
        }
        match value {
            QueryValue::One(value) => push_pair(&mut message, &mut first, key, "", value),
            QueryValue::Many(values) => {
                for value in values {
                    push_pair(&mut message, &mut first, key, "[]", value);
                }
            }
        }
    }
    message
}

fn push_pair(out: &mut String, first: &mut bool, key: &str, suffix: &str, value: &str) {
    if !*first {
        out.push('&');
    }
    *first = false;
    out.push_str(key);
    out.push_str(suffix);
    out.push('=');
    out.push_str(value);
}

/// A decoded query string: keys lower-cased and sorted, repeated `key[]` grouped in order.
#[derive(Debug, Default)]
pub(crate) struct Query {
    params: std::collections::BTreeMap<String, QueryValue>,
}

#[derive(Debug)]
enum QueryValue {
    One(String),
    Many(Vec<String>),
}

impl Query {
    /// Parses `raw` (without the `?`). A plain key given twice is rejected, because the two
    /// readings of it would sign different strings.
    pub(crate) fn parse(raw: &str) -> Result<Self, ApiError> {
        let mut query = Self::default();
        for pair in raw.split('&').filter(|pair| !pair.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            let key = percent_decode(key)?.to_ascii_lowercase();
            let value = percent_decode(value)?;
            match key.strip_suffix("[]") {
                Some(base) => match query.params.get_mut(base) {
                    Some(QueryValue::Many(values)) => values.push(value),
                    Some(QueryValue::One(_)) => {
                        return Err(ApiError::InvalidParam("a query parameter is repeated"));
                    }
                    None => {
                        query
                            .params
                            .insert(base.to_owned(), QueryValue::Many(vec![value]));
                    }
                },
                None => {
                    if query.params.insert(key, QueryValue::One(value)).is_some() {
                        return Err(ApiError::InvalidParam("a query parameter is repeated"));
                    }
                }
            }
        }
        Ok(query)
    }

    /// Returns a single-valued parameter.
    pub(crate) fn get(&self, key: &str) -> Option<&str> {
        match self.params.get(key)? {
            QueryValue::One(value) => Some(value),
            QueryValue::Many(_) => None,
        }
    }

    /// Returns an array parameter given as `key[]=a&key[]=b`.
    pub(crate) fn get_array(&self, key: &str) -> Option<&[String]> {
        match self.params.get(key)? {
            QueryValue::Many(values) => Some(values),
            QueryValue::One(_) => None,
        }
    }

    fn required(&self, key: &'static str) -> Result<&str, ApiError> {
        self.get(key).ok_or(ApiError::MissingAuthParam(key))
    }
}

/// Decodes `%XX` escapes and `+` as a space, as in a query string.
fn percent_decode(text: &str) -> Result<String, ApiError> {
    String::from_utf8(percent_decode_bytes(text, true)).map_err(|_| ApiError::InvalidQueryString)
}

/// Decodes `%XX` escapes, and `+` as a space when `plus_is_space` (query strings, not paths).
/// A `%` not followed by two hex digits is kept as it is.
pub(crate) fn percent_decode_bytes(text: &str, plus_is_space: bool) -> Vec<u8> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' if plus_is_space => out.push(b' '),
            b'%' => {
                let high = bytes.get(i + 1).copied().and_then(hex_value);
                let low = bytes.get(i + 2).copied().and_then(hex_value);
                match (high, low) {
                    (Some(high), Some(low)) => {
                        out.push(high << 4 | low);
                        i += 2;
                    }
                    _ => out.push(b'%'),
                }
            }
            byte => out.push(byte),
        }
        i += 1;
    }
    out
}

fn hex_value(byte: u8) -> Option<u8> {
    match byte {
        b'0'..=b'9' => Some(byte - b'0'),
        b'a'..=b'f' => Some(byte - b'a' + 10),
        b'A'..=b'F' => Some(byte - b'A' + 10),
        _ => None,
    }
}

pub(crate) fn to_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        out.push(DIGITS[usize::from(byte >> 4)] as char);
        out.push(DIGITS[usize::from(byte & 0xf)] as char);
    }
    out
}

#[cfg(test)]
mod tests;

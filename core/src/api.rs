//! The HTTP API as values: routing, request verification, parameter checks and responses.
//!
//! [`Node::handle_api`] returns the response directly; events it publishes are queued as
//! [`Output`](crate::Output)s like any other.

use std::sync::Arc;
use std::time::Instant;

use log::debug;
use serde_json::{Map, Value, json};

use crate::auth::{Query, percent_decode_bytes, verify_api_request};
use crate::channel::{ChannelKind, ChannelName};
use crate::config::Limits;
use crate::connection::SocketId;
use crate::error::ApiError;
use crate::frame;
use crate::node::Node;

/// One HTTP API request as received.
#[derive(Clone, Copy, Debug)]
pub struct ApiRequest<'a> {
    /// HTTP method, such as `GET`.
    pub method: &'a str,
    /// Path as received, not percent-decoded, without the query string.
    pub path: &'a str,
    /// Query string as received, without the `?`.
    pub query: &'a str,
    /// Raw request body.
    pub body: &'a [u8],
}

/// The response to an HTTP API request: a status and a JSON body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiResponse {
    /// HTTP status code.
    pub status: u16,
    /// JSON body.
    pub body: String,
}

impl ApiResponse {
    fn ok(body: Value) -> Self {
        Self {
            status: 200,
            body: body.to_string(),
        }
    }
}

impl From<ApiError> for ApiResponse {
    fn from(error: ApiError) -> Self {
        Self {
            status: error.status(),
            body: error.body(),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Route<'a> {
    Events,
    BatchEvents,
    Channels,
    Channel(&'a str),
    Users(&'a str),
}

impl<'a> Route<'a> {
    /// Splits `/apps/{app_id}/...` into the app id and the route.
    fn parse(path: &'a str) -> Result<(&'a str, Self), ApiError> {
        let rest = path.strip_prefix("/apps/").ok_or(ApiError::PathNotFound)?;
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        let mut parts = rest.split('/');
        let app_id = parts
            .next()
            .filter(|id| !id.is_empty())
            .ok_or(ApiError::PathNotFound)?;
        let route = match (parts.next(), parts.next(), parts.next(), parts.next()) {
            (Some("events"), None, None, None) => Self::Events,
            (Some("batch_events"), None, None, None) => Self::BatchEvents,
            (Some("channels"), None, None, None) => Self::Channels,
            (Some("channels"), Some(name), None, None) => Self::Channel(name),
            (Some("channels"), Some(name), Some("users"), None) => Self::Users(name),
            _ => return Err(ApiError::PathNotFound),
        };
        Ok((app_id, route))
    }

    fn method(self) -> &'static str {
        match self {
            Self::Events | Self::BatchEvents => "POST",
            Self::Channels | Self::Channel(_) | Self::Users(_) => "GET",
        }
    }
}

/// The counts a response carries.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Info {
    user_count: bool,
    subscription_count: bool,
}

impl Info {
    /// Parses a comma-separated `info` value; `allowed` lists the attributes the endpoint has.
    fn parse(text: Option<&str>, allowed: &[&str]) -> Result<Self, ApiError> {
        let mut info = Self::default();
        for attribute in text.unwrap_or("").split(',').map(str::trim) {
            if attribute.is_empty() {
                continue;
            }
            if !allowed.contains(&attribute) {
                return Err(ApiError::InvalidInfo(attribute.to_owned()));
            }
            match attribute {
                "user_count" => info.user_count = true,
                "subscription_count" => info.subscription_count = true,
                _ => return Err(ApiError::InvalidInfo(attribute.to_owned())),
            }
        }
        Ok(info)
    }

    fn is_empty(self) -> bool {
        !self.user_count && !self.subscription_count
    }
}

/// One event to publish, validated.
#[derive(Debug)]
struct Publish {
    name: String,
    data: String,
    channels: Vec<ChannelName>,
    socket_id: Option<SocketId>,
    info: Info,
}

impl Publish {
    /// Validates one event object. Size is checked last, so a 413 means nothing else is wrong.
    fn parse(
        event: &Map<String, Value>,
        limits: &Limits,
        in_batch: bool,
    ) -> Result<Self, ApiError> {
        let name = match event.get("name") {
            Some(Value::String(name)) => name.clone(),
            Some(_) => return Err(ApiError::InvalidParam("name must be a string")),
            None => return Err(ApiError::MissingParam("name")),
        };
        let max_name = limits.max_event_name_bytes;
        if name.is_empty() || name.len() > max_name {
            return Err(ApiError::InvalidEventName { max: max_name });
        }
        if name.starts_with("pusher:") || name.starts_with("pusher_internal:") {
            return Err(ApiError::ReservedEventName);
        }
        let data = match event.get("data") {
            Some(Value::String(data)) => data.clone(),
            Some(value) => value.to_string(),
            None => return Err(ApiError::MissingParam("data")),
        };
        let channels = parse_channels(event, limits, in_batch)?;
        let socket_id = match event.get("socket_id") {
            None | Some(Value::Null) => None,
            Some(Value::String(text)) => Some(text.parse().map_err(|_| ApiError::InvalidSocketId)?),
            Some(_) => return Err(ApiError::InvalidSocketId),
        };
        let info = match event.get("info") {
            None | Some(Value::Null) => Info::default(),
            Some(Value::String(text)) => {
                Info::parse(Some(text), &["user_count", "subscription_count"])?
            }
            Some(_) => {
                return Err(ApiError::InvalidParam(
                    "info must be a comma-separated string",
                ));
            }
        };
        if data.len() > limits.max_event_data_bytes {
            return Err(ApiError::DataTooLarge {
                max: limits.max_event_data_bytes,
            });
        }
        Ok(Self {
            name,
            data,
            channels,
            socket_id,
            info,
        })
    }
}

fn parse_channels(
    event: &Map<String, Value>,
    limits: &Limits,
    in_batch: bool,
) -> Result<Vec<ChannelName>, ApiError> {
    let names: Vec<&str> = match (event.get("channels"), event.get("channel")) {
        (Some(_), _) if in_batch => return Err(ApiError::BatchEventWithChannels),
        (Some(Value::Array(list)), _) => list
            .iter()
            .map(|name| {
                name.as_str()
                    .ok_or(ApiError::InvalidParam("channels must be strings"))
            })
            .collect::<Result<_, _>>()?,
        (Some(_), _) => return Err(ApiError::InvalidParam("channels must be an array")),
        (None, Some(Value::String(name))) => vec![name.as_str()],
        (None, Some(_)) => return Err(ApiError::InvalidParam("channel must be a string")),
        (None, None) => return Err(ApiError::MissingParam("channel or channels")),
    };
    if names.is_empty() {
        return Err(ApiError::MissingParam("channel or channels"));
    }
    let max = limits.max_channels_per_trigger;
    if names.len() > max {
        return Err(ApiError::TooManyChannels { max });
    }
    let mut channels = Vec::with_capacity(names.len());
    for name in names {
        let channel = ChannelName::parse(name, limits.max_channel_name_bytes)
            .map_err(ApiError::InvalidChannel)?;
        if !channels.contains(&channel) {
            channels.push(channel);
        }
    }
    let encrypted = channels.iter().any(|c| c.kind() == ChannelKind::Encrypted);
    if encrypted && channels.len() > 1 {
        return Err(ApiError::EncryptedMultiChannel);
    }
    Ok(channels)
}

/// Builds the event object of the legacy form, where parameters travel in the query string.
fn event_from_query(query: &Query) -> Map<String, Value> {
    let mut event = Map::new();
    for key in ["name", "data", "channel", "socket_id", "info"] {
        if let Some(value) = query.get(key) {
            event.insert(key.to_owned(), Value::String(value.to_owned()));
        }
    }
    if let Some(channels) = query.get_array("channels") {
        event.insert("channels".to_owned(), json!(channels));
    }
    event
}

fn parse_json_object(body: &[u8]) -> Result<Map<String, Value>, ApiError> {
    match serde_json::from_slice(body) {
        Ok(Value::Object(object)) => Ok(object),
        _ => Err(ApiError::InvalidJson),
    }
}

/// Percent-decodes a channel name taken from a path segment, where `+` is a plain `+`.
fn decode_path_segment(segment: &str) -> Result<String, ApiError> {
    String::from_utf8(percent_decode_bytes(segment, false))
        .map_err(|_| ApiError::InvalidParam("channel name is not UTF-8"))
}

impl Node {
    /// Handles one HTTP API request and returns its response. Events it publishes are queued
    /// as outputs: drain [`Node::poll_output`] afterwards.
    ///
    /// `unix_secs` is the wall-clock time, checked against `auth_timestamp`.
    pub fn handle_api(
        &mut self,
        now: Instant,
        unix_secs: u64,
        request: &ApiRequest<'_>,
    ) -> ApiResponse {
        match self.try_handle_api(now, unix_secs, request) {
            Ok(body) => ApiResponse::ok(body),
            Err(error) => {
                debug!(
                    "API request rejected: {} {} status={} {error}",
                    request.method,
                    request.path,
                    error.status()
                );
                error.into()
            }
        }
    }

    fn try_handle_api(
        &mut self,
        _now: Instant,
        unix_secs: u64,
        request: &ApiRequest<'_>,
    ) -> Result<Value, ApiError> {
        let (app_id, route) = Route::parse(request.path)?;
        if !request.method.eq_ignore_ascii_case(route.method()) {
            return Err(ApiError::MethodNotAllowed);
        }
        if self.config.app.id.as_deref().is_some_and(|id| id != app_id) {
            return Err(ApiError::AppNotFound);
        }
        let limits = &self.config.limits;
        if request.body.len() > limits.max_api_body_bytes {
            return Err(ApiError::BodyTooLarge {
                max: limits.max_api_body_bytes,
            });
        }
        let query = Query::parse(request.query)?;
        verify_api_request(
            &self.config.app,
            request.method,
            request.path,
            &query,
            request.body,
            unix_secs,
        )?;

        match route {
            Route::Events => self.api_events(&query, request.body),
            Route::BatchEvents => self.api_batch_events(request.body),
            Route::Channels => self.api_channels(&query),
            Route::Channel(name) => self.api_channel(&query, name),
            Route::Users(name) => self.api_users(name),
        }
    }

    fn api_events(&mut self, query: &Query, body: &[u8]) -> Result<Value, ApiError> {
        let event = if body.is_empty() {
            event_from_query(query)
        } else {
            parse_json_object(body)?
        };
        let publish = Publish::parse(&event, &self.config.limits, false)?;
        self.publish(&publish);
        if publish.info.is_empty() {
            return Ok(json!({}));
        }
        let mut channels = Map::new();
        for channel in &publish.channels {
            channels.insert(
                channel.to_string(),
                self.channel_counts(channel, publish.info),
            );
        }
        Ok(json!({ "channels": channels }))
    }

    fn api_batch_events(&mut self, body: &[u8]) -> Result<Value, ApiError> {
        let mut object = parse_json_object(body)?;
        let Some(Value::Array(batch)) = object.remove("batch") else {
            return Err(ApiError::MissingParam("batch"));
        };
        let max = self.config.limits.max_batch_events;
        if batch.len() > max {
            return Err(ApiError::TooManyEvents { max });
        }
        let mut events = Vec::with_capacity(batch.len());
        let mut too_large = None;
        for event in &batch {
            let Value::Object(event) = event else {
                return Err(ApiError::InvalidParam("batch entries must be objects"));
            };
            match Publish::parse(event, &self.config.limits, true) {
                Ok(publish) => events.push(publish),
                Err(error @ ApiError::DataTooLarge { .. }) => too_large = Some(error),
                Err(error) => return Err(error),
            }
        }
        if let Some(error) = too_large {
            return Err(error);
        }
        for publish in &events {
            self.publish(publish);
        }
        if events.iter().all(|publish| publish.info.is_empty()) {
            return Ok(json!({}));
        }
        let attributes: Vec<Value> = events
            .iter()
            .map(|publish| match publish.channels.first() {
                Some(channel) => self.channel_counts(channel, publish.info),
                None => json!({}),
            })
            .collect();
        Ok(json!({ "batch": attributes }))
    }

    fn api_channels(&self, query: &Query) -> Result<Value, ApiError> {
        let prefix = query.get("filter_by_prefix").unwrap_or("");
        let info = Info::parse(query.get("info"), &["user_count", "subscription_count"])?;
        if info.user_count && !prefix.starts_with("presence-") {
            return Err(ApiError::UserCountRequiresPresence);
        }
        let mut channels = Map::new();
        let occupied = self.occupied_channels();
        let matching = occupied
            .into_iter()
            .filter(|name| name.as_str().starts_with(prefix))
            .filter(|name| name.kind() != ChannelKind::User);
        for name in matching {
            channels.insert(name.to_string(), self.channel_counts(name, info));
        }
        Ok(json!({ "channels": channels }))
    }

    fn api_channel(&self, query: &Query, raw_name: &str) -> Result<Value, ApiError> {
        let channel = self.path_channel(raw_name)?;
        // NOTE: cache channels keep no last event yet, so `info=cache` is rejected as unknown.
        let info = Info::parse(query.get("info"), &["user_count", "subscription_count"])?;
        if info.user_count && channel.kind() != ChannelKind::Presence {
            return Err(ApiError::UserCountRequiresPresence);
        }
        let occupied = self.subscription_count(channel.as_str()) > 0;
        let mut body = Map::new();
        body.insert("occupied".to_owned(), Value::Bool(occupied));
        if let Value::Object(counts) = self.channel_counts(&channel, info) {
            body.extend(counts);
        }
        Ok(Value::Object(body))
    }

    fn api_users(&self, raw_name: &str) -> Result<Value, ApiError> {
        let channel = self.path_channel(raw_name)?;
        if channel.kind() != ChannelKind::Presence {
            return Err(ApiError::NotPresenceChannel);
        }
        let users: Vec<Value> = self
            .members(channel.as_str())
            .into_keys()
            .map(|id| json!({ "id": id }))
            .collect();
        Ok(json!({ "users": users }))
    }

    fn path_channel(&self, raw_name: &str) -> Result<ChannelName, ApiError> {
        let name = decode_path_segment(raw_name)?;
        ChannelName::parse(&name, self.config.limits.max_channel_name_bytes)
            .map_err(ApiError::InvalidChannel)
    }

    /// Returns the requested counts of a channel as a JSON object (zeros when unoccupied).
    fn channel_counts(&self, channel: &ChannelName, info: Info) -> Value {
        let mut counts = Map::new();
        if info.user_count && channel.kind() == ChannelKind::Presence {
            let users = self.members(channel.as_str()).len();
            counts.insert("user_count".to_owned(), users.into());
        }
        if info.subscription_count {
            let sockets = self.subscription_count(channel.as_str());
            counts.insert("subscription_count".to_owned(), sockets.into());
        }
        Value::Object(counts)
    }

    /// Queues the event for every subscriber of its channels, minus the excluded socket.
    fn publish(&mut self, publish: &Publish) {
        let except = publish
            .socket_id
            .and_then(|socket_id| self.sockets.get(&socket_id).copied());
        for channel in &publish.channels {
            // NOTE: `#server-to-user-` events need user sign-in, so they reach no socket yet.
            let frame: Arc<str> =
                frame::api_event(&publish.name, channel.as_str(), &publish.data).into();
            let delivered = self.broadcast(channel, except, &frame);
            debug!("event published: channel={channel} recipients={delivered}");
            let except = publish.socket_id.map(|socket_id| socket_id.to_string());
            self.cluster_event(channel, &frame, except);
        }
    }
}

#[cfg(test)]
mod tests;

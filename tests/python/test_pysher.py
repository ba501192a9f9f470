"""pysher 1.0.8 against crier: it connects with protocol=6, signs private and presence
subscriptions itself and serializes channel_data with Python's json.dumps."""

import json
import uuid

from harness import SOCKET_ID_PATTERN, wait_for

UNICODE_TEXT = "Grüße 🚀 日本"


def unique(prefix):
    return f"{prefix}{uuid.uuid4().hex[:12]}"


def test_pysher_connects_with_protocol_6(pysher_client):
    client = pysher_client()

    assert "protocol=6" in client.url
    assert SOCKET_ID_PATTERN.match(client.socket_id)
    first = client.snapshot()[0]
    assert first["event"] == "pusher:connection_established"
    assert isinstance(first["data"], str), "data must be a string holding JSON"
    data = json.loads(first["data"])
    assert data["socket_id"] == client.socket_id
    assert data["activity_timeout"] == 120


def test_pysher_ping_with_empty_string_data_gets_pong(pysher_client):
    # pysher sends {"event": "pusher:ping", "data": ""} as soon as the socket opens.
    client = pysher_client()
    pong = client.wait_for_event("pusher:pong")

    assert pong == {"event": "pusher:pong", "data": {}}
    assert client.events("pusher:error") == []


def test_pysher_receives_unicode_event_from_python_trigger(pysher_client, api):
    channel = unique("py-unicode-")
    client = pysher_client()
    client.subscribe(channel)

    assert api.trigger(channel, "greeting", UNICODE_TEXT) == {}
    frame = client.wait_for_event("greeting", channel=channel)
    assert frame == {"event": "greeting", "channel": channel, "data": UNICODE_TEXT}


def test_pysher_receives_dict_data_as_python_serialized_it(pysher_client, api):
    channel = unique("py-dict-")
    client = pysher_client()
    client.subscribe(channel)
    payload = {"text": UNICODE_TEXT, "n": [1, 2]}

    api.trigger(channel, "dict-event", payload)
    frame = client.wait_for_event("dict-event", channel=channel)
    assert frame["data"] == json.dumps(payload, ensure_ascii=False)
    assert json.loads(frame["data"]) == payload


def test_pysher_private_subscription_signed_by_pysher(pysher_client):
    channel = unique("private-py-")
    client = pysher_client()
    client.subscribe(channel)

    assert client.events("pusher:subscription_error", channel=channel) == []


def test_pysher_private_subscription_signed_by_pusher_http_python(pysher_client, api):
    channel = unique("private-py-")
    client = pysher_client(secret="")
    auth = api.authenticate(channel=channel, socket_id=client.socket_id)["auth"]
    client.subscribe(channel, auth=auth)

    assert client.events("pusher:subscription_error", channel=channel) == []


def test_pysher_wrong_secret_gets_auth_error(pysher_client, api):
    channel = unique("private-py-")
    client = pysher_client(secret="wrong-secret")
    since = client.mark()
    client.client.subscribe(channel)
    error = client.wait_for_event("pusher:error", since)
    subscription_error = client.wait_for_event("pusher:subscription_error", since, channel)

    assert error["data"]["code"] is None
    assert isinstance(error["data"]["message"], str)
    assert subscription_error["data"]["type"] == "AuthError"
    assert subscription_error["data"]["status"] == 401
    assert client.events("pusher_internal:subscription_succeeded", since, channel) == []

    public = unique("py-after-error-")
    client.subscribe(public)
    api.trigger(public, "still-usable", "1")
    client.wait_for_event("still-usable", channel=public)
    assert client.client.connection.state == "connected"


def test_pysher_presence_with_python_style_numeric_user_id(pysher_client, api):
    channel = unique("presence-py-")
    user_data = {"user_id": 77, "user_info": {"name": "Grüße"}}
    client = pysher_client(user_data=user_data)
    since = client.mark()
    client.client.subscribe(channel)
    succeeded = client.wait_for_event("pusher_internal:subscription_succeeded", since, channel)

    presence = json.loads(succeeded["data"])["presence"]
    assert presence["ids"] == ["77"]
    assert presence["hash"] == {"77": {"name": "Grüße"}}
    assert presence["count"] == 1
    assert api.users_info(channel) == {"users": [{"id": "77"}]}


def test_pysher_presence_member_added_and_removed(pysher_client):
    channel = unique("presence-py-")
    observer = pysher_client(user_data={"user_id": "observer"})
    observer.subscribe(channel)
    since = observer.mark()
    joiner = pysher_client(user_data={"user_id": "joiner", "user_info": {"city": "Zürich"}})
    joiner.subscribe(channel)

    added = observer.wait_for_event("pusher_internal:member_added", since, channel)
    assert json.loads(added["data"]) == {"user_id": "joiner", "user_info": {"city": "Zürich"}}

    since = observer.mark()
    joiner.disconnect()
    removed = observer.wait_for_event("pusher_internal:member_removed", since, channel)
    assert json.loads(removed["data"]) == {"user_id": "joiner"}


def test_pysher_client_event_reaches_other_subscriber_only(pysher_client, api):
    channel = unique("private-py-")
    sender = pysher_client()
    receiver = pysher_client()
    sender_channel = sender.subscribe(channel)
    receiver.subscribe(channel)
    sender_since = sender.mark()

    sender_channel.trigger("client-note", {"text": UNICODE_TEXT})
    frame = receiver.wait_for_event("client-note", channel=channel)
    assert frame == {"event": "client-note", "channel": channel, "data": {"text": UNICODE_TEXT}}

    api.trigger(channel, "barrier", "{}")
    sender.wait_for_event("barrier", sender_since, channel)
    assert sender.events("client-note", sender_since) == []


def test_pysher_client_event_on_presence_carries_user_id(pysher_client):
    channel = unique("presence-py-")
    sender = pysher_client(user_data={"user_id": 5, "user_info": {}})
    receiver = pysher_client(user_data={"user_id": "listener"})
    sender_channel = sender.subscribe(channel)
    receiver.subscribe(channel)

    sender_channel.trigger("client-hello", "plain string")
    frame = receiver.wait_for_event("client-hello", channel=channel)
    assert frame == {"event": "client-hello", "channel": channel, "data": "plain string", "user_id": "5"}


def test_pysher_unsubscribe_stops_delivery(pysher_client, api):
    channel = unique("py-unsub-")
    other = unique("py-other-")
    client = pysher_client()
    client.subscribe(channel)
    client.subscribe(other)
    client.client.unsubscribe(channel)
    wait_for(
        lambda: api.channel_info(channel, ["subscription_count"]) == {"occupied": False, "subscription_count": 0},
        description=f"{channel} to become unoccupied",
    )

    api.trigger([channel, other], "after-unsubscribe", "1")
    client.wait_for_event("after-unsubscribe", channel=other)
    assert client.events("after-unsubscribe", channel=channel) == []

"""pusher-http-python 3.3 against crier's HTTP API.

The library sends body_md5 on GET requests too, puts auth_signature in sorted position and
writes JSON bodies with ", " separators and \\uXXXX escapes, so every call here also checks
that crier accepts that request style.
"""

import json
import uuid

import pytest
from pusher.errors import PusherBadAuth, PusherBadRequest, PusherBadStatus

from harness import wait_for

UNICODE_TEXT = "Grüße 🚀 日本"


def unique(prefix):
    return f"{prefix}{uuid.uuid4().hex[:12]}"


def test_trigger_delivers_unicode_string_unchanged(pysher_client, api):
    channel = unique("py-api-")
    client = pysher_client()
    client.subscribe(channel)

    assert api.trigger(channel, "unicode", UNICODE_TEXT) == {}
    frame = client.wait_for_event("unicode", channel=channel)
    assert frame["data"] == UNICODE_TEXT


def test_trigger_to_several_channels_reaches_each(pysher_client, api):
    channels = [unique("py-multi-a-"), unique("py-multi-b-"), unique("private-py-multi-")]
    client = pysher_client()
    for channel in channels:
        client.subscribe(channel)

    api.trigger(channels, "fan-out", {"n": 1})
    for channel in channels:
        frame = client.wait_for_event("fan-out", channel=channel)
        assert json.loads(frame["data"]) == {"n": 1}


def test_trigger_with_socket_id_excludes_that_connection(pysher_client, api):
    channel = unique("py-exclude-")
    excluded = pysher_client()
    included = pysher_client()
    excluded.subscribe(channel)
    included.subscribe(channel)

    api.trigger(channel, "not-for-you", "1", socket_id=excluded.socket_id)
    api.trigger(channel, "for-everyone", "2")

    included.wait_for_event("not-for-you", channel=channel)
    included.wait_for_event("for-everyone", channel=channel)
    excluded.wait_for_event("for-everyone", channel=channel)
    assert excluded.events("not-for-you") == []


def test_trigger_batch_delivers_events_in_order(pysher_client, api):
    channel = unique("py-batch-")
    client = pysher_client()
    client.subscribe(channel)

    result = api.trigger_batch(
        [
            {"channel": channel, "name": "first", "data": {"text": UNICODE_TEXT}},
            {"channel": channel, "name": "second", "data": "2"},
        ]
    )

    assert result == {}
    client.wait_for_event("second", channel=channel)
    names = [frame["event"] for frame in client.snapshot() if frame.get("channel") == channel]
    assert names == ["pusher_internal:subscription_succeeded", "first", "second"]
    first = client.events("first")[0]
    assert json.loads(first["data"]) == {"text": UNICODE_TEXT}


def test_channels_info_filters_by_prefix(pysher_client, api):
    prefix = unique("py-list-")
    client = pysher_client()
    client.subscribe(f"{prefix}-a")
    client.subscribe(f"{prefix}-b")
    client.subscribe(unique("py-elsewhere-"))

    assert api.channels_info(prefix_filter=prefix) == {"channels": {f"{prefix}-a": {}, f"{prefix}-b": {}}}


def test_channels_info_with_user_count_on_presence_prefix(pysher_client, api):
    prefix = unique("presence-py-list-")
    pysher_client(user_data={"user_id": "a"}).subscribe(f"{prefix}-x")
    pysher_client(user_data={"user_id": "a"}).subscribe(f"{prefix}-x")
    pysher_client(user_data={"user_id": "b"}).subscribe(f"{prefix}-x")
    pysher_client(user_data={"user_id": 9}).subscribe(f"{prefix}-y")

    result = api.channels_info(prefix_filter=prefix, attributes=["user_count"])

    assert result == {"channels": {f"{prefix}-x": {"user_count": 2}, f"{prefix}-y": {"user_count": 1}}}


def test_channels_info_user_count_public_prefix_400(api):
    with pytest.raises(PusherBadRequest):
        api.channels_info(prefix_filter="py-", attributes=["user_count"])


def test_channel_info_counts_users_and_sockets(pysher_client, api):
    channel = unique("presence-py-info-")
    pysher_client(user_data={"user_id": "same"}).subscribe(channel)
    pysher_client(user_data={"user_id": "same"}).subscribe(channel)
    pysher_client(user_data={"user_id": "other"}).subscribe(channel)

    result = api.channel_info(channel, ["user_count", "subscription_count"])

    assert result == {"occupied": True, "user_count": 2, "subscription_count": 3}


def test_channel_info_on_unused_channel_is_unoccupied(api):
    assert api.channel_info(unique("py-unused-")) == {"occupied": False}
    assert api.channel_info(unique("py-unused-"), ["subscription_count"]) == {
        "occupied": False,
        "subscription_count": 0,
    }


def test_channel_info_user_count_public_channel_400(api):
    with pytest.raises(PusherBadRequest):
        api.channel_info(unique("py-public-"), ["user_count"])


def test_users_info_lists_distinct_users_as_strings(pysher_client, api):
    channel = unique("presence-py-users-")
    pysher_client(user_data={"user_id": "u-1"}).subscribe(channel)
    pysher_client(user_data={"user_id": "u-1"}).subscribe(channel)
    pysher_client(user_data={"user_id": 2}).subscribe(channel)

    users = api.users_info(channel)["users"]

    assert sorted(users, key=lambda user: user["id"]) == [{"id": "2"}, {"id": "u-1"}]


def test_users_info_on_public_channel_is_bad_request(api):
    with pytest.raises(PusherBadRequest):
        api.users_info(unique("py-public-"))


def test_users_info_after_last_member_leaves_is_empty(pysher_client, api):
    channel = unique("presence-py-users-")
    client = pysher_client(user_data={"user_id": "leaving"})
    client.subscribe(channel)
    assert api.users_info(channel) == {"users": [{"id": "leaving"}]}

    client.disconnect()
    wait_for(lambda: api.users_info(channel) == {"users": []}, description=f"{channel} to have no users")


def test_wrong_secret_is_bad_auth(api_with):
    with pytest.raises(PusherBadAuth):
        api_with(secret="not-the-secret").trigger("py-channel", "event", "1")


def test_unknown_app_id_is_404(api_with):
    with pytest.raises(PusherBadStatus, match=r"^404: "):
        api_with(app_id="9999").trigger("py-channel", "event", "1")


def test_data_over_10240_bytes_is_413(api):
    with pytest.raises(PusherBadStatus, match=r"^413: "):
        api.trigger("py-channel", "too-big", "x" * 10_241)


def test_data_of_10240_bytes_is_accepted(pysher_client, api):
    channel = unique("py-limit-")
    client = pysher_client()
    client.subscribe(channel)
    data = "ü" * 5_120
    assert len(data.encode("utf-8")) == 10_240

    assert api.trigger(channel, "at-limit", data) == {}
    assert client.wait_for_event("at-limit", channel=channel)["data"] == data


@pytest.mark.parametrize(
    "call",
    [
        pytest.param(lambda api: api.trigger("py-channel", "pusher:reserved", "1"), id="reserved-event-name"),
        pytest.param(lambda api: api.trigger_batch([{"channel": "c", "name": f"e{i}", "data": "1"} for i in range(11)]), id="batch-of-11"),
    ],
)
def test_invalid_requests_are_bad_request(api, call):
    with pytest.raises(PusherBadRequest) as error:
        call(api)

    assert "error" in json.loads(str(error.value))

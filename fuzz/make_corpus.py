#!/usr/bin/env python3
"""Writes the seed corpora of frame_parse, api_request and api_request_signed.

Usage: python3 fuzz/make_corpus.py VECTORS_DIR

VECTORS_DIR contains the protocol test vectors messages.json (exact frames in both
directions) and api_signature.json (signed HTTP API requests as each server library
sends them). The script replaces the files of the three corpus directories. The
node_ops corpus is not generated here: its inputs are in the `arbitrary` byte encoding,
so it contains a minimized set of inputs from earlier fuzzing runs.
"""

import hashlib
import hmac
import json
import pathlib
import sys

KEY = "9f3c2a7b8d1e4f605a11"
SECRET = "5b7e0c9d2f4a6b8c1d3e"

# Socket id of the first connection of a node seeded with 0 (crier_fuzz::SEED), which
# frame_parse sends every input on.
SOCKET_ID = "184964832153007.6929580258059764"

CORPUS = pathlib.Path(__file__).resolve().parent / "corpus"


def sign_channel(channel, channel_data=None):
    message = f"{SOCKET_ID}:{channel}"
    if channel_data is not None:
        message += f":{channel_data}"
    digest = hmac.new(SECRET.encode(), message.encode(), hashlib.sha256).hexdigest()
    return f"{KEY}:{digest}"


def compact(value):
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def subscribe(channel, channel_data=None):
    data = {"auth": sign_channel(channel, channel_data), "channel": channel}
    if channel_data is not None:
        data["channel_data"] = channel_data
    return compact({"event": "pusher:subscribe", "data": data})


def signed_frames():
    """Frames that only pass with signatures for SOCKET_ID, and client events that reach
    the fixture's second subscriber."""
    member = compact({"user_id": "u-3", "user_info": {"name": "Ada"}})
    numeric = compact({"user_id": 77})
    return {
        "signed-subscribe-private": subscribe("private-orders"),
        "signed-subscribe-encrypted": subscribe("private-encrypted-vault"),
        "signed-subscribe-private-channel-data": subscribe("private-cache-a", member),
        "signed-subscribe-presence": subscribe("presence-room-7", member),
        "signed-subscribe-presence-numeric": subscribe("presence-room-7", numeric),
        "signed-subscribe-presence-again": subscribe("presence-lobby", member),
        "client-event-private": compact(
            {"event": "client-typing", "channel": "private-orders", "data": {"t": True}}
        ),
        "client-event-presence": compact(
            {"event": "client-move", "channel": "presence-lobby", "data": [1, 2]}
        ),
        "client-event-null-data": compact(
            {"event": "client-x", "channel": "private-orders", "data": None}
        ),
        "unsubscribe-presence": compact(
            {"event": "pusher:unsubscribe", "data": {"channel": "presence-lobby"}}
        ),
    }


def api_request(method, path, query, body):
    return f"{method}\n{path}\n{query}\n".encode() + body.encode()


def unsigned_query(raw_query):
    """Drops the parameters api_request_signed adds itself."""
    signing = ("auth_", "body_md5")
    pairs = [p for p in raw_query.split("&") if not p.lower().startswith(signing)]
    return "&".join(pairs)


def signed_extras():
    """Requests for api_request_signed beyond the vectors: every route and info form."""
    events = "/apps/1001/events"
    return {
        "events-info-socket-id": (
            "POST",
            events,
            "",
            compact(
                {
                    "name": "e",
                    "data": "{}",
                    "channels": ["presence-lobby", "orders"],
                    "socket_id": SOCKET_ID,
                    "info": "user_count,subscription_count",
                }
            ),
        ),
        "events-encrypted-pair": (
            "POST",
            events,
            "",
            compact({"name": "e", "data": "x", "channels": ["private-encrypted-a", "b"]}),
        ),
        "events-legacy-query": ("POST", events, "name=e&data=1&channels[]=orders", ""),
        "batch-info": (
            "POST",
            "/apps/1001/batch_events",
            "",
            compact(
                {
                    "batch": [
                        {"name": "a", "data": "1", "channel": "presence-lobby", "info": "user_count"},
                        {"name": "b", "data": "2", "channel": "private-orders"},
                    ]
                }
            ),
        ),
        "channels-presence-user-count": (
            "GET",
            "/apps/1001/channels",
            "filter_by_prefix=presence-&info=user_count",
            "",
        ),
        "channel-info-counts": (
            "GET",
            "/apps/1001/channels/presence-lobby",
            "info=user_count,subscription_count",
            "",
        ),
        "channel-encoded-name": ("GET", "/apps/1001/channels/private%2Dorders", "", ""),
        "users-presence": ("GET", "/apps/1001/channels/presence-lobby/users", "", ""),
        "users-public": ("GET", "/apps/1001/channels/orders/users", "", ""),
        "wrong-method": ("GET", events, "", ""),
    }


def write(target, name, content):
    directory = CORPUS / target
    directory.mkdir(parents=True, exist_ok=True)
    data = content if isinstance(content, bytes) else content.encode()
    (directory / name).write_bytes(data)


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    vectors = pathlib.Path(sys.argv[1])
    messages = json.loads((vectors / "messages.json").read_text())
    api = json.loads((vectors / "api_signature.json").read_text())

    for target in ("frame_parse", "api_request", "api_request_signed"):
        for old in (CORPUS / target).glob("*"):
            old.unlink()

    for frame in messages["frames"]:
        write("frame_parse", f"vector-{frame['id']}", frame["text"])
    for name, text in signed_frames().items():
        write("frame_parse", name, text)

    for case in api["cases"]:
        method, path, body = case["method"], case["path"], case["body"]
        write("api_request", f"vector-{case['id']}", api_request(method, path, case["raw_query"], body))
        extra = unsigned_query(case["raw_query"])
        write("api_request_signed", f"vector-{case['id']}", api_request(method, path, extra, body))
    for name, (method, path, query, body) in signed_extras().items():
        write("api_request_signed", name, api_request(method, path, query, body))
    write("api_request", "no-auth", api_request("GET", "/apps/1001/channels", "", ""))
    write("api_request", "unknown-path", api_request("GET", "/apps/1001/nothing", "", ""))


if __name__ == "__main__":
    main()

"""Helpers that start a real crier process and connect the Python Pusher libraries to it.

pusher (pusher-http-python) drives the HTTP API; pysher is a WebSocket client that connects
with protocol=6. Every wait is bounded, and every process and client a test opens is closed
in teardown.
"""

import json
import logging
import os
import re
import subprocess
import threading
import time
from pathlib import Path

import pusher
import pysher

REPO_ROOT = Path(__file__).resolve().parents[2]
CRIER_BIN = Path(os.environ.get("CRIER_BIN", REPO_ROOT / "target" / "debug" / "crier"))

APP_ID = "1001"
APP_KEY = "crier-test-key"
APP_SECRET = "crier-test-secret"

SOCKET_ID_PATTERN = re.compile(r"^\d+\.\d+$")
STARTUP_TIMEOUT_S = 10.0
STOP_TIMEOUT_S = 10.0
DEFAULT_WAIT_S = 5.0
PYSHER_JOIN_TIMEOUT_S = 0.5

_ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*m")
_WS_LISTENING = re.compile(r"websocket listening on 127\.0\.0\.1:(\d+)")
_API_LISTENING = re.compile(r"http api listening on 127\.0\.0\.1:(\d+)")


def wait_for(predicate, timeout=DEFAULT_WAIT_S, description="condition"):
    """Poll `predicate` every 10 ms and return its first truthy value.

    Raises AssertionError naming `description` when `timeout` seconds pass first.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {description}")
        time.sleep(0.01)


class CrierProcess:
    """A crier child process and the ports it reported on stderr."""

    def __init__(self, extra_args=()):
        if not CRIER_BIN.exists():
            raise FileNotFoundError(
                f"crier binary not found at {CRIER_BIN}: run `cargo build -p crier-smol` or set CRIER_BIN"
            )
        # crier serves WebSocket and HTTP on one listener when both host strings are equal, so
        # the API host spells port 0 as "00" to get a second listener on another free port.
        self.argv = [
            str(CRIER_BIN),
            "--app_key", APP_KEY,
            "--secret", APP_SECRET,
            "--app_id", APP_ID,
            "--websocket_host", "127.0.0.1:0",
            "--api_host", "127.0.0.1:00",
            *extra_args,
        ]
        self.stderr_lines = []
        self.ws_port = None
        self.api_port = None
        self.process = subprocess.Popen(
            self.argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            encoding="utf-8",
            errors="replace",
        )
        self._reader = threading.Thread(target=self._read_stderr, name="crier-stderr", daemon=True)
        self._reader.start()
        try:
            wait_for(self._listening, STARTUP_TIMEOUT_S, "crier's 'listening on' lines on stderr")
        except AssertionError as error:
            self.stop()
            raise AssertionError(
                f"{error}\ncommand: {' '.join(self.argv)}\nexit code: {self.process.returncode}\n"
                f"stderr:\n{self.stderr_text()}"
            ) from None

    def _read_stderr(self):
        for line in self.process.stderr:
            clean = _ANSI_ESCAPE.sub("", line.rstrip("\n"))
            self.stderr_lines.append(clean)
            ws_match = _WS_LISTENING.search(clean)
            if ws_match:
                self.ws_port = int(ws_match.group(1))
            api_match = _API_LISTENING.search(clean)
            if api_match:
                self.api_port = int(api_match.group(1))

    def _listening(self):
        if self.process.poll() is not None:
            raise AssertionError(
                f"crier exited with code {self.process.returncode} before listening; "
                f"stderr:\n{self.stderr_text()}"
            )
        return self.ws_port is not None and self.api_port is not None

    def stderr_text(self):
        return "\n".join(self.stderr_lines)

    def stop(self):
        """Send SIGTERM to the child by pid, then SIGKILL if it is still running after 10 s.

        Returns True when SIGKILL was needed.
        """
        killed = False
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(STOP_TIMEOUT_S)
                killed = True
        self._reader.join(STOP_TIMEOUT_S)
        return killed


class RecordingPysher:
    """A pysher.Pusher whose received frames are recorded for assertions.

    pysher drops channel events that arrive before `subscribe()` has registered the channel,
    so the tests read the raw frames recorded here instead of relying on channel bindings.
    """

    def __init__(self, ws_port, key=APP_KEY, secret=APP_SECRET, user_data=None):
        self.frames = []
        self.lock = threading.Lock()
        self.client = pysher.Pusher(
            key=key,
            secure=False,
            custom_host="127.0.0.1",
            port=ws_port,
            secret=secret,
            user_data=user_data,
            log_level=logging.WARNING,
            reconnect_interval=1,
        )
        connection = self.client.connection
        original_on_message = connection._on_message

        def record(*args):
            text = args[-1]
            with self.lock:
                self.frames.append(json.loads(text))
            original_on_message(*args)

        # WebSocketApp looks the handler up when connect() runs, so the wrapper receives every frame.
        connection._on_message = record

    @property
    def url(self):
        return self.client.url

    @property
    def socket_id(self):
        return self.client.connection.socket_id

    def connect(self):
        self.client.connect()
        wait_for(
            lambda: self.client.connection.state == "connected",
            DEFAULT_WAIT_S,
            f"pysher to connect to {self.url}",
        )
        return self

    def snapshot(self):
        with self.lock:
            return list(self.frames)

    def mark(self):
        with self.lock:
            return len(self.frames)

    def events(self, name, since=0, channel=None):
        return [
            frame
            for frame in self.snapshot()[since:]
            if frame.get("event") == name and (channel is None or frame.get("channel") == channel)
        ]

    def wait_for_event(self, name, since=0, channel=None, timeout=DEFAULT_WAIT_S):
        matches = wait_for(
            lambda: self.events(name, since, channel),
            timeout,
            f"event {name} on {channel}; frames so far: {self.snapshot()[since:]}",
        )
        return matches[0]

    def subscribe(self, channel, auth=None):
        since = self.mark()
        pysher_channel = self.client.subscribe(channel, auth=auth)
        self.wait_for_event("pusher_internal:subscription_succeeded", since, channel)
        return pysher_channel

    def disconnect(self):
        # NOTE: pysher closes the socket from this thread while its event-loop thread waits in
        # websocket-client's select() with pysher's 100 s ping_timeout. When this thread reads
        # the server's close reply, that select() does not wake up, so joining would wait for
        # the full timeout. The event-loop thread is a daemon and exits on its own later.
        self.client.disconnect(timeout=PYSHER_JOIN_TIMEOUT_S)


def make_api(crier, **overrides):
    options = dict(
        app_id=APP_ID,
        key=APP_KEY,
        secret=APP_SECRET,
        host="127.0.0.1",
        port=crier.api_port,
        ssl=False,
        timeout=DEFAULT_WAIT_S,
    )
    options.update(overrides)
    client = pusher.Pusher(**options)
    # crier waits for idle keep-alive connections before it exits on SIGTERM, so pooled
    # connections would slow down every module's teardown. pusher 3.3 offers no option for
    # this; its requests session (a private attribute) merges these headers into each request.
    client._pusher_client.http.session.headers["Connection"] = "close"
    return client

"""pytest fixtures: one crier process per test module, plus pusher-http-python and pysher
clients connected to it. See harness.py for the process and client wrappers."""

import pytest

from harness import STOP_TIMEOUT_S, CrierProcess, RecordingPysher, make_api


@pytest.fixture(scope="module")
def crier():
    process = CrierProcess()
    yield process
    if process.stop():
        pytest.fail(
            f"crier did not exit within {STOP_TIMEOUT_S} s of SIGTERM; stderr:\n{process.stderr_text()}"
        )


@pytest.fixture
def api(crier):
    """pusher-http-python pointed at the module's crier."""
    return make_api(crier)


@pytest.fixture
def api_with(crier):
    """Factory for pusher-http-python clients with some options overridden (secret, app_id)."""

    def build(**overrides):
        return make_api(crier, **overrides)

    return build


@pytest.fixture
def pysher_client(crier):
    """Factory for connected RecordingPysher clients; all are disconnected after the test."""
    clients = []

    def connect(**options):
        client = RecordingPysher(crier.ws_port, **options)
        clients.append(client)
        return client.connect()

    yield connect
    for client in clients:
        client.disconnect()

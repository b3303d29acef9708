"""Slow clients (issue 27, item 1): `flywheel serve`'s server closes a connection whose
headers or body do not arrive in time, and 300 slow clients against a process limited to
256 file descriptors do not lock `/healthz` out."""

from __future__ import annotations

import resource
import socket
import subprocess
import sys
import time

import httpx
import pytest

from flywheel.broker import free_port, port_open
from flywheel.settings import load_settings

SERVE = """
import sys
from flywheel.settings import load_settings
from pipelines.http_api import serve
serve(load_settings(sys.argv[1]))
"""


def limit_fds():
    resource.setrlimit(resource.RLIMIT_NOFILE, (256, 256))


@pytest.fixture
def server(tmp_path):
    port = free_port()
    s = load_settings(
        state_dir=tmp_path / "state",
        http={"port": port, "header_timeout_s": 2, "body_timeout_s": 3, "max_connections": 150},
        kafka={"bootstrap_servers": f"127.0.0.1:{free_port()}"},  # nothing there: not needed here
        review={"sync_interval_s": 3600},
    )
    config = s.write_resolved(tmp_path / "flywheel.yaml")
    proc = subprocess.Popen(
        [sys.executable, "-c", SERVE, str(config)],
        preexec_fn=limit_fds,
        stdout=subprocess.DEVNULL,
        stderr=open(tmp_path / "serve.log", "wb"),  # noqa: SIM115 - the child owns it
    )
    deadline = time.monotonic() + 60
    while not port_open("127.0.0.1", port) and time.monotonic() < deadline:
        assert proc.poll() is None, (tmp_path / "serve.log").read_text()
        time.sleep(0.2)
    yield port
    proc.kill()
    proc.wait()


def closed_within(sock: socket.socket, seconds: float) -> bytes | None:
    """What the server sent before closing, or None if it kept the connection open."""
    sock.settimeout(0.5)
    got = b""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            continue
        except ConnectionResetError:
            return got
        if not chunk:
            return got
        got += chunk
    return None


def test_each_kind_of_slow_client_is_closed_within_its_deadline(server):
    partial_headers = socket.create_connection(("127.0.0.1", server))
    partial_headers.sendall(b"POST /v1/feedback HTTP/1.1\r\nHost: 127.0.0.1\r\n")
    assert closed_within(partial_headers, 2 + 5) is not None

    partial_body = socket.create_connection(("127.0.0.1", server))
    partial_body.sendall(
        b"POST /v1/feedback HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        b'Content-Length: 100\r\n\r\n{"a"'
    )
    reply = closed_within(partial_body, 3 + 5)
    assert reply is not None and b" 408 " in reply.split(b"\r\n")[0], reply

    chunked = socket.create_connection(("127.0.0.1", server))
    chunked.sendall(
        b"POST /v1/feedback HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n"
    )
    started = time.monotonic()
    chunked.settimeout(0.5)
    reply = b""
    while time.monotonic() - started < 3 + 5:
        try:
            chunked.sendall(b"1\r\n \r\n")  # one byte a second
        except (BrokenPipeError, ConnectionResetError):
            break
        try:
            reply += chunked.recv(65536)
        except TimeoutError:
            continue
        if reply:
            break
    assert b" 408 " in reply.split(b"\r\n")[0], reply
    assert httpx.get(f"http://127.0.0.1:{server}/healthz").status_code == 200


def test_three_hundred_slow_clients_do_not_lock_out_healthz(server):
    slow = []
    for _ in range(300):
        try:
            sock = socket.create_connection(("127.0.0.1", server), timeout=5)
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # never ends its headers
            slow.append(sock)
        except OSError:
            continue
    try:
        answer = httpx.get(f"http://127.0.0.1:{server}/healthz", timeout=10)
        assert answer.status_code == 200, answer.text
    finally:
        for sock in slow:
            sock.close()


def test_the_served_app_trusts_no_forwarded_address_and_answers_loopback_names_only(server):
    """An attacker's re-run of issue 27: a new X-Forwarded-For on each guess reset the
    failed-credentials limit (uvicorn trusted the header from 127.0.0.1), and a page whose
    host name was re-pointed at 127.0.0.1 (DNS rebinding) was answered."""
    url = f"http://127.0.0.1:{server}"
    codes = [
        httpx.get(
            f"{url}/v1/review/models",
            headers={"Authorization": f"Bearer guess-{i}", "X-Forwarded-For": f"203.0.113.{i}"},
        ).status_code
        for i in range(11)
    ]
    assert codes == [401] * 10 + [429]
    rebound = httpx.get(f"{url}/healthz", headers={"Host": f"evil.example:{server}"})
    assert rebound.status_code == 421 and rebound.json()["error"] == "host_not_allowed"
    assert httpx.get(f"{url}/healthz").status_code == 200

"""The dashboard against DNS rebinding, cross-site POSTs and open redirects, on SQLite and
PostgreSQL, served by a real uvicorn server on loopback."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from helpers import wait_until

from jobtable import JobTable
from jobtable.dashboard import create_app
from jobtable.dashboard.security import same_origin_path
from jobtable.errors import ConfigError
from jobtable.timeutil import utcnow

from ._support import Cli, free_port, schedule, serve

EVIL = "evil.example"


def csrf_of(html: str) -> str:
    match = re.search(r'name="csrf" value="([^"]+)"', html)
    assert match, "the page has no CSRF field"
    return match.group(1)


@pytest.fixture
def served(jt: JobTable) -> Iterator[tuple[httpx.Client, int]]:
    """A client (keeping cookies) of the token-less dashboard on loopback, and its port."""
    with serve(create_app(jt.store)) as base, httpx.Client(base_url=base) as c:
        yield c, int(base.rsplit(":", 1)[1])


def raw_get(port: int, target: str, host: str) -> tuple[int, dict[str, str]]:
    """Send ``GET target`` exactly as written (no client-side normalisation) and return
    the status and headers of the answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(f"GET {target} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
                  .encode("latin-1"))
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    head = data.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")
    status = int(head[0].split()[1])
    headers = {}
    for line in head[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return status, headers


def test_a_rebinding_host_reads_nothing_and_cancels_nothing(
        served: tuple[httpx.Client, int], jt: JobTable) -> None:
    client, port = served
    job = schedule(jt, "send_report", user_id=4, data={"secret": "s3cr3t-data"},
                   due=utcnow() + timedelta(hours=1))
    token = csrf_of(client.get(f"/jobs/{job.id}").text)  # a genuine page first: the cookie

    read = client.get(f"/jobs/{job.id}", headers={"Host": f"{EVIL}:{port}"})
    assert read.status_code == 403
    assert "s3cr3t-data" not in read.text
    assert "DNS rebinding" in read.text and "--allowed-host" in read.text
    assert client.get("/metrics", headers={"Host": EVIL}).status_code == 403

    cancel = client.post(f"/jobs/{job.id}/cancel", data={"csrf": token, "confirm": "yes"},
                         headers={"Host": f"{EVIL}:{port}", "Origin": f"http://{EVIL}:{port}"})
    assert cancel.status_code == 403
    row = jt.get_job(job.id)
    assert row is not None and row.status.value == "pending" and not row.cancelled

    for host in (f"127.0.0.1:{port}", "127.0.0.1", f"localhost:{port}", "localhost",
                 f"[::1]:{port}", "[::1]", f"LOCALHOST:{port}"):
        page = client.get(f"/jobs/{job.id}", headers={"Host": host})
        assert page.status_code == 200, host
        assert "s3cr3t-data" in page.text
    for host in ("127.0.0.1.evil.example", f"localhost.{EVIL}:{port}", "127.0.0.2", "",
                 "localhost:notaport"):
        assert client.get("/", headers={"Host": host}).status_code in (400, 403), host


def test_actions_must_come_from_the_bound_origin_not_the_host_header(
        served: tuple[httpx.Client, int], jt: JobTable) -> None:
    client, port = served
    job = schedule(jt, "send_report", user_id=5, due=utcnow() + timedelta(hours=1))
    token = csrf_of(client.get(f"/jobs/{job.id}").text)
    form = {"csrf": token, "confirm": "yes"}

    for headers in ({"Origin": f"http://{EVIL}:{port}"},
                    {"Origin": f"http://127.0.0.1:{port + 1 if port < 65535 else port - 1}"},
                    {"Origin": f"http://127.0.0.1.{EVIL}:{port}"},
                    {"Origin": "null", "Referer": f"http://{EVIL}:{port}/jobs/{job.id}"},
                    {"Referer": f"http://{EVIL}:{port}/jobs/{job.id}"},
                    {"Origin": "null"}):
        refused = client.post(f"/jobs/{job.id}/cancel", data=form, headers=headers)
        assert refused.status_code == 403, headers
        assert "Nothing was done" in refused.text
        row = jt.get_job(job.id)
        assert row is not None and not row.cancelled, headers

    done = client.post(f"/jobs/{job.id}/cancel", data=form,
                       headers={"Origin": f"http://localhost:{port}", "Host": f"localhost:{port}"})
    assert done.status_code == 303
    row = jt.get_job(job.id)
    assert row is not None and row.cancelled

    other = schedule(jt, "send_report", user_id=6, due=utcnow() + timedelta(hours=1))
    by_referer = client.post(f"/jobs/{other.id}/run-now", data=form,
                             headers={"Referer": f"http://127.0.0.1:{port}/jobs/{other.id}"})
    assert by_referer.status_code == 303
    row = jt.get_job(other.id)
    assert row is not None and row.due <= utcnow()


def _asgi(app: object, method: str, path: str, client: tuple[str, int] = ("203.0.113.9", 4000),
          **kw: object) -> httpx.Response:
    async def go() -> httpx.Response:
        transport = httpx.ASGITransport(app=app, client=client)  # type: ignore[arg-type]
        async with httpx.AsyncClient(transport=transport, base_url="https://ops.example.com",
                                     follow_redirects=False) as c:
            return await c.request(method, path, **kw)  # type: ignore[arg-type]

    return asyncio.run(go())


def test_mounted_dashboards_name_their_hosts_and_origin(jt: JobTable) -> None:
    job = schedule(jt, "send_report", user_id=7, due=utcnow() + timedelta(hours=1))
    app = create_app(jt.store, trust_remote=True, allowed_hosts=["ops.example.com", "*.corp"],
                     origin="https://ops.example.com")
    assert _asgi(app, "GET", f"/jobs/{job.id}").status_code == 200
    assert _asgi(app, "GET", "/", headers={"Host": "a.b.corp"}).status_code == 200
    refused = _asgi(app, "GET", "/", headers={"Host": EVIL})
    assert refused.status_code == 403 and "ops.example.com" in refused.text

    page = _asgi(app, "GET", f"/jobs/{job.id}")
    token, cookie = csrf_of(page.text), page.cookies["jobtable_csrf"]
    form = {"csrf": token, "confirm": "yes"}
    for origin in ("http://ops.example.com", "https://a.b.corp", f"https://{EVIL}"):
        post = _asgi(app, "POST", f"/jobs/{job.id}/cancel", data=form,
                     headers={"Origin": origin, "Cookie": f"jobtable_csrf={cookie}"})
        assert post.status_code == 403, origin
    row = jt.get_job(job.id)
    assert row is not None and not row.cancelled
    post = _asgi(app, "POST", f"/jobs/{job.id}/cancel", data=form,
                 headers={"Origin": "https://ops.example.com",
                          "Cookie": f"jobtable_csrf={cookie}"})
    assert post.status_code == 303
    row = jt.get_job(job.id)
    assert row is not None and row.cancelled

    # Today's mounted use: credentials, no host list; any Host, Origin of the host reached.
    tokened = create_app(jt.store, token="tok-abcdef")
    bearer = {"Authorization": "Bearer tok-abcdef"}
    assert _asgi(tokened, "GET", "/", headers={"Host": "jobs.internal", **bearer}
                 ).status_code == 200
    assert _asgi(tokened, "GET", "/", headers={"Host": EVIL}).status_code == 401

    with pytest.raises(ConfigError, match="allowed host"):
        create_app(jt.store, allowed_hosts=["https://x/y"])
    with pytest.raises(ConfigError, match="origin"):
        create_app(jt.store, origin="ops.example.com/path")


@pytest.mark.parametrize("target", ["//evil.com/x", "/\\evil.com/x", "https://evil.com/x",
                                    "/%2F%2Fevil.com/x", "/%5C%5Cevil.com/x", "///evil.com/x",
                                    "/%09/evil.com/x"])
def test_the_token_login_redirects_only_to_paths_of_the_dashboard(jt: JobTable,
                                                                  target: str) -> None:
    with serve(create_app(jt.store, token="tok-abcdef")) as base:
        port = int(base.rsplit(":", 1)[1])
        status, headers = raw_get(port, f"{target}?token=tok-abcdef&a=1", f"127.0.0.1:{port}")
    assert status == 303
    location = headers["location"]
    assert location.startswith("/") and not location.startswith(("//", "/\\"))
    assert "evil.com" not in httpx.URL(f"http://127.0.0.1:{port}").join(location).host
    assert location.endswith("?a=1")


def test_same_origin_path() -> None:
    for path in ("//evil.com/x", "/\\evil.com/x", "\\\\evil.com/x", "https://evil.com/x",
                 "/\\/evil.com/x", "////evil.com/x", "/\t/evil.com/x", ""):
        target = same_origin_path(path, "a=1")
        assert target.startswith("/") and not target.startswith(("//", "/\\")), path
        assert httpx.URL("http://127.0.0.1:8787").join(target).host == "127.0.0.1", path
    assert same_origin_path("//evil.com/x") == "/evil.com/x"
    assert same_origin_path("https://evil.com/x") == "/x"
    assert same_origin_path("") == "/"
    assert same_origin_path("/ops/jobs", "status=failed") == "/ops/jobs?status=failed"
    assert same_origin_path("/a b/%") == "/a%20b/%25"


def test_dashboard_command_takes_allowed_hosts_and_origin(db_url: str, jt: JobTable,
                                                          tmp_path: Path, cli: Cli) -> None:
    bad = cli("dashboard", "--allowed-host", "http://x/y", ok=False)
    assert bad.exit_code == 1 and "allowed host" in bad.stderr
    assert "Traceback" not in bad.stderr
    port = free_port()
    env = {**os.environ, "JOBTABLE_DASHBOARD_ALLOWED_HOSTS": "devbox, devbox.lan"}
    proc = subprocess.Popen([sys.executable, "-m", "jobtable", "dashboard",
                             "--port", str(port), "--database", db_url], env=env, cwd=tmp_path,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    base = f"http://127.0.0.1:{port}"
    try:
        def answers() -> int | None:
            try:
                return httpx.get(base + "/", timeout=2).status_code
            except httpx.TransportError:
                return None

        assert wait_until(answers, 30, "the dashboard to listen") == 200
        assert httpx.get(base + "/", headers={"Host": f"devbox:{port}"}).status_code == 200
        assert httpx.get(base + "/", headers={"Host": "devbox.lan"}).status_code == 200
        assert httpx.get(base + "/", headers={"Host": f"{EVIL}:{port}"}).status_code == 403
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            assert proc.stderr is not None
            proc.stderr.close()

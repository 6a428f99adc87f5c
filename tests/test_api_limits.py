"""The API's limits, found by trying to break it: the token is checked before a body is read,
bodies are bounded (413), ids and offsets beyond 64 bits are a 422 (not a 500), deep policies
are refused at creation, 405s name every method, the model that scores is ``current``, and the
docs pages work offline."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from netwarden.api.app import create_app
from netwarden.api.auth import Role, TokenTable, new_token
from netwarden.api.guard import DEFAULT_MAX_BODY_BYTES
from netwarden.api.schemas import MAX_ID, MAX_POLICY_DEPTH
from netwarden.ingest.windows import WindowConfig
from netwarden.models.artifact import save_bundle
from netwarden.models.registry import CurrentModel
from tests.modelfactory import train_on_generated
from tests.policyfactory import cnp
from tests.servers import free_port
from tests.test_api import T0, Api, FakeService, assert_problem, make_api, record, window

REPO = Path(__file__).resolve().parents[1]
MiB = 1024 * 1024


@pytest.fixture
def api(tmp_path) -> Iterator[Api]:
    api = make_api(tmp_path)
    record(api, window(0, "shop/cart", 2.5), window(1, "shop/cart"))  # anomaly 1
    yield api
    api.service.store.close()


# ------------------------------------------------------------ the gate, in-process (ASGI)


class Body:
    """An ASGI ``receive`` that hands out ``chunks`` bodies of ``size`` bytes, counting calls."""

    def __init__(self, size: int, chunks: int) -> None:
        self.chunk = b"[" + b"{}," * ((size - 2) // 3) + b"]"
        self.chunks = chunks
        self.calls = 0

    async def __call__(self) -> dict[str, Any]:
        self.calls += 1
        if self.calls > self.chunks:
            await asyncio.sleep(3600)  # a client that never sends more: only a disconnect ends it
        return {
            "type": "http.request",
            "body": self.chunk,
            "more_body": self.calls < self.chunks,
        }


def asgi_post(
    app: Any, path: str, receive: Body, headers: dict[str, str]
) -> tuple[int, dict[str, str], Any]:
    """POST through the ASGI interface: the status, headers and JSON body of the answer."""
    sent: list[dict[str, Any]] = []
    scope = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.4"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8080),
    }

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    async def call() -> None:
        await asyncio.wait_for(app(scope, receive, send), timeout=30)

    asyncio.run(call())
    start = next(m for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    answer_headers = {k.decode(): v.decode() for k, v in start["headers"]}
    return start["status"], answer_headers, json.loads(body)


FIFTY_MB = {"content-type": "application/json", "content-length": str(50 * 1_000_000)}


@pytest.mark.parametrize("authorization", [None, "Bearer not-a-token", "Basic dXNlcjpwYXNz"])
def test_no_body_is_read_without_a_valid_token(api, authorization) -> None:
    body = Body(1_000_000, chunks=50)
    headers = dict(FIFTY_MB)
    if authorization is not None:
        headers["authorization"] = authorization
    status, answer, problem = asgi_post(api.client.app, "/api/v1/proposals", body, headers)
    assert (status, answer["content-type"]) == (401, "application/problem+json")
    assert answer["www-authenticate"].startswith('Bearer realm="netwarden"')
    assert problem["instance"] == "/api/v1/proposals"
    assert body.calls == 0  # not one byte read


def test_a_declared_body_over_the_limit_is_refused_at_once(api) -> None:
    body = Body(1_000_000, chunks=50)
    headers = {**FIFTY_MB, "authorization": api.auth(Role.reviewer)["Authorization"]}
    status, answer, problem = asgi_post(api.client.app, "/api/v1/proposals", body, headers)
    assert (status, answer["content-type"]) == (413, "application/problem+json")
    assert problem["type"] == "urn:netwarden:problem:body-too-large"
    assert problem["limit"] == DEFAULT_MAX_BODY_BYTES
    assert body.calls == 0


def test_a_streamed_body_is_cut_at_the_limit(api) -> None:
    body = Body(64 * 1024, chunks=800)  # 50 MB in 64 KiB chunks, no Content-Length (chunked)
    headers = {
        "content-type": "application/json",
        "transfer-encoding": "chunked",
        "authorization": api.auth(Role.reviewer)["Authorization"],
    }
    status, _, problem = asgi_post(api.client.app, "/api/v1/proposals", body, headers)
    assert (status, problem["status"]) == (413, 413)
    assert body.calls == DEFAULT_MAX_BODY_BYTES // len(body.chunk) + 1  # stopped just past it


def test_a_body_within_the_limit_reaches_the_route(api) -> None:
    policy = cnp({"k8s:app": "cart"}, name="cart-baseline", description="y" * 900_000)
    r = api.post(
        "/api/v1/proposals", Role.reviewer, json={"identity": "shop/cart", "policy": policy}
    )
    assert r.status_code == 201, r.text  # 0.9 MB, taken whole
    assert r.json()["policy"] == policy


def test_the_limit_is_configurable(tmp_path) -> None:
    service = FakeService(store=None)  # type: ignore[arg-type]  # no route runs
    token, entry = new_token("bot", "viewer")
    app = create_app(service, TokenTable([entry]), max_body_bytes=100)
    body = Body(300, chunks=1)
    status, _, problem = asgi_post(
        app, "/api/v1/proposals", body, {"authorization": f"Bearer {token}"}
    )
    assert (status, problem["limit"]) == (413, 100)
    with pytest.raises(ValueError, match="max_body_bytes"):
        create_app(service, TokenTable([entry]), max_body_bytes=0)


def test_public_paths_need_no_token_but_keep_the_limit(api) -> None:
    assert api.client.get("/healthz").status_code == 200
    r = api.client.request("GET", "/healthz", content=b"x" * (DEFAULT_MAX_BODY_BYTES + 1))
    assert_problem(r, 413)


# ------------------------------------------------------------ the gate, on a real server

SERVER = textwrap.dedent(
    """
    import sys
    import uvicorn
    from netwarden.api.app import create_app
    from netwarden.api.auth import tokens_from_env
    from netwarden.detector.store import AnomalyStore
    from tests.test_api import FakeService

    db, entry, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
    app = create_app(FakeService(store=AnomalyStore(f"sqlite:///{db}")), tokens_from_env(entry))
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")
    """
)


def peak_rss_kib(pid: int) -> int:
    """The process's peak resident set size (VmHWM), in KiB."""
    status = Path(f"/proc/{pid}/status").read_text()
    match = re.search(r"^VmHWM:\s+(\d+) kB", status, re.MULTILINE)
    assert match, status
    return int(match.group(1))


def post_fifty_mb(port: int, headers: str) -> tuple[int, float]:
    """POST a 50 MB ``[{},{},...]`` body over a socket, reading the answer while sending;
    the status line's code and the seconds it took to come."""
    chunk = b"{}," * 350_000  # about 1 MB
    total = 50 * len(chunk)
    started = time.monotonic()
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)

    def send() -> None:
        try:
            sock.sendall(
                f"POST /api/v1/proposals HTTP/1.1\r\nHost: 127.0.0.1\r\n{headers}"
                f"Content-Type: application/json\r\nContent-Length: {total}\r\n\r\n".encode()
            )
            for _ in range(50):
                sock.sendall(chunk)
        except OSError:
            pass  # the server answered and closed without reading: that is the point

    sender = threading.Thread(target=send, daemon=True)
    sender.start()
    try:
        head = sock.recv(65536)
    finally:
        elapsed = time.monotonic() - started
        sock.close()
        sender.join(10)
    assert head.startswith(b"HTTP/1.1 "), head
    return int(head.split()[1]), elapsed


@pytest.fixture
def server(tmp_path) -> Iterator[tuple[subprocess.Popen[bytes], int, str]]:
    token, entry = new_token("reviewer-bot", "reviewer")
    port = free_port()
    script = tmp_path / "serve.py"
    script.write_text(SERVER)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    process = subprocess.Popen(
        [sys.executable, str(script), str(tmp_path / "nw.db"), entry.line, str(port)],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 120  # imports alone take 20 s on a busy machine
        while True:
            assert process.poll() is None, process.stderr.read() if process.stderr else ""
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "the API did not start"
            time.sleep(0.05)
        yield process, port, token
    finally:
        process.terminate()
        process.wait(10)


def test_fifty_mb_without_a_token_costs_no_memory(server) -> None:
    process, port, token = server
    for _ in range(3):  # warm up every code path the posts below take
        post_fifty_mb(port, "")
        post_fifty_mb(port, f"Authorization: Bearer {token}\r\n")
    before = peak_rss_kib(process.pid)
    status, seconds = post_fifty_mb(port, "")
    assert status == 401 and seconds < 5
    status, seconds = post_fifty_mb(port, "Authorization: Bearer wrong\r\n")
    assert status == 401 and seconds < 5
    status, seconds = post_fifty_mb(port, f"Authorization: Bearer {token}\r\n")
    assert status == 413 and seconds < 5
    grown = peak_rss_kib(process.pid) - before
    assert grown < 4 * 1024, f"the peak RSS grew by {grown} KiB"
    assert process.poll() is None


# ------------------------------------------------------------------- ids and offsets


BIG = MAX_ID + 1  # 2**63: no signed 64-bit column holds it


@pytest.mark.parametrize(
    ("method", "url", "role", "body"),
    [
        ("GET", "/api/v1/anomalies/{id}", Role.viewer, None),
        ("POST", "/api/v1/anomalies/{id}/acknowledge", Role.operator, None),
        ("POST", "/api/v1/anomalies/{id}/resolve", Role.operator, None),
        (
            "POST",
            "/api/v1/anomalies/{id}/suppress",
            Role.operator,
            {"reason": "x", "duration_seconds": 60},
        ),
        ("GET", "/api/v1/proposals/{id}", Role.viewer, None),
        ("POST", "/api/v1/proposals/{id}/simulate", Role.viewer, None),
        ("POST", "/api/v1/proposals/{id}/approve", Role.reviewer, None),
        ("POST", "/api/v1/proposals/{id}/reject", Role.reviewer, None),
        ("POST", "/api/v1/proposals/{id}/apply", Role.admin, None),
        ("POST", "/api/v1/proposals/{id}/rollback", Role.admin, None),
        ("GET", "/api/v1/anomalies?offset={id}", Role.viewer, None),
        ("GET", "/api/v1/proposals?offset={id}", Role.viewer, None),
        ("GET", "/api/v1/identities?offset={id}", Role.viewer, None),
        ("POST", "/api/v1/proposals", Role.reviewer, {"anomaly_id": "{id}"}),
    ],
)
def test_numbers_past_64_bits_are_a_422(api, method, url, role, body) -> None:
    for value, expected in ((BIG, 422), (10**30, 422), (-1, 422), (MAX_ID, None)):
        sent = (
            {k: value if v == "{id}" else v for k, v in body.items()} if body is not None else None
        )
        r = api.client.request(method, url.format(id=value), headers=api.auth(role), json=sent)
        if expected is None:  # the largest id: not found, or an empty page; never a 500
            assert r.status_code in (200, 404), r.text
            continue
        problem = assert_problem(r, 422, type="urn:netwarden:problem:validation-error")
        assert problem["errors"], problem


def test_the_largest_offset_is_an_empty_page(api) -> None:
    page = api.get(f"/api/v1/anomalies?offset={MAX_ID}").json()
    assert (page["items"], page["total"], page["next"]) == ([], 1, None)


# ---------------------------------------------------------------------- deep policies


def nested(depth: int) -> dict[str, Any]:
    """A policy of shop/cart that nests ``depth`` levels deep (the policy is level 1, its
    spec level 2, ...)."""
    inner: Any = "x"
    for _ in range(depth - 2):
        inner = {"a": inner}
    return cnp({"k8s:app": "cart"}, name="cart-baseline", deep=inner)


@pytest.mark.parametrize("depth", [MAX_POLICY_DEPTH + 1, 400, 600])
def test_a_deep_policy_is_refused_and_nothing_stored(api, depth) -> None:
    r = api.post(
        "/api/v1/proposals", Role.reviewer, json={"identity": "shop/cart", "policy": nested(depth)}
    )
    problem = assert_problem(r, 422, type="urn:netwarden:problem:validation-error")
    assert f"at most {MAX_POLICY_DEPTH}" in problem["detail"]
    page = api.get("/api/v1/proposals").json()
    assert (page["total"], page["items"]) == (0, [])


def test_a_policy_at_the_depth_limit_is_kept_and_readable(api) -> None:
    r = api.post(
        "/api/v1/proposals",
        Role.reviewer,
        json={"identity": "shop/cart", "policy": nested(MAX_POLICY_DEPTH)},
    )
    assert r.status_code == 201, r.text
    again = api.get(r.headers["location"])
    assert again.status_code == 200 and again.json()["policy"] == nested(MAX_POLICY_DEPTH)
    assert api.get("/api/v1/proposals").status_code == 200


def test_json_too_deep_to_parse_is_a_client_error(api) -> None:
    body = b'{"identity": "shop/cart", "policy": ' + b'{"a":' * 5000 + b"1" + b"}" * 5001
    r = api.client.post(
        "/api/v1/proposals",
        content=body,
        headers={**api.auth(Role.reviewer), "Content-Type": "application/json"},
    )
    assert 400 <= r.status_code < 500, r.text
    assert r.headers["content-type"] == "application/problem+json"


# ------------------------------------------------------------------------------ 405


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("DELETE", "/api/v1/proposals", "GET, POST"),  # served by a GET and a POST route
        ("PUT", "/api/v1/proposals", "GET, POST"),
        ("GET", "/api/v1/anomalies/1/acknowledge", "POST"),  # POST only
        ("POST", "/api/v1/anomalies/1", "GET"),  # GET only
        ("DELETE", "/api/v1/models/current", "GET"),
        ("POST", "/healthz", "GET"),  # public
    ],
)
def test_405_allows_every_method_of_the_path(api, method, path, allow) -> None:
    r = api.client.request(method, path, headers=api.auth(Role.admin))
    assert_problem(r, 405)
    assert r.headers["allow"] == allow
    for allowed in allow.split(", "):  # and each method it names is served
        assert api.client.request(allowed, path, headers=api.auth(Role.admin)).status_code != 405


# ---------------------------------------------------------------------- current model


def test_the_model_that_scores_is_current(tmp_path) -> None:
    """The folder's CURRENT file names a version the service has not loaded (written after the
    last reload, or refused): the one that scores is current all the same."""
    bundle, _ = train_on_generated(tmp_path / "train", hours=3, seed=5, start=T0, n_estimators=10)
    model_dir = tmp_path / "models"
    loaded = save_bundle(bundle, model_dir)
    model = CurrentModel(model_dir, windows=WindowConfig())
    assert model.refresh()
    newer = model_dir / "v99990101T000000Z-newer"
    shutil.copytree(loaded, newer)
    (model_dir / "CURRENT").write_text(newer.name + "\n")  # not reloaded yet

    api = make_api(tmp_path)
    try:
        api.service.versions = model.versions()
        api.service.current_model = model.current  # type: ignore[method-assign]
        current = api.get("/api/v1/models/current").json()
        assert (current["version"], current["current"]) == (loaded.name, True)
        listed = api.get("/api/v1/models").json()["items"]
        assert [(m["version"], m["current"]) for m in listed] == [
            (newer.name, False),
            (loaded.name, True),
        ]
    finally:
        api.service.store.close()


def test_no_version_is_current_while_none_scores(api) -> None:
    api.service.current_model = lambda: None  # type: ignore[method-assign]
    assert [m["current"] for m in api.get("/api/v1/models").json()["items"]] == [False, False]


# ------------------------------------------------------------------------------- docs


ASSET_URL = re.compile(r'(?:src|href)="([^"]+)"')


@pytest.mark.parametrize(
    ("page", "assets"),
    [
        ("/docs", {"swagger-ui-bundle.js", "swagger-ui.css", "favicon.png"}),
        ("/redoc", {"redoc.standalone.js", "favicon.png"}),
    ],
)
def test_docs_pages_are_served_offline(api, page, assets) -> None:
    r = api.client.get(page)  # no token: the page asks for one
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    html = r.text
    assert "http://" not in html and "https://" not in html  # no CDN, nothing remote
    urls = ASSET_URL.findall(html)
    assert {u.rsplit("/", 1)[-1] for u in urls} == assets
    for url in urls:
        assert url.startswith("docs/assets/")  # relative: works under a proxy's path prefix
        asset = api.client.get("/" + url)
        assert asset.status_code == 200, url
        assert len(asset.content) > 1000
        assert asset.headers["cache-control"].startswith("public")
    assert 'fetch("openapi.json"' in html and '"Bearer " + token' in html
    assert 'type="password"' in html


def test_docs_assets_are_only_the_known_files(api) -> None:
    js = api.client.get("/docs/assets/swagger-ui-bundle.js")
    assert js.headers["content-type"].startswith("text/javascript")
    assert "SwaggerUIBundle" in js.text[:2000]
    assert (
        api.client.get("/docs/assets/redoc.standalone.js")
        .headers["content-type"]
        .startswith("text/javascript")
    )
    assert (
        api.client.get("/docs/assets/swagger-ui.css").headers["content-type"].startswith("text/css")
    )
    for name in ("core.py", "index.html"):
        assert_problem(api.client.get(f"/docs/assets/{name}"), 404)
    assert api.client.get("/docs/assets/..%2Fcore.py").status_code == 404


def test_the_document_the_docs_render_still_needs_a_token(api) -> None:
    assert_problem(api.client.get("/openapi.json"), 401)
    doc = api.client.get("/openapi.json", headers=api.auth()).json()
    assert doc["components"]["securitySchemes"]["bearer"] == {
        "type": "http",
        "scheme": "bearer",
        "description": "A netwarden API token: `Authorization: Bearer <token>`.",
    }
    assert not any(p.startswith(("/docs", "/redoc")) for p in doc["paths"])


def test_docs_pages_use_the_security_scheme_of_the_document(api) -> None:
    html = api.client.get("/docs").text
    scheme = next(
        iter(
            api.client.get("/openapi.json", headers=api.auth()).json()["components"][
                "securitySchemes"
            ]
        )
    )
    assert f'preauthorizeApiKey("{scheme}", token)' in html


def test_suppression_clock_unaffected(api) -> None:
    """The gate hands the body to the route as sent (a suppress with a duration works)."""
    r = api.post("/api/v1/anomalies/1/suppress", json={"reason": "deploy", "duration_seconds": 60})
    assert r.status_code == 200, r.text
    assert r.json()["suppressed_until"] == (api.clock.t + timedelta(seconds=60)).strftime(
        "%Y-%m-%dT%H:%M:%SZ"
    )

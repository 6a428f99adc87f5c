"""Who may call what: every route of the app against no token, a wrong token and each role;
tokens from files and the environment; bad token files; the OpenAPI document."""

from __future__ import annotations

import json
import re
import warnings
from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from fastapi.routing import iter_route_contexts

from netwarden.api.app import create_app
from netwarden.api.auth import (
    ENV_VAR,
    Role,
    TokenConfigError,
    TokenEntry,
    TokenTable,
    hash_token,
    load_tokens,
    new_token,
    tokens_from_env,
    tokens_from_file,
)
from netwarden.config import load_config
from netwarden.detector.change_store import ChangeStore
from tests.test_api import Api, make_api, record, window
from tests.test_change_store import new_workload_change

with warnings.catch_warnings():  # Starlette now prefers httpx2; the project installs httpx
    warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient`")
    from fastapi.testclient import TestClient

#: The lowest role each route needs (None: public). A route missing here fails the test below,
#: so a new route cannot ship without someone deciding who may call it.
ROUTE_ROLES: dict[tuple[str, str], Role | None] = {
    ("GET", "/healthz"): None,
    ("GET", "/readyz"): None,
    ("GET", "/metrics"): None,
    ("GET", "/docs"): None,
    ("GET", "/redoc"): None,
    ("GET", "/docs/assets/{name}"): None,
    ("GET", "/openapi.json"): Role.viewer,
    ("GET", "/api/v1/anomalies"): Role.viewer,
    ("GET", "/api/v1/anomalies/{anomaly_id}"): Role.viewer,
    ("POST", "/api/v1/anomalies/{anomaly_id}/acknowledge"): Role.operator,
    ("POST", "/api/v1/anomalies/{anomaly_id}/suppress"): Role.operator,
    ("POST", "/api/v1/anomalies/{anomaly_id}/resolve"): Role.operator,
    ("POST", "/api/v1/anomalies/{anomaly_id}/verdict"): Role.operator,
    ("GET", "/api/v1/changes"): Role.viewer,
    ("GET", "/api/v1/changes/{change_id}"): Role.viewer,
    ("POST", "/api/v1/changes/{change_id}/accept"): Role.operator,
    ("POST", "/api/v1/changes/{change_id}/reject"): Role.operator,
    ("GET", "/api/v1/identities"): Role.viewer,
    ("GET", "/api/v1/identities/{namespace}/{workload}/windows"): Role.viewer,
    ("GET", "/api/v1/identities/{namespace}/{workload}/score.png"): Role.viewer,
    ("GET", "/api/v1/incidents"): Role.viewer,
    ("GET", "/api/v1/incidents/{incident_id}"): Role.viewer,
    ("GET", "/api/v1/identities/{namespace}/{workload}/drift"): Role.viewer,
    ("GET", "/api/v1/drift"): Role.viewer,
    ("GET", "/api/v1/models"): Role.viewer,
    ("GET", "/api/v1/models/current"): Role.viewer,
    ("GET", "/api/v1/models/candidate"): Role.viewer,
    ("GET", "/api/v1/models/{version}"): Role.viewer,
    ("POST", "/api/v1/models/{version}/promote"): Role.admin,
    ("POST", "/api/v1/models/rollback"): Role.admin,
    ("GET", "/api/v1/proposals"): Role.viewer,
    ("GET", "/api/v1/proposals/{proposal_id}"): Role.viewer,
    ("POST", "/api/v1/proposals"): Role.reviewer,
    ("POST", "/api/v1/proposals/{proposal_id}/simulate"): Role.viewer,
    ("POST", "/api/v1/proposals/{proposal_id}/approve"): Role.reviewer,
    ("POST", "/api/v1/proposals/{proposal_id}/reject"): Role.reviewer,
    ("POST", "/api/v1/proposals/{proposal_id}/apply"): Role.admin,
    ("POST", "/api/v1/proposals/{proposal_id}/rollback"): Role.admin,
    ("POST", "/api/v1/proposals/{proposal_id}/recover"): Role.admin,
}
#: Values for path parameters, and request bodies, that make a valid request.
PATH_VALUES = {
    "anomaly_id": "1",
    "namespace": "shop",
    "workload": "cart",
    "proposal_id": "1",
    "change_id": "chg-0123456789ab",
    "incident_id": "inc-0123456789ab",
    "name": "swagger-ui.css",
    "version": "v1",
}
BODIES: dict[str, Any] = {
    "suppress": {"reason": "maintenance", "duration_seconds": 600},
    "proposals": {"anomaly_id": 1},
    "verdict": {"verdict": "expected"},
}


def app_routes() -> list[tuple[str, str]]:
    """Every (method, path) the app serves, HEAD aside, read from the app itself (through
    included routers: FastAPI resolves them lazily, so ``app.routes`` alone is not flat)."""
    app = create_app(None, TokenTable())  # type: ignore[arg-type]  # routes need no service
    found = []
    for route in iter_route_contexts(app.routes):
        assert route.path and route.methods, f"a route without path or methods: {route!r}"
        found += [(m, route.path) for m in sorted(route.methods) if m != "HEAD"]
    return found


ROUTES = app_routes()


def test_every_route_has_a_declared_role() -> None:
    missing = sorted(set(ROUTES) - set(ROUTE_ROLES))
    assert not missing, f"routes without an entry in ROUTE_ROLES: {missing}"
    stale = sorted(set(ROUTE_ROLES) - set(ROUTES))
    assert not stale, f"ROUTE_ROLES names routes the app does not serve: {stale}"


@pytest.fixture
def api(tmp_path) -> Iterator[Api]:
    api = make_api(tmp_path)
    record(api, window(0, "shop/cart", 2.5), window(1, "shop/cart"))  # anomaly 1
    with ChangeStore(api.service.store.url) as changes:  # change chg-0123456789ab, open
        changes.upsert([new_workload_change("chg-0123456789ab")])
    yield api
    api.service.store.close()


def _call(api: Api, method: str, path: str, headers: dict[str, str]) -> Any:
    url = re.sub(r"\{(\w+)\}", lambda m: PATH_VALUES[m.group(1)], path)
    body = BODIES.get(path.rsplit("/", 1)[-1]) if method == "POST" else None
    return api.client.request(method, url, headers=headers, json=body)


@pytest.mark.parametrize(("method", "path"), ROUTES, ids=[f"{m} {p}" for m, p in ROUTES])
def test_route_access(api, method, path) -> None:
    needed = ROUTE_ROLES.get((method, path), Role.admin)  # unknown: checked above, strictest here
    anonymous = _call(api, method, path, {})
    wrong = _call(api, method, path, {"Authorization": "Bearer not-a-configured-token"})
    basic = _call(api, method, path, {"Authorization": "Basic dXNlcjpwYXNz"})
    if needed is None:
        for r in (anonymous, wrong, basic):
            assert r.status_code not in (401, 403), r.text
        return
    for r in (anonymous, wrong, basic):
        assert r.status_code == 401, r.text
        assert r.headers["www-authenticate"].startswith("Bearer")
        assert r.headers["content-type"] == "application/problem+json"
    assert 'error="invalid_token"' in wrong.headers["www-authenticate"]
    for role in Role:
        r = _call(api, method, path, api.auth(role))
        if role >= needed:
            assert r.status_code not in (401, 403) and r.status_code < 500, (role, r.text)
        else:
            assert r.status_code == 403, (role, r.text)
            assert f"needs {needed.name} or higher" in r.json()["detail"]


def test_roles_form_a_ladder() -> None:
    assert sorted(Role) == [Role.viewer, Role.operator, Role.reviewer, Role.admin]
    assert Role.parse("reviewer") is Role.reviewer and Role.parse(Role.admin) is Role.admin
    with pytest.raises(
        ValueError, match="unknown role 'root': expected one of viewer, operator, reviewer, admin"
    ):
        Role.parse("root")


def test_unknown_paths_need_a_token_too(api) -> None:
    for headers, challenge in (
        ({}, 'Bearer realm="netwarden"'),
        ({"Authorization": "Bearer wrong"}, 'Bearer realm="netwarden", error="invalid_token"'),
    ):
        # the same answer as on a path that exists: nothing tells the two apart
        unknown = api.client.get("/api/v1/secret-thing", headers=headers)
        known = api.client.get("/api/v1/anomalies", headers=headers)
        for r in (unknown, known):
            assert (r.status_code, r.headers["www-authenticate"]) == (401, challenge)
        assert unknown.json() | {"instance": ""} == known.json() | {"instance": ""}
        assert api.client.delete("/api/v1/anomalies", headers=headers).status_code == 401
    assert api.client.get("/api/v1/secret-thing", headers=api.auth()).status_code == 404
    # a malformed body is not validated (and described) before the token is checked
    for headers in ({}, {"Authorization": "Bearer wrong"}):
        r = api.client.post("/api/v1/anomalies/1/suppress", headers=headers, content=b"{not json")
        assert r.status_code == 401, r.text
    r = api.client.post(
        "/api/v1/anomalies/1/suppress", headers=api.auth(Role.operator), content=b"{not json"
    )
    assert r.status_code == 422


# ------------------------------------------------------------------------------- tokens


def test_new_token_round_trip() -> None:
    token, entry = new_token("ci-deployer", "operator")
    assert len(token) >= 40 and token not in entry.line
    assert (entry.name, entry.role, entry.sha256) == (
        "ci-deployer",
        Role.operator,
        hash_token(token),
    )
    assert entry.line == f"ci-deployer:operator:{entry.sha256}"
    assert list(tokens_from_env(entry.line)) == [entry]
    table = TokenTable([entry])
    assert table.authenticate(token) == entry
    assert table.authenticate(token + "x") is None and table.authenticate("") is None
    assert new_token("ci-deployer", "operator")[0] != token
    with pytest.raises(ValueError, match="unknown role"):
        new_token("x", "superuser")
    with pytest.raises(ValueError, match="name"):
        new_token("has:colon", "viewer")
    assert entry.sha256 not in repr(table)


def test_tokens_from_yaml_and_json_files(tmp_path) -> None:
    t1, e1 = new_token("alice", "viewer")
    t2, e2 = new_token("bob", "admin")
    (tmp_path / "tokens.yaml").write_text(yaml.safe_dump([e1.to_dict(), e2.to_dict()]))
    (tmp_path / "tokens.json").write_text(json.dumps({"tokens": [e1.to_dict()]}))
    from_yaml = tokens_from_file(tmp_path / "tokens.yaml")
    assert (from_yaml.authenticate(t1), from_yaml.authenticate(t2)) == (e1, e2)
    assert list(tokens_from_file(tmp_path / "tokens.json")) == [e1]
    upper = {**e1.to_dict(), "sha256": e1.sha256.upper()}  # hex digits in either case
    (tmp_path / "upper.yml").write_text(yaml.safe_dump([upper]))
    assert tokens_from_file(tmp_path / "upper.yml").authenticate(t1) == e1
    (tmp_path / "empty.yaml").write_text("")
    assert len(tokens_from_file(tmp_path / "empty.yaml")) == 0


def test_tokens_from_the_environment_and_merged(tmp_path, monkeypatch) -> None:
    t1, e1 = new_token("alice", "viewer")
    t2, e2 = new_token("ci", "operator")
    t3, e3 = new_token("ops", "reviewer")
    path = tmp_path / "tokens.yaml"
    path.write_text(yaml.safe_dump([e1.to_dict(), e2.to_dict()]))
    # blanks and a trailing comma are fine
    monkeypatch.setenv(ENV_VAR, f" {e2.line} , {e3.line},")
    value = load_config(None).api_tokens  # the service's configuration reads the variable
    table = load_tokens(path, value)
    assert [table.authenticate(t) for t in (t1, t2, t3)] == [e1, e2, e3]
    assert len(table) == 3  # the same entry in both places counts once
    assert list(load_tokens()) == []  # the process environment is not read here
    assert list(load_tokens(env_value=value)) == [e2, e3]


def test_the_api_uses_tokens_from_the_environment(tmp_path) -> None:
    token, entry = new_token("from-env", "operator")
    api = make_api(tmp_path)
    try:
        app = create_app(api.service, load_tokens(env_value=entry.line))
        client = TestClient(app)
        record(api, window(0, "shop/cart", 1.5))
        r = client.post(
            "/api/v1/anomalies/1/acknowledge", headers={"Authorization": f"Bearer {token}"}
        )
        assert r.status_code == 200 and r.json()["state_actor"] == "from-env"
    finally:
        api.service.store.close()


def test_one_token_under_two_names_is_refused(tmp_path) -> None:
    _, viewer = new_token("alice", "viewer")
    admin = TokenEntry("mallory", Role.admin, viewer.sha256)
    with pytest.raises(TokenConfigError, match="configured twice, as 'alice' .* 'mallory'"):
        TokenTable([viewer, admin])
    path = tmp_path / "t.yaml"
    path.write_text(yaml.safe_dump([viewer.to_dict()]))
    with pytest.raises(TokenConfigError, match=f"{re.escape(str(path))} and {ENV_VAR}"):
        load_tokens(path, admin.line)


SHA = "a" * 64


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (
            "name: alice\nrole: viewer\n",
            "expected a list of {name, role, sha256} entries, got a mapping with keys name, role",
        ),
        ("- just-a-string\n", "entry 1: expected a mapping with name, role, sha256, got str"),
        (
            f"- {{name: alice, role: viewer, sha256: {SHA}}}\n- {{name: bob, role: viewer}}\n",
            "entry 2 (name 'bob'): missing 'sha256'",
        ),
        (
            f"- {{name: bob, role: superuser, sha256: {SHA}}}\n",
            (
                "entry 1 (name 'bob'): unknown role 'superuser': expected one of viewer, operator, "
                "reviewer, admin"
            ),
        ),
        (
            "- {name: bob, role: viewer, sha256: 'abc123'}\n",
            (
                "entry 1 (name 'bob'): sha256 must be 64 hex digits (the SHA-256 of the token, not "
                "the token itself), got 6 characters"
            ),
        ),
        (
            "- {name: bob, role: viewer, token: s3cret}\n",
            (
                "entry 1 (name 'bob'): unknown key 'token': expected name, role, sha256 (entries "
                "hold the token's sha256, never the token)"
            ),
        ),
        (f"- {{name: 'b o b', role: viewer, sha256: {SHA}}}\n", "entry 1 (name 'b o b'): name"),
        ("- [unclosed\n", "not valid YAML"),
        ("42\n", "expected a list of {name, role, sha256} entries, got int"),
    ],
)
def test_bad_token_files_say_where_and_what(tmp_path, content, message) -> None:
    path = tmp_path / "tokens.yaml"
    path.write_text(content)
    with pytest.raises(TokenConfigError) as err:
        tokens_from_file(path)
    assert str(err.value).startswith(f"{path}: ")
    assert message in str(err.value)


def test_bad_token_values_are_never_echoed(tmp_path) -> None:
    token, _ = new_token("x", "viewer")
    path = tmp_path / "tokens.yaml"
    path.write_text(yaml.safe_dump([{"name": "bob", "role": "viewer", "sha256": token}]))
    with pytest.raises(TokenConfigError) as err:
        tokens_from_file(path)
    assert token not in str(err.value) and "not the token itself" in str(err.value)


def test_bad_json_and_unreadable_token_files(tmp_path) -> None:
    path = tmp_path / "tokens.json"
    path.write_text('[{"name": "a",}]')
    with pytest.raises(TokenConfigError, match=r"tokens.json: not valid JSON: .* at line 1"):
        tokens_from_file(path)
    with pytest.raises(TokenConfigError, match="nope.yaml: cannot read the token file"):
        tokens_from_file(tmp_path / "nope.yaml")


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("alice:viewer", "item 1: expected name:role:sha256, got 2 fields"),
        (f"alice:viewer:{SHA},bob:boss:{SHA[:-1]}b", "item 2 (name 'bob'): unknown role 'boss'"),
        ("alice:viewer:xyz", "item 1 (name 'alice'): sha256 must be 64 hex digits"),
        (f":viewer:{SHA}", "item 1: missing 'name'"),
    ],
)
def test_bad_environment_tokens(value, message) -> None:
    with pytest.raises(TokenConfigError) as err:
        load_tokens(env_value=value)
    assert str(err.value).startswith(f"{ENV_VAR}: ") and message in str(err.value)


# ------------------------------------------------------------------------------ OpenAPI


def test_openapi_document_lists_every_route(api) -> None:
    assert api.client.get("/openapi.json").status_code == 401
    r = api.client.get("/openapi.json", headers=api.auth(Role.viewer))
    assert r.status_code == 200
    doc = r.json()
    assert doc["openapi"].startswith("3.") and doc["info"]["title"] == "netwarden"
    documented = {(m.upper(), p) for p, ops in doc["paths"].items() for m in ops}
    # the document and its docs pages are not in it
    undocumented = {("GET", "/openapi.json"), ("GET", "/docs"), ("GET", "/redoc")}
    undocumented.add(("GET", "/docs/assets/{name}"))
    served = {route for route in ROUTES if route not in undocumented}
    assert documented == served
    assert all(
        p.startswith("/api/v1/") for _, p in served if p not in ("/healthz", "/readyz", "/metrics")
    )
    ids = [op["operationId"] for ops in doc["paths"].values() for op in ops.values()]
    assert len(set(ids)) == len(ids)
    assert "anomalies-read_anomalies" in ids and "health-readyz" in ids
    assert doc["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            needs_token = ROUTE_ROLES[method.upper(), path] is not None
            assert bool(op.get("security")) == needs_token, path
            for status, response in op["responses"].items():
                if status.startswith(("4", "5")):
                    assert list(response["content"]) == ["application/problem+json"], path
                    assert response["content"]["application/problem+json"]["schema"] == {
                        "$ref": "#/components/schemas/ProblemPublic"
                    }
            # every JSON route declares a *Public response model (not the metrics, the pictures)
            if path != "/metrics" and not path.endswith(".png"):
                success = next(s for s in ("200", "201") if s in op["responses"])
                schema = op["responses"][success]["content"]["application/json"]["schema"]
                assert schema["$ref"].endswith("Public"), path


def test_openapi_names_the_public_url(tmp_path) -> None:
    api = make_api(tmp_path, public_url="https://nw.example.com/")
    try:
        doc = api.client.get("/openapi.json", headers=api.auth()).json()
        assert doc["servers"] == [{"url": "https://nw.example.com"}]
    finally:
        api.service.store.close()


def test_every_route_module_is_documented(api) -> None:
    paths = api.client.get("/openapi.json", headers=api.auth()).json()["paths"]
    tags = {op["tags"][0] for ops in paths.values() for op in ops.values()}
    assert tags == {
        "anomalies",
        "incidents",
        "changes",
        "identities",
        "drift",
        "models",
        "proposals",
        "health",
    }

"""The interactive API docs, served offline: Swagger UI at ``/docs``, ReDoc at ``/redoc``.

Their scripts and styles are served by this app from ``/docs/assets/`` (the files ship in the
``fastapi-offline`` package: Swagger UI is Apache-2.0, ReDoc MIT), so the pages work in a
cluster without Internet access and load nothing from a CDN.

The pages answer without a token (they hold nothing but the viewer), while the OpenAPI document
they render keeps needing one, like every other path (which paths exist is not told to whoever
asks; Kubernetes, too, serves its OpenAPI to authenticated callers only). So each page first
asks for a token, fetches ``openapi.json`` with it, and only then renders; Swagger UI is also
authorised with it for "Try it out" (its Authorize button switches tokens). The token stays in
the page's memory: it is not stored, and is sent to this server only. Every URL in the pages is
relative, so they work behind a proxy that serves the API under a path prefix.
"""

from __future__ import annotations

import json
from importlib.resources import files
from pathlib import Path
from string import Template
from typing import Final

from fastapi import APIRouter
from fastapi.responses import FileResponse, HTMLResponse

from netwarden.api.problems import ProblemError

__all__ = ["ASSETS_PREFIX", "DOCS_PATHS", "is_docs_path", "router"]

ASSETS_PREFIX: Final = "/docs/assets/"
#: The pages, served without a token (their assets too: every path under ASSETS_PREFIX).
DOCS_PATHS: Final = frozenset({"/docs", "/redoc"})
#: The files served under ASSETS_PREFIX, and their media types; nothing else is.
_ASSETS: Final = {
    "swagger-ui-bundle.js": "text/javascript",
    "swagger-ui.css": "text/css",
    "redoc.standalone.js": "text/javascript",
    "favicon.png": "image/png",
}
_ASSET_CACHE: Final = "public, max-age=86400"

router = APIRouter(tags=["docs"], include_in_schema=False)


def is_docs_path(path: str) -> bool:
    """Whether ``path`` is a docs page or one of their assets (served without a token)."""
    return path in DOCS_PATHS or path.startswith(ASSETS_PREFIX)


def _asset_dir() -> Path:
    return Path(str(files("fastapi_offline") / "static"))


# Relative URLs: /docs and /redoc sit at the root, so "openapi.json" and "docs/assets/..."
# resolve under whatever path prefix a proxy serves the app at.
_PAGE: Final = Template("""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="referrer" content="no-referrer">
<title>$title</title>
<link rel="icon" type="image/png" href="docs/assets/favicon.png">
$head
<style>
  #nw-token { max-width: 40rem; margin: 3rem auto; font-family: sans-serif; line-height: 1.4; }
  #nw-token input { width: 100%; padding: .5rem; font-family: monospace; box-sizing: border-box; }
  #nw-token button { margin-top: .75rem; padding: .5rem 1rem; }
  #nw-error { color: #b00020; }
</style>
</head>
<body>
<form id="nw-token" autocomplete="off">
  <h1>$title</h1>
  <p>The API description needs a token with the viewer role or higher. Paste a bearer token
  (<code>netwarden token --name NAME --role viewer</code> creates one; <code>netwarden serve</code>
  writes an admin token to <code>admin.token</code> in its data directory when no tokens are
  configured). It stays in this page's memory and is sent to this server only.</p>
  <label for="nw-token-value">Bearer token</label>
  <input type="password" id="nw-token-value" required autofocus>
  <button type="submit">Show the API</button>
  <p id="nw-error" role="alert"></p>
</form>
<div id="nw-docs"></div>
<script src="docs/assets/$script"></script>
<script>
"use strict";
function render(spec, token) {
$render
}
document.getElementById("nw-token").addEventListener("submit", async (event) => {
  event.preventDefault();
  const token = document.getElementById("nw-token-value").value.trim();
  const error = document.getElementById("nw-error");
  error.textContent = "";
  let response;
  try {
    response = await fetch($openapi, { headers: { Authorization: "Bearer " + token } });
  } catch (failure) {
    error.textContent = "Cannot reach the server: " + failure;
    return;
  }
  if (!response.ok) {
    let detail = response.statusText;
    try { detail = (await response.json()).detail || detail; } catch (ignored) {}
    error.textContent = response.status + ": " + detail;
    return;
  }
  const spec = await response.json();
  event.target.hidden = true;
  render(spec, token);
});
</script>
</body>
</html>
""")

# Swagger UI: "bearer" is the security scheme of the OpenAPI document (netwarden.api.deps).
_SWAGGER_RENDER: Final = """\
  let ui = null;
  const authorize = () => { if (ui) ui.preauthorizeApiKey("bearer", token); };
  ui = SwaggerUIBundle({
    spec: spec,
    dom_id: "#nw-docs",
    presets: [SwaggerUIBundle.presets.apis, SwaggerUIBundle.SwaggerUIStandalonePreset],
    layout: "BaseLayout",
    deepLinking: true,
    showExtensions: true,
    showCommonExtensions: true,
    onComplete: authorize,
  });
  authorize();"""

_REDOC_RENDER: Final = """\
  Redoc.init(spec, { hideDownloadButton: false }, document.getElementById("nw-docs"));"""


def _page(title: str, script: str, render: str, head: str = "") -> str:
    return _PAGE.substitute(
        title=title,
        head=head,
        script=script,
        render=render,
        openapi=json.dumps("openapi.json"),
    )


_SWAGGER_PAGE: Final = _page(
    "netwarden API",
    "swagger-ui-bundle.js",
    _SWAGGER_RENDER,
    head='<link rel="stylesheet" type="text/css" href="docs/assets/swagger-ui.css">',
)
_REDOC_PAGE: Final = _page("netwarden API reference", "redoc.standalone.js", _REDOC_RENDER)


@router.get("/docs", response_class=HTMLResponse)
def swagger_ui() -> HTMLResponse:
    """Swagger UI: browse the API and try its routes with a token."""
    return HTMLResponse(_SWAGGER_PAGE)


@router.get("/redoc", response_class=HTMLResponse)
def redoc() -> HTMLResponse:
    """ReDoc: the API reference, read-only."""
    return HTMLResponse(_REDOC_PAGE)


@router.get("/docs/assets/{name}", response_class=FileResponse)
def docs_asset(name: str) -> FileResponse:
    """A script, style or icon of the docs pages, from the installed package."""
    media_type = _ASSETS.get(name)
    if media_type is None:
        raise ProblemError(404, f"no docs asset named {name!r}")
    return FileResponse(
        _asset_dir() / name, media_type=media_type, headers={"Cache-Control": _ASSET_CACHE}
    )

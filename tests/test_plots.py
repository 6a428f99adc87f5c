"""Pictures: the API's score PNG (decodes, its size, changes with the data, roles) and the
client's figures (scores, contributions, the service graph's highlighted edges); alerts link to
the PNG."""

from __future__ import annotations

import io
from datetime import timedelta

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from netwarden.api.auth import Role
from netwarden.client.plots import (
    EDGE_COLOURS,
    contributions,
    png,
    score_over_time,
    service_graph,
)
from netwarden.detector.alerts.alertmanager import alert, score_plot_url
from tests.test_api import STEP, T0, make_api, window

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _image(data: bytes) -> Image.Image:
    assert data.startswith(PNG_SIGNATURE)
    image = Image.open(io.BytesIO(data))
    image.load()  # decodes every pixel: a truncated file fails here
    return image


def _has(image: Image.Image, hex_colour: str, tolerance: int = 12) -> bool:
    """Whether some pixel is (nearly) this colour."""
    rgb = np.asarray(image.convert("RGB"), dtype=int)
    want = np.array([int(hex_colour[i : i + 2], 16) for i in (1, 3, 5)])
    return bool((np.abs(rgb - want).max(axis=2) <= tolerance).any())


@pytest.fixture
def api(tmp_path):
    api = make_api(tmp_path)
    yield api
    api.service.store.close()


def test_score_png_decodes_and_changes_with_the_data(api) -> None:
    url = "/api/v1/identities/shop/cart/score.png"
    api.service.store.record([window(i, "shop/cart", 0.2 + i / 100) for i in range(20)])
    r = api.get(url)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "image/png"
    first = _image(r.content)
    assert first.size == (1000, 360) and first.format == "PNG"
    assert not _has(first, "#dc2626")  # nothing anomalous: no red mark

    api.service.store.record([window(20 + i, "shop/cart", 2.5) for i in range(3)])
    second = api.get(url).content
    assert second != r.content and _has(_image(second), "#dc2626")  # marked, shaded
    # a time range picks the windows drawn
    assert api.get(url, params={"until": (T0 + 5 * STEP).isoformat()}).content != second
    assert api.get(url, params={"limit": 0}).status_code == 422

    assert api.client.get(url).status_code == 401  # a token is needed, a viewer's is enough
    assert api.get(url, role=Role.viewer).status_code == 200
    missing = api.get("/api/v1/identities/shop/none/score.png")
    assert missing.status_code == 404 and "shop/none" in missing.json()["detail"]


def test_alerts_link_to_the_score_png(api) -> None:
    """The link in an alert is the route the API serves."""
    (a,) = api.service.store.record([window(0, "shop/cart", 2.0)])
    sent = alert(a, public_url="http://testserver/", ends_at=T0 + timedelta(hours=1))
    link = sent["annotations"]["score_plot"]
    assert link == score_plot_url("http://testserver", "shop/cart")
    assert link == "http://testserver/api/v1/identities/shop/cart/score.png"
    assert _image(api.get(link).content).size == (1000, 360)


def test_score_over_time_without_windows_is_an_empty_plot() -> None:
    empty = pd.DataFrame(columns=["window_start", "score", "threshold", "anomalous"])
    assert _image(png(score_over_time(empty))).size == (1000, 360)
    with pytest.raises(ValueError, match="threshold"):
        score_over_time(pd.DataFrame({"window_start": [T0], "score": [1.0]}))


def test_contributions_are_bars_strongest_on_top() -> None:
    reasons = [
        {"feature": "egress_distinct_dst_ports", "contribution": 2.0, "value": 80, "baseline": 3},
        {"feature": "egress_tcp_resets", "contribution": 0.5, "value": 40, "baseline": 0},
        {"feature": "egress_flows", "contribution": 1.0, "value": 900, "baseline": 100},
    ]
    fig = contributions(reasons, title="why")
    ax = fig.axes[0]
    labels = [t.get_text() for t in ax.get_yticklabels()]
    assert labels == ["egress_tcp_resets", "egress_flows", "egress_distinct_dst_ports"]
    assert [p.get_width() for p in ax.patches] == [0.5, 1.0, 2.0]
    assert _image(png(fig)).size[0] == 800
    assert _image(png(contributions([]))).size[0] == 800  # nothing to explain: still a picture


def test_service_graph_highlights_new_and_anomalous_edges() -> None:
    edges = pd.DataFrame(
        {
            "source": ["shop/web", "shop/web", "shop/cart", "shop/cart", "db/pg"],
            "target": ["shop/cart", "shop/catalog", "db/pg", "reserved:world", "shop/x"],
            "flows": [100, 50, 80, 3, 1],
        }
    )
    plain = _image(png(service_graph(edges, namespace="shop")))
    assert not _has(plain, EDGE_COLOURS["anomalous"]) and not _has(plain, EDGE_COLOURS["new"])
    marked = edges.assign(status=["normal", "new", "normal", "anomalous", "normal"])
    fig = service_graph(marked, namespace="shop")
    image = _image(png(fig))
    assert _has(image, EDGE_COLOURS["anomalous"]) and _has(image, EDGE_COLOURS["new"])
    # db/pg -> shop/x has an end in shop: drawn; a namespace with none of them: no edges
    texts = {t.get_text() for t in fig.axes[0].texts}
    assert {"web", "cart", "catalog", "db/pg", "reserved:world", "x"} <= texts
    nothing = service_graph(edges, namespace="billing")
    assert "no edges" in {t.get_text() for t in nothing.axes[0].texts}
    with pytest.raises(ValueError, match="unknown edge status"):
        service_graph(edges.assign(status="odd"))

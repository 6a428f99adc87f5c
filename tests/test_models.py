"""Training, model artifacts (safe loading, tamper and compatibility checks) and scoring."""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
import skops.io as sio

from netwarden.detector.explain import examples_text, reason_text, summary
from netwarden.detector.judge import WindowJudge
from netwarden.detector.scorer import Scorer
from netwarden.detector.stream import StreamScorer
from netwarden.generator import generate
from netwarden.ingest.pipeline import build_windows
from netwarden.ingest.windows import ClosedWindow, WindowBuilder, WindowConfig, windows_to_rows
from netwarden.models.artifact import ArtifactError, list_versions, load_bundle, save_bundle
from netwarden.models.edges import EdgeMemory
from netwarden.models.forest import anomaly_score
from netwarden.models.spec import LOG_COLUMNS, MODEL_COLUMNS, raw_matrix, transform
from netwarden.models.training import ModelBundle, NotEnoughData, TrainConfig, train
from tests.modelfactory import train_on_generated

T0 = datetime(2026, 2, 2, tzinfo=UTC)


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[ModelBundle, list[ClosedWindow], Path]:
    out = tmp_path_factory.mktemp("models")
    bundle, windows = train_on_generated(out / "train", hours=5, seed=41, start=T0)
    return bundle, windows, out


def test_columns_and_transform() -> None:
    assert len(MODEL_COLUMNS) == len(set(MODEL_COLUMNS))
    assert (
        "egress_flows" in LOG_COLUMNS
        and "egress_http_4xx_share" not in LOG_COLUMNS
        and "egress_distinct_peers" in LOG_COLUMNS
    )
    row = dict.fromkeys(MODEL_COLUMNS, 0.0)
    row.update(window_start=T0 + timedelta(hours=6), egress_flows=np.e - 1)
    x = transform(raw_matrix([row]))
    assert x[0, MODEL_COLUMNS.index("egress_flows")] == pytest.approx(1.0)
    assert x[0, MODEL_COLUMNS.index("time_of_day_sin")] == pytest.approx(1.0)  # 06:00


def test_models_per_identity_namespace_and_global(trained) -> None:
    bundle, _windows, _ = trained
    keys = set(bundle.models)
    assert "global" in keys
    assert "identity:monitoring/prometheus" in keys
    assert any(k.startswith("namespace:") for k in keys)
    model, fallback = bundle.model_for("monitoring/prometheus", "monitoring")
    assert model.key == "identity:monitoring/prometheus" and not fallback
    model, fallback = bundle.model_for("newns/newapp", "newns")
    assert model.key == "global" and fallback


def test_threshold_matches_the_expected_rate_on_training_data(trained) -> None:
    bundle, windows, _ = trained
    rows = windows_to_rows(windows)
    for key, model in bundle.models.items():
        if not key.startswith("identity:"):
            continue
        mine = sorted(
            (r for r in rows if f"identity:{r['identity']}" == key), key=lambda r: r["window_start"]
        )[bundle.config.warmup_windows :]
        scores = model.score(transform(raw_matrix(mine)))
        assert (scores > model.threshold).mean() <= 2 * bundle.config.expected_rate + 1 / len(mine)


def test_score_direction_is_flipped_once(trained) -> None:
    bundle, _, _ = trained
    model = bundle.models["global"]
    x = np.zeros((1, len(MODEL_COLUMNS)))
    assert anomaly_score(model.pipeline, x)[0] == -model.pipeline.score_samples(x)[0]


def test_artifact_round_trip_gives_the_same_scores(trained, tmp_path) -> None:
    bundle, windows, _ = trained
    folder = save_bundle(bundle, tmp_path / "m")
    assert (tmp_path / "m" / "CURRENT").read_text().strip() == folder.name
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["data_hash"] == bundle.data_hash and manifest["rows"] == bundle.rows
    assert {"python", "numpy", "scikit-learn", "skops", "netwarden"} <= set(manifest["libraries"])
    loaded = load_bundle(tmp_path / "m")
    a = Scorer(bundle).score(windows[-200:])
    b = Scorer(loaded).score(windows[-200:])
    assert [s.score for s in a] == [s.score for s in b]
    assert loaded.edges.to_json() == bundle.edges.to_json() and len(loaded.edges) > 0


def test_manifest_records_the_windows_and_old_manifests_still_load(trained, tmp_path) -> None:
    """The bundle's WindowConfig is saved whole and comes back; a manifest written before it was
    recorded (``window_seconds`` alone) loads with the other settings at their defaults."""
    bundle, _, _ = trained
    assert bundle.windows == WindowConfig()  # what the factory's builder used
    windows = WindowConfig(window_seconds=30, allowed_lateness=5, max_skew=120)
    bundle = dataclasses.replace(bundle, windows=windows)
    folder = save_bundle(bundle, tmp_path / "m")
    path = folder / "manifest.json"
    manifest = json.loads(path.read_text())
    assert manifest["windows"] == dataclasses.asdict(windows)
    assert manifest["window_seconds"] == 30  # still readable by earlier releases
    assert load_bundle(tmp_path / "m").windows == windows
    assert list_versions(tmp_path / "m")[0].window_seconds == 30
    del manifest["windows"]
    path.write_text(json.dumps(manifest))
    assert load_bundle(tmp_path / "m").windows == WindowConfig(window_seconds=30)
    manifest["windows"] = {**dataclasses.asdict(windows), "from_a_newer_release": 1}
    path.write_text(json.dumps(manifest))
    assert load_bundle(tmp_path / "m").windows == windows
    manifest["windows"]["window_seconds"] = 0
    path.write_text(json.dumps(manifest))
    with pytest.raises(ArtifactError, match="corrupted manifest.*window_seconds must be between"):
        load_bundle(tmp_path / "m")


def test_tampered_model_file_is_refused(trained, tmp_path) -> None:
    bundle, _, _ = trained
    folder = save_bundle(bundle, tmp_path / "m")
    victim = sorted((folder / "models").glob("*.skops"))[0]
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 0xFF
    victim.write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match=r"changed since it was written.*refusing"):
        load_bundle(tmp_path / "m")


def test_tampered_flat_arrays_are_refused(trained, tmp_path) -> None:
    """A model's .npz is checked like its skops file: a changed byte is refused with its name;
    with the digest fixed too (no signing key), arrays that are not a flat forest (a pickled
    object, a tree that loops) are refused, never run or walked."""
    import hashlib
    import io

    bundle, _, _ = trained
    folder = save_bundle(bundle, tmp_path / "m")
    victim = sorted((folder / "models").glob("*.npz"))[0]
    original = victim.read_bytes()
    data = bytearray(original)
    data[len(data) // 2] ^= 0xFF
    victim.write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match=rf"{victim.name}: changed since it was written"):
        load_bundle(tmp_path / "m")

    path = folder / "manifest.json"
    manifest = json.loads(path.read_text())

    def planted(content: bytes) -> str:
        victim.write_bytes(content)
        for entry in manifest["models"]:  # an attacker able to rewrite the manifest too
            if entry["flat"]["file"] == f"models/{victim.name}":
                entry["flat"]["sha256"] = hashlib.sha256(content).hexdigest()
        path.write_text(json.dumps(manifest))
        with pytest.raises(ArtifactError) as info:
            load_bundle(tmp_path / "m")
        return str(info.value)

    assert "cannot be loaded" in planted(bytes(data))
    with np.load(io.BytesIO(original)) as npz:
        arrays = {name: npz[name] for name in npz.files}
    evil = io.BytesIO()
    np.savez(evil, **{**arrays, "center": np.array([Evil()], dtype=object)})
    assert "cannot be loaded" in planted(evil.getvalue())
    loop = dict(arrays)
    loop["children_left"] = loop["children_left"].copy()
    loop["children_left"][1 if loop["children_left"][1] >= 0 else 0] = 0  # back to the root
    looped = io.BytesIO()
    np.savez(looped, **loop)
    assert "not after their parent" in planted(looped.getvalue())


class Evil:
    """Stands for any type an attacker could ask skops to rebuild."""


def test_untrusted_types_are_refused_even_with_a_matching_checksum(trained, tmp_path) -> None:
    """Refused when the skops file is read: at once for a version without flat arrays, and
    when its pipeline is first asked for when the model is scored from its arrays."""
    bundle, _, _ = trained
    folder = save_bundle(bundle, tmp_path / "m")
    victim = sorted((folder / "models").glob("*.skops"))[0]
    sio.dump({"x": Evil()}, victim)
    manifest = json.loads((folder / "manifest.json").read_text())
    import hashlib

    for entry in manifest["models"]:  # an attacker able to rewrite the manifest too
        if entry["file"] == f"models/{victim.name}":
            entry["sha256"] = hashlib.sha256(victim.read_bytes()).hexdigest()
            key = entry["key"]
    (folder / "manifest.json").write_text(json.dumps(manifest))
    model = load_bundle(tmp_path / "m").models[key]  # scored from its arrays: not read yet
    with pytest.raises(ArtifactError, match="types netwarden does not trust"):
        _ = model.pipeline
    for entry in manifest["models"]:  # as a version saved before the arrays existed
        del entry["flat"]
    (folder / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ArtifactError, match="types netwarden does not trust"):
        load_bundle(tmp_path / "m")


def test_incompatible_columns_and_format_are_explained(trained, tmp_path) -> None:
    bundle, _, _ = trained
    folder = save_bundle(bundle, tmp_path / "m")
    path = folder / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest["columns"] = [*manifest["columns"][:-3], "egress_quantum_flux"]
    path.write_text(json.dumps(manifest))
    with pytest.raises(ArtifactError, match="missing .*time_of_day.*unknown egress_quantum_flux"):
        load_bundle(tmp_path / "m")
    manifest["format"] = "netwarden-models/0"
    path.write_text(json.dumps(manifest))
    with pytest.raises(ArtifactError, match="cannot be read by netwarden"):
        load_bundle(tmp_path / "m")
    path.write_text("{not json")
    with pytest.raises(ArtifactError, match="corrupted manifest"):
        load_bundle(tmp_path / "m")


def test_missing_model_folder_messages(tmp_path) -> None:
    with pytest.raises(ArtifactError, match="no such model folder"):
        load_bundle(tmp_path / "absent")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ArtifactError, match="holds no trained model"):
        load_bundle(tmp_path / "empty")


def test_not_enough_data_says_how_much(trained) -> None:
    _, windows, _ = trained
    rows = windows_to_rows(windows)[:30]
    with pytest.raises(NotEnoughData, match=r"need at least 120"):
        train(rows)
    with pytest.raises(NotEnoughData, match=r"at 30 s windows"):
        train(rows, windows=WindowConfig(window_seconds=30))


def test_train_config_validation() -> None:
    with pytest.raises(ValueError, match="expected_rate must be between"):
        TrainConfig(expected_rate=0.5)
    with pytest.raises(ValueError, match="min_windows must be between"):
        TrainConfig(min_windows=1)


def test_reason_texts() -> None:
    assert (
        reason_text("egress_distinct_dst_ports", 212, 3)
        == "contacted about 212 distinct destination ports (baseline 3)"
    )
    assert (
        reason_text("egress_dns_nxdomain_share", 0.9, 0.05)
        == "got NXDOMAIN for 90% of its DNS answers (baseline 5%)"
    )
    assert (
        summary(
            "cart",
            [
                "contacted 212 distinct destination ports (baseline 3)",
                "contacted 38 peers (baseline 4)",
            ],
        )
        == "cart contacted 212 distinct destination ports (baseline 3) and contacted 38 peers (baseline 4)"
    )


def test_examples_text() -> None:
    examples = {
        "egress": {
            "to": [
                {"peer": "shop/catalog", "port": "TCP/8080", "flows": 41},
                {"peer": "world:203.0.113.9", "port": "TCP/443", "flows": 1200},
            ],
            "dns_names": ["a.example.net"],
            "drop_reasons": {"POLICY_DENIED": 30},
        },
        "ingress": {"from": [], "dns_names": [], "drop_reasons": {}},
    }
    assert examples_text(examples, "egress", limit=1) == (
        "to shop/catalog TCP/8080 (41 flows) and 1 more; DNS names: a.example.net; "
        "drops: POLICY_DENIED 30"
    )
    assert examples_text(examples, "ingress") == ""


@pytest.fixture(scope="module", params=[(43, 1.0), (44, 0.4)], ids=["rate1.0", "rate0.4"])
def trained_day(request, tmp_path_factory) -> tuple[ModelBundle, Path, float]:
    """A whole day of training, so the daily cycle is normal; two clusters (the seed also draws
    the topology: nodes, replica counts, addresses) at two traffic rates."""
    seed, rate = request.param
    out = tmp_path_factory.mktemp(f"day{seed}")
    bundle, _ = train_on_generated(out / "train", hours=24, seed=seed, start=T0, rate=rate)
    return bundle, out, rate


@pytest.mark.slow
@pytest.mark.parametrize(
    ("seed", "hour", "attacks"),
    [
        (101, 9, ["port_scan", "exfiltration", "drop_storm"]),
        (202, 20, ["lateral_movement", "dns_tunnel", "c2_beacon"]),
    ],
)
def test_attacks_detected_and_quiet_traffic_not(trained_day, seed, hour, attacks) -> None:
    """Seeds the benchmark does not use; three hours of the next day, at the training rate."""
    bundle, out, rate = trained_day
    start = T0 + timedelta(days=1, hours=hour)
    test = generate(
        out / f"test{seed}", hours=3, seed=seed, start=start, attacks=attacks, rate=rate
    )
    builder = WindowBuilder()
    scored: list = []
    judge = WindowJudge(Scorer(bundle), bundle.edges)
    stream = StreamScorer(judge, lambda _, results: scored.extend(results))
    build_windows([test.flows_path], stream.add, builder=builder)
    stream.flush()

    def during(s, lb) -> bool:
        return s.window_end > lb.start and s.window_start < lb.end

    for label in test.labels:
        hits = [
            s for s in scored if s.anomalous and s.identity == label.identity and during(s, label)
        ]
        assert hits, f"{label.scenario} on {label.identity} not detected"
        assert hits[0].reasons and hits[0].summary.startswith(label.identity.split("/")[1])
        # by the end of the third whole window of the attack (the one it starts in may hold
        # only its first second); a vendor-named beacon by its rhythm, from its eighth check-in
        first_boundary = -(-label.start.timestamp() // 60) * 60
        windows = 9 if label.scenario == "c2_beacon" else 3
        assert hits[0].window_end.timestamp() <= first_boundary + windows * 60, label.scenario
    quiet = [s for s in scored if not any(during(s, lb) for lb in test.labels)]
    false = [s for s in quiet if s.anomalous]
    assert len(false) <= max(2, len(quiet) // 500), [(s.identity, s.summary) for s in false]


def test_list_versions(trained, tmp_path) -> None:
    from netwarden.models.artifact import list_versions

    bundle, _, _ = trained
    assert list_versions(tmp_path / "none") == []
    first = save_bundle(bundle, tmp_path)
    (tmp_path / "not-a-version").mkdir()
    versions = list_versions(tmp_path)
    assert [v.version for v in versions] == [first.name] and versions[0].current
    assert versions[0].rows == bundle.rows and versions[0].models == len(bundle.models)
    assert set(versions[0].identities) == {
        k.split(":", 1)[1] for k in bundle.models if k.startswith("identity:")
    }


class _Batches(list):
    def append_pair(self, windows: list[ClosedWindow], scored: list) -> None:
        self.append((windows, scored))


def test_stream_scorer_batches_do_not_change_verdicts(trained) -> None:
    """Every window is judged once, in order; the verdicts are the same whatever the batches
    (the judge takes each batch's windows in the order they closed)."""
    bundle, windows, _ = trained
    runs = []
    for size, max_windows in ((50, 10_000), (7, 64), (len(windows), 10_000)):
        batches = _Batches()
        judge = WindowJudge(Scorer(bundle), EdgeMemory.from_json(bundle.edges.to_json()))
        stream = StreamScorer(judge, batches.append_pair, max_windows=max_windows)
        for i in range(0, len(windows), size):
            stream.add(windows[i : i + size])
        stream.flush()
        assert [w for ws, _ in batches for w in ws] == windows
        runs.append([(s.anomalous, round(s.score, 9), s.changes) for _, ss in batches for s in ss])
    assert runs[0] == runs[1] == runs[2]


def test_sketch_estimates_read_as_whole_numbers() -> None:
    assert (
        reason_text("ingress_distinct_dst_ports", 39.8, 2)
        == "was contacted on about 40 distinct ports (baseline 2)"
    )
    assert (  # an estimate, and a median of estimates, read as whole numbers
        reason_text("egress_distinct_dst_ports", 227.499, 3.5)
        == "contacted about 227 distinct destination ports (baseline 4)"
    )
    assert (  # exact up to the sketch's limit: no "about"
        reason_text("egress_distinct_peers", 32, 2) == "contacted 32 peers (baseline 2)"
    )
    assert (
        reason_text("egress_dns_qname_len_mean", 37.5, 0)
        == "queried DNS names 37.5 characters long on average (baseline 0)"
    )


def test_the_sketch_limit_of_the_reasons_is_the_features_one() -> None:
    from netwarden.detector.explain import SKETCH_EXACT_LIMIT
    from netwarden.ingest.features import SideStats

    side = SideStats()
    assert side.sketch("peers").exact_limit == SKETCH_EXACT_LIMIT


def test_reason_counts_agree_with_their_nouns() -> None:
    assert reason_text("egress_distinct_peers", 1, 1) == "contacted 1 peer (baseline 1)"
    assert reason_text("egress_dns_queries", 1, 2) == "made 1 DNS query (baseline 2)"
    assert reason_text("egress_dns_queries", 2, 1) == "made 2 DNS queries (baseline 1)"
    assert (
        reason_text("ingress_world_distinct_peers", 1, 0)
        == "was contacted by 1 internet address (baseline 0)"
    )
    assert reason_text("egress_tcp_resets", 1, 0.4) == "saw 1 TCP reset (baseline 0)"
    assert reason_text("egress_flows", 2.5, 2.5) == "sent 3 flows (baseline 3)"  # halves up


def test_entropy_reads_as_equally_used_ports() -> None:
    assert (
        reason_text("egress_dst_port_entropy", 7.61, 1.0)
        == "spread its connections evenly over ~195 destination ports "
        "(entropy 7.6 bits; baseline ~2 ports)"
    )
    assert (
        reason_text("ingress_dst_port_entropy", 0.0, 3.0)
        == "was contacted on a single port (entropy 0.0 bits; baseline ~8 ports)"
    )
    assert (
        reason_text("egress_dns_qname_entropy_mean", 4.62, 3.41)
        == "queried random-looking DNS names (4.6 bits of entropy per character; baseline 3.4)"
    )
    assert reason_text("egress_dns_qname_entropy_mean", 3.5, 3.4).startswith(
        "queried DNS names (3.5 bits"
    )

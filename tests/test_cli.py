"""The command line as a user meets it: help, summaries, clear errors, no tracebacks."""

from __future__ import annotations

import subprocess
import sys

import pyarrow.parquet as pq
import pytest

from netwarden.ingest.features import feature_columns
from netwarden.ingest.output import read_windows


def _run(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "netwarden", *args],
        capture_output=True,
        text=stdin is None,
        input=stdin,
        timeout=300,
        check=False,
    )


@pytest.mark.parametrize("command", [[], ["run"], ["generate"], ["windows"], ["features"]])
def test_every_subcommand_has_help(command) -> None:
    proc = _run(*command, "--help")
    assert proc.returncode == 0
    assert "usage: netwarden" in proc.stdout and "-h, --help" in proc.stdout


def _assert_user_error(proc: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    for needle in needles:
        assert needle in proc.stderr, proc.stderr


def test_missing_flow_file(tmp_path) -> None:
    _assert_user_error(
        _run(
            "windows", "--flows", str(tmp_path / "nope.json"), "--out", str(tmp_path / "w.parquet")
        ),
        "nope.json: no such file",
    )


def test_bad_window_value(tmp_path, hubble_samples) -> None:
    _assert_user_error(
        _run(
            "windows",
            "--flows",
            str(hubble_samples[0]),
            "--out",
            str(tmp_path / "w.parquet"),
            "--window",
            "-5",
        ),
        "--window",
        "must be greater than 0",
    )
    _assert_user_error(
        _run(
            "windows",
            "--flows",
            str(hubble_samples[0]),
            "--out",
            str(tmp_path / "w.parquet"),
            "--window",
            "100000",
        ),
        "window_seconds must be between 1 and 86400",
    )


def test_bad_output_suffix_and_unwritable_output(tmp_path, hubble_samples) -> None:
    _assert_user_error(
        _run("windows", "--flows", str(hubble_samples[0]), "--out", str(tmp_path / "w.csv")),
        "must end in .parquet or .jsonl",
    )
    blocker = tmp_path / "file"
    blocker.write_text("x")
    _assert_user_error(
        _run(
            "windows",
            "--flows",
            str(hubble_samples[0]),
            "--out",
            str(blocker / "sub" / "w.parquet"),
        ),
        "cannot write",
    )


def test_unknown_attack_scenario(tmp_path) -> None:
    _assert_user_error(
        _run(
            "generate", "--hours", "1", "--out", str(tmp_path), "--attacks", "port_scan", "teleport"
        ),
        "unknown scenario teleport",
        "dns_tunnel",
    )


def test_bad_lines_are_reported_with_file_and_line(tmp_path, hubble_samples) -> None:
    path = next(p for p in hubble_samples if "5-dns" in p.name)
    lines = path.read_bytes().splitlines()
    lines.insert(2, b'{"flow": {"time": "not a time"}}')
    lines.insert(4, b"garbage")
    bad = tmp_path / "mixed.json"
    bad.write_bytes(b"\n".join(lines) + b"\n")
    proc = _run("windows", "--flows", str(bad), "--out", str(tmp_path / "w.jsonl"))
    assert proc.returncode == 0, proc.stderr
    assert "7 lines: 5 flows, 2 skipped as bad" in proc.stderr
    assert (
        f"{bad}:3: wrong_type: Invalid RFC3339 encoded datetime - at `$.flow.time`" in proc.stderr
    )
    assert f"{bad}:5: not_json" in proc.stderr


def test_windows_parquet_and_metrics(tmp_path, hubble_samples) -> None:
    out = tmp_path / "w.parquet"
    metrics = tmp_path / "ingest.prom"
    path = next(p for p in hubble_samples if "400-tcp" in p.name)
    proc = _run("windows", "--flows", str(path), "--out", str(out), "--metrics-file", str(metrics))
    assert proc.returncode == 0, proc.stderr
    table = pq.read_table(out)
    assert table.num_rows == 10
    assert table.column_names[:5] == [
        "identity",
        "namespace",
        "workload",
        "window_start",
        "window_end",
    ]
    assert set(feature_columns()) <= set(table.column_names)
    assert "bookinfo/productpage" in table.column("identity").to_pylist()
    text = metrics.read_text()
    assert "netwarden_ingest_flows_total 400.0" in text
    assert 'netwarden_ingest_flows_not_counted_total{reason="event_type_5"} 27.0' in text
    assert "netwarden_ingest_late_flows_total 0.0" in text


def test_jsonl_and_parquet_hold_the_same_windows(tmp_path, hubble_samples) -> None:
    path = next(p for p in hubble_samples if "330-dns" in p.name)
    for suffix in ("parquet", "jsonl"):
        assert (
            _run("windows", "--flows", str(path), "--out", str(tmp_path / f"w.{suffix}")).returncode
            == 0
        )
    a = read_windows(tmp_path / "w.parquet").to_pylist()
    b = read_windows(tmp_path / "w.jsonl").to_pylist()
    assert a == b and len(a) == 5
    assert a[0]["egress_dns_queries"] > 0


def test_features_command_lists_the_table() -> None:
    proc = _run("features")
    assert proc.returncode == 0
    assert "dst_port_entropy" in proc.stdout and "NXDOMAIN" in proc.stdout


def test_version() -> None:
    proc = _run("--version")
    assert proc.returncode == 0 and proc.stdout.startswith("netwarden ")


def test_late_flows_in_summary_and_metric(tmp_path) -> None:
    import orjson

    from tests.flowfactory import flow, pod

    a, b = pod("x", "a", 300, "10.244.0.1"), pod("x", "b", 301, "10.244.0.2")
    # time moves on by steps within max_skew (a lone flow far ahead is dropped as future, not
    # followed): the flows at 10 and 11 s arrive after their window closed
    lines = [flow(a, b, seconds=s, sport=i) for i, s in enumerate([0, 50, 100, 10, 11])]
    path = tmp_path / "late.json"
    path.write_bytes(b"\n".join(orjson.dumps(x) for x in lines))
    proc = _run(
        "windows",
        "--flows",
        str(path),
        "--out",
        str(tmp_path / "w.jsonl"),
        "--metrics-file",
        str(tmp_path / "m.prom"),
    )
    assert proc.returncode == 0, proc.stderr
    assert "2 late" in proc.stderr
    assert "netwarden_ingest_late_flows_total 2.0" in (tmp_path / "m.prom").read_text()


@pytest.mark.slow
def test_run_the_embedded_demo(tmp_path) -> None:
    """The offline demo (`netwarden run`), on a shorter day."""
    proc = _run("run", "--hours", "2", "--out", str(tmp_path / "demo"))
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "labelled attacks and what their windows show" in out
    for scenario in (
        "port_scan",
        "lateral_movement",
        "exfiltration",
        "dns_tunnel",
        "c2_beacon",
        "drop_storm",
    ):
        assert scenario in out
    assert (tmp_path / "demo" / "windows.parquet").stat().st_size > 0
    assert "0 skipped as bad" in out


def test_generate_then_windows_from_gzip(tmp_path) -> None:
    out = tmp_path / "gen"
    proc = _run(
        "generate",
        "--hours",
        "1",
        "--seed",
        "5",
        "--out",
        str(out),
        "--attacks",
        "dns_tunnel",
        "--gzip",
        "--start",
        "2026-03-02T12:00:00Z",
    )
    assert proc.returncode == 0, proc.stderr
    assert "wrote 1 attack labels" in proc.stderr
    flows = out / "flows.jsonl.gz"
    labels = (out / "labels.csv").read_text().splitlines()
    assert labels[0] == "scenario,identity,start,end,description"
    assert labels[1].startswith("dns_tunnel,") and "2026-03-02T12:" in labels[1]
    proc = _run("windows", "--flows", str(flows), "--out", str(tmp_path / "w.parquet"))
    assert proc.returncode == 0, proc.stderr
    assert "0 skipped as bad" in proc.stderr and "0 late" in proc.stderr


def test_bad_start_time(tmp_path) -> None:
    _assert_user_error(
        _run("generate", "--hours", "1", "--out", str(tmp_path), "--start", "yesterday"),
        "--start: not an RFC3339 time",
    )


def test_every_command_of_every_group_is_registered_once() -> None:
    from netwarden.cli import cluster, db, detection, lifecycle, remediation, serving, traffic
    from netwarden.cli.main import _COMMANDS, _build_parser

    registered = [command for command, _ in _COMMANDS]
    groups = [traffic, detection, lifecycle, remediation, serving, cluster, db]
    assert sorted(registered) == sorted(c for g in groups for c in g.COMMANDS)
    assert all(command in group.COMMANDS for command, group in _COMMANDS)
    sub = next(a for a in _build_parser()._actions if a.dest == "command")
    assert list(sub.choices) == registered


def test_window_options_become_one_window_config() -> None:
    """--window and --lateness have WindowConfig's defaults and are checked by it; commands
    without --lateness get its default."""
    from netwarden.cli.main import _build_parser
    from netwarden.cli.options import window_config
    from netwarden.errors import UserError
    from netwarden.ingest.windows import WindowConfig

    parser = _build_parser()
    flows = ["--flows", "f.json", "--out", "w.parquet"]
    assert window_config(parser.parse_args(["windows", *flows])) == WindowConfig()
    args = parser.parse_args(["windows", *flows, "--window", "30", "--lateness", "0"])
    assert window_config(args) == WindowConfig(window_seconds=30, allowed_lateness=0)
    args = parser.parse_args(["train", "--flows", "f", "--model-dir", "m", "--window", "120"])
    assert window_config(args) == WindowConfig(window_seconds=120)
    assert window_config(parser.parse_args(["run", "--window", "10"])) == WindowConfig(10)
    args = parser.parse_args(["windows", *flows, "--lateness", "100000"])
    with pytest.raises(UserError, match="allowed_lateness must be between 0 and 86400"):
        window_config(args)


def test_error_text_keeps_brackets(tmp_path) -> None:
    """An error naming a file like "[prod].json" prints the brackets: rich markup is off."""
    missing = tmp_path / "flows [prod] [bold].json"
    proc = _run("windows", "--flows", str(missing), "--out", str(tmp_path / "w.parquet"))
    _assert_user_error(proc, f"--flows {missing}: no such file")


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"", "no valid flows in {path}: the input is empty"),
        (
            b"garbage\n{}\n[1, 2]\n",
            "no valid flows in {path}: 3 lines, 3 skipped as bad (first: {path}:1: not_json",
        ),
    ],
)
def test_windows_without_a_valid_flow_fails_and_writes_nothing(tmp_path, content, expected):
    path = tmp_path / "flows.json"
    path.write_bytes(content)
    out = tmp_path / "w.parquet"
    proc = _run("windows", "--flows", str(path), "--out", str(out))
    _assert_user_error(proc, expected.format(path=path))
    assert not out.exists()


def test_windows_from_empty_stdin_fails(tmp_path) -> None:
    proc = _run("windows", "--flows", "-", "--out", str(tmp_path / "w.jsonl"), stdin=b"")
    assert proc.returncode == 2
    assert b"no valid flows in stdin: the input is empty" in proc.stderr


def _terminal(width: int = 200):
    import io

    from rich.console import Console

    buffer = io.StringIO()
    return Console(file=buffer, force_terminal=True, width=width, markup=False), buffer


def test_generate_progress_counts_hours_of_traffic(tmp_path) -> None:
    from netwarden.commands.traffic import generate

    console, buffer = _terminal()
    generate(
        tmp_path, hours=0.2, seed=1, attacks=[], rate=1.0, start=None, gzip=False, console=console
    )
    shown = buffer.getvalue()
    assert "0.2/0.2 hours of traffic" in shown
    assert "bytes" not in shown and "0/1 " not in shown


def test_progress_bar_units() -> None:
    from netwarden.commands.common import progress_bar

    for unit, expected in (("models", "3/18 models"), ("bytes", "/2.0 kB")):
        console, buffer = _terminal()
        with progress_bar(console, unit=unit) as progress:
            task = progress.add_task("x", total=18 if unit == "models" else 2048)
            progress.update(task, completed=3)
            progress.refresh()
        assert expected in buffer.getvalue()


def test_piped_tables_are_not_cut() -> None:
    """`netwarden features | less`: no 80- or 140-column cut; every description on its row."""
    from netwarden.ingest.features import FEATURES

    proc = _run("features")
    assert proc.returncode == 0
    rows = proc.stdout.splitlines()
    for feature in FEATURES:
        assert any(feature.name in row and feature.description in row for row in rows), feature.name
    assert "…" not in proc.stdout


def test_tables_fold_in_a_narrow_terminal() -> None:
    """A terminal narrower than the table folds cells onto more lines instead of cutting them."""
    from netwarden.commands.traffic import print_features

    console, buffer = _terminal(width=60)
    print_features(console)
    text = buffer.getvalue()
    assert "…" not in text
    assert "dns_qname_entropy_mean" in text  # the longest name, folded or whole


def test_serve_with_a_config_that_is_not_utf8(tmp_path) -> None:
    path = tmp_path / "netwarden.yaml"
    path.write_bytes(b"data_dir: /srv/\xff\n")
    _assert_user_error(
        _run("serve", "--config", str(path)),
        f"{path}: not UTF-8 text: byte 0xff at offset 15 (line 1)",
    )

"""The service configuration: file, environment overrides, errors, and its documentation."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from netwarden.api.auth import ENV_VAR
from netwarden.config import ConfigError, ServiceConfig, defaults_yaml, load_config
from netwarden.ingest.windows import WindowConfig


def test_defaults_round_trip_through_the_documented_yaml() -> None:
    text = defaults_yaml()
    assert ServiceConfig(**yaml.safe_load(text)) == ServiceConfig()
    for line in text.splitlines():
        if ":" in line and not line.lstrip().startswith("#") and not line.rstrip().endswith(":"):
            assert "  # " in line, f"option without a description: {line!r}"


def test_file_and_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "netwarden.yaml"
    path.write_text(
        "data_dir: /srv/nw\napi:\n  port: 9000\nsource:\n  spec: /var/log/flows.jsonl\n"
    )
    config = load_config(path)
    assert config.api.port == 9000 and config.source.spec == "/var/log/flows.jsonl"
    assert config.model_dir == Path("/srv/nw/models")
    assert config.store_url == "sqlite:////srv/nw/netwarden.db"
    assert config.public_url() == "http://127.0.0.1:9000"
    monkeypatch.setenv("NETWARDEN_API__PORT", "9100")
    monkeypatch.setenv("NETWARDEN_ALERTS__ALERTMANAGER_URL", "http://127.0.0.1:9093")
    config = load_config(path)
    assert config.api.port == 9100  # the environment wins over the file
    assert config.alerts.alertmanager_url == "http://127.0.0.1:9093"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("api:\n  port: nine\n", "api.port"),
        ("windows:\n  seconds: 0\n", "windows.seconds"),
        ("nonsense: 1\n", "nonsense"),
        ("api: [1, 2\n", "not valid YAML"),
        ("- a\n- b\n", "mapping"),
    ],
)
def test_bad_files_say_where(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message) as info:
        load_config(path)
    assert str(path) in str(info.value)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "none.yaml")


def test_readme_documents_every_option() -> None:
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    assert defaults_yaml() in readme, (
        "README's configuration block is out of date: paste "
        "`netwarden serve --print-config` into it"
    )


def test_windows_options_are_window_config_s(monkeypatch: pytest.MonkeyPatch) -> None:
    """Window length and lateness have WindowConfig's defaults and ranges, and the service gets
    them as one WindowConfig."""
    assert ServiceConfig().window_config == WindowConfig()
    monkeypatch.setenv("NETWARDEN_WINDOWS__SECONDS", "30")
    monkeypatch.setenv("NETWARDEN_WINDOWS__LATENESS", "0")
    assert load_config(None).window_config == WindowConfig(window_seconds=30, allowed_lateness=0)
    for option, value, message in [
        ("SECONDS", "0.5", "windows.seconds: .*window_seconds must be between 1 and 86400"),
        ("LATENESS", "-1", "windows.lateness: .*allowed_lateness must be between 0 and 86400"),
    ]:
        monkeypatch.setenv(f"NETWARDEN_WINDOWS__{option}", value)
        with pytest.raises(ConfigError, match=message):
            load_config(None)
        monkeypatch.delenv(f"NETWARDEN_WINDOWS__{option}")


def test_the_api_token_variable_is_read_here(monkeypatch: pytest.MonkeyPatch) -> None:
    """NETWARDEN_API_TOKENS, as users set it today, is the api_tokens option."""
    assert load_config(None).api_tokens == ""
    monkeypatch.setenv(ENV_VAR, "ci:operator:" + "a" * 64)
    assert load_config(None).api_tokens == "ci:operator:" + "a" * 64
    assert "api_tokens: ''" in defaults_yaml()


def test_a_file_that_is_not_utf8_is_one_clear_error(tmp_path: Path) -> None:
    """Latin-1 "ü" (0xfc) on line 2: named with its byte offset and line, not a traceback."""
    path = tmp_path / "netwarden.yaml"
    path.write_bytes(b"api:\n  public_url: http://m\xfcnchen.example\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value) == f"{path}: not UTF-8 text: byte 0xfc at offset 27 (line 2)"


def test_a_utf8_file_with_a_byte_order_mark_loads(tmp_path: Path) -> None:
    path = tmp_path / "netwarden.yaml"
    path.write_bytes("\ufeffapi:\n  public_url: http://münchen.example\n".encode())
    assert load_config(path).api.public_url == "http://münchen.example"

"""The repository layout is installed as one import package, `netwarden`."""

from __future__ import annotations

import importlib
import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CODE_FOLDERS = ("bpf", "ingest", "detector", "models", "remediation", "api")


def _config() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]


def test_every_code_folder_is_a_mapped_subpackage() -> None:
    config = _config()
    for folder in CODE_FOLDERS:
        assert config["package-dir"][f"netwarden.{folder}"] == folder
        module = importlib.import_module(f"netwarden.{folder}")
        assert Path(module.__file__).resolve().parent == ROOT / folder


def test_every_python_package_folder_is_listed() -> None:
    """A new subpackage missing from pyproject would vanish from wheels and the Docker image."""
    listed = set(_config()["packages"])
    for folder in CODE_FOLDERS:
        for init in (ROOT / folder).rglob("__init__.py"):
            rel = init.parent.relative_to(ROOT)
            assert "netwarden." + ".".join(rel.parts) in listed, rel


def test_the_docker_image_copies_every_mapped_folder() -> None:
    """The image builds its wheel from the folders it copies: one left out builds a wheel
    without that subpackage, and the image fails only when the command that needs it runs."""
    copied = set(re.findall(r"^COPY (\S+) \./\1$", (ROOT / "Dockerfile").read_text(), re.M))
    for folder in set(_config()["package-dir"].values()) - {""}:
        top = folder.split("/")[0]
        assert top in copied, f"the Dockerfile does not COPY {top}/"


def test_import_netwarden_does_not_import_bcc() -> None:
    import subprocess
    import sys

    code = "import sys, netwarden, netwarden.bpf, netwarden.ingest; print('bcc' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"

"""Generate the Python stubs for the Hubble .proto files in this folder (``make proto``).

The stubs are committed, so installing netwarden needs no protobuf compiler; the tests run
this again into a temporary folder and fail if the committed stubs differ, so the .proto files
and the stubs cannot drift apart. Needs grpcio-tools at the version pinned in pyproject.toml's
``test`` extra (the generated code names the protobuf version it was made with).

The .proto files import each other as ``netwarden/hubble/<name>.proto``: compiled from a
root where this folder sits at that path, the stubs import each other as
``netwarden.hubble.<name>_pb2``, which is where they are installed.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
PACKAGE_PATH = Path("netwarden", "hubble")
PROTOS = ("netwarden.proto", "flow.proto", "relay.proto", "observer.proto")
SERVICES = ("observer.proto",)  # files that declare a service get a _pb2_grpc module

__all__ = ["PROTOS", "generate", "main"]


def generate(out_dir: Path, proto_dir: Path = HERE) -> list[Path]:
    """Compile ``proto_dir``'s .proto files into ``out_dir``; return the files written."""
    try:
        from grpc_tools import protoc
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise RuntimeError(
            "generating the stubs needs grpcio-tools: pip install -e '.[test]'"
        ) from exc
    import grpc_tools

    includes = Path(grpc_tools.__file__).parent / "_proto"  # google/protobuf/*.proto
    with tempfile.TemporaryDirectory(prefix="netwarden-proto-") as tmp:
        src = Path(tmp, "src")
        gen = Path(tmp, "gen")
        (src / PACKAGE_PATH).mkdir(parents=True)
        gen.mkdir()
        for name in PROTOS:
            shutil.copyfile(proto_dir / name, src / PACKAGE_PATH / name)
        base = ["protoc", f"-I{src}", f"-I{includes}"]
        files = [str(PACKAGE_PATH / name) for name in PROTOS]
        if protoc.main([*base, f"--python_out={gen}", f"--pyi_out={gen}", *files]) != 0:
            raise RuntimeError("protoc failed on " + ", ".join(PROTOS))
        services = [str(PACKAGE_PATH / name) for name in SERVICES]
        if protoc.main([*base, f"--grpc_python_out={gen}", *services]) != 0:
            raise RuntimeError("protoc (grpc) failed on " + ", ".join(SERVICES))
        out_dir.mkdir(parents=True, exist_ok=True)
        written = []
        for path in sorted((gen / PACKAGE_PATH).iterdir()):
            target = out_dir / path.name
            shutil.copyfile(path, target)
            written.append(target)
        return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--out",
        type=Path,
        default=HERE,
        help="folder for the generated modules (default: next to the .proto files)",
    )
    args = parser.parse_args(argv)
    for path in generate(args.out):
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

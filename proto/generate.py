"""Regenerate the committed protobuf/gRPC stubs, or check that they are current.

    python -m proto.generate          # rewrite proto/**/_pb2*.py(i) from the .proto files
    python -m proto.generate --check  # exit 1 when the committed stubs differ (CI drift test)

Stubs are produced by ``grpcio-tools`` (messages, services) and ``mypy-protobuf`` (type
stubs for both); their versions are pinned in the ``dev`` extras so the output is stable.
Every .proto under proto/ is compiled: ``nodeapi/v1`` (our contract, with its service) and
``xrayapi`` (messages only: the Xray API client builds its method paths at run time). gRPC
stubs are made only for files that declare a service; the others would be empty modules.
"""

from __future__ import annotations

import argparse
import filecmp
import re
import shutil
import sys
import tempfile
from importlib import resources
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTO_DIR = ROOT / "proto"
GENERATED_SUFFIXES = ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py", "_pb2_grpc.pyi")
_SERVICE = re.compile(r"^\s*service\s+\w+", re.MULTILINE)


def proto_files() -> list[Path]:
    return sorted(PROTO_DIR.rglob("*.proto"))


def has_service(path: Path) -> bool:
    return bool(_SERVICE.search(path.read_text()))


def generated_files(base: Path) -> list[Path]:
    return sorted(p for p in base.rglob("*") if p.name.endswith(GENERATED_SUFFIXES))


def _plugin(name: str) -> str:
    candidate = Path(sys.executable).parent / name
    found = str(candidate) if candidate.exists() else shutil.which(name)
    if found is None:
        raise SystemExit(f"{name} not found: install the dev extras (pip install -e '.[dev]')")
    return found


def generate(out_dir: Path) -> None:
    """Write the stubs for every .proto under proto/ into ``out_dir`` (mirroring paths)."""
    from grpc_tools import protoc  # dev dependency, imported only here

    include = resources.files("grpc_tools") / "_proto"
    protos = proto_files()
    common = [
        "grpc_tools.protoc",
        f"--proto_path={ROOT}",
        f"--proto_path={include}",
        f"--plugin=protoc-gen-mypy={_plugin('protoc-gen-mypy')}",
        f"--plugin=protoc-gen-mypy_grpc={_plugin('protoc-gen-mypy_grpc')}",
    ]
    messages = [f"--python_out={out_dir}", f"--mypy_out={out_dir}"]
    services = [f"--grpc_python_out={out_dir}", f"--mypy_grpc_out={out_dir}"]
    with_service = [str(p.relative_to(ROOT)) for p in protos if has_service(p)]
    without = [str(p.relative_to(ROOT)) for p in protos if not has_service(p)]
    for outputs, files in ((messages + services, with_service), (messages, without)):
        if files and protoc.main([*common, *outputs, *files]) != 0:
            raise SystemExit("protoc failed")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m proto.generate", description=__doc__)
    parser.add_argument("--check", action="store_true", help="only report drift; exit 1 on any")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        generate(out)
        fresh = {p.relative_to(out): p for p in generated_files(out)}
        committed = {p.relative_to(ROOT): p for p in generated_files(PROTO_DIR)}
        if args.check:
            drift = sorted(
                str(rel)
                for rel in fresh.keys() | committed.keys()
                if rel not in fresh
                or rel not in committed
                or not filecmp.cmp(fresh[rel], committed[rel], shallow=False)
            )
            if drift:
                print("generated stubs are out of date:", *drift, sep="\n  ", file=sys.stderr)
                print("run: python -m proto.generate", file=sys.stderr)
                return 1
            return 0
        for rel in committed.keys() - fresh.keys():
            committed[rel].unlink()
        for rel, src in fresh.items():
            shutil.copyfile(src, ROOT / rel)
            print(f"wrote {rel}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The committed gRPC stubs are exactly what `python -m proto.generate` makes from the .proto."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from proto import generate


def test_committed_stubs_match_the_proto(capsys: pytest.CaptureFixture[str]) -> None:
    assert generate.main(["--check"]) == 0, capsys.readouterr().err


@pytest.mark.parametrize(
    "stub", ["nodeapi/v1/node_agent_pb2.pyi", "xrayapi/xray_api_pb2.py", "xrayapi/xray_api_pb2.pyi"]
)
def test_drift_is_detected(stub: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    copy = tmp_path / "proto"
    shutil.copytree(generate.PROTO_DIR, copy)
    edited = copy / stub
    edited.write_text(edited.read_text() + "\n# edited by hand\n")
    monkeypatch.setattr(generate, "ROOT", tmp_path)
    monkeypatch.setattr(generate, "PROTO_DIR", copy)
    assert generate.main(["--check"]) == 1


def test_a_missing_or_extra_stub_is_drift(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    original, copy = generate.PROTO_DIR, tmp_path / "proto"
    shutil.copytree(original, copy)
    monkeypatch.setattr(generate, "ROOT", tmp_path)
    monkeypatch.setattr(generate, "PROTO_DIR", copy)
    (copy / "xrayapi" / "xray_api_pb2.pyi").unlink()
    assert generate.main(["--check"]) == 1
    shutil.copytree(original, copy, dirs_exist_ok=True)
    assert generate.main(["--check"]) == 0
    # Messages-only protos get no gRPC modules: one appearing would be drift too.
    (copy / "xrayapi" / "xray_api_pb2_grpc.py").write_text("")
    assert generate.main(["--check"]) == 1


def test_the_xray_mirror_is_generated_messages_only() -> None:
    xrayapi = generate.PROTO_DIR / "xrayapi"
    assert sorted(p.name for p in generate.generated_files(xrayapi)) == [
        "xray_api_pb2.py",
        "xray_api_pb2.pyi",
    ]
    assert not generate.has_service(xrayapi / "xray_api.proto")
    assert generate.has_service(generate.PROTO_DIR / "nodeapi" / "v1" / "node_agent.proto")


def test_every_rpc_of_the_contract_is_served() -> None:
    from proto.nodeapi.v1 import node_agent_pb2 as pb

    service = pb.DESCRIPTOR.services_by_name["NodeAgent"]
    names = {m.name for m in service.methods}
    assert names == {
        "GetInfo",
        "ApplyState",
        "ApplyDelta",
        "ReadUsage",
        "AckUsage",
        "GetMetrics",
        "StreamMetrics",
        "IssueOpenVpnClient",
    }
    from node_agent.server import NodeAgentService

    for name in names:
        assert name in NodeAgentService.__dict__, f"{name} is not implemented by the agent"

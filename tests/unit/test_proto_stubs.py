"""The committed gRPC stubs are exactly what `python -m proto.generate` makes from the .proto."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from proto import generate


def test_committed_stubs_match_the_proto(capsys: pytest.CaptureFixture[str]) -> None:
    assert generate.main(["--check"]) == 0, capsys.readouterr().err


def test_drift_is_detected(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    copy = tmp_path / "proto"
    shutil.copytree(generate.PROTO_DIR, copy)
    stub = copy / "nodeapi" / "v1" / "node_agent_pb2.pyi"
    stub.write_text(stub.read_text() + "\n# edited by hand\n")
    monkeypatch.setattr(generate, "ROOT", tmp_path)
    monkeypatch.setattr(generate, "PROTO_DIR", copy)
    assert generate.main(["--check"]) == 1


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

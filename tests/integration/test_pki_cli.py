"""`vpnbot pki` and `vpnbot agent info`: the by-hand path from a CA to a checked agent."""

from __future__ import annotations

import json
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cryptography import x509

from controller.cli.main import main
from controller.nodes.pki import CertificateAuthority, cert_to_pem
from node_agent.tls import load_credentials
from proto.nodeapi.v1.identity import CONTROLLER_IDENTITY, node_dns_name

REPO = Path(__file__).resolve().parents[2]


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def agent_csr(state_dir: Path, node_id: str) -> Path:
    csr = state_dir.parent / f"{node_id}.csr"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "node_agent",
            "csr",
            "--state-dir",
            str(state_dir),
            "--node-id",
            node_id,
            "--out",
            str(csr),
        ],
        check=True,
        cwd=REPO,
    )
    return csr


def test_init_sign_and_the_agent_trusts_the_result(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pki = tmp_path / "pki"
    code, out, err = cli(capsys, "pki", "init", "--dir", str(pki))
    assert code == 0, err
    assert "fingerprint" in out
    for secret in ("ca.key", "controller.key"):
        assert stat.S_IMODE((pki / secret).stat().st_mode) == 0o600
    controller = x509.load_pem_x509_certificate((pki / "controller.pem").read_bytes())
    san = controller.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == [CONTROLLER_IDENTITY]

    # A second init never replaces the CA every agent trusts.
    before = (pki / "ca.pem").read_bytes()
    code, _, err = cli(capsys, "pki", "init", "--dir", str(pki))
    assert code == 1 and "already there" in err
    assert (pki / "ca.pem").read_bytes() == before

    state = tmp_path / "state"
    csr = agent_csr(state, "node-7")
    code, _, err = cli(
        capsys,
        "pki",
        "sign",
        "--dir",
        str(pki),
        "--node-id",
        "node-7",
        "--csr",
        str(csr),
        "--out",
        str(state / "agent.pem"),
    )
    assert code == 0, err
    (state / "ca.pem").write_bytes(before)
    assert load_credentials(state).node_id == "node-7"
    cert = x509.load_pem_x509_certificate((state / "agent.pem").read_bytes())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == [node_dns_name("node-7")]


def test_sign_refuses_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pki = tmp_path / "pki"
    state = tmp_path / "state"
    csr = agent_csr(state, "node-1")
    code, _, err = cli(
        capsys, "pki", "sign", "--dir", str(pki), "--node-id", "node-1", "--csr", str(csr)
    )
    assert code == 1 and "pki init" in err
    assert cli(capsys, "pki", "init", "--dir", str(pki))[0] == 0
    code, _, err = cli(
        capsys, "pki", "sign", "--dir", str(pki), "--node-id", "Not_A_Label", "--csr", str(csr)
    )
    assert code == 1 and "invalid node id" in err
    garbage = tmp_path / "garbage.csr"
    garbage.write_text("not a csr")
    code, _, err = cli(
        capsys, "pki", "sign", "--dir", str(pki), "--node-id", "node-1", "--csr", str(garbage)
    )
    assert code == 1 and "certificate signing request" in err
    assert len(err.strip().splitlines()) == 1


def test_a_certificate_from_another_ca_is_not_loaded_by_the_agent(tmp_path: Path) -> None:
    from node_agent.errors import ConfigError
    from node_agent.tls import create_key_and_csr

    state = tmp_path / "state"
    state.mkdir()
    csr = create_key_and_csr(state, "node-1")
    ours, theirs = CertificateAuthority.create(), CertificateAuthority.create()
    (state / "agent.pem").write_bytes(cert_to_pem(theirs.sign_node_csr(csr, "node-1")))
    (state / "ca.pem").write_bytes(ours.cert_pem)
    with pytest.raises(ConfigError, match="not signed by"):
        load_credentials(state)


def test_agent_info_over_mtls(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pki, state = tmp_path / "pki", tmp_path / "state"
    assert cli(capsys, "pki", "init", "--dir", str(pki))[0] == 0
    csr = agent_csr(state, "node-1")
    assert (
        cli(
            capsys,
            "pki",
            "sign",
            "--dir",
            str(pki),
            "--node-id",
            "node-1",
            "--csr",
            str(csr),
            "--out",
            str(state / "agent.pem"),
        )[0]
        == 0
    )
    (state / "ca.pem").write_bytes((pki / "ca.pem").read_bytes())
    config = tmp_path / "agent.toml"
    config.write_text(
        f'state_dir = "{state}"\nlisten = "unix:{tmp_path}/a.sock"\n[backends.fake]\n'
    )
    agent = subprocess.Popen(
        [sys.executable, "-m", "node_agent", "run", "--config", str(config)],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        address = f"unix:{tmp_path}/a.sock"
        deadline = time.monotonic() + 20
        while True:
            code, out, err = cli(
                capsys,
                "agent",
                "info",
                "--dir",
                str(pki),
                "--address",
                address,
                "--node-id",
                "node-1",
                "--timeout",
                "2",
            )
            if code == 0 or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert code == 0, err
        info = json.loads(out)
        assert info["nodeId"] == "node-1"
        assert info["backends"][0]["name"] == "fake"
        # The same agent dialled as another node: the TLS handshake refuses it.
        code, _, err = cli(
            capsys,
            "agent",
            "info",
            "--dir",
            str(pki),
            "--address",
            address,
            "--node-id",
            "node-2",
            "--timeout",
            "3",
        )
        assert code == 1
        assert "UNAVAILABLE" in err.strip().splitlines()[-1]
    finally:
        agent.terminate()
        agent.wait(timeout=10)

"""``vpnbot pki``: the cluster CA on disk, for running agents by hand (enrollment automates
the same steps)."""

from __future__ import annotations

from pathlib import Path

import click

from controller.cli.common import settings_from
from controller.nodes.pki import (
    CertificateAuthority,
    PkiError,
    cert_to_pem,
    fingerprint,
    key_to_pem,
    load_certificate,
    load_key,
    write_private,
    write_public,
)

CA_KEY, CA_CERT = "ca.key", "ca.pem"
CONTROLLER_KEY, CONTROLLER_CERT = "controller.key", "controller.pem"

_DIR_HELP = "Directory of the CA files [default: <VPNBOT_DATA_DIR>/pki]."


def _pki_dir(ctx: click.Context, directory: Path | None) -> Path:
    return directory if directory is not None else settings_from(ctx).data_dir / "pki"


def load_ca(directory: Path) -> CertificateAuthority:
    try:
        key = load_key((directory / CA_KEY).read_bytes())
        cert = load_certificate((directory / CA_CERT).read_bytes())
    except FileNotFoundError as exc:
        raise PkiError(f"{exc.filename} not found: run `vpnbot pki init` first") from None
    return CertificateAuthority(key, cert)


@click.group("pki")
def pki_group() -> None:
    """The cluster CA that agents and the controller trust (mutual TLS)."""


@pki_group.command("init")
@click.option("--dir", "directory", type=click.Path(path_type=Path), help=_DIR_HELP)
@click.pass_context
def init_command(ctx: click.Context, directory: Path | None) -> None:
    """Create the cluster CA and the controller's client certificate.

    Writes ca.key and controller.key (0600), ca.pem and controller.pem. Refuses to replace
    an existing CA: every agent trusts it.
    """
    directory = _pki_dir(ctx, directory)
    if (directory / CA_KEY).exists():
        raise PkiError(f"{directory / CA_KEY} exists: the cluster CA is already there")
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    ca = CertificateAuthority.create()
    key, cert = ca.issue_controller()
    write_private(directory / CA_KEY, key_to_pem(ca.key))
    write_public(directory / CA_CERT, ca.cert_pem)
    write_private(directory / CONTROLLER_KEY, key_to_pem(key))
    write_public(directory / CONTROLLER_CERT, cert_to_pem(cert))
    click.echo(f"cluster CA created in {directory}")
    click.echo(f"CA fingerprint (SHA-256): {fingerprint(ca.cert)}")


@pki_group.command("sign")
@click.option("--dir", "directory", type=click.Path(path_type=Path), help=_DIR_HELP)
@click.option("--node-id", required=True, help="The node id the certificate names.")
@click.option(
    "--csr",
    "csr_file",
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="The agent's CSR (vpn-node-agent csr).",
)
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the certificate here [default: stdout].",
)
@click.pass_context
def sign_command(
    ctx: click.Context, directory: Path | None, node_id: str, csr_file: Path, out: Path | None
) -> None:
    """Sign an agent's CSR as node NODE_ID (the CSR's own names are ignored)."""
    ca = load_ca(_pki_dir(ctx, directory))
    try:
        cert = ca.sign_node_csr(csr_file.read_bytes(), node_id)
    except ValueError as exc:
        raise PkiError(str(exc)) from None
    pem = cert_to_pem(cert)
    if out is None:
        click.echo(pem.decode(), nl=False)
    else:
        write_public(out, pem)
        click.echo(f"certificate for node {node_id} written to {out}", err=True)


@click.group("agent")
def agent_group() -> None:
    """Talk to one node agent directly (for checks; the hub does this for real)."""


@agent_group.command("info")
@click.option("--dir", "directory", type=click.Path(path_type=Path), help=_DIR_HELP)
@click.option("--address", required=True, help="The agent's HOST:PORT (or unix:PATH).")
@click.option("--node-id", required=True, help="The node id its certificate must name.")
@click.option("--timeout", type=click.FloatRange(0.1, 300), default=10.0, show_default=True)
@click.pass_context
def agent_info_command(
    ctx: click.Context, directory: Path | None, address: str, node_id: str, timeout: float
) -> None:
    """Print the agent's info (GetInfo over mutual TLS) as JSON."""
    from google.protobuf import json_format

    from controller.cli.common import run
    from controller.nodes.client import ClientCredentials, NodeClient, NodeRpcError

    pki_dir = _pki_dir(ctx, directory)
    try:
        credentials = ClientCredentials(
            (pki_dir / CA_CERT).read_bytes(),
            (pki_dir / CONTROLLER_KEY).read_bytes(),
            (pki_dir / CONTROLLER_CERT).read_bytes(),
        )
    except FileNotFoundError as exc:
        raise PkiError(f"{exc.filename} not found: run `vpnbot pki init` first") from None

    async def call() -> str:
        async with NodeClient(address, node_id, credentials, timeout=timeout) as client:
            info = await client.info()
        return json_format.MessageToJson(info, indent=2)

    try:
        click.echo(run(call()))
    except NodeRpcError as exc:
        raise click.ClickException(f"agent {node_id} at {address}: {exc}") from None

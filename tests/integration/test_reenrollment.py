"""Re-enrollment revokes the old identity; tokens carry the URL the listener really serves;
the public enrollment app exposes nothing but enrollment."""

from __future__ import annotations

from pathlib import Path

import httpx
from sqlalchemy.ext.asyncio import AsyncEngine

from controller.api.enroll import create_enrollment_app
from controller.bootstrap import Container
from controller.domain.enums import NodeStatus
from controller.services.nodes import NodeDraft
from controller.settings import load_settings
from node_agent.tls import CA_FILE, CERT_FILE, KEY_FILE, key_pem, make_csr, new_key
from proto.nodeapi.v1.enrollment import CA_PATH, EnrollmentToken
from tests.hub_support import ControllerHarness
from tests.integration.factories import ADMIN


async def test_a_new_token_cuts_off_the_old_certificate_until_the_host_enrolls_again(
    engine: AsyncEngine, tmp_path: Path
) -> None:
    async with ControllerHarness.open(engine, tmp_path) as harness:
        node = await harness.add_node("nl-1")
        old_id = node.node_id
        async with node.agent():
            await harness.wait_converged(node)
            assert (await harness.server(node)).status is NodeStatus.ONLINE

            server, token_text = await harness.services.nodes.mint_token(ADMIN, "nl-1")
            token = EnrollmentToken.decode(token_text)
            assert server.node_uid == token.node_id != old_id

            # The agent still presents a certificate for the old identity: refused.
            async def down() -> bool:
                found = await harness.server(node)
                return found.status is NodeStatus.DOWN and "name" in (found.status_reason or "")

            await harness.wait_for(down, what="the old certificate to be refused")

        # The host enrolls again (a new key) and restarts its agent.
        key = new_key()
        enrolled = await harness.services.nodes.enroll(token.secret, make_csr(key, token.node_id))
        (node.state_dir / KEY_FILE).write_bytes(key_pem(key))
        (node.state_dir / CERT_FILE).write_bytes(enrolled.certificate_pem)
        (node.state_dir / CA_FILE).write_bytes(enrolled.ca_certificate_pem)
        node.node_id = token.node_id
        async with node.agent():

            async def online() -> bool:
                return (await harness.server(node)).status is NodeStatus.ONLINE

            await harness.wait_for(online, what="the re-enrolled node to come back")


async def test_a_first_token_does_not_rotate_an_unenrolled_node(
    engine: AsyncEngine, tmp_path: Path
) -> None:
    async with ControllerHarness.open(engine, tmp_path, start_hub=False) as harness:
        server, first = await harness.services.nodes.add(
            ADMIN, NodeDraft(name="nl-1", address="203.0.113.1")
        )
        again, second = await harness.services.nodes.mint_token(ADMIN, "nl-1")
        assert again.node_uid == server.node_uid
        assert EnrollmentToken.decode(first).node_id == EnrollmentToken.decode(second).node_id


async def test_tokens_carry_the_url_the_running_listener_published(
    engine: AsyncEngine, tmp_path: Path
) -> None:
    async with ControllerHarness.open(engine, tmp_path, start_hub=False) as harness:
        # What `vpnbot run` does when its listener starts; this shell has no URL setting.
        await harness.services.nodes.publish_url("https://vpn.example.net:9443")
        _, token = await harness.services.nodes.add(
            ADMIN, NodeDraft(name="nl-1", address="203.0.113.1")
        )
        assert EnrollmentToken.decode(token).url == "https://vpn.example.net:9443"


async def test_the_enrollment_app_serves_enrollment_only(
    engine: AsyncEngine, tmp_path: Path
) -> None:
    async with ControllerHarness.open(engine, tmp_path, start_hub=False) as harness:
        await harness.services.nodes.add(ADMIN, NodeDraft(name="nl-1", address="203.0.113.1"))
        container = Container(
            settings=load_settings(),
            engine=engine,
            session_factory=None,  # type: ignore[arg-type]
            uow_factory=harness.uow_factory,
            services=harness.services,
            secrets=harness.box,
        )
        transport = httpx.ASGITransport(app=create_enrollment_app(container))
        async with httpx.AsyncClient(transport=transport, base_url="https://c") as client:
            ca = await client.get(CA_PATH)
            assert ca.status_code == 200 and b"BEGIN CERTIFICATE" in ca.content
            for path in ("/healthz", "/docs", "/openapi.json", "/redoc"):
                assert (await client.get(path)).status_code == 404, path
            refused = await client.post(
                "/api/v1/enroll", json={"token": "x" * 43, "csr": "not a csr"}
            )
            assert refused.status_code == 403
            assert (await client.post("/api/v1/enroll", json={"token": "x"})).status_code == 422

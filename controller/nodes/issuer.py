"""Calls to an agent for what only the node can make: OpenVPN client certificates, signed by
the node's own OpenVPN CA whose key never leaves the node.

The controller's client certificate is issued once per process from the cluster CA (as the
hub does) and reused for every call.
"""

from __future__ import annotations

import asyncio

from controller.crypto import SecretBox
from controller.db.uow import UnitOfWorkFactory
from controller.domain.errors import Unavailable
from controller.nodes.ca import load_controller_credentials
from controller.nodes.client import ClientCredentials, NodeClient, NodeRpcError
from controller.nodes.store import grpc_target

ISSUE_TIMEOUT = 20.0  # an RSA/EC key and a signature on a busy node


class NodeIssuer:
    def __init__(self, uow_factory: UnitOfWorkFactory, box: SecretBox) -> None:
        self._uow = uow_factory
        self._box = box
        self._credentials: ClientCredentials | None = None
        self._lock = asyncio.Lock()

    async def _load(self) -> ClientCredentials:
        async with self._lock:
            if self._credentials is None:
                credentials = await load_controller_credentials(self._uow, self._box)
                if credentials is None:
                    raise Unavailable("the cluster CA does not exist yet (run `vpnbot run` once)")
                self._credentials = credentials
            return self._credentials

    async def issue_openvpn(
        self, *, node_id: str, host: str, port: int, backend: str, common_name: str
    ) -> str:
        """The inline profile (without `remote`) for ``common_name`` from the node."""
        credentials = await self._load()
        async with NodeClient(
            grpc_target(host, port), node_id, credentials, timeout=ISSUE_TIMEOUT
        ) as client:
            try:
                response = await client.issue_openvpn_client(backend, common_name)
            except NodeRpcError as exc:
                raise Unavailable(
                    f"the node could not issue the OpenVPN profile now ({exc.details or exc})"
                ) from None
        if response.common_name != common_name or "<key>" not in response.profile:
            raise Unavailable("the node answered with a profile for another client")
        return response.profile

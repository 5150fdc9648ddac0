"""Who is who on the wire: the certificate identities of the ``nodeapi.v1`` contract.

The agent's certificate carries the DNS SAN ``node_dns_name(node_id)``; the controller's
client certificate carries ``CONTROLLER_IDENTITY``. Both are signed by the cluster CA. The
controller dials a node with ``node_dns_name(node_id)`` as the TLS target name, so the TLS
handshake itself refuses an agent whose certificate names another node.
"""

from __future__ import annotations

import re

CONTROLLER_IDENTITY = "controller.vpnbot.internal"
NODE_DOMAIN = "nodes.vpnbot.internal"

# A node id is one DNS label: lowercase letters, digits and inner hyphens (UUIDs qualify).
_NODE_ID = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")


def is_valid_node_id(node_id: str) -> bool:
    return bool(_NODE_ID.fullmatch(node_id))


def node_dns_name(node_id: str) -> str:
    if not is_valid_node_id(node_id):
        raise ValueError(
            f"invalid node id {node_id!r}: use lowercase letters, digits and hyphens "
            "(at most 63 characters, no hyphen at either end)"
        )
    return f"{node_id}.{NODE_DOMAIN}"


def node_id_from_dns_name(name: str) -> str | None:
    """The node id in ``name`` when it is a node identity, else None."""
    node_id, dot, domain = name.partition(".")
    if dot and domain == NODE_DOMAIN and is_valid_node_id(node_id):
        return node_id
    return None

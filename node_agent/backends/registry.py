"""Backends by configured type: the one place that knows which classes exist."""

from __future__ import annotations

import base64
import hashlib
from pathlib import Path

from node_agent.backends.base import PublicParams, VpnBackend, WireGuardPublicParams
from node_agent.backends.fake import FakeBackend
from node_agent.config import (
    AgentConfig,
    FakeConfig,
    OpenVpnConfig,
    ThreeXuiConfig,
    WireGuardConfig,
    XrayConfig,
)


def build_backends(config: AgentConfig) -> dict[str, VpnBackend]:
    backends: dict[str, VpnBackend] = {}
    for name, spec in config.backends.items():
        if isinstance(spec, FakeConfig):
            backends[name] = FakeBackend(name, _fake_params(name, spec))
        elif isinstance(spec, WireGuardConfig):
            backends[name] = _wireguard(name, spec, config.state_dir)
        elif isinstance(spec, OpenVpnConfig):
            from node_agent.backends.openvpn.backend import OpenVpnBackend

            backends[name] = OpenVpnBackend(name, spec, config.state_dir)
        elif isinstance(spec, XrayConfig):
            from node_agent.backends.xray.backend import XrayBackend

            backends[name] = XrayBackend(name, spec, config.state_dir)
        elif isinstance(spec, ThreeXuiConfig):
            from node_agent.backends.threexui.backend import ThreeXuiBackend

            backends[name] = ThreeXuiBackend(name, spec, config.state_dir)
    return backends


def _fake_params(name: str, spec: FakeConfig) -> PublicParams:
    if not spec.addresses:
        return None
    digest = hashlib.sha256(f"vpnbot-fake:{name}".encode()).digest()
    return WireGuardPublicParams(
        public_key=base64.b64encode(digest).decode(),
        listen_port=spec.listen_port,
        addresses=tuple(spec.addresses),
        interface=name,
    )


def _wireguard(name: str, spec: WireGuardConfig, state_dir: Path) -> VpnBackend:
    from node_agent.backends.wireguard.backend import WireGuardBackend
    from node_agent.backends.wireguard.driver import WireGuardDriver

    driver: WireGuardDriver
    if spec.driver == "netlink":
        from node_agent.backends.wireguard.netlink import NetlinkDriver

        driver = NetlinkDriver()
    else:
        from node_agent.backends.wireguard.uapi import UapiDriver

        driver = UapiDriver(socket_dir=spec.socket_dir, wireguard_go=spec.wireguard_go)
    return WireGuardBackend(
        name,
        driver=driver,
        interface=spec.interface,
        listen_port=spec.listen_port,
        addresses=spec.addresses,
        private_key_path=state_dir / f"wireguard-{name}.key",
        mtu=spec.mtu,
    )

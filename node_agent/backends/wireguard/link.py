"""Addresses and link state of the WireGuard device, with pyroute2's IPRoute (rtnetlink works
for any tun/WireGuard device, kernel module or not). Blocking: call through to_thread."""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from node_agent.backends.wireguard.driver import DriverError

Address = ipaddress.IPv4Interface | ipaddress.IPv6Interface


def configure_link(ifname: str, addresses: Sequence[Address], mtu: int | None = None) -> int:
    """Add missing addresses, set the MTU, bring the link up; return its ifindex."""
    with IPRoute() as ipr:
        found = ipr.link_lookup(ifname=ifname)
        if not found:
            raise DriverError(f"network interface {ifname} does not exist")
        index = int(found[0])
        present = {
            (msg.get_attr("IFA_ADDRESS"), int(msg["prefixlen"]))
            for msg in ipr.get_addr(index=index)
        }
        try:
            for address in addresses:
                if (str(address.ip), address.network.prefixlen) not in present:
                    ipr.addr(
                        "add",
                        index=index,
                        address=str(address.ip),
                        prefixlen=address.network.prefixlen,
                    )
            if mtu is not None:
                ipr.link("set", index=index, mtu=mtu)
            ipr.link("set", index=index, state="up")
        except NetlinkError as exc:
            raise DriverError(f"could not configure {ifname}: {exc}") from None
        return index


def delete_link(ifname: str) -> None:
    with IPRoute() as ipr:
        found = ipr.link_lookup(ifname=ifname)
        if found:
            ipr.link("del", index=found[0])

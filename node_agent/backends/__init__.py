"""VPN backends the agent drives, behind one ``VpnBackend`` protocol (see ``base``)."""

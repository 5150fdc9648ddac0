"""openvpn backend."""

"""The 3X-UI adapter backend: the VLESS users of one inbound of a 3X-UI panel, driven over
the panel's HTTP API (both generations of its client endpoints; see ``api``)."""

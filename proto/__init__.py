"""The wire contract between the controller and node agents.

``nodeapi/v1/node_agent.proto`` is the ``NodeAgent`` service (agent info, full and delta
applies with revisions, the usage ledger read after a cursor and acknowledged, host metrics,
OpenVPN client issuance); ``nodeapi/v1/enrollment.py`` and ``identity.py`` are the enrollment
and certificate-identity conventions both sides share; ``xrayapi/`` mirrors the Xray core's API
messages the agent calls. The generated ``*_pb2*.py`` stubs are committed;
``python -m proto.generate`` regenerates them and ``--check`` (run by the tests) fails on drift.
"""

"""The wire contract between the controller and node agents (``nodeapi.v1``).

The .proto files, the committed generated stubs and the regenerate command arrive with the
node agent issue.
"""

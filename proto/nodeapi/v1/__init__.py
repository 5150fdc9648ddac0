"""``nodeapi.v1``: generated protobuf and gRPC stubs (``python -m proto.generate``)."""

"""The controller's side of the nodes: cluster PKI and the mTLS gRPC client (the hub and
enrollment build on these)."""

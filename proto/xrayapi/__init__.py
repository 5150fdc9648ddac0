"""Our own mirror of the few Xray / v2ray gRPC API messages the Xray backend sends.

Xray-core names its packages ``xray.*``, v2ray 4.x ``v2ray.core.*``; the messages are the same
shape under both. Protobuf messages carry no type name on the wire, so one set of messages
with the real field numbers serves both cores: the prefix appears only in gRPC method paths
and in ``TypedMessage.type`` strings, which the client builds at run time
(``node_agent.backends.xray.api``). Regenerate the stubs with ``python -m proto.generate``.
"""

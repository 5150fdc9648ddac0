"""What the controller and the node agent share, and nothing else.

A VPN host installs the agent (``node_agent``, ``proto`` and this package) without anything of
the controller, so this package imports only the standard library and the few libraries both
sides install (structlog). ``tests/unit/test_layering.py`` enforces it.

- ``common.proc``: the one way to run another program (argv, timeout, never a shell string).
- ``common.logging``: structlog set-up (JSON lines in production, console in dev, secrets redacted).
- ``common.tasks``: :class:`~common.tasks.TaskSet`, the owner of a component's background tasks.
- ``common.clock``: the clock type services and the hub are given, and ``utcnow``.
"""

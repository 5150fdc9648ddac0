"""Errors of the node agent, and the gRPC status each one becomes at the edge.

AgentError
├── InvalidStateError      a desired state or delta that fails validation  → INVALID_ARGUMENT
├── RevisionMismatchError  a delta on the wrong base, a stale full state    → FAILED_PRECONDITION
├── BackendError           a backend could not apply or read               → UNAVAILABLE
├── NotSupportedError      a feature this agent's backends do not offer     → UNIMPLEMENTED
└── ConfigError            the agent's own configuration or state dir is unusable (start-up)
"""

from __future__ import annotations


class AgentError(Exception):
    """Base of the agent's errors; ``str()`` is a message safe to show the caller."""


class InvalidStateError(AgentError):
    pass


class RevisionMismatchError(AgentError):
    pass


class LedgerMismatchError(AgentError):
    pass


class BackendError(AgentError):
    pass


class NotSupportedError(AgentError):
    pass


class ConfigError(AgentError):
    pass

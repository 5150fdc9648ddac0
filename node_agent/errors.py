"""Errors of the node agent, and the gRPC status each one becomes at the edge
(``node_agent/server.py`` maps them; anything else is INTERNAL).

AgentError
├── InvalidStateError      a desired state or delta that fails validation   → INVALID_ARGUMENT
├── RevisionMismatchError  a delta on the wrong base, a stale full state     → FAILED_PRECONDITION
├── LedgerMismatchError    an acknowledgement for another usage ledger → FAILED_PRECONDITION
├── BackendError           a backend could not apply or read                 → UNAVAILABLE
│   ├── PanelError         the 3X-UI panel could not be reached or did not answer as documented
│   │   ├── PanelRefused   it answered success=false        (backends/threexui/session.py)
│   │   └── RouteMissing   404 even after a fresh login: no such route on this panel
│   └── XrayApiError       the Xray core refused an API call (backends/xray/api.py)
│       └── XrayUnavailable  the core's API did not answer
├── NotSupportedError      a feature this agent's backends do not offer      → UNIMPLEMENTED
└── ConfigError            the agent's own configuration or state dir is unusable (start-up)
    └── EnrollmentError    enrollment with the controller failed (enroll.py)
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

"""The one error tree of tierflow.

Every layer may import this module, so it lives in `routing/`, the layer with no
service dependencies. Errors carry fields, not formatted strings.

    TierflowError
    ├── InputError            a submitted line or file is wrong (source, line, field, reason)
    ├── ConfigError           settings or a config file are wrong (field, reason)
    ├── ServiceUnavailable    the broker or the database cannot be reached (service, url)
    ├── RoutingError          a routing decision cannot be made
    │   └── InvalidTransition a job state change that the state machine forbids
    ├── StoreError            the store refused a write or a read
    └── ProviderError         a model call failed (provider, model, retry_after)
        ├── ProviderTimeout
        ├── ProviderRateLimited
        ├── ProviderRejected
        └── ProviderUnavailable
"""

from __future__ import annotations


class TierflowError(Exception):
    """Root of every error tierflow raises on purpose."""


class InputError(TierflowError):
    """A submitted job line is invalid."""

    def __init__(self, source: str, line: int, field: str, reason: str) -> None:
        super().__init__(f"{source}:{line}: {field}: {reason}")
        self.source = source
        self.line = line
        self.field = field
        self.reason = reason


class ConfigError(TierflowError):
    """A setting is invalid."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"setting {field}: {reason}")
        self.field = field
        self.reason = reason


class ServiceUnavailable(TierflowError):
    """The broker or the database cannot be reached."""

    def __init__(self, service: str, url: str, reason: str) -> None:
        super().__init__(f"{service} unreachable at {url}: {reason}")
        self.service = service
        self.url = url
        self.reason = reason


class RoutingError(TierflowError):
    """A routing decision cannot be made."""


class InvalidTransition(RoutingError):
    """A job state change that the state machine forbids."""

    def __init__(self, current: str, target: str) -> None:
        super().__init__(f"job cannot move from {current} to {target}")
        self.current = current
        self.target = target


class StoreError(TierflowError):
    """The store refused a read or a write."""


class ProviderError(TierflowError):
    """A model call failed."""

    def __init__(self, provider: str, model: str, reason: str, retry_after: float | None = None) -> None:
        super().__init__(f"{provider}:{model}: {reason}")
        self.provider = provider
        self.model = model
        self.reason = reason
        self.retry_after = retry_after


class ProviderTimeout(ProviderError):
    """The call did not finish within its timeout."""


class ProviderRateLimited(ProviderError):
    """The provider or the cluster-wide limit refused the call for now."""


class ProviderRejected(ProviderError):
    """The provider refused the request, or its output did not validate."""


class ProviderUnavailable(ProviderError):
    """No model of the tier can take the call (breakers open, all failing)."""

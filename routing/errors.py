"""The one error tree of tierflow.

Every layer may import this module, so it lives in `routing/`, the layer with no
service dependencies. Errors carry fields, not formatted strings.

    TierflowError
    ├── InputError            a submitted line or file is wrong (source, line, field, reason)
    │   └── KindsRejected     a kinds file or plug-in is wrong: every problem, each an InputError


    │   └── BatchRejected     a batch with invalid jobs, none stored (source, issues)
    ├── ConfigError           settings or a config file are wrong (field, reason)
    ├── ServiceUnavailable    the broker or the database cannot be reached (service, url)
    ├── RoutingError          a routing decision cannot be made
    │   ├── InvalidTransition a job state change that the state machine forbids
    │   └── UnknownKind       a job of a kind that is not declared (kind)
    ├── StoreError            the store refused a write or a read
    └── ProviderError         a model call failed (provider, model, retry_after)
        ├── ProviderTimeout
        ├── ProviderRateLimited
        ├── ProviderRejected
        ├── ProviderUnavailable
        └── TierUnavailable   no model of a tier can take the call; the router picks another tier
"""

from __future__ import annotations

from typing import Any


class TierflowError(Exception):
    """Root of every error tierflow raises on purpose.

    Subclasses keep their constructor's keyword arguments so that an error crosses
    a process boundary (pickled by Celery) with its fields intact.
    """

    _fields: dict[str, object]

    def _keep(self, **fields: object) -> None:
        self._fields = fields
        for name, value in fields.items():
            setattr(self, name, value)

    def __reduce__(self) -> str | tuple[Any, ...]:
        fields = getattr(self, "_fields", None)
        if fields is None:
            return super().__reduce__()
        return (_rebuild, (type(self), fields))


def _rebuild(cls: type[TierflowError], fields: dict[str, object]) -> TierflowError:
    return cls(**fields)


class InputError(TierflowError):
    """A submitted job line is invalid."""

    source: str
    line: int
    field: str
    reason: str

    def __init__(self, source: str, line: int, field: str, reason: str) -> None:
        where = f"{source}:{line}" if line else source  # line 0: the whole file
        super().__init__(f"{where}: {field}: {reason}")
        self._keep(source=source, line=line, field=field, reason=reason)


class KindsRejected(InputError):
    """Kinds files or plug-ins that cannot be loaded; `problems` lists each (source, line, key, reason)."""

    problems: tuple[InputError, ...]

    def __init__(self, problems: tuple[InputError, ...]) -> None:
        first = problems[0]
        TierflowError.__init__(self, "\n".join(str(problem) for problem in problems))
        self._keep(problems=problems)
        self.source, self.line, self.field, self.reason = first.source, first.line, first.field, first.reason


class BatchRejected(InputError):
    """A batch with invalid jobs; nothing of it was stored.

    `issues` holds one `{"index", "field", "reason"}` per bad job; `index` counts from 0 in
    the list given to `Client.submit` (line numbers of a file are `index + 1`).
    """

    issues: list[dict[str, object]]

    def __init__(self, source: str, issues: list[dict[str, object]]) -> None:
        first = issues[0] if issues else {"index": 0, "field": "<batch>", "reason": "no jobs"}
        more = f" (and {len(issues) - 1} more)" if len(issues) > 1 else ""
        super().__init__(source, 0, str(first["field"]), f"job {first['index']}: {first['reason']}{more}")
        self._keep(source=source, issues=issues)


class ConfigError(TierflowError):
    """A setting is invalid."""

    field: str
    reason: str

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"setting {field}: {reason}")
        self._keep(field=field, reason=reason)


class ServiceUnavailable(TierflowError):
    """The broker or the database cannot be reached."""

    service: str
    url: str
    reason: str

    def __init__(self, service: str, url: str, reason: str) -> None:
        reason = " ".join(reason.split())  # drivers report over several lines; an error is one
        super().__init__(f"{service} unreachable at {url}: {reason}")
        self._keep(service=service, url=url, reason=reason)


class RoutingError(TierflowError):
    """A routing decision cannot be made."""


class InvalidTransition(RoutingError):
    """A job state change that the state machine forbids."""

    current: str
    target: str

    def __init__(self, current: str, target: str) -> None:
        super().__init__(f"job cannot move from {current} to {target}")
        self._keep(current=current, target=target)


class UnknownKind(RoutingError):
    """A job names a kind the registry in force does not declare."""

    kind: str

    def __init__(self, kind: str) -> None:
        super().__init__(f"kind {kind!r} is not declared (no kinds file or plug-in in force names it)")
        self._keep(kind=kind)


class StoreError(TierflowError):
    """The store refused a read or a write."""


class ProviderError(TierflowError):
    """A model call failed."""

    provider: str
    model: str
    reason: str
    retry_after: float | None

    def __init__(self, provider: str, model: str, reason: str, retry_after: float | None = None) -> None:
        super().__init__(f"{provider}:{model}: {reason}")
        self._keep(provider=provider, model=model, reason=reason, retry_after=retry_after)


class ProviderTimeout(ProviderError):
    """The call did not finish within its timeout."""


class ProviderRateLimited(ProviderError):
    """The provider or the cluster-wide limit refused the call for now."""


class ProviderRejected(ProviderError):
    """The provider refused the request, or its output did not validate."""


class ProviderUnavailable(ProviderError):
    """The model cannot take the call now: a 5xx, a dropped connection, a body that is no answer."""


class TierUnavailable(ProviderError):
    """Every model of a tier is out (breakers open, limits exhausted, calls failing).

    `provider` is "tier" and `model` the tier's name. Never retried by the call
    retry policy: the router chooses another tier instead.
    """

"""Fault knobs: what a sandbox should do wrong on its next requests.

A ``Fault`` is armed for ``times`` matching requests (an endpoint name, or any endpoint), is
consumed in the order it was added, and is applied either *before* the sandbox handles the
request (nothing happened at the provider) or *after* (the grant was performed, e.g. a refresh
token rotated, and only the answer goes wrong: the "outcome unknown" case).
Latency is separate and applies to every request of an endpoint until changed.
"""

from __future__ import annotations

import enum
import threading
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any


class FaultKind(enum.StrEnum):
    STATUS = "status"  # an HTML error page (or ``body``) with ``status``, e.g. 500/502/503
    RATE_LIMIT = "rate_limit"  # 429 in the provider's shape, Retry-After only if ``retry_after``
    ERROR_200 = "error_200"  # HTTP 200 carrying the provider's server-error body
    MALFORMED_JSON = "malformed_json"  # 200, application/json, truncated JSON
    OMIT_FIELDS = "omit_fields"  # a successful answer without ``fields`` (always applied after)
    HANG = "hang"  # read the request, stall ``seconds``, then a 504 page (before) or the real answer (after)
    DROP = "drop"  # close the connection without an answer


@dataclass(frozen=True, slots=True)
class Fault:
    kind: FaultKind
    endpoint: str | None = None  # None: any provider endpoint (never the /_sandbox control API)
    times: int = 1
    after: bool = False  # True: perform the request first (state changes), then misbehave
    status: int = 503
    retry_after: float | None = None
    seconds: float = 5.0
    fields: tuple[str, ...] = ()
    body: str | None = None  # replaces the default body of STATUS / RATE_LIMIT / ERROR_200

    def __post_init__(self) -> None:
        if self.times < 1:
            raise ValueError("a fault must fire at least once")
        if self.kind is FaultKind.OMIT_FIELDS and not self.fields:
            raise ValueError("omit_fields needs the names of the fields to omit")
        if self.seconds < 0:
            raise ValueError("seconds must not be negative")

    @property
    def applies_after(self) -> bool:
        # Omitting fields only makes sense on a real answer.
        return self.after or self.kind is FaultKind.OMIT_FIELDS

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["kind"] = self.kind.value
        data["fields"] = list(self.fields)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Fault:
        known = {f for f in cls.__dataclass_fields__}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown fault fields: {sorted(unknown)}")
        values = dict(data)
        values["kind"] = FaultKind(values["kind"])
        if "fields" in values:
            values["fields"] = tuple(str(f) for f in values["fields"])
        return cls(**values)


@dataclass(slots=True)
class _Armed:
    fault: Fault
    remaining: int


@dataclass(slots=True)
class Faults:
    """Thread-safe registry of armed faults and latencies, shared by a sandbox's request threads."""

    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _armed: list[_Armed] = field(default_factory=list)
    _latency: dict[str | None, float] = field(default_factory=dict)

    def add(self, fault: Fault) -> Fault:
        with self._lock:
            self._armed.append(_Armed(fault, fault.times))
        return fault

    def take(self, endpoint: str) -> Fault | None:
        """The first armed fault for ``endpoint``, using up one of its ``times``."""
        with self._lock:
            for armed in self._armed:
                if armed.fault.endpoint in (None, endpoint):
                    armed.remaining -= 1
                    if armed.remaining == 0:
                        self._armed.remove(armed)
                    return armed.fault
        return None

    def pending(self) -> list[tuple[Fault, int]]:
        with self._lock:
            return [(a.fault, a.remaining) for a in self._armed]

    def set_latency(self, seconds: float, *, endpoint: str | None = None) -> None:
        """Delay every request (of ``endpoint``, or all) by ``seconds`` of real time; 0 removes it."""
        if seconds < 0:
            raise ValueError("latency must not be negative")
        with self._lock:
            if seconds == 0:
                self._latency.pop(endpoint, None)
            else:
                self._latency[endpoint] = seconds

    def latency_for(self, endpoint: str) -> float:
        with self._lock:
            return self._latency.get(endpoint, self._latency.get(None, 0.0))

    def latencies(self) -> dict[str | None, float]:
        with self._lock:
            return dict(self._latency)

    def clear(self) -> None:
        with self._lock:
            self._armed.clear()
            self._latency.clear()

    # --- conveniences: one call per knob ------------------------------------------------------

    def fail(
        self,
        status: int = 503,
        *,
        endpoint: str | None = None,
        times: int = 1,
        after: bool = False,
        body: str | None = None,
        retry_after: float | None = None,
    ) -> Fault:
        """Answer ``status`` with an HTML error page (or ``body``)."""
        return self.add(
            Fault(
                FaultKind.STATUS,
                endpoint=endpoint,
                times=times,
                after=after,
                status=status,
                body=body,
                retry_after=retry_after,
            )
        )

    def rate_limit(self, *, retry_after: float | None = None, endpoint: str | None = None, times: int = 1) -> Fault:
        return self.add(
            Fault(FaultKind.RATE_LIMIT, endpoint=endpoint, times=times, status=429, retry_after=retry_after)
        )

    def error_200(
        self, *, endpoint: str | None = None, times: int = 1, after: bool = False, body: str | None = None
    ) -> Fault:
        return self.add(Fault(FaultKind.ERROR_200, endpoint=endpoint, times=times, after=after, body=body))

    def malformed_json(self, *, endpoint: str | None = None, times: int = 1, after: bool = False) -> Fault:
        return self.add(Fault(FaultKind.MALFORMED_JSON, endpoint=endpoint, times=times, after=after))

    def omit_fields(self, *fields: str, endpoint: str | None = None, times: int = 1) -> Fault:
        return self.add(Fault(FaultKind.OMIT_FIELDS, endpoint=endpoint, times=times, fields=fields))

    def hang(self, seconds: float = 5.0, *, endpoint: str | None = None, times: int = 1, after: bool = False) -> Fault:
        """Read the request, then stall; with ``after=True`` the grant is performed first."""
        return self.add(Fault(FaultKind.HANG, endpoint=endpoint, times=times, after=after, seconds=seconds))

    def drop(self, *, endpoint: str | None = None, times: int = 1, after: bool = False) -> Fault:
        return self.add(Fault(FaultKind.DROP, endpoint=endpoint, times=times, after=after))

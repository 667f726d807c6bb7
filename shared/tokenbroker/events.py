"""Domain events on the EventBridge bus. Detail never holds a token."""

from __future__ import annotations

import enum
import json
import threading
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Protocol

from tokenbroker.keys import ConnectionKey
from tokenbroker.observability import logger

if TYPE_CHECKING:
    from mypy_boto3_events import EventBridgeClient
    from mypy_boto3_events.type_defs import PutEventsRequestEntryTypeDef

SOURCE = "tokenbroker"


class EventType(enum.StrEnum):
    CONNECTION_CREATED = "Connection Created"
    CONNECTION_REAUTHORIZED = "Connection Reauthorized"
    TOKEN_REFRESHED = "Token Refreshed"
    TOKEN_REFRESH_FAILED = "Token Refresh Failed"
    CONNECTION_NEEDS_REAUTHORIZATION = "Connection Needs Reauthorization"
    CONNECTION_DELETED = "Connection Deleted"


@dataclass(frozen=True, slots=True)
class DomainEvent:
    type: EventType
    provider: str
    connection_id: str
    generation: int | None = None
    expires_at: int | None = None
    reason: str | None = None

    @classmethod
    def for_key(
        cls,
        type_: EventType,
        key: ConnectionKey,
        *,
        generation: int | None = None,
        expires_at: int | None = None,
        reason: str | None = None,
    ) -> DomainEvent:
        return cls(type_, key.provider, key.connection_id, generation, expires_at, reason)

    def detail(self) -> dict[str, object]:
        return {k: v for k, v in asdict(self).items() if k != "type" and v is not None}


class EventSink(Protocol):
    def publish(self, event: DomainEvent) -> None: ...


class EventBridgeSink:
    """Publishes to the stack's bus. Best effort: the token is already durable when we publish,
    so a failed PutEvents is logged and counted, never turned into a failed refresh."""

    def __init__(self, client: EventBridgeClient, bus_name: str) -> None:
        self._client = client
        self._bus_name = bus_name

    def publish(self, event: DomainEvent) -> None:
        entry: PutEventsRequestEntryTypeDef = {
            "Source": SOURCE,
            "DetailType": str(event.type),
            "Detail": json.dumps(event.detail()),
            "EventBusName": self._bus_name,
        }
        try:
            answer = self._client.put_events(Entries=[entry])
        except Exception:  # any failure here must not undo a durable write
            logger.warning("event not published", extra={"event_type": str(event.type)}, exc_info=True)
            return
        if answer.get("FailedEntryCount"):
            logger.warning("event rejected by the bus", extra={"event_type": str(event.type)})


class MemorySink:
    """Keeps events in memory: for tests and the local stack's inspection."""

    def __init__(self) -> None:
        self._events: list[DomainEvent] = []
        self._lock = threading.Lock()

    def publish(self, event: DomainEvent) -> None:
        with self._lock:
            self._events.append(event)

    @property
    def events(self) -> list[DomainEvent]:
        with self._lock:
            return list(self._events)

    def of_type(self, type_: EventType) -> list[DomainEvent]:
        return [e for e in self.events if e.type == type_]

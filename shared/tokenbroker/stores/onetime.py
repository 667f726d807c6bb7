"""One-time items: connect sessions and OAuth states, each consumed exactly once.

Keys: ``pk = "session#<id>"`` / ``pk = "state#<state>"``, ``sk`` = the kind. Items carry ``ttl``
(epoch seconds) so DynamoDB removes them eventually; since that removal is lazy (up to days),
every read and consume also checks ``ttl > now`` itself: an expired item is absent.
Consuming is one conditional DeleteItem returning the old item, so two racing consumers get
the item once and None once.
"""

from __future__ import annotations

import math
import re
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from botocore.exceptions import ClientError

from tokenbroker.aws import DynamoTable
from tokenbroker.clock import Clock
from tokenbroker.errors import InvalidInput
from tokenbroker.keys import ConnectionKey
from tokenbroker.stores._dynamo import (
    AttributeValue,
    Item,
    get_list,
    get_map,
    get_n,
    get_s,
    is_conditional_failure,
    n,
    s,
    string_list,
    string_map,
)

if TYPE_CHECKING:
    from mypy_boto3_dynamodb.service_resource import Table as TableResource

SESSION_TTL_SECONDS = 15 * 60
STATE_TTL_SECONDS = 10 * 60
# Ids arrive in public URLs: validate before they reach DynamoDB.
NONCE_PATTERN = re.compile(r"[A-Za-z0-9_-]{16,128}")

_SESSION = "session"
_STATE = "state"


def new_nonce() -> str:
    """256 random bits, URL-safe: session ids and OAuth states."""
    return secrets.token_urlsafe(32)


@dataclass(frozen=True, slots=True)
class ConnectSession:
    session_id: str = field(repr=False)  # a bearer link: whoever has it may connect
    provider: str
    connection_id: str
    return_to: str | None
    scopes: tuple[str, ...]
    metadata: dict[str, str]
    created_at: float
    expires_at: float

    @property
    def key(self) -> ConnectionKey:
        return ConnectionKey(self.provider, self.connection_id)


@dataclass(frozen=True, slots=True)
class OAuthState:
    state: str = field(repr=False)
    provider: str
    connection_id: str
    session_id: str | None = field(repr=False)
    redirect_uri: str
    code_verifier: str | None = field(repr=False)  # PKCE: a secret until the code is exchanged
    return_to: str | None
    scopes: tuple[str, ...]
    metadata: dict[str, str]
    expires_at: float

    @property
    def key(self) -> ConnectionKey:
        return ConnectionKey(self.provider, self.connection_id)


def _validate_nonce(value: str, field_name: str) -> str:
    if not isinstance(value, str) or not NONCE_PATTERN.fullmatch(value):
        raise InvalidInput(f"{field_name} is malformed", field=field_name)
    return value


class OneTimeStore:
    def __init__(self, table: DynamoTable | TableResource, *, clock: Clock) -> None:
        resolved = DynamoTable.of(table)
        self._client = resolved.client
        self._table = resolved.name
        self._clock = clock

    # --- connect sessions --------------------------------------------------------------------

    def create_session(
        self,
        key: ConnectionKey,
        *,
        return_to: str | None = None,
        scopes: Sequence[str] = (),
        metadata: Mapping[str, str] | None = None,
        ttl_seconds: float = SESSION_TTL_SECONDS,
    ) -> ConnectSession:
        now = self._clock.now()
        session = ConnectSession(
            session_id=new_nonce(),
            provider=key.provider,
            connection_id=key.connection_id,
            return_to=return_to,
            scopes=tuple(scopes),
            metadata=dict(metadata or {}),
            created_at=now,
            expires_at=now + ttl_seconds,
        )
        self.put_session(session)
        return session

    def put_session(self, session: ConnectSession) -> None:
        _validate_nonce(session.session_id, "session")
        item = {
            **self._common(session.key, session.return_to, session.scopes, session.metadata),
            "created_at": n(session.created_at),
            **self._expiry(session.expires_at),
        }
        self._put(_SESSION, session.session_id, item)

    def get_session(self, session_id: str) -> ConnectSession | None:
        """Read without consuming (e.g. to show a login form again); expired means None."""
        _validate_nonce(session_id, "session")
        answer = self._client.get_item(TableName=self._table, Key=self._key(_SESSION, session_id), ConsistentRead=True)
        item = answer.get("Item")
        return self._session_of(session_id, item) if item and self._alive(item) else None

    def consume_session(self, session_id: str) -> ConnectSession | None:
        item = self._consume(_SESSION, _validate_nonce(session_id, "session"))
        return None if item is None else self._session_of(session_id, item)

    # --- OAuth states ------------------------------------------------------------------------

    def create_state(
        self,
        key: ConnectionKey,
        *,
        redirect_uri: str,
        code_verifier: str | None = None,
        session_id: str | None = None,
        return_to: str | None = None,
        scopes: Sequence[str] = (),
        metadata: Mapping[str, str] | None = None,
        ttl_seconds: float = STATE_TTL_SECONDS,
    ) -> OAuthState:
        state = OAuthState(
            state=new_nonce(),
            provider=key.provider,
            connection_id=key.connection_id,
            session_id=session_id,
            redirect_uri=redirect_uri,
            code_verifier=code_verifier,
            return_to=return_to,
            scopes=tuple(scopes),
            metadata=dict(metadata or {}),
            expires_at=self._clock.now() + ttl_seconds,
        )
        self.put_state(state)
        return state

    def put_state(self, state: OAuthState) -> None:
        _validate_nonce(state.state, "state")
        item = {
            **self._common(state.key, state.return_to, state.scopes, state.metadata),
            "redirect_uri": s(state.redirect_uri),
            **self._expiry(state.expires_at),
        }
        if state.session_id:
            item["session_id"] = s(state.session_id)
        if state.code_verifier:
            item["code_verifier"] = s(state.code_verifier)
        self._put(_STATE, state.state, item)

    def consume_state(self, state: str) -> OAuthState | None:
        item = self._consume(_STATE, _validate_nonce(state, "state"))
        if item is None:
            return None
        return OAuthState(
            state=state,
            provider=get_s(item, "provider") or "",
            connection_id=get_s(item, "connection_id") or "",
            session_id=get_s(item, "session_id"),
            redirect_uri=get_s(item, "redirect_uri") or "",
            code_verifier=get_s(item, "code_verifier"),
            return_to=get_s(item, "return_to"),
            scopes=get_list(item, "scopes"),
            metadata=get_map(item, "metadata"),
            expires_at=get_n(item, "expires_at") or 0.0,
        )

    # --- helpers -----------------------------------------------------------------------------

    @staticmethod
    def _key(kind: str, ident: str) -> dict[str, AttributeValue]:
        return {"pk": s(f"{kind}#{ident}"), "sk": s(kind)}

    @staticmethod
    def _common(
        key: ConnectionKey, return_to: str | None, scopes: Sequence[str], metadata: Mapping[str, str]
    ) -> dict[str, AttributeValue]:
        item = {
            "provider": s(key.provider),
            "connection_id": s(key.connection_id),
            "scopes": string_list(scopes),
            "metadata": string_map(metadata),
        }
        if return_to:
            item["return_to"] = s(return_to)
        return item

    @staticmethod
    def _expiry(expires_at: float) -> dict[str, AttributeValue]:
        # DynamoDB TTL wants whole epoch seconds (rounded up: never before expires_at, which
        # keeps the exact value and has the last word).
        return {"expires_at": n(expires_at), "ttl": n(math.ceil(expires_at))}

    def _alive(self, item: Item) -> bool:
        expires_at = get_n(item, "expires_at")
        return expires_at is not None and expires_at > self._clock.now()

    def _put(self, kind: str, ident: str, attributes: dict[str, AttributeValue]) -> None:
        # Ids are random; refusing to overwrite makes a (never expected) collision loud.
        self._client.put_item(
            TableName=self._table,
            Item={**self._key(kind, ident), **attributes},
            ConditionExpression="attribute_not_exists(pk)",
        )

    def _consume(self, kind: str, ident: str) -> Item | None:
        try:
            answer = self._client.delete_item(
                TableName=self._table,
                Key=self._key(kind, ident),
                ConditionExpression="attribute_exists(pk) AND #ttl > :now",
                ExpressionAttributeNames={"#ttl": "ttl"},
                ExpressionAttributeValues={":now": n(self._clock.now())},
                ReturnValues="ALL_OLD",
            )
        except ClientError as error:
            if is_conditional_failure(error):
                return None
            raise
        item: Item = answer.get("Attributes") or {}
        # ttl has whole seconds; expires_at decides within the last second.
        return item if item and self._alive(item) else None

    @staticmethod
    def _session_of(session_id: str, item: Item) -> ConnectSession:
        return ConnectSession(
            session_id=session_id,
            provider=get_s(item, "provider") or "",
            connection_id=get_s(item, "connection_id") or "",
            return_to=get_s(item, "return_to"),
            scopes=get_list(item, "scopes"),
            metadata=get_map(item, "metadata"),
            created_at=get_n(item, "created_at") or 0.0,
            expires_at=get_n(item, "expires_at") or 0.0,
        )

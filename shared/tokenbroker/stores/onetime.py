"""One-time items: connect sessions and OAuth states, each consumed exactly once.

Keys: ``pk = "session#<id>"`` / ``pk = "state#<state>"``, ``sk`` = the kind. Items carry ``ttl``
(epoch seconds) so DynamoDB removes them eventually; since that removal is lazy (up to days),
every read and consume also checks ``ttl > now`` itself: an expired item is absent.
Consuming is one conditional DeleteItem returning the old item, so two racing consumers get
the item once and None once.

A session is not consumed by opening it (a link preview must not burn it): it records the
browsers that opened it (hashes of their binding cookies), counts login attempts and reset
requests with conditional updates (so racing guesses cannot exceed the limits), and ends when one
flow completes. A session in confirm mode then stays, completed, holding the id of the pending
secret version, until the application confirms it or the sweep discards it: completed sessions
sit in the sparse ``due`` index under ``due_shard = "pending"`` keyed by their expiry.
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
    Expression,
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
from tokenbroker.stores.connections import DUE_INDEX

if TYPE_CHECKING:
    from mypy_boto3_dynamodb.service_resource import Table as TableResource

SESSION_TTL_SECONDS = 15 * 60
# Limits per connect link (design.md "Who completes a connect flow").
MAX_LOGIN_ATTEMPTS = 5
MAX_RESET_REQUESTS = 3
RESET_INTERVAL_SECONDS = 60.0
# Distinct browsers that may open one link: a few devices and previewers, not a botnet.
MAX_BINDINGS = 16
# A completed confirm-mode session outlives its expiry so the sweep can still find and discard it.
PENDING_GRACE_SECONDS = 86400
PENDING_SHARD = "pending"
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
    end_user_id: str | None = None
    confirm: bool = False
    bindings: frozenset[str] = frozenset()  # sha256 of the binding cookies of browsers that opened it
    login_attempts: int = 0
    reset_requests: int = 0
    last_reset_at: float | None = None
    completed_at: float | None = None
    pending_version: str | None = None  # confirm mode: the secret version holding the pending grant

    @property
    def key(self) -> ConnectionKey:
        return ConnectionKey(self.provider, self.connection_id)

    @property
    def completed(self) -> bool:
        return self.completed_at is not None

    def expired(self, now: float) -> bool:
        return self.expires_at <= now


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
    binding: str | None = None  # sha256 of the binding cookie of the browser that started it

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
        end_user_id: str | None = None,
        confirm: bool = False,
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
            end_user_id=end_user_id,
            confirm=confirm,
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
        if session.end_user_id is not None:
            item["end_user_id"] = s(session.end_user_id)
        if session.confirm:
            item["confirm"] = {"BOOL": True}
        self._put(_SESSION, session.session_id, item)

    def get_session(self, session_id: str) -> ConnectSession | None:
        """An open session (unexpired, not completed), read without consuming; else None."""
        session = self.read_session(session_id)
        if session is None or session.completed or session.expired(self._clock.now()):
            return None
        return session

    def read_session(self, session_id: str) -> ConnectSession | None:
        """The session as stored, expired or completed alike (confirmation needs to tell them apart)."""
        _validate_nonce(session_id, "session")
        answer = self._client.get_item(TableName=self._table, Key=self._key(_SESSION, session_id), ConsistentRead=True)
        item = answer.get("Item")
        return self._session_of(session_id, item) if item else None

    def consume_session(self, session_id: str) -> ConnectSession | None:
        """End an open session for good (one conditional DeleteItem); None if it was not open."""
        item = self._consume(_SESSION, _validate_nonce(session_id, "session"), open_only=True)
        return None if item is None else self._session_of(session_id, item)

    def bind_session(self, session_id: str, binding: str) -> bool:
        """Remember a browser that opened the link; False when the session is not open or full."""
        update = Expression().add("bindings", {"SS": [binding]})
        bindings = update.name("bindings")
        limit = f"(attribute_not_exists({bindings}) OR contains({bindings}, {update.value(s(binding))}) OR "
        limit += f"size({bindings}) < {update.value(n(MAX_BINDINGS))})"
        return self._update_open(session_id, update, limit) is not None

    def reserve_login_attempt(self, session_id: str) -> ConnectSession | None:
        """Count one login attempt before the provider is asked; None once the link has had its
        ``MAX_LOGIN_ATTEMPTS`` (or is no longer open). Counting first keeps racing guesses in bounds."""
        update = Expression().add("login_attempts", n(1))
        attempts = update.name("login_attempts")
        limit = f"(attribute_not_exists({attempts}) OR {attempts} < {update.value(n(MAX_LOGIN_ATTEMPTS))})"
        return self._update_open(session_id, update, limit)

    def refund_login_attempt(self, session_id: str) -> None:
        """The provider never judged the password (it was down): the attempt does not count."""
        update = Expression().add("login_attempts", n(-1))
        self._update_open(session_id, update, f"{update.name('login_attempts')} > {update.value(n(0))}")

    def reserve_reset_request(self, session_id: str) -> ConnectSession | None:
        """Count one password-reset request: at most ``MAX_RESET_REQUESTS`` per link, one a minute."""
        now = self._clock.now()
        update = Expression().add("reset_requests", n(1)).set("last_reset_at", n(now))
        count, last = update.name("reset_requests"), update.name("last_reset_at")
        limit = (
            f"(attribute_not_exists({count}) OR {count} < {update.value(n(MAX_RESET_REQUESTS))}) AND "
            f"(attribute_not_exists({last}) OR {last} <= {update.value(n(now - RESET_INTERVAL_SECONDS))})"
        )
        return self._update_open(session_id, update, limit)

    def complete_session(self, session_id: str, *, pending_version: str | None = None) -> ConnectSession | None:
        """End the session because a flow completed; None if another flow completed it first.

        Without ``pending_version`` the session is consumed. With it (confirm mode) the session stays,
        completed, in the ``pending`` partition of the due index until confirmed or discarded.
        """
        if pending_version is None:
            return self.consume_session(session_id)
        now = self._clock.now()
        update = Expression().set("completed_at", n(now)).set("pending_version", s(pending_version))
        update.set("due_shard", s(PENDING_SHARD))
        update.set_raw("next_refresh_at", update.name("expires_at"))
        update.set_raw("ttl", f"{update.name('ttl')} + {update.value(n(PENDING_GRACE_SECONDS))}")
        return self._update_open(session_id, update, None)

    def claim_completed(self, session_id: str) -> ConnectSession | None:
        """Take a completed, unexpired session for confirmation (one conditional DeleteItem)."""
        item = self._delete_if(
            self._key(_SESSION, _validate_nonce(session_id, "session")),
            "attribute_exists(completed_at) AND expires_at > :now",
        )
        return None if item is None else self._session_of(session_id, item)

    def claim_expired_pending(self, session_id: str) -> ConnectSession | None:
        """Take a completed session whose confirmation window has passed, for discarding."""
        item = self._delete_if(
            self._key(_SESSION, _validate_nonce(session_id, "session")),
            "attribute_exists(completed_at) AND expires_at <= :now",
        )
        return None if item is None else self._session_of(session_id, item)

    def expired_pending(self, limit: int = 100) -> list[str]:
        """Ids of completed confirm-mode sessions past their expiry (one Query of the due index)."""
        answer = self._client.query(
            TableName=self._table,
            IndexName=DUE_INDEX,
            KeyConditionExpression="due_shard = :shard AND next_refresh_at <= :now",
            ExpressionAttributeValues={":shard": s(PENDING_SHARD), ":now": n(self._clock.now())},
            Limit=limit,
        )
        prefix = f"{_SESSION}#"
        found = (get_s(item, "pk") or "" for item in answer.get("Items", []))
        return [pk.removeprefix(prefix) for pk in found if pk.startswith(prefix)]

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
        binding: str | None = None,
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
            binding=binding,
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
        if state.binding:
            item["binding"] = s(state.binding)
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
            binding=get_s(item, "binding"),
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

    def _consume(self, kind: str, ident: str, *, open_only: bool = False) -> Item | None:
        condition = "attribute_exists(pk) AND #ttl > :now"
        if open_only:
            condition += " AND attribute_not_exists(completed_at)"
        item = self._delete_if(self._key(kind, ident), condition)
        # ttl has whole seconds; expires_at decides within the last second.
        return item if item and self._alive(item) else None

    def _delete_if(self, key: dict[str, AttributeValue], condition: str) -> Item | None:
        try:
            answer = self._client.delete_item(
                TableName=self._table,
                Key=key,
                ConditionExpression=condition,
                ExpressionAttributeNames={"#ttl": "ttl"} if "#ttl" in condition else {},
                ExpressionAttributeValues={":now": n(self._clock.now())},
                ReturnValues="ALL_OLD",
            )
        except ClientError as error:
            if is_conditional_failure(error):
                return None
            raise
        item: Item = answer.get("Attributes") or {}
        return item or None

    def _update_open(self, session_id: str, update: Expression, extra_condition: str | None) -> ConnectSession | None:
        """One conditional UpdateItem on a session that is open (exists, unexpired, not completed)."""
        _validate_nonce(session_id, "session")
        now = update.value(n(self._clock.now()))
        condition = (
            f"attribute_exists({update.name('pk')}) AND {update.name('expires_at')} > {now}"
            f" AND attribute_not_exists({update.name('completed_at')})"
        )
        if extra_condition:
            condition += f" AND {extra_condition}"
        try:
            answer = self._client.update_item(
                TableName=self._table,
                Key=self._key(_SESSION, session_id),
                UpdateExpression=update.update_expression(),
                ConditionExpression=condition,
                ExpressionAttributeNames=update.names,
                ExpressionAttributeValues=update.values,
                ReturnValues="ALL_NEW",
            )
        except ClientError as error:
            if is_conditional_failure(error):
                return None
            raise
        return self._session_of(session_id, answer.get("Attributes") or {})

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
            end_user_id=get_s(item, "end_user_id"),
            confirm=bool(item.get("confirm", {}).get("BOOL", False)),
            bindings=frozenset(item.get("bindings", {}).get("SS", [])),
            login_attempts=int(get_n(item, "login_attempts") or 0),
            reset_requests=int(get_n(item, "reset_requests") or 0),
            last_reset_at=get_n(item, "last_reset_at"),
            completed_at=get_n(item, "completed_at"),
            pending_version=get_s(item, "pending_version"),
        )

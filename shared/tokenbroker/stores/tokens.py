"""Token store: one Secrets Manager secret per connection, written idempotently, read uncached.

Secret name ``tokenbroker/<stage>/<provider>/<connection_id>``. Every write carries a
ClientRequestToken derived from (secret name, generation), so a retried write of the same content
is the same secret version and never a second one, and every write that changes what is current
(a refresh, a re-connect, a needs_reauth mark) competes for the one next generation: a different
content under the same generation means another writer already wrote it (``GenerationConflict``),
and the loser adopts the winner.
"""

from __future__ import annotations

import re
import uuid
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError

from tokenbroker.errors import ConnectionNotFound, InvalidInput, LeaseLost
from tokenbroker.keys import ConnectionKey
from tokenbroker.models import ConnectionStatus, StoredToken

if TYPE_CHECKING:
    from mypy_boto3_secretsmanager import SecretsManagerClient

NAME_ROOT = "tokenbroker"
STAGE_PATTERN = re.compile(r"[A-Za-z0-9_-]{1,32}")
# Fixed forever: changing it would change every ClientRequestToken and break retry idempotency.
_REQUEST_TOKEN_NAMESPACE = uuid.UUID("5b0f1c7e-3a52-4c1e-9a4e-0d7c1b5e8f21")
DEFAULT_RECOVERY_WINDOW_DAYS = 7
# The label of a version holding a grant that awaits the application's confirmation. Vending and
# refreshing read AWSCURRENT only, so a pending grant is never served or spent.
PENDING_STAGE = "TBPENDING"


class GenerationConflict(LeaseLost):
    """This generation of the token was already written with different content: another writer won."""


def validate_stage(stage: str) -> str:
    if not STAGE_PATTERN.fullmatch(stage):
        raise InvalidInput("stage must match [A-Za-z0-9_-]{1,32}", field="stage")
    return stage


def error_code(error: ClientError) -> str:
    return str(error.response.get("Error", {}).get("Code", ""))


def _marked_for_deletion(error: ClientError) -> bool:
    message = str(error.response.get("Error", {}).get("Message", "")).lower()
    return error_code(error) == "InvalidRequestException" and ("deleted" in message or "deletion" in message)


class TokenStore:
    def __init__(
        self,
        client: SecretsManagerClient,
        *,
        stage: str,
        kms_key_id: str | None = None,
    ) -> None:
        self._client = client
        self._stage = validate_stage(stage)
        self._kms_key_id = kms_key_id or None

    def secret_name(self, key: ConnectionKey) -> str:
        return f"{NAME_ROOT}/{self._stage}/{key.provider}/{key.connection_id}"

    def client_request_token(self, key: ConnectionKey, generation: int) -> str:
        """36 characters (Secrets Manager wants 32-64), the same for every retry of one write.

        Not the status: a needs_reauth mark is generation N + 1 like the refresh or re-connect it
        races, so exactly one of them becomes that generation (the others get ``GenerationConflict``).
        """
        return str(uuid.uuid5(_REQUEST_TOKEN_NAMESPACE, f"{self.secret_name(key)}|{generation}"))

    # --- reads: never cached, the lease holder and the vend path need the current version ------

    def get(self, key: ConnectionKey) -> StoredToken:
        """The AWSCURRENT version. One GetSecretValue. Raises ``ConnectionNotFound``."""
        return self._read(key, None)

    def get_previous(self, key: ConnectionKey) -> StoredToken | None:
        """The AWSPREVIOUS version (the token before the last write), if any."""
        try:
            return self._read(key, "AWSPREVIOUS")
        except ConnectionNotFound:
            return None

    def _read(self, key: ConnectionKey, stage: str | None) -> StoredToken:
        params: dict[str, Any] = {"SecretId": self.secret_name(key)}
        if stage is not None:
            params["VersionStage"] = stage
        try:
            answer = self._client.get_secret_value(**params)
        except ClientError as error:
            if error_code(error) == "ResourceNotFoundException" or _marked_for_deletion(error):
                raise ConnectionNotFound(f"no connection {key}") from None
            raise
        return StoredToken.from_json(answer["SecretString"])

    # --- writes --------------------------------------------------------------------------------

    def put(self, key: ConnectionKey, stored: StoredToken, *, restore_deleted: bool = False) -> str:
        """Write ``stored`` as the new AWSCURRENT version; returns the version id.

        Costs one PutSecretValue for an existing secret; the first write falls back to
        CreateSecret (tagged provider/connection_id). A secret scheduled for deletion is
        restored only with ``restore_deleted=True`` (the connect flow re-connecting after a
        disconnect); otherwise ``ConnectionNotFound``, so a refresh that lost a race with a
        disconnect cannot bring the secret back. Raises ``GenerationConflict`` when this
        generation was already written with other content.
        """
        token = self.client_request_token(key, stored.generation)
        body = stored.to_json()
        try:
            return self._put_version(key, body, token)
        except ClientError as error:
            code = error_code(error)
            if code == "ResourceNotFoundException":
                return self._create(key, body, token)
            if _marked_for_deletion(error):
                if not restore_deleted:
                    raise ConnectionNotFound(f"connection {key} is being deleted") from None
                self._client.restore_secret(SecretId=self.secret_name(key))
                return self._put_version(key, body, token)
            raise

    def _put_version(self, key: ConnectionKey, body: str, token: str) -> str:
        try:
            answer = self._client.put_secret_value(
                SecretId=self.secret_name(key), SecretString=body, ClientRequestToken=token
            )
        except ClientError as error:
            if error_code(error) == "ResourceExistsException":
                raise GenerationConflict(f"this generation of {key} was already written by another writer") from None
            raise
        return answer["VersionId"]

    def _create_params(self, key: ConnectionKey) -> dict[str, Any]:
        """CreateSecret's arguments for a connection's secret (tagged, under the stack's key)."""
        params: dict[str, Any] = {
            "Name": self.secret_name(key),
            "Description": f"tokenbroker token of {key}",
            "Tags": [
                {"Key": "provider", "Value": key.provider},
                {"Key": "connection_id", "Value": key.connection_id},
            ],
        }
        if self._kms_key_id:
            params["KmsKeyId"] = self._kms_key_id
        return params

    def _create(self, key: ConnectionKey, body: str, token: str) -> str:
        params = {**self._create_params(key), "SecretString": body, "ClientRequestToken": token}
        try:
            answer = self._client.create_secret(**params)
        except ClientError as error:
            # Another writer created it between our two calls: write a version on top instead.
            if error_code(error) == "ResourceExistsException":
                return self._put_version(key, body, token)
            raise
        return answer["VersionId"]

    # --- grants awaiting confirmation ----------------------------------------------------------

    def put_pending(self, key: ConnectionKey, stored: StoredToken, *, request_id: str) -> str:
        """Write a grant awaiting confirmation as a version labelled ``PENDING_STAGE``; its version id.

        AWSCURRENT stays where it is, so a re-connect keeps serving the old grant. (The first version
        of a brand-new secret always becomes AWSCURRENT too: ``stored`` has status pending, which
        vending refuses.) A newer pending write takes the label over: one pending grant at a time.
        ``request_id`` makes retries idempotent.
        """
        if stored.status is not ConnectionStatus.PENDING:
            raise ValueError("a pending grant must carry status pending")
        name = self.secret_name(key)
        token = str(uuid.uuid5(_REQUEST_TOKEN_NAMESPACE, f"{name}|pending|{request_id}"))

        def write() -> str:
            answer = self._client.put_secret_value(
                SecretId=name, SecretString=stored.to_json(), ClientRequestToken=token, VersionStages=[PENDING_STAGE]
            )
            return answer["VersionId"]

        try:
            return write()
        except ClientError as error:
            if error_code(error) == "ResourceNotFoundException":
                self._create_empty(key)
                return write()
            if _marked_for_deletion(error):
                self._client.restore_secret(SecretId=name)
                return write()
            raise

    def get_pending(self, key: ConnectionKey, version_id: str) -> StoredToken | None:
        """The pending grant written as ``version_id``; None once discarded or taken over."""
        try:
            answer = self._client.get_secret_value(SecretId=self.secret_name(key), VersionId=version_id)
        except ClientError as error:
            if error_code(error) == "ResourceNotFoundException" or _marked_for_deletion(error):
                return None
            raise
        if PENDING_STAGE not in answer.get("VersionStages", []):
            return None
        return StoredToken.from_json(answer["SecretString"])

    def drop_pending(self, key: ConnectionKey, version_id: str) -> None:
        """Take the pending label off ``version_id``: the unlabelled version is deprecated and
        Secrets Manager removes it. Nothing to do when the label moved on or the secret is gone."""
        try:
            self._client.update_secret_version_stage(
                SecretId=self.secret_name(key), VersionStage=PENDING_STAGE, RemoveFromVersionId=version_id
            )
        except ClientError as error:
            if error_code(error) in ("ResourceNotFoundException", "InvalidParameterException"):
                return
            if _marked_for_deletion(error):
                return
            raise

    def _create_empty(self, key: ConnectionKey) -> None:
        try:
            self._client.create_secret(**self._create_params(key))
        except ClientError as error:
            if error_code(error) != "ResourceExistsException":
                raise

    def delete(self, key: ConnectionKey, recovery_window_days: int = DEFAULT_RECOVERY_WINDOW_DAYS) -> bool:
        """Schedule deletion (recoverable for the window). False when there was nothing to delete."""
        if not 7 <= recovery_window_days <= 30:
            raise InvalidInput("recovery window must be 7 to 30 days", field="recovery_window_days")
        try:
            self._client.delete_secret(SecretId=self.secret_name(key), RecoveryWindowInDays=recovery_window_days)
        except ClientError as error:
            if error_code(error) == "ResourceNotFoundException" or _marked_for_deletion(error):
                return False
            raise
        return True

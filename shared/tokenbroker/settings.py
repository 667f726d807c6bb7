"""Handler configuration, parsed once from the environment into one typed object."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

# Re-exported: functions/callback/app.py still imports it from here.
from tokenbroker.errors import ConfigurationError
from tokenbroker.schedule import DEFAULT_POLICY, SchedulePolicy

__all__ = ["DEFAULT_APP_NAME", "ConfigurationError", "Settings"]

# What the pages call the application when the stack names none (AppName is required on AWS).
DEFAULT_APP_NAME = "the application"


def _split(value: str | None) -> tuple[str, ...]:
    return tuple(item.strip() for item in (value or "").split(",") if item.strip())


def _number(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        return float(raw)
    except ValueError:
        raise ConfigurationError(f"{name} must be a number, got {raw!r}") from None


@dataclass(frozen=True, slots=True)
class Settings:
    table_name: str
    stage: str = "dev"
    event_bus_name: str | None = None
    refresh_queue_url: str | None = None
    kms_key_id: str | None = None
    # Prefixes (scheme://host[:port]/path) that a connect session's return_to may start with.
    allowed_return_urls: tuple[str, ...] = ()
    # Where public routes are reachable; on AWS derived from the request when unset.
    public_base_url: str | None = None
    providers_file: str | None = None
    # The lease must outlive provider timeout + secret write; the Lambda timeout is shorter.
    lease_seconds: float = 90.0
    # How long a vend waits for another worker's refresh before answering 503.
    vend_wait_seconds: float = 8.0
    connect_session_seconds: float = 900.0
    # How often the sweep runs; the sweep's horizon and the engine's slack both derive from it.
    schedule: SchedulePolicy = DEFAULT_POLICY
    sweep_max_messages: int = 10_000
    # Records of one SQS batch refreshed side by side by the worker (1 = one after another).
    worker_threads: int = 10
    # Branding of the end-user pages, as configured; tokenbroker.pages.Branding validates it.
    app_name: str = DEFAULT_APP_NAME
    app_logo_url: str | None = None
    app_accent_color: str | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        table_name = env.get("TABLE_NAME")
        if not table_name:
            raise ConfigurationError("TABLE_NAME is not set")
        return cls(
            table_name=table_name,
            stage=env.get("STAGE") or "dev",
            event_bus_name=env.get("EVENT_BUS_NAME") or None,
            refresh_queue_url=env.get("REFRESH_QUEUE_URL") or None,
            kms_key_id=env.get("KMS_KEY_ID") or None,
            allowed_return_urls=_split(env.get("ALLOWED_RETURN_URLS")),
            public_base_url=(env.get("PUBLIC_BASE_URL") or "").rstrip("/") or None,
            providers_file=env.get("TOKENBROKER_PROVIDERS_FILE") or None,
            lease_seconds=_number(env, "LEASE_SECONDS", 90.0),
            vend_wait_seconds=_number(env, "VEND_WAIT_SECONDS", 8.0),
            connect_session_seconds=_number(env, "CONNECT_SESSION_SECONDS", 900.0),
            schedule=SchedulePolicy.from_env(env),
            sweep_max_messages=int(_number(env, "SWEEP_MAX_MESSAGES", 10_000)),
            worker_threads=max(1, int(_number(env, "WORKER_THREADS", 10))),
            app_name=env.get("APP_NAME") or DEFAULT_APP_NAME,
            app_logo_url=env.get("APP_LOGO_URL") or None,
            app_accent_color=env.get("APP_ACCENT_COLOR") or None,
        )

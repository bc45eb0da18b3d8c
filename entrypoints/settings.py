"""Settings: config.toml, then TILLBOX_<SECTION>_<KEY> environment variables, then flags.

The shipped ``config.toml`` documents every setting; ``DEFAULTS`` below is the same
table in code (a test keeps them equal). Every value remembers where it came from,
for ``tillbox config show``. Anything unknown or ill-typed is a ``ConfigError`` with
one line that names the problem.
"""

from __future__ import annotations

import json
import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs

from entrypoints.http.proxies import PROXY_HEADERS, parse_networks

DEFAULTS: dict[str, dict[str, Any]] = {
    "server": {
        "host": "127.0.0.1",
        "port": 8080,
        "workers": 1,
        "shutdown_grace": 10,
        "max_body_bytes": 1048576,
        "max_header_bytes": 65536,
        "header_timeout": 10,
        "body_timeout": 30,
        "keepalive_timeout": 75,
        "max_connections": 1000,
        "access_log": True,
        "cors_origins": [],
        "trusted_proxies": [],
        "proxy_header": "x-forwarded-for",
        "public_max_age": 10,
    },
    "data": {"dir": "tillbox-data"},
    "database": {
        "url": "",
        "pool_min": 2,
        "pool_max": 20,
        "busy_timeout_ms": 5000,
        "read_budget_ms": 200,
        "slow_read_budget_ms": 5000,
    },
    "store": {"currency": "USD"},
    "auth": {
        "allow_registration": True,
        "issuer": "tillbox",
        "audience": "tillbox-api",
        "access_token_ttl": 900,
        "refresh_token_ttl": 2592000,
        "argon2_memory_kib": 19456,
        "argon2_time_cost": 2,
        "argon2_parallelism": 1,
        "hash_workers": 1,
        "hash_queue_limit": 4,
        "verify_queue_limit": 64,
        "login_failures_per_account": 5,
        "login_failures_per_ip": 20,
        "login_window": 900,
        "registrations_per_ip": 10,
        "registration_window": 3600,
    },
    "orders": {"expiry_minutes": 30, "expiry_check_seconds": 30, "customers_cancel_paid_card_orders": False},
    "outbox": {"retention_days": 30},
    "stripe": {
        "secret_key": "",
        "webhook_secret": "",
        "api_base": "https://api.stripe.com",
        "retry_attempts": 3,
        "timeout_seconds": 20,
        "breaker_threshold": 5,
        "breaker_reset_seconds": 30,
    },
    "log": {"level": "info"},
}

#: Settings whose values are secrets: masked by ``tillbox config show``, never logged.
SECRETS: frozenset[tuple[str, str]] = frozenset(
    {("database", "url"), ("stripe", "secret_key"), ("stripe", "webhook_secret")}
)

#: What a secret that is set shows as.
MASK = "********"


def describe_settings(settings: Settings) -> list[str]:
    """The effective settings as lines of TOML, each with where it came from, every secret that
    is set masked: what `tillbox config show` prints and the console's keys and settings show."""
    lines = [f"# config file: {settings.config_path or '(none: built-in defaults)'}"]
    for section, values in settings.values.items():
        lines += ["", f"[{section}]"]
        for key, value in values.items():
            shown = MASK if (section, key) in SECRETS and value else value
            rendered = json.dumps(shown) if not isinstance(shown, bool) else str(shown).lower()
            lines.append(f"{key} = {rendered}  # {settings.sources[section][key]}")
    return lines


_POSITIVE = {
    ("server", "port"): (0, 65535),  # 0: any free port, named in the "listening" log line
    ("server", "workers"): (1, 64),
    ("server", "shutdown_grace"): (0, 3600),
    ("server", "max_body_bytes"): (1024, 1 << 30),
    ("server", "max_header_bytes"): (4096, 1 << 20),
    ("server", "header_timeout"): (1, 3600),
    ("server", "body_timeout"): (1, 3600),
    ("server", "keepalive_timeout"): (1, 3600),
    ("server", "max_connections"): (1, 1_000_000),
    ("server", "public_max_age"): (0, 86_400),
    ("database", "pool_min"): (1, 1000),
    ("database", "pool_max"): (1, 1000),
    ("database", "busy_timeout_ms"): (0, 600_000),
    ("database", "read_budget_ms"): (1, 600_000),
    ("database", "slow_read_budget_ms"): (1, 3_600_000),
    ("auth", "access_token_ttl"): (60, 86_400),
    ("auth", "refresh_token_ttl"): (3600, 365 * 86_400),
    ("auth", "argon2_memory_kib"): (19456, 4 << 20),
    ("auth", "argon2_time_cost"): (2, 100),
    ("auth", "argon2_parallelism"): (1, 64),
    ("auth", "hash_workers"): (1, 64),
    ("auth", "hash_queue_limit"): (0, 10_000),
    ("auth", "verify_queue_limit"): (1, 100_000),
    ("auth", "registrations_per_ip"): (1, 100_000),
    ("auth", "registration_window"): (1, 7 * 86_400),
    ("auth", "login_failures_per_account"): (1, 1000),
    ("auth", "login_failures_per_ip"): (1, 100_000),
    ("auth", "login_window"): (1, 86_400),
    ("orders", "expiry_minutes"): (1, 7 * 24 * 60),
    ("orders", "expiry_check_seconds"): (1, 3600),
    ("outbox", "retention_days"): (1, 3650),
    ("stripe", "retry_attempts"): (1, 10),
    ("stripe", "timeout_seconds"): (1, 300),
    ("stripe", "breaker_threshold"): (1, 1000),
    ("stripe", "breaker_reset_seconds"): (1, 3600),
}
_CHOICES = {("log", "level"): {"debug", "info", "warning", "error"}, ("server", "proxy_header"): set(PROXY_HEADERS)}
ENV_PREFIX = "TILLBOX_"


class ConfigError(Exception):
    """A setting is wrong; the message is one line that says which and why."""


@attrs.frozen
class Settings:
    values: dict[str, dict[str, Any]]
    sources: dict[str, dict[str, str]]  # "default", "config.toml (path)", "env TILLBOX_...", "flag --port"
    config_path: Path | None

    def __getitem__(self, section: str) -> dict[str, Any]:
        return self.values[section]

    @property
    def data_dir(self) -> Path:
        return Path(self.values["data"]["dir"]).expanduser().absolute()


def _check(section: str, key: str, value: Any, origin: str) -> Any:
    default = DEFAULTS[section][key]
    where = f"{origin}: {section}.{key}"
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ConfigError(f"{where} must be true or false, not {value!r}")
    elif isinstance(default, int):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where} must be a whole number, not {value!r}")
        low, high = _POSITIVE.get((section, key), (0, 1 << 62))
        if not low <= value <= high:
            raise ConfigError(f"{where} must be between {low} and {high}, not {value}")
    elif isinstance(default, str):
        if not isinstance(value, str):
            raise ConfigError(f"{where} must be a string, not {value!r}")
        choices = _CHOICES.get((section, key))
        if choices and value not in choices:
            raise ConfigError(f"{where} must be one of {', '.join(sorted(choices))}, not {value!r}")
        if (section, key) == ("store", "currency") and not (len(value) == 3 and value.isalpha() and value.isupper()):
            raise ConfigError(f"{where} must be an ISO 4217 code such as USD, not {value!r}")
    elif isinstance(default, list):
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{where} must be a list of strings, not {value!r}")
        if (section, key) == ("server", "trusted_proxies"):
            try:
                parse_networks(value)
            except ValueError as e:
                raise ConfigError(f"{where}: {e}") from None
    return value


def _parse_env(section: str, key: str, raw: str, name: str) -> Any:
    default = DEFAULTS[section][key]
    if isinstance(default, bool):
        lowered = raw.strip().lower()
        if lowered in {"1", "true", "yes", "on"}:
            return True
        if lowered in {"0", "false", "no", "off"}:
            return False
        raise ConfigError(f"environment {name} must be true or false, not {raw!r}")
    if isinstance(default, int):
        try:
            return int(raw.strip())
        except ValueError:
            raise ConfigError(f"environment {name} must be a whole number, not {raw!r}") from None
    if isinstance(default, list):
        text = raw.strip()
        if text.startswith("["):
            try:
                return json.loads(text)
            except ValueError:
                raise ConfigError(f"environment {name} is not a valid JSON list: {raw!r}") from None
        return [item.strip() for item in text.split(",") if item.strip()]
    return raw


def env_name(section: str, key: str) -> str:
    return f"{ENV_PREFIX}{section.upper()}_{key.upper()}"


def find_config(explicit: str | os.PathLike[str] | None, env: Mapping[str, str]) -> Path | None:
    """``--config``, else ``TILLBOX_CONFIG``, else ``./config.toml`` if there is one."""
    if explicit is not None:
        return Path(explicit)
    if env.get(f"{ENV_PREFIX}CONFIG"):
        return Path(env[f"{ENV_PREFIX}CONFIG"])
    local = Path("config.toml")
    return local if local.is_file() else None


def load_settings(
    config_path: Path | None = None,
    env: Mapping[str, str] | None = None,
    flags: Mapping[tuple[str, str], Any] | None = None,
) -> Settings:
    env = os.environ if env is None else env
    values = {section: dict(keys) for section, keys in DEFAULTS.items()}
    sources = {section: dict.fromkeys(keys, "default") for section, keys in DEFAULTS.items()}

    if config_path is not None:
        origin = f"config file {config_path}"
        try:
            with open(config_path, "rb") as f:
                document = tomllib.load(f)
        except FileNotFoundError:
            raise ConfigError(f"{origin} does not exist") from None
        except OSError as e:
            raise ConfigError(f"{origin} cannot be read: {e.strerror}") from None
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"{origin} is not valid TOML: {e}") from None
        for section, table in document.items():
            if section not in DEFAULTS:
                raise ConfigError(f"{origin}: unknown section [{section}]")
            if not isinstance(table, dict):
                raise ConfigError(f"{origin}: {section} must be a [table]")
            for key, value in table.items():
                if key not in DEFAULTS[section]:
                    raise ConfigError(f"{origin}: unknown key {key!r} in [{section}]")
                values[section][key] = _check(section, key, value, origin)
                sources[section][key] = origin

    known = {env_name(s, k): (s, k) for s, keys in DEFAULTS.items() for k in keys}
    for name, raw in env.items():
        if not name.startswith(ENV_PREFIX) or name == f"{ENV_PREFIX}CONFIG":
            continue
        if name not in known:
            raise ConfigError(f"environment {name} is not a Tillbox setting (see config.toml)")
        section, key = known[name]
        values[section][key] = _check(section, key, _parse_env(section, key, raw, name), f"environment {name}")
        sources[section][key] = f"environment {name}"

    for (section, key), value in (flags or {}).items():
        if value is None:
            continue
        values[section][key] = _check(section, key, value, "flag")
        sources[section][key] = "command-line flag"

    if values["database"]["pool_min"] > values["database"]["pool_max"]:
        raise ConfigError(
            f"database.pool_min ({sources['database']['pool_min']}) is above database.pool_max "
            f"({sources['database']['pool_max']}): {values['database']['pool_min']} > {values['database']['pool_max']}"
        )
    return Settings(values=values, sources=sources, config_path=config_path)


POSTGRES_SCHEMES = ("postgresql", "postgres")


def require_supported_store(settings: Settings) -> None:
    """Refuse a ``database.url`` that names no store this build has, before anything is
    created or opened: quietly using SQLite instead of the database the operator named would
    put the shop's data somewhere they do not expect. (The URL itself is never shown: it
    holds a password.)"""
    url = settings["database"]["url"]
    if not url:
        return
    scheme, found, _ = url.partition("://")
    if found and scheme.lower() in POSTGRES_SCHEMES:
        return
    named = f"names a {scheme} database" if found and scheme.replace("+", "").isalnum() else "is set"
    raise ConfigError(
        f"database.url ({settings.sources['database']['url']}) {named}, but Tillbox stores its data in "
        f"PostgreSQL (a postgresql:// URL) or, with database.url empty, in SQLite in {settings.data_dir}"
    )


def uses_postgres(settings: Settings) -> bool:
    return bool(settings["database"]["url"])

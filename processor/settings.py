"""Settings, read once from the environment into typed values."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
import socket
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import unquote, urlsplit

from processor import redact
from processor.errors import ConfigError

# Built-in job types and the path of this service that handles each (contract).
BUILTIN_ROUTES: dict[str, str] = {
    "generate-image": "/process-image",
    "generate-images": "/process-image",  # the seeds' spelling, kept as an alias
    "generate-complete-pack": "/process-complete-pack",
    "generate-aplus": "/process-aplus",
}


def unknown_job_type(job_type: str, known: Iterable[str]) -> str:
    """The refusal of a job type with no route, in the same words wherever it is met (the
    command line before an insert, the dispatcher when such a job is claimed)."""
    return (
        f"unknown job type {job_type!r}: this processor runs {', '.join(sorted(known))} "
        "(add yours to JOB_ROUTES)"
    )


def json_type(value: Any) -> str:
    """A decoded JSON value's type in JSON's own words (and PostgreSQL's jsonb_typeof): object,
    array, string, number, boolean, null."""
    if isinstance(value, bool):
        return "boolean"
    names = {dict: "object", list: "array", str: "string", int: "number", float: "number"}
    return "null" if value is None else names.get(type(value), type(value).__name__)


# How long a handler may take per call before the attempt counts as timed out.
BUILTIN_TIMEOUTS: dict[str, float] = {
    "/process-image": 300.0,
    "/process-complete-pack": 1800.0,
    "/process-aplus": 600.0,
}


class Secret:
    """A string that never shows itself in a repr, a log line or an error message; every Secret
    is registered with processor.redact, so text from outside never carries it either."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value
        redact.register([value])

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('**********')"

    __str__ = __repr__

    def __bool__(self) -> bool:
        return bool(self._value)


@dataclass(frozen=True)
class Route:
    """Where jobs of one type are sent, how long the handler may take, and (optionally) the
    route's own signing secret."""

    url: str
    timeout: float
    secret: Secret | None = None
    previous_secret: Secret | None = None  # also signed with while the route's secret rotates
    builtin: bool = False  # one of this service's own /process-* handlers


@dataclass(frozen=True)
class ProviderSettings:
    """Providers, storage and handler tuning (model ids are configuration: vendors retire them)."""

    image_provider: str = "demo"
    gemini_api_key: Secret | None = None
    gemini_base_url: str = "https://generativelanguage.googleapis.com/v1beta"
    gemini_image_model: str = "gemini-3.1-flash-image"
    gemini_text_model: str = "gemini-3.5-flash"
    openai_api_key: Secret | None = None
    openai_base_url: str = "https://api.openai.com/v1"
    openai_image_model: str = "gpt-image-2"
    openai_text_model: str = "gpt-5-mini"
    # Image models whose edits take input_fidelity (gpt-image-1-mini does not).
    openai_input_fidelity_models: tuple[str, ...] = ("gpt-image-1", "gpt-image-1.5", "gpt-image-2")
    removebg_api_key: Secret | None = None
    removebg_base_url: str = "https://api.remove.bg/v1.0"
    supabase_url: str | None = None
    supabase_service_role_key: Secret | None = None
    storage_bucket: str = "generated-images"
    storage_public: bool = True
    local_storage_dir: str = ".data/storage"
    pack_concurrency: int = 3
    max_image_pixels: int = 40_000_000  # sources larger than this are refused before decoding
    # USD per unit by "provider/model" (tokens per million); DEFAULT_PRICES below.
    prices: Mapping[str, Mapping[str, float]] = field(default_factory=dict)
    # Per provider: {"concurrent": N, "per_minute": N}, shared by every processor.
    limits: Mapping[str, Any] = field(default_factory=dict)
    allow_private_urls: bool = False  # source_image_url may reach private addresses (local dev)

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> ProviderSettings:
        def secret(name: str) -> Secret | None:
            return Secret(env[name]) if env.get(name) else None

        gemini, openai = secret("GEMINI_API_KEY"), secret("OPENAI_API_KEY")
        default = "gemini" if gemini else "openai" if openai else "demo"
        provider = _choice(env, "IMAGE_PROVIDER", default, ("gemini", "openai", "demo"))
        if provider == "gemini" and not gemini:
            raise ConfigError("IMAGE_PROVIDER=gemini needs GEMINI_API_KEY")
        if provider == "openai" and not openai:
            raise ConfigError("IMAGE_PROVIDER=openai needs OPENAI_API_KEY")
        supabase_url = env.get("SUPABASE_URL") or None
        if supabase_url:
            _check_http_url(supabase_url, "SUPABASE_URL")
            if not env.get("SUPABASE_SERVICE_ROLE_KEY"):
                raise ConfigError("SUPABASE_URL is set but SUPABASE_SERVICE_ROLE_KEY is not")
        return cls(
            image_provider=provider,
            gemini_api_key=gemini,
            gemini_base_url=_url(env, "GEMINI_BASE_URL", cls.gemini_base_url),
            gemini_image_model=env.get("GEMINI_IMAGE_MODEL") or cls.gemini_image_model,
            gemini_text_model=env.get("GEMINI_TEXT_MODEL") or cls.gemini_text_model,
            openai_api_key=openai,
            openai_base_url=_url(env, "OPENAI_BASE_URL", cls.openai_base_url),
            openai_image_model=env.get("OPENAI_IMAGE_MODEL") or cls.openai_image_model,
            openai_text_model=env.get("OPENAI_TEXT_MODEL") or cls.openai_text_model,
            openai_input_fidelity_models=tuple(
                m.strip()
                for m in (env.get("OPENAI_INPUT_FIDELITY_MODELS") or "").split(",")
                if m.strip()
            )
            or cls.openai_input_fidelity_models,
            removebg_api_key=secret("REMOVEBG_API_KEY"),
            removebg_base_url=_url(env, "REMOVEBG_BASE_URL", cls.removebg_base_url),
            supabase_url=supabase_url,
            supabase_service_role_key=secret("SUPABASE_SERVICE_ROLE_KEY"),
            storage_bucket=env.get("STORAGE_BUCKET") or cls.storage_bucket,
            storage_public=_choice(env, "STORAGE_PUBLIC", "true", ("true", "false")) == "true",
            local_storage_dir=env.get("LOCAL_STORAGE_DIR") or cls.local_storage_dir,
            pack_concurrency=int(_number(env, "PACK_CONCURRENCY", 3, minimum=1)),
            max_image_pixels=int(_number(env, "MAX_IMAGE_PIXELS", 40_000_000, minimum=1)),
            prices=_prices(env.get("PROVIDER_PRICES", "")),
            limits=_limits(env.get("PROVIDER_LIMITS", "")),
            allow_private_urls=_choice(env, "ALLOW_PRIVATE_URLS", "off", ("on", "off")) == "on",
        )


@dataclass(frozen=True)
class Settings:
    database_url: str
    token: Secret
    previous_token: Secret | None = None
    processor_url: str = "http://127.0.0.1:8000"
    job_routes: Mapping[str, Route] = field(default_factory=dict)
    handler_timeout: float = 120.0
    lease_seconds: float = 60.0
    max_claim: int = 50
    drain_seconds: float = 8.0
    max_running_jobs: int = 20
    listen_for_jobs: bool = True  # LISTEN for inserts: millisecond pickup while running
    # LISTEN_DATABASE_URL: a direct (or session-mode) URL for the LISTEN connection alone, when
    # DATABASE_URL goes through a transaction-mode pooler that drops notifications.
    listen_database_url: str | None = None
    prepared_statements: bool = False  # PREPARED_STATEMENTS=on: only on a direct connection
    run_relay: bool = False  # `processor dev` runs the local pg_net relay inside the service
    shutdown_grace: float = 30.0
    db_pool_max: int = 10
    signing_secret: Secret | None = None  # HANDLER_SIGNING_SECRET; derived from the token if unset
    previous_signing_secret: Secret | None = None
    legacy_signature: bool = False  # HANDLER_SIGNATURE_V1: also send v1 to your own handlers
    max_request_bytes: int = 2 * 1024 * 1024
    max_answer_bytes: int = 1024 * 1024
    log_format: str = "auto"
    log_level: str = "info"
    worker_id: str = field(default_factory=lambda: f"{socket.gethostname()}:{os.getpid()}")
    providers: ProviderSettings = field(default_factory=ProviderSettings)

    def signing_secrets(self, route: Route | None = None) -> list[str]:
        """The secrets a call to `route` is signed with, current first: the route's own secret,
        else HANDLER_SIGNING_SECRET (and its previous value while rotating), else one derived
        from PROCESSOR_TOKEN, which can sign calls but never be used as the token. The built-in
        handlers have a secret of their own that no other handler is given."""
        if route is not None and route.builtin:
            return self.builtin_signing_secrets()
        if route is not None and route.secret:
            previous = route.previous_secret
            return [route.secret.reveal(), *([previous.reveal()] if previous else [])]
        if self.signing_secret:
            keys = [self.signing_secret.reveal()]
            if self.previous_signing_secret:
                keys.append(self.previous_signing_secret.reveal())
            return keys
        # Derived from the token: while the token rotates, from the previous one too.
        tokens = [self.token, *([self.previous_token] if self.previous_token else [])]
        return [derive_signing_secret(t.reveal()) for t in tokens]

    def builtin_signing_secrets(self) -> list[str]:
        """What the built-in /process-* handlers accept: derived from PROCESSOR_TOKEN (and the
        previous token while it rotates) under a label of their own, so a secret handed to your
        handlers can never sign a call to the built-ins."""
        tokens = [self.token, *([self.previous_token] if self.previous_token else [])]
        return [derive_signing_secret(t.reveal(), BUILTIN_LABEL) for t in tokens]

    @property
    def heartbeat_seconds(self) -> float:
        """How often a running job's lease is extended: three chances before it expires."""
        return self.lease_seconds / 3

    def routes(self) -> dict[str, Route]:
        """Every job type this processor can run: built-ins first, then JOB_ROUTES over them."""
        base = self.processor_url.rstrip("/")
        table = {
            job_type: Route(base + path, BUILTIN_TIMEOUTS[path], builtin=True)
            for job_type, path in BUILTIN_ROUTES.items()
        }
        table.update(self.job_routes)
        own = {base + path for path in BUILTIN_TIMEOUTS}
        for job_type, route in table.items():
            if route.url in own and not route.builtin:
                # A route of yours that points at a built-in handler is signed for it (the
                # built-in still accepts only its own job types).
                table[job_type] = replace(route, builtin=True)
        return table

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: object) -> Settings:
        """Reads the environment; raises ConfigError naming the variable that is wrong."""
        env = os.environ if env is None else env
        database_url = env.get("DATABASE_URL", "")
        token = env.get("PROCESSOR_TOKEN", "")
        values: dict[str, object] = {
            "database_url": database_url,
            "token": Secret(token),
            "previous_token": (
                Secret(env["PROCESSOR_TOKEN_PREVIOUS"])
                if env.get("PROCESSOR_TOKEN_PREVIOUS")
                else None
            ),
            "processor_url": _url(env, "PROCESSOR_URL", "http://127.0.0.1:8000"),
            "handler_timeout": _number(env, "HANDLER_TIMEOUT", 120.0),
            "lease_seconds": _number(env, "LEASE_SECONDS", 60.0, minimum=3.0),
            "max_claim": int(_number(env, "MAX_CLAIM", 50, minimum=1)),
            "drain_seconds": _number(env, "DRAIN_SECONDS", 8.0, minimum=0.0),
            "max_running_jobs": int(_number(env, "MAX_RUNNING_JOBS", 20, minimum=1)),
            "listen_for_jobs": _choice(env, "LISTEN_FOR_JOBS", "on", ("on", "off")) == "on",
            "listen_database_url": env.get("LISTEN_DATABASE_URL") or None,
            "prepared_statements": (
                _choice(env, "PREPARED_STATEMENTS", "off", ("on", "off")) == "on"
            ),
            "shutdown_grace": _number(env, "SHUTDOWN_GRACE", 30.0, minimum=0.0),
            "db_pool_max": int(_number(env, "DB_POOL_MAX", 10, minimum=2)),
            "signing_secret": _secret(env, "HANDLER_SIGNING_SECRET"),
            "previous_signing_secret": _secret(env, "HANDLER_SIGNING_SECRET_PREVIOUS"),
            "legacy_signature": _choice(env, "HANDLER_SIGNATURE_V1", "off", ("on", "off")) == "on",
            "max_request_bytes": int(
                _number(env, "MAX_REQUEST_BYTES", 2 * 1024 * 1024, minimum=1024)
            ),
            "max_answer_bytes": int(
                _number(env, "MAX_HANDLER_ANSWER_BYTES", 1024 * 1024, minimum=1024)
            ),
            "log_format": _choice(env, "LOG_FORMAT", "auto", ("auto", "json", "console")),
            "log_level": _choice(env, "LOG_LEVEL", "info", ("debug", "info", "warning", "error")),
        }
        values["providers"] = ProviderSettings.from_env(env)
        values.update(overrides)
        timeout = float(values["handler_timeout"])  # type: ignore[arg-type]
        values["job_routes"] = parse_job_routes(env.get("JOB_ROUTES", ""), timeout)
        settings = cls(**values)  # type: ignore[arg-type]
        for url in (settings.database_url, settings.listen_database_url or ""):
            password = urlsplit(url).password
            if password:
                Secret(unquote(password))  # registered for redaction
        if settings.signing_secret and len(settings.signing_secret.reveal()) < 16:
            raise ConfigError("HANDLER_SIGNING_SECRET is too short: use at least 16 characters")
        if not settings.database_url:
            raise ConfigError("DATABASE_URL is not set (e.g. postgresql://user@host:5432/db)")
        if not settings.token:
            raise ConfigError("PROCESSOR_TOKEN is not set: /process-jobs needs a bearer token")
        if len(settings.token.reveal()) < 16:
            raise ConfigError("PROCESSOR_TOKEN is too short: use at least 16 characters")
        for name, secret in (
            ("PROCESSOR_TOKEN", settings.token),
            ("PROCESSOR_TOKEN_PREVIOUS", settings.previous_token),
            ("HANDLER_SIGNING_SECRET", settings.signing_secret),
            ("HANDLER_SIGNING_SECRET_PREVIOUS", settings.previous_signing_secret),
            *(
                (f"JOB_ROUTES[{job_type!r}].{key}", value)
                for job_type, route in settings.job_routes.items()
                for key, value in (
                    ("secret", route.secret),
                    ("previous_secret", route.previous_secret),
                )
            ),
        ):
            if secret:
                require_unguessable(name, secret.reveal())
        for label in (HANDLER_LABEL, BUILTIN_LABEL):  # registered for redaction
            Secret(derive_signing_secret(settings.token.reveal(), label))
        return settings


# A secret must take an attacker at least 10**20 guesses (about 66 bits) as zxcvbn reckons them:
# it sees repeats ('a' * 16), sequences (0123456789abcdef), keyboard walks, dictionary words
# and their l33t forms, and counts random characters at no more than 10 guesses each, so a
# random string passes from 20 characters on. zxcvbn rather than a hand-written rule: it is
# the estimator password forms use, with the word lists and patterns a rule would miss.
MIN_GUESSES_LOG10 = 20.0
MAKE_ONE = "make one with `processor token` (or `openssl rand -hex 32`)"


def require_unguessable(name: str, value: str) -> None:
    """Raises ConfigError when `value` is a secret a guess can reach, saying how to make one."""
    # Imported here: its word lists take 60 ms to load, and only the service checks secrets.
    from zxcvbn import zxcvbn  # type: ignore[import-untyped]

    guesses = zxcvbn(value[:100])["guesses_log10"]  # 100 random characters are far past it
    if guesses < MIN_GUESSES_LOG10:
        raise ConfigError(
            f"{name} is too easy to guess (about 10^{guesses:.0f} guesses; at least "
            f"10^{MIN_GUESSES_LOG10:.0f} needed: 20 or more random characters, no words, "
            f"repeats or sequences): {MAKE_ONE}"
        )


def new_token() -> str:
    """A token of 256 random bits (43 URL-safe characters): what `processor token` prints."""
    return secrets.token_urlsafe(32)


HANDLER_LABEL = b"processor handler signing v1"
BUILTIN_LABEL = b"processor built-in handlers v2"


def derive_signing_secret(token: str, label: bytes = HANDLER_LABEL) -> str:
    """A signing secret derived from the token: an HMAC of it under `label`, so it signs calls
    but cannot be turned back into the token. HANDLER_LABEL gives your handlers' secret when
    HANDLER_SIGNING_SECRET is unset; BUILTIN_LABEL the built-in handlers' own."""
    return hmac.new(token.encode(), label, hashlib.sha256).hexdigest()


# --- provider prices and limits (PROVIDER_PRICES, PROVIDER_LIMITS) -------------------------

UNITS = ("input_tokens", "output_tokens", "images", "credits")  # what a provider call reports

# Estimated list prices in USD: tokens per million, images and credits each. Configuration
# (PROVIDER_PRICES overrides or adds entries, keyed "provider/model" or "provider/*"): vendors
# change prices, and an estimate is all a ledger of this kind can hold.
DEFAULT_PRICES: dict[str, dict[str, float]] = {
    "gemini/gemini-3.1-flash-image": {"input_tokens": 0.30, "output_tokens": 30.0},
    "gemini/gemini-3-pro-image": {"input_tokens": 2.0, "output_tokens": 120.0},
    "gemini/gemini-3.5-flash": {"input_tokens": 0.30, "output_tokens": 2.50},
    "gemini/*": {"input_tokens": 0.30, "output_tokens": 2.50},
    "openai/gpt-image-2": {"input_tokens": 5.0, "output_tokens": 40.0},
    "openai/gpt-image-1-mini": {"input_tokens": 2.0, "output_tokens": 8.0},
    "openai/gpt-5-mini": {"input_tokens": 0.25, "output_tokens": 2.0},
    "openai/*": {"input_tokens": 1.25, "output_tokens": 10.0},
    "remove.bg/*": {"credits": 0.20},
    "demo/*": {},
}


def parse_prices(raw: str) -> dict[str, dict[str, float]]:
    """PROVIDER_PRICES: {"provider/model": {"input_tokens": usd_per_million, ...}} over the
    defaults."""
    prices = {k: dict(v) for k, v in DEFAULT_PRICES.items()}
    if not raw.strip():
        return prices
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"PROVIDER_PRICES is not valid JSON: {exc.msg}") from None
    if not isinstance(data, dict):
        raise ConfigError('PROVIDER_PRICES must map "provider/model" to prices per unit')
    for key, entry in data.items():
        if "/" not in key or not isinstance(entry, dict):
            raise ConfigError(f'PROVIDER_PRICES[{key!r}] must be "provider/model": {{...}}')
        for unit, price in entry.items():
            if unit not in UNITS or not isinstance(price, int | float) or price < 0:
                raise ConfigError(
                    f"PROVIDER_PRICES[{key!r}].{unit} must be one of {', '.join(UNITS)} "
                    "with a price of 0 or more"
                )
        prices[key] = {u: float(p) for u, p in entry.items()}
    return prices


@dataclass(frozen=True)
class Limit:
    concurrent: int | None = None
    per_minute: float | None = None


def parse_limits(raw: str) -> dict[str, Limit]:
    """PROVIDER_LIMITS: {"gemini": {"concurrent": 8, "per_minute": 60}, "openai": {...}}."""
    if not raw.strip():
        return {}
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"PROVIDER_LIMITS is not valid JSON: {exc.msg}") from None
    if not isinstance(data, dict):
        raise ConfigError("PROVIDER_LIMITS must map provider names to limits")
    limits = {}
    for provider, spec in data.items():
        where = f"PROVIDER_LIMITS[{provider!r}]"
        if not isinstance(spec, dict) or set(spec) - {"concurrent", "per_minute"}:
            raise ConfigError(f'{where} must be {{"concurrent": N, "per_minute": N}}')
        concurrent, per_minute = spec.get("concurrent"), spec.get("per_minute")
        for name, value in (("concurrent", concurrent), ("per_minute", per_minute)):
            if value is not None and (
                not isinstance(value, int | float) or isinstance(value, bool) or value <= 0
            ):
                raise ConfigError(f"{where}.{name} must be a positive number")
        limits[provider] = Limit(
            int(concurrent) if concurrent is not None else None,
            float(per_minute) if per_minute is not None else None,
        )
    return limits


_prices = parse_prices
_limits = parse_limits


def _secret(env: Mapping[str, str], name: str) -> Secret | None:
    return Secret(env[name]) if env.get(name) else None


def parse_job_routes(raw: str, default_timeout: float) -> dict[str, Route]:
    """JOB_ROUTES: {"type": "https://url"} or
    {"type": {"url": "...", "timeout": seconds, "secret": "its own signing secret"}}."""
    if not raw.strip():
        return {}
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"JOB_ROUTES is not valid JSON: {exc.msg} at position {exc.pos}") from exc
    if not isinstance(data, dict):
        raise ConfigError("JOB_ROUTES must be a JSON object mapping job types to URLs")
    routes: dict[str, Route] = {}
    for job_type, spec in data.items():
        where = f"JOB_ROUTES[{job_type!r}]"
        secret = previous = None
        if isinstance(spec, str):
            url, timeout = spec, default_timeout
        elif isinstance(spec, dict) and isinstance(spec.get("url"), str):
            url = spec["url"]
            timeout = spec.get("timeout", default_timeout)
            if not isinstance(timeout, int | float) or isinstance(timeout, bool) or timeout <= 0:
                raise ConfigError(f"{where}.timeout must be a positive number of seconds")
            secret, previous = (
                _route_secret(spec, k, where) for k in ("secret", "previous_secret")
            )
            if previous and not secret:
                raise ConfigError(f"{where}.previous_secret needs a secret beside it")
        else:
            raise ConfigError(
                f'{where} must be a URL or {{"url": ..., "timeout": seconds, "secret": ...}}'
            )
        _check_http_url(url, where)
        routes[job_type] = Route(url, float(timeout), secret, previous)
    return routes


def _route_secret(spec: dict[str, object], key: str, where: str) -> Secret | None:
    value = spec.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or len(value) < 16:
        raise ConfigError(f"{where}.{key} must be a string of at least 16 characters")
    return Secret(value)


def _check_http_url(url: str, where: str) -> None:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigError(f"{where} must be an http:// or https:// URL, got {url!r}")


def _url(env: Mapping[str, str], name: str, default: str) -> str:
    value = env.get(name) or default
    _check_http_url(value, name)
    return value.rstrip("/")


def _number(env: Mapping[str, str], name: str, default: float, minimum: float = 0.001) -> float:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number, got {raw!r}") from None
    if value < minimum:
        raise ConfigError(f"{name} must be at least {minimum}, got {raw!r}")
    return value


def _choice(env: Mapping[str, str], name: str, default: str, allowed: tuple[str, ...]) -> str:
    value = (env.get(name) or default).lower()
    if value not in allowed:
        raise ConfigError(f"{name} must be one of {', '.join(allowed)}, got {value!r}")
    return value


@dataclass(frozen=True)
class CommandSettings:
    """What the command-line commands read from the environment besides the service's own
    Settings: each is read when a command asks for it, so `processor jobs` does not need the
    variables only `serve` needs."""

    env: Mapping[str, str]

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> CommandSettings:
        return cls(os.environ if env is None else env)

    @property
    def database_url(self) -> str:
        url = self.env.get("DATABASE_URL", "")
        if not url:
            raise ConfigError("DATABASE_URL is not set (e.g. postgresql://user@host:5432/db)")
        return url

    @property
    def processor_url(self) -> str | None:
        return self.env.get("PROCESSOR_URL") or None

    @property
    def token(self) -> str:
        return self.env.get("PROCESSOR_TOKEN", "")

    @property
    def log_format(self) -> str:
        return self.env.get("LOG_FORMAT", "auto")

    @property
    def log_level(self) -> str:
        return self.env.get("LOG_LEVEL", "info")

    @property
    def job_routes(self) -> str:
        return self.env.get("JOB_ROUTES", "")

    @property
    def providers(self) -> ProviderSettings:
        return ProviderSettings.from_env(self.env)

    def port(self, name: str, default: int) -> int:
        """A port number from `name` (PORT, PROCESSOR_PG_PORT), else `default`."""
        return int(_number(self.env, name, default, minimum=1))

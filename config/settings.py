"""One typed settings object, read once from the environment and `.env`.

Every setting is documented in `.env.example` and the README's settings table; secrets are
kept out of `repr()` so they never reach a log line or the browser.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from urllib.parse import unquote, urlsplit

from dotenv import load_dotenv

from config.database_url import normalize_url, password_of, sqlite_url
from config.imports import forbidden_imports
from config.variants import Experiment, VariantsError, load_experiment

PROVIDERS = ("local", "hf", "openai")
# local-process: a confined worker process per session (the default). local-unsafe: smolagents'
# in-process executor, for comparison and benchmarks only. The rest are smolagents' remote sandboxes.
CODE_EXECUTORS = ("local-process", "local-unsafe", "e2b", "docker", "modal")
SANDBOX_LAYERS = ("namespaces", "landlock", "seccomp")
DEFAULT_HF_MODEL = "Qwen/Qwen2.5-Coder-32B-Instruct"
DEFAULT_OPENAI_MODEL = "gpt-4o-mini"
DEFAULT_FEEDBACK_OPTIONS = ("Incorrect", "Not helpful", "Unsafe", "Too slow")
DEFAULT_ALLOWED_IMPORTS = (
    "math",
    "statistics",
    "datetime",
    "json",
    "re",
    "random",
    "itertools",
    "collections",
)


class SettingsError(ValueError):
    """A setting has a value the app cannot use; the message names it."""


def _split(value: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in value.split(",") if part.strip())


@dataclass(frozen=True)
class Settings:
    """What the app reads from its environment, typed and validated."""

    model_provider: str = "local"
    provider_reason: str = "nothing else is configured"
    model_id: str = ""
    local_model_path: str = ""
    local_n_ctx: int = 8192
    local_max_tokens: int = 384
    # llama.cpp's repacked weight layouts (AMX, CPU_REPACK): faster prompts on some CPUs, but the
    # AMX path segfaults on Sapphire Rapids and newer (llama.cpp #20824). Off by default.
    local_model_repack: bool = False
    # llama.cpp inside the app's process instead of the supervised model process: benchmarks only.
    local_model_in_process: bool = False
    hf_token: str = field(default="", repr=False)
    openai_base_url: str = ""
    openai_api_key: str = field(default="", repr=False)
    agent_tools: tuple[str, ...] = ()
    max_steps: int = 3
    # Turns of the chat the agent remembers and re-sends (0: all); the local model keeps 3.
    memory_turns: int = 3
    allowed_imports: tuple[str, ...] = DEFAULT_ALLOWED_IMPORTS
    agent_files_dir: Path = Path("data/agent_files")
    code_executor: str = "local-process"
    code_sandbox_layers: tuple[str, ...] = SANDBOX_LAYERS
    code_memory_mb: int = 512
    code_timeout_s: int = 30
    code_max_output_kb: int = 256
    code_max_files: int = 1000
    code_max_folder_mb: int = 100
    # Every session's code together (workers, model and agent processes): 0 = half the memory
    # the app may use (its cgroup limit, else the host's); see sandbox/budget.py.
    code_total_memory_mb: int = 0
    # A code worker idle this long is stopped (its session's variables are cleared).
    code_idle_s: float = 600.0
    # Per user (a signed-in HF user, else the client address): chats kept open (the least
    # recently used one is closed past it), turns per minute, and answers written at once
    # (0: one less than MAX_CONCURRENT_TURNS, so one user never takes every slot).
    max_sessions_per_user: int = 20
    turns_per_minute: int = 30
    user_turns_at_once: int = 0
    # Proxies in front of the app that append the client's address to X-Forwarded-For; their
    # entries are trusted (0: the socket's address; 1 on a Space, behind its proxy).
    trusted_proxy_hops: int = 0
    trace_name: str = "Smolagent-Trace"
    app_tags: tuple[str, ...] = ("smolagents-chat",)
    # Who sent a trace, in every OpenTelemetry backend: `service.name` / `service.version` and
    # Langfuse's environment (traces and scores are filtered by it) and release.
    service_name: str = "smolagents-chat"
    environment: str = "local"
    release: str = ""
    session_ttl_s: float = 3600.0
    max_concurrent_turns: int = 4
    # Processes the agents of a hosted model run in (0: in the app's own process, as the
    # offline model's always do); see agent/agent_process.py for why.
    agent_processes: int = 0
    max_input_chars: int = 8000
    feedback_options: tuple[str, ...] = DEFAULT_FEEDBACK_OPTIONS
    langfuse_public_key: str = ""
    langfuse_secret_key: str = field(default="", repr=False)
    langfuse_base_url: str = "https://cloud.langfuse.com"
    langfuse_timeout_s: float = 5.0
    langfuse_retry_max_s: float = 60.0
    # Arize Phoenix as a second home for ratings (and traces): its base URL (empty: off), API key
    # (when its auth is on) and project.
    phoenix_endpoint: str = ""
    phoenix_api_key: str = field(default="", repr=False)
    phoenix_project: str = "default"
    # How long an outbox holds the scores it is delivering before another process may take them.
    outbox_lease_s: float = 60.0
    data_dir: Path = Path("data")
    # The store: empty means the SQLite file under data_dir; postgresql://... a shared database.
    database_url: str = field(default="", repr=False)
    # Set by Hugging Face on a Space (its disk is wiped on every restart).
    space_id: str = ""
    # Online evaluation: the evaluators file (empty: no evaluation), the judge model (empty: the
    # agent's own), how many judge calls run at once and how many per hour at most.
    evaluators_file: Path | None = None
    judge_provider: str = ""
    judge_model_id: str = ""
    judge_base_url: str = ""
    judge_api_key: str = field(default="", repr=False)
    eval_concurrency: int = 2
    eval_max_calls_per_hour: int = 600
    # Days to keep span details; trace summaries and scores stay forever. None keeps everything.
    store_retention_days: float | None = None
    # Who may open the dashboard besides the owner on 127.0.0.1: Hugging Face users (by name,
    # through the Space's OAuth) and whoever knows the password (empty: no password sign-in).
    admin_users: tuple[str, ...] = ()
    admin_password: str = field(default="", repr=False)
    # Hugging Face users (by name, through the Space's OAuth) who may label traces in the
    # dashboard's review queue and see nothing else of it.
    reviewers: tuple[str, ...] = ()
    # MODEL_PRICES: (model id, dollars per million input tokens, per million output tokens).
    model_prices: tuple[tuple[str, float, float], ...] = ()
    server_name: str = "127.0.0.1"
    server_port: int = 7860
    log_level: str = "INFO"
    # OpenTelemetry's own variables (OTEL_EXPORTER_OTLP_*), read with the spec's meanings: one
    # more trace exporter beside Langfuse and the store when an endpoint is set (feedback/otlp.py).
    # The URL spans go to (http/protobuf: `/v1/traces` appended to OTEL_EXPORTER_OTLP_ENDPOINT);
    # out of repr: it may hold a password (describe() masks it).
    otlp_endpoint: str = field(default="", repr=False)
    otlp_protocol: str = "http/protobuf"
    # (name, value) pairs, names lowercased; values often hold an API key: never printed.
    otlp_headers: tuple[tuple[str, str], ...] = field(default=(), repr=False)
    otlp_timeout_s: float = 5.0
    otlp_compression: str = "none"
    # gRPC without TLS: an http:// endpoint, or OTEL_EXPORTER_OTLP_INSECURE for one without a scheme.
    otlp_insecure: bool = False
    # OTEL_RESOURCE_ATTRIBUTES, percent-decoded, on every span's resource (the app's own keys win).
    resource_attributes: tuple[tuple[str, str], ...] = ()
    # An A/B experiment (VARIANTS_FILE, config/variants.py): its variants, each with its own settings
    # (this object's, with the variant's model and agent values); None: one agent for everyone.
    variants_file: Path | None = None
    experiment: Experiment | None = field(default=None, repr=False)

    @property
    def langfuse_enabled(self) -> bool:
        return bool(self.langfuse_public_key and self.langfuse_secret_key)

    @property
    def otlp_enabled(self) -> bool:
        return bool(self.otlp_endpoint)

    @property
    def db_path(self) -> Path:
        return self.data_dir / "feedback.sqlite3"

    @property
    def store_url(self) -> str:
        """Where the store is: DATABASE_URL, or the SQLite file under DATA_DIR."""
        return self.database_url or sqlite_url(self.db_path)

    def secrets(self) -> list[str]:
        """Values that must never be printed, logged or sent to the browser."""
        values = (
            self.hf_token,
            self.openai_api_key,
            self.langfuse_secret_key,
            self.database_url,
            password_of(self.database_url),
            self.judge_api_key,
            self.admin_password,
            self.phoenix_api_key,
            *(value for _, value in self.otlp_headers),
            urlsplit(self.otlp_endpoint).password or "",
            # A variant's own keys (openai_api_key_env, hf_token_env).
            *(self.experiment.secrets() if self.experiment is not None else ()),
        )
        return list(dict.fromkeys(v for v in values if v))

    def describe(self) -> dict[str, object]:
        """The settings without secrets, for the start banner and `python -m feedback`."""
        hidden = {
            "hf_token",
            "openai_api_key",
            "langfuse_secret_key",
            "database_url",
            "judge_api_key",
            "admin_password",
            "phoenix_api_key",
        }
        described = {
            f.name: ("***" if getattr(self, f.name) else "") if f.name in hidden else getattr(self, f.name)
            for f in fields(self)
        }
        # Which OTLP headers are sent, never their values; an endpoint's password masked.
        described["otlp_headers"] = tuple(f"{name}=***" for name, _ in self.otlp_headers)
        described["otlp_endpoint"] = _masked_url(self.otlp_endpoint)
        described["experiment"] = self.experiment.describe() if self.experiment is not None else None
        return described


def _int(env: Mapping[str, str], name: str, default: int, minimum: int = 1) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(f"{name} must be a whole number, got {raw!r}.") from None
    if value < minimum:
        raise SettingsError(f"{name} must be at least {minimum}, got {value}.")
    return value


def _flag(env: Mapping[str, str], name: str) -> bool:
    raw = env.get(name, "").strip().lower()
    if raw in ("", "0", "false", "no", "off"):
        return False
    if raw in ("1", "true", "yes", "on"):
        return True
    raise SettingsError(f"{name} must be 1 or 0 (on or off), got {raw!r}.")


def _float(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise SettingsError(f"{name} must be a number, got {raw!r}.") from None
    if value <= 0:
        raise SettingsError(f"{name} must be greater than 0, got {raw}.")
    return value


def positive_days(raw: str) -> float:
    """A number of days: finite and greater than 0 (nan refused). Raises ValueError."""
    value = float(raw)
    if not 0 < value < float("inf"):
        raise ValueError(raw)
    return value


def _optional_days(env: Mapping[str, str], name: str) -> float | None:
    raw = env.get(name, "").strip()
    if not raw:
        return None
    try:
        return positive_days(raw)
    except ValueError:
        raise SettingsError(
            f"{name} must be a number of days greater than 0 (empty keeps everything), got {raw!r}."
        ) from None


def _database_url(env: Mapping[str, str]) -> str:
    raw = env.get("DATABASE_URL", "").strip()
    if not raw:
        return ""
    try:
        return normalize_url(raw)
    except ValueError as exc:
        raise SettingsError(f"{exc}.") from None


# A password anyone on the internet may try (a few times per quarter hour, see dashboard/access.py).
MIN_ADMIN_PASSWORD_CHARS = 12


def _admin_password(env: Mapping[str, str]) -> str:
    # Stripped like every other value: a secret pasted with a trailing newline still matches.
    raw = env.get("ADMIN_PASSWORD", "").strip()
    if not raw:
        return ""
    if len(raw) < MIN_ADMIN_PASSWORD_CHARS:
        raise SettingsError(
            f"ADMIN_PASSWORD must have at least {MIN_ADMIN_PASSWORD_CHARS} characters (it guards every "
            f"user's conversations in the dashboard); the one set has {len(raw)}."
        )
    return raw


def _model_prices(env: Mapping[str, str]) -> tuple[tuple[str, float, float], ...]:
    """MODEL_PRICES: {"model-id": {"input": 0.2, "output": 0.6}, ...}, dollars per million tokens."""
    raw = env.get("MODEL_PRICES", "").strip()
    if not raw:
        return ()
    example = 'e.g. {"my-model": {"input": 0.2, "output": 0.6}} (dollars per million tokens)'
    try:
        data = json.loads(raw)
    except ValueError:
        raise SettingsError(f"MODEL_PRICES must be a JSON object, {example}.") from None
    if not isinstance(data, dict):
        raise SettingsError(f"MODEL_PRICES must be a JSON object, {example}.")
    prices = []
    for model_id, price in data.items():
        pair = [price.get("input"), price.get("output")] if isinstance(price, dict) else price
        if (
            not isinstance(pair, list)
            or len(pair) != 2
            or not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in pair)
            or not all(0 <= x < float("inf") for x in pair)
        ):
            raise SettingsError(
                f"MODEL_PRICES[{model_id!r}] needs an input and an output price of 0 or more, {example}."
            )
        prices.append((str(model_id), float(pair[0]), float(pair[1])))
    return tuple(prices)


def _phoenix_endpoint(env: Mapping[str, str]) -> str:
    """PHOENIX_COLLECTOR_ENDPOINT: Phoenix's base URL (its OTLP path /v1/traces is dropped if given)."""
    raw = env.get("PHOENIX_COLLECTOR_ENDPOINT", "").strip().rstrip("/")
    if not raw:
        return ""
    if not re.fullmatch(r"https?://[^\s/]+(/[^\s]*)?", raw):
        raise SettingsError(
            f"PHOENIX_COLLECTOR_ENDPOINT must be Phoenix's URL, e.g. http://localhost:6006, got {raw!r}."
        )
    return raw.removesuffix("/v1/traces")


def _phoenix_project(env: Mapping[str, str]) -> str:
    raw = env.get("PHOENIX_PROJECT_NAME", "").strip() or "default"
    if any(c in raw for c in "/?#") or len(raw) > 200:
        raise SettingsError(f"PHOENIX_PROJECT_NAME may not contain / ? or # (Phoenix's rule), got {raw!r}.")
    return raw


def _judge_provider(env: Mapping[str, str]) -> str:
    raw = env.get("JUDGE_PROVIDER", "").strip().lower()
    if raw and raw not in PROVIDERS:
        raise SettingsError(f"JUDGE_PROVIDER must be one of {', '.join(PROVIDERS)} (or empty), got {raw!r}.")
    return raw


# The shipped evaluators, at the project root (wherever the app is started from).
DEFAULT_EVALUATORS_FILE = Path(__file__).resolve().parents[1] / "evaluators.toml"


def _evaluators_file(env: Mapping[str, str]) -> Path | None:
    raw = env.get("EVALUATORS_FILE")
    if raw is None:
        return DEFAULT_EVALUATORS_FILE
    raw = raw.strip()
    return Path(raw) if raw and raw.lower() not in ("none", "off") else None


def _choose_provider(env: Mapping[str, str]) -> tuple[str, str]:
    explicit = env.get("MODEL_PROVIDER", "").strip().lower()
    if explicit:
        if explicit not in PROVIDERS:
            raise SettingsError(f"MODEL_PROVIDER must be one of {', '.join(PROVIDERS)}, got {explicit!r}.")
        return explicit, "MODEL_PROVIDER is set"
    if env.get("HF_TOKEN", "").strip():
        return "hf", "HF_TOKEN is set"
    if env.get("OPENAI_BASE_URL", "").strip():
        return "openai", "OPENAI_BASE_URL is set"
    return "local", "nothing else is configured"


# --- OpenTelemetry's variables ---------------------------------------------------------------
# The OTLP exporter's settings as the spec defines them (opentelemetry-specification,
# specification/protocol/exporter.md): each OTEL_EXPORTER_OTLP_X may be overridden for traces by
# OTEL_EXPORTER_OTLP_TRACES_X. Read here once; feedback/otlp.py passes every value explicitly to
# the SDK's exporter, so what the app sends is what these settings say.
OTLP_PROTOCOLS = ("http/protobuf", "grpc")
# The headers hold API keys: after load_settings has read them they leave this process's
# environment (see there), and never appear in a message.
OTLP_HEADER_VARIABLES = ("OTEL_EXPORTER_OTLP_TRACES_HEADERS", "OTEL_EXPORTER_OTLP_HEADERS")
# An HTTP header name (RFC 9110 token); gRPC metadata keys are narrower (lowercase, no '-bin').
_HEADER_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_GRPC_METADATA_KEY = re.compile(r"[0-9a-z_.\-]+")
_BAD_PERCENT = re.compile(r"%(?![0-9A-Fa-f]{2})")


def _otel(option: str, env: Mapping[str, str]) -> tuple[str, str]:
    """(variable, value) of an OTLP exporter option: the traces-specific one when set."""
    for name in (f"OTEL_EXPORTER_OTLP_TRACES_{option}", f"OTEL_EXPORTER_OTLP_{option}"):
        raw = env.get(name, "").strip()
        if raw:
            return name, raw
    return f"OTEL_EXPORTER_OTLP_{option}", ""


def _percent_decoded(text: str) -> str:
    """Percent-decoding as the spec asks (RFC 3986, UTF-8); a stray '%' is an error."""
    if _BAD_PERCENT.search(text):
        raise ValueError("a '%' not followed by two hex digits (write a literal % as %25)")
    try:
        return unquote(text, errors="strict")
    except UnicodeDecodeError:
        raise ValueError("percent-encoded bytes that are not UTF-8") from None


def _pairs(env: Mapping[str, str], name: str, example: str) -> list[tuple[str, str, int]]:
    """`key1=value1,key2=value2` (W3C Baggage without properties), keys and values percent-decoded.

    Errors name the entry and its key, never its value (a header's value is often a key).
    """
    pairs = []
    for position, item in enumerate(env.get(name, "").split(","), start=1):
        if not item.strip():
            continue
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise SettingsError(
                f"{name} must be comma-separated key=value pairs ({example}); entry {position} is not "
                "key=value."
            )
        try:
            key = _percent_decoded(key.strip())
        except ValueError as exc:
            raise SettingsError(f"{name}: the key of entry {position} has {exc}.") from None
        try:
            value = _percent_decoded(value.strip())
        except ValueError as exc:
            raise SettingsError(f"{name}: the value of {key!r} has {exc}.") from None
        pairs.append((key, value, position))
    return pairs


def _resource_attributes(env: Mapping[str, str]) -> tuple[tuple[str, str], ...]:
    """OTEL_RESOURCE_ATTRIBUTES (specification/resource/sdk.md): string values, ',' and '=' in keys
    and values percent-encoded. A value the app cannot decode stops it with a sentence, rather
    than the spec's "discard the whole value and report": a silently missing attribute is worse."""
    attributes: dict[str, str] = {}
    for key, value, _ in _pairs(env, "OTEL_RESOURCE_ATTRIBUTES", "e.g. team=chat,region=eu%2Cwest"):
        attributes[key] = value
    return tuple(attributes.items())


def _otlp_headers(env: Mapping[str, str], protocol: str) -> tuple[tuple[str, str], ...]:
    name, _ = _otel("HEADERS", env)
    headers: dict[str, str] = {}
    for key, value, position in _pairs(env, name, "values percent-encoded, e.g. api-key=abc%20def"):
        if not _HEADER_NAME.fullmatch(key):
            raise SettingsError(f"{name}: entry {position} has {key!r}, which is not a header name.")
        key = key.lower()
        if protocol == "grpc" and (not _GRPC_METADATA_KEY.fullmatch(key) or key.endswith("-bin")):
            raise SettingsError(
                f"{name}: {key!r} cannot be gRPC metadata (lowercase letters, digits, '-', '_' and '.', "
                "not ending in -bin)."
            )
        if not all(" " <= c <= "~" for c in value):
            raise SettingsError(
                f"{name}: the value of {key!r} must be printable ASCII once percent-decoded (no line "
                "breaks or other control characters, no accented letters)."
            )
        headers[key] = value
    return tuple(headers.items())


def _otlp_endpoint(env: Mapping[str, str], protocol: str) -> tuple[str, bool]:
    """The URL spans go to, and for gRPC whether the channel is plain text.

    http/protobuf: OTEL_EXPORTER_OTLP_TRACES_ENDPOINT as it is (an empty path is `/`); else
    OTEL_EXPORTER_OTLP_ENDPOINT as a base URL with `v1/traces` appended. grpc: either as it is;
    `http://` is plain text, `https://` TLS, and an endpoint without a scheme (`collector:4317`)
    uses TLS unless OTEL_EXPORTER_OTLP_INSECURE is true.
    """
    name = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"
    raw = env.get(name, "").strip()
    per_signal = bool(raw)
    if not raw:
        name = "OTEL_EXPORTER_OTLP_ENDPOINT"
        raw = env.get(name, "").strip()
    if not raw:
        return "", False
    if protocol == "grpc" and "://" not in raw:
        if not re.fullmatch(r"[^\s/]+:\d+", raw):
            raise SettingsError(
                f"{name} must be a URL (http://host:4317 plain text, https://host:4317 TLS) or "
                f"host:port, got {_masked_url(raw)!r}."
            )
        insecure_name, insecure = _otel("INSECURE", env)
        return raw, _flag({insecure_name: insecure}, insecure_name)
    try:
        parts = urlsplit(raw)
        port_ok = parts.port is None or parts.port > 0
    except ValueError:  # an unclosed IPv6 bracket, a port that is not a number
        parts, port_ok = urlsplit(""), False
    if parts.scheme not in ("http", "https") or not parts.hostname or not port_ok:
        raise SettingsError(
            f"{name} must be an http:// or https:// URL with a host (e.g. http://localhost:4318), got "
            f"{_masked_url(raw)!r}."
        )
    if protocol == "grpc":
        return raw, parts.scheme == "http"
    if per_signal:
        return (raw if parts.path else parts._replace(path="/").geturl()), False
    base = parts.path if parts.path.endswith("/") else parts.path + "/"
    return parts._replace(path=base + "v1/traces").geturl(), False


def _otlp(env: Mapping[str, str]) -> dict[str, object]:
    """The OTLP exporter's settings; nothing is read (or refused) when no endpoint is set."""
    if not (
        env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "").strip()
        or env.get("OTEL_EXPORTER_OTLP_ENDPOINT", "").strip()
    ):
        return {}
    name, protocol = _otel("PROTOCOL", env)
    protocol = protocol.lower() or "http/protobuf"
    if protocol == "http/json":
        raise SettingsError(
            f"{name}=http/json is not supported (the OpenTelemetry Python SDK has no OTLP/JSON "
            "exporter); use http/protobuf (the default) or grpc."
        )
    if protocol not in OTLP_PROTOCOLS:
        raise SettingsError(f"{name} must be http/protobuf (the default) or grpc, got {protocol!r}.")
    endpoint, insecure = _otlp_endpoint(env, protocol)
    timeout_name, raw_timeout = _otel("TIMEOUT", env)
    timeout_ms = 5000
    if raw_timeout:
        try:
            timeout_ms = int(raw_timeout)
        except ValueError:
            raise SettingsError(
                f"{timeout_name} must be a whole number of milliseconds (the spec's unit), got {raw_timeout!r}."
            ) from None
        if timeout_ms < 1:
            raise SettingsError(
                f"{timeout_name} must be at least 1 millisecond, got {timeout_ms} (0, the spec's 'no "
                "limit', would let a backend that never answers hold its batches forever)."
            )
    compression_name, compression = _otel("COMPRESSION", env)
    compression = compression.lower() or "none"
    if compression not in ("none", "gzip"):
        raise SettingsError(f"{compression_name} must be gzip or none, got {compression!r}.")
    return {
        "otlp_endpoint": endpoint,
        "otlp_protocol": protocol,
        "otlp_headers": _otlp_headers(env, protocol),
        "otlp_timeout_s": timeout_ms / 1000,
        "otlp_compression": compression,
        "otlp_insecure": insecure,
    }


def _masked_url(url: str) -> str:
    """A URL fit to print: a password in it replaced by ***."""
    try:
        parts = urlsplit(url)
        if parts.password is None:
            return url
        host = parts.netloc.rpartition("@")[2]
        return parts._replace(netloc=f"{parts.username or ''}:***@{host}").geturl()
    except ValueError:
        return "(an unreadable URL)"


def _with_experiment(env: Mapping[str, str], settings: Settings) -> Settings:
    """VARIANTS_FILE: the experiment read and checked (a mistake is a SettingsError naming the file,
    the variant and the key). Each variant's settings are these, read again from the environment
    with the variant's values in place (config/variants.py)."""
    raw = env.get("VARIANTS_FILE", "").strip()
    if not raw or raw.lower() in ("none", "off"):
        return settings
    path = Path(raw)
    inner = {k: v for k, v in env.items() if k != "VARIANTS_FILE"}
    try:
        experiment = load_experiment(path, inner, settings, settings_from_env)
    except VariantsError as exc:
        raise SettingsError(str(exc)) from None
    processes = settings.agent_processes
    if not env.get("AGENT_PROCESSES", "").strip():
        # The default follows the models: agent processes when any variant's model is hosted.
        processes = max([processes, *(v.settings.agent_processes for v in experiment.variants)])
    variants = tuple(
        dataclasses.replace(v, settings=dataclasses.replace(v.settings, agent_processes=processes))
        for v in experiment.variants
    )
    experiment = dataclasses.replace(experiment, variants=variants)
    return dataclasses.replace(settings, variants_file=path, experiment=experiment, agent_processes=processes)


def settings_from_env(env: Mapping[str, str]) -> Settings:
    """Build settings from a mapping (tests pass a dict; the app passes os.environ)."""
    return _with_experiment(env, _settings_from_env(env))


def _settings_from_env(env: Mapping[str, str]) -> Settings:
    provider, reason = _choose_provider(env)
    model_id = env.get("MODEL_ID", "").strip()
    if not model_id:
        model_id = {"hf": DEFAULT_HF_MODEL, "openai": DEFAULT_OPENAI_MODEL}.get(provider, "")
    default_steps = 3 if provider == "local" else 6
    imports = env.get("ALLOWED_IMPORTS")
    options = env.get("FEEDBACK_OPTIONS")
    tags = env.get("APP_TAGS")
    allowed = _split(imports) if imports is not None else DEFAULT_ALLOWED_IMPORTS
    if bad := forbidden_imports(allowed):
        raise SettingsError(
            f"ALLOWED_IMPORTS may not include {', '.join(bad)}: they would let the model's code "
            "reach the environment, files, processes or the network."
        )
    data_dir = Path(env.get("DATA_DIR", "").strip() or "data")
    executor = env.get("CODE_EXECUTOR", "").strip().lower() or "local-process"
    if executor not in CODE_EXECUTORS:
        raise SettingsError(f"CODE_EXECUTOR must be one of {', '.join(CODE_EXECUTORS)}, got {executor!r}.")
    layers_raw = env.get("CODE_SANDBOX_LAYERS")
    layers = tuple(x.lower() for x in _split(layers_raw)) if layers_raw is not None else SANDBOX_LAYERS
    if unknown := [x for x in layers if x not in SANDBOX_LAYERS and x != "none"]:
        raise SettingsError(
            f"CODE_SANDBOX_LAYERS may list {', '.join(SANDBOX_LAYERS)} (or none), got {', '.join(unknown)}."
        )
    environment = env.get("APP_ENVIRONMENT", "").strip() or "local"
    # Langfuse's rule (its SDK drops anything else; the server turns it into "default").
    if not re.fullmatch(r"(?!langfuse)[a-z0-9_-]{1,40}", environment):
        raise SettingsError(
            "APP_ENVIRONMENT must be 1 to 40 lowercase letters, digits, '-' or '_', not starting "
            f"with 'langfuse', got {environment!r}."
        )
    resource_attributes = _resource_attributes(env)
    # OTEL_SERVICE_NAME wins over a service.name in OTEL_RESOURCE_ATTRIBUTES (the spec's rule).
    service_name = (
        env.get("OTEL_SERVICE_NAME", "").strip()
        or dict(resource_attributes).get("service.name", "").strip()
        or "smolagents-chat"
    )
    code_memory_mb = _int(env, "CODE_MEMORY_MB", 512, minimum=64)
    code_total = _int(env, "CODE_TOTAL_MEMORY_MB", 0, minimum=0)
    if code_total and code_total < code_memory_mb + 128:
        raise SettingsError(
            f"CODE_TOTAL_MEMORY_MB ({code_total}) must leave room for one code step: at least "
            f"CODE_MEMORY_MB ({code_memory_mb}) + 128 for the worker itself (0: the default share)."
        )
    return Settings(
        model_provider=provider,
        provider_reason=reason,
        model_id=model_id,
        local_model_path=env.get("LOCAL_MODEL_PATH", "").strip(),
        local_n_ctx=_int(env, "LOCAL_N_CTX", 8192, minimum=512),
        local_max_tokens=_int(env, "LOCAL_MAX_TOKENS", 384, minimum=16),
        local_model_repack=_flag(env, "LOCAL_MODEL_REPACK"),
        local_model_in_process=_flag(env, "LOCAL_MODEL_IN_PROCESS"),
        hf_token=env.get("HF_TOKEN", "").strip(),
        openai_base_url=env.get("OPENAI_BASE_URL", "").strip(),
        openai_api_key=env.get("OPENAI_API_KEY", "").strip(),
        agent_tools=tuple(t.lower() for t in _split(env.get("AGENT_TOOLS", ""))),
        max_steps=_int(env, "MAX_STEPS", default_steps),
        memory_turns=_int(env, "MEMORY_TURNS", 3 if provider == "local" else 0, minimum=0),
        allowed_imports=allowed,
        agent_files_dir=Path(env.get("AGENT_FILES_DIR", "").strip() or data_dir / "agent_files"),
        code_executor=executor,
        code_sandbox_layers=tuple(x for x in layers if x != "none"),
        code_memory_mb=code_memory_mb,
        code_timeout_s=_int(env, "CODE_TIMEOUT_S", 30),
        code_max_output_kb=_int(env, "CODE_MAX_OUTPUT_KB", 256, minimum=4),
        code_max_files=_int(env, "CODE_MAX_FILES", 1000),
        code_max_folder_mb=_int(env, "CODE_MAX_FOLDER_MB", 100),
        code_total_memory_mb=code_total,
        code_idle_s=_float(env, "CODE_IDLE_S", 600.0),
        max_sessions_per_user=_int(env, "MAX_SESSIONS_PER_USER", 20),
        turns_per_minute=_int(env, "TURNS_PER_MINUTE", 30),
        user_turns_at_once=_int(env, "USER_TURNS_AT_ONCE", 0, minimum=0),
        trusted_proxy_hops=_int(
            env, "TRUSTED_PROXY_HOPS", 1 if env.get("SPACE_ID", "").strip() else 0, minimum=0
        ),
        trace_name=env.get("TRACE_NAME", "").strip() or "Smolagent-Trace",
        app_tags=_split(tags) if tags is not None else ("smolagents-chat",),
        service_name=service_name,
        environment=environment,
        release=env.get("APP_RELEASE", "").strip()[:200],
        session_ttl_s=_float(env, "SESSION_TTL_S", 3600.0),
        max_concurrent_turns=_int(env, "MAX_CONCURRENT_TURNS", 4),
        agent_processes=_int(
            env, "AGENT_PROCESSES", 0 if provider == "local" else min(2, os.cpu_count() or 1), minimum=0
        ),
        max_input_chars=_int(env, "MAX_INPUT_CHARS", 8000),
        feedback_options=_split(options) if options is not None else DEFAULT_FEEDBACK_OPTIONS,
        langfuse_public_key=env.get("LANGFUSE_PUBLIC_KEY", "").strip(),
        langfuse_secret_key=env.get("LANGFUSE_SECRET_KEY", "").strip(),
        langfuse_base_url=(
            env.get("LANGFUSE_BASE_URL", "").strip()
            or env.get("LANGFUSE_HOST", "").strip()
            or "https://cloud.langfuse.com"
        ).rstrip("/"),
        langfuse_timeout_s=_float(env, "LANGFUSE_TIMEOUT_S", 5.0),
        langfuse_retry_max_s=_float(env, "LANGFUSE_RETRY_MAX_S", 60.0),
        outbox_lease_s=_float(env, "OUTBOX_LEASE_S", 60.0),
        phoenix_endpoint=_phoenix_endpoint(env),
        phoenix_api_key=env.get("PHOENIX_API_KEY", "").strip(),
        phoenix_project=_phoenix_project(env),
        data_dir=data_dir,
        database_url=_database_url(env),
        space_id=env.get("SPACE_ID", "").strip(),
        evaluators_file=_evaluators_file(env),
        judge_provider=_judge_provider(env),
        judge_model_id=env.get("JUDGE_MODEL_ID", "").strip(),
        judge_base_url=env.get("JUDGE_BASE_URL", "").strip(),
        judge_api_key=env.get("JUDGE_API_KEY", "").strip(),
        eval_concurrency=_int(env, "EVAL_CONCURRENCY", 2),
        eval_max_calls_per_hour=_int(env, "EVAL_MAX_CALLS_PER_HOUR", 600),
        store_retention_days=_optional_days(env, "STORE_RETENTION_DAYS"),
        admin_users=_split(env.get("ADMIN_USERS", "")),
        reviewers=_split(env.get("REVIEWERS", "")),
        admin_password=_admin_password(env),
        model_prices=_model_prices(env),
        server_name=env.get("GRADIO_SERVER_NAME", "").strip() or "127.0.0.1",
        server_port=_int(env, "GRADIO_SERVER_PORT", 7860),
        log_level=(env.get("LOG_LEVEL", "").strip() or "INFO").upper(),
        resource_attributes=resource_attributes,
        **_otlp(env),  # type: ignore[arg-type]
    )


# The OTLP headers this process read, kept out of its environment (see load_settings).
_otlp_header_variables: dict[str, str] = {}


def load_settings(dotenv_path: str | os.PathLike[str] | None = None) -> Settings:
    """Read `.env` (without overriding real environment variables), then the environment.

    The OTLP headers (API keys, often) then leave os.environ: the SDK's HTTP exporter adds
    OTEL_EXPORTER_OTLP_HEADERS to the requests of EVERY exporter built in this process, Langfuse's
    own included (opentelemetry.exporter.otlp.proto.http._common._resolve_headers), which would
    hand an OTLP backend's key to Langfuse; agent processes inherit the environment too. They
    stay available to a later call of this function, and our exporter gets them from Settings.
    """
    load_dotenv(dotenv_path or Path.cwd() / ".env", override=False)
    for name in OTLP_HEADER_VARIABLES:
        if name in os.environ:
            _otlp_header_variables.setdefault(name, os.environ.pop(name))
    return settings_from_env({**os.environ, **_otlp_header_variables})

"""A throwaway Arize Phoenix server for tests: the real `phoenix serve`, SQLite in a temp dir, 127.0.0.1 only.

    with PhoenixServer(require_phoenix_bin()) as phoenix:
        exporter = phoenix.span_exporter("my-project")  # OTLP over HTTP (or protocol="grpc")
        ...                                           # export spans; annotate through phoenix.http
        phoenix.wait_for_spans("my-project", 3)       # spans land asynchronously
        phoenix.stop()                                # Phoenix "goes away"...
        phoenix.start()                               # ...and comes back: same ports, same data

Phoenix lives in its own virtualenv (its pins clash with ours): .ci/run installs it under
${XDG_CACHE_HOME:-~/.cache}/smolagents-chat/phoenix-<version> and exports PHOENIX_BIN (its `phoenix`
executable) and REQUIRE_PHOENIX=1. Tests call require_phoenix_bin() first: it skips when Phoenix is
missing, or fails when REQUIRE_PHOENIX is set, so a missing install never passes as a skip in CI.

The server is started with everything that would reach the internet turned off (telemetry pixels,
the WASM sandbox download, the docs MCP server of the agent assistant) and auth off, and with no
PHOENIX_* / OTEL_* variable of the caller leaking into it. Starting takes about 10 s on 2 cores
(a restart on the same working dir about the same: it is mostly Python imports); it holds about
430 MB of RSS when idle.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
import weakref
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import httpx
import pytest

if TYPE_CHECKING:
    from opentelemetry.sdk.trace.export import SpanExporter

HOST = "127.0.0.1"
VENV_ROOT_NAME = "smolagents-chat"  # under ${XDG_CACHE_HOME:-~/.cache}, as .ci/run installs it

# What the server is told, on top of its working dir, host and ports: nothing leaves the machine.
# Each is read in phoenix/config.py of arize-phoenix 20.26.1 (see /work/notes/phoenix_api.md).
QUIET_ENV = {
    # Master switch: no web fonts, no telemetry pixels, no WASM binary download at startup.
    "PHOENIX_ALLOW_EXTERNAL_RESOURCES": "false",
    # FullStory / Scarf.sh pixels in the web UI (already off when external resources are off).
    "PHOENIX_TELEMETRY_ENABLED": "false",
    # The agent assistant connects to a hosted docs MCP server at startup.
    "PHOENIX_DISABLE_AGENT_ASSISTANT": "true",
    # No code-sandbox providers (the WASM one downloads a CPython binary).
    "PHOENIX_ALLOWED_SANDBOX_PROVIDERS": "NONE",
    # The in-process MCP server at /mcp: not needed, and it costs start time.
    "PHOENIX_ENABLE_MCP_SERVER": "false",
    # Auth is off by default; say so, so that a caller's PHOENIX_ENABLE_AUTH can never flip it.
    "PHOENIX_ENABLE_AUTH": "false",
    # Otherwise every migration statement is logged (about 370 KB of log per fresh database).
    "PHOENIX_LOG_MIGRATIONS": "false",
}


class PhoenixServerError(RuntimeError):
    """The server could not be started or stopped; the message holds the tail of its log."""


# -- finding the install ---------------------------------------------------------------------------


def phoenix_required() -> bool:
    return os.environ.get("REQUIRE_PHOENIX", "").strip() not in ("", "0")


def _version_key(path: Path) -> tuple[int, ...]:
    match = re.fullmatch(r"phoenix-(\d+(?:\.\d+)*)", path.name)
    return tuple(int(part) for part in match.group(1).split(".")) if match else ()


def find_phoenix_bin() -> Path | None:
    """$PHOENIX_BIN when set (it must then exist); else the newest complete venv .ci/run would make."""
    if explicit := os.environ.get("PHOENIX_BIN", "").strip():
        path = Path(explicit)
        return path if path.is_file() and os.access(path, os.X_OK) else None
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / VENV_ROOT_NAME
    venvs = [
        venv
        for venv in cache.glob("phoenix-*")
        if _version_key(venv) and (venv / ".installed").is_file() and (venv / "bin" / "phoenix").is_file()
    ]
    return max(venvs, key=_version_key) / "bin" / "phoenix" if venvs else None


def require_phoenix_bin() -> Path:
    """The `phoenix` executable; else skip the test, or fail it when REQUIRE_PHOENIX is set (as in CI)."""
    found = find_phoenix_bin()
    if found is not None:
        return found
    where = os.environ.get("PHOENIX_BIN", "").strip()
    missing = (
        f"PHOENIX_BIN={where} is not an executable file"
        if where
        else f"Arize Phoenix not found (PHOENIX_BIN is unset and no complete venv under "
        f"${{XDG_CACHE_HOME:-~/.cache}}/{VENV_ROOT_NAME}/phoenix-<version>)"
    )
    if phoenix_required():
        pytest.fail(
            f"REQUIRE_PHOENIX is set but {missing}: run the Phoenix step of .ci/run, "
            "or unset REQUIRE_PHOENIX to skip these tests",
            pytrace=False,
        )
    pytest.skip(f"{missing}; the Phoenix step of .ci/run installs it")


# -- the server ------------------------------------------------------------------------------------


def free_port(host: str = HOST) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def port_open(host: str, port: int, timeout: float = 1.0) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        return sock.connect_ex((host, port)) == 0


def _child_env(extra: Mapping[str, str]) -> dict[str, str]:
    """The caller's environment less anything that would configure Phoenix, OTel or Python paths."""
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("PHOENIX_", "OTEL_", "PYTHON", "VIRTUAL_ENV"))
    }
    env.update(extra)
    return env


def _terminate(proc: subprocess.Popen[bytes] | None, grace_s: float) -> None:
    """SIGTERM the server's process group, SIGKILL it after grace_s; safe to call in any state."""
    if proc is None or proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


def _destroy(holder: dict[str, Any], base_dir: Path) -> None:
    _terminate(holder.get("proc"), grace_s=10)
    if (log := holder.get("log")) is not None:
        log.close()
    shutil.rmtree(base_dir, ignore_errors=True)


class PhoenixServer:
    """`phoenix serve` in a fresh temp dir (its PHOENIX_WORKING_DIR, SQLite) on 127.0.0.1:<free ports>."""

    def __init__(
        self,
        phoenix_bin: Path | None = None,
        env: Mapping[str, str] | None = None,
        timeout_s: float = 120.0,
    ) -> None:
        found = phoenix_bin or find_phoenix_bin()
        if found is None:
            raise PhoenixServerError("Arize Phoenix not found: set PHOENIX_BIN (see require_phoenix_bin)")
        self.phoenix_bin = Path(found)
        self.extra_env = dict(env or {})
        self.timeout_s = timeout_s
        self.host = HOST
        self.port = 0
        self.grpc_port = 0
        self.base_dir: Path | None = None
        self.start_seconds: list[float] = []  # wall time of each start(), first one included
        self._holder: dict[str, Any] = {}  # proc and log file, shared with the finalizer
        self._http: httpx.Client | None = None
        self._finalizer: weakref.finalize | None = None
        self._names = itertools.count(1)

    # -- lifecycle -----------------------------------------------------------------------------------

    def __enter__(self) -> PhoenixServer:
        self.setup()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def setup(self) -> None:
        """Make the working dir, take two free ports and start; on any failure, clean up and raise."""
        if self.base_dir is not None:
            raise PhoenixServerError("this PhoenixServer was already set up")
        self.base_dir = Path(tempfile.mkdtemp(prefix="phoenixtest-"))
        (self.base_dir / "work").mkdir()
        (self.base_dir / "tmp").mkdir()
        # Stops the server and removes the dir even if close() is never called.
        self._finalizer = weakref.finalize(self, _destroy, self._holder, self.base_dir)
        try:
            for attempt in range(3):
                self.port, self.grpc_port = free_port(self.host), free_port(self.host)
                try:
                    self.start()
                    return
                except PhoenixServerError as error:
                    # Another process took a probed port before Phoenix bound it: take others.
                    if attempt == 2 or "address already in use" not in str(error).lower():
                        raise
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        """Stop the server and remove its temp dir (data included)."""
        if self._http is not None:
            self._http.close()
            self._http = None
        if self._finalizer is not None:
            self._finalizer()

    def start(self) -> None:
        """Start (or restart after stop()/kill()) on the same ports and working dir; waits until ready."""
        if self.base_dir is None or not self.base_dir.exists():
            raise PhoenixServerError("the server does not exist (not set up, or already closed)")
        if self.running:
            raise PhoenixServerError(f"already running (pid {self.pid})")
        env = _child_env(
            {
                **QUIET_ENV,
                "PHOENIX_WORKING_DIR": str(self.base_dir / "work"),
                "PHOENIX_HOST": self.host,
                "PHOENIX_PORT": str(self.port),
                "PHOENIX_GRPC_PORT": str(self.grpc_port),
                # Phoenix keeps pid files under $TMPDIR/.arize-phoenix: keep them in our dir too.
                "TMPDIR": str(self.base_dir / "tmp"),
                **self.extra_env,
            }
        )
        log: IO[bytes] = (self.base_dir / "phoenix.log").open("ab")
        if (old := self._holder.get("log")) is not None:
            old.close()
        self._holder["log"] = log
        offset = log.tell()
        log.write(f"\n===== tests/phoenix_server.py: phoenix serve on port {self.port} =====\n".encode())
        log.flush()
        began = time.monotonic()
        proc = subprocess.Popen(
            [str(self.phoenix_bin), "serve"],
            cwd=self.base_dir,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: signals to ours never reach it
        )
        self._holder["proc"] = proc
        try:
            self._wait_ready(proc, began, offset)
        except BaseException:
            _terminate(proc, grace_s=5)
            raise
        self.start_seconds.append(time.monotonic() - began)

    def stop(self, grace_s: float = 20.0) -> None:
        """Graceful shutdown (SIGTERM: Phoenix drains its span queue for up to 5 s); start() brings it back."""
        _terminate(self._holder.get("proc"), grace_s=grace_s)
        self._wait_ports_closed()

    def kill(self) -> None:
        """Crash it (SIGKILL): whatever Phoenix had only in memory is lost; committed rows stay."""
        proc = self._holder.get("proc")
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        self._wait_ports_closed()

    def restart(self) -> None:
        self.stop()
        self.start()

    def ensure_running(self) -> None:
        """Start it again if a test left it stopped (for a fixture shared by many tests)."""
        if not self.running:
            self.start()

    @property
    def pid(self) -> int | None:
        proc = self._holder.get("proc")
        return proc.pid if proc is not None and proc.poll() is None else None

    @property
    def running(self) -> bool:
        return self.pid is not None

    def rss_bytes(self) -> int | None:
        """Resident memory of the server process now (VmRSS), or None when it is not running."""
        if (pid := self.pid) is None:
            return None
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        return None

    # -- addresses -----------------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        """The UI and REST root, e.g. http://127.0.0.1:PORT (the REST API is under /v1)."""
        return f"http://{self.host}:{self.port}"

    @property
    def otlp_http_endpoint(self) -> str:
        """Full OTLP/HTTP traces URL (OTEL_EXPORTER_OTLP_TRACES_ENDPOINT); protobuf only, no JSON."""
        return f"{self.base_url}/v1/traces"

    @property
    def grpc_endpoint(self) -> str:
        """OTLP/gRPC endpoint (plaintext: use insecure=True, or this http:// URL)."""
        return f"http://{self.host}:{self.grpc_port}"

    @property
    def working_dir(self) -> Path:
        assert self.base_dir is not None
        return self.base_dir / "work"

    @property
    def log_file(self) -> Path | None:
        return self.base_dir / "phoenix.log" if self.base_dir is not None else None

    def log_text(self) -> str:
        try:
            return self.log_file.read_text(errors="replace") if self.log_file else ""
        except OSError:
            return ""

    def __repr__(self) -> str:
        return f"PhoenixServer(port={self.port}, grpc_port={self.grpc_port}, dir={self.base_dir}, pid={self.pid})"

    # -- REST ----------------------------------------------------------------------------------------

    @property
    def http(self) -> httpx.Client:
        """An httpx client on base_url (survives restarts: the pool reconnects)."""
        if self._http is None:
            self._http = httpx.Client(base_url=self.base_url, timeout=60.0)
        return self._http

    def new_project_name(self, prefix: str = "test") -> str:
        """A project name no other test uses (Phoenix creates a project on its first span)."""
        return f"{prefix}-{next(self._names)}-{uuid.uuid4().hex[:8]}"

    def projects(self) -> list[dict[str, Any]]:
        return self._paginate("/v1/projects", {}, limit=100)

    def spans(self, project: str, **filters: Any) -> list[dict[str, Any]]:
        """Every span of a project, oldest first (GET /v1/projects/{p}/spans, all pages).

        Filters are that endpoint's query parameters: trace_id, span_id, parent_id ("null" = roots),
        name, span_kind, status_code, attribute ("session.id:abc"), start_time, end_time. A project
        that does not exist yet (no span landed) gives [].
        """
        try:
            spans = self._paginate(f"/v1/projects/{project}/spans", filters, limit=1000)
        except httpx.HTTPStatusError as error:
            if error.response.status_code == 404:
                return []
            raise
        return spans[::-1]  # the endpoint pages newest first

    def wait_for_spans(
        self,
        project: str,
        count: int = 1,
        timeout_s: float = 30.0,
        **filters: Any,
    ) -> list[dict[str, Any]]:
        """Poll until at least `count` spans match (ingestion is asynchronous); the spans, oldest first."""
        return self.wait_for(
            lambda: spans if len(spans := self.spans(project, **filters)) >= count else None,
            timeout_s,
            f"{count} span(s) in project {project!r} matching {filters}",
        )

    def trace_annotations(self, project: str, trace_ids: list[str], **params: Any) -> list[dict[str, Any]]:
        return self._annotations(project, "trace_annotations", {"trace_ids": trace_ids, **params})

    def span_annotations(self, project: str, span_ids: list[str], **params: Any) -> list[dict[str, Any]]:
        return self._annotations(project, "span_annotations", {"span_ids": span_ids, **params})

    def session_annotations(
        self, project: str, session_ids: list[str], **params: Any
    ) -> list[dict[str, Any]]:
        return self._annotations(project, "session_annotations", {"session_ids": session_ids, **params})

    def sessions(self, project: str) -> list[dict[str, Any]]:
        """The project's sessions (GET /v1/projects/{p}/sessions), each with its traces."""
        return self._paginate(f"/v1/projects/{project}/sessions", {}, limit=100)

    def wait_for(self, probe: Callable[[], Any], timeout_s: float = 30.0, what: str = "condition") -> Any:
        """Call probe() until it returns something truthy; that value. Fails the test after timeout_s."""
        deadline = time.monotonic() + timeout_s
        while True:
            if result := probe():
                return result
            if time.monotonic() > deadline:
                pytest.fail(f"Phoenix: timed out after {timeout_s:.0f} s waiting for {what}", pytrace=False)
            time.sleep(0.2)

    def span_exporter(self, project: str, protocol: str = "http/protobuf", **kwargs: Any) -> SpanExporter:
        """An OTLP span exporter to this server whose spans land in `project`.

        The project rides on the x-project-name header over HTTP; over gRPC Phoenix reads only the
        resource attribute openinference.project.name, so put that on the TracerProvider's resource.
        """
        if protocol == "grpc":
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcExporter

            return GrpcExporter(endpoint=self.grpc_endpoint, insecure=True, **kwargs)
        if protocol != "http/protobuf":
            raise ValueError(f"protocol must be 'http/protobuf' or 'grpc', got {protocol!r}")
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpExporter

        headers = {"x-project-name": project, **kwargs.pop("headers", {})}
        return HttpExporter(endpoint=self.otlp_http_endpoint, headers=headers, **kwargs)

    # -- internals -----------------------------------------------------------------------------------

    def _annotations(self, project: str, kind: str, params: dict[str, Any]) -> list[dict[str, Any]]:
        return self._paginate(f"/v1/projects/{project}/{kind}", params, limit=1000)

    def _paginate(self, path: str, params: Mapping[str, Any], limit: int) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        query = {key: value for key, value in params.items() if value is not None}
        query["limit"] = limit
        while True:
            response = self.http.get(path, params=query)
            response.raise_for_status()
            body = response.json()
            out.extend(body["data"])
            if not (cursor := body.get("next_cursor")):
                return out
            query["cursor"] = cursor

    def _wait_ready(self, proc: subprocess.Popen[bytes], began: float, log_offset: int) -> None:
        """Ready = /readyz answers 200 (it runs a DB query) and the gRPC port takes connections."""
        deadline = began + self.timeout_s
        with httpx.Client(timeout=2.0) as probe:
            while True:
                if proc.poll() is not None:
                    raise self._error(f"phoenix serve exited with code {proc.returncode}", log_offset)
                try:
                    if probe.get(f"{self.base_url}/readyz").status_code == 200 and port_open(
                        self.host, self.grpc_port
                    ):
                        return
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    raise self._error(f"phoenix serve not ready after {self.timeout_s:.0f} s", log_offset)
                time.sleep(0.2)

    def _wait_ports_closed(self, timeout_s: float = 10.0) -> None:
        deadline = time.monotonic() + timeout_s
        while port_open(self.host, self.port, 0.2) or port_open(self.host, self.grpc_port, 0.2):
            if time.monotonic() > deadline:
                raise PhoenixServerError(f"ports {self.port}/{self.grpc_port} still open after stop")
            time.sleep(0.1)

    def _error(self, message: str, log_offset: int) -> PhoenixServerError:
        tail = ""
        with contextlib.suppress(OSError):
            if self.log_file is not None:
                with self.log_file.open("rb") as log:
                    log.seek(log_offset)
                    tail = log.read().decode(errors="replace")[-6000:]
        return PhoenixServerError(
            f"{message} (port {self.port}, gRPC {self.grpc_port}, dir {self.base_dir}):\n"
            f"--- server log ({self.log_file}) ---\n{tail.strip() or '(empty)'}"
        )


# -- fixtures --------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def phoenix_server() -> Iterator[PhoenixServer]:
    """One throwaway Phoenix for the whole run (about 10 s to start); register it in tests/conftest.py."""
    with PhoenixServer(require_phoenix_bin()) as server:
        yield server


@pytest.fixture
def phoenix(phoenix_server: PhoenixServer) -> PhoenixServer:
    """The run's Phoenix, running (started again if an earlier test left it stopped)."""
    phoenix_server.ensure_running()
    return phoenix_server

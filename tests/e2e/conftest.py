"""Fixtures for the end-to-end suite: real `mock-upstream` and `gateway-server` processes.

Clients are the vendors' own SDKs, unmodified: `anthropic`, `openai` (chat completions and
responses) and `google-genai`. Besides the Claude gateway of `test_anthropic_sdk.py`, one gateway
per provider type serves every other client dialect by translation (`translate_from`), all on the
same mock process, which speaks the four vendor APIs.

Binaries come from `GATEWAY_BIN` and `MOCK_BIN` (set by `cargo xtask test`), else from
`target/debug/` of this repository. Every gateway runs in its own temporary directory with a
generated TOML config and its own SQLite database, listens on a port chosen by the OS, and is
stopped with SIGTERM at the end: it must exit 0 within 35 s (graceful shutdown flushes the
usage log).

Every HTTP response that a test's client receives from a gateway is recorded in that gateway's
`ledger` (an httpx event hook), so the final check can compare the request log row for row with
what the clients actually saw.
"""

from __future__ import annotations

import json
import os
import queue
import re
import signal
import socket
import sqlite3
import subprocess
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import anthropic
import httpx
import httpx2
import openai
import pytest
from google import genai
from google.genai import types as genai_types

REPO = Path(__file__).resolve().parents[2]
API_KEY = "sk-alice-0001"
MODEL = "claude-sonnet-4-5"
ALIAS = "claude-3-5-sonnet-latest"
MOCK_TEXT = "Hello from the mock upstream."
# Mock usage per request and the configured price of MODEL (USD per million tokens).
INPUT_TOKENS, OUTPUT_TOKENS = 25, 15
INPUT_PER_MTOK, OUTPUT_PER_MTOK = 3, 15
EXPECTED_COST_NANOUSD = (INPUT_TOKENS * INPUT_PER_MTOK + OUTPUT_TOKENS * OUTPUT_PER_MTOK) * 1000
SHUTDOWN_LIMIT_S = 35
CLIENT_TIMEOUT_S = 30
LISTENING = re.compile(r"listening on (http://\S+)")

# Models the translation gateways are asked for, one per vendor; every priced like MODEL.
OPENAI_MODEL = "gpt-4.1"
CODEX_MODEL = "gpt-5-codex"
GEMINI_MODEL = "gemini-2.5-flash"
PRICED_MODELS = (MODEL, OPENAI_MODEL, CODEX_MODEL, GEMINI_MODEL)
DIALECTS = ("anthropic", "openai-chat", "openai-responses", "gemini")
NATIVE_DIALECT = {
    "claude": "anthropic",
    "openai-compatible": "openai-chat",
    "codex": "openai-responses",
    "gemini": "gemini",
}

# The SDKs read these from the environment; the suite must not depend on the caller's shell.
for _var in (
    "ANTHROPIC_API_KEY",
    "ANTHROPIC_AUTH_TOKEN",
    "ANTHROPIC_BASE_URL",
    "OPENAI_API_KEY",
    "OPENAI_BASE_URL",
    "OPENAI_ORG_ID",
    "OPENAI_PROJECT_ID",
    "GOOGLE_API_KEY",
    "GEMINI_API_KEY",
    "GOOGLE_GENAI_USE_VERTEXAI",
    "GOOGLE_GENAI_API_VERSION",
    "GOOGLE_GENAI_HTTP_CLIENT",
    "GOOGLE_CLOUD_PROJECT",
    "GOOGLE_CLOUD_LOCATION",
):
    os.environ.pop(_var, None)


def _binary(env: str, name: str) -> Path:
    path = Path(os.environ.get(env) or REPO / "target" / "debug" / name)
    if not path.is_file():
        pytest.fail(f"{name} binary not found at {path}: build it (cargo xtask test does) or set {env}")
    return path


class Process:
    """A child process that prints `listening on http://ADDR` on stdout once it serves."""

    def __init__(self, name: str, argv: list[str], cwd: Path, env: dict[str, str] | None = None):
        self.name = name
        self.stderr_path = cwd / f"{name}.stderr.log"
        self._stderr = open(self.stderr_path, "wb")
        self.popen = subprocess.Popen(
            argv,
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            text=True,
        )
        self.stdout_lines: list[str] = []
        self._lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._drain_stdout, daemon=True).start()
        self.url = self._wait_listening(timeout=30)
        self.returncode: int | None = None
        self.stop_seconds: float | None = None

    def _drain_stdout(self) -> None:
        assert self.popen.stdout is not None
        for line in self.popen.stdout:
            self.stdout_lines.append(line)
            self._lines.put(line)
        self._lines.put(None)

    def _wait_listening(self, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self._lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                self.popen.kill()
                raise RuntimeError(f"{self.name} did not print 'listening on' in {timeout}s\n{self.logs()}")
            if line is None:
                self.popen.wait()
                raise RuntimeError(f"{self.name} exited with {self.popen.returncode} before listening\n{self.logs()}")
            if m := LISTENING.search(line):
                return m.group(1)

    def logs(self, tail: int = 4000) -> str:
        self._stderr.flush()
        err = self.stderr_path.read_text(errors="replace")[-tail:]
        return f"--- {self.name} stdout ---\n{''.join(self.stdout_lines)[-tail:]}--- {self.name} stderr ---\n{err}"

    def terminate(self, timeout: float = SHUTDOWN_LIMIT_S) -> int:
        """SIGTERM and wait; returns the exit code (kills and raises past `timeout`)."""
        if self.returncode is not None:
            return self.returncode
        start = time.monotonic()
        self.popen.send_signal(signal.SIGTERM)
        try:
            self.returncode = self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait()
            raise AssertionError(f"{self.name} did not exit within {timeout}s of SIGTERM\n{self.logs()}")
        finally:
            self.stop_seconds = time.monotonic() - start
            self._stderr.close()
        return self.returncode


@dataclass
class Seen:
    """One HTTP exchange as the client saw it."""

    request_id: str | None
    method: str
    path: str
    status: int
    request_headers: dict[str, str]


@dataclass
class Ledger:
    """Every response a client received from one gateway, in order."""

    seen: list[Seen] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def hook(self, response: Any) -> None:
        """httpx/httpx2 `response` event hook: runs once headers arrive (also for streams)."""
        req = response.request
        entry = Seen(
            request_id=response.headers.get("x-request-id"),
            method=req.method,
            path=req.url.path,
            status=response.status_code,
            request_headers={k.lower(): v for k, v in req.headers.items()},
        )
        with self._lock:
            self.seen.append(entry)


class Gateway:
    """A running gateway-server with its own directory, config and SQLite database."""

    def __init__(
        self,
        name: str,
        binary: Path,
        workdir: Path,
        upstream_url: str,
        provider_type: str = "claude",
        translate_from: tuple[str, ...] = (),
        user_limits: str = "",
    ):
        self.name = name
        self.dir = workdir
        self.db_path = workdir / "gw.db"
        self.config_path = workdir / "gateway.toml"
        self.provider_type = provider_type
        self.provider_name = "mock" if provider_type == "claude" else f"mock-{provider_type}"
        translate = ", ".join(f'"{d}"' for d in translate_from)
        prices = "".join(
            f'\n[[prices]]\nmodel = "{m}"\ninput_per_mtok = "{INPUT_PER_MTOK}"\noutput_per_mtok = "{OUTPUT_PER_MTOK}"\n'
            for m in PRICED_MODELS
        )
        self.config_path.write_text(
            f"""
[[providers]]
name = "{self.provider_name}"
type = "{provider_type}"
base_url = "{upstream_url}"
api_key = "upstream-secret"
model_redirects = [{{ match = "exact", from = "{ALIAS}", to = "{MODEL}" }}]
translate_from = [{translate}]

[[users]]
name = "alice"
{user_limits}
[[users.keys]]
name = "laptop"
key = "{API_KEY}"
{prices}"""
        )
        env = {k: v for k, v in os.environ.items() if not k.startswith(("GATEWAY_", "DATABASE_URL"))}
        env.update(
            DATABASE_URL=f"sqlite://{self.db_path}",
            USAGE_SPILL_PATH=str(workdir / "usage-spill.jsonl"),
            ADMIN_TOKEN="adm-e2e-test-token",
            RUST_LOG=os.environ.get("RUST_LOG", "info"),
        )
        self.process = Process(
            name,
            [str(binary), "--listen", "127.0.0.1:0", "--config", str(self.config_path)],
            cwd=workdir,
            env=env,
        )
        self.url = self.process.url
        self.ledger = Ledger()
        self._wait_ready(timeout=15)

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        last: Exception | None = None
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"{self.url}/readyz", timeout=2) as r:
                    if r.status == 200:
                        return
            except Exception as e:  # noqa: BLE001 - any failure means "not ready yet"
                last = e
            time.sleep(0.05)
        raise RuntimeError(f"{self.name} not ready after {timeout}s: {last}\n{self.process.logs()}")

    # --- clients -------------------------------------------------------------------------

    def client(self, **kwargs: Any) -> anthropic.Anthropic:
        """The official SDK pointed at this gateway; retries off so every call is one request."""
        kwargs.setdefault("api_key", API_KEY)
        kwargs.setdefault("max_retries", 0)
        kwargs.setdefault("timeout", CLIENT_TIMEOUT_S)
        return anthropic.Anthropic(
            base_url=self.url,
            http_client=anthropic.DefaultHttpxClient(event_hooks={"response": [self.ledger.hook]}),
            **kwargs,
        )

    def openai(self, **kwargs: Any) -> openai.OpenAI:
        """The official `openai` SDK pointed at this gateway's `/v1`; retries off."""
        kwargs.setdefault("api_key", API_KEY)
        kwargs.setdefault("max_retries", 0)
        kwargs.setdefault("timeout", CLIENT_TIMEOUT_S)
        return openai.OpenAI(
            base_url=f"{self.url}/v1",
            http_client=openai.DefaultHttpxClient(event_hooks={"response": [self.ledger.hook]}),
            **kwargs,
        )

    def genai(self, api_version: str | None = None) -> genai.Client:
        """The official `google-genai` SDK (Gemini API, not Vertex) pointed at this gateway.

        A custom `base_url` with an API key keeps the Gemini API's URL layout:
        `{base_url}/{api_version}/models/{model}:generateContent`, the key in `x-goog-api-key`.
        `api_version` None keeps the SDK's default (`v1` in google-genai 3.x).
        """
        http_client = httpx2.Client(timeout=CLIENT_TIMEOUT_S, event_hooks={"response": [self.ledger.hook]})
        options = genai_types.HttpOptions(
            base_url=self.url,
            api_version=api_version,
            timeout=CLIENT_TIMEOUT_S * 1000,
            retry_options=genai_types.HttpRetryOptions(attempts=1),
            httpx_client=http_client,
        )
        return genai.Client(api_key=API_KEY, http_options=options)

    def raw(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=CLIENT_TIMEOUT_S, event_hooks={"response": [self.ledger.hook]})

    # --- request log ---------------------------------------------------------------------

    def rows(self, where: str = "1=1", params: tuple = ()) -> list[dict[str, Any]]:
        if not self.db_path.exists():
            return []
        con = sqlite3.connect(f"file:{self.db_path}?mode=ro", uri=True, timeout=5)
        try:
            con.row_factory = sqlite3.Row
            return [dict(r) for r in con.execute(f"SELECT * FROM request_log WHERE {where} ORDER BY id", params)]
        finally:
            con.close()

    def wait_row(
        self,
        request_id: str,
        timeout: float = 10,
        ready: Callable[[dict[str, Any]], bool] = lambda _: True,
    ) -> dict[str, Any]:
        """Polls the log (the writer flushes within ~200 ms) until the row exists."""
        deadline = time.monotonic() + timeout
        while True:
            rows = self.rows("request_id = ?", (request_id,))
            if rows and ready(rows[0]):
                return rows[0]
            if time.monotonic() > deadline:
                raise AssertionError(f"no request_log row for {request_id} after {timeout}s (got {rows})")
            time.sleep(0.05)

    def stop(self) -> int:
        return self.process.terminate()


def endpoint_dialect(path: str) -> str | None:
    """The client dialect of a generation endpoint, as the request log names it."""
    if path == "/v1/messages":
        return "anthropic"
    if path == "/v1/chat/completions":
        return "openai-chat"
    if path == "/v1/responses":
        return "openai-responses"
    if path.endswith((":generateContent", ":streamGenerateContent")):
        return "gemini"
    return None


def assert_translation_notes(row: dict[str, Any]) -> None:
    """`translation_notes` is NULL or a JSON array of strings (what the translation dropped)."""
    notes = row["translation_notes"]
    if notes is None:
        return
    parsed = json.loads(notes)
    assert isinstance(parsed, list) and all(isinstance(n, str) and n for n in parsed), row


def assert_billed_row(
    gw: Gateway, request_id: str | None, *, dialect: str, model: str, stream: bool, endpoint: str | None = None
) -> dict[str, Any]:
    """The request log row of one successful generation: as the client saw it, billed 25/15."""
    assert request_id, "the response carries no x-request-id"
    row = gw.wait_row(request_id)
    ctx = f"{gw.name}: {row}"
    assert row["status_code"] == 200, ctx
    assert row["outcome"] == "success", ctx
    assert row["error"] is None, ctx
    assert row["dialect"] == dialect, ctx
    if endpoint is not None:
        assert row["endpoint"] == endpoint, ctx
    assert endpoint_dialect(row["endpoint"]) == dialect, ctx
    assert row["stream"] == int(stream), ctx
    assert row["provider_name"] == gw.provider_name, ctx
    assert row["original_model"] == model, ctx
    assert row["forwarded_model"] == model, ctx
    assert row["input_tokens"] == INPUT_TOKENS, ctx
    assert row["output_tokens"] == OUTPUT_TOKENS, ctx
    assert row["cache_read_input_tokens"] == 0 and row["cache_creation_input_tokens"] == 0, ctx
    assert row["cost_nanousd"] == EXPECTED_COST_NANOUSD, ctx
    assert row["user_id"] is not None and row["key_id"] is not None, ctx
    assert row["ttfb_ms"] is not None, ctx
    if stream:
        assert row["ttft_ms"] is not None, ctx
    assert_translation_notes(row)
    return row


def check_request_log(gw: Gateway) -> None:
    """After `gw` stopped: exactly one row per response its clients saw, matching what they saw."""
    seen = gw.ledger.seen
    rows = {r["request_id"]: r for r in gw.rows()}
    missing_id = [s for s in seen if not s.request_id]
    assert not missing_id, f"{gw.name}: responses without x-request-id: {missing_id}"
    seen_ids = [s.request_id for s in seen]
    assert len(set(seen_ids)) == len(seen_ids), f"{gw.name}: x-request-id must be unique per response"
    assert set(rows) == set(seen_ids), (
        f"{gw.name}: one row per request: {len(seen)} responses, {len(rows)} rows; "
        f"without row: {set(seen_ids) - set(rows)}, without response: {set(rows) - set(seen_ids)}"
    )
    assert len(rows) == len(seen)
    generations = 0
    for s in seen:
        row = rows[s.request_id]
        ctx = f"{gw.name}: {s.method} {s.path} -> {s.status}: {row}"
        assert row["status_code"] == s.status, ctx
        assert row["method"] == s.method, ctx
        assert row["endpoint"] == s.path, ctx
        assert row["user_agent"] == s.request_headers.get("user-agent"), ctx
        assert_translation_notes(row)
        if 200 <= s.status < 300:
            assert row["outcome"] == "success", ctx
            assert row["user_id"] is not None and row["key_id"] is not None, ctx
        else:
            # Rejected by the gateway, or no provider / upstream failure (outcome names vary).
            assert row["outcome"] != "success", ctx
            assert row["error"], ctx
        dialect = endpoint_dialect(s.path)
        if dialect is not None and s.status == 200:
            generations += 1
            assert row["dialect"] == dialect, ctx
            assert row["provider_name"] == gw.provider_name, ctx
            assert row["forwarded_model"], ctx
            assert row["input_tokens"] == INPUT_TOKENS, ctx
            assert row["output_tokens"] == OUTPUT_TOKENS, ctx
            assert row["cost_nanousd"] == EXPECTED_COST_NANOUSD, ctx
    assert generations >= 1, f"{gw.name}: no generation request was seen"


def _start_mock(binary: Path, workdir: Path, name: str, *args: str) -> Process:
    return Process(name, [str(binary), "--listen", "127.0.0.1:0", *args], cwd=workdir)


@pytest.fixture(scope="session")
def gateway_bin() -> Path:
    return _binary("GATEWAY_BIN", "gateway-server")


@pytest.fixture(scope="session")
def mock_bin() -> Path:
    return _binary("MOCK_BIN", "mock-upstream")


@pytest.fixture(scope="session")
def mock(mock_bin: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Process]:
    proc = _start_mock(mock_bin, tmp_path_factory.mktemp("mock"), "mock-upstream")
    yield proc
    proc.popen.kill()
    proc.popen.wait()


@pytest.fixture(scope="session")
def slow_mock(mock_bin: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Process]:
    """40 text chunks, 50 ms apart: a stream lasts about 2 s."""
    proc = _start_mock(
        mock_bin, tmp_path_factory.mktemp("slow-mock"), "slow-mock-upstream", "--chunks", "40", "--chunk-delay-ms", "50"
    )
    yield proc
    proc.popen.kill()
    proc.popen.wait()


def _gateway(
    name: str,
    gateway_bin: Path,
    upstream: Process,
    tmp: pytest.TempPathFactory,
    provider_type: str = "claude",
    translate_from: tuple[str, ...] = (),
    user_limits: str = "",
) -> Iterator[Gateway]:
    gw = Gateway(name, gateway_bin, tmp.mktemp(name), upstream.url, provider_type, translate_from, user_limits)
    try:
        yield gw
    finally:
        code = gw.stop()
        assert code == 0, f"{name} exited with {code} after SIGTERM\n{gw.process.logs()}"


@pytest.fixture(scope="session")
def gateway(gateway_bin: Path, mock: Process, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    yield from _gateway("gateway", gateway_bin, mock, tmp_path_factory)


def _translating(
    provider_type: str, gateway_bin: Path, mock: Process, tmp: pytest.TempPathFactory
) -> Iterator[Gateway]:
    """A gateway whose only provider is of `provider_type` and serves every client dialect."""
    others = tuple(d for d in DIALECTS if d != NATIVE_DIALECT[provider_type])
    yield from _gateway(f"{provider_type}-gateway", gateway_bin, mock, tmp, provider_type, others)


@pytest.fixture(scope="session")
def claude_gateway(gateway_bin: Path, mock: Process, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    """Only a `claude` provider, translating from openai-chat, openai-responses and gemini."""
    yield from _translating("claude", gateway_bin, mock, tmp_path_factory)


@pytest.fixture(scope="session")
def gemini_gateway(gateway_bin: Path, mock: Process, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    """Only a `gemini` provider, translating from anthropic, openai-chat and openai-responses."""
    yield from _translating("gemini", gateway_bin, mock, tmp_path_factory)


@pytest.fixture(scope="session")
def openai_compatible_gateway(
    gateway_bin: Path, mock: Process, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Gateway]:
    """Only an `openai-compatible` provider, translating from anthropic, openai-responses and gemini."""
    yield from _translating("openai-compatible", gateway_bin, mock, tmp_path_factory)


@pytest.fixture(scope="session")
def codex_gateway(gateway_bin: Path, mock: Process, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    """Only a `codex` provider, translating from anthropic, openai-chat and gemini."""
    yield from _translating("codex", gateway_bin, mock, tmp_path_factory)


@pytest.fixture(scope="session")
def rpm_gateway(gateway_bin: Path, mock: Process, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    """A Claude gateway whose user may send 2 requests per minute."""
    yield from _gateway("rpm-gateway", gateway_bin, mock, tmp_path_factory, user_limits="rpm_limit = 2")


@pytest.fixture(scope="session")
def budget_gateway(gateway_bin: Path, mock: Process, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    """A Claude gateway (also serving chat clients) whose user may spend $0.0001 in total: one
    request ($0.0003) exhausts it."""
    yield from _gateway(
        "budget-gateway",
        gateway_bin,
        mock,
        tmp_path_factory,
        translate_from=("openai-chat",),
        user_limits='limit_total_usd = "0.0001"',
    )


@pytest.fixture(scope="session")
def slow_gateway(
    gateway_bin: Path, slow_mock: Process, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Gateway]:
    yield from _gateway("slow-gateway", gateway_bin, slow_mock, tmp_path_factory)


@pytest.fixture(scope="session")
def late_mock(mock_bin: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Process]:
    """Answers only after 800 ms (a slow first byte, as with a long non-streamed generation)."""
    proc = _start_mock(mock_bin, tmp_path_factory.mktemp("late-mock"), "late-mock-upstream", "--first-byte-delay-ms", "800")
    yield proc
    proc.popen.kill()
    proc.popen.wait()


@pytest.fixture(scope="session")
def late_gateway(gateway_bin: Path, late_mock: Process, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    yield from _gateway("late-gateway", gateway_bin, late_mock, tmp_path_factory)


@pytest.fixture(scope="session")
def dead_gateway(gateway_bin: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    """A gateway whose only provider points at a closed port."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    gw = Gateway("dead-gateway", gateway_bin, tmp_path_factory.mktemp("dead-gateway"), f"http://127.0.0.1:{port}")
    try:
        yield gw
    finally:
        code = gw.stop()
        assert code == 0, f"dead-gateway exited with {code} after SIGTERM\n{gw.process.logs()}"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests marked `final` stop their gateway: they run after every other test (stable order)."""
    items.sort(key=lambda item: item.get_closest_marker("final") is not None)


@pytest.fixture
def client(gateway: Gateway) -> Iterator[anthropic.Anthropic]:
    with gateway.client() as c:
        yield c


@pytest.fixture
def raw(gateway: Gateway) -> Iterator[httpx.Client]:
    with gateway.raw() as c:
        yield c

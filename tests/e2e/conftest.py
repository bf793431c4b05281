"""Fixtures for the end-to-end suite: real `mock-upstream` and `gateway-server` processes.

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
import pytest

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

# The SDK reads these from the environment; the suite must not depend on the caller's shell.
for _var in ("ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN", "ANTHROPIC_BASE_URL"):
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

    def __init__(self, name: str, binary: Path, workdir: Path, upstream_url: str):
        self.name = name
        self.dir = workdir
        self.db_path = workdir / "gw.db"
        self.config_path = workdir / "gateway.toml"
        self.config_path.write_text(
            f"""
[[providers]]
name = "mock"
type = "claude"
base_url = "{upstream_url}"
api_key = "upstream-secret"
model_redirects = [{{ match = "exact", from = "{ALIAS}", to = "{MODEL}" }}]

[[users]]
name = "alice"
[[users.keys]]
name = "laptop"
key = "{API_KEY}"

[[prices]]
model = "{MODEL}"
input_per_mtok = "{INPUT_PER_MTOK}"
output_per_mtok = "{OUTPUT_PER_MTOK}"
"""
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


def _gateway(name: str, gateway_bin: Path, upstream: Process, tmp: pytest.TempPathFactory) -> Iterator[Gateway]:
    gw = Gateway(name, gateway_bin, tmp.mktemp(name), upstream.url)
    try:
        yield gw
    finally:
        code = gw.stop()
        assert code == 0, f"{name} exited with {code} after SIGTERM\n{gw.process.logs()}"


@pytest.fixture(scope="session")
def gateway(gateway_bin: Path, mock: Process, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    yield from _gateway("gateway", gateway_bin, mock, tmp_path_factory)


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


@pytest.fixture
def client(gateway: Gateway) -> Iterator[anthropic.Anthropic]:
    with gateway.client() as c:
        yield c


@pytest.fixture
def raw(gateway: Gateway) -> Iterator[httpx.Client]:
    with gateway.raw() as c:
        yield c

"""The stubs type-check real uses: `mypy --strict` on typing_example.py and the package."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys

HERE = pathlib.Path(__file__).resolve().parent
PACKAGE = HERE.parent / "python" / "llm_gateway"


def test_mypy_strict_accepts_the_public_api() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-incremental", "--cache-dir", os.devnull, str(HERE / "typing_example.py"), str(PACKAGE)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stdout + out.stderr


def test_mypy_rejects_a_misuse(tmp_path: pathlib.Path) -> None:
    """The check above can fail: a wrong argument type is reported."""
    bad = tmp_path / "bad.py"
    bad.write_text("import llm_gateway\nllm_gateway.translate_request({}, 1, 'anthropic')\n")
    out = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-incremental", "--cache-dir", os.devnull, str(bad)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode != 0 and "arg-type" in out.stdout, out.stdout

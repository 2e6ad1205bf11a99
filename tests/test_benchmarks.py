"""Keep the benchmark harness working: one short round of every server (no timing checks)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from helpers import main_python_only
from needs import require_tool

pytestmark = main_python_only("Node's ws package (one of the servers compared)")
BENCH = Path(__file__).resolve().parent.parent / "benchmarks"


def test_every_benchmark_server_completes_one_round() -> None:
    require_tool("node")
    require_tool("npm")  # run.py installs the load generator's ws package when missing
    completed = subprocess.run(
        [sys.executable, str(BENCH / "run.py"), "--quick"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert completed.returncode == 0, completed.stderr[-2000:]
    report = json.loads((BENCH / "results" / "latest.json").read_text())
    medians = report["medians"]
    assert set(medians) == {
        "wsauth_sync",
        "wsauth_sync WSGI (gunicorn gthread)",
        "websockets sync",
        "simple-websocket (Werkzeug)",
        "Node ws (noServer + upgrade)",
        "raw threaded TCP echo",
        "wsauth_sync CLI (python -m wsauth_sync echo)",
        "gunicorn gthread alone (bare 401 app, W4 floor)",
        "gunicorn gthread + 85 µs of Python per request (W4 calibration)",
        "wsauth_sync WSGI, middleware timed (W4 only)",
        "wsproto alone, threaded (echo floor)",
    }
    # The timed middleware reported its own CPU per refusal from inside gunicorn.
    assert medians["wsauth_sync WSGI, middleware timed (W4 only)"]["W4 middleware µs"] > 0
    for name, figures in medians.items():
        if name.startswith("gunicorn gthread ") or "(W4 only)" in name:  # a 401 each time
            assert figures["W4 failures"] == 0 and figures["W4 rejections/s"] > 0, name
            continue
        assert figures["W1 msg/s"] > 0 and figures["W1 ops/CPU-s"] > 0, name
        if name == "wsproto alone, threaded (echo floor)":  # W1, W2 and W6 only
            assert figures["W2 msg/s"] > 0 and figures["W6 msg/s"] > 0, name
            continue
        if name != "raw threaded TCP echo":
            # Same behaviour everywhere: every invalid token got a 401 and a close, every
            # valid one a welcome, and every fragmented message came back whole.
            assert figures["W4 failures"] == 0 and figures["W4 rejections/s"] > 0, name
            assert figures["W3 failures"] == 0 and figures["W3 handshakes/s"] > 0, name
            assert figures["W6 msg/s"] > 0, name
        if name not in ("raw threaded TCP echo", "wsauth_sync CLI (python -m wsauth_sync echo)"):
            assert figures["W5 held"] == 20, name  # the CLI's per-address cap skips W5
    text = (BENCH / "results" / "latest.md").read_text()
    assert "| wsauth_sync |" in text and "ops/CPU-s" in text and "| W2 64 KiB echo |" in text

"""Profile one server under one workload, CPU time per function in every thread.

    python3 benchmarks/profile_server.py wsauth_sync W2 [--seconds 5] [--tag after]

The server imports ``servers.py`` with ``WSAUTH_CPROFILE`` set, which profiles each thread
it starts with a thread CPU clock (time blocked in ``recv`` or ``poll`` does not count, the
kernel's work inside a call does) and writes the merged stats when it exits (gunicorn's
worker included). Written to ``profiles/``. Sampling
profilers do not fit these servers: they cannot tell a thread blocked in ``recv`` from one
at work, and GIL-only sampling misses most of fifty short-lived hand-offs. cProfile's own
overhead inflates small calls, so read shares, not absolute times; system-call time shows
as the Python call that made it. The summary lists the functions with the most time of
their own, then the most inclusive ones, as shares of the handler threads' total.
"""

from __future__ import annotations

import argparse
import json
import pstats
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import jwt
from run import ENV, HERE, SECRET, SECRET_FILE, SERVERS, free_port, loadgen, pinned, stop

PROFILES = HERE / "profiles"


def _name(function: tuple[str, int, str]) -> str:
    filename, line, name = function
    for marker in ("site-packages/", "wsauth_sync/", "lib/python3"):
        if marker in filename:
            filename = filename[filename.index(marker) :]
            break
    return f"{name} ({filename}:{line})"


def _group(function: tuple[str, int, str]) -> str:
    filename, _, name = function
    if "wsauth_sync/" in filename:
        return "wsauth_sync"
    for package in (
        "wsproto",
        "h11",
        "jwt",
        "gunicorn",
        "websockets",
        "threading",
        "queue",
        "selectors",
        "concurrent",
        "logging",
    ):
        if f"/{package}/" in filename or filename.endswith(f"/{package}.py"):
            return package
    if name.startswith("<method") and "socket" in name:
        return "socket system calls (kernel time included)"
    if "lock" in name or "Lock" in name or "SimpleQueue" in name:
        return "locks and queues (C)"
    return "other (builtins, stdlib)"


def summarize(path: Path, header: str, top: int = 30) -> str:
    stats: Any = pstats.Stats(str(path)).stats  # {function: (cc, nc, tt, ct, callers)}
    total = sum(entry[2] for entry in stats.values())
    own = sorted(stats.items(), key=lambda item: item[1][2], reverse=True)[:top]
    inclusive = sorted(stats.items(), key=lambda item: item[1][3], reverse=True)[: top * 2]
    groups: dict[str, float] = {}
    for function, entry in stats.items():
        group = _group(function)
        groups[group] = groups.get(group, 0.0) + entry[2]
    lines = [
        header,
        f"total CPU {total:.2f} s (cProfile with thread CPU time, all threads "
        "started after import)",
        "",
        "own time by where it is spent:",
    ]
    lines += [
        f"{100 * spent / total:5.1f}% {group}"
        for group, spent in sorted(groups.items(), key=lambda item: -item[1])
    ]
    lines += ["", "share  calls    own time (self)"]
    lines += [
        f"{100 * entry[2] / total:5.1f}% {entry[1]:>8} self {_name(function)}"
        for function, entry in own
    ]
    lines += ["", "share  calls    inclusive"]
    lines += [
        f"{100 * entry[3] / total:5.1f}% {entry[1]:>8} incl {_name(function)}"
        for function, entry in inclusive
    ]
    return "\n".join(lines) + "\n"


def wait_listening(port: int, server: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 20
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the server did not start") from None
            time.sleep(0.05)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("server", choices=sorted(SERVERS))
    parser.add_argument("workload", choices=["W1", "W2", "W3", "W4", "W6"])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--tag", default="", help="appended to the output file name")
    args = parser.parse_args()
    port = free_port()
    PROFILES.mkdir(exist_ok=True)
    SECRET_FILE.parent.mkdir(exist_ok=True)
    SECRET_FILE.touch(mode=0o600)
    SECRET_FILE.write_text(SECRET)
    slug = args.server.split()[0].replace("_", "-") + ("-wsgi" if "WSGI" in args.server else "")
    name = f"{args.workload.lower()}-{slug}{'-' + args.tag if args.tag else ''}"
    raw = HERE / "results" / f"{name}.pstats"
    raw.unlink(missing_ok=True)
    command = [
        str(port)
        if part == "PORT"
        else str(SECRET_FILE)
        if part == "SECRET_FILE"
        else part.replace("PORT", str(port))
        for part in SERVERS[args.server]
    ]
    server = subprocess.Popen(
        pinned(command, 0),
        env={**ENV, "WSAUTH_CPROFILE": str(raw)},
        cwd=HERE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_listening(port, server)
        token = jwt.encode(
            {"sub": "bench", "exp": int(time.time()) + 3600}, SECRET, algorithm="HS256"
        )
        result = loadgen(
            {"workload": args.workload, "port": port, "token": token, "seconds": args.seconds},
            timeout=args.seconds + 60,
        )
        print(json.dumps(result), file=sys.stderr)
    finally:
        stop(server)
    deadline = time.monotonic() + 10
    while not raw.exists() and time.monotonic() < deadline:
        time.sleep(0.1)  # gunicorn's worker may write after the arbiter exited
    operation = {
        "W1": "messages",
        "W2": "messages",
        "W3": "handshakes",
        "W4": "rejections",
        "W6": "messages",
    }[args.workload]
    header = (
        f"{args.server} under {args.workload} for {args.seconds} s: "
        f"{result[operation]} {operation}; commit {_commit()}"
    )
    summary = PROFILES / f"{name}.txt"
    summary.write_text(summarize(raw, header))
    print(summary)
    return 0


def _commit() -> str:
    done = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"],
        capture_output=True,
        text=True,
        cwd=HERE,
        check=False,
    )
    return done.stdout.strip() or "unknown"


if __name__ == "__main__":
    sys.exit(main())

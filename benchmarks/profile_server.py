"""Profile one server under one workload with py-spy; write a summary to profiles/.

    python3 benchmarks/profile_server.py wsauth_sync W2 [--seconds 5] [--tag before]

The server runs under ``py-spy record`` (sampling, GIL-holding threads only, so waits in
``poll``/``recv`` do not drown the CPU work); the load generator is the one ``run.py``
uses. The summary lists the functions with the most samples of their own, then the most
inclusive ones, as shares of all samples. Needs ``py-spy`` (``pip install py-spy``).
"""

from __future__ import annotations

import argparse
import collections
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import jwt
from run import ENV, HERE, SECRET, SECRET_FILE, SERVERS, free_port, loadgen, pinned

PROFILES = HERE / "profiles"


def summarize(raw: Path, top: int = 25) -> str:
    """Self and inclusive sample shares from py-spy's collapsed stacks."""
    own: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        count = int(count_text)
        frames = [frame for frame in stack.split(";") if not frame.startswith("process ")
                  and not frame.startswith("thread ")]
        total += count
        if frames:
            own[frames[-1]] += count
        for frame in set(frames):
            inclusive[frame] += count
    lines = [f"total samples {total}"]
    lines += [f"{100 * n / total:5.1f}% self {frame}" for frame, n in own.most_common(top)]
    lines.append("")
    lines += [f"{100 * n / total:5.1f}% incl {frame}" for frame, n in
              inclusive.most_common(top * 2)]
    return "\n".join(lines) + "\n"


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
    slug = args.server.split()[0].replace("_", "-")
    name = f"{args.workload.lower()}-{slug}{'-' + args.tag if args.tag else ''}"
    raw = PROFILES / f"{name}.collapsed"
    command = [str(port) if part == "PORT" else str(SECRET_FILE) if part == "SECRET_FILE"
               else part for part in SERVERS[args.server]]
    spy = subprocess.Popen(pinned(["py-spy", "record", "--gil", "--format", "raw", "--rate", "250",
                                   "--subprocesses", "-o", str(raw), "--", *command], 0),
                           env=ENV, cwd=HERE, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
    try:
        time.sleep(3)  # the server starts under the profiler
        token = jwt.encode({"sub": "bench", "exp": int(time.time()) + 3600}, SECRET,
                           algorithm="HS256")
        result = loadgen({"workload": args.workload, "port": port, "token": token,
                          "seconds": args.seconds}, timeout=args.seconds + 60)
        print(json.dumps(result), file=sys.stderr)
    finally:
        spy.send_signal(signal.SIGINT)  # py-spy writes its output and stops the server
        spy.wait(timeout=30)
    summary = PROFILES / f"{name}.txt"
    summary.write_text(summarize(raw))
    raw.unlink()
    print(summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())

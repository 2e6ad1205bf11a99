"""Run every server through the same workloads, interleaved, and report medians and ratios.

    python3 benchmarks/run.py                  # full run (about 6 minutes), writes RESULTS.md
    python3 benchmarks/run.py --quick          # one short round, for a smoke test

Servers and load generator run on 127.0.0.1, pinned to different cores when there are two
(``taskset``). Only processes this script started are stopped, by PID. Results go to
``benchmarks/results/latest.json`` and ``latest.md``; a full run also rewrites
``benchmarks/RESULTS.md``. Ratios are to the ``websockets`` library's sync server.

Throughput depends on what else the machine runs; the server's own CPU time per operation
(read from ``/proc``) much less, so both are reported. A figure is marked when the load
generator used most of its core: the generator, not the server, bounded it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import jwt

HERE = Path(__file__).resolve().parent
NODE = HERE / "node"
SECRET = "benchmark-secret-of-32-bytes-min!"
ENV = {
    **os.environ,
    "WSAUTH_BENCH_SECRET": SECRET,
    "PYTHONUNBUFFERED": "1",
    "PYTHONPATH": f"{HERE}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
}

#: name -> command (PORT is filled in); every server implements the same behaviour.
SERVERS: dict[str, list[str]] = {
    "wsauth_sync": [sys.executable, str(HERE / "servers.py"), "wsauth", "PORT"],
    "wsauth_sync WSGI (gunicorn gthread)": [
        sys.executable,
        "-m",
        "gunicorn",
        "-k",
        "gthread",
        "--threads",
        "1100",
        "-w",
        "1",
        "--backlog",
        "1024",
        "-b",
        "127.0.0.1:PORT",
        "--log-level",
        "warning",
        "servers:wsauth_wsgi_app()",
    ],
    "websockets sync": [sys.executable, str(HERE / "servers.py"), "websockets", "PORT"],
    "simple-websocket (Werkzeug)": [
        sys.executable,
        str(HERE / "servers.py"),
        "simple-websocket",
        "PORT",
    ],
    "Node ws (noServer + upgrade)": ["node", str(NODE / "server.mjs"), "PORT"],
    "raw threaded TCP echo": [sys.executable, str(HERE / "servers.py"), "raw-tcp", "PORT"],
    # wsproto with nothing around it, a thread per connection (W1, W2, W6 only).
    "wsproto alone, threaded (echo floor)": [
        sys.executable,
        str(HERE / "servers.py"),
        "wsproto-alone",
        "PORT",
    ],
    # As users run it: the command line, INFO logging on (to a discarded stderr), the
    # default per-address and per-identity caps (so W5 is skipped; tokens vary by subject).
    "wsauth_sync CLI (python -m wsauth_sync echo)": [
        sys.executable,
        "-m",
        "wsauth_sync",
        "echo",
        "--port",
        "PORT",
        "--no-rate-limit",
        "--jwt-secret-file",
        "SECRET_FILE",
        "--max-connections",
        "4000",
    ],
}
# gunicorn's own cost per refusal: a bare WSGI app that answers 401 unchecked (W4 only).
SERVERS["gunicorn gthread alone (bare 401 app, W4 floor)"] = [
    *SERVERS["wsauth_sync WSGI (gunicorn gthread)"][:-1],
    "servers:refusing_wsgi_app()",
]
# The same, spending as much CPU in-process as the middleware's refusal (W4 only).
SERVERS["gunicorn gthread + 85 µs of Python per request (W4 calibration)"] = [
    *SERVERS["wsauth_sync WSGI (gunicorn gthread)"][:-1],
    "servers:spending_wsgi_app(85)",
]
# The middleware again, its own CPU per refusal timed inside gunicorn (W4 only).
MIDDLEWARE_TIMING = HERE / "results" / "w4-middleware-cpu"
SERVERS["wsauth_sync WSGI, middleware timed (W4 only)"] = [
    *SERVERS["wsauth_sync WSGI (gunicorn gthread)"][:-1],
    f"servers:timed_wsgi_app({str(MIDDLEWARE_TIMING)!r})",
]
CLI = "wsauth_sync CLI (python -m wsauth_sync echo)"
GUNICORN_ALONE = "gunicorn gthread alone (bare 401 app, W4 floor)"
CALIBRATION = "gunicorn gthread + 85 µs of Python per request (W4 calibration)"
TIMED = "wsauth_sync WSGI, middleware timed (W4 only)"
W4_ONLY = (GUNICORN_ALONE, CALIBRATION, TIMED)
RAW = "raw threaded TCP echo"
WSPROTO_ALONE = "wsproto alone, threaded (echo floor)"
BASELINE = "websockets sync"
WORKLOADS = ["W1", "W2", "W3", "W4", "W6", "W5"]
#: What one operation of each workload is, as the load generator counts it.
OPERATION = {
    "W1": "messages",
    "W2": "messages",
    "W3": "handshakes",
    "W4": "rejections",
    "W6": "messages",
}
#: Load generator CPU (cores) from which a figure counts as bounded by the generator.
LOADGEN_BOUND = 0.9
SECRET_FILE = HERE / "results" / "jwt-secret"


def pinned(command: list[str], core: int) -> list[str]:
    if (os.cpu_count() or 1) >= 2 and shutil.which("taskset"):
        return ["taskset", "-c", str(core), *command]
    return command


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def start(name: str) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    command = [
        str(port)
        if part == "PORT"
        else str(SECRET_FILE)
        if part == "SECRET_FILE"
        else part.replace("PORT", str(port))
        for part in SERVERS[name]
    ]
    process = subprocess.Popen(
        pinned(command, 0), env=ENV, cwd=HERE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 20
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return process, port
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                stop(process)
                raise RuntimeError(f"{name} did not start") from None
            time.sleep(0.05)


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)


def tree_rss(pid: int) -> int:
    """Resident bytes of a process and its children (gunicorn's workers)."""
    total = 0
    pending = [pid]
    while pending:
        current = pending.pop()
        try:
            status = Path(f"/proc/{current}/status").read_text()
            children = Path(f"/proc/{current}/task/{current}/children").read_text().split()
        except OSError:
            continue
        total += next(
            int(line.split()[1]) * 1024 for line in status.splitlines() if line.startswith("VmRSS:")
        )
        pending += [int(child) for child in children]
    return total


def tree_cpu(pid: int) -> float:
    """CPU seconds (user + system) used so far by a process and its children's threads."""
    total = 0.0
    pending = [pid]
    tick = os.sysconf("SC_CLK_TCK")
    while pending:
        current = pending.pop()
        try:
            fields = Path(f"/proc/{current}/stat").read_text().rpartition(")")[2].split()
            children = Path(f"/proc/{current}/task/{current}/children").read_text().split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / tick  # utime, stime
        pending += [int(child) for child in children]
    return total


def loadgen(options: dict[str, Any], timeout: float) -> dict[str, Any]:
    result = subprocess.run(
        pinned(["node", str(NODE / "loadgen.mjs"), json.dumps(options)], 1),
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=NODE,
    )
    if result.returncode != 0:
        raise RuntimeError(result.stderr)
    return dict(json.loads(result.stdout.strip().splitlines()[-1]))


def idle_connections(
    process: subprocess.Popen[bytes], port: int, token: str, count: int
) -> dict[str, Any]:
    time.sleep(0.5)
    before = tree_rss(process.pid)
    generator = subprocess.Popen(
        pinned(
            [
                "node",
                str(NODE / "loadgen.mjs"),
                json.dumps({"workload": "W5", "port": port, "token": token, "connections": count}),
            ],
            1,
        ),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=NODE,
    )
    try:
        assert generator.stdout is not None and generator.stdin is not None
        held = json.loads(generator.stdout.readline())
        time.sleep(1.0)  # let the server settle with every connection open
        after = tree_rss(process.pid)
        generator.stdin.write("done\n")
        generator.stdin.flush()
        generator.wait(timeout=60)
    finally:
        stop(generator)  # type: ignore[arg-type]
    per = (after - before) / held["held"] if held["held"] else None
    return {
        "held": held["held"],
        "failures": held["failures"],
        "rss_before": before,
        "rss_after": after,
        "rss_per_connection": per,
    }


def timed_loadgen(
    process: subprocess.Popen[bytes], options: dict[str, Any], seconds: float
) -> dict[str, Any]:
    """One workload, with the server's CPU seconds spent during it."""
    before = tree_cpu(process.pid)
    result = loadgen(options, timeout=seconds + 60)
    result["server_cpu"] = tree_cpu(process.pid) - before
    return result


def measure(
    name: str, tokens: list[str], seconds: float, idle: int, workloads: list[str]
) -> dict[str, Any]:
    results: dict[str, Any] = {}
    if name == TIMED:
        MIDDLEWARE_TIMING.unlink(missing_ok=True)
    process, port = start(name)
    try:
        if name == RAW:
            for workload in [w for w in ("W1", "W2") if w in workloads]:
                results[workload] = timed_loadgen(
                    process,
                    {"workload": workload, "port": port, "raw": True, "seconds": seconds},
                    seconds,
                )
            return results
        if name in W4_ONLY:
            workloads = [w for w in workloads if w == "W4"]
        if name == WSPROTO_ALONE:
            workloads = [w for w in workloads if w in ("W1", "W2", "W6")]
        for workload in [w for w in WORKLOADS[:-1] if w in workloads]:
            results[workload] = timed_loadgen(
                process,
                {
                    "workload": workload,
                    "port": port,
                    "token": tokens[0],
                    "seconds": seconds,
                    "tokens": tokens if name == CLI else None,
                },
                seconds,
            )
    finally:
        stop(process)
    if name == TIMED and "W4" in results and MIDDLEWARE_TIMING.exists():
        results["W4"]["middleware_us"] = float(MIDDLEWARE_TIMING.read_text().split()[1])
    if name in (CLI, WSPROTO_ALONE, *W4_ONLY) or "W5" not in workloads:
        return results  # its per-address cap refuses 1000 idle connections from one address
    process, port = start(name)  # a fresh process, so RSS growth is the idle sockets only
    try:
        results["W5"] = idle_connections(process, port, tokens[0], idle)
    finally:
        stop(process)
    return results


def figures(run: dict[str, Any], seconds: float) -> dict[str, float | None]:
    """The headline number of each workload for one run."""
    out: dict[str, float | None] = {}
    for workload, operation in OPERATION.items():
        if workload in run and run[workload].get("server_cpu"):
            out[f"{workload} ops/CPU-s"] = run[workload][operation] / run[workload]["server_cpu"]
            out[f"{workload} µs CPU/op"] = 1e6 / out[f"{workload} ops/CPU-s"]  # type: ignore
        if workload in run:
            out[f"{workload} loadgen CPU"] = run[workload]["loadgen_cpu"]
    if "W1" in run:
        out["W1 msg/s"] = run["W1"]["messages"] / seconds
        out["W1 p50 ms"] = run["W1"]["p50_ms"]
        out["W1 p99 ms"] = run["W1"]["p99_ms"]
        out["loadgen CPU (W1)"] = run["W1"]["loadgen_cpu"]
    if "W2" in run:
        out["W2 MB/s"] = run["W2"]["bytes"] / seconds / 1e6
        out["W2 msg/s"] = run["W2"]["messages"] / seconds
    if "W6" in run:
        out["W6 msg/s"] = run["W6"]["messages"] / seconds
    if "W3" in run:
        out["W3 handshakes/s"] = run["W3"]["handshakes"] / seconds
        out["W3 p99 ms"] = run["W3"]["p99_ms"]
        out["W3 failures"] = run["W3"]["failures"]
    if "W4" in run:
        out["W4 rejections/s"] = run["W4"]["rejections"] / seconds
        out["W4 failures"] = run["W4"]["failures"]
        if "middleware_us" in run["W4"]:
            out["W4 middleware µs"] = run["W4"]["middleware_us"]
    if "W5" in run:
        per = run["W5"]["rss_per_connection"]
        out["W5 KiB/conn"] = None if per is None else per / 1024
        out["W5 held"] = run["W5"]["held"]
    return out


def median_figures(runs: list[dict[str, float | None]]) -> dict[str, float | None]:
    keys = {key for run in runs for key in run}
    return {
        key: statistics.median(v)
        if (v := [r[key] for r in runs if r.get(key) is not None])
        else None
        for key in sorted(keys)
    }


#: Throughput column -> the workload whose load generator CPU says if it was bounded.
THROUGHPUT = {
    "W1 msg/s": "W1",
    "W1 p50 ms": None,
    "W1 p99 ms": None,
    "W2 MB/s": "W2",
    "W3 handshakes/s": "W3",
    "W3 p99 ms": None,
    "W4 rejections/s": "W4",
    "W5 KiB/conn": None,
    "W5 held": None,
    "W6 msg/s": "W6",
}
RATIOS = {"W1 msg/s", "W2 MB/s", "W3 handshakes/s", "W4 rejections/s", "W5 KiB/conn", "W6 msg/s"}
EFFICIENCY = [
    "W1 ops/CPU-s",
    "W1 µs CPU/op",
    "W2 ops/CPU-s",
    "W2 µs CPU/op",
    "W3 ops/CPU-s",
    "W3 µs CPU/op",
    "W4 ops/CPU-s",
    "W4 µs CPU/op",
    "W6 ops/CPU-s",
    "W6 µs CPU/op",
]


def _cell(value: float | None) -> str:
    return "-" if value is None else f"{value:,.2f}" if value < 100 else f"{value:,.0f}"


def _table(
    medians: dict[str, dict[str, float | None]],
    columns: list[str],
    ratios: set[str],
    bound_by: dict[str, str | None],
) -> list[str]:
    base = medians.get(BASELINE, {})
    lines = ["| server | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for name, figs in medians.items():
        row = []
        for column in columns:
            value = figs.get(column)
            text = _cell(value)
            if column in ratios and value is not None and base.get(column):
                text += f" ({value / base[column]:.2f}x)"  # type: ignore[operator]
            workload = bound_by.get(column)
            if (
                value is not None
                and workload
                and (figs.get(f"{workload} loadgen CPU") or 0) >= LOADGEN_BOUND
            ):
                text += " ‡"
            row.append(text)
        lines.append(f"| {name} | " + " | ".join(row) + " |")
    return lines


def report(medians: dict[str, dict[str, float | None]], meta: dict[str, Any]) -> str:
    lines = [
        f"Machine: {meta['machine']} (shared with other work; throughput moves with its "
        f"load, CPU per operation much less); {meta['repeats']} interleaved repeats of "
        f"{meta['seconds']} s per workload, medians; W5 holds {meta['idle']} idle "
        "connections. Ratios are to `websockets` sync (for KiB/conn, lower is better "
        "and the ratio is ours / theirs). ‡: the load generator used "
        f"≥ {LOADGEN_BOUND:.0%} of its core, so the figure is a lower bound.",
        "",
        "Throughput:",
        "",
    ]
    lines += _table(medians, list(THROUGHPUT), RATIOS, THROUGHPUT)
    lines += [
        "",
        "Server CPU per operation (operations per server CPU-second, user + system "
        "time of the server process; higher is better; and µs of CPU per operation):",
        "",
    ]
    lines += _table(
        medians,
        EFFICIENCY,
        {c for c in EFFICIENCY if "ops/" in c},
        {c: c.split()[0] for c in EFFICIENCY},
    )
    lines += ["", *floors(medians, meta.get("framing", {}))]
    return "\n".join(lines) + "\n"


def floors(medians: dict[str, dict[str, float | None]], framing: dict[str, float]) -> list[str]:
    """Each workload against the floor its dependencies set."""
    raw, ours = medians.get(RAW, {}), medians.get("wsauth_sync", {})
    wsgi = medians.get("wsauth_sync WSGI (gunicorn gthread)", {})
    alone = medians.get(GUNICORN_ALONE, {})
    lines = [
        "Floors, in µs of server CPU per operation. W1/W2: the raw threaded TCP echo of the "
        "same bytes (one thread per connection, the same system calls) plus wsproto alone "
        "decoding the client's frame and encoding the reply; W6: wsproto's cost per 64-byte "
        "fragment times 1,000 plus the raw I/O of W2. W4 through the WSGI middleware: "
        "gunicorn "
        "answering a bare 401 app. Dependency costs come from `benchmarks/frame_cost.py` "
        "in this run. Last columns: the same workload on wsproto driven directly by a "
        "thread per connection (`servers.py wsproto-alone`: no limits, deadlines or locks), "
        "what the dependency and the threads cost together in a real server.",
        "",
        "| workload | I/O floor | dependency work | floor | wsauth_sync | ratio "
        "| wsproto alone, threaded | ratio to it |",
        "|---|---|---|---|---|---|---|---|",
    ]
    bare_ws = medians.get(WSPROTO_ALONE, {})

    def row(
        label: str, io: float | None, work: float | None, mine: float | None, key: str = ""
    ) -> None:
        if io is not None and work is not None and mine is not None:
            threaded = bare_ws.get(key) if key else None
            beside = f"{threaded:.1f} | {mine / threaded:.2f}x" if threaded else "- | -"
            lines.append(
                f"| {label} | {io:.1f} | {work:.1f} | {io + work:.1f} | {mine:.1f} | "
                f"{mine / (io + work):.2f}x | {beside} |"
            )

    for workload, label, work in (("W1", "W1 32 B echo", "w1"), ("W2", "W2 64 KiB echo", "w2")):
        key = f"{workload} µs CPU/op"
        row(label, raw.get(key), framing.get(work), ours.get(key), key)
    fragment = framing.get("fragment")
    row(
        "W6 1,000 fragments",
        raw.get("W2 µs CPU/op"),
        fragment and fragment * 1000,
        ours.get("W6 µs CPU/op"),
        "W6 µs CPU/op",
    )
    row("W4 WSGI refusal", alone.get("W4 µs CPU/op"), 0.0, wsgi.get("W4 µs CPU/op"))
    spent, bare = medians.get(CALIBRATION, {}).get("W4 µs CPU/op"), alone.get("W4 µs CPU/op")
    mine = wsgi.get("W4 µs CPU/op")
    if spent is not None and bare is not None and mine is not None:
        lines += [
            "",
            f"W4 calibration: a bare app that first runs 85 µs of pure-Python loop costs "
            f"{spent - bare:.0f} µs more per refusal under gunicorn than the bare app; the "
            f"middleware costs {mine - bare:.0f} µs more, for a refusal that takes "
            f"{framing.get('WSGI refuse', float('nan')):.0f} µs in-process "
            "(`frame_cost.wsgi_refusal_cost`).",
        ]
    inside = medians.get(TIMED, {}).get("W4 middleware µs")
    if inside is not None and "WSGI refuse, evicted" in framing:
        lines += [
            "",
            f"W4 where the middleware's time goes: timed around the call inside gunicorn "
            f"(its own thread CPU, gunicorn's excluded) a refusal costs {inside:.0f} µs; "
            f"in-process the same call costs {framing['WSGI refuse']:.0f} µs with warm "
            f"caches and {framing['WSGI refuse, evicted']:.0f} µs when "
            f"{framing['evicted MiB']:.0f} MiB of memory are walked before each call "
            "(`frame_cost.wsgi_refusal_cost(evict=True)`).",
        ]
    if "h11 parse" in framing:
        lines += [
            "",
            "Handshakes without I/O (µs): h11 parsing the head "
            f"{framing['h11 parse']:.0f}, PyJWT checking a valid token "
            f"{framing['JWT valid']:.0f} and an invalid one {framing['JWT invalid']:.0f}; "
            "wsauth_sync's whole sans-I/O decision (parse, checks, verify, response "
            f"bytes): accept {framing['decision accept']:.0f}, refuse "
            f"{framing['decision refuse']:.0f}.",
        ]
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one short round (smoke test)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--idle", type=int, default=1000, help="connections held in W5")
    parser.add_argument("--only", action="append", help="run only these servers")
    parser.add_argument(
        "--workload",
        action="append",
        choices=WORKLOADS,
        help="run only these workloads (W5 needs its own process)",
    )
    args = parser.parse_args()
    if args.quick:
        args.repeats, args.seconds, args.idle = 1, 0.5, 20
    if not (NODE / "node_modules" / "ws").is_dir():
        subprocess.run(
            ["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"],
            cwd=NODE,
            check=True,
            timeout=300,
        )
    expires = int(time.time()) + 24 * 3600
    # Distinct subjects, for the CLI's default cap of connections per identity.
    tokens = [
        jwt.encode({"sub": f"bench-{n}", "exp": expires}, SECRET, algorithm="HS256")
        for n in range(64)
    ]
    SECRET_FILE.parent.mkdir(exist_ok=True)
    SECRET_FILE.touch(mode=0o600)
    SECRET_FILE.write_text(SECRET)
    names = args.only or list(SERVERS)
    runs: dict[str, list[dict[str, float | None]]] = {name: [] for name in names}
    raw: dict[str, list[dict[str, Any]]] = {name: [] for name in names}
    for repeat in range(args.repeats):
        order = names[repeat % len(names) :] + names[: repeat % len(names)]  # interleave
        for name in order:
            print(f"[{repeat + 1}/{args.repeats}] {name}", file=sys.stderr, flush=True)
            result = measure(name, tokens, args.seconds, args.idle, args.workload or WORKLOADS)
            raw[name].append(result)
            runs[name].append(figures(result, args.seconds))
    medians = {name: median_figures(runs[name]) for name in names}
    meta = {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}, Linux {platform.release()}",
        "repeats": args.repeats,
        "seconds": args.seconds,
        "idle": args.idle,
        "command": "python3 benchmarks/run.py" + (" --quick" if args.quick else ""),
        "framing": framing_costs(quick=args.quick, token=tokens[0]),
    }
    text = report(medians, meta)
    out = HERE / "results"
    out.mkdir(exist_ok=True)
    (out / "latest.json").write_text(
        json.dumps({"meta": meta, "medians": medians, "raw": raw}, indent=1)
    )
    (out / "latest.md").write_text(text)
    if not args.quick and not args.only and not args.workload:
        update_results(text, meta)
    print(text)
    return 0


def framing_costs(*, quick: bool, token: str) -> dict[str, float]:
    """The dependencies' own CPU per operation (no sockets, no threads), in µs."""
    sys.path.insert(0, str(HERE))
    import frame_cost

    count = 200 if quick else 5000
    return {
        "w1": frame_cost.wsproto_cost(frame_cost.SMALL, count),
        "w2": frame_cost.wsproto_cost(frame_cost.LARGE, count // 20),
        "fragment": frame_cost.fragment_cost(2 if quick else 20),
        **frame_cost.handshake_costs(SECRET, token, count // 5),
        "WSGI refuse": frame_cost.wsgi_refusal_cost(count // 5),
        "WSGI refuse, evicted": frame_cost.wsgi_refusal_cost(count // 5, evict=True),
        "evicted MiB": frame_cost.EVICT_BYTES / 2**20,
    }


def update_results(table: str, meta: dict[str, Any]) -> None:
    """Replace the generated part of RESULTS.md, keeping the written analysis around it."""
    results = HERE / "RESULTS.md"
    start, end = "<!-- results:start -->", "<!-- results:end -->"
    text = results.read_text() if results.exists() else f"# Benchmark results\n\n{start}\n{end}\n"
    before, _, rest = text.partition(start)
    _, _, after = rest.partition(end)
    stamp = time.strftime("%Y-%m-%d", time.gmtime())
    generated = f"{start}\nRun on {stamp} with `{meta['command']}`.\n\n{table}{end}"
    results.write_text(before + generated + after)


if __name__ == "__main__":
    sys.exit(main())

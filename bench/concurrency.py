"""Concurrent users on one worker: 1, 4 and 16 users, each submitting short texts through the JSON API on
loopback and polling until done (bounded loops), against `manage.py serve` with its embedded worker, the result
cache off and the rate limits off. Throughput (positions/s) and p50/p95 time to the first row and to done,
with the machine's float32 matmul rate measured in the same run.

Two modes side by side in one run, alternating per user count, each against its own server: one job at a time
(LENSWEB_SHARED_JOBS=1) and batches shared across jobs (LENSWEB_SHARED_JOBS, default 8: queued analyses of one
lens and option set share the worker's batches, owners taking turns).

Prints a table and writes bench/results/concurrency.md (or --out).

usage: python bench/concurrency.py [--lens demo|tiny] [--users 1,4,16] [--jobs-per-user N] [--shared-jobs N]
                                  [--out PATH]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.engine import matmul_gflops  # noqa: E402
from bench.web import Stack  # noqa: E402

TEXTS = [
    "The Eiffel Tower is in Paris.",
    "Bees make honey in the summer.",
    "She poured the tea and sat down.",
    "Rain fell on the quiet harbour.",
]
KEYS = """
import json
from django.contrib.auth import get_user_model
from lensweb.accounts import keys
users = [get_user_model().objects.get_or_create(username=f"user{i}")[0] for i in range(%(n)d)]
print(json.dumps([keys.create_key(user, "bench")[1] for user in users]))
"""


def call(base: str, key: str, method: str, path: str, body=None) -> dict:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(
        f"{base}/api/v1/{path}",
        data=data,
        method=method,
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=600) as response:
        return json.loads(response.read())


def one_user(base: str, key: str, jobs: int, out: list) -> None:
    """Submit, then follow the job's event stream (as a program would; polling would take the embedded worker's
    CPU): the first `rows` event is the first row, the final event the end."""
    for i in range(jobs):
        text = TEXTS[(hash(key) + i) % len(TEXTS)]
        started = time.perf_counter()
        job = call(base, key, "POST", "analyses", {"text": text, "options": {"salience": False}})
        first, event, data = None, None, {}
        request = urllib.request.Request(
            f"{base}/api/v1/analyses/{job['id']}/events", headers={"Authorization": f"Bearer {key}"}
        )
        with urllib.request.urlopen(request, timeout=600) as stream:
            for raw in stream:
                line = raw.decode().rstrip("\n")
                if line.startswith("event:"):
                    event = line.split(":", 1)[1].strip()
                elif line.startswith("data:"):
                    if event == "rows" and first is None:
                        first = time.perf_counter() - started
                    if event in ("done", "failed", "cancelled"):
                        data = json.loads(line.split(":", 1)[1])
                        break
        now = time.perf_counter() - started
        if event != "done":
            raise RuntimeError(f"job {job['id']} ended {event}: {data.get('error')}")
        total = data["progress"]["total"]
        out.append({"first": first if first is not None else now, "done": now, "positions": total})


def run(base: str, keys: list[str], jobs: int) -> dict:
    results: list = []
    threads = [threading.Thread(target=one_user, args=(base, key, jobs, results)) for key in keys]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - started
    firsts, dones = [r["first"] for r in results], [r["done"] for r in results]
    return {
        "users": len(keys),
        "jobs": len(results),
        "positions_per_s": sum(r["positions"] for r in results) / wall,
        "first_p50": statistics.median(firsts),
        "first_p95": percentile(firsts, 95),
        "done_p50": statistics.median(dones),
        "done_p95": percentile(dones, 95),
        "wall": wall,
    }


def percentile(values: list[float], p: int) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--lens", choices=("demo", "tiny"), default="demo")
    parser.add_argument("--users", default="1,4,16")
    parser.add_argument("--jobs-per-user", type=int, default=2)
    parser.add_argument("--shared-jobs", type=int, default=8, help="LENSWEB_SHARED_JOBS of the shared mode")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "concurrency.md"))
    args = parser.parse_args()
    counts = [int(n) for n in args.users.split(",")]
    peak = matmul_gflops()
    directory = Path(tempfile.mkdtemp(prefix="lensweb-concurrency-"))
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "DATABASE_URL")}
    env.update(
        DJANGO_SETTINGS_MODULE="lensweb.settings.base",
        SECRET_KEY="concurrency-bench",
        LENSWEB_RESULT_CACHE="false",  # every job computes
        LENSWEB_SUBMIT_RATE="",
        LENSWEB_API_RATE="",
        LENSWEB_MAX_QUEUED_PER_USER="100",
    )
    if args.lens == "tiny":
        from tests.tinylens import build_tiny_lens

        tiny = build_tiny_lens(directory / "lens")
        registry = directory / "lenses.toml"
        registry.write_text(
            f'[[lens]]\nid = "tiny"\nname = "tiny"\ncheckpoint = "{tiny.checkpoint}"\nbase_model = "{tiny.base}"\n'
        )
        env["LENSWEB_LENS_REGISTRY"] = str(registry)
    modes = {"one job at a time": 1, "shared batches": args.shared_jobs}
    rows = []
    with contextlib.ExitStack() as running:
        served = {}
        for mode, shared_jobs in modes.items():  # both up at once: one is idle while the other is measured
            own = {
                **env,
                "DATABASE_URL": f"sqlite:///{directory / f'bench-{shared_jobs}.sqlite3'}",
                "LENSWEB_SHARED_JOBS": str(shared_jobs),
            }
            stack = running.enter_context(Stack(mode, own))
            done = subprocess.run(
                [sys.executable, "manage.py", "shell", "-c", KEYS % {"n": max(counts)}],
                cwd=ROOT,
                env=stack.env,
                capture_output=True,
                text=True,
                check=True,
            )
            keys = json.loads(done.stdout.strip().splitlines()[-1])
            one_user(stack.base, keys[0], 1, [])  # warm-up: the worker loads the lens
            served[mode] = (stack, keys)
        for n in counts:
            for mode, (stack, keys) in served.items():
                rows.append({"mode": mode, **run(stack.base, keys[:n], args.jobs_per_user)})
                print(rows[-1], flush=True)
    lines = [
        "# Concurrent users on one worker (bench/concurrency.py)",
        "",
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; float32 matmul rate "
        f"measured in the same run: {peak:.1f} GFLOP/s. `manage.py serve` with its embedded worker (SQLite), "
        f"lens `{args.lens}`, result cache off, k = 1, salience off; each user submits {args.jobs_per_user} short "
        "texts (6–9 tokens) one after another through the API and follows each job's event stream. Two servers, "
        f"one per mode (LENSWEB_SHARED_JOBS = 1 and {args.shared_jobs}), measured alternately per user count.",
        "",
        "| mode | users | jobs | positions/s | first row p50 s | first row p95 s | done p50 s | done p95 s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['mode']} | {r['users']} | {r['jobs']} | {r['positions_per_s']:.1f} | {r['first_p50']:.2f} | "
            f"{r['first_p95']:.2f} | {r['done_p50']:.2f} | {r['done_p95']:.2f} |"
        )
    by = {(r["mode"], r["users"]): r for r in rows}
    lines += [
        "",
        "| users | positions/s, shared ÷ one at a time | first row p50, one at a time ÷ shared |",
        "|---:|---:|---:|",
    ]
    for n in counts:
        one, shared = by[("one job at a time", n)], by[("shared batches", n)]
        lines.append(
            f"| {n} | {shared['positions_per_s'] / one['positions_per_s']:.2f}× | "
            f"{one['first_p50'] / shared['first_p50']:.2f}× |"
        )
    lines += [
        "",
        "One job at a time, a job waits for every job ahead of it; with shared batches the queued jobs of one lens "
        "and option set join the running batches, each starting with a small share, so a newcomer's first row "
        "comes after one batch rather than after the jobs ahead of it.",
    ]
    report = "\n".join(lines) + "\n"
    print(report)
    Path(args.out).write_text(report)


if __name__ == "__main__":
    main()

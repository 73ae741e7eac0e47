"""Web latency benchmark: submit -> first row visible -> last row visible, in Chromium (Playwright), against
the engine alone on the same texts; for the embedded default (SQLite + in-memory layer, the worker inside
`manage.py serve`) and for PostgreSQL + Redis (`serve` plus one `manage.py runworker lens-inference`).

"Visible" is measured in the page: a MutationObserver notes when the new card's first row and its last row
(rows == positions) are in the DOM, from the click on "Analyse". The engine alone is timed from analyze() to
its first on_batch and to its return, with the lens loaded and warm, like the worker's.

Prints a table and writes bench/results/web.md.

usage: python bench/web.py [--demo] [--rows-budget N] [--repeats N] [--skip-postgres]
"""

from __future__ import annotations

import argparse
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.live import CHROMIUM, CHROMIUM_ARGS, free_port, wait_http  # noqa: E402

GOLDEN = ROOT.parent / "shared" / "golden"
PG_URL = os.environ.get("LENSWEB_BENCH_POSTGRES_URL", "postgres://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("LENSWEB_BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
TEXTS = [
    "The capital of France is Paris.",
    "The old lighthouse keeper climbed the spiral stairs every evening, carrying a brass lantern and a "
    "thermos of sweet tea.",
    "The old lighthouse keeper climbed the spiral stairs every evening, carrying a brass lantern and a thermos "
    "of sweet tea. From the top he could see the fishing boats returning to the harbour, their lights "
    "flickering like fireflies against the darkening sea.",
]

MEASURE_JS = """
(text) => new Promise((resolve, reject) => {
  const top = () => document.querySelector('#jobs section.job');
  const before = top() && top().id;
  const t0 = performance.now();
  let first = null, last = null;
  const check = () => {
    const card = top();
    if (!card || card.id === before) return;
    const now = performance.now() - t0;
    const rows = card.querySelectorAll('tbody tr').length;
    const bar = card.querySelector('progress');
    if (first === null && rows > 0) first = now;
    if (last === null && bar && rows >= Number(bar.max)) last = now;
    const failed = card.querySelector('.badge-failed, .badge-cancelled');
    if (failed) { observer.disconnect(); reject(new Error('job ' + card.id + ' ended ' + failed.textContent)); }
    if (card.querySelector('.badge-done') && last !== null) {
      observer.disconnect();
      resolve({first, last, rows});
    }
  };
  const observer = new MutationObserver(check);
  observer.observe(document.getElementById('live'), {childList: true, subtree: true, attributes: true});
  document.querySelector('#id_text').value = text;
  document.querySelector('#analysis-form button[type=submit]').click();
})
"""


def tiny_registry(directory: Path) -> Path:
    path = directory / "lenses.toml"
    path.write_text(
        f'[[lens]]\nid = "tiny"\nname = "Tiny golden lens"\n'
        f'checkpoint = "{GOLDEN / "checkpoints" / "tiny_patch2_percur.pt"}"\n'
        f'base_model = "{GOLDEN / "tiny-llama"}"\ndefault = true\n'
    )
    return path


def engine_alone(texts, repeats) -> dict[str, list[tuple[float, float, int]]]:
    """(first row s, last row s, rows) per run, lens loaded and warmed up once, as in a worker."""
    from inference.analysis import analyze
    from inference.lens import load_lens
    from inference.registry import load_registry
    from inference.types import AnalysisInput, AnalysisOptions

    lens = load_lens(load_registry().default)
    analyze(lens, AnalysisInput(text=texts[0]), AnalysisOptions())  # warm-up
    results = {}
    for text in texts:
        runs = []
        for _ in range(repeats):
            first = []
            t0 = time.perf_counter()
            result = analyze(
                lens,
                AnalysisInput(text=text),
                AnalysisOptions(),
                on_batch=lambda update, first=first, t0=t0: first or first.append(time.perf_counter() - t0),
            )
            runs.append((first[0], time.perf_counter() - t0, len(result.rows)))
        results[text] = runs
    return results


class Stack:
    """A served lensweb: `serve` (+ a `runworker` when Redis carries the messages)."""

    def __init__(self, name: str, env: dict, workers: int = 0):
        self.name, self.env, self.procs = name, env, []
        self.port = free_port()
        self.env.update(HOST="127.0.0.1", PORT=str(self.port), ALLOWED_HOSTS="127.0.0.1,localhost")
        self.workers = workers

    def manage(self, *args):
        subprocess.run(
            [sys.executable, "manage.py", *args], cwd=ROOT, env=self.env, check=True, capture_output=True
        )

    def __enter__(self):
        self.manage("migrate", "--noinput", "-v0")
        self.manage("ensure_demo_user")
        commands = [["serve"]] + [["runworker", "lens-inference"]] * self.workers
        for command in commands:
            self.procs.append(
                subprocess.Popen(
                    [sys.executable, "manage.py", *command],
                    cwd=ROOT,
                    env=self.env,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )
        self.base = f"http://127.0.0.1:{self.port}"
        wait_http(f"{self.base}/readyz", timeout=300)
        return self

    def __exit__(self, *exc):
        for proc in self.procs:
            proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()


def web_latency(base: str, texts, repeats) -> dict[str, list[tuple[float, float, int]]]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page()
        page.set_default_timeout(600_000)
        page.goto(f"{base}/")
        page.fill("#id_username", "demo")
        page.fill("#id_password", os.environ.get("LENSWEB_DEMO_PASSWORD", "lensweb-demo"))
        page.click("button[type=submit]")
        page.wait_for_selector("#socket-state.live")
        page.evaluate(MEASURE_JS, texts[0])  # warm-up: the worker loads the lens on its first job
        results = {}
        for text in texts:
            runs = []
            for _ in range(repeats):
                page.wait_for_timeout(300)  # let the form swap settle
                r = page.evaluate(MEASURE_JS, text)
                runs.append((r["first"] / 1000, r["last"] / 1000, r["rows"]))
            results[text] = runs
        browser.close()
    return results


def postgres_database():
    import psycopg

    name = f"lensweb_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(PG_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base = PG_URL.rsplit("/", 1)[0]

    def drop():
        with psycopg.connect(PG_URL, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    return f"{base}/{name}", drop


def median(values):
    return statistics.median(values)


def main():
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--demo", action="store_true", help="the demo lens (SmolLM2-135M; slow) instead of the tiny one"
    )
    parser.add_argument("--rows-budget", type=int, default=4, help="rows per batch (LENSWEB_ROWS_BUDGET)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--skip-postgres", action="store_true", help="only the embedded default")
    args = parser.parse_args()

    load_before = os.getloadavg()[0]
    tmp = Path(tempfile.mkdtemp(prefix="lensweb-bench-"))
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("REDIS_URL", "DATABASE_URL", "DJANGO_SETTINGS_MODULE")
    }
    # The result cache off: repeated runs of one text must compute (bench/cache.py measures hits).
    env.update(
        LENSWEB_ROWS_BUDGET=str(args.rows_budget),
        LENSWEB_ENGINE="inference",
        SECRET_KEY="bench",
        LENSWEB_RESULT_CACHE="false",
    )
    if not args.demo:
        env["LENSWEB_LENS_REGISTRY"] = str(tiny_registry(tmp))
    os.environ.update({k: env[k] for k in ("LENSWEB_ROWS_BUDGET", "LENSWEB_LENS_REGISTRY") if k in env})
    lens_name = "demo (SmolLM2-135M, layer 8)" if args.demo else "tiny golden lens (tiny_patch2_percur)"

    print(f"engine alone, {lens_name} ...", flush=True)
    measured = {"engine alone": engine_alone(TEXTS, args.repeats)}
    print("embedded default (SQLite + in-memory layer, worker in serve) ...", flush=True)
    with Stack("embedded", {**env, "DATABASE_URL": f"sqlite:///{tmp / 'bench.sqlite3'}"}) as stack:
        measured["embedded"] = web_latency(stack.base, TEXTS, args.repeats)
    if not args.skip_postgres:
        print("PostgreSQL + Redis (serve + 1 runworker) ...", flush=True)
        url, drop = postgres_database()
        try:
            pg_env = {
                **env,
                "DATABASE_URL": url,
                "REDIS_URL": REDIS_URL,
                "REDIS_PREFIX": f"bench-{uuid.uuid4().hex[:8]}",
            }
            with Stack("postgres+redis", pg_env, workers=1) as stack:
                measured["postgres + redis"] = web_latency(stack.base, TEXTS, args.repeats)
        finally:
            drop()

    engine = measured["engine alone"]
    lines = [
        "| path | text | positions | first row s | last row s | first-row overhead ms | last-row overhead ms |",
        "|---|---|---|---|---|---|---|",
    ]
    for path, results in measured.items():
        for i, text in enumerate(TEXTS):
            runs = results[text]
            first, last = median([r[0] for r in runs]), median([r[1] for r in runs])
            e_first, e_last = median([r[0] for r in engine[text]]), median([r[1] for r in engine[text]])
            overhead = (
                ""
                if path == "engine alone"
                else f"{(first - e_first) * 1000:+.0f} | {(last - e_last) * 1000:+.0f}"
            )
            lines.append(
                f"| {path} | T{i + 1} | {runs[0][2]} | {first:.3f} | {last:.3f} | {overhead or '– | –'} |"
            )
    header = [
        "# Web latency benchmark",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}; "
        f"1-minute load average {load_before:.1f} before and {os.getloadavg()[0]:.1f} after the run "
        "(the machine is shared: above the core count, the numbers are noisy). "
        f"Lens: {lens_name}; default options (k=1, salience on); {args.rows_budget} rows per batch; "
        f"median of {args.repeats} run(s) after a warm-up job. Chromium measures in the page, from the click "
        "on Analyse to the new card's first row and to its last row in the DOM.",
        "",
        "Texts: " + "; ".join(f"T{i + 1} = {text!r}" for i, text in enumerate(TEXTS)),
        "",
    ]
    footer = [
        "",
        "Overhead = web path minus the engine alone on the same text: the form POST, tokenising in the web "
        "process, the job row, the doorbell, the claim, persisting each batch before announcing it, rendering "
        "the row fragments, the channel layer and the browser's swap. `python bench/web.py` reruns it.",
    ]
    report = "\n".join(header + lines + footer) + "\n"
    print(report)
    out = ROOT / "bench" / "results" / "web.md"
    out.write_text(report)
    print(f"wrote {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()

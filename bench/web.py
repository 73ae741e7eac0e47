"""Web latency benchmark: submit -> first row visible -> last row visible, in Chromium (Playwright), against
the engine alone on the same texts; for the embedded default (SQLite + in-memory layer, the worker inside
`manage.py serve`) and for PostgreSQL + Redis (`serve` plus one `manage.py runworker lens-inference`).

"Visible" is measured in the page: a MutationObserver notes when the new card's first row and its last row
(rows == positions) are in the DOM, from the click on "Analyse". The engine alone is timed from analyze() to
its first on_batch and to its return, with the lens loaded and warm, like the worker's.

Prints a table and writes bench/results/web.md.

A second table, the time to the first row: a 64-token text at k = 8 with the lens' default rows budget,
in Chromium against the embedded default (the first job after a start, which loads the lens, then warm
ones), beside the engine alone in the same run: its time for one position, its first row with the growing
batches (2 positions first) and with one batch of the whole budget (as before they grew). It also times the
first form POST after a start, which must not wait for a model.

usage: python bench/web.py [--demo] [--rows-budget N] [--repeats N] [--skip-postgres] [--first-row-only]
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
([text, k]) => new Promise((resolve, reject) => {
  const top = () => document.querySelector('#jobs section.job');
  const before = top() && top().id;
  const t0 = performance.now();
  let first = null, last = null, shown = null;
  const check = () => {
    const card = top();
    if (!card || card.id === before) return;
    const now = performance.now() - t0;
    if (shown === null) shown = now;
    const rows = card.querySelectorAll('tbody tr').length;
    const bar = card.querySelector('progress');
    if (first === null && rows > 0) first = now;
    if (last === null && bar && rows >= Number(bar.max)) last = now;
    const failed = card.querySelector('.badge-failed, .badge-cancelled');
    if (failed) { observer.disconnect(); reject(new Error('job ' + card.id + ' ended ' + failed.textContent)); }
    // a card shows at most LENSWEB_LIVE_CARD_ROWS rows: past that, done is the last row's moment
    if (card.querySelector('.badge-done') && (last !== null || card.querySelector('.job-more a'))) {
      if (last === null) last = now;
      observer.disconnect();
      resolve({first, last, rows, shown});
    }
  };
  const observer = new MutationObserver(check);
  observer.observe(document.getElementById('live'), {childList: true, subtree: true, attributes: true});
  document.querySelector('#id_text').value = text;
  document.querySelector('#id_best_of_k').value = String(k);
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
    from inference.engine import load
    from inference.registry import load_registry
    from inference.types import AnalysisInput, AnalysisOptions

    lens = load(load_registry().default)
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


def signed_in_page(browser, base: str):
    """The analysis page, signed in as the demo user, its socket live."""
    page = browser.new_page()
    page.set_default_timeout(600_000)
    page.goto(f"{base}/")
    page.fill("#id_username", "demo")
    page.fill("#id_password", os.environ.get("LENSWEB_DEMO_PASSWORD", "lensweb-demo"))
    page.click("button[type=submit]")
    page.wait_for_selector("#socket-state.live")
    return page


def web_latency(base: str, texts, repeats) -> dict[str, list[tuple[float, float, int]]]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = signed_in_page(browser, base)
        page.evaluate(MEASURE_JS, [texts[0], 1])  # warm-up: the worker loads the lens on its first job
        results = {}
        for text in texts:
            runs = []
            for _ in range(repeats):
                page.wait_for_timeout(300)  # let the form swap settle
                r = page.evaluate(MEASURE_JS, [text, 1])
                runs.append((r["first"] / 1000, r["last"] / 1000, r["rows"]))
            results[text] = runs
        browser.close()
    return results


# Cut to 64 tokens of the lens' tokenizer (bench/engine.py's prose, as the engine benchmark does).
FIRST_ROW_TOKENS = 64
FIRST_ROW_K = 8


def engine_first_row(repeats: int) -> dict:
    """The engine alone on a 64-token text at k = 8, default rows budget: one position's time, and the first
    row with growing batches against one whole-budget first batch."""
    from inference.analysis import analyze, default_rows_budget
    from inference.engine import load
    from inference.registry import load_registry
    from inference.types import AnalysisInput, AnalysisOptions

    os.environ.pop("LENSWEB_ROWS_BUDGET", None)  # the lens' own budget, as a worker without the setting
    from bench.engine import text_of_tokens

    lens = load(load_registry().default)
    opts = AnalysisOptions(best_of_k=FIRST_ROW_K)
    text = text_of_tokens(lens.tokenizer, FIRST_ROW_TOKENS)
    inp = AnalysisInput(text=text)
    analyze(lens, inp, opts, positions=[8])  # warm-up
    budget = default_rows_budget(lens)
    out = {"budget": budget, "one": [], "grown": [], "whole": [], "text": text}
    for _ in range(repeats):
        t0 = time.perf_counter()
        result = analyze(lens, inp, opts, positions=[8])
        out["one"].append(time.perf_counter() - t0)
        for name, first_batch in (("grown", None), ("whole", budget)):
            first = []
            t0 = time.perf_counter()
            analyze(
                lens,
                inp,
                opts,
                first_batch=first_batch,
                on_batch=lambda update, first=first, t0=t0: first or first.append(time.perf_counter() - t0),
                should_cancel=lambda first=first: bool(first),  # the first row is all this measures
            )
            out[name].append(first[0])
    out["tokens"] = result.metadata["n_tokens"]
    from bench.engine import matmul_gflops

    out["gflops"] = matmul_gflops()
    return out


def web_first_row(env: dict, tmp: Path, repeats: int, text: str) -> dict:
    """A fresh embedded server: the first form POST's time and the first job (cold: it loads the lens), then
    warm jobs, each to its first row, in Chromium."""
    from playwright.sync_api import sync_playwright

    environ = {k: v for k, v in env.items() if k != "LENSWEB_ROWS_BUDGET"}  # the lens' default budget
    environ["DATABASE_URL"] = f"sqlite:///{tmp / 'first-row.sqlite3'}"
    out = {"cold": None, "warm": [], "post": None}
    with Stack("embedded", environ) as stack, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = signed_in_page(browser, stack.base)
        with page.expect_response(lambda r: r.request.method == "POST") as answer:
            r = page.evaluate(MEASURE_JS, [text, FIRST_ROW_K])
        answer.value.finished()
        timing = answer.value.request.timing
        out["post"] = (timing["responseEnd"] - timing["requestStart"]) / 1000
        out["cold"] = r["first"] / 1000
        for _ in range(repeats):
            page.wait_for_timeout(300)
            out["warm"].append(page.evaluate(MEASURE_JS, [text, FIRST_ROW_K])["first"] / 1000)
        browser.close()
    return out


def first_row_report(lens_name: str, engine: dict, web: dict, repeats: int) -> list[str]:
    one, grown, whole = (median(engine[k]) for k in ("one", "grown", "whole"))
    warm = median(web["warm"])
    return [
        "",
        "## Time to the first row",
        "",
        f"{lens_name}; a {engine['tokens']}-token text at k = {FIRST_ROW_K}, salience on, the lens' default "
        f"rows budget ({engine['budget']} rows: {engine['budget'] // FIRST_ROW_K} positions a batch); medians "
        f"of {repeats}, engine and web in the same run; float32 matmul rate measured in it (2048×2048 "
        f"torch.matmul): {engine['gflops']:.1f} GFLOP/s.",
        "",
        "| what | seconds | × one position |",
        "|---|---|---|",
        f"| engine alone: one position | {one:.3f} | 1.0 |",
        f"| engine alone: first row, growing batches (2 positions first) | {grown:.3f} | {grown / one:.1f} |",
        f"| engine alone: first row, one whole-budget first batch (before) | {whole:.3f} | {whole / one:.1f} |",
        f"| web (embedded): first row of a warm job, from the click | {warm:.3f} | {warm / one:.1f} |",
        f"| web (embedded): first row of the first job after a start (loads the lens) | {web['cold']:.3f} | "
        f"{web['cold'] / one:.1f} |",
        f"| web (embedded): the first form POST after a start | {web['post']:.3f} | – |",
    ]


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
    parser.add_argument("--first-row-only", action="store_true", help="only the time-to-first-row table")
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
    if "LENSWEB_LENS_REGISTRY" in env:
        os.environ["LENSWEB_LENS_REGISTRY"] = env["LENSWEB_LENS_REGISTRY"]
    lens_name = "demo (SmolLM2-135M, layer 8)" if args.demo else "tiny golden lens (tiny_patch2_percur)"

    print(f"time to the first row, {lens_name} ...", flush=True)
    engine = engine_first_row(args.repeats)
    first_row = first_row_report(
        lens_name, engine, web_first_row(env, tmp, args.repeats, engine["text"]), args.repeats
    )
    os.environ.update({k: env[k] for k in ("LENSWEB_ROWS_BUDGET", "LENSWEB_LENS_REGISTRY") if k in env})
    out = ROOT / "bench" / "results" / "web.md"
    if args.first_row_only:
        kept = out.read_text().split("\n## Time to the first row")[0].rstrip("\n") if out.exists() else ""
        out.write_text(kept + "\n" + "\n".join(first_row) + "\n")
        print("\n".join(first_row))
        print(f"wrote {out.relative_to(ROOT)}")
        return
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
    report = "\n".join(header + lines + footer + first_row) + "\n"
    print(report)
    out.write_text(report)
    print(f"wrote {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()

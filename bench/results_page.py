"""How heavy is the results page of a 1,000-token analysis? A real analysis by the tiny golden lens (best
of 4 with candidates kept, salience, KL and logit lens: every field a row can carry) is stored in a
temporary site; then

- server: render time of each view (median of 5, Django test client in this process) and page weight
  (raw and gzip);
- browser: Debian's Chromium loading each view from `manage.py serve` (DOMContentLoaded, load, and
  time to interactive = until the sort header answers a click), then the latency of a sort, of switching
  to the transposed view, and of hovering a word until its tooltip shows.

Prints a table and writes bench/results/results-page.md.

usage: python bench/results_page.py [--tokens 1000]
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

sys.path.insert(0, str(Path(__file__).resolve().parent))

from live import CHROMIUM, CHROMIUM_ARGS, ROOT, live_site, login  # noqa: E402

GOLDEN = ROOT.parent / "shared" / "golden"
PARAGRAPH = (
    "The old lighthouse keeper climbed the spiral stairs every evening, carrying a brass lantern and a thermos "
    "of sweet tea. From the top he could see the fishing boats returning to the harbour, their lights "
    "flickering like fireflies against the darkening sea. He wrote each name in a worn leather notebook. "
)


def compute(n_tokens: int):
    from inference.analysis import analyze
    from inference.engine import load
    from inference.registry import LensSpec
    from inference.types import AnalysisInput, AnalysisOptions

    lens = load(
        LensSpec(
            id="tiny",
            name="Tiny golden lens",
            checkpoint=str(GOLDEN / "checkpoints" / "tiny_patch2_percur.pt"),
            base_model=str(GOLDEN / "tiny-llama"),
        )
    )
    ids = lens.tokenizer(PARAGRAPH * (n_tokens // 40 + 2), add_special_tokens=False)["input_ids"][:n_tokens]
    text = lens.tokenizer.decode(ids)
    options = AnalysisOptions(best_of_k=4, salience=True, kl=True, logit_lens=True, keep_candidates=True)
    started = time.perf_counter()
    result = analyze(lens, AnalysisInput(text=text), options)
    print(f"analysed {len(result.rows)} positions in {time.perf_counter() - started:.1f} s")
    return text, result, options.to_dict()


def store(text, result, options):
    from django.contrib.auth import get_user_model

    from lensweb.analyses.models import Analysis, AnalysisRow

    demo = get_user_model().objects.get(username="demo")
    mses = [r["mse"] for r in result.rows]
    analysis = Analysis.objects.create(
        owner=demo,
        lens_id="tiny",
        input={"text": text},
        options=options,
        status="done",
        metadata={**result.metadata, "summary": {"rows": len(mses), "mean_mse": sum(mses) / len(mses)}},
        timings=result.timings,
        progress_done=len(mses),
        progress_total=len(mses),
    )
    AnalysisRow.objects.bulk_create(
        [AnalysisRow(analysis=analysis, position=r["position"], data=r) for r in result.rows], batch_size=500
    )
    return analysis


VIEWS = [
    ("table", ""),
    ("table, sorted by mse", "?sort=mse&dir=desc"),
    ("transposed", "?view=transposed"),
    ("full text", "?view=fulltext&metric=mse"),
]


def server_side(analysis) -> list[dict]:
    from django.contrib.auth import get_user_model
    from django.test import Client

    client = Client()
    client.force_login(get_user_model().objects.get(username="demo"))
    out = []
    for name, query in VIEWS:
        url = f"/analyses/{analysis.pk}/{query}"
        client.get(url)  # warm: templates compiled, caches filled
        times, body = [], b""
        for _ in range(5):
            started = time.perf_counter()
            response = client.get(url)
            times.append(time.perf_counter() - started)
            assert response.status_code == 200, response.status_code
            body = response.content
        out.append(
            {
                "view": name,
                "ms": statistics.median(times) * 1000,
                "kb": len(body) / 1024,
                "gzip_kb": len(gzip.compress(body)) / 1024,
            }
        )
    for name, path in (("export.json", "export.json"), ("export.csv", "export.csv")):
        started = time.perf_counter()
        response = client.get(f"/analyses/{analysis.pk}/{path}")
        out.append(
            {
                "view": name,
                "ms": (time.perf_counter() - started) * 1000,
                "kb": len(response.content) / 1024,
                "gzip_kb": len(gzip.compress(response.content)) / 1024,
            }
        )
    return out


def browser_side(site, analysis) -> tuple[list[dict], dict]:
    from playwright.sync_api import sync_playwright

    loads, interactions = [], {}
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_context(viewport={"width": 1400, "height": 900}).new_page()
        page.set_default_timeout(120_000)
        login(page, site)
        for name, query in VIEWS:
            samples = []
            for _ in range(3):
                started = time.perf_counter()
                page.goto(site.url(f"/analyses/{analysis.pk}/{query}"), wait_until="load")
                page.wait_for_function("window.htmx && document.querySelector('#results-controls')")
                interactive = (time.perf_counter() - started) * 1000
                nav = page.evaluate(
                    "(() => { const n = performance.getEntriesByType('navigation')[0];"
                    " return {dcl: n.domContentLoadedEventEnd, load: n.loadEventEnd}; })()"
                )
                samples.append((nav["dcl"], nav["load"], interactive))
            loads.append(
                {
                    "view": name,
                    "dcl": statistics.median(s[0] for s in samples),
                    "load": statistics.median(s[1] for s in samples),
                    "tti": statistics.median(s[2] for s in samples),
                }
            )
        # interactions on the table
        page.goto(site.url(f"/analyses/{analysis.pk}/"), wait_until="load")
        page.wait_for_function("window.htmx")
        first = page.eval_on_selector("#results-table tbody tr", "e => e.id")
        started = time.perf_counter()
        page.click("button[data-sort=mse]")
        page.wait_for_function(
            "id => { const r = document.querySelector('#results-table tbody tr'); return r && r.id !== id; }",
            arg=first,
        )
        interactions["sort by mse (click → table re-rendered)"] = (time.perf_counter() - started) * 1000
        started = time.perf_counter()
        page.click("label.tab:has(input[value=transposed])")
        page.wait_for_selector("#transposed")
        interactions["switch to the transposed view"] = (time.perf_counter() - started) * 1000
        started = time.perf_counter()
        page.hover("#t-500 .w >> nth=2")
        page.wait_for_selector("#word-tip:not([hidden])")
        interactions["hover a word → tooltip shown"] = (time.perf_counter() - started) * 1000
        browser.close()
    return loads, interactions


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=1000)
    parser.add_argument("--rows-cache", help="keep the computed analysis in this JSON file and reuse it")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, live_site(Path(tmp)) as site:
        os.environ["ALLOWED_HOSTS"] = "127.0.0.1,localhost,testserver"
        from django.conf import settings

        settings.ALLOWED_HOSTS.append("testserver")
        cache = Path(args.rows_cache) if args.rows_cache else None
        if cache and cache.exists():
            text, rows, metadata, timings, options = json.loads(cache.read_text())
            result = SimpleNamespace(rows=rows, metadata=metadata, timings=timings)
        else:
            text, result, options = compute(args.tokens)
            if cache:
                cache.write_text(json.dumps([text, result.rows, result.metadata, result.timings, options]))
        analysis = store(text, result, options)
        server = server_side(analysis)
        site.start()
        loads, interactions = browser_side(site, analysis)

    n = len(result.rows)
    lines = [
        "# Results page with a 1,000-token analysis",
        "",
        f"Written by `bench/results_page.py`: {n} positions of the tiny golden lens, best of 4 with the 4",
        "candidates kept, salience, KL and logit lens (the heaviest row there is), T = 6.",
        f"Machine: {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, SQLite.",
        "",
        "## Server (Django test client, median of 5; weight of the HTML as sent, and gzipped)",
        "",
        "| view | render ms | KiB | gzip KiB |",
        "|---|---:|---:|---:|",
    ]
    lines += [f"| {r['view']} | {r['ms']:.0f} | {r['kb']:.0f} | {r['gzip_kb']:.0f} |" for r in server]
    lines += [
        "",
        "## Browser (Debian's Chromium, headless, through `manage.py serve`; median of 3, ms from navigation)",
        "",
        "Time to interactive: `goto` until htmx has loaded and the controls are there (the sort header answers a click).",
        "",
        "| view | DOMContentLoaded | load | interactive |",
        "|---|---:|---:|---:|",
    ]
    lines += [f"| {r['view']} | {r['dcl']:.0f} | {r['load']:.0f} | {r['tti']:.0f} |" for r in loads]
    lines += ["", "| interaction | ms |", "|---|---:|"]
    lines += [f"| {k} | {v:.0f} |" for k, v in interactions.items()]
    report = "\n".join(lines) + "\n"
    print(report)
    out = ROOT / "bench" / "results" / "results-page.md"
    out.write_text(report)
    print(f"wrote {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()

"""Result-cache benchmark: end-to-end time of a cache hit against a miss on the same text, through a real
server (`manage.py serve` on a free port, a temporary SQLite database, the embedded worker).

- API: POST /api/v1/analyses -> the result done (a hit answers 200 done at once; a miss is polled with
  GET until done, so it includes the queue and the worker's compute).
- Browser: POST /analyses/ (the form, logged-in session) -> GET /analyses/<id>/ showing the whole table.

A miss uses a fresh seed each run (so it computes); the hit repeats the first miss' request. The lens is
loaded and warmed up before timing. p50 over --repeats runs. Prints a table, writes bench/results/cache.md.

usage: python bench/cache.py [--demo] [--repeats N]   (--demo: the demo lens too; slower misses)
"""

from __future__ import annotations

import argparse
import http.cookiejar
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.live import LiveSite  # noqa: E402
from bench.web import TEXTS, tiny_registry  # noqa: E402

POLL = 0.01


class Client:
    """A logged-in browser session (cookies + CSRF) and an API key, over plain urllib."""

    def __init__(self, site: LiveSite, username: str, password: str, api_key: str):
        self.site, self.api_key = site, api_key
        self.jar = http.cookiejar.CookieJar()
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(self.jar))
        page = self.get("/accounts/login/")
        self.post_form("/accounts/login/", {"username": username, "password": password}, page)

    def _csrf(self, html: str) -> str:
        return re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', html).group(1)

    def get(self, path: str) -> str:
        with self.opener.open(self.site.url(path), timeout=120) as response:
            return response.read().decode()

    def post_form(self, path: str, data: dict, page_html: str, headers=None) -> str:
        body = urllib.parse.urlencode({**data, "csrfmiddlewaretoken": self._csrf(page_html)}).encode()
        request = urllib.request.Request(
            self.site.url(path), data=body, headers={"Referer": self.site.url(path), **(headers or {})}
        )
        with self.opener.open(request, timeout=120) as response:
            return response.read().decode()

    def api(self, method: str, path: str, body: dict | None = None) -> tuple[int, dict]:
        request = urllib.request.Request(
            self.site.url(path),
            data=json.dumps(body).encode() if body is not None else None,
            method=method,
            headers={"Authorization": f"Bearer {self.api_key}", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=120) as response:
            return response.status, json.loads(response.read())


def api_run(client: Client, text: str, options: dict) -> tuple[float, bool]:
    """Seconds from the POST to the done result in hand, and whether it was served from the cache."""
    t0 = time.perf_counter()
    status, body = client.api("POST", "/api/v1/analyses", {"text": text, "options": options})
    path = urllib.parse.urlsplit(body["url"]).path
    while body["status"] != "done":
        time.sleep(POLL)
        status, body = client.api("GET", path)
        if body["status"] in ("failed", "cancelled"):
            raise RuntimeError(f"analysis {body['id']} {body['status']}: {body.get('error')}")
    if "rows" not in body:
        _, body = client.api("GET", path)
    assert len(body["rows"]) == body["progress"]["total"]
    return time.perf_counter() - t0, bool(body["metadata"].get("cached"))


def browser_run(client: Client, text: str, options: dict, index_html: str, user) -> tuple[float, bool]:
    """Seconds from the form's POST to /analyses/<id>/ rendered with every row."""
    from lensweb.analyses.engine import get_engine
    from lensweb.analyses.models import Analysis

    form = {"text": text, "input_format": "text", "best_of_k": options["best_of_k"], "temperature": 1.0}
    form.update(seed=options["seed"], salience="on", lens=get_engine().default_lens().id)
    before = Analysis.objects.filter(owner=user).order_by("-id").values_list("id", flat=True).first() or 0
    t0 = time.perf_counter()
    client.post_form("/analyses/", form, index_html, headers={"HX-Request": "true"})
    job = Analysis.objects.filter(owner=user, id__gt=before).get()
    while job.status != "done":
        time.sleep(POLL)
        job.refresh_from_db()
        if job.status in ("failed", "cancelled"):
            raise RuntimeError(f"analysis {job.pk} {job.status}: {job.error}")
    page = client.get(f"/analyses/{job.pk}/")
    elapsed = time.perf_counter() - t0
    rows = len(re.findall(r'<tr id="pos-\d+"', page))
    assert rows == job.progress_total, f"the page shows {rows} rows of {job.progress_total}"
    return elapsed, bool(job.metadata.get("cached"))


def measure(client: Client, text: str, repeats: int, base_seed: int, user, index_html: str) -> dict:
    options = {"best_of_k": 2, "seed": base_seed}
    results = {}
    for path, run in (("API", api_run), ("browser", browser_run)):
        misses, hits = [], []
        for i in range(repeats):
            seed = base_seed + (1 if path == "browser" else 0) * 1000 + i + 1
            opts = {**options, "seed": seed}
            extra = (index_html, user) if run is browser_run else ()
            seconds, cached = run(client, text, opts, *extra)
            assert not cached, "a miss was served from the cache"
            misses.append(seconds)
            if i == 0:
                first = opts
        for _ in range(repeats):
            extra = (index_html, user) if run is browser_run else ()
            seconds, cached = run(client, text, first, *extra)
            assert cached, "a hit was not served from the cache"
            hits.append(seconds)
        results[path] = (statistics.median(misses), statistics.median(hits))
    return results


def run_one(kind: str, repeats: int) -> list[tuple[str, str, float, float]]:
    """(text, path, miss p50 s, hit p50 s) for one lens, in this process (Django is set up once here)."""
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        site = LiveSite(directory)
        site.env.update(
            LENSWEB_EMBEDDED_WORKER="true",
            LENSWEB_SUBMIT_RATE="100000/m",
            LENSWEB_API_RATE="100000/m",
            LENSWEB_MAX_POSITIONS_PER_DAY="0",
            LENSWEB_POLL_INTERVAL="0.5",
            LOG_LEVEL="WARNING",
        )
        if kind == "tiny":
            site.env["LENSWEB_LENS_REGISTRY"] = str(tiny_registry(directory))
        try:
            site.setup_django()
            from django.contrib.auth import get_user_model

            from lensweb.accounts import keys

            user = get_user_model().objects.get(username="demo")
            _, api_key = keys.create_key(user, "cache bench")
            site.start()
            client = Client(site, "demo", "lensweb-demo", api_key)
            print(f"served at {site.base}; warming the worker's lens ({LENSES[kind]})…", file=sys.stderr)
            api_run(client, "Warm-up text.", {"seed": 1, "best_of_k": 1})
            index_html = client.get("/")
            rows = []
            for n, text in enumerate(TEXTS[:2]):
                measured = measure(client, text, repeats, 10_000 * (n + 1), user, index_html)
                for path, (miss, hit) in measured.items():
                    rows.append((text, path, miss, hit))
            return rows
        finally:
            site.stop()


LENSES = {"tiny": "tiny golden lens", "demo": "demo lens (SmolLM2-135M, layer 8)"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--demo", action="store_true", help="the demo lens (SmolLM2) too, after the tiny one")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument(
        "--one", choices=sorted(LENSES), help=argparse.SUPPRESS
    )  # a child: one lens, JSON out
    args = parser.parse_args()
    if args.one:
        print(json.dumps(run_one(args.one, args.repeats)))
        return

    table = [
        "| lens | text | path | miss p50 (s) | hit p50 (ms) | speed-up |",
        "|---|---|---|---:|---:|---:|",
    ]
    for kind in ["tiny", "demo"] if args.demo else ["tiny"]:
        # One process per lens: Django's settings (database, registry) are fixed once set up.
        child = subprocess.run(
            [sys.executable, __file__, "--one", kind, "--repeats", str(args.repeats)],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            check=True,
            text=True,
        )
        for text, path, miss, hit in json.loads(child.stdout.strip().splitlines()[-1]):
            short = text if len(text) < 40 else text[:37] + "…"
            table.append(f"| {kind} | {short} | {path} | {miss:.3f} | {hit * 1000:.1f} | {miss / hit:.0f}× |")
    report = "\n".join(
        [
            "# Result cache: hit vs miss, end to end",
            "",
            f"`python bench/cache.py{' --demo' if args.demo else ''} --repeats {args.repeats}` on "
            f"{platform.machine()} ({platform.system()}, {os.cpu_count()} CPUs), Python "
            f"{platform.python_version()}: `manage.py serve` (daphne) with the embedded worker, SQLite, CPU "
            "float32, best of k = 2, salience on.",
            "API: POST /api/v1/analyses → the done result with its rows in hand (a miss polls GET every 10 ms; "
            "a hit is the 200 answer plus one GET for the rows). Browser: the form's POST → /analyses/<id>/ "
            "rendered with every row. A miss is a new seed each run (queue + the worker's compute); the hit "
            "repeats the first miss' request. p50 of the runs.",
            "",
            *table,
            "",
        ]
    )
    print(report)
    out = ROOT / "bench" / "results" / "cache.md"
    out.write_text(report)
    print(f"wrote {out.relative_to(ROOT)}", file=sys.stderr)


if __name__ == "__main__":
    main()

"""Screenshots of the results views with the demo lens (SmolLM2-135M, untrained, Patchscope-style):
two short analyses of one text computed here with the engine (best of 4 with candidates, KL and logit
lens; best of 1), one with the demo NLA pair and a chat reply, stored in a temporary site, then table,
transposed, full text, chart, the NLA's table, history, compare, the shared view, a 390 px phone and dark mode
rendered in Debian's Chromium. Writes docs/screenshots/*.png.

usage: python bench/screenshots.py [--out docs/screenshots]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from live import CHROMIUM, CHROMIUM_ARGS, ROOT, live_site, login  # noqa: E402

TEXT = "The Eiffel Tower is in Paris, the capital of France. It was finished in 1889."
OTHER_TEXT = "Water boils at one hundred degrees Celsius at sea level."
NLA_TEXT = "The Eiffel Tower is in Paris."
CHAT = [{"role": "user", "content": "What is the capital of France?"}]


def compute():
    """(rows, metadata, timings, options) for each analysis, by the real engine and the demo lens."""
    os.environ.pop("LENSWEB_LENS_REGISTRY", None)
    from inference.analysis import analyze
    from inference.engine import load
    from inference.generation import generate
    from inference.registry import load_registry
    from inference.types import AnalysisInput, AnalysisOptions, GenerationOptions

    registry = load_registry()
    lens = load(registry.default)
    runs = []
    for text, options in (
        (TEXT, AnalysisOptions(best_of_k=4, salience=True, kl=True, logit_lens=True, keep_candidates=True)),
        (TEXT, AnalysisOptions(best_of_k=1, salience=True)),
        (OTHER_TEXT, AnalysisOptions(best_of_k=1, salience=True)),
    ):
        started = time.perf_counter()
        result = analyze(lens, AnalysisInput(text=text), options)
        print(
            f"  analysed {len(result.rows)} positions, k = {options.best_of_k}: {time.perf_counter() - started:.1f} s"
        )
        runs.append((text, result, options.to_dict()))
    nla = load(next(spec for spec in registry.lenses if spec.is_nla))  # the demo NLA pair
    started = time.perf_counter()
    result = analyze(nla, AnalysisInput(text=NLA_TEXT), AnalysisOptions(salience=True))
    print(f"  analysed {len(result.rows)} positions with the demo NLA: {time.perf_counter() - started:.1f} s")
    runs.append((NLA_TEXT, result, AnalysisOptions(salience=True).to_dict()))
    options = GenerationOptions.from_dict({"chat_reply": True, "max_new_tokens": 48})
    reply = generate(lens, AnalysisInput(messages=tuple(CHAT)), options)
    return runs, (reply, options.to_dict())


def store(runs, generation):
    from django.contrib.auth import get_user_model
    from django.utils import timezone

    from lensweb.analyses.models import Analysis, AnalysisRow, Generation
    from lensweb.analyses.summaries import summarize_rows
    from lensweb.results.models import ShareLink

    demo = get_user_model().objects.get(username="demo")
    created = []
    for text, result, options in runs:
        summary = summarize_rows([r.to_dict() for r in result.rows], untrained=result.metadata["untrained"])
        metadata = {**result.metadata, "cached": False, "summary": summary}
        now = timezone.now()
        analysis = Analysis.objects.create(
            owner=demo,
            lens_id=result.metadata["lens_id"],
            input={"text": text},
            options=options,
            status="done",
            metadata=metadata,
            timings=result.timings,
            progress_done=len(result.rows),
            progress_total=len(result.rows),
            started_at=now,
            finished_at=now,
        )
        AnalysisRow.objects.bulk_create(
            [AnalysisRow(analysis=analysis, position=r["position"], data=r.to_dict()) for r in result.rows]
        )
        created.append(analysis)
    reply, options = generation
    now = timezone.now()
    Generation.objects.create(
        owner=demo,
        lens_id=created[0].lens_id,
        input={"messages": CHAT},
        options=options,
        status="done",
        result=reply,
        progress_done=1,
        progress_total=1,
        started_at=now,
        finished_at=now,
    )
    link = ShareLink.objects.create(analysis=created[0], created_by=demo)
    return created, link.token


def shoot(site, analyses, token, out: Path):
    from playwright.sync_api import sync_playwright

    a, b, _, nla = analyses
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        context = browser.new_context(viewport={"width": 1400, "height": 1000}, device_scale_factor=1)
        page = context.new_page()
        login(page, site)

        def save(name, full=False, element=None):
            path = out / f"{name}.png"
            (page.locator(element) if element else page).screenshot(
                path=str(path), **({"full_page": True} if full and not element else {})
            )
            print(f"  wrote {path.relative_to(ROOT)}")

        page.goto(site.url(f"/analyses/{a.pk}/"))
        page.wait_for_selector("#results-table")
        page.hover("#pos-8 .w >> nth=1")
        save("results-table", full=True)
        save("results-chart", element="#chart")
        page.goto(site.url(f"/analyses/{a.pk}/?sort=mse&dir=desc"))
        page.click("#pos-10 details.cands summary")
        save("results-table-sorted-candidates")
        page.goto(site.url(f"/analyses/{a.pk}/?view=transposed"))
        page.wait_for_selector("#transposed")
        page.locator("#results-body").scroll_into_view_if_needed()
        save("results-transposed", element="#results-body")
        page.goto(site.url(f"/analyses/{a.pk}/?view=fulltext&metric=mse"))
        page.wait_for_selector("#fulltext")
        page.locator("#results-controls").scroll_into_view_if_needed()
        page.evaluate("window.scrollBy(0, 300)")
        page.hover("#f-9")
        save("results-fulltext")
        page.goto(site.url(f"/analyses/{nla.pk}/"))
        page.wait_for_selector("#results-table")
        save("results-nla", full=True)
        page.goto(site.url("/analyses/history/"))
        save("history")
        page.goto(site.url(f"/analyses/compare/?a={a.pk}&b={b.pk}"))
        save("compare", full=True)
        for name, options in (
            ("results-phone", {"viewport": {"width": 390, "height": 844}, "device_scale_factor": 2}),
            ("results-dark", {"viewport": {"width": 1400, "height": 1000}, "color_scheme": "dark"}),
        ):
            other = browser.new_context(**options)
            view = other.new_page()
            login(view, site)
            view.goto(site.url(f"/analyses/{a.pk}/"))
            view.wait_for_selector("#results-table")
            path = out / f"{name}.png"
            view.screenshot(path=str(path))
            print(f"  wrote {path.relative_to(ROOT)}")
            other.close()
        anonymous = browser.new_context(viewport={"width": 1400, "height": 1000})
        shared = anonymous.new_page()
        shared.goto(site.url(f"/s/{token}/?view=transposed"))
        shared.wait_for_selector("#transposed")
        path = out / "shared-view.png"
        shared.screenshot(path=str(path))
        print(f"  wrote {path.relative_to(ROOT)}")
        browser.close()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(ROOT / "docs" / "screenshots"))
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp, live_site(Path(tmp)) as site:
        print("computing the analyses with the demo lens ...")
        runs, generation = compute()
        analyses, token = store(runs, generation)
        site.start()
        shoot(site, analyses, token, out)


if __name__ == "__main__":
    main()

"""A glyph whose bytes a byte-level tokenizer split over tokens ("é" is two tokens of the tiny lens, each
decoding alone to U+FFFD): the worker records the split glyphs in the analysis' metadata, the live card and the
results page show the glyph with the part each token is, and the rows, exports and API keep each token's
own decode."""

from __future__ import annotations

import json

import pytest
from django.urls import reverse

from inference.glyphs import REPLACEMENT, glyph_spans
from lensweb.accounts.keys import create_key
from lensweb.analyses import fragments, services
from lensweb.analyses.models import AnalysisRow
from tests.conftest import tiny_tokenizer

TEXT = "un café ☕"


@pytest.mark.django_db(transaction=True)
def test_a_finished_analysis_shows_the_glyph_and_keeps_the_raw_tokens(alice, run_jobs, client):
    job = services.do_submit(alice, None, {"text": TEXT}, {"salience": False})
    run_jobs()
    job.refresh_from_db()
    assert job.status == "done"
    tokenizer = tiny_tokenizer()
    ids = job.metadata["token_ids"]
    spans = [list(span) for span in glyph_spans(tokenizer, ids)]
    assert job.metadata["glyphs"] == spans and [text.strip() for *_, text in spans] == ["é", "☕"]
    (e_start, e_end, _), (c_start, c_end, _) = spans
    assert (e_end - e_start, c_end - c_start) == (2, 3)

    rows = {r.position: r.data for r in AnalysisRow.objects.filter(analysis=job)}
    for p in range(e_start, e_end):  # each fragment its own row, its token its own decode
        assert REPLACEMENT in rows[p]["token"] and rows[p]["token"] == tokenizer.decode([ids[p]])

    note = f"bytes of é split over positions {e_start}–{e_end - 1}; this token alone decodes to {REPLACEMENT}"
    card = fragments.render_row(job, rows[e_start])  # the live card's row
    assert f'title="{note}"' in card and 'é<span class="gpart">1/2</span>' in card

    client.force_login(alice)
    page = client.get(reverse("results:detail", args=[job.pk])).content.decode()
    assert f'<td class="tok" title="{note}">é<span class="gpart">1/2</span></td>' in page
    assert 'é<span class="gpart">2/2</span>' in page
    assert '☕<span class="gpart">3/3</span>' in page
    transposed = client.get(reverse("results:detail", args=[job.pk]) + "?view=transposed").content.decode()
    assert 'é<span class="gpart">1/2</span></div>' in transposed and note in transposed

    full = client.get(reverse("results:detail", args=[job.pk]) + "?view=fulltext").content.decode()
    first = full.split(f'id="f-{e_start}"', 1)[1]
    assert first.startswith(' tabindex="0">é<span class="tip"')
    later = full.split(f'id="f-{e_start + 1}"', 1)[1]
    assert later.startswith(' tabindex="0"><span class="tip"')  # a narrow joined part: the glyph once
    assert full.count(" glyph gfirst") == 2 and full.count(" glyph gjoin") == 3

    exported = json.loads(client.get(reverse("results:export_json", args=[job.pk])).content)
    assert [r["token"] for r in exported["data"]] == [tokenizer.decode([i]) for i in ids]
    key = create_key(alice, "glyphs")[1]
    api = client.get(f"/api/v1/analyses/{job.pk}", headers={"Authorization": f"Bearer {key}"}).json()
    assert [r["token"] for r in api["rows"]] == [tokenizer.decode([i]) for i in ids]


@pytest.mark.django_db(transaction=True)
def test_plain_text_records_no_glyphs(alice, run_jobs):
    job = services.do_submit(alice, None, {"text": "hello world"}, {"salience": False})
    run_jobs()
    job.refresh_from_db()
    assert job.status == "done" and "glyphs" not in job.metadata

"""What a first-time user tripped on (issue 14): the page shows the recent cards only, with a link to
History; "Re-run with changes"; "keep candidates" on the form; flashes and cards that say what was asked
for; the error pages in the site's layout."""

from __future__ import annotations

import html as htmlmod
import json
import re
from datetime import timedelta

import pytest
from django.core.exceptions import PermissionDenied
from django.template.loader import render_to_string
from django.urls import include, path, reverse
from django.utils import timezone

from lensweb.analyses import cards, fragments, services
from lensweb.analyses.forms import rerun_initial
from lensweb.analyses.models import Analysis, Generation

pytestmark = pytest.mark.django_db

HTMX = {"HTTP_HX_REQUEST": "true"}


def _boom(request):
    raise RuntimeError("a bug in a view")


def _forbidden(request):
    raise PermissionDenied("not for you")


# This module is also the URLconf of the error-page tests: the site's own URLs and two that fail.
urlpatterns = [
    path("boom/", _boom),
    path("forbidden/", _forbidden),
    path("", include("lensweb.urls")),
]


@pytest.fixture
def logged_in(client, alice):
    client.force_login(alice)
    return client


def finished(user, status=Analysis.Status.DONE, minutes_ago=0, created_minutes_ago=0, **fields) -> Analysis:
    now = timezone.now()
    return Analysis.objects.create(
        owner=user,
        lens_id="tiny",
        input={"text": "old text"},
        options={"best_of_k": 1, "temperature": 1.0, "seed": 42},
        status=status,
        created_at=now - timedelta(minutes=created_minutes_ago),
        finished_at=now - timedelta(minutes=minutes_ago),
        **fields,
    )


def rows_of(job: Analysis) -> list[dict]:
    return [row.data for row in job.rows.order_by("position")]


def card_ids(html: str) -> list[str]:
    return re.findall(r'<section id="((?:job|gen)-\d+)"', html)


# --- the page shows the recent cards, History has the rest --------------------------------------------------


def test_the_page_shows_unfinished_jobs_and_the_last_to_finish_with_a_link_to_history(
    logged_in, alice, bob, settings
):
    settings.LENSWEB_RECENT_JOBS = 2
    # created oldest first; the oldest finished last, so it is among "the last few to finish"
    late = finished(alice, minutes_ago=1, created_minutes_ago=50)
    older = [finished(alice, minutes_ago=40 - i, created_minutes_ago=40 - i) for i in range(3)]
    gen = Generation.objects.create(
        owner=alice,
        lens_id="tiny",
        input={"text": "Once"},
        options={"n": 1},
        status=Generation.Status.DONE,
        finished_at=timezone.now() - timedelta(seconds=30),
    )
    queued = services.do_submit(alice, None, {"text": "a queued one"}, {})
    finished(bob, minutes_ago=0)  # another user's: never on alice's page
    html = logged_in.get(reverse("analyses:index")).content.decode()
    # newest created first: the queued job, the generation, and the analysis that finished last
    assert card_ids(html) == [f"job-{queued.pk}", f"gen-{gen.pk}", f"job-{late.pk}"]
    assert not any(f'id="job-{job.pk}"' in html for job in older)
    assert f'href="{reverse("results:history")}">History</a>' in html
    assert 'data-keep-finished="2"' in html  # what the page's script keeps to as jobs finish


def test_the_replay_over_the_socket_has_the_same_cards(alice, settings):
    settings.LENSWEB_RECENT_JOBS = 1
    finished(alice, minutes_ago=5)
    last = finished(alice, minutes_ago=1)
    jobs, _ = cards.load_replay(alice)
    assert [job.pk for job in jobs] == [last.pk]
    messages, _ = fragments.render_replay(jobs, {})
    assert 'id="jobs-history"' in messages[0]


# --- Re-run with changes ----------------------------------------------------------------------------------


def fields_of(form_html: str) -> dict:
    """What a browser would submit from the rendered form: inputs, checked boxes and radios, the textarea,
    the selected option."""
    data = {}
    for tag in re.findall(r"<input[^>]*>", form_html):
        name = re.search(r'name="([^"]+)"', tag)
        kind = re.search(r'type="([^"]+)"', tag).group(1)
        if not name or name.group(1) == "csrfmiddlewaretoken":
            continue
        value = re.search(r'value="([^"]*)"', tag)
        if kind in ("checkbox", "radio"):
            if " checked" in tag:
                data[name.group(1)] = htmlmod.unescape(value.group(1)) if value else "on"
        elif value:
            data[name.group(1)] = htmlmod.unescape(value.group(1))
    text = re.search(r'<textarea name="text"[^>]*>(.*?)</textarea>', form_html, re.S)
    data["text"] = htmlmod.unescape(text.group(1)).removeprefix("\n")
    select = re.search(r'<select name="lens".*?</select>', form_html, re.S).group(0)
    data["lens"] = re.search(r'<option value="([^"]+)" selected', select).group(1)
    return data


@pytest.mark.parametrize(
    "inp, fmt",
    [
        ({"text": "The capital of France is <Paris> & more"}, "text"),
        ({"messages": [{"role": "user", "content": "Hi, who are you?"}]}, "wrap"),
        (
            {
                "messages": [
                    {"role": "user", "content": 'Name a "river".'},
                    {"role": "assistant", "content": "The Seine."},
                ]
            },
            "chat",
        ),
        ({"messages": [{"role": "user", "content": "Short."}], "default_system_prompt": False}, "chat"),
    ],
)
def test_rerun_refills_the_form_and_submitting_it_asks_for_the_same_analysis(logged_in, alice, inp, fmt):
    options = {
        "best_of_k": 3,
        "temperature": 0.7,
        "seed": 7,
        "salience": False,
        "kl": True,
        "logit_lens": True,
        "keep_candidates": True,
    }
    if "messages" in inp and len(inp["messages"]) > 1:
        options["last_n_messages"] = 1
    job = services.do_submit(alice, "tiny", inp, options)
    response = logged_in.get(reverse("analyses:index"), {"rerun": job.pk})
    assert response.status_code == 200
    html = response.content.decode()
    form = re.search(r'<form id="analysis-form".*?</form>', html, re.S).group(0)
    assert f'data-rerun="{job.pk}"' in form and f"analysis #{job.pk}</a>" in form
    assert re.search(r'<details class="advanced" open>', form), "KL, logit lens, seed: Advanced is open"
    data = fields_of(form)
    assert data["input_format"] == fmt
    submitted = logged_in.post(reverse("analyses:submit"), data, **HTMX)
    assert "queued" in submitted.content.decode()
    again = Analysis.objects.exclude(pk=job.pk).get()
    assert again.input == job.input and again.options == job.options and again.lens_id == job.lens_id


def test_rerun_from_a_card_swaps_the_form_alone(logged_in, alice):
    job = services.do_submit(alice, None, {"text": "hello there"}, {"kl": True})
    card = logged_in.get(reverse("analyses:card", args=[job.pk])).content.decode()
    link = re.search(r'<a class="rerun" href="([^"]+)" hx-get="([^"]+)"', card)
    assert link and htmlmod.unescape(link.group(1)) == f"/?rerun={job.pk}#analysis-form"
    response = logged_in.get(htmlmod.unescape(link.group(2)), **HTMX)
    body = response.content.decode()
    assert body.lstrip().startswith('<form id="analysis-form"') and "<html" not in body
    assert ">\nhello there</textarea>" in body and f'data-rerun="{job.pk}"' in body


def test_rerun_is_the_owners_alone(client, alice, bob, django_user_model):
    job = services.do_submit(alice, None, {"text": "alice's secret text"}, {})
    staff = django_user_model.objects.create_user("stella", password="pw-staff", is_staff=True)
    for user in (bob, staff):
        client.force_login(user)
        response = client.get(reverse("analyses:index"), {"rerun": job.pk})
        assert response.status_code == 404 and "alice's secret text" not in response.content.decode()
    client.force_login(alice)
    for bad in ("abc", "-1", "1.5", "²", "9" * 30, ""):
        assert client.get(reverse("analyses:index"), {"rerun": bad}).status_code == 404, bad


def test_rerun_initial_of_a_chat_is_json_the_form_reads_back():
    job = Analysis(
        lens_id="tiny",
        input={"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "é"}]},
        options={"best_of_k": 2, "unknown_later_option": 1},
    )
    initial = rerun_initial(job)
    assert initial["input_format"] == "chat" and json.loads(initial["text"]) == job.input["messages"]
    assert "unknown_later_option" not in initial and initial["best_of_k"] == 2
    assert "é" in initial["text"]  # readable, not \u00e9


# --- keep candidates on the form -------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)  # the worker closes its connections after a job
def test_keep_candidates_is_a_checkbox_and_the_rows_keep_them(logged_in, run_jobs):
    page = logged_in.get(reverse("analyses:index")).content.decode()
    assert re.search(r'<input type="checkbox" name="keep_candidates"[^>]*>', page)
    base = {"input_format": "text", "best_of_k": 3, "temperature": 1.0, "seed": 42, "lens": "tiny"}
    logged_in.post(reverse("analyses:submit"), {**base, "text": "kept ones", "keep_candidates": "on"}, **HTMX)
    logged_in.post(reverse("analyses:submit"), {**base, "text": "best alone"}, **HTMX)
    run_jobs()
    kept, plain = (
        Analysis.objects.get(input__text="kept ones"),
        Analysis.objects.get(input__text="best alone"),
    )
    assert kept.options["keep_candidates"] is True and plain.options["keep_candidates"] is False
    kept_rows, plain_rows = rows_of(kept), rows_of(plain)
    assert kept_rows and all(len(r["candidates"]) == 3 for r in kept_rows)
    assert plain_rows and all(r.get("candidates") is None for r in plain_rows)


# --- cards say what was asked for ----------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_cards_show_kl_and_logit_lens_only_when_asked(logged_in, alice, run_jobs):
    plain = services.do_submit(alice, None, {"text": "Paris is nice"}, {})
    both = services.do_submit(alice, None, {"text": "Paris is nice"}, {"kl": True, "logit_lens": True})
    run_jobs()
    for job, asked in ((plain, False), (both, True)):
        card = logged_in.get(reverse("analyses:card", args=[job.pk])).content.decode()
        header = re.search(r"<thead>.*?</thead>", card, re.S).group(0)
        assert (">KL<" in header) is asked and (">logit lens<" in header) is asked
        row = re.search(rf'<tr id="row-{job.pk}-3".*?</tr>', card, re.S).group(0)
        headers = len(re.findall(r"<th[ >]", header))
        assert len(re.findall(r"<td", row)) == headers, "every row has a cell under each header"
        # a row streamed over the socket has the card's cells too
        live = fragments.render_row(job, rows_of(job)[3])
        assert len(re.findall(r"<td", live)) == headers


def test_a_lens_row_with_a_cosine_is_still_a_lens_row():
    """Every row has cosine_similarity now (issue 14's fidelity columns): the NLA's own metrics say NLA."""
    lens_row = {"position": 3, "token": "x", "mse": 1.0, "relative_rmse": 0.5, "cosine_similarity": 0.9}
    assert fragments.row_family(lens_row) == "lens"
    assert fragments.row_view({**lens_row, "position": 2}).early
    assert "positions 0–5" in fragments.EARLY_NOTES[fragments.row_family(lens_row)]
    assert fragments.row_family({**lens_row, "mse_nrm": 0.2, "fve_nrm": 0.5}) == "nla"


def test_a_cancelled_card_has_no_empty_table(logged_in, alice):
    job = services.do_submit(alice, None, {"text": "never started"}, {})
    before = logged_in.get(reverse("analyses:card", args=[job.pk])).content.decode()
    assert f'<tbody id="rows-{job.pk}">' in before  # queued: the table its rows will stream into
    services.do_cancel(alice, job.pk)
    after = logged_in.get(reverse("analyses:card", args=[job.pk])).content.decode()
    assert "<table" not in after and "badge-cancelled" in after
    # the state the socket sends marks the card final (the stylesheet hides a live card's empty table)
    job.refresh_from_db()
    assert re.search(
        rf'<div id="status-{job.pk}" class="job-status" data-final="[0-9.]+">',
        fragments.render_state(job, None),
    )


def test_a_finished_card_whose_rows_go_in_later_messages_keeps_its_table(alice):
    job = finished(alice, progress_done=2, progress_total=2)
    for position in range(2):
        job.rows.create(position=position, data={"position": position, "token": "t", "mse": 1.0})
    context = fragments.card_context(job, None, cards.card_rows(job))
    empty = fragments._render_card({**context, "rows": []})
    fitted, later = fragments.fit_card(context, budget=fragments.size(empty) + 10)
    assert fitted["rows"] == [] and len(later) == 1  # no row fits inline: both are appended to its table
    card = fragments._render_card(fitted)
    assert f'<tbody id="rows-{job.pk}"></tbody>' in card and fragments.size(card) == fragments.size(empty)


def test_flashes_name_the_job_whose_end_retires_them(logged_in, alice):
    html = logged_in.post(
        reverse("analyses:submit"),
        {"text": "x y", "input_format": "text", "best_of_k": 1, "temperature": 1, "seed": 1, "lens": "tiny"},
        **HTMX,
    ).content.decode()
    job = Analysis.objects.get()
    assert re.search(
        rf'<p class="flash ok" data-flash-for="analysis-{job.pk}">Analysis #{job.pk} queued', html
    )
    # not final yet: the status carries no data-final, so the flash stays
    assert "data-final" not in fragments.render_state(job, 1)


def test_the_demo_banner_says_its_sentence_once(tiny_engine):
    from inference.registry import DEMO_SPEC

    html = render_to_string(
        "analyses/partials/lens-info.html", {"lenses": [(DEMO_SPEC, tiny_engine.lens_notes(DEMO_SPEC))]}
    )
    text = re.sub(r"\s+", " ", re.sub(r"<[^>]+>", "", html)).lower()
    assert text.count("patchscope-style") == 1, text
    assert "untrained" in text and 'class="lens untrained"' in html


# --- error pages in the site's layout -------------------------------------------------------------------------


def assert_site_page(response, status: int, heading: str):
    html = response.content.decode()
    assert response.status_code == status
    assert '<header class="topbar">' in html and "/static/css/app.css" in html, "the site's layout"
    assert f"<h1>{heading}</h1>" in html
    assert "<script>" not in html and "style=" not in html


@pytest.mark.urls(__name__)
def test_403_page(logged_in, settings):
    settings.DEBUG = False
    assert_site_page(logged_in.get("/forbidden/"), 403, "Not allowed")
    assert_site_page(logged_in.get(reverse("monitoring:dashboard")), 403, "Not allowed")


@pytest.mark.urls(__name__)
def test_404_page(logged_in, settings):
    settings.DEBUG = False
    response = logged_in.get("/no/such/page/")
    assert_site_page(response, 404, "Not found")
    assert ">alice</a>" in response.content.decode(), "the layout of a signed-in page: its user's name"
    assert_site_page(logged_in.get(reverse("results:detail", args=[999_999])), 404, "Not found")


@pytest.mark.urls(__name__)
def test_500_page_needs_no_request_context(client, alice, settings):
    settings.DEBUG = False
    client.raise_request_exception = False
    client.force_login(alice)
    response = client.get("/boom/")
    assert_site_page(response, 500, "Something went wrong")
    assert "a bug in a view" not in response.content.decode()

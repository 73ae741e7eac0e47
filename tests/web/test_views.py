"""Pages, the form, cancel over HTTP, health endpoints, the demo user and the production check."""

import re

import pytest
from django.core import checks
from django.core.management import call_command
from django.urls import reverse

from lensweb.accounts.checks import check_demo_password
from lensweb.analyses import services
from lensweb.analyses.colours import build_scale
from lensweb.analyses.forms import SAMPLE_TEXT
from lensweb.analyses.models import Analysis
from lensweb.results.display import EARLY_POSITIONS, LENS

from .conftest import TINY_NAME, write_tiny_registry

pytestmark = pytest.mark.django_db

HTMX = {"HTTP_HX_REQUEST": "true"}
VALID = {
    "text": "The capital of France",
    "input_format": "text",
    "best_of_k": 1,
    "temperature": 1.0,
    "seed": 42,
    "salience": "on",
    "lens": "tiny",
}


@pytest.fixture
def logged_in(client, alice):
    client.force_login(alice)
    return client


@pytest.mark.parametrize("name", ["analyses:index", "analyses:submit"])
def test_login_is_required(client, name):
    response = client.get(reverse(name))
    assert response.status_code == 302 and response.url.startswith(reverse("login"))


def test_login_page_and_logging_in(client, alice):
    assert client.get(reverse("login")).status_code == 200
    response = client.post(reverse("login"), {"username": "alice", "password": "pw-alice"})
    assert response.status_code == 302 and response.url == reverse("analyses:index")


def test_index_shows_form_jobs_and_the_untrained_notice(logged_in, alice, tmp_path, monkeypatch):
    demo = '[[lens]]\nid = "demo"\nname = "Demo lens"\ncheckpoint = "demo"\n'
    monkeypatch.setenv("LENSWEB_LENS_REGISTRY", str(write_tiny_registry(tmp_path, demo)))
    job = services.do_submit(alice, None, {"text": "hello world"}, {})
    response = logged_in.get(reverse("analyses:index"))
    html = response.content.decode()
    assert response.status_code == 200
    assert 'hx-headers=\'{"X-CSRFToken":' in html
    assert 'ws-connect="/ws/analyses/"' in html
    assert f'id="job-{job.pk}"' in html and "Position <strong>1</strong>" in html
    # the notice is the untrained demo lens' alone, not the trained tiny one's
    assert re.search(r"<strong>Demo lens</strong> — <em>an untrained Patchscope-style lens</em>", html)
    assert re.search(rf"<strong>{TINY_NAME}</strong>\.", html)
    assert "<script>" not in html  # no inline scripts: a CSP without unsafe-inline stays possible
    assert "/static/vendor/htmx.min.js" in html and "/static/vendor/ws.js" in html


def test_the_demo_lens_is_announced_as_untrained(tiny_engine):
    from inference.registry import DEMO_SPEC

    assert tiny_engine.lens_notes(DEMO_SPEC) == {"untrained": True, "description": DEMO_SPEC.description}
    assert tiny_engine.lens_notes(tiny_engine.default_lens())["untrained"] is False


def test_the_demo_nla_pair_is_announced_as_untrained(tiny_engine):
    from django.template.loader import render_to_string

    from inference.registry import DEMO_NLA_SPEC

    notes = tiny_engine.lens_notes(DEMO_NLA_SPEC)
    assert notes == {"untrained": True, "description": DEMO_NLA_SPEC.description}
    html = render_to_string("analyses/partials/lens-info.html", {"lenses": [(DEMO_NLA_SPEC, notes)]})
    assert 'class="lens untrained"' in html and "Natural Language Autoencoder" in html
    assert "(untrained)" in html and "reconstruct nothing" in html


def test_a_row_renders_tokens_salience_and_metrics():
    from lensweb.analyses.fragments import row_view

    view = row_view(
        {
            "position": 7,
            "token": "\n",
            "explanation_tokens": [" Paris", " city"],
            "explanation": " Paris city",
            "token_salience": [0.5, -0.1],
            "mse": 1.23456,
            "relative_rmse": 0.5,
            "kl": None,
            "logit_lens_top": [" the", " a"],
        }
    )
    assert view.token == "↵" and not view.early
    # the results pages' own classes on their fixed scale: a word has one colour in every view
    fixed = build_scale("salience", [], fitted=False)
    assert [w.cls for w in view.words] == [fixed.css_class(0.5), fixed.css_class(-0.1)] == ["d10", "d4"]
    assert [w.salience_text for w in view.words] == ["0.500", "-0.100"]
    assert (view.mse_text, view.kl_text, view.logit_lens) == ("1.2346", "", " the ·  a")
    assert view.cells == ["1.2346", "0.5000", ""]  # a Consistency Lens card's mse, relative RMSE and KL


def test_submit_creates_a_job_and_returns_the_form(logged_in, alice):
    response = logged_in.post(reverse("analyses:submit"), VALID, **HTMX)
    assert response.status_code == 200
    job = Analysis.objects.get()
    assert job.owner == alice and job.input == {"text": "The capital of France"}
    html = response.content.decode()
    assert 'id="analysis-form"' in html and f"Analysis #{job.pk} queued" in html


def test_the_form_takes_chosen_positions(logged_in):
    logged_in.post(reverse("analyses:submit"), {**VALID, "positions": "2, -1"}, **HTMX)
    job = Analysis.objects.get()
    assert job.options["positions"] == [2, -1] and job.progress_total == 2


@pytest.mark.parametrize(
    "changes, field, message",
    [
        ({"best_of_k": 0}, "best_of_k", "greater than or equal to 1"),
        ({"best_of_k": 65}, "best_of_k", "less than or equal to 64"),
        ({"temperature": 3}, "temperature", "less than or equal to 2.0"),
        ({"text": ""}, "text", "required"),
        ({"input_format": "chat", "text": "not json"}, "text", "not a JSON list"),
        (
            {"input_format": "chat", "text": '[{"role": "robot", "content": "x"}]'},
            "text",
            "use one of system, user, assistant",
        ),
        ({"last_n_messages": 2}, "last_n_messages", "chats only"),
        ({"positions": "2, x"}, "positions", "whole numbers separated by commas"),
        ({"positions": "2, 40"}, "positions", "positions 40 is outside the input"),
    ],
)
def test_invalid_values_show_next_to_the_field_and_submit_nothing(logged_in, changes, field, message):
    response = logged_in.post(reverse("analyses:submit"), {**VALID, **changes}, **HTMX)
    html = response.content.decode()
    assert response.status_code == 200
    assert f'id="error-{field}"' in html and message in html
    assert not Analysis.objects.exists()


def test_chat_and_wrapped_text_inputs(logged_in):
    chat = '[{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]'
    logged_in.post(
        reverse("analyses:submit"),
        {**VALID, "input_format": "chat", "text": chat, "last_n_messages": 1},
        **HTMX,
    )
    logged_in.post(reverse("analyses:submit"), {**VALID, "input_format": "wrap", "text": "plain"}, **HTMX)
    wrapped, chat_job = Analysis.objects.order_by("-pk")
    assert chat_job.input["messages"][1] == {"role": "assistant", "content": "hello"}
    assert chat_job.options["last_n_messages"] == 1
    assert wrapped.input == {"messages": [{"role": "user", "content": "plain"}]}


def test_caps_are_shown_in_the_form(logged_in, settings):
    settings.LENSWEB_MAX_QUEUED_PER_USER = 1
    logged_in.post(reverse("analyses:submit"), VALID, **HTMX)
    html = logged_in.post(reverse("analyses:submit"), VALID, **HTMX).content.decode()
    assert "the limit is 1" in html and 'class="form-error"' in html
    assert Analysis.objects.count() == 1


def test_submit_is_rate_limited(logged_in, settings):
    settings.LENSWEB_SUBMIT_RATE = "1/m"
    logged_in.post(reverse("analyses:submit"), VALID, **HTMX)
    html = logged_in.post(reverse("analyses:submit"), VALID, **HTMX).content.decode()
    assert "submitting too fast" in html
    assert Analysis.objects.count() == 1


def test_an_empty_submit_rate_turns_the_limit_off(logged_in, settings):
    settings.LENSWEB_SUBMIT_RATE = ""  # "empty turns one off" (settings): was a 500 in the form view
    for _ in range(3):
        assert logged_in.post(reverse("analyses:submit"), VALID, **HTMX).status_code == 200
    assert Analysis.objects.count() == 3


def test_cancel_and_card_views_check_ownership(client, alice, bob):
    job = services.do_submit(alice, None, {"text": "x"}, {})
    client.force_login(bob)
    assert client.post(reverse("analyses:cancel", args=[job.pk]), **HTMX).status_code == 404
    assert client.get(reverse("analyses:card", args=[job.pk])).status_code == 404
    client.force_login(alice)
    assert f'id="job-{job.pk}"' in client.get(reverse("analyses:card", args=[job.pk])).content.decode()
    html = client.post(reverse("analyses:cancel", args=[job.pk]), **HTMX).content.decode()
    assert "badge-cancelled" in html
    job.refresh_from_db()
    assert job.status == "cancelled"


def test_health_endpoints(client):
    assert client.get("/healthz").json() == {"status": "ok"}
    response = client.get("/readyz")
    assert response.status_code == 503
    checks = {"database": True, "channel_layer": True, "workers": 0, "tokenizers": True}
    assert response.json()["checks"] == checks
    services.register_worker("somewhere")
    assert client.get("/readyz").status_code == 200


def test_ensure_demo_user_is_idempotent(capsys, settings, django_user_model):
    call_command("ensure_demo_user")
    assert f"password {settings.LENSWEB_DEMO_PASSWORD!r}" in capsys.readouterr().out
    call_command("ensure_demo_user")
    again = capsys.readouterr().out
    assert (
        "exists" in again and "Log in as 'demo' with password 'lensweb-demo'" in again
    )  # `make run` says it
    assert django_user_model.objects.filter(username="demo").count() == 1
    user = django_user_model.objects.get(username="demo")
    user.set_password("my-own")
    user.save()
    call_command("ensure_demo_user")
    assert "password" not in capsys.readouterr().out  # an operator's own is never printed


def test_a_first_visit_has_a_sample_text_to_submit_as_it_is(client, alice):
    client.force_login(alice)
    page = client.get("/").content.decode()
    sample = re.search(r"<textarea[^>]*id=\"id_text\"[^>]*>\s*([^<]+)</textarea>", page).group(1)
    assert sample == SAMPLE_TEXT and 'placeholder="' + SAMPLE_TEXT[:9] not in page
    # most of its positions are past the greyed first ones (a word or mark is at least one token)
    assert len(re.findall(r"\w+|[^\w\s]", sample)) >= 2 * EARLY_POSITIONS[LENS]


def test_the_login_page_says_the_demo_login_on_a_development_server_only(client, settings, django_user_model):
    assert "demo-login" not in client.get("/accounts/login/").content.decode()  # no demo user yet
    call_command("ensure_demo_user")
    page = client.get("/accounts/login/").content.decode()
    assert 'id="demo-login"' in page and "<code>lensweb-demo</code>" in page
    settings.LENSWEB_REFUSE_DEMO_PASSWORD = True  # production
    assert "demo-login" not in client.get("/accounts/login/").content.decode()
    settings.LENSWEB_REFUSE_DEMO_PASSWORD = False
    user = django_user_model.objects.get(username="demo")
    user.set_password("changed-now")
    user.save()
    assert "demo-login" not in client.get("/accounts/login/").content.decode()


def test_production_refuses_the_demo_password(settings, django_user_model):
    settings.LENSWEB_REFUSE_DEMO_PASSWORD = True
    assert check_demo_password() == []
    call_command("ensure_demo_user")
    errors = check_demo_password()
    assert [e.id for e in errors] == ["lensweb.E001"] and errors[0].level == checks.ERROR
    user = django_user_model.objects.get(username="demo")
    user.set_password("something-else-entirely")
    user.save()
    assert check_demo_password() == []

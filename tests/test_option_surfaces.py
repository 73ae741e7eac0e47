"""Each option is declared once (inference.options, on the options dataclasses); this walks the declarations
and checks that every surface carries each option as declared: the browser forms (label, initial value,
bounds, basic or under "Advanced"), the API schema in the OpenAPI document (type, default, bounds, help), the
CLI's flags (and their defaults), import defaults, the request log's names and the result-cache key."""

from __future__ import annotations

import dataclasses
import re

import pytest

from inference.cachekey import result_key
from inference.options import options_of
from inference.types import AnalysisOptions, GenerationOptions

ANALYSIS = options_of(AnalysisOptions)
GENERATION = options_of(GenerationOptions)
# A value other than the default, per kind, for the key and the CLI.
OTHER = {"int": lambda o: (o.default or 1) + 1, "float": lambda o: 0.5, "bool": lambda o: not o.default}


def other_value(opt):
    return OTHER[opt.kind](opt) if opt.kind in OTHER else [1, 3]


def test_every_field_is_declared_and_has_words():
    for cls in (AnalysisOptions, GenerationOptions):
        names = [f.name for f in dataclasses.fields(cls)]
        assert [o.name for o in options_of(cls)] == names
        for opt in options_of(cls):
            assert opt.label and opt.help.endswith("."), opt.name


@pytest.mark.django_db
@pytest.mark.parametrize("opt", ANALYSIS, ids=lambda o: o.name)
def test_the_analysis_form_has_each_option_where_declared(opt, settings):
    from lensweb.analyses.forms import AnalysisForm
    from lensweb.analyses.limits import limits

    settings.LENSWEB_MAX_BEST_OF_K = 9  # an operator's bound reaches the form
    form = AnalysisForm(lenses=())
    field = form.fields[opt.name]
    assert field.label == opt.label and field.initial == opt.default
    assert field.help_text == opt.described(limits())
    low, high = opt.bounds(limits())
    if opt.kind in ("int", "float"):
        assert (field.widget.attrs.get("min"), field.widget.attrs.get("max")) == (low, high)
    html = form_html(form)
    advanced = html[html.index('<details class="advanced"') :]
    assert (f'name="{opt.name}"' in advanced) is opt.advanced
    assert f'name="{opt.name}"' in html


def form_html(form) -> str:
    from django.template.loader import render_to_string

    return render_to_string("analyses/partials/analysis-form.html", {"form": form})


@pytest.mark.django_db
def test_the_operators_bound_is_enforced_by_the_form(settings):
    from lensweb.analyses.forms import AnalysisOptionsForm

    settings.LENSWEB_MAX_BEST_OF_K = 9
    form = AnalysisOptionsForm({"best_of_k": "10", "temperature": "1", "seed": "1"})
    assert not form.is_valid() and "best_of_k" in form.errors


@pytest.mark.parametrize("opt", [o for o in GENERATION if o.name != "chat_reply"], ids=lambda o: o.name)
def test_the_generation_form_has_each_option_but_the_buttons_own(opt):
    from inference.limits import DEFAULT_LIMITS
    from lensweb.analyses.forms import GenerationForm

    form = GenerationForm(limits=DEFAULT_LIMITS)
    assert form.fields[opt.name].label == opt.label
    if opt.name == "temperature":  # empty: the default of what is asked for, shown as the placeholder
        assert form.fields[opt.name].initial is None and not form.fields[opt.name].required
        assert form.fields[opt.name].widget.attrs["placeholder"] == f"{opt.default:g}"
    else:
        assert form.fields[opt.name].initial == opt.default
    assert opt.name in [bound.name for bound in form.option_fields]
    assert "chat_reply" not in form.fields


@pytest.mark.parametrize(
    ("component", "opt"),
    [("AnalysisOptions", o) for o in ANALYSIS] + [("GenerationOptions", o) for o in GENERATION],
    ids=lambda v: v if isinstance(v, str) else v.name,
)
def test_the_openapi_document_has_each_option(component, opt):
    from inference.limits import DEFAULT_LIMITS
    from lensweb.api.api import api

    schema = api.get_openapi_schema()["components"]["schemas"][component]
    prop = schema["properties"][opt.name]
    assert prop.get("default") == opt.default  # a null default is left unsaid
    assert prop["description"] == opt.help
    low, high = opt.bounds(DEFAULT_LIMITS)
    typed = next((p for p in prop.get("anyOf", [prop]) if p.get("type") != "null"), prop)
    expected_type = {"int": "integer", "float": "number", "bool": "boolean", "ints": "array"}[opt.kind]
    assert typed["type"] == expected_type
    if opt.kind == "ints":
        typed = typed["items"]
    if low is not None:
        assert typed["minimum"] == low
    if high is not None:
        assert typed["maximum"] == high
    assert schema.get("additionalProperties") is False


@pytest.mark.parametrize(
    ("command", "opt"),
    [("analyze", o) for o in ANALYSIS] + [("generate", o) for o in GENERATION],
    ids=lambda v: v if isinstance(v, str) else v.name,
)
def test_the_cli_has_a_flag_for_each_option(command, opt):
    from inference.__main__ import _parser

    flag = "--" + opt.name.replace("_", "-")
    base = [command, "--checkpoint", "demo", "--text", "x"]
    # generate's temperature is unset unless given: GenerationOptions.from_dict picks a reply's or a continuation's
    unset = None if (command, opt.name) == ("generate", "temperature") else opt.default
    assert getattr(_parser().parse_args(base), opt.name) == unset
    value = other_value(opt)
    if opt.kind == "bool":
        argv = [flag] if value else ["--no-" + opt.name.replace("_", "-")]
    elif opt.kind == "ints":
        argv = [flag, *map(str, value)]
    else:
        argv = [flag, str(value)]
    assert getattr(_parser().parse_args(base + argv), opt.name) == value


def test_a_reply_without_a_temperature_takes_the_measured_chat_default():
    from inference.types import CHAT_TEMPERATURE

    assert GenerationOptions.from_dict({}).temperature == GenerationOptions.temperature == 1.0
    assert GenerationOptions.from_dict({"chat_reply": True}).temperature == CHAT_TEMPERATURE
    assert GenerationOptions.from_dict({}, chat=True).temperature == CHAT_TEMPERATURE
    assert GenerationOptions.from_dict({"chat_reply": True, "temperature": 1.0}).temperature == 1.0
    assert GenerationOptions.from_dict({"temperature": 0}, chat=True).temperature == 0
    temperature = next(o for o in GENERATION if o.name == "temperature")
    assert f"takes {CHAT_TEMPERATURE:g}" in temperature.help  # said wherever the help is (API, CLI)


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["--text", "x", "--chat-reply"], "chat"),
        (["--messages", '[{"role": "user", "content": "x"}]'], "chat"),
        (["--text", "x", "--chat-reply", "--temperature", "1.0"], 1.0),
        (["--text", "x"], 1.0),
    ],
)
def test_the_cli_generate_takes_the_default_of_what_is_asked(monkeypatch, capsys, argv, expected):
    import inference.__main__ as cli
    import inference.generation
    from inference.types import CHAT_TEMPERATURE

    seen = []
    monkeypatch.setattr(cli, "_load", lambda args: None)
    monkeypatch.setattr(
        inference.generation, "generate", lambda lens, inp, options, **_: seen.append(options) or {}
    )
    assert cli.main(["generate", "--checkpoint", "demo", "--json", *argv]) == 0
    assert seen[0].temperature == (CHAT_TEMPERATURE if expected == "chat" else expected)


def test_imports_default_every_option_and_keep_a_files_own():
    from lensweb.results.imports import _options_from

    defaults = _options_from({}, [])
    assert set(defaults) == {o.name for o in ANALYSIS}
    given = {o.name: other_value(o) for o in ANALYSIS}
    assert _options_from({"options": given}, []) == given
    wrong = {o.name: "not a value" for o in ANALYSIS}
    assert _options_from({"options": wrong}, []) == defaults


def test_the_request_log_keeps_every_option_name():
    from lensweb.monitoring.requestlog import OPTION_NAMES

    assert {o.name for o in ANALYSIS + GENERATION} <= OPTION_NAMES


@pytest.mark.parametrize("opt", ANALYSIS, ids=lambda o: o.name)
def test_the_cache_key_holds_each_keyed_option_and_no_other(opt):
    ids, positions = [1, 2, 3, 4], [0, 1, 2, 3]
    base = result_key("lens", ids, positions, AnalysisOptions())
    changed = AnalysisOptions(**{opt.name: other_value(opt)})
    assert (result_key("lens", ids, positions, changed) != base) is opt.keyed


def test_help_texts_name_no_bound_too_wide_to_read():
    for opt in ANALYSIS + GENERATION:
        assert not re.search(r"\d{7,}", opt.described()), opt.name

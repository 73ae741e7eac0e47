"""Fuzzing the import page (issue 9, item 12): hundreds of malformed files, generated reproducibly (a seeded
random.Random) from a valid export by type swaps, deletions, huge and tiny numbers, NaN and Infinity,
lone surrogates, deep nesting, truncation and byte damage. Every one is answered below 500 (a 302 when it
was imported, else a 400 that says why), and afterwards every page of the user's history, every imported
analysis (its views, exports, candidates) and the analyses page still render."""

from __future__ import annotations

import html
import json
import random
import re

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from lensweb.analyses.models import Analysis, AnalysisRow
from lensweb.results import services
from lensweb.results.export import export_json

pytestmark = pytest.mark.django_db

SEED = 9
FILES = 300
DEEP = "__deep__"  # stands for a nesting too deep for json.dumps itself; spliced into the text

# What a value may be replaced with: every JSON type, and the values that broke imports before.
REPLACEMENTS = [
    None,
    True,
    False,
    0,
    -1,
    7,
    2**31,
    2**63,
    -(2**63) - 1,
    10**30,
    1.5,
    -0.0,
    1e300,
    -1e300,
    5e-324,
    float("nan"),
    float("inf"),
    float("-inf"),
    "",
    "x",
    "=HYPERLINK(1)",
    "\ud800",
    "a\udfffb",
    "\ud83d\ude00",
    "<script>alert(1)</script>",
    "x" * 5_000,
    [],
    {},
    [None],
    [1, "a", None, 2.5],
    {"mse": 1},
    {"explanation": 5, "mse": "x"},
    DEEP,
]
JUNK = [
    b"\xff",
    b"\x00",
    b"\\ud800",
    b"NaN",
    b"Infinity",
    b"[[[[[[",
    b"}}",
    b'"',
    b",",
    b"\\",
    b"1e999",
    b"9" * 40,
]


def paths(value, prefix=()):
    """Every place in the document: (path, value) pairs."""
    yield prefix, value
    if isinstance(value, dict):
        for key, item in value.items():
            yield from paths(item, (*prefix, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from paths(item, (*prefix, index))


def parent_of(document, path):
    target = document
    for key in path[:-1]:
        target = target[key]
    return target


def mutate_tree(document, rnd: random.Random) -> str:
    """One change to the parsed document, in place; returns what it did."""
    path, _ = rnd.choice([p for p in paths(document) if p[0]])
    parent, key = parent_of(document, path), path[-1]
    action = rnd.choice(["replace", "replace", "replace", "delete", "duplicate", "rename"])
    if action == "replace":
        parent[key] = rnd.choice(REPLACEMENTS)
    elif action == "delete":
        del parent[key]
    elif action == "duplicate" and isinstance(parent, list):
        parent.insert(key, json.loads(json.dumps(parent[key])))
    else:
        action = "rename"
        if isinstance(parent, dict):
            parent[rnd.choice(["position", "mse", "token", "x", "\ud800", "data", ""])] = parent.pop(key)
        else:
            parent[key] = {str(key): parent[key]}
    return f"{action} {list(path)}"


def dump(document, rnd: random.Random) -> bytes:
    text = json.dumps(document)  # NaN and Infinity as JSON's non-standard literals, surrogates escaped
    levels = rnd.choice([40, 2_000, 200_000])
    return text.replace(json.dumps(DEEP), "[" * levels + "]" * levels).encode()


def mutate_bytes(content: bytes, rnd: random.Random) -> tuple[bytes, str]:
    action = rnd.choice(["truncate", "cut", "insert", "number"])
    at = rnd.randrange(len(content))
    if action == "truncate":
        return content[:at], f"truncate at {at}"
    if action == "cut":
        return content[:at] + content[at + rnd.randint(1, 200) :], f"cut at {at}"
    if action == "insert":
        junk = rnd.choice(JUNK)
        return content[:at] + junk + content[at:], f"insert {junk[:10]!r} at {at}"
    numbers = list(re.finditer(rb"-?\d+(\.\d+)?([eE][-+]?\d+)?", content))
    found = rnd.choice(numbers)
    new = rnd.choice([b"NaN", b"-Infinity", b"1e999", b"9" * 5_000, b"-9223372036854775809", b"1.5", b"true"])
    return content[: found.start()] + new + content[
        found.end() :
    ], f"number {found.group()[:12]!r} -> {new[:12]!r}"


def malformed_files(good: bytes, count: int, seed: int):
    rnd = random.Random(seed)
    for index in range(count):
        document = json.loads(good)
        done = [mutate_tree(document, rnd) for _ in range(rnd.choice([1, 1, 2, 3]))]
        content = dump(document, rnd)
        if rnd.random() < 0.25:
            content, what = mutate_bytes(content, rnd)
            done.append(what)
        if rnd.random() < 0.1:
            content, done = good + b"\n" + content, ["a good document, then:", *done]
        yield f"#{index}: " + "; ".join(done), content


def error_of(response) -> str:
    found = re.search(r'role="alert"[^>]*>(.*?)</p>', response.content.decode(), re.S)
    return f"{response.status_code} {html.unescape(found.group(1)) if found else ''}"


def test_the_generator_is_reproducible(good):
    first = [c for _, c in malformed_files(good, 20, SEED)]
    assert first == [c for _, c in malformed_files(good, 20, SEED)]
    assert len(set(first)) == 20


@pytest.fixture
def good(analysis) -> bytes:
    return export_json(analysis, services.rows_of(analysis))


def test_hundreds_of_malformed_imports_get_no_5xx_and_the_pages_still_render(
    client, alice, analysis, good, settings
):
    settings.LENSWEB_IMPORT_RATE = ""  # what is fuzzed here is the file, not the meter
    settings.LENSWEB_MAX_POSITIONS_PER_DAY = 0
    client.force_login(alice)
    client.raise_request_exception = False  # a crash is a 500 answer, reported with the file that caused it
    answers, failures = {}, []
    for what, content in malformed_files(good, FILES, SEED):
        before = Analysis.objects.filter(owner=alice).count()
        response = client.post(reverse("results:import"), {"file": SimpleUploadedFile("fuzz.json", content)})
        answers[response.status_code] = answers.get(response.status_code, 0) + 1
        if response.status_code not in (302, 400):
            failures.append(f"{what}: {response.status_code}")
        elif response.status_code == 400 and (
            b'role="alert"' not in response.content or Analysis.objects.filter(owner=alice).count() != before
        ):
            failures.append(f"{what}: a 400 without its error, or with analyses stored")
    assert not failures, f"{len(failures)} of {FILES} files (seed {SEED}) were mishandled: {failures[:10]}"
    assert answers.get(302, 0) >= 20 and answers.get(400, 0) >= 100, answers  # both kinds were exercised

    # Afterwards: the user's pages, and every imported analysis, render.
    pages = 1 + Analysis.objects.filter(owner=alice).count() // 25
    for page in range(1, pages + 1):
        assert client.get(reverse("results:history"), {"page": page}).status_code == 200, (
            f"history page {page}"
        )
    assert client.get(reverse("analyses:index")).status_code == 200
    imported = Analysis.objects.filter(owner=alice, metadata__imported=True).order_by("pk")
    sample = random.Random(SEED).sample(list(imported), min(25, imported.count()))
    for a in imported:
        for name in ("results:detail", "results:export_json", "results:export_csv"):
            response = client.get(reverse(name, args=[a.pk]))
            assert response.status_code == 200, f"{name} of #{a.pk} ({a.metadata.get('imported_from')})"
    for a in sample:
        for params in ({"view": "transposed"}, {"view": "fulltext"}, {"sort": "mse", "dir": "desc"}):
            assert client.get(reverse("results:detail", args=[a.pk]), params).status_code == 200, (
                a.pk,
                params,
            )
        compare = client.get(reverse("results:compare"), {"a": analysis.pk, "b": a.pk})
        assert compare.status_code in (200, 400), f"compare #{analysis.pk} with #{a.pk}"
        for position in AnalysisRow.objects.filter(analysis=a).values_list("position", flat=True)[:3]:
            answer = client.get(reverse("results:candidates", args=[a.pk, position]))
            assert answer.status_code in (200, 404), f"candidates of #{a.pk} at {position}"
        # and the file exported from it imports again
        again = client.get(reverse("results:export_json", args=[a.pk])).content
        response = client.post(reverse("results:import"), {"file": SimpleUploadedFile("again.json", again)})
        assert response.status_code == 302, f"re-import of #{a.pk}: {error_of(response)}"

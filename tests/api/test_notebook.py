"""What a notebook needs beside submit and poll: list (owner-only, filtered, cursor-paginated), batch submit
(one answer per item), exports by key (the browser's bytes), html_url, and the quota headers."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from django.utils import timezone

from lensweb.analyses.models import Analysis, Generation

from .conftest import error_of

URL = "/api/v1/analyses"
pytestmark = pytest.mark.django_db(transaction=True)


def _submit(api, key, text, **options):
    body = {"text": text, **({"options": options} if options else {})}
    response = api.post(URL, body, key=key)
    assert response.status_code in (200, 202), response.json_body
    return response.json_body["id"]


# --- list -----------------------------------------------------------------------------------------------


def test_list_is_the_owners_own_newest_first_without_rows(api, alice_key, bob_key, live_worker):
    mine = [_submit(api, alice_key, f"text number {i}") for i in range(3)]
    _submit(api, bob_key, "bob's text")
    page = api.get(URL, key=alice_key).json_body
    assert [item["id"] for item in page["items"]] == mine[::-1]
    assert page["next_cursor"] is None
    assert all("rows" not in item for item in page["items"])
    assert page["items"][0]["html_url"].endswith(f"/analyses/{mine[-1]}/")
    bobs = api.get(URL, key=bob_key).json_body["items"]
    assert [item["input"]["text"] for item in bobs] == ["bob's text"]


def test_list_pages_with_a_cursor_and_loses_nothing_while_jobs_arrive(api, alice_key, live_worker):
    ids = [_submit(api, alice_key, f"page text {i}") for i in range(5)]
    first = api.get(f"{URL}?limit=2", key=alice_key).json_body
    assert [i["id"] for i in first["items"]] == ids[:2:-1][:2] == [ids[4], ids[3]]
    newer = _submit(api, alice_key, "arrives between pages")
    second = api.get(f"{URL}?limit=2&cursor={first['next_cursor']}", key=alice_key).json_body
    third = api.get(f"{URL}?limit=2&cursor={second['next_cursor']}", key=alice_key).json_body
    assert [i["id"] for i in second["items"] + third["items"]] == [ids[2], ids[1], ids[0]]
    assert third["next_cursor"] is None
    assert newer not in [i["id"] for i in first["items"] + second["items"] + third["items"]]


def test_list_filters(api, alice_key, run_jobs, live_worker):
    done_id = _submit(api, alice_key, "The Eiffel Tower is in Paris")
    run_jobs()
    queued_id = _submit(api, alice_key, "A cat on a mat")

    def ids(query):
        return [i["id"] for i in api.get(f"{URL}?{query}", key=alice_key).json_body["items"]]

    assert ids("status=done") == [done_id]
    assert ids("status=queued") == [queued_id]
    assert ids("q=eiffel") == [done_id]
    assert ids("lens=tiny") == [queued_id, done_id]
    assert ids("lens=elsewhere") == []
    Analysis.objects.filter(pk=done_id).update(created_at=timezone.now() - timedelta(days=3))
    yesterday = (timezone.now() - timedelta(days=1)).isoformat().replace("+00:00", "Z")
    assert ids(f"created_after={yesterday}") == [queued_id]
    assert ids(f"created_before={yesterday}") == [done_id]


@pytest.mark.parametrize(
    "query, field",
    [
        ("status=finished", "status"),
        ("limit=0", "limit"),
        ("limit=101", "limit"),
        ("cursor=garbage", "cursor"),
    ],
)
def test_bad_list_queries_are_400_naming_the_parameter(api, alice_key, query, field):
    response = api.get(f"{URL}?{query}", key=alice_key)
    assert response.status_code == 400
    assert error_of(response)["field"] == field


# --- batch ----------------------------------------------------------------------------------------------


def test_batch_answers_each_item_in_order_and_a_bad_one_refuses_only_itself(api, alice_key, live_worker):
    items = [
        {"text": "first good text"},
        {"text": "x", "options": {"best_of_k": 0}},
        {"messages": [{"role": "user", "content": "a chat"}]},
        {"text": "x", "colour": "red"},
        "not an object",
        {"text": "last good text", "lens": "no-such-lens"},
    ]
    response = api.post(f"{URL}/batch", {"items": items}, key=alice_key)
    assert response.status_code == 200
    answers = response.json_body["items"]
    assert len(answers) == len(items)
    assert answers[0]["status"] == "queued" and answers[0]["html_url"].endswith(
        f"/analyses/{answers[0]['id']}/"
    )
    assert answers[1]["error"]["field"] == "options.best_of_k"
    assert answers[2]["status"] == "queued"
    assert answers[3]["error"] == {
        "code": "invalid_body",
        "message": "unknown field: colour",
        "field": "colour",
    }
    assert answers[4]["error"]["code"] == "invalid_body"
    assert answers[5]["error"]["code"] == "unknown_lens"
    queued = Analysis.objects.order_by("id")
    assert [job.pk for job in queued] == [answers[0]["id"], answers[2]["id"]]
    assert queued[1].input == {"messages": [{"role": "user", "content": "a chat"}]}


def test_batch_takes_json_lines(api, alice_key, live_worker):
    lines = "\n".join(json.dumps({"text": f"line {i}"}) for i in range(3)) + "\n"
    response = api.client.post(
        f"{URL}/batch",
        data=lines,
        content_type="application/x-ndjson",
        headers={"Authorization": f"Bearer {alice_key}"},
    )
    assert response.status_code == 200, response.content
    assert [a["status"] for a in response.json()["items"]] == ["queued"] * 3
    assert sorted(j.input["text"] for j in Analysis.objects.all()) == ["line 0", "line 1", "line 2"]


def test_batch_is_bounded(api, alice_key, live_worker, settings):
    settings.LENSWEB_API_MAX_BATCH = 2
    response = api.post(f"{URL}/batch", {"items": [{"text": "a"}] * 3}, key=alice_key)
    assert response.status_code == 400 and error_of(response)["field"] == "items"
    assert not Analysis.objects.exists()
    settings.LENSWEB_API_MAX_BATCH_BODY_BYTES = 100
    response = api.post(f"{URL}/batch", {"items": [{"text": "a" * 200}]}, key=alice_key)
    assert response.status_code == 413 and error_of(response)["code"] == "payload_too_large"


def test_batch_items_meet_the_same_caps_as_single_submits(api, alice_key, live_worker, settings):
    settings.LENSWEB_MAX_QUEUED_PER_USER = 2
    answers = api.post(f"{URL}/batch", {"items": [{"text": f"t{i}"} for i in range(3)]}, key=alice_key)
    statuses = [a.get("status") or a["error"]["code"] for a in answers.json_body["items"]]
    assert statuses == ["queued", "queued", "queue_full"]


# --- exports by key -------------------------------------------------------------------------------------


def test_bearer_exports_equal_the_browsers_byte_for_byte(
    api, client, alice, alice_key, run_jobs, live_worker
):
    analysis_id = _submit(api, alice_key, 'The "Eiffel" Tower, =1+1, is in Paris', kl=True)
    generation = api.post("/api/v1/generations", {"text": "Once upon"}, key=alice_key).json_body
    run_jobs()
    client.force_login(alice)
    pairs = [
        (f"/api/v1/analyses/{analysis_id}/export.json", f"/analyses/{analysis_id}/export.json"),
        (f"/api/v1/analyses/{analysis_id}/export.csv", f"/analyses/{analysis_id}/export.csv"),
        (f"/api/v1/analyses/{analysis_id}/export.csv?raw=true", f"/analyses/{analysis_id}/export.csv?raw=1"),
        (
            f"/api/v1/generations/{generation['id']}/export.json",
            f"/generations/{generation['id']}/export.json",
        ),
        (f"/api/v1/generations/{generation['id']}/export.csv", f"/generations/{generation['id']}/export.csv"),
    ]
    for by_key, by_browser in pairs:
        ours = api.get(by_key, key=alice_key)
        theirs = client.get(by_browser)
        assert ours.status_code == theirs.status_code == 200, (by_key, ours.status_code, theirs.status_code)
        assert ours.content == theirs.content and len(ours.content) > 50, by_key
        assert ours["Content-Type"] == theirs["Content-Type"]
        assert ours["Content-Disposition"] == theirs["Content-Disposition"]
    data = json.loads(api.get(pairs[0][0], key=alice_key).content)
    assert len(data["data"]) == Analysis.objects.get(pk=analysis_id).progress_total
    samples = json.loads(api.get(pairs[3][0], key=alice_key).content)["samples"]
    assert samples == Generation.objects.get(pk=generation["id"]).samples


def test_exports_follow_the_access_rule(api, alice_key, bob_key, staff_key, live_worker):
    analysis_id = _submit(api, alice_key, "private text")
    assert api.get(f"{URL}/{analysis_id}/export.json", key=bob_key).status_code == 404
    assert api.get(f"{URL}/{analysis_id}/export.csv", key=staff_key).status_code == 200


# --- html_url, headers ----------------------------------------------------------------------------------


def test_html_url_opens_the_results_page(api, client, alice, alice_key, run_jobs, live_worker):
    analysis_id = _submit(api, alice_key, "The Eiffel Tower is in Paris")
    run_jobs()
    body = api.get(f"{URL}/{analysis_id}", key=alice_key).json_body
    client.force_login(alice)
    page = client.get(body["html_url"])
    assert page.status_code == 200 and f"Analysis #{analysis_id}".encode() in page.content
    generation = api.post(
        "/api/v1/generations", {"text": "Once upon", "then_analyse": True}, key=alice_key
    ).json_body
    run_jobs()
    generation = api.get(f"/api/v1/generations/{generation['id']}", key=alice_key).json_body
    page = client.get(generation["html_url"])
    assert page.status_code == 200 and f"Generation #{generation['id']}".encode() in page.content
    assert client.get(generation["analysis_html_url"]).status_code == 200


def test_rate_and_quota_headers_count_down(api, alice_key, live_worker, settings):
    settings.LENSWEB_API_RATE = "50/m"
    settings.LENSWEB_MAX_POSITIONS_PER_DAY = 100
    first = api.get("/api/v1/lenses", key=alice_key)
    assert first["X-RateLimit-Limit"] == "50"
    assert first["X-Quota-Positions-Remaining"] == "100"
    api.post(URL, {"text": "The Eiffel Tower is in Paris"}, key=alice_key)  # 7 positions
    later = api.get("/api/v1/lenses", key=alice_key)
    assert int(later["X-RateLimit-Remaining"]) == int(first["X-RateLimit-Remaining"]) - 2
    assert later["X-Quota-Positions-Remaining"] == "93"

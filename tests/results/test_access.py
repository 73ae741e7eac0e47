"""Who sees what: every results view against the owner, another user, staff and an anonymous visitor,
and the share link on and off. One matrix, so a new view is one new line."""

from __future__ import annotations

import pytest
from django.test import Client
from django.urls import reverse

from lensweb.analyses.models import Analysis
from lensweb.results.models import ShareLink

from .conftest import create_analysis

OWNER, OTHER, STAFF, ANON = "owner", "other", "staff", "anonymous"
WHO = (OWNER, OTHER, STAFF, ANON)

# (url name, query, expected status for owner / other / staff) -- anonymous is always sent to log in.
READ_VIEWS = [
    ("results:detail", "", 200),
    ("results:detail", "?view=transposed", 200),
    ("results:detail", "?view=fulltext&metric=relative_rmse", 200),
    ("results:export_json", "", 200),
    ("results:export_csv", "", 200),
]
# views of one row: (url name, position)
ROW_VIEWS = [("results:candidates", 4)]


@pytest.fixture
def users(alice, bob, staff):
    return {OWNER: alice, OTHER: bob, STAFF: staff, ANON: None}


def client_for(users, who) -> Client:
    client = Client()
    if users[who] is not None:
        client.force_login(users[who])
    return client


def expected_read(who: str) -> int:
    return {OWNER: 200, OTHER: 404, STAFF: 200, ANON: 302}[who]


@pytest.mark.django_db
@pytest.mark.parametrize("who", WHO)
@pytest.mark.parametrize("name,query,_", READ_VIEWS)
def test_reading_one_analysis(users, analysis, who, name, query, _):
    response = client_for(users, who).get(reverse(name, args=[analysis.pk]) + query)
    assert response.status_code == expected_read(who)
    if who == ANON:
        assert response.url.startswith(reverse("login"))


@pytest.mark.django_db
@pytest.mark.parametrize("who", WHO)
@pytest.mark.parametrize("name,position", ROW_VIEWS)
def test_reading_one_row(users, analysis, who, name, position):
    response = client_for(users, who).get(reverse(name, args=[analysis.pk, position]))
    assert response.status_code == expected_read(who)


@pytest.mark.django_db
@pytest.mark.parametrize("who", WHO)
def test_compare_needs_both_analyses_visible(users, alice, tiny_result, tiny_result_k1, who):
    a, b = create_analysis(alice, tiny_result), create_analysis(alice, tiny_result_k1)
    response = client_for(users, who).get(reverse("results:compare") + f"?a={a.pk}&b={b.pk}")
    assert response.status_code == expected_read(who)


@pytest.mark.django_db
def test_compare_with_someone_elses_analysis_is_not_found(users, alice, bob, tiny_result):
    mine, theirs = create_analysis(alice, tiny_result), create_analysis(bob, tiny_result)
    response = client_for(users, OWNER).get(reverse("results:compare") + f"?a={mine.pk}&b={theirs.pk}")
    assert response.status_code == 404


@pytest.mark.django_db
@pytest.mark.parametrize("who", WHO)
def test_history_lists_only_your_own(users, analysis, who):
    response = client_for(users, who).get(reverse("results:history"))
    if who == ANON:
        assert response.status_code == 302
        return
    assert response.status_code == 200
    listed = f'id="history-{analysis.pk}"' in response.content.decode()
    assert listed == (who == OWNER)  # staff read any analysis by id, but history is one's own


@pytest.mark.django_db
@pytest.mark.parametrize("who", WHO)
def test_only_the_owner_shares(users, analysis, who):
    response = client_for(users, who).post(reverse("results:share", args=[analysis.pk]), {"enabled": "1"})
    assert response.status_code == {OWNER: 302, OTHER: 404, STAFF: 404, ANON: 302}[who]
    assert ShareLink.objects.filter(analysis=analysis).exists() == (who == OWNER)


@pytest.mark.django_db
@pytest.mark.parametrize("who", WHO)
def test_only_the_owner_deletes(users, analysis, who):
    response = client_for(users, who).post(reverse("results:delete", args=[analysis.pk]))
    assert response.status_code == {OWNER: 302, OTHER: 404, STAFF: 404, ANON: 302}[who]
    assert Analysis.objects.filter(pk=analysis.pk).exists() == (who != OWNER)


@pytest.mark.django_db
def test_delete_needs_the_csrf_token(alice, analysis):
    client = Client(enforce_csrf_checks=True)
    client.force_login(alice)
    assert client.post(reverse("results:delete", args=[analysis.pk])).status_code == 403
    assert Analysis.objects.filter(pk=analysis.pk).exists()


@pytest.mark.django_db
@pytest.mark.parametrize("who", WHO)
def test_a_shared_link_works_for_everyone_while_on(users, alice, analysis, who):
    owner = client_for(users, OWNER)
    owner.post(reverse("results:share", args=[analysis.pk]), {"enabled": "1"})
    token = ShareLink.objects.get(analysis=analysis).token
    assert len(token) >= 32
    client = client_for(users, who)
    for name in ("results:shared", "results:shared_export_json", "results:shared_export_csv"):
        assert client.get(reverse(name, args=[token])).status_code == 200, name
    assert client.get(reverse("results:shared_candidates", args=[token, 3])).status_code == 200
    page = client.get(reverse("results:shared", args=[token])).content.decode()
    assert "shared, read-only" in page
    assert 'id="share-box"' not in page and "results:delete" not in page  # nothing to change from there
    assert f"/analyses/{analysis.pk}/delete/" not in page

    owner.post(reverse("results:share", args=[analysis.pk]), {"enabled": "0"})
    for name in ("results:shared", "results:shared_export_json", "results:shared_export_csv"):
        assert client.get(reverse(name, args=[token])).status_code == 404, name
    assert client.get(reverse("results:shared_candidates", args=[token, 3])).status_code == 404

    owner.post(reverse("results:share", args=[analysis.pk]), {"enabled": "1"})
    assert ShareLink.objects.get(analysis=analysis).token != token  # an old link stays dead
    assert client.get(reverse("results:shared", args=[token])).status_code == 404


@pytest.mark.django_db
@pytest.mark.parametrize("who", WHO)
def test_unknown_share_tokens_are_not_found(users, who):
    assert client_for(users, who).get(reverse("results:shared", args=["nope" * 8])).status_code == 404


@pytest.mark.django_db
def test_sharing_does_not_open_the_permalink(users, analysis):
    client_for(users, OWNER).post(reverse("results:share", args=[analysis.pk]), {"enabled": "1"})
    assert client_for(users, OTHER).get(reverse("results:detail", args=[analysis.pk])).status_code == 404
    assert client_for(users, ANON).get(reverse("results:detail", args=[analysis.pk])).status_code == 302


@pytest.mark.django_db
@pytest.mark.parametrize("who", WHO)
def test_import_and_preferences_need_a_login(users, who):
    client = client_for(users, who)
    expected = 302 if who == ANON else 200
    assert client.get(reverse("results:import")).status_code == expected
    response = client.post(reverse("results:preferences"), {"scale": "fixed"}, HTTP_HX_REQUEST="true")
    assert response.status_code == (302 if who == ANON else 204)


@pytest.mark.django_db
def test_the_colour_stylesheet_is_public(client):
    response = client.get(reverse("results:colours_css"))
    assert response.status_code == 200 and response["Content-Type"].startswith("text/css")


@pytest.mark.django_db
def test_preferences_never_redirect_off_site(alice):
    client = Client()
    client.force_login(alice)
    response = client.post(reverse("results:preferences"), {"scale": "fixed", "next": "//evil.example/"})
    assert response.status_code == 302 and response.url == reverse("results:history")
    response = client.post(
        reverse("results:preferences"), {"scale": "fixed", "next": "/analyses/history/?q=x"}
    )
    assert response.url == "/analyses/history/?q=x"

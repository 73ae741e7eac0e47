"""The full-text view as a standalone SVG figure: valid XML a paper can include, one box per token coloured by
the page's scale, each token's explanation (escaped) in its <title>, a legend and a caption."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest
from django.urls import reverse

from lensweb.analyses import colours
from lensweb.analyses.models import AnalysisRow
from lensweb.results import figure, services

from .conftest import create_analysis, run_tiny

pytestmark = [pytest.mark.django_db]
SVG = "{http://www.w3.org/2000/svg}"
HOSTILE = "<script>alert('x')</script> & “quoted”"


def parse(response) -> ET.Element:
    assert response.status_code == 200 and response["Content-Type"] == "image/svg+xml"
    return ET.fromstring(response.content)


def token_groups(root: ET.Element) -> list[ET.Element]:
    return root.findall(f".//{SVG}g[@class='token']")


def fill_at(root: ET.Element, position: int) -> str:
    group = next(g for g in token_groups(root) if g.get("data-position") == str(position))
    return group.find(f"{SVG}rect").get("fill")


def test_the_full_text_downloads_as_one_standalone_svg(client, alice, analysis):
    client.force_login(alice)
    page = client.get(reverse("results:detail", args=[analysis.pk])).content.decode()
    url = reverse("results:fulltext_svg", args=[analysis.pk])
    assert url in page and "Full text as SVG" in page
    response = client.get(url, {"metric": "mse", "palette": "classic"})
    assert response["Content-Disposition"] == f'attachment; filename="analysis-{analysis.pk}-fulltext.svg"'
    root = parse(response)
    assert root.tag == f"{SVG}svg"
    width, height = float(root.get("width")), float(root.get("height"))
    assert root.get("viewBox") == f"0 0 {root.get('width')} {root.get('height')}"
    rows = services.rows_of(analysis)
    groups = token_groups(root)
    assert [int(g.get("data-position")) for g in groups] == [r["position"] for r in rows]
    for group in groups:  # one box and one text per token, inside the figure
        rect, text = group.find(f"{SVG}rect"), group.find(f"{SVG}text")
        assert rect is not None and text is not None and group.find(f"{SVG}title") is not None
        assert float(rect.get("x")) >= 0 and float(rect.get("x")) + float(rect.get("width")) <= width
        assert float(rect.get("y")) + float(rect.get("height")) <= height
    assert all(fill_at(root, r["position"]) in colours.PALETTES["classic"]["sequential"] for r in rows)
    assert b"<script" not in response.content and b"href" not in response.content  # nothing to run or fetch


def test_a_high_mse_token_is_coloured_apart_from_a_low_one(client, alice, analysis):
    client.force_login(alice)
    trained = [r for r in services.rows_of(analysis) if r["position"] >= colours.UNTRAINED_POSITIONS]
    low = min(trained, key=lambda r: r["mse"])
    high = max(trained, key=lambda r: r["mse"])
    assert high["mse"] > low["mse"]
    root = parse(client.get(reverse("results:fulltext_svg", args=[analysis.pk]), {"metric": "mse"}))
    assert fill_at(root, high["position"]) != fill_at(root, low["position"])
    scale = colours.build_scale("mse", trained, fitted=True)
    assert fill_at(root, high["position"]) == scale.colours(high["mse"], colours.DEFAULT_PALETTE)[0]


def test_each_token_title_says_position_token_and_escaped_explanation(client, alice, analysis):
    row = AnalysisRow.objects.get(analysis=analysis, position=8)
    row.data = {**row.data, "explanation": HOSTILE}
    row.save()
    client.force_login(alice)
    response = client.get(reverse("results:fulltext_svg", args=[analysis.pk]), {"metric": "mse"})
    assert b"<script>" not in response.content and b"&lt;script&gt;" in response.content
    root = parse(response)
    group = next(g for g in token_groups(root) if g.get("data-position") == "8")
    title = group.find(f"{SVG}title").text
    assert title.startswith(f"#8 · {row.data['token']}") and HOSTILE in title and "mse" in title
    assert group.find(f"{SVG}text").text == row.data["token"]


def test_the_legend_and_caption_name_the_metric_scale_lens_and_layer(client, alice, analysis):
    client.force_login(alice)
    root = parse(client.get(reverse("results:fulltext_svg", args=[analysis.pk]), {"metric": "kl"}))
    texts = ["".join(t.itertext()) for t in root.iter(f"{SVG}text")]
    caption = texts[0]
    assert f"Analysis #{analysis.pk}" in caption and analysis.lens_id in caption
    assert f"layer {analysis.metadata['layer']}" in caption
    legend = root.find(f"{SVG}g[@class='legend']")
    legend_texts = ["".join(t.itertext()) for t in legend.iter(f"{SVG}text")]
    assert legend_texts[0].startswith("KL:")
    swatches = legend.findall(f"{SVG}rect")
    assert len(swatches) == colours.SEQUENTIAL_STEPS
    assert len({s.get("fill") for s in swatches}) == colours.SEQUENTIAL_STEPS


def test_long_text_wraps_into_lines_and_breaks_after_a_newline():
    class Cell:
        def __init__(self, position, token):
            self.position, self.token = position, token
            self.fulltext_text = token

    cells = [Cell(p, " word") for p in range(300)] + [Cell(300, "end↵"), Cell(301, "next")]
    boxes, bottom = figure._layout(cells, 16, 0, 884)
    lines = sorted({b.y for b in boxes})
    assert len(lines) > 3 and all(b.x + b.width <= 884 for b in boxes)
    assert boxes[-1].y > boxes[-2].y and boxes[-1].x == 16  # the token after a newline starts a line
    assert bottom > boxes[-1].y


def test_a_control_character_in_a_token_still_makes_valid_xml(client, alice, tiny_result):
    analysis = create_analysis(alice, tiny_result)
    row = AnalysisRow.objects.get(analysis=analysis, position=3)
    row.data = {**row.data, "token": "bad\x1bbyte", "explanation": "bell\x07here"}
    row.save()
    client.force_login(alice)
    root = parse(client.get(reverse("results:fulltext_svg", args=[analysis.pk])))
    assert len(token_groups(root)) == len(services.rows_of(analysis))


def test_a_newline_in_the_text_starts_a_new_line(client, alice):
    analysis = create_analysis(alice, run_tiny("First line.\nSecond line."), text="First line.\nSecond line.")
    client.force_login(alice)
    root = parse(client.get(reverse("results:fulltext_svg", args=[analysis.pk])))
    groups = token_groups(root)
    after = [i + 1 for i, g in enumerate(groups[:-1]) if "↵" in (g.find(f"{SVG}text").text or "")]
    assert after, "the tiny tokenizer kept no newline token"
    first_x = groups[0].find(f"{SVG}rect").get("x")
    for i in after:
        assert groups[i].find(f"{SVG}rect").get("x") == first_x
        assert float(groups[i].find(f"{SVG}rect").get("y")) > float(groups[i - 1].find(f"{SVG}rect").get("y"))


def test_owner_gets_it_another_user_gets_404_and_anonymous_logs_in(client, alice, bob, analysis):
    url = reverse("results:fulltext_svg", args=[analysis.pk])
    anonymous = client.get(url)
    assert anonymous.status_code == 302 and anonymous.url.startswith(reverse("login"))
    client.force_login(bob)
    assert client.get(url).status_code == 404
    client.force_login(alice)
    assert client.get(url).status_code == 200


def test_a_shared_link_gives_the_same_svg_to_anyone(client, alice, analysis):
    token = services.do_share(alice, analysis.pk).token
    anonymous = client.get(reverse("results:shared_fulltext_svg", args=[token]))
    client.force_login(alice)
    own = client.get(reverse("results:fulltext_svg", args=[analysis.pk]))
    assert anonymous.status_code == own.status_code == 200
    assert anonymous.content == own.content
    assert client.get(reverse("results:shared_fulltext_svg", args=["no-such-token"])).status_code == 404


def test_a_split_glyph_shows_once_across_its_parts(client, alice, tiny_result):
    """Positions 1–2 as the two parts of one glyph (metadata["glyphs"]): the first part's box shows it, the
    second is a narrow joined box with no text, and both say which glyph they belong to."""
    analysis = create_analysis(alice, tiny_result, glyphs=[[1, 3, "é"]])
    client.force_login(alice)
    root = parse(client.get(reverse("results:fulltext_svg", args=[analysis.pk])))
    groups = {int(g.get("data-position")): g for g in token_groups(root)}
    first, second = groups[1], groups[2]
    assert first.find(f"{SVG}text").text == "é" and not (second.find(f"{SVG}text").text or "").strip()
    assert float(second.find(f"{SVG}rect").get("width")) < float(first.find(f"{SVG}rect").get("width"))
    assert "é" in first.find(f"{SVG}title").text and "é" in second.find(f"{SVG}title").text

"""The one colour module: bins, fixed and fitted domains, numeric legends, generated CSS."""

from __future__ import annotations

import re

from lensweb.analyses import colours


def rows(mses, saliences=None):
    return [
        {"position": p, "mse": m, "relative_rmse": m / 10, "kl": None, "token_salience": s}
        for p, (m, s) in enumerate(zip(mses, saliences or [None] * len(mses), strict=True))
    ]


def test_diverging_salience_is_centred_on_zero():
    scale = colours.build_scale("salience", rows([1] * 8, [[-1.0, 1.0]] * 8), fitted=True)
    assert (scale.lo, scale.hi) == (-1.0, 1.0)
    assert scale.css_class(0.0) == "d5"  # the neutral middle of 11
    assert scale.css_class(-1.0) == "d0" and scale.css_class(1.0) == "d10"
    assert scale.css_class(-5) == "d0" and scale.css_class(5) == "d10"  # clipped to the ends
    assert scale.css_class(None) == "" and scale.css_class(float("nan")) == ""


def test_fitted_scales_ignore_untrained_positions():
    data = rows([500.0] + [1.0] * 5 + [2.0, 4.0, 8.0])
    scale = colours.build_scale("mse", data, fitted=True)
    assert (scale.lo, scale.hi) == (2.0, 8.0) and scale.log
    assert scale.css_class(2.0) == "q0" and scale.css_class(8.0) == "q8" and scale.css_class(500.0) == "q8"


def test_fixed_scales_do_not_depend_on_the_data():
    a = colours.build_scheme(rows([1.0] * 8), "fixed")
    b = colours.build_scheme(rows([100.0] * 8), "fixed")
    assert a.scales == b.scales
    assert a["relative_rmse"].lo == 0 and a["relative_rmse"].hi == 1.5


def test_legend_has_numbers_for_every_swatch():
    scale = colours.build_scale("salience", [], fitted=False)
    legend = scale.legend()
    assert len(legend) == colours.DIVERGING_STEPS
    assert legend[0]["label"] == "≤ -0.500" and legend[-1]["label"] == "≥ +0.500"
    assert legend[5]["label"] == "0"
    assert all(re.search(r"\d", s["label"]) and s["range"] for s in legend)


def test_generated_css_covers_every_class_of_every_palette():
    css = colours.palette_css()
    for palette in colours.PALETTES:
        for i in range(colours.DIVERGING_STEPS):
            assert f".pal-{palette} .d{i}{{background:" in css
        for i in range(colours.SEQUENTIAL_STEPS):
            assert f".pal-{palette} .q{i}{{background:" in css
    assert len(colours.palette_version()) == 12


def test_text_stays_readable_on_dark_swatches():
    css = colours.palette_css()
    assert ".pal-safe .q8{background:#440154;color:#fff}" in css
    assert ".pal-safe .q0{background:#fde725;color:#000}" in css


def test_numbers_are_formatted_for_reading():
    assert (
        colours.fmt(0.123456) == "0.123"
        and colours.fmt(12.3456) == "12.3"
        and colours.fmt(1234.5) == "1.23e+03"
    )
    assert colours.fmt(0.05, signed=True) == "+0.0500" and colours.fmt(-0.05, signed=True) == "-0.0500"

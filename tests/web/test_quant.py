"""LENSWEB_CPU_QUANT=int8 (inference.quant): the blocks' Linear layers quantised, heads and embeddings left in
float32, both families' greedy rows within the README's bound of float32 (mean |Δmse| at most 20 % of the mean
mse), a float32 lens of the same base in the same process untouched, and a result keyed apart from float32."""

from __future__ import annotations

import statistics

import pytest
import torch

from inference import engine
from inference.cachekey import placement
from inference.errors import ModelLoadError
from inference.models import blocks
from inference.quant import pick_quant
from inference.types import AnalysisInput, AnalysisOptions

from .test_placement import SPECS

BOUND = 0.20  # README, "Less arithmetic per row on the CPU"
TEXT = "The Eiffel Tower is in Paris and it is tall. Bees make honey in the summer."


def greedy_rows(lens):
    result = engine.analyze(lens, AnalysisInput(text=TEXT), AnalysisOptions(temperature=0.0, salience=False))
    return [row.to_dict() for row in result.rows]


QUANTISED = torch.ao.nn.quantized.dynamic.Linear


def linear_types(model) -> set[str]:
    """ "int8" and/or "float32": the kinds of the Linear layers in the model's blocks."""
    found = set()
    for module in blocks(model).modules():
        if isinstance(module, QUANTISED):
            found.add("int8")
        elif type(module) is torch.nn.Linear:
            found.add("float32")
    return found


@pytest.mark.parametrize("family", SPECS)
def test_int8_rows_stay_within_the_documented_bound_of_float32(family, monkeypatch):
    spec = SPECS[family]()
    monkeypatch.setenv("LENSWEB_CPU_QUANT", "")
    exact = engine.load(spec, device="cpu")
    monkeypatch.setenv("LENSWEB_CPU_QUANT", "int8")
    quantised = engine.load(spec, device="cpu")
    model = quantised.model if family == "lens" else quantised.av
    assert linear_types(model) == {"int8"}
    assert isinstance(model.get_output_embeddings(), torch.nn.Linear)  # the head stays float32
    assert quantised.metadata()["dtype"] == "float32+int8" and exact.metadata()["dtype"] == "float32"
    exact_model = exact.model if family == "lens" else exact.av
    assert linear_types(exact_model) == {
        "float32"
    }  # not the quantised one: models are shared per quantisation

    a, b = greedy_rows(exact), greedy_rows(quantised)
    assert [r["position"] for r in a] == [r["position"] for r in b]
    mean_mse = statistics.mean(r["mse"] for r in a)
    drift = statistics.mean(abs(x["mse"] - y["mse"]) for x, y in zip(a, b, strict=True))
    assert 0 < drift <= BOUND * mean_mse, (drift, mean_mse)


def test_the_setting_is_checked_and_applies_on_a_cpu_only(monkeypatch):
    monkeypatch.setenv("LENSWEB_CPU_QUANT", "int4")
    with pytest.raises(ModelLoadError, match="LENSWEB_CPU_QUANT is 'int4'; expected int8"):
        pick_quant("cpu")
    monkeypatch.setenv("LENSWEB_CPU_QUANT", "INT8")
    assert pick_quant("cpu") == "int8" and pick_quant("cuda:0") == ""


def test_a_quantised_result_is_keyed_apart_from_float32():
    assert placement("cpu", "", "int8") == ("cpu", "float32+int8")
    assert placement("cpu", "", "") == ("cpu", "float32")
    assert placement("cuda", "", "int8") == ("cuda", "bfloat16")  # on a GPU it does nothing

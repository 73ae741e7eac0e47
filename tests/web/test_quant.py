"""LENSWEB_CPU_QUANT=int8 (inference.quant): the blocks' Linear layers quantised, heads and embeddings left in
float32, both families' greedy rows within the README's bound of float32 (mean |Δmse| at most 20 % of the mean
mse), a float32 lens of the same base in the same process untouched, and a result keyed apart from float32."""

from __future__ import annotations

import dataclasses
import importlib.util
import statistics

import pytest
import torch

from inference import engine
from inference.cachekey import placement
from inference.errors import ModelLoadError, RegistryError
from inference.models import blocks
from inference.quant import _bitsandbytes_int8, pick_quant, stays_on_device
from inference.registry import load_registry
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
    assert placement("cuda", "", "int8") == ("cuda", "bfloat16")  # LENSWEB_CPU_QUANT: CPUs only
    assert placement("cuda", "", "", "int8") == ("cuda", "bfloat16+int8")  # the lens' own, anywhere
    assert placement("cpu", "", "", "int8") == ("cpu", "float32+int8")


@pytest.mark.parametrize("family", SPECS)
def test_a_lens_the_registry_marks_int8_loads_with_8_bit_weights_beside_its_full_precision_twin(
    family, monkeypatch
):
    monkeypatch.setenv("LENSWEB_CPU_QUANT", "")
    full = SPECS[family]()
    eight = dataclasses.replace(full, id=f"{full.id}-int8", quant="int8")
    exact, quantised = engine.load(full, device="cpu"), engine.load(eight, device="cpu")
    pick = (lambda lens: lens.model) if family == "lens" else (lambda lens: lens.av)
    assert linear_types(pick(quantised)) == {"int8"} and linear_types(pick(exact)) == {"float32"}
    assert quantised.metadata()["dtype"] == "float32+int8" and exact.metadata()["dtype"] == "float32"
    assert pick_quant("cuda:0", "int8") == "int8"  # on a GPU too: bitsandbytes' layers there


def test_the_registry_checks_quant(tmp_path):
    registry = tmp_path / "lenses.toml"
    registry.write_text('[[lens]]\nid = "a"\nname = "a"\ncheckpoint = "demo"\nquant = "int4"\n')
    with pytest.raises(RegistryError, match="'quant' is 'int4'; expected \"int8\""):
        load_registry(str(registry))
    registry.write_text('[[lens]]\nid = "a"\nname = "a"\ncheckpoint = "demo"\nquant = "int8"\n')
    assert load_registry(str(registry)).get("a").quant == "int8"


@pytest.mark.skipif(importlib.util.find_spec("bitsandbytes") is not None, reason="bitsandbytes is installed")
def test_int8_on_cuda_without_bitsandbytes_says_what_to_install():
    with pytest.raises(ModelLoadError, match="needs bitsandbytes"):
        _bitsandbytes_int8(torch.device("cuda"))


def test_a_lens_with_8_bit_cuda_weights_is_let_go_rather_than_moved_to_the_cpu():
    @dataclasses.dataclass
    class OnGpu:  # the two fields the rule reads: no GPU is needed to check it
        quant: str = "int8"
        device: torch.device = torch.device("cuda:0")

    lens = OnGpu()
    assert stays_on_device(lens) and engine.move(lens, "cpu") is None
    assert not stays_on_device(OnGpu(quant=""))

"""A lens checkpoint is a pickle: only tensors and the research code's numpy RNG state may come out of it.
Anything else is refused by name before it runs, and concurrent reads do not undo each other's allow-list."""

from __future__ import annotations

import re
import threading

import numpy as np
import pytest
import torch
from numpy.testing._private.utils import runstring

from inference.checkpoints import read_checkpoint
from inference.errors import CheckpointError

D = 4
ROUNDS = 20  # of 8 concurrent reads; before the fix about 1 read in 10 failed


def lens_dict(numpy_state=None, optimizer_tensors: int = 0) -> dict:
    """A small but complete research-format checkpoint (spec §9), with the writer's training extras: the
    optimizer state (before the RNG state, as the research writer orders them) and `rng_states`."""
    return {
        "step": 0,
        "optim": {"state": {i: {"exp_avg": torch.zeros(D)} for i in range(optimizer_tensors)}},
        "config": {"model_name": "unused", "layer_l": 0, "t_text": 2, "trainable_components": {}},
        "models": {
            "decoder": {
                "proj.weight": torch.eye(D),
                "proj.bias": torch.zeros(D),
                "prompt_left_emb": torch.ones(2, D),
                "prompt_right_emb": torch.ones(1, D),
            },
            "encoder": {"soft_prompt_embeddings": torch.ones(3, D)},
        },
        "rng_states": {
            "torch": torch.get_rng_state(),
            "numpy": np.random.get_state() if numpy_state is None else numpy_state,
        },
    }


def save(path, raw, **kwargs):
    torch.save(raw, path, **kwargs)
    return path


class RunString:
    """numpy.testing's runstring is exec(): unpickled, it would write `marker`."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (runstring, (f"open({self.marker!r}, 'w').write('ran')", {}))


class SaveText:
    """numpy.savetxt writes any file it is given."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (np.savetxt, (self.marker, [1.0, 2.0]))


class Exec:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').write('ran')",))


@pytest.mark.parametrize(
    "state",
    [
        pytest.param(lambda: np.random.get_state(), id="np.random.get_state"),
        pytest.param(lambda: np.random.default_rng(1), id="default_rng"),
        pytest.param(lambda: np.random.RandomState(2), id="RandomState"),
        pytest.param(lambda: np.random.Generator(np.random.PCG64DXSM(3)), id="PCG64DXSM"),
        pytest.param(lambda: np.random.Generator(np.random.Philox(4)), id="Philox"),
    ],
)
def test_the_research_rng_state_loads(tmp_path, state):
    ckpt = read_checkpoint(save(tmp_path / "lens.pt", lens_dict(state())))
    assert ckpt.layer == 0 and ckpt.decoder.proj_weight.shape == (1, D, D)


@pytest.mark.parametrize(
    "payload, global_name",
    [
        (RunString, "numpy.testing._private.utils.runstring"),
        (SaveText, "numpy.savetxt"),
        (Exec, "builtins.exec"),
    ],
)
@pytest.mark.parametrize("where", ["top level", "inside the rng state"])
def test_a_global_with_side_effects_is_refused_by_name_before_it_runs(tmp_path, payload, global_name, where):
    marker = tmp_path / "marker"
    raw = lens_dict()
    if where == "top level":
        raw["extra"] = payload(marker)
    else:
        raw["rng_states"]["numpy"] = (raw["rng_states"]["numpy"], payload(marker))
    path = save(tmp_path / "evil.pt", raw)
    with pytest.raises(CheckpointError, match=rf"pickles {re.escape(global_name)}\b.*refusing"):
        read_checkpoint(path)
    assert not marker.exists(), f"{global_name} ran while the checkpoint was read"


def test_a_pickle_the_static_scan_cannot_read_is_refused_without_running(tmp_path):
    """Protocol 4 names globals through the stack (STACK_GLOBAL), which the scan cannot list: refused."""
    marker = tmp_path / "marker"
    raw = lens_dict()
    raw["extra"] = RunString(marker)
    path = save(tmp_path / "evil.pt", raw, pickle_protocol=4)
    with pytest.raises(CheckpointError, match="cannot read checkpoint"):
        read_checkpoint(path)
    assert not marker.exists()


def test_concurrent_reads_keep_their_allow_list_and_leave_none_behind(tmp_path):
    """torch.serialization.safe_globals edits one process-wide set: unguarded, one thread leaving it removed
    the numpy names another thread was still unpickling with ("Unsupported global ... _reconstruct").
    Tensors before the RNG state keep each load inside the allow-list long enough for the threads to meet."""
    path = save(tmp_path / "lens.pt", lens_dict(optimizer_tensors=60))
    before = torch.serialization.get_safe_globals()
    errors: list[str] = []

    def read(barrier):
        barrier.wait()
        try:
            read_checkpoint(path)
        except Exception as exc:
            errors.append(f"{type(exc).__name__}: {str(exc)[:200]}")

    for _ in range(ROUNDS):
        barrier = threading.Barrier(8)
        threads = [threading.Thread(target=read, args=(barrier,)) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert not errors, f"{len(errors)} of {ROUNDS * 8} concurrent reads failed, e.g. {errors[0]}"
    assert torch.serialization.get_safe_globals() == before

"""flatten_state / unflatten_state: exact round trips through real files, and clear refusals."""

from __future__ import annotations

import json
import random
from collections import OrderedDict

import numpy as np
import pytest
import safetensors.torch
import torch

from trainengine.checkpoint import flatten_state, unflatten_state
from trainengine.checkpoint._write import materialize
from trainengine.errors import CheckpointError


def roundtrip(obj, tmp_path):
    """Through the real media: a safetensors file and a strict-JSON text."""
    tensors, skeleton = flatten_state(obj)
    path = tmp_path / "t.safetensors"
    safetensors.torch.save_file(materialize(tensors), str(path))
    text = json.dumps(skeleton, allow_nan=False)
    return unflatten_state(json.loads(text), safetensors.torch.load_file(str(path)))


def test_scalars_containers_and_special_floats_round_trip(tmp_path, h):
    obj = {
        "none": None,
        "t": True,
        "f": False,
        "i": 7,
        "big": 2**70,
        "neg": -3,
        "s": "héllo",
        "x": 0.1,
        "negzero": -0.0,
        "nan": float("nan"),
        "inf": float("inf"),
        "ninf": float("-inf"),
        "list": [1, [2, (3, 4.0)], []],
        "tuple": (1, "a", None, ()),
        "empty": {},
        "intkeys": {0: "a", 1: {"b": 2}, -5: 3},
        "mixed": {1: 1, "a": 2, (1, 2): 3, 2.5: 4, None: 5},
        # Its own dict: True == 1, so next to the key 1 a True key would silently not exist.
        "boolkeys": {True: 6, False: 7},
        "bytes": b"\x00\x01abc",
        "nobytes": b"",
    }
    back = roundtrip(obj, tmp_path)
    h.assert_same(obj, back)
    assert [type(k) for k in back["boolkeys"]] == [bool, bool] and back["boolkeys"][True] == 6


def test_tensors_and_arrays_keep_dtype_shape_and_values(tmp_path, h):
    base = torch.arange(12, dtype=torch.float32).reshape(3, 4)
    obj = {
        "bf16": torch.randn(3, 5).to(torch.bfloat16),
        "scalar": torch.tensor(3.5),
        "empty": torch.empty(0, 7),
        "bool": torch.tensor([True, False]),
        "transposed": base.t(),  # non-contiguous: stored contiguous
        "view_a": base[0],
        "view_b": base[1:],  # share storage with each other and with base
        "base": base,
        "same_twice": [base, base],
        "param": torch.nn.Parameter(torch.ones(2)),
        "u32": np.arange(5, dtype=np.uint32),
        "f16": np.ones((2, 2), dtype=np.float16),
        "big_endian": np.arange(4, dtype=">i4"),
        "np_bool": np.array([True, False]),
        "np_scalar": np.float64(2.25),
        "np_int": np.int16(-3),
        "zero_d": np.array(5.5),
        "fortran": np.asfortranarray(np.arange(6.0).reshape(2, 3)),
    }
    back = roundtrip(obj, tmp_path)
    expected = dict(obj, param=obj["param"].detach(), transposed=base.t().contiguous())
    h.assert_same(expected, back)
    assert back["transposed"].shape == (4, 3) and back["transposed"][1, 0].item() == 1.0
    assert back["big_endian"].dtype == np.dtype(">i4")
    assert back["zero_d"].shape == () and back["fortran"].tolist() == [[0.0, 1.0, 2.0], [3.0, 4.0, 5.0]]


def test_adamw_state_dict_round_trips_with_int_keys_and_tuple_betas(tmp_path, h):
    model = torch.nn.Linear(4, 3)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.8, 0.95))
    model(torch.randn(5, 4)).sum().backward()
    opt.step()
    sd = opt.state_dict()
    back = roundtrip(sd, tmp_path)
    h.assert_same(sd, back)
    assert list(back["state"]) == [0, 1] and back["param_groups"][0]["betas"] == (0.8, 0.95)
    opt2 = torch.optim.AdamW(torch.nn.Linear(4, 3).parameters())
    opt2.load_state_dict(back)
    assert torch.equal(opt2.state_dict()["state"][0]["exp_avg"], sd["state"][0]["exp_avg"])


@pytest.mark.parametrize("kind", ["lambda", "onecycle", "plateau", "sequential"])
def test_scheduler_state_dicts_round_trip(tmp_path, h, kind):
    opt = torch.optim.SGD(torch.nn.Linear(2, 2).parameters(), lr=0.1)
    if kind == "lambda":
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.9**s)
    elif kind == "onecycle":
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=1.0, total_steps=10)
    elif kind == "plateau":
        sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt)  # holds best=inf
    else:
        warm = torch.optim.lr_scheduler.LinearLR(opt, start_factor=0.1, total_iters=2)
        sched = torch.optim.lr_scheduler.SequentialLR(
            opt, [warm, torch.optim.lr_scheduler.ExponentialLR(opt, 0.9)], milestones=[2]
        )
    for _ in range(3):
        opt.step()
        sched.step(1.0) if kind == "plateau" else sched.step()
    sd = sched.state_dict()
    h.assert_same(sd, roundtrip(sd, tmp_path))


def test_rng_states_round_trip_and_reproduce_the_same_numbers(tmp_path, h):
    random.seed(1)
    np.random.seed(2)
    torch.manual_seed(3)
    np.random.standard_normal()  # leaves a cached gaussian in numpy's state
    states = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    expected = (random.random(), np.random.standard_normal(3).tolist(), torch.rand(3).tolist())
    back = roundtrip(states, tmp_path)
    h.assert_same(states, back)
    random.seed(99)
    np.random.seed(99)
    torch.manual_seed(99)
    random.setstate(back["python"])
    np.random.set_state(back["numpy"])
    torch.set_rng_state(back["torch"])
    assert (random.random(), np.random.standard_normal(3).tolist(), torch.rand(3).tolist()) == expected


def test_ordered_dict_state_dict_round_trips_as_dict(tmp_path):
    sd = torch.nn.Linear(2, 2).state_dict()
    assert isinstance(sd, OrderedDict)
    back = roundtrip(sd, tmp_path)
    assert list(back) == list(sd) and all(torch.equal(back[k], sd[k]) for k in sd)


class Foo:
    pass


@pytest.mark.parametrize(
    ("obj", "message"),
    [
        (
            {"optimizer": {"param_groups": [{"lr": 0.1, "foo": Foo()}]}},
            "state.optimizer.param_groups[0].foo: cannot store a Foo "
            "(only tensors, arrays, numbers, strings, lists, dicts, tuples)",
        ),
        ({"fn": len}, "state.fn: cannot store a builtin_function_or_method"),
        ({"s": {1, 2}}, "state.s: cannot store a set"),
        ({"k": {Foo(): 1}}, "state.k: cannot store a dict key of type Foo"),
        ({"c": torch.zeros(2, dtype=torch.complex128)}, "state.c: cannot store a tensor of dtype torch.complex128"),
        ({"o": np.array(["a", None], dtype=object)}, "state.o: cannot store a numpy array of dtype object"),
        ({"sp": torch.eye(2).to_sparse()}, "state.sp: cannot store a torch.sparse_coo tensor"),
    ],
)
def test_unsupported_values_name_their_path(obj, message):
    with pytest.raises(CheckpointError) as info:
        flatten_state(obj)
    assert str(info.value).startswith(message)


def test_reference_cycle_is_refused():
    a: dict = {"x": 1}
    a["self"] = [a]
    with pytest.raises(CheckpointError, match=r"state.self\[0\]: the state refers to itself"):
        flatten_state(a)


def test_malformed_skeleton_and_missing_tensor_are_errors():
    with pytest.raises(CheckpointError, match="missing from the checkpoint"):
        unflatten_state({"dict": {"w": {"tensor": "w"}}}, {})
    with pytest.raises(CheckpointError, match="malformed"):
        unflatten_state({"what": 1}, {})

"""Split a nested training state into tensors (for safetensors) and a JSON skeleton, and back.

The skeleton is plain JSON in which every container is tagged with its type, so a round trip
gives back exactly what went in: tuples stay tuples, ``int`` dict keys stay ``int`` (an
optimizer's ``state`` dict), NaN and infinities survive, an ``ndarray`` comes back as an
``ndarray`` of the same dtype. No pickle is involved, so reading a skeleton can never run code.

Skeleton grammar (one JSON value per Python value):

============================  =====================================================
Python value                  skeleton
============================  =====================================================
``None``, bool, int, str      the JSON value itself
finite float                  a JSON number (``repr`` round-trips exactly)
NaN / inf / -inf              ``{"float": "nan" | "inf" | "-inf"}``
list                          a JSON array of skeletons
tuple                         ``{"tuple": [...]}``
dict with only ``str`` keys   ``{"dict": {key: skeleton}}``
any other dict                ``{"items": [[key_skeleton, value_skeleton], ...]}``
``torch.Tensor``              ``{"tensor": "<key in the tensor file>"}``
``numpy.ndarray``             ``{"ndarray": "<key>", "dtype": "<u4"}``
numpy scalar (``np.float64``)  ``{"npscalar": "<key>", "dtype": "<f8"}``
bytes                         ``{"bytes": "<key>"}`` (a uint8 tensor)
============================  =====================================================
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from trainengine.errors import CheckpointError

__all__ = ["flatten_state", "unflatten_state"]

_SUPPORTED = "only tensors, arrays, numbers, strings, lists, dicts, tuples"
_KEY_TYPES = (str, int, float, bool, type(None), tuple)


def flatten_state(obj: Any, *, root: str = "state") -> tuple[dict[str, torch.Tensor], Any]:
    """Split ``obj`` into a flat ``{name: tensor}`` dict and a JSON-safe skeleton.

    Tensors are detached but not copied (the caller decides where and when to copy); numpy
    arrays become tensors sharing their memory. Tensor names are the paths inside ``obj``
    (``"optimizer.state[0].exp_avg"``), made unique with a ``#n`` suffix if two paths spell
    the same.

    Args:
        obj: Any nesting of dict / list / tuple / int / float / str / bool / None / bytes /
            ``torch.Tensor`` / ``numpy.ndarray`` / numpy scalar.
        root: Name of the top level in error messages.

    Returns:
        ``(tensors, skeleton)``; :func:`unflatten_state` inverts it.

    Raises:
        CheckpointError: A value of another type, a dict key that is not a plain scalar or
            tuple, a tensor that safetensors cannot hold (sparse, meta, complex128), or a
            reference cycle. The message names the path inside ``obj``.

    Example:
        >>> import torch
        >>> tensors, skeleton = flatten_state({"w": torch.ones(2), "steps": (1, 2)})
        >>> sorted(tensors), skeleton
        (['w'], {'dict': {'w': {'tensor': 'w'}, 'steps': {'tuple': [1, 2]}}})
        >>> unflatten_state(skeleton, tensors)["steps"]
        (1, 2)
    """
    tensors: dict[str, torch.Tensor] = {}
    skeleton = _Flattener(tensors).encode(obj, root, "", set())
    return tensors, skeleton


def unflatten_state(skeleton: Any, tensors: dict[str, torch.Tensor]) -> Any:
    """Rebuild the object :func:`flatten_state` split into ``(tensors, skeleton)``.

    Args:
        skeleton: The JSON skeleton (as parsed by :func:`json.loads`).
        tensors: The flat tensor dict (e.g. from ``safetensors.torch.load_file``).

    Returns:
        The original structure with the original container and scalar types.

    Raises:
        CheckpointError: The skeleton is malformed or names a tensor that is missing.
    """
    return _decode(skeleton, tensors, "state")


class _Flattener:
    def __init__(self, tensors: dict[str, torch.Tensor]) -> None:
        self.tensors = tensors

    def _add(self, name: str, tensor: torch.Tensor) -> str:
        key = name or "_"
        n = 1
        while key in self.tensors:
            n += 1
            key = f"{name}#{n}"
        self.tensors[key] = tensor
        return key

    def encode(self, value: Any, where: str, name: str, active: set[int]) -> Any:
        if isinstance(value, np.generic):  # before float: np.float64 subclasses float
            arr = np.asarray(value)
            return {"npscalar": self._add(name, _array_to_tensor(arr, where)), "dtype": arr.dtype.str}
        # bool before int: bool is an int subclass and must come back as bool.
        if value is None or isinstance(value, (bool, str)):
            return value
        if isinstance(value, int):
            return int(value)
        if isinstance(value, float):
            if math.isfinite(value):
                return float(value)
            return {"float": "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")}
        if isinstance(value, torch.Tensor):
            return {"tensor": self._add(name, _check_tensor(value, where))}
        if isinstance(value, np.ndarray):
            return {"ndarray": self._add(name, _array_to_tensor(value, where)), "dtype": value.dtype.str}
        if isinstance(value, (bytes, bytearray)):
            data = torch.frombuffer(bytearray(value), dtype=torch.uint8) if value else torch.empty(0, dtype=torch.uint8)
            return {"bytes": self._add(name, data)}
        if isinstance(value, (dict, list, tuple)):
            if id(value) in active:
                raise CheckpointError(
                    f"{where}: the state refers to itself (a reference cycle); checkpoints hold trees of values only"
                )
            active.add(id(value))
            try:
                return self._encode_container(value, where, name, active)
            finally:
                active.discard(id(value))
        raise CheckpointError(f"{where}: cannot store a {type(value).__name__} ({_SUPPORTED})")

    def _encode_container(self, value: Any, where: str, name: str, active: set[int]) -> Any:
        def join(part: object) -> str:
            return f"{name}.{part}" if name else str(part)

        if isinstance(value, dict):
            if all(isinstance(k, str) for k in value):
                return {"dict": {k: self.encode(v, f"{where}.{k}", join(k), active) for k, v in value.items()}}
            items = []
            for k, v in value.items():
                if not isinstance(k, _KEY_TYPES) or (isinstance(k, tuple) and not _plain_tuple(k)):
                    raise CheckpointError(
                        f"{where}: cannot store a dict key of type {type(k).__name__} ({k!r}); "
                        "keys must be str, int, float, bool, None or tuples of those"
                    )
                label = f"[{k!r}]"
                items.append(
                    [
                        self.encode(k, f"{where}{label}", "", active),
                        self.encode(v, f"{where}{label}", f"{name}{label}", active),
                    ]
                )
            return {"items": items}
        encoded = [self.encode(v, f"{where}[{i}]", f"{name}[{i}]", active) for i, v in enumerate(value)]
        return {"tuple": encoded} if isinstance(value, tuple) else encoded


def _plain_tuple(key: tuple[Any, ...]) -> bool:
    return all(isinstance(k, _KEY_TYPES) and (not isinstance(k, tuple) or _plain_tuple(k)) for k in key)


# Dtypes safetensors can hold (complex128 and some exotic ones it cannot).
_STORABLE = {
    torch.float64,
    torch.float32,
    torch.float16,
    torch.bfloat16,
    torch.int64,
    torch.int32,
    torch.int16,
    torch.int8,
    torch.uint8,
    torch.bool,
    torch.complex64,
    *(getattr(torch, n) for n in ("uint16", "uint32", "uint64", "float8_e4m3fn", "float8_e5m2") if hasattr(torch, n)),
}


def _check_tensor(t: torch.Tensor, where: str) -> torch.Tensor:
    if t.layout != torch.strided:
        raise CheckpointError(f"{where}: cannot store a {t.layout} tensor; convert it with .to_dense() first")
    if t.device.type == "meta":
        raise CheckpointError(
            f"{where}: the tensor is on the meta device (it has no data); materialise it before saving"
        )
    if t.dtype not in _STORABLE:
        raise CheckpointError(
            f"{where}: cannot store a tensor of dtype {t.dtype}; safetensors holds "
            f"{', '.join(sorted(str(d).removeprefix('torch.') for d in _STORABLE))}"
        )
    return t.detach()


def _array_to_tensor(arr: np.ndarray, where: str) -> torch.Tensor:
    native = arr.dtype.newbyteorder("=")
    if arr.dtype != native:  # big-endian arrays: store natively, the skeleton keeps the original dtype
        arr = arr.astype(native)
    try:
        # Not np.ascontiguousarray: it turns 0-d arrays into 1-d ones.
        t = torch.from_numpy(arr if arr.flags.c_contiguous else arr.copy(order="C"))
    except TypeError:
        raise CheckpointError(
            f"{where}: cannot store a numpy array of dtype {arr.dtype} ({_SUPPORTED}; arrays of numbers or bools)"
        ) from None
    return _check_tensor(t, where)


def _decode(node: Any, tensors: dict[str, torch.Tensor], where: str) -> Any:
    if node is None or isinstance(node, (bool, int, float, str)):
        return node
    if isinstance(node, list):
        return [_decode(v, tensors, f"{where}[{i}]") for i, v in enumerate(node)]
    if not isinstance(node, dict) or len(node) not in (1, 2):
        raise CheckpointError(f"{where}: malformed checkpoint skeleton entry {str(node)[:80]!r}")
    if "dict" in node:
        return {k: _decode(v, tensors, f"{where}.{k}") for k, v in node["dict"].items()}
    if "items" in node:
        out: dict[Any, Any] = {}
        for pair in node["items"]:
            key = _decode(pair[0], tensors, where)
            out[_hashable(key)] = _decode(pair[1], tensors, f"{where}[{key!r}]")
        return out
    if "tuple" in node:
        return tuple(_decode(v, tensors, f"{where}[{i}]") for i, v in enumerate(node["tuple"]))
    if "float" in node:
        return float(node["float"])
    for tag in ("tensor", "ndarray", "npscalar", "bytes"):
        if tag in node:
            key = node[tag]
            if key not in tensors:
                raise CheckpointError(f"{where}: tensor '{key}' is missing from the checkpoint's tensor file")
            t = tensors[key]
            if tag == "tensor":
                return t
            arr = t.cpu().numpy()
            if tag == "bytes":
                return arr.tobytes()
            arr = arr.astype(np.dtype(node["dtype"]), copy=False)
            return arr[()] if tag == "npscalar" else arr
    raise CheckpointError(f"{where}: malformed checkpoint skeleton entry {str(node)[:80]!r}")


def _hashable(key: Any) -> Any:
    # Tuple keys come back as tuples (the decoder already builds tuples), lists cannot be keys.
    if isinstance(key, list):
        return tuple(_hashable(k) for k in key)
    return key

"""The container's msgpack header (FORMAT.md section 3): canonical bytes and every MUST rule.

The packer validates the header it writes with the same function the decoder uses,
so a rule lives in exactly one place.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import msgpack
import numpy as np

from mnistpack.constants import (
    ACTIVATIONS,
    CALIBRATION_SURE_THRESHOLD,
    CALIBRATION_TEMPERATURE,
    INT4_BLOCK_SIZE,
    INT8_SCALE_ZERO_BITS,
    LAYER_KINDS,
    MAX_DECODED_VALUES,
    MAX_DIM,
    MAX_HEADER_DEPTH,
    MAX_HEADER_INTEGER,
    MAX_HEADER_VALUES,
    MAX_LAYERS,
    MAX_NAME_BYTES,
    MAX_TENSOR_ELEMENTS,
    MAX_TENSOR_RANK,
    MAX_TENSORS,
    META_CALIBRATION,
    MIN_FORMAT_VERSION,
    PADDINGS,
    PRECISIONS,
)
from mnistpack.errors import HeaderError, MsgPackError, ShapeError
from mnistpack.quantize import payload_length
from mnistpack.shapes import Geometry, Shape, network_shapes

# Layer kinds with a weight, a bias and an activation, and the rank of their weight.
WEIGHT_RANKS = {"dense": 2, "conv2d": 4}
WINDOWED = ("conv2d", "maxpool2d", "avgpool2d")
POOLS = ("maxpool2d", "avgpool2d")


def canonical(value: Any) -> Any:
    """Plain dicts with keys in ascending byte order and lists: what msgpack writes canonically."""
    if isinstance(value, Mapping):
        return {key: canonical(value[key]) for key in sorted(value, key=lambda k: str(k).encode())}
    if isinstance(value, list | tuple):
        return [canonical(item) for item in value]
    return value


def encode_header(header: Mapping[str, Any]) -> bytes:
    """Canonical msgpack: map keys in ascending byte order, every float as float32."""
    return msgpack.packb(canonical(header), use_single_float=True, use_bin_type=True)  # type: ignore[no-any-return]


def decode_header(data: bytes) -> dict[str, Any]:
    """Exactly one msgpack map filling `data` within FORMAT.md's header rules, or MsgPackError.

    Values are counted as msgpack builds them, so a header of a million tiny maps is
    refused after MAX_HEADER_VALUES of them, not after all of them are built.
    """
    budget = _ValueBudget()
    try:
        header = msgpack.unpackb(
            data,
            raw=False,
            use_list=True,
            strict_map_key=False,  # keys are checked in _ValueBudget.map, with FORMAT.md's message
            object_pairs_hook=budget.map,
            list_hook=budget.array,
        )
    except MsgPackError:
        raise
    # msgpack signals bad input with several unrelated classes (ValueError,
    # OutOfData, StackError, UnicodeDecodeError, TypeError for unhashable keys).
    except Exception as error:
        reason = f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
        raise MsgPackError(f"the header is not one valid msgpack value ({reason}).") from None
    if not isinstance(header, dict):
        raise MsgPackError(f"the header must be a msgpack map, found {type(header).__name__}.")
    check_header_values(header)
    return header


class _ValueBudget:
    """msgpack hooks that count values as maps and arrays complete, and check map keys."""

    def __init__(self) -> None:
        self.count = 1  # the header map itself

    def _spend(self, values: int) -> None:
        self.count += values
        if self.count > MAX_HEADER_VALUES:
            raise MsgPackError(f"the header holds more than {MAX_HEADER_VALUES} msgpack values.")

    def array(self, items: list[Any]) -> list[Any]:
        self._spend(len(items))
        return items

    def map(self, pairs: list[tuple[Any, Any]]) -> dict[str, Any]:
        self._spend(2 * len(pairs))
        result: dict[str, Any] = {}
        for key, value in pairs:
            if not isinstance(key, str):
                raise MsgPackError(f"every map key must be a str, found {type(key).__name__} {key!r:.40}.")
            if key in result:
                raise MsgPackError(f"the key {key!r:.70} appears twice in one map.")
            result[key] = value
        return result


_PLAIN_TYPES = (type(None), bool, int, float, str, bytes, list, dict)


def check_header_values(header: Any) -> None:
    """FORMAT.md's rules for every value of a header, known or not: the value count and
    nesting limits, str map keys, no ext values, integers a double holds exactly."""
    count = 0
    stack: list[tuple[Any, int]] = [(header, 1)]
    while stack:
        value, depth = stack.pop()
        count += 1
        if count > MAX_HEADER_VALUES:
            raise MsgPackError(f"the header holds more than {MAX_HEADER_VALUES} msgpack values.")
        if depth > MAX_HEADER_DEPTH:
            raise MsgPackError(f"the header nests values deeper than {MAX_HEADER_DEPTH} levels.")
        if not isinstance(value, _PLAIN_TYPES):
            raise MsgPackError(f"the header holds a {type(value).__name__} (a msgpack ext value).")
        if isinstance(value, int) and not isinstance(value, bool) and abs(value) > MAX_HEADER_INTEGER:
            raise MsgPackError(
                f"the header holds the integer {value}, beyond +-{MAX_HEADER_INTEGER} (2^53 - 1)."
            )
        if isinstance(value, dict):
            for key, item in value.items():
                if not isinstance(key, str):
                    raise MsgPackError(f"every map key must be a str, found {type(key).__name__}.")
                stack.append((key, depth + 1))
                stack.append((item, depth + 1))
        elif isinstance(value, list | tuple):
            stack.extend((item, depth + 1) for item in value)


def validate_header(header: Mapping[str, Any], format_version: int, payload_size: int) -> None:
    """Raise HeaderError or ShapeError unless `header` satisfies every MUST of FORMAT.md section 3."""
    version = _get(header, "format_version", int, "the header")
    if version != format_version:
        raise HeaderError(f"the header says format version {version}, the container prefix {format_version}.")
    tensors = _get_list(header, "tensors", MAX_TENSORS, "the header")
    layers = _get_list(header, "layers", MAX_LAYERS, "the header")
    meta = _get(header, "meta", dict, "the header")
    shapes = _check_tensors(tensors, payload_size)
    input_shape = _check_meta(meta)
    _check_layers(layers, shapes, input_shape, meta, version)


def _get(mapping: Mapping[str, Any], key: str, kind: type, where: str) -> Any:
    if key not in mapping:
        raise HeaderError(f"{where} has no {key!r} entry.")
    value = mapping[key]
    # bool is an int in Python, never in msgpack
    if not isinstance(value, kind) or (kind is int and not _is_int(value)):
        raise HeaderError(f"{where}: {key!r} must be {kind.__name__}, found {type(value).__name__}.")
    return value


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _choice(mapping: Mapping[str, Any], key: str, allowed: tuple[str, ...], where: str) -> str:
    value: str = _get(mapping, key, str, where)
    if value not in allowed:
        raise HeaderError(f"{where}: {key} must be one of {', '.join(allowed)}, not {value!r}.")
    return value


def _get_list(mapping: Mapping[str, Any], key: str, limit: int, where: str) -> list[Any]:
    items: list[Any] = _get(mapping, key, list, where)
    if not 1 <= len(items) <= limit:
        raise HeaderError(f"{where}: {key!r} must have 1 to {limit} entries, found {len(items)}.")
    return items


def _check_tensors(tensors: list[Any], payload_size: int) -> dict[str, tuple[int, ...]]:
    """Check each tensor map and the payload layout; return name -> shape."""
    shapes: dict[str, tuple[int, ...]] = {}
    end = 0
    values = 0
    for index, tensor in enumerate(tensors):
        where = f"tensor {index}"
        if not isinstance(tensor, dict):
            raise HeaderError(f"{where} must be a map, found {type(tensor).__name__}.")
        name = _get(tensor, "name", str, where)
        if not 1 <= len(name.encode()) <= MAX_NAME_BYTES or name in shapes:
            raise HeaderError(f"{where}: name {name!r} must be 1 to {MAX_NAME_BYTES} bytes and unique.")
        where = f"tensor {name!r}"
        precision = _choice(tensor, "precision", PRECISIONS, where)
        shape = _check_shape(_get(tensor, "shape", list, where), precision, where)
        values += math.prod(shape)
        if values > MAX_DECODED_VALUES:
            raise ShapeError(
                f"{where}: the tensors so far hold {values:,} values; a container holds at most "
                f"{MAX_DECODED_VALUES:,} (FORMAT.md section 6)."
            )
        offset = _get(tensor, "offset", int, where)
        length = _get(tensor, "length", int, where)
        if offset != end:
            raise ShapeError(f"{where} starts at payload offset {offset}; the previous tensor ends at {end}.")
        expected = payload_length(precision, shape)
        if length != expected:
            raise ShapeError(
                f"{where}: {precision} {list(shape)} takes {expected} bytes, the header says {length}."
            )
        end = offset + length
        if end > payload_size:
            raise ShapeError(
                f"{where} ends at payload offset {end}, past the payload's {payload_size} bytes."
            )
        if precision == "int8":
            check_int8_scales(_get(tensor, "scales", list, where), shape[0], where)
        if precision == "int4" and _get(tensor, "block_size", int, where) != INT4_BLOCK_SIZE:
            raise HeaderError(f"{where}: block_size must be {INT4_BLOCK_SIZE}, found {tensor['block_size']}.")
        shapes[name] = shape
    if end != payload_size:
        raise ShapeError(f"the tensors cover {end} payload bytes, but the payload has {payload_size}.")
    return shapes


def _check_shape(shape: list[Any], precision: str, where: str) -> tuple[int, ...]:
    lowest = 2 if precision in ("int8", "int4") else 1
    if not lowest <= len(shape) <= MAX_TENSOR_RANK:
        raise ShapeError(f"{where}: a {precision} tensor cannot have shape {_short(shape)}.")
    for dim in shape:
        if not _is_int(dim) or not 1 <= dim <= MAX_DIM:
            raise ShapeError(
                f"{where}: every dimension must be an integer from 1 to {MAX_DIM}, found {shape}."
            )
    if math.prod(shape) > MAX_TENSOR_ELEMENTS:
        raise ShapeError(f"{where}: shape {shape} exceeds {MAX_TENSOR_ELEMENTS} elements.")
    return tuple(shape)


def check_int8_scales(scales: list[Any] | tuple[Any, ...], rows: int, where: str) -> None:
    """An int8 tensor has 1 or `rows` finite positive float32 scales with 8 low mantissa bits zero."""
    if len(scales) not in (1, rows):
        raise HeaderError(
            f"{where}: an int8 tensor with {rows} rows needs 1 or {rows} scales, found {len(scales)}."
        )
    low = (1 << INT8_SCALE_ZERO_BITS) - 1
    for scale in scales:
        if not isinstance(scale, float) or not math.isfinite(scale) or scale <= 0:
            raise HeaderError(f"{where}: every int8 scale must be a finite float above 0, found {scale!r}.")
        single = np.float32(scale)
        if float(single) != scale or int(single.view(np.uint32)) & low:
            raise HeaderError(
                f"{where}: int8 scale {scale!r} is not a float32 with its {INT8_SCALE_ZERO_BITS} "
                "low mantissa bits zero, so q * scale would not be exact."
            )


def _check_meta(meta: dict[str, Any]) -> Shape:
    """Check the meta map's known entries; return the network's input shape."""
    where = "meta"
    inputs = _get(meta, "input", dict, where)
    shape = _get_list(inputs, "shape", MAX_DIM, "meta.input")
    if not all(_is_int(d) and 1 <= d <= MAX_DIM for d in shape):
        raise HeaderError(f"meta.input.shape must list integers from 1 to {MAX_DIM}, found {_short(shape)}.")
    _get(inputs, "layout", str, "meta.input")
    value_range = _get(inputs, "range", list, "meta.input")
    if len(value_range) != 2 or not all(isinstance(v, float) for v in value_range):
        raise HeaderError(f"meta.input.range must be two floats, found {value_range}.")
    labels = _get_list(meta, "labels", MAX_DIM, where)
    if not all(isinstance(label, str) for label in labels):
        raise HeaderError("meta.labels must be strings.")
    _choice(meta, "precision", PRECISIONS, where)
    _get(meta, "source_sha256", str, where)
    _get(meta, "packer_version", str, where)
    # an optional key holding msgpack nil is absent, as it is to the Luau decoder
    if meta.get("pruning") is not None:
        pruning = _get(meta, "pruning", dict, where)
        _get(pruning, "threshold", float, "meta.pruning")
        if _get(pruning, "inputs_zeroed", int, "meta.pruning") < 0:
            raise HeaderError("meta.pruning.inputs_zeroed must not be negative.")
    if meta.get("accuracy") is not None:
        accuracy = _get(meta, "accuracy", dict, where)
        correct = _get(accuracy, "correct", int, "meta.accuracy")
        total = _get(accuracy, "total", int, "meta.accuracy")
        if not 0 <= correct <= total:
            raise HeaderError(f"meta.accuracy must have 0 <= correct <= total, found {correct} of {total}.")
    if META_CALIBRATION in meta:
        check_calibration(_get(meta, META_CALIBRATION, dict, where))
    return tuple(shape)


def _short(values: list[Any], shown: int = 8) -> str:
    """A list for an error sentence: its first few items and how many more there are."""
    if len(values) <= shown:
        return repr(values)
    return f"[{', '.join(map(repr, values[:shown]))}, ... ({len(values) - shown:,} more)]"


def check_calibration(calibration: Mapping[str, Any]) -> None:
    """meta.calibration: a finite temperature > 0 and a sure threshold strictly between 0 and 1."""
    where = f"meta.{META_CALIBRATION}"
    temperature = _get(calibration, CALIBRATION_TEMPERATURE, float, where)
    if not (math.isfinite(temperature) and temperature > 0):
        raise HeaderError(
            f"{where}.{CALIBRATION_TEMPERATURE} must be a finite float > 0, found {temperature}."
        )
    threshold = _get(calibration, CALIBRATION_SURE_THRESHOLD, float, where)
    if not 0 < threshold < 1:
        raise HeaderError(f"{where}.{CALIBRATION_SURE_THRESHOLD} must be between 0 and 1, found {threshold}.")


def _check_layers(
    layers: list[Any], shapes: dict[str, Shape], input_shape: Shape, meta: dict[str, Any], version: int
) -> None:
    named: set[str] = set()
    geometries = []
    activations = []
    for index, layer in enumerate(layers):
        where = f"layer {index}"
        if not isinstance(layer, dict):
            raise HeaderError(f"{where} must be a map, found {type(layer).__name__}.")
        kind = _choice(layer, "kind", LAYER_KINDS, where)
        if version == MIN_FORMAT_VERSION and kind != "dense":
            raise HeaderError(f"{where}: format version 1 holds only dense layers, found {kind}.")
        geometries.append(_geometry(layer, kind, shapes, named, f"{where} ({kind})"))
        activations.append(_choice(layer, "activation", ACTIVATIONS, where) if kind in WEIGHT_RANKS else "")
    if named != set(shapes):
        unused = sorted(set(shapes) - named)
        raise HeaderError(f"every tensor must belong to a layer; {', '.join(map(repr, unused))} do not.")
    outputs = network_shapes(geometries, input_shape)
    for index, (activation, output) in enumerate(zip(activations, outputs, strict=True)):
        if activation == "softmax" and len(output) != 1:
            raise ShapeError(f"layer {index}: softmax needs a 1-D output, this layer gives {list(output)}.")
    if len(outputs[-1]) != 1:
        raise ShapeError(f"the last layer must give a 1-D output, found {list(outputs[-1])}.")
    if len(meta["labels"]) != outputs[-1][0]:
        raise ShapeError(f"meta.labels has {len(meta['labels'])} labels for {outputs[-1][0]} outputs.")


def _geometry(
    layer: dict[str, Any], kind: str, shapes: dict[str, Shape], named: set[str], where: str
) -> Geometry:
    """The layer's own keys (FORMAT.md section 3.2), checked, as the geometry shapes.py reads."""
    weight: Shape = ()
    if kind in WEIGHT_RANKS:
        weight = _tensor_ref(layer, "weight", shapes, named, where)
        bias = _tensor_ref(layer, "bias", shapes, named, where)
        if len(weight) != WEIGHT_RANKS[kind]:
            raise ShapeError(
                f"{where}: the weight must have {WEIGHT_RANKS[kind]} dimensions, found {list(weight)}."
            )
        if bias != (weight[0],):
            raise ShapeError(f"{where}: bias must have shape [{weight[0]}], found {list(bias)}.")
    if kind not in WINDOWED:
        return Geometry(kind, weight)
    strides = _pair(layer, "strides", where)
    padding = _choice(layer, "padding", PADDINGS, where)
    pool_size = _pair(layer, "pool_size", where) if kind in POOLS else (1, 1)
    return Geometry(kind, weight, pool_size, strides, padding)


def _pair(layer: dict[str, Any], key: str, where: str) -> tuple[int, int]:
    value = _get(layer, key, list, where)
    if len(value) != 2 or not all(_is_int(v) and 1 <= v <= MAX_DIM for v in value):
        raise ShapeError(f"{where}: {key} must be two integers from 1 to {MAX_DIM}, found {value}.")
    return value[0], value[1]


def _tensor_ref(
    layer: dict[str, Any], key: str, shapes: dict[str, tuple[int, ...]], named: set[str], where: str
) -> tuple[int, ...]:
    name = _get(layer, key, str, where)
    if name not in shapes:
        raise HeaderError(f"{where}: {key} names tensor {name!r}, which does not exist.")
    if name in named:
        raise HeaderError(f"{where}: tensor {name!r} is already used by another layer entry.")
    named.add(name)
    return shapes[name]

"""luau/Decoder.luau end to end: modules packed by the Python packer decode in the Luau VM
to exactly the float32 values Python's dequantization gives, and every kind of bad module
fails with a `mnistpack: <stage>:` sentence."""

from __future__ import annotations

import base64
import json
import math
import struct
import zlib
from pathlib import Path
from typing import Any

import msgpack
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mnistpack.compression import compress, decompress
from mnistpack.constants import CRC_SIZE, FORMAT_VERSION, MAGIC, MAX_HEADER_INTEGER, PREFIX_SIZE
from mnistpack.errors import FormatError
from mnistpack.luau_emit import emit_module
from mnistpack.module_reader import read_module

from tests.luau_decode_helpers import (
    Packed,
    decode,
    error_stage,
    module_source,
    module_table,
    module_text,
    pack_layers,
    python_flat,
    small_stack,
)
from tests.luau_host import LuauHost

ROOT = Path(__file__).resolve().parents[1]
PRECISIONS = ("float32", "float16", "int8", "int4")


@pytest.fixture(scope="module")
def host() -> LuauHost:
    return LuauHost()


def assert_decodes_to(result: tuple[bool, bytes, str, str], packed: Packed) -> None:
    ok, flat, shapes, activations = result
    assert ok, flat.decode(errors="replace")
    assert (shapes, activations) == (packed.shapes, packed.activations)
    got = np.frombuffer(flat, "<u8")
    want = np.frombuffer(packed.flat, "<u8")
    assert got.shape == want.shape
    bad = np.flatnonzero(got != want)
    assert bad.size == 0, f"{bad.size} values differ, first at flat index {bad[0]}"


def assert_fails(result: tuple[bool, bytes, str, str], stage: str, *fragments: str) -> str:
    ok, message, _, _ = result
    assert not ok, "decoded weights from a bad module"
    text = message.decode(errors="replace")
    assert error_stage(message) == stage, text
    for fragment in fragments:
        assert fragment in text, text
    return text


# --- the real module source, every precision and compression -------------------------


@pytest.mark.parametrize("compression", ["zstd", "none"])
@pytest.mark.parametrize("precision", PRECISIONS)
def test_generated_module_decodes_exactly(precision: str, compression: str) -> None:
    packed = small_stack(precision, seed=PRECISIONS.index(precision))
    host = LuauHost(extra={"MnistWeights": module_source(packed.container, compression)})
    assert_decodes_to(decode(host, host.run("return require(root.MnistWeights)")[0]), packed)


def test_split_module_of_a_full_size_model_decodes(tmp_path: Path) -> None:
    # 784-256-10 float32 is ~800 KB: too long for one source, so the packer splits it
    rng = np.random.default_rng(7)
    weights = [
        rng.normal(0, 0.05, (256, 784)).astype(np.float32),
        rng.normal(0, 0.2, (10, 256)).astype(np.float32),
    ]
    biases = [rng.normal(0, 0.1, 256).astype(np.float32), rng.normal(0, 0.1, 10).astype(np.float32)]
    packed = pack_layers(weights, biases, "float32", ["relu", "softmax"], input_shape=[28, 28])
    files = emit_module(compress(packed.container, "zstd"), "zstd", version=1, comment_lines=["split test"])
    assert len(files) > 2, "expected a split module"
    for relpath, source in files.items():
        path = tmp_path / relpath
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(source)
    host = LuauHost(extra_dirs={"MnistWeights": tmp_path / "MnistWeights"})
    module = host.run("return require(root.MnistWeights)")[0]
    assert_decodes_to(decode(host, module), packed)


@pytest.mark.parametrize("compression", ["zstd", "none"])
def test_bare_base64_text_is_accepted(host: LuauHost, compression: str) -> None:
    packed = small_stack("int8", seed=3)
    text = module_text(packed.container, compression)
    assert_decodes_to(decode(host, host.lua.create_string(text.encode())), packed)


def test_data_as_a_list_of_parts_is_joined(host: LuauHost) -> None:
    packed = small_stack("float16", seed=4)
    text = module_text(packed.container, "zstd")
    module = module_table(host, "", "zstd")
    parts = host.lua.create_table()
    for i in range(0, len(text), 100):
        parts.push(text[i : i + 100])
    module.set("data", parts)
    assert_decodes_to(decode(host, module), packed)


def test_meta_comes_back_as_the_header_wrote_it(host: LuauHost) -> None:
    packed = small_stack("int4", seed=5)
    read = host.run(
        """
        local Decoder = require(root.Decoder)
        local weights = Decoder.decode(...)
        local meta = weights.meta
        return meta.input.shape[1], meta.input.shape[2], meta.input.layout, #meta.labels, meta.labels[3],
            meta.precision, meta.pruning.inputs_zeroed, meta.packer_version
        """,
        module_table(host, module_text(packed.container, "zstd"), "zstd"),
    )
    values = [v.as_bytes().decode() if hasattr(v, "as_bytes") else v for v in read]
    assert values == [4, 5, "row-major", 3, "2", "int4", 0, "test"]


@pytest.mark.parametrize(
    ("compression", "expected"),
    [("zstd", "base64,zstd,header,shape,shape"), ("none", "base64,header,shape,shape")],
)
def test_yield_follows_each_stage(host: LuauHost, compression: str, expected: str) -> None:
    packed = small_stack("int8", seed=6)
    stages = host.run(
        """
        local Decoder = require(root.Decoder)
        local seen = {}
        Decoder.decode(..., { yield = function(stage) table.insert(seen, stage) end })
        return table.concat(seen, ",")
        """,
        module_table(host, module_text(packed.container, compression), compression),
    )[0]
    assert stages.as_bytes().decode() == expected


# --- random tensors of random shapes and precisions ----------------------------------


@st.composite
def stacks(draw: st.DrawFn) -> tuple[list[np.ndarray], list[np.ndarray], list[str], list[str], str, bool]:
    """1 to 3 Dense layers of 1..70 units, each weight at its own precision."""
    depth = draw(st.integers(1, 3))
    sizes = [draw(st.integers(1, 70)) for _ in range(depth + 1)]
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    weights, biases, precisions = [], [], []
    for k in range(depth):
        precision = draw(st.sampled_from(PRECISIONS))
        # from float16 subnormals to values near int4's largest scale
        magnitude = 10.0 ** draw(st.floats(-7, 3))
        w = rng.normal(0, magnitude, (sizes[k + 1], sizes[k])).astype(np.float32)
        if draw(st.booleans()):
            w[:, rng.random(sizes[k]) < 0.3] = 0.0  # pruned inputs, as the packer writes them
        if precision == "float16":
            w = np.clip(w, -65504, 65504)
        weights.append(w)
        biases.append(rng.normal(0, magnitude, sizes[k + 1]).astype(np.float32).clip(-65504, 65504))
        precisions.append(precision)
    activations = [
        draw(st.sampled_from(["linear", "relu", "sigmoid", "tanh", "softmax"])) for _ in range(depth)
    ]
    bias_precision = draw(st.sampled_from(["float32", "float16"]))
    per_row = draw(st.booleans())
    return weights, biases, precisions, activations, bias_precision, per_row


def pack_mixed(
    weights: list[np.ndarray],
    biases: list[np.ndarray],
    precisions: list[str],
    activations: list[str],
    bias_precision: str,
    per_row: bool,
) -> Packed:
    """Like pack_layers, with a precision per layer: packed one layer at a time, then joined."""
    from mnistpack.container import Container, LayerSpec, pack
    from mnistpack.quantize import dequantize, quantize

    from tests.luau_decode_helpers import small_meta

    tensors, layers = [], []
    for k, (w, b, precision, activation) in enumerate(
        zip(weights, biases, precisions, activations, strict=True)
    ):
        tensors.append(quantize(f"w{k}", w, precision, per_row=per_row))
        tensors.append(quantize(f"b{k}", b, bias_precision))
        layers.append(LayerSpec("dense", activation, f"w{k}", f"b{k}"))
    meta = small_meta([weights[0].shape[1]], weights[-1].shape[0], precisions[0])
    container = pack(Container(tuple(tensors), tuple(layers), meta))
    flat = b"".join(dequantize(t).astype("<f8").tobytes() for t in tensors)
    shapes = ",".join(f"{w.shape[0]}x{w.shape[1]}" for w in weights)
    return Packed(container, flat, shapes, ",".join(activations))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(stack=stacks(), compression=st.sampled_from(["zstd", "none"]))
def test_random_stacks_decode_bit_for_bit(host: LuauHost, stack: Any, compression: str) -> None:
    packed = pack_mixed(*stack)
    assert_decodes_to(
        decode(host, module_table(host, module_text(packed.container, compression), compression)), packed
    )


# --- golden files --------------------------------------------------------------------

GOLDEN = ROOT / "tests" / "golden"


def golden_expected() -> dict[str, Any]:
    path = GOLDEN / "expected.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def golden_cases() -> list[tuple[str, str]]:
    return [(variant, suffix) for variant in golden_expected() for suffix in (".luau", ".none.luau", ".mnpk")]


def expected_packed(layers: list[dict[str, Any]], container: bytes) -> Packed:
    """expected.json's values in DECODE_CHUNK's flat order, shapes as Python's decoder gives them."""
    flat = b"".join(
        np.array([v for row in layer["W"] for v in row] + layer["b"], "<f8").tobytes()
        for layer in layers
        if "W" in layer
    )
    activations = ",".join(layer.get("activation", "linear") for layer in layers)
    return Packed(b"", flat, python_flat(container)[1], activations)


@pytest.mark.parametrize(("variant", "suffix"), golden_cases())
def test_golden_file_decodes_to_the_expected_values(variant: str, suffix: str) -> None:
    path = GOLDEN / (variant + suffix)
    if suffix == ".mnpk":
        container = path.read_bytes()
        host = LuauHost()
        module = module_table(host, base64.b64encode(container), "none")
    else:
        compression, blob = read_module(path)
        container = decompress(blob, compression)
        host = LuauHost(extra={"MnistWeights": path.read_text()})
        module = host.run("return require(root.MnistWeights)")[0]
    expected = expected_packed(golden_expected()[variant], container)
    # Python's decoder agrees with expected.json, so Luau is checked against both
    assert python_flat(container) == (expected.flat, expected.shapes, expected.activations)
    assert_decodes_to(decode(host, module), expected)


def test_version_2_layers_come_back_with_their_kind_window_and_shapes() -> None:
    host = LuauHost(extra={"MnistWeights": (GOLDEN / "cnn_int8.luau").read_text()})
    _, _, shapes, activations = decode(host, host.run("return require(root.MnistWeights)")[0])
    assert shapes.split(",") == [
        "4x18 conv2d 3x3/1x1 same 6x6x2>6x6x4",
        " maxpool2d 2x2/2x2 valid 6x6x4>3x3x4",
        "3x16 conv2d 2x2/2x2 same 3x3x4>2x2x3",
        " avgpool2d 2x2/1x1 same 2x2x3>2x2x3",
        " global_avgpool2d 1x1/1x1 valid 2x2x3>3",
        " flatten 1x1/1x1 valid 3>3",
        "5x3",
        "2x5",
    ]
    assert activations == "relu,linear,linear,linear,linear,linear,tanh,softmax"


def test_every_precision_has_golden_files() -> None:
    variants = golden_expected()
    assert {"float32", "float16", "int8", "int4"} <= set(variants), sorted(variants)


# --- the module table ----------------------------------------------------------------


def module_with(host: LuauHost, **fields: Any) -> Any:
    packed = small_stack("int8", seed=1)
    module = module_table(host, module_text(packed.container, "zstd"), "zstd")
    for key, value in fields.items():
        module.set(key, value)
    return module


def test_newer_version_says_which_it_found_and_which_it_reads(host: LuauHost) -> None:
    assert_fails(
        decode(host, module_with(host, version=FORMAT_VERSION + 1)),
        "module",
        f"format version {FORMAT_VERSION + 1}",
        f"version {FORMAT_VERSION} which this decoder reads",
        "update the mnistpack runtime",
    )


@pytest.mark.parametrize(
    ("fields", "fragment"),
    [
        ({"format": "other"}, 'expected format = "mnistpack", found the string "other"'),
        ({"format": None}, 'expected format = "mnistpack", found nothing'),
        ({"version": 0}, "expected version = 1 to 2 (a number), found the number 0"),
        ({"version": "1"}, 'expected version = 1 to 2 (a number), found the string "1"'),
        ({"version": 1.5}, "expected version = 1 to 2 (a number), found the number 1.5"),
        ({"compression": "lz4"}, 'expected compression to be one of zstd, none, found the string "lz4"'),
        ({"data": 5}, "expected data to be a string, found the number 5"),
        ({"data": True}, "expected data to be a string, found the boolean true"),
    ],
)
def test_bad_module_fields(host: LuauHost, fields: dict[str, Any], fragment: str) -> None:
    assert_fails(decode(host, module_with(host, **fields)), "module", fragment)


def test_a_module_table_whose_metatable_errors(host: LuauHost) -> None:
    # the fields are read raw: the metatable is never run, its error never surfaces
    packed = small_stack("int8", seed=1)
    module = module_with(host)
    boom = host.run('return { __index = function() error("boom") end, __len = function() error("boom") end }')
    module.set_metatable(boom[0])
    assert_decodes_to(decode(host, module), packed)
    empty = host.lua.create_table()
    empty.set_metatable(boom[0])
    assert_fails(decode(host, empty), "module", 'expected format = "mnistpack", found nothing')


def test_not_a_module_at_all(host: LuauHost) -> None:
    assert_fails(decode(host, 42), "module", "found a number")


def test_compression_field_that_lies(host: LuauHost) -> None:
    packed = small_stack("int8", seed=1)
    assert_fails(decode(host, module_table(host, module_text(packed.container, "none"), "zstd")), "zstd")
    assert_fails(decode(host, module_table(host, module_text(packed.container, "zstd"), "none")), "container")


@pytest.mark.parametrize("compression", ["zstd", "none"])
def test_max_bytes_caps_the_container(host: LuauHost, compression: str) -> None:
    packed = small_stack("int8", seed=2)
    module = module_table(host, module_text(packed.container, compression), compression)
    size = len(packed.container)
    assert_decodes_to(decode(host, module, size), packed)
    assert_fails(decode(host, module, size - 1), "zstd" if compression == "zstd" else "container")


# --- containers with valid CRC and bad content ---------------------------------------


def build_container(header: Any, payload: bytes, version: int = 1, raw_header: bytes | None = None) -> bytes:
    """A container with a correct CRC around any header, as a hostile packer could write it."""
    header_bytes = raw_header if raw_header is not None else msgpack.packb(header, use_single_float=True)
    body = struct.pack("<HI", version, len(header_bytes)) + header_bytes + payload
    return MAGIC + body + struct.pack("<I", zlib.crc32(body))


def split_container(container: bytes) -> tuple[dict[str, Any], bytes]:
    (header_length,) = struct.unpack_from("<I", container, 6)
    header = msgpack.unpackb(container[PREFIX_SIZE : PREFIX_SIZE + header_length])
    return header, container[PREFIX_SIZE + header_length : -CRC_SIZE]


def decode_container(host: LuauHost, container: bytes) -> tuple[bool, bytes, str, str]:
    return decode(host, module_table(host, base64.b64encode(container), "none"))


def test_checks_in_container_order(host: LuauHost) -> None:
    container = small_stack("float32", seed=8).container
    assert_fails(decode_container(host, container[:13]), "container", "expected at least 14 bytes, found 13")
    assert_fails(decode_container(host, b"MNPQ" + container[4:]), "container", "found 4D 4E 50 51")
    header, payload = split_container(container)
    for version in (0, 3):
        assert_fails(
            decode_container(host, build_container(header, payload, version=version)),
            "container",
            f"found format version {version}, but this decoder reads versions 1 to 2",
        )
    damaged = bytearray(container)
    damaged[-10] ^= 1
    assert_fails(decode_container(host, bytes(damaged)), "crc", "damaged")
    too_long = container[:6] + struct.pack("<I", len(container)) + container[10:]
    assert_fails(decode_container(host, too_long), "container", "runs past the end")
    zero = container[:6] + struct.pack("<I", 0) + container[10:]
    assert_fails(decode_container(host, zero), "container", "expected a header length from 1 to 1048576")


def test_unknown_keys_at_every_level_are_ignored(host: LuauHost) -> None:
    packed = small_stack("int8", seed=9)
    header, payload = split_container(packed.container)
    header["zzz_future"] = {"nested": [1, 2.5, None, b"\x00"]}
    for tensor in header["tensors"]:
        tensor["checksum"] = "abc"
    for layer in header["layers"]:
        layer["dropout"] = 0.5
    header["meta"]["input"]["normalize"] = True
    header["meta"]["accuracy_note"] = [7, "x"]
    assert_decodes_to(decode_container(host, build_container(header, payload)), packed)


def encode_wide(value: Any, rng: np.random.Generator) -> bytes:
    """msgpack with randomly chosen, often non-minimal, widths: any valid encoding must do."""
    pick = int(rng.integers(0, 3))
    if value is None:
        return b"\xc0"
    if isinstance(value, bool):
        return b"\xc3" if value else b"\xc2"
    if isinstance(value, int):
        if value >= 0:
            options = [(0x7F, lambda v: bytes([v]))] if value <= 0x7F else []
            options += [
                (0xFF, lambda v: b"\xcc" + struct.pack(">B", v)),
                (0xFFFF, lambda v: b"\xcd" + struct.pack(">H", v)),
                (0xFFFFFFFF, lambda v: b"\xce" + struct.pack(">I", v)),
                (2**64 - 1, lambda v: b"\xcf" + struct.pack(">Q", v)),
                (2**63 - 1, lambda v: b"\xd3" + struct.pack(">q", v)),
            ]
        else:
            options = [
                (0, lambda v: b"\xd2" + struct.pack(">i", v)),
                (0, lambda v: b"\xd3" + struct.pack(">q", v)),
            ]
        fitting = [encode for limit, encode in options if value <= limit or value < 0]
        return fitting[int(rng.integers(0, len(fitting)))](value)
    if isinstance(value, float):
        if pick == 0:
            return b"\xcb" + struct.pack(">d", value)
        return b"\xca" + struct.pack(">f", value)
    if isinstance(value, str):
        raw = value.encode()
        heads = [b"\xd9" + struct.pack(">B", len(raw)), b"\xda" + struct.pack(">H", len(raw))]
        heads += [b"\xdb" + struct.pack(">I", len(raw))]
        if len(raw) < 32:
            heads.append(bytes([0xA0 + len(raw)]))
        return heads[int(rng.integers(0, len(heads)))] + raw
    if isinstance(value, list):
        heads = [b"\xdc" + struct.pack(">H", len(value)), b"\xdd" + struct.pack(">I", len(value))]
        if len(value) < 16:
            heads.append(bytes([0x90 + len(value)]))
        return heads[int(rng.integers(0, len(heads)))] + b"".join(encode_wide(v, rng) for v in value)
    if isinstance(value, dict):
        heads = [b"\xde" + struct.pack(">H", len(value)), b"\xdf" + struct.pack(">I", len(value))]
        if len(value) < 16:
            heads.append(bytes([0x80 + len(value)]))
        items = list(value.items())
        order = rng.permutation(len(items))  # key order is the encoder's business
        body = b"".join(encode_wide(items[i][0], rng) + encode_wide(items[i][1], rng) for i in order)
        return heads[int(rng.integers(0, len(heads)))] + body
    raise TypeError(value)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), precision=st.sampled_from(PRECISIONS))
def test_any_valid_msgpack_encoding_of_the_header_is_accepted(
    host: LuauHost, seed: int, precision: str
) -> None:
    packed = small_stack(precision, seed=seed % 5)
    header, payload = split_container(packed.container)
    raw = encode_wide(header, np.random.default_rng(seed))
    assert msgpack.unpackb(raw, strict_map_key=False) == header
    assert_decodes_to(decode_container(host, build_container(None, payload, raw_header=raw)), packed)


# Issue 6: headers that are valid msgpack with a valid CRC, but whose offsets, lengths
# or shapes do not add up, are refused by both decoders.
FIELDS = ("offset", "length", "shape0", "shape1", "swap", "append", "drop")


@settings(max_examples=150, deadline=None)
@given(
    precision=st.sampled_from(PRECISIONS),
    tensor=st.integers(0, 3),
    field=st.sampled_from(FIELDS),
    delta=st.one_of(st.integers(-40, 40), st.sampled_from([2**16, 2**31, 2**32, 2**53, -(2**31)])).filter(
        bool
    ),
)
def test_inconsistent_offsets_lengths_and_shapes_are_refused(
    host: LuauHost, precision: str, tensor: int, field: str, delta: int
) -> None:
    header, payload = split_container(small_stack(precision, seed=tensor).container)
    entry = header["tensors"][tensor]
    shape = entry["shape"]
    if field in ("offset", "length"):
        entry[field] += delta
    elif field == "shape0":
        shape[0] += delta
    elif field == "shape1":
        if len(shape) < 2:
            shape.append(abs(delta))
        else:
            shape[1] += delta
    elif field == "swap":
        if len(shape) < 2 or shape[0] == shape[1]:
            shape.append(2)
        else:
            shape.reverse()
    elif field == "append":
        shape.append(abs(delta))
    else:
        shape.pop()
    try:
        container = build_container(header, payload)
    except OverflowError:  # beyond msgpack's 64-bit ints: nothing to send
        return
    with pytest.raises(FormatError):
        python_flat(container)
    ok, message, _, _ = decode_container(host, container)
    assert not ok
    # an integer beyond 2^53 - 1 is refused by the msgpack stage (FORMAT.md section 3)
    beyond = abs(delta) > MAX_HEADER_INTEGER // 2
    assert error_stage(message) in (("shape", "header") + (("msgpack",) if beyond else ())), message


@pytest.mark.parametrize(
    ("edit", "stage", "fragment"),
    [
        (lambda h: h.update(format_version=2), "header", "expected format_version to be 1"),
        (lambda h: h["tensors"][0].update(precision="int3"), "header", "one of float32, float16, int8, int4"),
        (
            lambda h: h["tensors"][1].update(name=h["tensors"][0]["name"]),
            "header",
            "unique among the tensors",
        ),
        (lambda h: h["tensors"][0].update(name="x" * 65), "header", "1 to 64 bytes long"),
        (lambda h: h["tensors"][0].update(scales=[0.1]), "header", "low 8 mantissa bits zero"),
        (lambda h: h["tensors"][0].update(scales=[-0.5]), "header", "tensors[1].scales[1]"),
        (lambda h: h["tensors"][0].update(scales=[1.0, 1.0]), "header", "an array of 1 or 8 (rows) scales"),
        (lambda h: h["tensors"][0].pop("scales"), "header", "tensors[1].scales"),
        (lambda h: h["layers"][0].update(kind="conv"), "header", "layers[1].kind to be one of dense"),
        (lambda h: h["layers"][0].update(activation="gelu"), "header", "layers[1].activation"),
        (lambda h: h["layers"][0].update(weight="nope"), "header", "the name of a tensor"),
        (lambda h: h["layers"][1].update(bias=h["layers"][0]["bias"]), "header", "no other weight or bias"),
        (lambda h: h["layers"].pop(), "header", "to name every tensor"),
        (lambda h: h["meta"]["input"].update(shape=[21]), "shape", "to take 21 inputs"),
        (
            lambda h: h["meta"].update(labels=["a", "b"]),
            "shape",
            "one label per output of the last layer (3)",
        ),
        (
            lambda h: h["meta"]["input"].update(layout=5),
            "header",
            "meta.input.layout to be a string, found 5",
        ),
        (lambda h: h["meta"].update(pruning=[]), "header", "meta.pruning to be a map, found an array of 0"),
        (lambda h: h["meta"]["pruning"].pop("threshold"), "header", "meta.pruning.threshold to be a float"),
        (
            lambda h: h["layers"][0].update(kind="conv2d"),
            "header",
            "dense, the only kind format version 1 holds",
        ),
        (lambda h: h["meta"].update(accuracy={"correct": 5, "total": 4}), "header", "meta.accuracy.correct"),
        (
            lambda h: h["meta"].update(calibration={"temperature": -1.0, "sure_threshold": 0.5}),
            "header",
            "meta.calibration.temperature to be a finite float above 0",
        ),
        (
            lambda h: h["meta"].update(calibration={"temperature": 1.0, "sure_threshold": 0.0}),
            "header",
            "meta.calibration.sure_threshold to be a float between 0 and 1",
        ),
        (
            lambda h: h["meta"].update(calibration={"temperature": 1.0}),
            "header",
            "meta.calibration.sure_threshold to be a float",
        ),
        (lambda h: h["meta"].update(calibration="hot"), "header", "meta.calibration to be a map"),
        (lambda h: h.update(tensors=[]), "header", "expected tensors to be an array of 1 to 256 entries"),
        (lambda h: h.update(meta=[1]), "header", "expected meta to be a map, found an array of 1"),
    ],
)
def test_header_rule_violations(host: LuauHost, edit: Any, stage: str, fragment: str) -> None:
    header, payload = split_container(small_stack("int8", seed=0).container)
    edit(header)
    container = build_container(header, payload)
    with pytest.raises(FormatError):
        python_flat(container)
    assert_fails(decode_container(host, container), stage, fragment)


@pytest.mark.parametrize(
    ("edit", "stage", "fragment"),
    [
        (
            lambda h: h["layers"][0].update(strides=[0, 1]),
            "shape",
            "layers[1].strides to be two integers from 1",
        ),
        (lambda h: h["layers"][2].update(strides=[1, 1, 1]), "shape", "layers[3].strides to be two integers"),
        (
            lambda h: h["layers"][0].pop("strides"),
            "header",
            "layers[1].strides to be an array of two integers",
        ),
        (
            lambda h: h["layers"][1].update(padding="full"),
            "header",
            "layers[2].padding to be one of valid, same",
        ),
        (
            lambda h: h["layers"][3].update(pool_size=[2, 0]),
            "shape",
            "layers[4].pool_size to be two integers",
        ),
        (lambda h: h["layers"][1].update(pool_size=[7, 7]), "shape", "7x7 window of layers[2] (maxpool2d"),
        (
            lambda h: h["meta"]["input"].update(shape=[6, 6, 3]),
            "shape",
            "to take the 3 channels of its input",
        ),
        (
            lambda h: h["meta"]["input"].update(shape=[72]),
            "shape",
            "layers[1] (conv2d) to get an [H, W, C] image",
        ),
        (
            lambda h: h["meta"]["input"].update(shape=[1, 1, 6, 6]),
            "shape",
            "layers[1] (conv2d) to get an [H, W, C] image",
        ),
        (lambda h: h["meta"]["input"].update(shape=[65536, 65536, 2]), "shape", "at most 1048576 values"),
        (
            lambda h: h["layers"][0].update(activation="softmax"),
            "shape",
            "to give a vector before its softmax",
        ),
        (lambda h: h.update(layers=h["layers"][:4] + h["layers"][6:]), "shape", "(dense) to get a vector"),
        (lambda h: h["tensors"][0].update(shape=[4, 18]), "shape", 'weight of layers[1] ("conv1.weight")'),
        (lambda h: h["tensors"][0].update(shape=[4, 3, 3, 2, 1]), "shape", "to have 1 to 4 dimensions"),
        (lambda h: h["tensors"][0].update(shape=[65536] * 4), "shape", "at most 16777216 elements"),
        (lambda h: h["layers"][0].pop("weight"), "header", "layers[1].weight to be a string"),
    ],
)
def test_version_2_header_rule_violations(host: LuauHost, edit: Any, stage: str, fragment: str) -> None:
    header, payload = split_container((GOLDEN / "cnn_int8.mnpk").read_bytes())
    edit(header)
    container = build_container(header, payload, version=2)
    with pytest.raises(FormatError):
        python_flat(container)
    assert_fails(decode_container(host, container), stage, fragment)


def test_multiply_adds_are_capped_before_anything_is_allocated(host: LuauHost) -> None:
    # a 1x1 convolution from 256 to 2048 channels over 64x64 positions: 2^31 multiply-adds
    # from 2 MB of int8 kernel, each of 4096 positions holding a legal 256 + 2048 values
    header, payload = split_container((GOLDEN / "cnn_int8.mnpk").read_bytes())
    kernel = bytes(2048 * 256)
    header["tensors"] = [
        {
            "name": "k",
            "precision": "int8",
            "shape": [2048, 1, 1, 256],
            "offset": 0,
            "length": len(kernel),
            "scales": [1.0],
        },
        {"name": "b", "precision": "float32", "shape": [2048], "offset": len(kernel), "length": 8192},
    ]
    header["layers"] = [
        {
            "kind": "conv2d",
            "activation": "relu",
            "weight": "k",
            "bias": "b",
            "strides": [1, 1],
            "padding": "valid",
        },
        {"kind": "global_avgpool2d"},
    ]
    header["meta"]["input"]["shape"] = [16, 16, 256]
    header["meta"]["labels"] = [str(i) for i in range(2048)]
    container = build_container(header, kernel + bytes(8192), version=2)
    with pytest.raises(FormatError, match="multiply-adds"):
        python_flat(container)
    assert_fails(decode_container(host, container), "shape", "at most 67108864 multiply-adds per input")


def test_header_that_is_not_a_map(host: LuauHost) -> None:
    _, payload = split_container(small_stack("int8", seed=0).container)
    assert_fails(
        decode_container(host, build_container([1, 2], payload)), "header", "expected the header to be a map"
    )


def test_int4_block_scale_that_is_not_finite(host: LuauHost) -> None:
    header, payload = split_container(small_stack("int4", seed=0).container)
    damaged = b"\x00\x7c" + payload[2:]  # first block scale: float16 +inf
    assert_fails(
        decode_container(host, build_container(header, damaged)), "container", "finite int4 block scales"
    )


# --- memory: hostile sizes are refused before anything is allocated ------------------

MEMORY_LIMIT = 24 << 20


def frame_declaring(size: int) -> bytes:
    """The start of a zstd frame whose header declares `size` content bytes, then a block."""
    return b"\x28\xb5\x2f\xfd" + bytes([0xE0]) + struct.pack("<Q", size) + b"\x05\x00\x00\x00"


@pytest.mark.parametrize("size", [(64 << 20) + 1, 1 << 40, 2**64 - 1])
def test_frame_declaring_a_huge_content_size_is_refused(size: int) -> None:
    host = LuauHost(memory_limit=MEMORY_LIMIT)
    assert_fails(decode(host, module_table(host, base64.b64encode(frame_declaring(size)), "zstd")), "zstd")


def test_max_bytes_refuses_a_large_declared_frame_before_allocating() -> None:
    host = LuauHost(memory_limit=MEMORY_LIMIT)
    # 60 MB is within the format's limit, but not the caller's
    module = module_table(host, base64.b64encode(frame_declaring(60 << 20)), "zstd")
    text = assert_fails(decode(host, module, 1 << 20), "zstd")
    assert "memory" not in text


@pytest.mark.parametrize(
    "shape",
    [[65536, 65536], [4096, 4096], [65536, 256], [1, 16777217]],
)
def test_tensor_declaring_a_huge_shape_is_refused(shape: list[int]) -> None:
    host = LuauHost(memory_limit=MEMORY_LIMIT)
    header, payload = split_container(small_stack("float32", seed=0).container)
    header["tensors"][0]["shape"] = shape
    header["tensors"][0]["length"] = 4 * math.prod(shape)
    assert_fails(decode_container(host, build_container(header, payload)), "shape")


def test_array_claiming_four_billion_entries_is_refused() -> None:
    host = LuauHost(memory_limit=MEMORY_LIMIT)
    _, payload = split_container(small_stack("float32", seed=0).container)
    raw = b"\x81\xa7tensors\xdd\xff\xff\xff\xff" + b"\x00" * 64
    assert_fails(
        decode_container(host, build_container(None, payload, raw_header=raw)), "msgpack", "truncated"
    )

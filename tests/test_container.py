"""The container (FORMAT.md sections 2-4): golden bytes, round trips, and every MUST rule."""

from __future__ import annotations

import copy
import json
import struct
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgpack
import numpy as np
import pytest
import zstandard
from hypothesis import given, settings
from hypothesis import strategies as st
from mnistpack.constants import MAGIC, MAX_CONTAINER_BYTES, MAX_HEADER_BYTES, PRECISIONS
from mnistpack.container import Container, LayerSpec, compress, decompress, pack, unpack
from mnistpack.errors import (
    ChecksumError,
    CompressionError,
    ContainerError,
    FormatError,
    HeaderError,
    MsgPackError,
    ShapeError,
)
from mnistpack.module_reader import read_module
from mnistpack.quantize import dequantize, quantize

from tests.golden import make_golden

GOLDEN = make_golden.GOLDEN_DIR


def raw_container(header: Any, payload: bytes, *, version: int = 1) -> bytes:
    """A container around any header (a value to msgpack, or bytes) with a correct CRC."""
    header_bytes = header if isinstance(header, bytes) else msgpack.packb(header, use_single_float=True)
    body = struct.pack("<HI", version, len(header_bytes)) + header_bytes + payload
    return MAGIC + body + struct.pack("<I", zlib.crc32(body))


def split(raw: bytes) -> tuple[dict[str, Any], bytes]:
    """(header, payload) of a valid container."""
    (length,) = struct.unpack_from("<I", raw, 6)
    return msgpack.unpackb(raw[10 : 10 + length]), raw[10 + length : -4]


def dense_container(sizes: list[int], precision: str, seed: int = 0) -> Container:
    rng = np.random.default_rng(seed)
    tensors = []
    layers = []
    for number, (inputs, outputs) in enumerate(zip(sizes, sizes[1:], strict=False), start=1):
        weight = rng.normal(0, 0.1, (outputs, inputs)).astype(np.float32)
        bias = rng.normal(0, 0.1, outputs).astype(np.float32)
        tensors += [quantize(f"w{number}", weight, precision), quantize(f"b{number}", bias, "float32")]
        layers.append(
            LayerSpec("dense", "relu" if number < len(sizes) - 1 else "softmax", f"w{number}", f"b{number}")
        )
    meta = {
        "input": {"shape": [28, 28], "layout": "row-major", "range": [0.0, 1.0]},
        "labels": [str(i) for i in range(sizes[-1])],
        "precision": precision,
        "source_sha256": "ab" * 32,
        "packer_version": "test",
        "pruning": {"threshold": 0.001, "inputs_zeroed": 3},
    }
    return Container(tuple(tensors), tuple(layers), meta)


# --- golden files ---------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(make_golden.golden_files()))
def test_golden_files_are_pinned(name: str) -> None:
    if (
        name.endswith(".luau")
        and not name.endswith(".none.luau")
        and zstandard.ZSTD_VERSION != make_golden.ZSTD_VERSION
    ):
        pytest.skip(
            f"zstd bytes are pinned for libzstd {make_golden.ZSTD_VERSION}, not {zstandard.ZSTD_VERSION}"
        )
    assert make_golden.golden_files()[name] == (GOLDEN / name).read_bytes(), (
        f"tests/golden/{name} changed: regenerate deliberately (tests/golden/README.md)"
    )


@pytest.mark.parametrize("variant", sorted([*make_golden.VARIANTS, *make_golden.CNN_VARIANTS]))
def test_golden_files_decode_to_the_expected_values(variant: str) -> None:
    expected = json.loads((GOLDEN / "expected.json").read_text())[variant]
    raw = (GOLDEN / f"{variant}.mnpk").read_bytes()
    for suffix in (".luau", ".none.luau"):
        compression, blob = read_module(GOLDEN / f"{variant}{suffix}")
        assert decompress(blob, compression) == raw
    container = unpack(raw)
    assert container.version() == (2 if variant in make_golden.CNN_VARIANTS else 1)
    tensors = {t.name: t for t in container.tensors}
    for layer, want in zip(container.layers, expected, strict=True):
        described = {key: value for key, value in layer.to_map().items() if key not in ("weight", "bias")}
        assert described == {key: value for key, value in want.items() if key not in ("W", "b")} | {
            "kind": layer.kind
        }
        for key, name in (("W", layer.weight), ("b", layer.bias)):
            if not name:
                assert key not in want
                continue
            got = dequantize(tensors[name]).astype(np.float64)
            if key == "W":  # a kernel's rows: one per output channel
                got = got.reshape(len(got), -1)
            assert np.array_equal(got, np.array(want[key]))
            assert np.array_equal(np.signbit(got), np.signbit(np.array(want[key])))


# --- round trips ------------------------------------------------------------------------


@pytest.mark.parametrize("compression", ["zstd", "none"])
@pytest.mark.parametrize("precision", PRECISIONS)
def test_round_trip_every_precision_and_compression(precision: str, compression: str) -> None:
    container = dense_container([784, 48, 10], precision)
    raw = pack(container)
    blob = compress(raw, compression)
    back = unpack(decompress(blob, compression))
    assert back.tensors == container.tensors
    assert back.layers == container.layers
    assert pack(back) == raw
    if compression == "none":
        assert blob == raw


def test_any_dense_stack_packs() -> None:
    container = dense_container([784, 128, 64, 10], "int4")
    assert [t.shape for t in unpack(pack(container)).tensors] == [
        (128, 784),
        (128,),
        (64, 128),
        (64,),
        (10, 64),
        (10,),
    ]


def test_bytes_do_not_depend_on_dict_order() -> None:
    container = dense_container([784, 8, 10], "int8")
    reordered = {key: container.meta[key] for key in reversed(list(container.meta))}
    reordered["input"] = dict(reversed(list(container.meta["input"].items())))
    assert pack(Container(container.tensors, container.layers, reordered)) == pack(container)


def test_header_fields_keys_sorted_and_floats_single() -> None:
    raw = (GOLDEN / "int4.mnpk").read_bytes()
    assert raw[:4] == b"MNPK" and raw[4:6] == b"\x01\x00"
    (length,) = struct.unpack_from("<I", raw, 6)
    header_bytes = raw[10 : 10 + length]
    pairs = msgpack.unpackb(header_bytes, object_pairs_hook=lambda p: [k for k, _ in p])
    assert pairs == sorted(pairs)
    header, payload = split(raw)
    assert header["format_version"] == 1
    assert [(t["name"], t["offset"], t["length"]) for t in header["tensors"]] == [
        ("dense1.weight", 0, 54),
        ("dense1.bias", 54, 12),
        ("dense2.weight", 66, 36),
        ("dense2.bias", 102, 8),
    ]
    assert header["tensors"][0]["block_size"] == 32 and "scales" not in header["tensors"][0]
    assert len(payload) == 110
    assert struct.unpack("<I", raw[-4:])[0] == zlib.crc32(raw[4:-4])
    # meta.input.range's 1.0 as msgpack float32 (0xca), never float64 (0xcb)
    int8_header = (GOLDEN / "int8.mnpk").read_bytes()
    assert b"\xcb" + struct.pack(">d", 1.0) not in int8_header
    assert b"\xca" + struct.pack(">f", 1.0) in int8_header  # meta.input.range


def test_decoders_accept_any_msgpack_encoding_and_ignore_unknown_keys() -> None:
    header, payload = split((GOLDEN / "int8_per_row.mnpk").read_bytes())
    header["zzz_future"] = {"anything": [1, 2.5]}
    header["tensors"][0]["note"] = "ignored"
    header["layers"][1]["dropout"] = 0.0
    header["meta"]["input"]["extra"] = True
    loose = dict(reversed(list(header.items())))  # unsorted keys, float64 floats
    raw = raw_container(msgpack.packb(loose, use_single_float=False), payload)
    assert [t.scales for t in unpack(raw).tensors] == [t.scales for t in unpack(pack(unpack(raw))).tensors]


# --- framing, CRC and msgpack stages ---------------------------------------------------


def test_crc_mismatch_is_detected_anywhere() -> None:
    raw = (GOLDEN / "float16.mnpk").read_bytes()
    (header_length,) = struct.unpack_from("<I", raw, 6)
    payload_at = 10 + header_length
    for index in (payload_at, payload_at + 7, len(raw) - 30, len(raw) - 5, len(raw) - 1):
        damaged = bytearray(raw)
        damaged[index] ^= 0x10
        with pytest.raises(ChecksumError, match="^crc: the stored CRC-32"):
            unpack(bytes(damaged))


def test_the_header_is_checked_before_the_crc() -> None:
    # FORMAT.md section 2: a damaged header fails as a header, before the CRC pass
    raw = (GOLDEN / "float16.mnpk").read_bytes()
    for index, error in ((10, MsgPackError), (20, FormatError)):
        damaged = bytearray(raw)
        damaged[index] ^= 0x10
        with pytest.raises(error) as caught:
            unpack(bytes(damaged))
        assert not isinstance(caught.value, ChecksumError)


def test_framing_errors() -> None:
    raw = (GOLDEN / "int8.mnpk").read_bytes()
    header, payload = split(raw)
    cases: list[tuple[bytes, str]] = [
        (raw[:13], "at least 14 bytes"),
        (b"PK\x03\x04" + raw[4:], "expected magic"),
        (raw_container(header, payload, version=3), "format version 3; this mnistpack reads versions 1 to 2"),
        (raw_container(header, payload, version=0), "format version 0; this mnistpack reads versions 1 to 2"),
        (raw[:6] + struct.pack("<I", 0) + raw[10:], "header length must be 1 to"),
        (raw[:6] + struct.pack("<I", MAX_HEADER_BYTES + 1) + raw[10:], "header length must be 1 to"),
        (raw[:6] + struct.pack("<I", len(raw)) + raw[10:], "only .* precede the CRC"),
    ]
    for data, message in cases:
        with pytest.raises(ContainerError, match=message):
            unpack(data)
    with pytest.raises(ContainerError, match="more than 67108864"):
        unpack(raw + bytes(MAX_CONTAINER_BYTES))


def test_msgpack_errors_come_after_a_valid_crc() -> None:
    header, payload = split((GOLDEN / "int8.mnpk").read_bytes())
    good = msgpack.packb(header, use_single_float=True)
    for bad in (b"\xc1", good + b"\x00", good[:-3], msgpack.packb([1, 2]), b"\xa3\xff\xfe\xfd"):
        with pytest.raises(MsgPackError, match="^msgpack: "):
            unpack(raw_container(bad, payload))


# --- header and shape rules --------------------------------------------------------------

Mutation = Callable[[dict[str, Any]], None]


def _set(path: str, value: Any) -> Mutation:
    def mutate(header: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node: Any = header
        for part in parents:
            node = node[int(part)] if part.isdigit() else node[part]
        if value is KeyError:
            del node[int(last) if last.isdigit() else last]
        else:
            node[int(last) if last.isdigit() else last] = value

    return mutate


HEADER_RULES: list[tuple[str, Mutation, type[FormatError], str]] = [
    ("no tensors key", _set("tensors", KeyError), HeaderError, "no 'tensors'"),
    ("version mismatch", _set("format_version", 2), HeaderError, "says format version 2"),
    ("bool version", _set("format_version", True), HeaderError, "must be int"),
    ("empty tensors", _set("tensors", []), HeaderError, "1 to 256 entries"),
    ("too many layers", _set("layers", [{}] * 65), HeaderError, "1 to 64 entries"),
    ("unknown precision", _set("tensors.0.precision", "int2"), HeaderError, "precision must be one of"),
    ("empty name", _set("tensors.1.name", ""), HeaderError, "1 to 64 bytes"),
    ("long name", _set("tensors.1.name", "x" * 65), HeaderError, "1 to 64 bytes"),
    ("duplicate name", _set("tensors.1.name", "dense1.weight"), HeaderError, "unique"),
    ("scale count", _set("tensors.0.scales", [0.5, 0.5]), HeaderError, "needs 1 or 3 scales"),
    ("scale low bits", _set("tensors.0.scales", [0.1]), HeaderError, "low mantissa bits"),
    ("negative scale", _set("tensors.0.scales", [-0.5]), HeaderError, "above 0"),
    ("nan scale", _set("tensors.0.scales", [float("nan")]), HeaderError, "finite"),
    ("int scale", _set("tensors.0.scales", [1]), HeaderError, "finite float"),
    ("no scales", _set("tensors.0.scales", KeyError), HeaderError, "no 'scales'"),
    ("unknown kind", _set("layers.0.kind", "conv"), HeaderError, "kind must be one of dense"),
    ("unknown activation", _set("layers.1.activation", "gelu"), HeaderError, "activation must be one of"),
    ("missing tensor", _set("layers.0.bias", "nope"), HeaderError, "does not exist"),
    ("tensor used twice", _set("layers.1.bias", "dense1.bias"), HeaderError, "already used"),
    ("labels count", _set("meta.labels", ["0", "1", "2"]), ShapeError, "3 labels for 2 outputs"),
    ("input size", _set("meta.input.shape", [2, 3]), ShapeError, r"takes 4 inputs, the layer gets \[2, 3\]"),
    ("range ints", _set("meta.input.range", [0, 1]), HeaderError, "two floats"),
    ("pruning threshold", _set("meta.pruning.threshold", KeyError), HeaderError, "no 'threshold'"),
    ("kind of version 2", _set("layers.0.kind", "conv2d"), HeaderError, "version 1 holds only dense layers"),
    ("accuracy", _set("meta.accuracy", {"correct": 3, "total": 2}), HeaderError, "correct <= total"),
    (
        "zero temperature",
        _set("meta.calibration", {"temperature": 0.0, "sure_threshold": 0.5}),
        HeaderError,
        "temperature must be a finite float > 0",
    ),
    (
        "infinite temperature",
        _set("meta.calibration", {"temperature": float("inf"), "sure_threshold": 0.5}),
        HeaderError,
        "temperature must be a finite float > 0",
    ),
    (
        "sure threshold 1",
        _set("meta.calibration", {"temperature": 1.5, "sure_threshold": 1.0}),
        HeaderError,
        "sure_threshold must be between 0 and 1",
    ),
    (
        "integer temperature",
        _set("meta.calibration", {"temperature": 2, "sure_threshold": 0.5}),
        HeaderError,
        "'temperature' must be float",
    ),
    ("calibration list", _set("meta.calibration", [1.0, 0.5]), HeaderError, "'calibration' must be dict"),
    ("no meta", _set("meta", KeyError), HeaderError, "no 'meta'"),
    (
        "offset gap",
        _set("tensors.1.offset", 3),
        ShapeError,
        "starts at payload offset 3; the previous tensor ends at 12",
    ),
    ("length", _set("tensors.1.length", 16), ShapeError, "takes 12 bytes, the header says 16"),
    ("3-D", _set("tensors.0.shape", [3, 4, 1]), ShapeError, "weight must have 2 dimensions"),
    ("5-D", _set("tensors.0.shape", [3, 4, 1, 1, 1]), ShapeError, "cannot have shape"),
    ("1-D int8", _set("tensors.0.shape", [12]), ShapeError, "cannot have shape"),
    ("zero dim", _set("tensors.1.shape", [0]), ShapeError, "from 1 to 65536"),
    ("huge dims", _set("tensors.0.shape", [65536, 65536]), ShapeError, "exceeds 16777216 elements"),
    ("bias shape", _set("tensors.1.shape", [3, 1]), ShapeError, r"bias must have shape \[3\]"),
]


@pytest.mark.parametrize(
    ("name", "mutate", "error", "message"), HEADER_RULES, ids=[r[0] for r in HEADER_RULES]
)
def test_header_rules(name: str, mutate: Mutation, error: type[FormatError], message: str) -> None:
    header, payload = split((GOLDEN / "int8.mnpk").read_bytes())
    mutate(header)
    with pytest.raises(error, match=message):
        unpack(raw_container(header, payload))


def _both(first: Mutation, second: Mutation) -> Mutation:
    def mutate(header: dict[str, Any]) -> None:
        first(header)
        second(header)

    return mutate


def _drop_layers(start: int, stop: int) -> Mutation:
    def mutate(header: dict[str, Any]) -> None:
        header["layers"] = header["layers"][:start] + header["layers"][stop:]

    return mutate


# Version 2: on tests/golden/cnn_int8.mnpk, whose layers are conv2d, maxpool2d, conv2d,
# avgpool2d, global_avgpool2d, flatten, dense, dense on a [6, 6, 2] input.
CNN_HEADER_RULES: list[tuple[str, Mutation, type[FormatError], str]] = [
    ("zero stride", _set("layers.0.strides", [0, 1]), ShapeError, "strides must be two integers from 1"),
    ("three strides", _set("layers.2.strides", [1, 1, 1]), ShapeError, "strides must be two integers"),
    ("float stride", _set("layers.2.strides", [1.0, 1]), ShapeError, "strides must be two integers"),
    ("no strides", _set("layers.0.strides", KeyError), HeaderError, "no 'strides'"),
    ("no padding", _set("layers.1.padding", KeyError), HeaderError, "no 'padding'"),
    ("unknown padding", _set("layers.0.padding", "full"), HeaderError, "padding must be one of valid, same"),
    ("no pool size", _set("layers.3.pool_size", KeyError), HeaderError, "no 'pool_size'"),
    ("zero pool", _set("layers.3.pool_size", [2, 0]), ShapeError, "pool_size must be two integers"),
    ("window too big", _set("layers.1.pool_size", [7, 7]), ShapeError, "7x7 window .* does not fit the 6x6"),
    (
        "kernel too big",
        _both(_set("meta.input.shape", [2, 6, 2]), _set("layers.0.padding", "valid")),
        ShapeError,
        "3x3 window .* does not fit the 2x6",
    ),
    ("channels", _set("meta.input.shape", [6, 6, 3]), ShapeError, "takes 2 channels, the input .* has 3"),
    ("image as vector", _set("meta.input.shape", [72]), ShapeError, r"needs a 3-D \[H, W, C\] input"),
    ("absurd input", _set("meta.input.shape", [65536, 65536, 2]), ShapeError, "more than 1,048,576"),
    ("softmax image", _set("layers.0.activation", "softmax"), ShapeError, "softmax needs a 1-D output"),
    ("dense on image", _drop_layers(4, 6), ShapeError, "dense layer needs a 1-D input"),
    ("kernel 2-D", _set("tensors.0.shape", [4, 18]), ShapeError, "weight must have 4 dimensions"),
    ("dense 4-D", _set("tensors.4.shape", [5, 3, 1, 1]), ShapeError, "weight must have 2 dimensions"),
    ("conv without weight", _set("layers.0.weight", KeyError), HeaderError, "no 'weight'"),
    ("pool with activation", _set("layers.1.activation", "gelu"), None, ""),
]


@pytest.mark.parametrize(
    ("name", "mutate", "error", "message"), CNN_HEADER_RULES, ids=[r[0] for r in CNN_HEADER_RULES]
)
def test_version_2_header_rules(
    name: str, mutate: Mutation, error: type[FormatError] | None, message: str
) -> None:
    header, payload = split((GOLDEN / "cnn_int8.mnpk").read_bytes())
    mutate(header)
    if error is None:  # keys a kind does not use are unknown keys: ignored
        assert unpack(raw_container(header, payload, version=2)).layers[1].activation == ""
        return
    with pytest.raises(error, match=message):
        unpack(raw_container(header, payload, version=2))


def test_version_1_prefix_holds_only_dense_layers() -> None:
    header, payload = split((GOLDEN / "cnn_int8.mnpk").read_bytes())
    header["format_version"] = 1
    with pytest.raises(HeaderError, match="layer 0: format version 1 holds only dense layers, found conv2d"):
        unpack(raw_container(header, payload, version=1))


def test_a_dense_first_layer_reads_an_input_of_any_rank() -> None:
    header, payload = split((GOLDEN / "int8.mnpk").read_bytes())
    header["meta"]["input"]["shape"] = [1, 1, 2, 1, 2]  # 4 values, as the first layer takes
    assert unpack(raw_container(header, payload)).meta["input"]["shape"] == [1, 1, 2, 1, 2]


def test_dense_networks_are_written_as_version_1() -> None:
    assert pack(dense_container([784, 16, 10], "int8"))[4:6] == b"\x01\x00"
    assert (GOLDEN / "cnn_int8.mnpk").read_bytes()[4:6] == b"\x02\x00"


def test_payload_longer_than_the_tensors() -> None:
    header, payload = split((GOLDEN / "int8.mnpk").read_bytes())
    with pytest.raises(ShapeError, match="cover 38 payload bytes, but the payload has 39"):
        unpack(raw_container(header, payload + b"\x00"))


def test_pack_refuses_what_unpack_would_reject() -> None:
    good = make_golden.golden_container("int8")
    broken = Container(good.tensors, good.layers[:1], good.meta)
    with pytest.raises(HeaderError, match="every tensor must belong to a layer"):
        pack(broken)


@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_inconsistent_offsets_lengths_and_shapes_are_rejected(data: st.DataObject) -> None:
    """Lengths follow from shapes, offsets from lengths, shapes from the layer chain:
    any change to any of them, however many at once, must be rejected."""
    variant = data.draw(st.sampled_from(sorted(make_golden.VARIANTS)))
    header, payload = split((GOLDEN / f"{variant}.mnpk").read_bytes())
    original = copy.deepcopy(header)
    for _ in range(data.draw(st.integers(1, 4))):
        tensor = data.draw(st.sampled_from(header["tensors"]))
        field = data.draw(st.sampled_from(["offset", "length", "shape"]))
        if field == "shape":
            tensor["shape"] = data.draw(st.lists(st.integers(0, 70_000), min_size=0, max_size=3))
        else:
            tensor[field] = tensor[field] + data.draw(st.integers(-200, 200).filter(lambda n: n != 0))
    if header == original:
        return
    with pytest.raises((ShapeError, HeaderError)):
        unpack(raw_container(header, payload))


# --- compression ------------------------------------------------------------------------


def test_zstd_frame_declares_its_size_without_checksum_or_dictionary() -> None:
    raw = (GOLDEN / "float32.mnpk").read_bytes()
    params = zstandard.get_frame_parameters(compress(raw, "zstd"))
    assert (params.content_size, params.has_checksum, params.dict_id) == (len(raw), False, 0)
    assert compress(raw, "none") == raw == decompress(raw, "none")


def test_decompress_rejects_what_roblox_or_the_luau_decoder_would_not_read() -> None:
    raw = (GOLDEN / "float32.mnpk").read_bytes()
    frame = compress(raw, "zstd")
    unsized = zstandard.ZstdCompressor(write_content_size=False).compress(raw)
    cases = [
        (frame + frame, "unused data"),
        (unsized, "does not declare its content size"),
        (raw, "expected a zstd frame"),
        (frame[:-5], "damaged"),
        (b"\x28\xb5\x2f\xfd" + b"\xff" * 8, "damaged"),
    ]
    for blob, message in cases:
        with pytest.raises(CompressionError, match=message):
            decompress(blob, "zstd")
    with pytest.raises(CompressionError, match="one of zstd, none"):
        compress(raw, "lz4")


def test_decompress_refuses_a_frame_declaring_more_than_the_container_cap() -> None:
    # frame header: magic, descriptor 0xa0 (single segment, 4-byte size), size; then garbage
    huge = b"\x28\xb5\x2f\xfd\xa0" + struct.pack("<I", MAX_CONTAINER_BYTES + 1) + b"\x01\x00\x00"
    with pytest.raises(CompressionError, match="more than 67108864"):
        decompress(huge, "zstd")


def test_golden_dir_is_complete() -> None:
    on_disk = {p.name for p in Path(GOLDEN).iterdir() if p.suffix in (".mnpk", ".luau", ".json")}
    assert on_disk == set(make_golden.golden_files())

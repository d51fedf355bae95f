"""Hostile and borderline containers that both decoders must treat alike (issue 11).

Each case is a container (or, for the framing cases, a zstd blob) and what every decoder
must make of it: the weights, or an error of one named stage. tests/test_hostile_corpus.py
runs the Python decoder and the Luau decoder on every case, each under limits; the CLI
tests run `mnistpack inspect` on some of them under process limits.

Write the corpus out as weights modules, to try other tools on it:

    .venv/bin/python -m tests.hostile_corpus OUT_DIR
"""

from __future__ import annotations

import struct
import sys
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import msgpack
import zstandard
from mnistpack.constants import (
    FORMAT_VERSION,
    MAGIC,
    MAX_CONTAINER_BYTES,
    MAX_DECODED_VALUES,
    MAX_DIM,
    MAX_HEADER_DEPTH,
    MAX_HEADER_INTEGER,
    MAX_HEADER_VALUES,
)
from mnistpack.luau_emit import emit_module
from mnistpack.quantize import payload_length

WEIGHTS = "weights"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
SKIPPABLE = struct.pack("<II", 0x184D2A50, 3) + b"abc"

# A raw msgpack value put in the header in place of this string (so the bytes can be
# anything, even what msgpack-python refuses to write: repeated keys, int keys, ext).
_PLACEHOLDER = "\u2603placeholder\u2603"


@dataclass(frozen=True)
class Case:
    name: str
    expect: str  # WEIGHTS, or the stage both decoders must name
    build: Callable[[], bytes]  # the container, or the zstd blob when `blob` is set
    blob: bool = False  # `build` gives the compressed bytes: test with compression "zstd" only
    slow: bool = False  # large: run through the CLI under process limits too

    def compressions(self) -> tuple[str, ...]:
        return ("zstd",) if self.blob else ("zstd", "none")

    def data(self, compression: str) -> bytes:
        """The bytes the module's base64 text holds (zstd at a fast level: the frame is
        what the packer writes, bar the level, which decoders cannot see)."""
        raw = self.build()
        if self.blob or compression == "none":
            return raw
        return zstandard.ZstdCompressor(level=3, write_content_size=True, write_checksum=False).compress(raw)


# --- building containers ---------------------------------------------------------------


@dataclass(frozen=True)
class Tensor:
    name: str
    precision: str
    shape: tuple[int, ...]


def dense_tensors(sizes: list[int], precision: str) -> list[Tensor]:
    """Weight and bias tensors of a Dense chain sizes[0] -> sizes[1] -> ..."""
    tensors = []
    for k, (inputs, outputs) in enumerate(zip(sizes, sizes[1:], strict=False), start=1):
        tensors.append(Tensor(f"w{k}", precision, (outputs, inputs)))
        tensors.append(Tensor(f"b{k}", "float32", (outputs,)))
    return tensors


def header_for(tensors: list[Tensor], input_shape: list[int]) -> dict[str, Any]:
    entries = []
    offset = 0
    for tensor in tensors:
        length = payload_length(tensor.precision, tensor.shape)
        entry: dict[str, Any] = {
            "name": tensor.name,
            "precision": tensor.precision,
            "shape": list(tensor.shape),
            "offset": offset,
            "length": length,
        }
        if tensor.precision == "int8":
            entry["scales"] = [0.5]
        if tensor.precision == "int4":
            entry["block_size"] = 32
        entries.append(entry)
        offset += length
    layers = [
        {"kind": "dense", "activation": "relu", "weight": w.name, "bias": b.name}
        for w, b in zip(tensors[::2], tensors[1::2], strict=True)
    ]
    layers[-1]["activation"] = "softmax"
    outputs = tensors[-1].shape[0]
    meta = {
        "input": {"shape": input_shape, "layout": "row-major", "range": [0.0, 1.0]},
        "labels": [str(i) for i in range(outputs)],
        "precision": tensors[0].precision,
        "source_sha256": "0" * 64,
        "packer_version": "hostile corpus",
        "pruning": {"threshold": 0.0, "inputs_zeroed": 0},
    }
    return {"format_version": FORMAT_VERSION, "tensors": entries, "layers": layers, "meta": meta}


def payload_size(header: dict[str, Any]) -> int:
    return sum(int(entry["length"]) for entry in header["tensors"])


def container(header_bytes: bytes, payload: bytes) -> bytes:
    body = struct.pack("<HI", FORMAT_VERSION, len(header_bytes)) + header_bytes + payload
    return MAGIC + body + struct.pack("<I", zlib.crc32(body))


def packed(header: dict[str, Any], raw_value: bytes | None = None, payload: bytes | None = None) -> bytes:
    """A container around `header` with a zero payload; `raw_value` replaces the value of
    meta.zz_unknown (which this function adds) with arbitrary msgpack bytes."""
    if raw_value is not None:
        header["meta"]["zz_unknown"] = _PLACEHOLDER
    header_bytes = msgpack.packb(header, use_single_float=True, use_bin_type=True)
    if raw_value is not None:
        marker = msgpack.packb(_PLACEHOLDER, use_bin_type=True)
        assert header_bytes.count(marker) == 1
        header_bytes = header_bytes.replace(marker, raw_value)
    return container(header_bytes, payload if payload is not None else bytes(payload_size(header)))


def small_header(precision: str = "int4") -> dict[str, Any]:
    """A 4-3-2 network: the smallest base for header edits."""
    return header_for(dense_tensors([4, 3, 2], precision), [2, 2])


def with_unknown(raw_value: bytes) -> Callable[[], bytes]:
    return lambda: packed(small_header(), raw_value)


def count_values(value: Any) -> int:
    """Msgpack values in a decoded header, as FORMAT.md section 6 counts them."""
    if isinstance(value, dict):
        return 1 + sum(1 + count_values(item) for item in value.values())
    if isinstance(value, list):
        return 1 + sum(count_values(item) for item in value)
    return 1


def nested_arrays(innermost_depth: int) -> bytes:
    """meta.zz_unknown = [[...[0]...]] whose innermost 0 sits at `innermost_depth`
    (the header map is depth 1, meta 2, the value of zz_unknown 3)."""
    arrays = innermost_depth - 3
    return b"\x91" * arrays + b"\x00"


def nested_maps(levels: int) -> bytes:
    return b"\x81\xa1a" * levels + b"\x00"


def header_values_case(extra: int) -> bytes:
    """meta.zz_unknown = an array of zeros making the header hold MAX_HEADER_VALUES + extra values."""
    header = small_header()
    header["meta"]["zz_unknown"] = []
    base = count_values(header)
    header["meta"]["zz_unknown"] = [0] * (MAX_HEADER_VALUES + extra - base)
    assert count_values(header) == MAX_HEADER_VALUES + extra
    return packed(header)


def int4_scale_case(scale_bits: int) -> bytes:
    """The 4-3-2 int4 network with its first block scale set to the float16 `scale_bits`."""
    header = small_header("int4")
    payload = bytearray(payload_size(header))
    struct.pack_into("<H", payload, 0, scale_bits)
    return packed(header, payload=bytes(payload))


def at_value_limit(over: bool) -> bytes:
    """int4 681 -> 6141 -> 1 holds exactly MAX_DECODED_VALUES values; -> 2 outputs, more."""
    outputs = 2 if over else 1
    tensors = dense_tensors([681, 6141, outputs], "int4")
    total = sum(t.shape[0] * (t.shape[1] if len(t.shape) == 2 else 1) for t in tensors)
    assert (total == MAX_DECODED_VALUES) != over, total
    return packed(header_for(tensors, [681]))


def expansion_bomb(precision: str) -> bytes:
    """Layers alternating 65536 <-> 256 wide, every byte zero: a few KB compressed, tens of
    millions of values decoded, had any decoder built them."""
    sizes = [256, MAX_DIM, 256, MAX_DIM, 10]
    return packed(header_for(dense_tensors(sizes, precision), [256]))


def long_input_shape(dims: int, dim: int) -> bytes:
    header = small_header()
    header["meta"]["input"]["shape"] = [2, 2] + [dim] * dims
    return packed(header)


# --- zstd framing ------------------------------------------------------------------------


@cache
def good_container() -> bytes:
    return packed(small_header("float32"))


def frame(**options: Any) -> bytes:
    return zstandard.ZstdCompressor(level=3, **options).compress(good_container())


def frame_claiming(size: int) -> bytes:
    """A frame header (single segment, 8-byte content size) claiming `size` bytes, then one
    empty last raw block."""
    return ZSTD_MAGIC + b"\xe0" + struct.pack("<Q", size) + b"\x01\x00\x00"


def frame_with_dictionary() -> bytes:
    """The frame with a 1-byte dictionary id 7 added after the descriptor (and after the
    window descriptor, which single-segment frames have not)."""
    good = frame(write_content_size=True)
    at = 5 if good[4] & 0x20 else 6
    return good[:4] + bytes([good[4] | 0x01]) + good[5:at] + b"\x07" + good[at:]


def cases() -> list[Case]:
    big = MAX_HEADER_INTEGER
    return [
        Case("a valid 4-3-2 int4 container", WEIGHTS, lambda: packed(small_header())),
        # decoded values (FORMAT.md section 6)
        Case(
            "int8 expansion bomb, 50 million zero values", "shape", lambda: expansion_bomb("int8"), slow=True
        ),
        Case("int4 expansion bomb", "shape", lambda: expansion_bomb("int4"), slow=True),
        Case("exactly MAX_DECODED_VALUES values", WEIGHTS, lambda: at_value_limit(False), slow=True),
        Case("just over MAX_DECODED_VALUES values", "shape", lambda: at_value_limit(True)),
        # header values and nesting
        Case(
            "a million empty maps under an unknown key",
            "msgpack",
            with_unknown(b"\xdd" + struct.pack(">I", 10**6) + b"\x80" * 10**6),
            slow=True,
        ),
        Case("exactly MAX_HEADER_VALUES header values", WEIGHTS, lambda: header_values_case(0)),
        Case("one header value too many", "msgpack", lambda: header_values_case(1)),
        Case(
            f"an unknown value at depth {MAX_HEADER_DEPTH}",
            WEIGHTS,
            with_unknown(nested_arrays(MAX_HEADER_DEPTH)),
        ),
        Case(
            f"an unknown value at depth {MAX_HEADER_DEPTH + 1}",
            "msgpack",
            with_unknown(nested_arrays(MAX_HEADER_DEPTH + 1)),
        ),
        Case("unknown maps nested 400 deep", "msgpack", with_unknown(nested_maps(400)), slow=True),
        Case("unknown arrays nested 1000 deep", "msgpack", with_unknown(nested_arrays(1000))),
        Case("unknown arrays nested 100000 deep", "msgpack", with_unknown(nested_arrays(100_000))),
        # integers
        Case("uint64 2^53 - 1", WEIGHTS, with_unknown(b"\xcf" + struct.pack(">Q", big))),
        Case("int64 -(2^53 - 1)", WEIGHTS, with_unknown(b"\xd3" + struct.pack(">q", -big))),
        Case("uint64 2^53", "msgpack", with_unknown(b"\xcf" + struct.pack(">Q", big + 1))),
        Case("int64 -2^53", "msgpack", with_unknown(b"\xd3" + struct.pack(">q", -big - 1))),
        Case("uint64 2^64 - 1", "msgpack", with_unknown(b"\xcf" + b"\xff" * 8)),
        Case("int64 -2^63", "msgpack", with_unknown(b"\xd3\x80" + b"\x00" * 7)),
        # keys and types
        Case("a key twice in an unknown map", "msgpack", with_unknown(b"\x82\xa1a\x01\xa1a\x02")),
        Case("a key twice in the meta map", "msgpack", lambda: _duplicate_meta_key()),
        Case("an int map key", "msgpack", with_unknown(b"\x81\x01\x02")),
        Case("a bin map key", "msgpack", with_unknown(b"\x81\xc4\x01a\x02")),
        Case("an ext value", "msgpack", with_unknown(b"\xd4\x05\x00")),
        Case("a timestamp ext value", "msgpack", with_unknown(b"\xd6\xff\x00\x00\x00\x01")),
        Case("the never-used byte 0xC1", "msgpack", with_unknown(b"\xc1")),
        Case(
            "NaN and infinities as unknown floats",
            WEIGHTS,
            with_unknown(
                b"\x93\xca\x7f\xc0\x00\x00\xcb" + struct.pack(">d", float("inf")) + b"\xca\xff\x80\x00\x00"
            ),
        ),
        # int4 block scales (FORMAT.md section 4)
        Case("a NaN int4 block scale", "container", lambda: int4_scale_case(0x7E00)),
        Case("an infinite int4 block scale", "container", lambda: int4_scale_case(0x7C00)),
        Case("a -infinite int4 block scale", "container", lambda: int4_scale_case(0xFC00)),
        Case("a subnormal int4 block scale", WEIGHTS, lambda: int4_scale_case(0x0001)),
        # meta.input.shape
        Case(
            "meta.input.shape with 60,000 dimensions of 1",
            WEIGHTS,
            lambda: long_input_shape(60_000, 1),
            slow=True,
        ),
        Case(
            "meta.input.shape with 60,000 dimensions of 65536",
            "shape",
            lambda: long_input_shape(60_000, MAX_DIM),
            slow=True,
        ),
        Case("meta.input.shape with 70,000 dimensions", "header", lambda: long_input_shape(70_000, 1)),
        Case(
            "meta.input.shape with 340,000 dimensions",
            "msgpack",
            lambda: long_input_shape(340_000, 1),
            slow=True,
        ),
        Case("70,000 labels", "header", lambda: _many_labels(70_000)),
        Case("no labels", "header", lambda: _many_labels(0)),
        # zstd framing (FORMAT.md section 5)
        Case("a zstd frame", WEIGHTS, lambda: frame(write_content_size=True), blob=True),
        Case(
            "a zstd frame with a content checksum",
            WEIGHTS,
            lambda: frame(write_content_size=True, write_checksum=True),
            blob=True,
        ),
        Case("a frame without its content size", "zstd", lambda: frame(write_content_size=False), blob=True),
        Case("two frames", "zstd", lambda: frame(write_content_size=True) * 2, blob=True),
        Case(
            "a skippable frame first", "zstd", lambda: SKIPPABLE + frame(write_content_size=True), blob=True
        ),
        Case("a skippable frame last", "zstd", lambda: frame(write_content_size=True) + SKIPPABLE, blob=True),
        Case("a byte after the frame", "zstd", lambda: frame(write_content_size=True) + b"\x00", blob=True),
        Case("a frame with a dictionary id", "zstd", frame_with_dictionary, blob=True),
        Case(
            "a frame claiming MAX_CONTAINER_BYTES + 1",
            "zstd",
            lambda: frame_claiming(MAX_CONTAINER_BYTES + 1),
            blob=True,
        ),
        Case("a frame claiming 2^60 bytes", "zstd", lambda: frame_claiming(1 << 60), blob=True),
        Case("a frame claiming 1000 bytes, holding none", "zstd", lambda: frame_claiming(1000), blob=True),
    ]


def _duplicate_meta_key() -> bytes:
    header = small_header()
    raw = msgpack.packb(header, use_single_float=True)
    meta_key = msgpack.packb("meta")
    at = raw.index(meta_key) + len(meta_key)
    count = raw[at] - 0x80  # meta is a fixmap
    duplicate = msgpack.packb("packer_version") + msgpack.packb("again")
    header_bytes = raw[:at] + bytes([0x80 + count + 1]) + duplicate + raw[at + 1 :]
    return container(header_bytes, bytes(payload_size(header)))


def _many_labels(count: int) -> bytes:
    header = small_header()
    header["meta"]["labels"] = [str(i % 10) for i in range(count)]
    return packed(header)


# --- writing the corpus out ----------------------------------------------------------------


def module_files(case: Case, compression: str) -> dict[str, str]:
    """The weights module files (single or split) the packer would write for `case`."""
    return emit_module(
        case.data(compression), compression, version=1, comment_lines=[f"hostile corpus: {case.name}"]
    )


def slug(case: Case, compression: str) -> str:
    cleaned = "".join(c if c.isalnum() else "-" for c in case.name.lower()).strip("-")
    while "--" in cleaned:
        cleaned = cleaned.replace("--", "-")
    return f"{cleaned}.{compression}"


def write_corpus(out: Path) -> Iterator[Path]:
    for case in cases():
        for compression in case.compressions():
            folder = out / slug(case, compression)
            for relative, source in module_files(case, compression).items():
                path = folder / relative
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(source, encoding="utf-8")
            (folder / "EXPECT").write_text(case.expect + "\n", encoding="utf-8")
            yield folder


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit("usage: python -m tests.hostile_corpus OUT_DIR")
    for folder in write_corpus(Path(sys.argv[1])):
        print(folder)

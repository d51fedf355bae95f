"""Issue 6: mutated modules through the Luau decoder, each under a VM time limit.

The bases are small dense stacks (format version 1) and small convolutional networks with
every layer kind (version 2). Every case must end in the exact weights it should give
(the original ones, or for a container that is still valid after the mutation, what
Python's decoder reads from it) or in an error whose message is `mnistpack: <stage>: ...`
with a known stage: zero hangs, zero VM crashes, zero wrong weights. Mutations hit every
layer and region: the base64 text, the zstd frame, the container's magic, version, header
length, header, payload and CRC (with the CRC left stale or recomputed), random garbage,
and msgpack headers that are valid msgpack but wrong in meaning.

MNISTPACK_FUZZ_CASES (default 10,000), MNISTPACK_FUZZ_BIG_CASES (default 200, on a
784-256-10 int8 module) and MNISTPACK_FUZZ_SEED (default fixed, so CI is repeatable) make
longer or different local runs.

Issue 11 adds valid but huge containers (MNISTPACK_FUZZ_HUGE_CASES, default 3): random
networks near FORMAT.md's limits (decoded values, header values), which both decoders
must read to the same weights in a VM capped at 256 MiB.
"""

from __future__ import annotations

import base64
import copy
import os
import random
import struct
import zlib
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import msgpack
import numpy as np
import pytest
import zstandard
from mnistpack.constants import (
    CRC_SIZE,
    MAGIC,
    MAX_DECODED_VALUES,
    MAX_DIM,
    MAX_HEADER_VALUES,
    PRECISIONS,
    PREFIX_SIZE,
)
from mnistpack.container import Container, LayerSpec, pack
from mnistpack.errors import FormatError
from mnistpack.quantize import QuantizedTensor, quantize

from tests.luau_decode_helpers import (
    DECODE_CHUNK,
    Packed,
    error_stage,
    pack_layers,
    python_flat,
    small_cnn,
    small_meta,
    small_stack,
)
from tests.luau_host import LuauHost

CASES = int(os.environ.get("MNISTPACK_FUZZ_CASES", "10000"))
BIG_CASES = int(os.environ.get("MNISTPACK_FUZZ_BIG_CASES", "200"))
SEED = int(os.environ.get("MNISTPACK_FUZZ_SEED", "20261123"))

# Generous: a small case takes about a millisecond, the big module well under a second.
SMALL_LIMIT_S = 3.0
BIG_LIMIT_S = 20.0
MEMORY_LIMIT = 512 << 20

ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
RECOMPRESS = zstandard.ZstdCompressor(level=3, write_content_size=True, write_checksum=False)

RUN_CHUNK = (
    r"""
local FORMAT_NAME, FORMAT_VERSION = "mnistpack", 2
return function(text, compression)
	local module = { format = FORMAT_NAME, version = FORMAT_VERSION, compression = compression, data = text }
	return (function(...)
"""
    + DECODE_CHUNK
    + r"""
	end)(module, nil)
end
"""
)


@dataclass(frozen=True)
class Expect:
    """What a case may end in: `flat` (these exact weights) or an error; `flat` None means
    only an error is right; `must_decode` means an error is wrong too."""

    flat: bytes | None
    must_decode: bool = False
    oracle_accepts: bool = False  # Python's decoder read `flat` from this very container


@dataclass(frozen=True)
class Case:
    kind: str
    text: bytes
    compression: str
    expect: Expect


@dataclass(frozen=True)
class Base:
    packed: Packed
    compression: str
    frame: bytes  # what the base64 text holds: the zstd frame, or the container itself
    text: bytes


def make_base(packed: Packed, compression: str) -> Base:
    frame = RECOMPRESS.compress(packed.container) if compression == "zstd" else packed.container
    return Base(packed, compression, frame, wrap(frame))


def wrap(frame: bytes) -> bytes:
    """Base64 in lines of 960 characters, as the packer writes `data`."""
    text = base64.b64encode(frame)
    return b"".join(text[i : i + 960] + b"\n" for i in range(0, len(text), 960))


def strip_breaks(text: bytes) -> bytes:
    return text.replace(b"\n", b"").replace(b"\r", b"")


def with_crc(body_and_prefix: bytes) -> bytes:
    """Recompute the CRC of a container whose last 4 bytes are a (stale) CRC."""
    body = body_and_prefix[len(MAGIC) : -CRC_SIZE]
    return body_and_prefix[: len(MAGIC)] + body + struct.pack("<I", zlib.crc32(body))


# --- byte-level mutations ------------------------------------------------------------


def random_bytes(rng: random.Random, count: int, pool: bytes | None = None) -> bytes:
    if pool is None:
        return bytes(rng.randrange(256) for _ in range(count))
    return bytes(rng.choice(pool) for _ in range(count))


def mutate(rng: random.Random, data: bytes, lo: int, hi: int, pool: bytes | None = None) -> tuple[str, bytes]:
    """One random edit inside data[lo:hi] (hi exclusive; insertions may land at hi)."""
    hi = max(hi, lo + 1)
    hi = min(hi, len(data)) if data else 0
    op = rng.choice(
        ["flip", "flip", "bitflip", "multiflip", "insert", "delete", "truncate", "overwrite", "dup"]
    )
    if not data or lo >= len(data):
        return "insert", data + random_bytes(rng, rng.randint(1, 8), pool)
    at = rng.randrange(lo, hi)
    if op == "flip":
        new = random_bytes(rng, 1, pool)
        return op, data[:at] + new + data[at + 1 :]
    if op == "bitflip":
        return op, data[:at] + bytes([data[at] ^ (1 << rng.randrange(8))]) + data[at + 1 :]
    if op == "multiflip":
        out = bytearray(data)
        for _ in range(rng.randint(2, 6)):
            out[rng.randrange(lo, hi)] = random_bytes(rng, 1, pool)[0]
        return op, bytes(out)
    if op == "insert":
        return op, data[:at] + random_bytes(rng, rng.randint(1, 6), pool) + data[at:]
    if op == "delete":
        return op, data[:at] + data[at + rng.randint(1, 6) :]
    if op == "truncate":
        return op, data[:at]
    if op == "overwrite":
        span = rng.randint(2, 16)
        return op, data[:at] + random_bytes(rng, span, pool) + data[at + span :]
    span = rng.randint(1, 16)
    return op, data[:at] + data[at : at + span] + data[at:]


def regions(container: bytes) -> dict[str, tuple[int, int]]:
    (header_length,) = struct.unpack_from("<I", container, 6)
    payload_at = PREFIX_SIZE + header_length
    return {
        "magic": (0, 4),
        "version": (4, 6),
        "header_length": (6, 10),
        "header": (10, payload_at),
        "payload": (payload_at, len(container) - CRC_SIZE),
        "crc": (len(container) - CRC_SIZE, len(container)),
    }


# --- header mutations that stay valid msgpack ----------------------------------------


def random_value(rng: random.Random, depth: int = 0) -> Any:
    makers: list[Callable[[], Any]] = [
        lambda: None,
        lambda: rng.random() < 0.5,
        lambda: rng.randint(-(2**63), 2**64 - 1),
        lambda: rng.randint(-40, 300),
        lambda: rng.choice([0.0, -0.0, 1.5, float("nan"), float("inf"), -1e300, 2.0**-149]),
        lambda: "".join(rng.choice("abcdefgh_int8float32relu") for _ in range(rng.randint(0, 12))),
        lambda: rng.choice(
            ["float32", "float16", "int8", "int4", "dense", "relu", "softmax", "row-major", ""]
        ),
        lambda: bytes(rng.randrange(256) for _ in range(rng.randint(0, 6))),
        lambda: [rng.randint(0, 80) for _ in range(rng.randint(0, 3))],
    ]
    if depth < 2:
        makers.append(lambda: [random_value(rng, depth + 1) for _ in range(rng.randint(0, 4))])
        makers.append(
            lambda: {
                rng.choice(["name", "shape", "offset", "x"]): random_value(rng, depth + 1)
                for _ in range(rng.randint(0, 3))
            }
        )
    return rng.choice(makers)()


def nodes(value: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Paths to every node of a decoded header."""
    found = [path]
    if isinstance(value, dict):
        for key, item in value.items():
            found += nodes(item, (*path, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found += nodes(item, (*path, index))
    return found


def get_parent(root: Any, path: tuple[Any, ...]) -> tuple[Any, Any]:
    parent = root
    for step in path[:-1]:
        parent = parent[step]
    return parent, path[-1]


def mutate_header(rng: random.Random, header: dict[str, Any]) -> tuple[str, Any]:
    """A semantic edit: replace, nudge, drop, duplicate or add somewhere in the tree."""
    header = copy.deepcopy(header)
    paths = [p for p in nodes(header) if p]
    path = rng.choice(paths)
    parent, key = get_parent(header, path)
    op = rng.choice(["replace", "nudge", "nudge", "drop", "add_key", "dup_list", "swap"])
    if op == "replace":
        parent[key] = random_value(rng)
    elif op == "nudge":
        value = parent[key]
        if isinstance(value, bool) or not isinstance(value, int | float):
            parent[key] = random_value(rng)
        else:
            parent[key] = value + rng.choice([-1, 1, -2, 2, 16, -16, 32, 2**16, 2**32, -(2**31)])
    elif op == "drop":
        del parent[key]
    elif op == "add_key":
        target = parent if isinstance(parent, dict) else header
        target[rng.choice(["extra", "name", "zz", "scales", "block_size"])] = random_value(rng)
    elif op == "dup_list" and isinstance(parent, list):
        parent.insert(key, copy.deepcopy(parent[key]))
    elif op == "swap" and isinstance(parent, list) and len(parent) > 1:
        other = rng.randrange(len(parent))
        parent[key], parent[other] = parent[other], parent[key]
    else:
        parent[key] = random_value(rng)
    return op, header


def build(header_bytes: bytes, payload: bytes, version: int) -> bytes:
    body = struct.pack("<HI", version, len(header_bytes)) + header_bytes + payload
    return MAGIC + body + struct.pack("<I", zlib.crc32(body))


# --- the oracle ----------------------------------------------------------------------


class Oracle:
    """Python's decoder: what a container that still passes every check really holds."""

    def __init__(self) -> None:
        self.unexpected: Counter[str] = Counter()

    def expect(self, container: bytes) -> Expect:
        try:
            flat, _, _ = python_flat(container)
        except FormatError:
            return Expect(None)
        except Exception as error:  # noqa: BLE001 - counted and reported: Python's decoder let it escape
            self.unexpected[type(error).__name__] += 1
            return Expect(None)
        return Expect(flat, oracle_accepts=True)


# --- case generation -----------------------------------------------------------------


KINDS = ("text", "frame", "container", "container+crc", "header", "garbage")
SMALL_MIX = (20, 15, 25, 15, 15, 10)
# The full-size module costs ~1,000 times more VM steps per case, each one a call of the
# time limit's interrupt: its mix leans to the kinds that fail early.
BIG_MIX = (30, 25, 25, 10, 10, 0)


class Generator:
    def __init__(self, bases: list[Base], rng: random.Random, oracle: Oracle, mix: tuple[int, ...]) -> None:
        self.bases = bases
        self.rng = rng
        self.oracle = oracle
        self.mix = mix

    def case(self) -> Case:
        kind = self.rng.choices(KINDS, weights=self.mix)[0]
        base = self.rng.choice(self.bases)
        if kind == "frame" and base.compression != "zstd":
            kind = "container"
        return getattr(self, "_" + kind.replace("+", "_"))(base)

    def _original(self, base: Base) -> Expect:
        return Expect(base.packed.flat)

    def _text(self, base: Base) -> Case:
        pool = self.rng.choice([ALPHABET, ALPHABET + b"=\n\r", None])
        op, text = mutate(self.rng, base.text, 0, len(base.text), pool)
        same = strip_breaks(text) == strip_breaks(base.text)
        expect = Expect(base.packed.flat, must_decode=same)
        return Case(f"text/{op}", text, base.compression, expect)

    def _frame(self, base: Base) -> Case:
        frame = base.frame
        where = self.rng.choice(["frame header", "block header", "body", "end"])
        lo, hi = {
            "frame header": (0, 6),
            "block header": (5, 12),
            "body": (12, len(frame)),
            "end": (
                max(0, len(frame) - 8),
                len(frame),
            ),
        }[where]
        op, mutated = mutate(self.rng, frame, lo, hi)
        return Case(f"frame/{where}/{op}", wrap(mutated), base.compression, self._original(base))

    def _container(self, base: Base) -> Case:
        container = base.packed.container
        region = self.rng.choice(list(regions(container)))
        lo, hi = regions(container)[region]
        op, mutated = mutate(self.rng, container, lo, hi)
        return Case(
            f"container/{region}/{op}",
            self._wrap_container(base, mutated),
            base.compression,
            self._original(base),
        )

    def _container_crc(self, base: Base) -> Case:
        container = base.packed.container
        region = self.rng.choice(["version", "header_length", "header", "header", "payload", "payload"])
        lo, hi = regions(container)[region]
        op, mutated = mutate(self.rng, container, lo, hi)
        if len(mutated) >= PREFIX_SIZE + CRC_SIZE:
            mutated = with_crc(mutated)
        expect = self.oracle.expect(mutated)
        return Case(
            f"container+crc/{region}/{op}", self._wrap_container(base, mutated), base.compression, expect
        )

    def _header(self, base: Base) -> Case:
        container = base.packed.container
        version, header_length = struct.unpack_from("<HI", container, 4)
        header = msgpack.unpackb(container[PREFIX_SIZE : PREFIX_SIZE + header_length])
        payload = container[PREFIX_SIZE + header_length : -CRC_SIZE]
        op, edited = mutate_header(self.rng, header)
        try:
            raw = msgpack.packb(edited, use_single_float=self.rng.random() < 0.7, use_bin_type=True)
        except (OverflowError, ValueError, TypeError):
            raw = msgpack.packb(header, use_single_float=True)
            op = "unchanged"
        mutated = build(raw, payload, version)
        expect = self.oracle.expect(mutated)
        return Case(f"header/{op}", self._wrap_container(base, mutated), base.compression, expect)

    def _garbage(self, base: Base) -> Case:
        style = self.rng.choice(["alphabet", "bytes", "base64 of bytes", "MNPK + junk", "zstd of junk"])
        size = self.rng.choice([0, 1, 3, 4, 13, 14, 15, 64, 500, 3000])
        junk = random_bytes(self.rng, size)
        if style == "alphabet":
            text = random_bytes(self.rng, size, ALPHABET)
        elif style == "bytes":
            text = junk
        elif style == "base64 of bytes":
            text = wrap(junk)
        elif style == "MNPK + junk":
            text = wrap(with_crc(MAGIC + junk + b"\x00" * 14) if self.rng.random() < 0.5 else MAGIC + junk)
        else:
            text = wrap(RECOMPRESS.compress(junk))
        compression = self.rng.choice(["zstd", "none"])
        return Case(f"garbage/{style}", text, compression, Expect(None))

    def _wrap_container(self, base: Base, container: bytes) -> bytes:
        return wrap(RECOMPRESS.compress(container) if base.compression == "zstd" else container)


# --- running -------------------------------------------------------------------------


class Runner:
    def __init__(self, limit_s: float, memory_limit: int = MEMORY_LIMIT) -> None:
        self.host = LuauHost(memory_limit=memory_limit)
        self.run_fn = self.host.run(RUN_CHUNK)[0]
        self.limit_s = limit_s

    def outcome(self, case: Case) -> str:
        """ "weights", "error/<stage>", or "BAD/<why>"."""
        try:
            with self.host.time_limit(self.limit_s):
                result = self.run_fn(self.host.lua.create_string(case.text), case.compression)
        except TimeoutError:
            return "BAD/hang"
        except Exception as error:  # noqa: BLE001 - anything escaping pcall is a VM crash
            return f"BAD/crash ({type(error).__name__}: {str(error)[:120]})"
        ok = result[0]
        if not ok:
            message = result[1].as_bytes()
            if b"ran longer than" in message:
                return "BAD/hang"
            stage = error_stage(message)
            if stage is None:
                return f"BAD/foreign error: {message[:160]!r}"
            if case.expect.must_decode:
                return f"BAD/refused a good module: {message[:160]!r}"
            if case.expect.oracle_accepts:
                # the two decoders must agree (issue 11): Python read weights from this very container
                return f"BAD/refused what Python's decoder reads: {message[:200]!r}"
            return f"error/{stage}"
        if case.expect.flat is None:
            return "BAD/weights from a module that must fail"
        if result[1].as_bytes() != case.expect.flat:
            return "BAD/wrong weights"
        return "weights"


def run_campaign(
    bases: list[Base], count: int, seed: int, limit_s: float, mix: tuple[int, ...]
) -> tuple[Counter[str], Counter[str], list[str]]:
    rng = random.Random(seed)
    oracle = Oracle()
    generator = Generator(bases, rng, oracle, mix)
    runner = Runner(limit_s)
    outcomes: Counter[str] = Counter()
    kinds: Counter[str] = Counter()
    bad: list[str] = []
    for index in range(count):
        case = generator.case()
        result = runner.outcome(case)
        outcomes[result.split(":")[0] if result.startswith("BAD") else result] += 1
        kinds[case.kind.split("/")[0]] += 1
        if result.startswith("BAD"):
            bad.append(f"case {index} ({case.kind}, {case.compression}): {result}")
    outcomes.update({f"python raised {name}": n for name, n in oracle.unexpected.items()})
    return outcomes, kinds, bad


def report(title: str, outcomes: Counter[str], kinds: Counter[str], bad: list[str]) -> str:
    lines = [f"{title}: {sum(kinds.values())} cases"]
    lines.append("  by kind: " + ", ".join(f"{k} {n}" for k, n in sorted(kinds.items())))
    lines.append("  outcomes: " + ", ".join(f"{k} {n}" for k, n in sorted(outcomes.items())))
    lines.append(f"  bad: {len(bad)}")
    lines.extend("    " + line for line in bad[:20])
    return "\n".join(lines)


def small_bases() -> list[Base]:
    bases = []
    for k, precision in enumerate(("float32", "float16", "int8", "int4")):
        for packed in (small_stack(precision, seed=100 + k), small_cnn(precision, seed=200 + k)):
            bases.extend(make_base(packed, compression) for compression in ("zstd", "none"))
    return bases


def test_ten_thousand_mutated_small_modules() -> None:
    assert CASES >= 10_000 or "MNISTPACK_FUZZ_CASES" in os.environ
    outcomes, kinds, bad = run_campaign(small_bases(), CASES, SEED, SMALL_LIMIT_S, SMALL_MIX)
    summary = report("fuzz, 20-8-3 stacks and small CNNs at every precision", outcomes, kinds, bad)
    print("\n" + summary)
    assert not bad, summary
    # the campaign must reach every stage, and still see good modules decode
    stages = {key.split("/")[1] for key in outcomes if key.startswith("error/")}
    assert {"base64", "zstd", "container", "crc", "msgpack", "header", "shape"} <= stages, summary
    assert outcomes["weights"] > 0, summary


def full_size_bases() -> list[Base]:
    rng = np.random.default_rng(SEED)
    w1 = rng.normal(0, 0.05, (256, 784)).astype(np.float32)
    w1[:, rng.random(784) < 0.2] = 0.0  # pruned border pixels, as the shipped model has
    weights = [w1, rng.normal(0, 0.2, (10, 256)).astype(np.float32)]
    biases = [rng.normal(0, 0.1, 256).astype(np.float32), rng.normal(0, 0.1, 10).astype(np.float32)]
    packed = pack_layers(weights, biases, "int8", ["relu", "softmax"], input_shape=[28, 28])
    # zstd as shipped; "none" too, twice as often, since pure-Luau zstd of 200 KB costs most
    return [make_base(packed, "zstd"), make_base(packed, "none"), make_base(packed, "none")]


def test_mutated_full_size_int8_modules() -> None:
    outcomes, kinds, bad = run_campaign(full_size_bases(), BIG_CASES, SEED + 1, BIG_LIMIT_S, BIG_MIX)
    summary = report("fuzz, 784-256-10 int8", outcomes, kinds, bad)
    print("\n" + summary)
    assert not bad, summary


@pytest.mark.parametrize("text", [b"", b"\n", b"====", b"A", b"QQ==", b"TU5QSw=="])
@pytest.mark.parametrize("compression", ["zstd", "none"])
def test_tiny_inputs(text: bytes, compression: str) -> None:
    runner = Runner(SMALL_LIMIT_S)
    result = runner.outcome(Case("tiny", text, compression, Expect(None)))
    assert result.startswith("error/"), result


def test_runner_flags_wrong_weights() -> None:
    # the oracle's own check: a module that decodes fine but to other weights is caught
    base = small_bases()[0]
    other = small_stack("float32", seed=999)
    runner = Runner(SMALL_LIMIT_S)
    assert runner.outcome(Case("self-check", base.text, "zstd", Expect(base.packed.flat))) == "weights"
    assert runner.outcome(Case("self-check", base.text, "zstd", Expect(other.flat))) == "BAD/wrong weights"
    assert runner.outcome(Case("self-check", base.text, "zstd", Expect(None))).startswith("BAD/")


# --- valid but huge (issue 11) ---------------------------------------------------------------

HUGE_CASES = int(os.environ.get("MNISTPACK_FUZZ_HUGE_CASES", "3"))
HUGE_MEMORY_LIMIT = 256 << 20


def huge_container(rng: random.Random) -> Packed:
    """A random valid network holding between half and all of MAX_DECODED_VALUES values,
    every weight at its own precision, often with per-row int8 scales and a long unknown
    meta entry pushing the header towards MAX_HEADER_VALUES."""
    budget = rng.randint(MAX_DECODED_VALUES // 2, MAX_DECODED_VALUES)
    depth = rng.randint(1, 4)
    input_shape = rng.choice([[28, 28], [1024], [16, 16, 3], [rng.randint(64, 4096)]])
    sizes = [int(np.prod(input_shape))]
    for _ in range(depth):
        sizes.append(rng.randint(1, 64))
    # widen the first layer until the network spends its budget: each of its units costs a
    # row of the first weight, a bias and a column of the second weight
    fixed = sum(a * b + b for a, b in zip(sizes[2:], sizes[3:], strict=False)) + (
        sizes[2] if depth > 1 else 0
    )
    per_unit = sizes[0] + 1 + (sizes[2] if depth > 1 else 0)
    sizes[1] = max(1, min(MAX_DIM, (budget - fixed) // per_unit))
    np_rng = np.random.default_rng(rng.randrange(2**32))
    weights = [np_rng.normal(0, 0.1, (sizes[k + 1], sizes[k])).astype(np.float32) for k in range(depth)]
    biases = [np_rng.normal(0, 0.1, sizes[k + 1]).astype(np.float32) for k in range(depth)]
    tensors: list[QuantizedTensor] = []
    layers: list[LayerSpec] = []
    for k in range(depth):
        precision = rng.choice(PRECISIONS)
        tensors.append(quantize(f"w{k}", weights[k], precision, per_row=rng.random() < 0.5))
        tensors.append(quantize(f"b{k}", biases[k], rng.choice(["float32", "float16"])))
        layers.append(LayerSpec("dense", rng.choice(["relu", "tanh", "linear"]), f"w{k}", f"b{k}"))
    meta = small_meta(input_shape, sizes[-1], tensors[0].precision)
    if rng.random() < 0.5:
        meta["zz_unknown"] = [rng.randint(0, 127) for _ in range(rng.randint(0, MAX_HEADER_VALUES // 2))]
    container = pack(Container(tuple(tensors), tuple(layers), meta))
    flat, shapes, activations = python_flat(container)
    return Packed(container, flat, shapes, activations)


def test_valid_but_huge_containers() -> None:
    rng = random.Random(SEED + 2)
    runner = Runner(BIG_LIMIT_S, memory_limit=HUGE_MEMORY_LIMIT)
    outcomes: Counter[str] = Counter()
    for index in range(HUGE_CASES):
        packed = huge_container(rng)
        values = len(packed.flat) // 8
        assert MAX_DECODED_VALUES // 2 <= values <= MAX_DECODED_VALUES, values
        compression = rng.choice(["zstd", "none"])
        base = make_base(packed, compression)
        result = runner.outcome(Case("huge", base.text, compression, Expect(packed.flat, must_decode=True)))
        outcomes[result] += 1
        assert result == "weights", f"case {index} ({values:,} values, {compression}): {result}"
        runner.host.run("collectgarbage('collect')")
    print(f"\nvalid but huge: {dict(outcomes)}")

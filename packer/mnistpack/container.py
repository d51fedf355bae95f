"""The container of FORMAT.md section 2: magic, version, msgpack header, payload, CRC-32."""

from __future__ import annotations

import dataclasses
import struct
import zlib
from collections.abc import Mapping
from typing import Any

import numpy as np

from mnistpack.compression import compress, decompress
from mnistpack.constants import (
    CRC_SIZE,
    FORMAT_VERSION,
    INT4_BLOCK_SIZE,
    MAGIC,
    MAX_CONTAINER_BYTES,
    MAX_HEADER_BYTES,
    MIN_FORMAT_VERSION,
    PREFIX_SIZE,
)
from mnistpack.errors import ChecksumError, ContainerError
from mnistpack.header import (
    POOLS,
    WEIGHT_RANKS,
    WINDOWED,
    canonical,
    decode_header,
    encode_header,
    validate_header,
)
from mnistpack.quantize import QuantizedTensor, rows_and_cols
from mnistpack.shapes import Geometry

__all__ = ["Container", "LayerSpec", "compress", "decompress", "pack", "unpack"]

_PREFIX = struct.Struct("<4sHI")  # magic, format_version, header_length
_CRC = struct.Struct("<I")


@dataclasses.dataclass(frozen=True)
class LayerSpec:
    """One entry of the header's layer list (FORMAT.md section 3.2): names of its tensors,
    not the tensors. Keys a kind does not use stay empty and are not written."""

    kind: str
    activation: str = ""  # dense, conv2d
    weight: str = ""  # dense, conv2d
    bias: str = ""  # dense, conv2d
    pool_size: tuple[int, int] | None = None  # maxpool2d, avgpool2d
    strides: tuple[int, int] | None = None  # conv2d, maxpool2d, avgpool2d
    padding: str = ""  # conv2d, maxpool2d, avgpool2d

    def to_map(self) -> dict[str, Any]:
        """The layer map as the header holds it: only the keys this kind has."""
        entry = {key: value for key, value in dataclasses.asdict(self).items() if value not in ("", None)}
        return {key: list(value) if isinstance(value, tuple) else value for key, value in entry.items()}

    def geometry(self, tensor_shapes: Mapping[str, tuple[int, ...]]) -> Geometry:
        """What the layer's output shape depends on (shapes.py), its weight's shape looked up by name."""
        return Geometry(
            self.kind,
            tuple(tensor_shapes[self.weight]) if self.weight else (),
            self.pool_size or (1, 1),
            self.strides or (1, 1),
            self.padding or "valid",
        )

    @classmethod
    def from_map(cls, entry: Mapping[str, Any]) -> LayerSpec:
        """The spec of a layer map `validate_header` accepted; keys outside section 3.2 are ignored."""

        kind = entry["kind"]
        weighted, windowed = kind in WEIGHT_RANKS, kind in WINDOWED

        def pair(key: str, used: bool) -> tuple[int, int] | None:
            return (entry[key][0], entry[key][1]) if used else None

        return cls(
            kind=kind,
            activation=entry["activation"] if weighted else "",
            weight=entry["weight"] if weighted else "",
            bias=entry["bias"] if weighted else "",
            pool_size=pair("pool_size", kind in POOLS),
            strides=pair("strides", windowed),
            padding=entry["padding"] if windowed else "",
        )


@dataclasses.dataclass(frozen=True)
class Container:
    """Everything a container holds, in payload order; `meta` is FORMAT.md section 3.5."""

    tensors: tuple[QuantizedTensor, ...]
    layers: tuple[LayerSpec, ...]
    meta: Mapping[str, Any]
    # None: `pack` writes the oldest version that holds these layers (section 2)
    format_version: int | None = None

    def version(self) -> int:
        """The version this container is written in, or would be by `pack`."""
        if self.format_version is not None:
            return self.format_version
        dense_only = all(layer.kind == "dense" for layer in self.layers)
        return MIN_FORMAT_VERSION if dense_only else FORMAT_VERSION


def pack(container: Container) -> bytes:
    """The container's bytes; deterministic, and checked against every rule `unpack` checks."""
    version = container.version()
    header = canonical(_header_map(container, version))
    payload = b"".join(tensor.data for tensor in container.tensors)
    validate_header(header, version, len(payload))
    header_bytes = encode_header(header)
    if len(header_bytes) > MAX_HEADER_BYTES:
        raise ContainerError(f"the header takes {len(header_bytes)} bytes, more than {MAX_HEADER_BYTES}.")
    # the decoders' own msgpack rules (value count, depth, integer range) on the exact bytes
    decode_header(header_bytes)
    body = _PREFIX.pack(MAGIC, version, len(header_bytes))[len(MAGIC) :] + header_bytes + payload
    total = len(MAGIC) + len(body) + CRC_SIZE
    if total > MAX_CONTAINER_BYTES:
        raise ContainerError(f"the container would take {total} bytes, more than {MAX_CONTAINER_BYTES}.")
    return MAGIC + body + _CRC.pack(zlib.crc32(body))


def _header_map(container: Container, version: int) -> dict[str, Any]:
    tensors = []
    offset = 0
    for tensor in container.tensors:
        entry: dict[str, Any] = {
            "name": tensor.name,
            "precision": tensor.precision,
            "shape": list(tensor.shape),
            "offset": offset,
            "length": len(tensor.data),
        }
        if tensor.precision == "int8":
            entry["scales"] = list(tensor.scales)
        if tensor.precision == "int4":
            entry["block_size"] = INT4_BLOCK_SIZE
        tensors.append(entry)
        offset += len(tensor.data)
    layers = [layer.to_map() for layer in container.layers]
    return {"format_version": version, "tensors": tensors, "layers": layers, "meta": container.meta}


def stored_crc(data: bytes) -> int:
    """The CRC-32 a container ends with (check it with `unpack`)."""
    (crc,) = _CRC.unpack_from(data, len(data) - CRC_SIZE)
    return int(crc)


def unpack(data: bytes) -> Container:
    """Parse and check a container; raise a FormatError subclass naming the failed stage."""
    total = len(data)
    if total < PREFIX_SIZE + CRC_SIZE:
        raise ContainerError(f"a container has at least {PREFIX_SIZE + CRC_SIZE} bytes, this one {total}.")
    if total > MAX_CONTAINER_BYTES:
        raise ContainerError(f"the container has {total} bytes, more than {MAX_CONTAINER_BYTES}.")
    magic, version, header_length = _PREFIX.unpack_from(data)
    if magic != MAGIC:
        raise ContainerError(f"expected magic {MAGIC!r} (an mnistpack container), found {magic!r}.")
    # Checked before the CRC: a newer version may change what the CRC covers.
    if not MIN_FORMAT_VERSION <= version <= FORMAT_VERSION:
        raise ContainerError(
            f"this container has format version {version}; this mnistpack reads versions "
            f"{MIN_FORMAT_VERSION} to {FORMAT_VERSION}."
        )
    if not 1 <= header_length <= MAX_HEADER_BYTES:
        raise ContainerError(f"the header length must be 1 to {MAX_HEADER_BYTES}, found {header_length}.")
    payload_end = total - CRC_SIZE
    if PREFIX_SIZE + header_length > payload_end:
        raise ContainerError(
            f"the header claims {header_length} bytes, but only {payload_end - PREFIX_SIZE} precede the CRC."
        )
    # The header before the CRC (FORMAT.md section 2): a header that breaks a limit is
    # refused before any work proportional to the payload it claims.
    header = decode_header(data[PREFIX_SIZE : PREFIX_SIZE + header_length])
    validate_header(header, version, payload_end - PREFIX_SIZE - header_length)
    (stored_crc,) = _CRC.unpack_from(data, payload_end)
    actual_crc = zlib.crc32(memoryview(data)[len(MAGIC) : payload_end])
    if stored_crc != actual_crc:
        raise ChecksumError(f"the stored CRC-32 is {stored_crc:08x} but the data gives {actual_crc:08x}.")
    payload = data[PREFIX_SIZE + header_length : payload_end]
    return Container(
        tensors=tuple(_tensor(entry, payload) for entry in header["tensors"]),
        layers=tuple(LayerSpec.from_map(layer) for layer in header["layers"]),
        meta=header["meta"],
        format_version=version,
    )


def _tensor(entry: Mapping[str, Any], payload: bytes) -> QuantizedTensor:
    start = entry["offset"]
    tensor = QuantizedTensor(
        name=entry["name"],
        precision=entry["precision"],
        shape=tuple(entry["shape"]),
        data=payload[start : start + entry["length"]],
        scales=tuple(entry["scales"]) if entry["precision"] == "int8" else (),
    )
    if tensor.precision == "int4":
        _check_int4_scales(tensor)
    return tensor


def _check_int4_scales(tensor: QuantizedTensor) -> None:
    """FORMAT.md section 4: every int4 block scale d is finite."""
    rows, cols = rows_and_cols(tensor.shape)
    count = rows * -(-cols // INT4_BLOCK_SIZE)
    scales = np.frombuffer(tensor.data, "<f2", count=count)
    bad = np.flatnonzero(~np.isfinite(scales))
    if bad.size:
        blocks = count // rows
        row, block = divmod(int(bad[0]), blocks)
        raise ContainerError(
            f"tensor {tensor.name!r}: expected finite int4 block scales, found {float(scales[bad[0]])} "
            f"in row {row + 1}, block {block + 1}."
        )

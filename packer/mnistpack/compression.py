"""The compression wrapping of FORMAT.md section 1: one zstd frame, or none at all."""

from __future__ import annotations

import zstandard

from mnistpack.constants import COMPRESSIONS, MAX_CONTAINER_BYTES
from mnistpack.errors import CompressionError

ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"

# Measured on the shipped model (docs/quantization.md): 22 is never larger than 19
# (and within 0.1% of it), in under 0.5 s; long-distance matching, other strategies
# and match lengths won under 1% on one precision and lost on another. The frame is
# single-segment, so 22's larger window costs decoders nothing: they allocate the
# declared content size.
ZSTD_LEVEL = 22


def compress(raw: bytes, method: str) -> bytes:
    """Wrap a container as `method` says: one zstd frame with its content size, or as is."""
    if method == "none":
        return raw
    if method != "zstd":
        raise CompressionError(f"compression must be one of {', '.join(COMPRESSIONS)}, not {method!r}.")
    # Roblox's DecompressBuffer needs the content size in the frame header; the
    # container carries its own CRC-32, so the frame checksum would be 4 wasted bytes.
    params = zstandard.ZstdCompressionParameters.from_level(
        ZSTD_LEVEL, source_size=len(raw), write_content_size=True, write_checksum=False, write_dict_id=False
    )
    return zstandard.ZstdCompressor(compression_params=params).compress(raw)


def decompress(blob: bytes, method: str) -> bytes:
    """Undo `compress`; a zstd blob must be exactly one frame that declares its size."""
    if method == "none":
        return blob
    if method != "zstd":
        raise CompressionError(f"compression must be one of {', '.join(COMPRESSIONS)}, not {method!r}.")
    if blob[:4] != ZSTD_MAGIC:
        raise CompressionError(f"expected a zstd frame starting with 28 B5 2F FD, found {blob[:4].hex(' ')}.")
    try:
        params = zstandard.get_frame_parameters(blob)
    except zstandard.ZstdError as error:
        raise CompressionError(f"the zstd frame header is damaged ({error}).") from None
    size = params.content_size
    if size == zstandard.CONTENTSIZE_UNKNOWN or size == zstandard.CONTENTSIZE_ERROR:
        raise CompressionError("the zstd frame does not declare its content size.")
    if size > MAX_CONTAINER_BYTES:
        raise CompressionError(f"the zstd frame declares {size} bytes, more than {MAX_CONTAINER_BYTES}.")
    if params.dict_id != 0:
        raise CompressionError(f"the zstd frame needs dictionary {params.dict_id}; mnistpack uses none.")
    try:
        raw = zstandard.ZstdDecompressor().decompress(blob, max_output_size=size, allow_extra_data=False)
    except zstandard.ZstdError as error:
        raise CompressionError(f"the zstd data is damaged ({error}).") from None
    if len(raw) != size:
        raise CompressionError(f"the zstd frame declares {size} bytes but holds {len(raw)}.")
    return raw

"""Output throughput of the Luau zstd decoder on the shipped int8 module's frame.

Run: .venv/bin/python benchmarks/zstd_speed.py [--repeat N] [--size BYTES] [--level N]

Builds the shipped model at int8 with `mnistpack build`'s own pipeline into a temporary
folder and decodes the zstd frame inside its MnistWeights module (the real payload:
mostly Huffman-coded literals, few matches), then a synthetic frame of int8-like noise.
Each decode is timed inside the VM with os.clock (CPU time) and the median of
`--repeat` runs is kept, after one warm-up run. Target (issue 3): >= 20 MB/s of output.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
import zstandard

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from mnistpack.build import build  # noqa: E402
from mnistpack.module_reader import read_module  # noqa: E402

from tests.luau_host import LuauHost  # noqa: E402

TARGET_MBPS = 20.0

_TIMER = """
local Zstd = require(root.Zstd)
return function(frame, repeats)
	local source = buffer.fromstring(frame)
	local size = buffer.len(Zstd.decompress(source))
	local runs = table.create(repeats, 0)
	for i = 1, repeats do
		local start = os.clock()
		Zstd.decompress(source)
		runs[i] = os.clock() - start
	end
	table.sort(runs)
	return size, runs[(repeats + 1) // 2]
end
"""


def shipped_int8_frame() -> bytes:
    """The zstd frame of the shipped model's int8 module, as `mnistpack build` writes it."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        build(model=None, precision="int8", out_dir=out, compression="zstd", data_dir=None)
        folder = out / "MnistWeights"
        compression, blob = read_module(folder if folder.is_dir() else out / "MnistWeights.luau")
    if compression != "zstd":
        raise RuntimeError(f"expected a zstd module, found compression {compression!r}")
    return bytes(blob)


def int8_weights(size: int, seed: int = 0) -> bytes:
    """Quantised-weight-like bytes: int8 normal noise (sigma 20) with about 30% zeros."""
    rng = np.random.default_rng(seed)
    w = np.clip(np.round(rng.normal(0.0, 20.0, size)), -127, 127).astype(np.int8)
    w[rng.random(size) < 0.3] = 0
    return w.tobytes()


def measure(frame: bytes, repeats: int) -> tuple[int, float]:
    """(output bytes, median CPU seconds per decode) of one frame."""
    host = LuauHost()
    timer = host.run(_TIMER)[0]
    size, seconds = timer(host.lua.create_string(frame), repeats)
    expected = len(zstandard.ZstdDecompressor().decompress(frame))
    if size != expected:
        raise RuntimeError(f"expected {expected} decoded bytes, found {size}")
    return int(size), float(seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--repeat", type=int, default=31, help="runs per frame; the median is kept")
    parser.add_argument("--size", type=int, default=200_000, help="synthetic frame output bytes")
    parser.add_argument("--level", type=int, default=19, help="synthetic frame zstd level")
    args = parser.parse_args()
    cases = [
        ("shipped int8 module", shipped_int8_frame()),
        (
            f"synthetic int8-like, level {args.level}",
            zstandard.ZstdCompressor(level=args.level).compress(int8_weights(args.size)),
        ),
    ]
    for name, frame in cases:
        size, seconds = measure(frame, args.repeat)
        mbps = size / seconds / 1e6
        verdict = "meets" if mbps >= TARGET_MBPS else "MISSES"
        print(
            f"zstd decode, {name}: {len(frame)} -> {size} B, {seconds * 1e3:.2f} ms, "
            f"{mbps:.1f} MB/s ({verdict} the {TARGET_MBPS:.0f} MB/s target)"
        )


if __name__ == "__main__":
    main()

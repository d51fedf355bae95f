"""Output throughput of the Luau zstd decoder on int8-weights-like data.

Run: .venv/bin/python benchmarks/zstd_speed.py [--size BYTES] [--level N] [--repeat N]

Each decode is timed with the process CPU clock and the best of `--repeat` runs is
kept, so other work on a shared machine inflates the figure as little as possible.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import zstandard

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.luau_host import LuauHost  # noqa: E402

_DECODER = """
local Zstd = require(root.Zstd)
return function(frame)
	return buffer.len(Zstd.decompress(frame))
end
"""


def int8_weights(size: int, seed: int = 0) -> bytes:
    """Quantised-weight-like bytes: int8 normal noise (sigma 20) with about 30% zeros."""
    rng = np.random.default_rng(seed)
    w = np.clip(np.round(rng.normal(0.0, 20.0, size)), -127, 127).astype(np.int8)
    w[rng.random(size) < 0.3] = 0
    return w.tobytes()


def measure(size: int = 200_000, level: int = 19, repeats: int = 30) -> float:
    """Best-of-`repeats` output MB/s (10^6 bytes per CPU second) for one frame of `size` bytes."""
    data = int8_weights(size)
    frame = zstandard.ZstdCompressor(level=level).compress(data)
    host = LuauHost()
    # The frame is made a buffer once, outside the timed calls.
    source = host.run("return buffer.fromstring(...)", host.lua.create_string(frame))[0]
    decode = host.run(_DECODER)[0]
    assert decode(source)[0] == size
    best = float("inf")
    for _ in range(repeats):
        start = time.process_time()
        decode(source)
        best = min(best, time.process_time() - start)
    return size / best / 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--size", type=int, default=200_000)
    parser.add_argument("--level", type=int, default=19)
    parser.add_argument("--repeat", type=int, default=30)
    args = parser.parse_args()
    mbps = measure(args.size, args.level, args.repeat)
    print(f"zstd decode, {args.size} B int8-like output, level {args.level}: {mbps:.1f} MB/s")


if __name__ == "__main__":
    main()

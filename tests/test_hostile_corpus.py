"""Both decoders on the hostile corpus (tests/hostile_corpus.py): the same verdict for every
case, the weights or an error of the same stage.

Small cases run in this process; the Luau VM is capped at 256 MiB and an interrupt stops
a hang. Large cases (`slow`) run through the Luau decoder in a process of their own
(tests/luau_limited.py) that 2 s of CPU time or 256 MiB of VM memory would end: what they
cost is proven by those limits, not by timing. The Python decoder's bounds are proven the
same way, through the CLI (tests/test_cli_hostile.py).
"""

from __future__ import annotations

import base64
import hashlib
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest
from mnistpack.compression import decompress
from mnistpack.errors import FormatError

from tests.hostile_corpus import WEIGHTS, Case, cases
from tests.luau_decode_helpers import decode, error_stage, module_table, python_flat
from tests.luau_host import ROOT, LuauHost, pluau

MEMORY_LIMIT = 256 << 20
HANG_SECONDS = 20.0  # only stops a hang: the interrupt's own cost dwarfs the decoder's

CASES = [(case, compression) for case in cases() for compression in case.compressions()]
IDS = [f"{case.name} ({compression})" for case, compression in CASES]


class HostedLuau:
    """One VM for the small cases, emptied between them."""

    def __init__(self) -> None:
        self.host = LuauHost(memory_limit=MEMORY_LIMIT)

    def verdict(self, data: bytes, compression: str) -> tuple[str, str]:
        """(WEIGHTS, sha256 of the flat float64 weights) or (stage, message)."""
        self.host.run("collectgarbage('collect')")
        module = module_table(self.host, base64.b64encode(data), compression)
        deadline = time.monotonic() + HANG_SECONDS

        def interrupt(*_: Any) -> Any:
            if time.monotonic() > deadline:
                raise TimeoutError(f"the Luau decoder ran for more than {HANG_SECONDS} s")
            return pluau.VmState.Continue

        self.host.lua.set_interrupt(interrupt)
        try:
            ok, result, _, _ = decode(self.host, module)
        finally:
            self.host.lua.remove_interrupt()
        if ok:
            return WEIGHTS, hashlib.sha256(result).hexdigest()
        return error_stage(result) or "foreign error", result.decode("utf-8", "replace")


def limited_verdict(case: Case, compression: str) -> tuple[str, str]:
    """The verdict of tests/luau_limited.py, which the limits end if it exceeds them."""
    done = subprocess.run(
        [sys.executable, "-m", "tests.luau_limited", case.name, compression],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, (
        f"ended by {-done.returncode if done.returncode < 0 else done.returncode}: {done.stderr[-2000:]}"
    )
    result = json.loads(done.stdout)
    return result["verdict"], result["detail"]


def python_verdict(data: bytes, compression: str) -> tuple[str, str]:
    try:
        flat, _, _ = python_flat(decompress(data, compression))
    except FormatError as error:
        return error.stage, str(error)
    return WEIGHTS, hashlib.sha256(flat).hexdigest()


@pytest.fixture(scope="module")
def luau() -> Iterator[HostedLuau]:
    yield HostedLuau()


@pytest.mark.parametrize(("case", "compression"), CASES, ids=IDS)
def test_both_decoders_agree(luau: HostedLuau, case: Case, compression: str) -> None:
    data = case.data(compression)
    python_stage, python_detail = python_verdict(data, compression)
    del data
    if case.slow:
        luau_stage, luau_detail = limited_verdict(case, compression)
    else:
        luau_stage, luau_detail = luau.verdict(case.data(compression), compression)
    assert python_stage == case.expect, python_detail[:300]
    assert luau_stage == case.expect, luau_detail[:300]
    if case.expect == WEIGHTS:
        assert luau_detail == python_detail, "the two decoders give different weights"


def test_the_corpus_reaches_every_verdict() -> None:
    verdicts = {case.expect for case in cases()}
    assert verdicts == {WEIGHTS, "zstd", "container", "msgpack", "header", "shape"}


@pytest.mark.parametrize(
    ("name", "stage"),
    [("a million empty maps under an unknown key", "header"), ("exactly MAX_DECODED_VALUES values", "shape")],
)
def test_a_vm_with_too_little_memory_gets_a_mnistpack_error(name: str, stage: str) -> None:
    # the limits bound what a module costs, but a VM given less than that still hears
    # which stage ran out of memory, never a bare "not enough memory"
    (case,) = [case for case in cases() if case.name == name]
    host = LuauHost()
    host.run("require(root.Decoder); require(root.Zstd)")
    module = module_table(host, base64.b64encode(case.data("zstd")), "zstd")
    host.lua.set_memory_limit(host.lua.used_memory() + (24 << 20))
    ok, message, _, _ = decode(host, module)
    assert not ok
    assert message.startswith(f"mnistpack: {stage}: ran out of memory".encode()), message

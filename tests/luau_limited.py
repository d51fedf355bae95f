"""Decode one case of the hostile corpus with the Luau decoder, in a process of its own,
under the limits of issue 11: 256 MiB of VM memory, and 2 s of process CPU time from
the moment decoding starts (an ITIMER_PROF timer, whose SIGPROF ends the process).

    python -m tests.luau_limited CASE_NAME COMPRESSION

prints one JSON object: {"verdict": "weights" or a stage, "detail": sha256 of the
flat float64 weights, or the error message}. tests/test_hostile_corpus.py runs it.
"""

from __future__ import annotations

import base64
import hashlib
import json
import signal
import sys

from tests.hostile_corpus import WEIGHTS, cases
from tests.luau_decode_helpers import decode, error_stage, module_table
from tests.luau_host import LuauHost

MEMORY_LIMIT = 256 << 20
CPU_SECONDS = 2.0


def main(name: str, compression: str) -> None:
    (case,) = [case for case in cases() if case.name == name]
    text = base64.b64encode(case.data(compression))
    host = LuauHost(memory_limit=MEMORY_LIMIT)
    module = module_table(host, text, compression)
    del text
    signal.setitimer(signal.ITIMER_PROF, CPU_SECONDS)
    ok, result, _, _ = decode(host, module)
    signal.setitimer(signal.ITIMER_PROF, 0)
    if ok:
        print(json.dumps({"verdict": WEIGHTS, "detail": hashlib.sha256(result).hexdigest()}))
    else:
        stage = error_stage(result)
        print(json.dumps({"verdict": stage or "foreign error", "detail": result.decode("utf-8", "replace")}))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])

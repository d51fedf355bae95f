"""The Luau test host; it lives in the package (`mnistpack.luau_host`) since `mnistpack
compare` runs the shipped Luau too. Tests keep importing it from here."""

from pathlib import Path
from typing import Final

from mnistpack.luau_host import LuauHost, collect_tree, load_pluau, pluau

# The tests belong to a checkout: its luau/ is the runtime they check (an editable install
# serves the same folder; tests/test_package.py checks what a wheel carries).
ROOT: Final = Path(__file__).resolve().parents[1]
LUAU_DIR: Final = ROOT / "luau"

__all__ = ["LUAU_DIR", "ROOT", "LuauHost", "collect_tree", "load_pluau", "pluau"]

"""The Luau test host; it lives in the package (`mnistpack.luau_host`) since `mnistpack
compare` runs the shipped Luau too. Tests keep importing it from here."""

from mnistpack.luau_host import LUAU_DIR, ROOT, LuauHost, collect_tree, load_pluau, pluau

__all__ = ["LUAU_DIR", "ROOT", "LuauHost", "collect_tree", "load_pluau", "pluau"]

"""The Luau test host; it lives in the package (`mnistpack.luau_host`) since `mnistpack
compare` runs the shipped Luau too. Tests keep importing it from here."""

from mnistpack.checkout import LUAU_DIR
from mnistpack.checkout import REPOSITORY_ROOT as ROOT
from mnistpack.luau_host import LuauHost, collect_tree, load_pluau, pluau

__all__ = ["LUAU_DIR", "ROOT", "LuauHost", "collect_tree", "load_pluau", "pluau"]

"""Where the checkout's own files are: mnistpack is installed editable, so `luau/` and
`models/` sit beside the package folder in the repository."""

from __future__ import annotations

from pathlib import Path
from typing import Final

REPOSITORY_ROOT: Final = Path(__file__).resolve().parents[1]
LUAU_DIR: Final = REPOSITORY_ROOT / "luau"

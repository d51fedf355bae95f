"""Where the files mnistpack ships beside its code are: the Luau runtime and the shipped models.

A wheel carries them inside the package (`mnistpack/luau/`, `mnistpack/models/`; see
pyproject.toml), where `importlib.resources` finds them. An editable install has no copy:
its package folder is `packer/mnistpack/` of a checkout, and the runtime a Luau developer
edits is the checkout's own `luau/`. The install's metadata (PEP 610's `direct_url.json`)
says where that checkout is, so both kinds of install find their files without guessing
from this file's location.
"""

from __future__ import annotations

import json
from importlib import metadata, resources
from pathlib import Path
from typing import Final
from urllib.parse import unquote, urlparse
from urllib.request import url2pathname

from mnistpack.errors import OutputError

DISTRIBUTION: Final = "mnistpack"
LUAU_FOLDER: Final = "luau"
MODELS_FOLDER: Final = "models"
CNN_MODEL_NAME: Final = "mnist-cnn.keras"  # the default: it reads player drawings best
MLP_MODEL_NAME: Final = "mnist256.keras"  # the 784-256-10 alternative
SHIPPED_MODEL_NAME: Final = CNN_MODEL_NAME


def luau_dir() -> Path:
    """The Luau runtime folder (`luau/`, with the drawing client in `luau/client/`)."""
    return _shipped_folder(LUAU_FOLDER)


def models_dir() -> Path:
    """The folder of the models this release ships."""
    return _shipped_folder(MODELS_FOLDER)


def shipped_model() -> Path:
    """The model `build` packs when given none."""
    return models_dir() / SHIPPED_MODEL_NAME


def _shipped_folder(name: str) -> Path:
    packaged = Path(str(resources.files(DISTRIBUTION))) / name
    if packaged.is_dir():
        return packaged
    source = _editable_source()
    if source is not None and (source / name).is_dir():
        return source / name
    raise OutputError(
        f"this installation of mnistpack has no {name}/ folder (looked in {packaged}"
        + (f" and {source / name}" if source is not None else "")
        + "): reinstall it from a wheel or with pip install -e from a complete checkout."
    )


def _editable_source() -> Path | None:
    """The project folder of an editable install, from its PEP 610 record, or None."""
    try:
        record = metadata.distribution(DISTRIBUTION).read_text("direct_url.json")
    except metadata.PackageNotFoundError:
        return None
    if not record:
        return None
    try:
        direct = json.loads(record)
    except json.JSONDecodeError:
        return None
    if not isinstance(direct, dict) or not direct.get("dir_info", {}).get("editable"):
        return None
    url = urlparse(str(direct.get("url", "")))
    if url.scheme != "file":
        return None
    return Path(url2pathname(unquote(url.path)))

"""Drop-in Roblox files: the weights module and the Luau runtime as a model, a place and a Rojo project.

- `MnistModel.rbxmx`: one Folder `Mnist` (weights module, Decoder, Model and every other
  module of `luau/`) for the user to insert into ReplicatedStorage.
- `MnistDemo.rbxlx`: a playable place: that folder in ReplicatedStorage, the drawing client
  (`luau/client/`) as the LocalScript `MnistClient` in StarterPlayerScripts.
- `MnistWeights.project.json`: a Rojo project naming whichever weights layout this build
  wrote (`MnistWeights.luau`, or the split `MnistWeights/` folder), so the repository's
  `default.project.json` maps `build/MnistWeights.project.json` and works for every precision.
  (Rojo only takes project files whose names end in `.project.json`, hence the name.)

The XML follows what Studio writes: `<roblox version="4">`, nested `<Item class referent>`
elements with one `<Properties>` each, script sources in CDATA. Referents are derived from
instance paths, so two builds of the same inputs are byte-identical.

The runtime sources are the `luau/` folder mnistpack ships (`assets.luau_dir`); an
installation without it fails with a sentence saying so rather than shipping half a runtime.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Final
from xml.dom import minidom

from mnistpack import assets
from mnistpack.errors import OutputError
from mnistpack.luau_emit import MODULE_NAME, module_path

CLIENT_DIR: Final = "client"  # the folder of luau/ that is the client, not the runtime

FOLDER_NAME: Final = "Mnist"
CLIENT_NAME: Final = "MnistClient"
MODEL_FILE: Final = "MnistModel.rbxmx"
PLACE_FILE: Final = "MnistDemo.rbxlx"
WEIGHTS_PROJECT_FILE: Final = f"{MODULE_NAME}.project.json"
PROJECT_NAME: Final = "MnistDemo"
REPOSITORY_PROJECT_FILE: Final = "default.project.json"

# Rojo's file naming: suffix -> class; `init<suffix>` makes the folder itself that script.
SCRIPT_SUFFIXES: Final = (
    (".server.luau", "Script"),
    (".client.luau", "LocalScript"),
    (".luau", "ModuleScript"),
)
INIT_STEM: Final = "init"

# Studio's own root attributes, in Studio's order.
ROOT_ATTRIBUTES: Final = (
    ("xmlns:xmime", "http://www.w3.org/2005/05/xmlmime"),
    ("xmlns:xsi", "http://www.w3.org/2001/XMLSchema-instance"),
    ("xsi:noNamespaceSchemaLocation", "http://www.roblox.com/roblox.xsd"),
    ("version", "4"),
)
CDATA_END: Final = "]]>"
# XML 1.0 cannot carry C0 controls but tab and newline; a carriage return would come
# back as a newline, so the script would not round-trip either.
_FORBIDDEN = re.compile("[\x00-\x08\x0b-\x1f\x7f\ufffe\uffff\ud800-\udfff]")


@dataclass(frozen=True)
class Node:
    """One Roblox instance: a Folder or service (no source) or a script, with its children."""

    name: str
    class_name: str
    source: str | None = None
    children: tuple[Node, ...] = ()
    properties: tuple[tuple[str, bool], ...] = ()  # extra bool properties, e.g. CharacterAutoLoads


@dataclass(frozen=True)
class Layout:
    """What goes where: the Mnist folder for ReplicatedStorage and the client LocalScript."""

    mnist: Node
    client: Node


# --- reading ---------------------------------------------------------------------------


def read_luau(directory: Path | None = None) -> dict[str, str]:
    """Every `.luau` file under `directory` (default: the shipped runtime): POSIX path
    relative to it -> source text."""
    if directory is None:
        directory = assets.luau_dir()
    if not directory.is_dir():
        raise OutputError(f"cannot find the Luau runtime folder {directory}.")
    files: dict[str, str] = {}
    for path in sorted(directory.rglob("*.luau")):
        relative = path.relative_to(directory).as_posix()
        try:
            files[relative] = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as error:
            raise OutputError(f"cannot read the Luau source {path}: {error}.") from None
    if not any("/" not in name for name in files):
        raise OutputError(
            f"the Luau runtime folder {directory} holds no modules; the installation looks incomplete."
        )
    if not any(name.startswith(f"{CLIENT_DIR}/{INIT_STEM}.") for name in files):
        raise OutputError(f"the drawing client {directory / CLIENT_DIR}/init.client.luau is missing.")
    return files


# --- the instance tree (Rojo's rules) -----------------------------------------------------


def script_kind(file_name: str) -> tuple[str, str] | None:
    """(stem, class) of a Luau file name by Rojo's suffix rules, or None if not a script."""
    for suffix, class_name in SCRIPT_SUFFIXES:
        if file_name.endswith(suffix):
            return file_name[: -len(suffix)], class_name
    return None


def tree_from_files(name: str, files: Mapping[str, str]) -> Node:
    """The instance Rojo makes of a folder `name` holding `files` (relative POSIX path -> source).

    A file `X.luau` becomes ModuleScript X (`.client.luau` a LocalScript, `.server.luau` a
    Script); a sub-folder becomes a Folder, or the script of its `init` file with the rest
    as children.
    """
    direct: dict[str, str] = {}
    nested: dict[str, dict[str, str]] = {}
    for relative, source in files.items():
        head, _, rest = relative.partition("/")
        if rest:
            nested.setdefault(head, {})[rest] = source
        else:
            direct[head] = source
    class_name, own_source = "Folder", None
    children: dict[str, Node] = {}
    for file_name, source in sorted(direct.items()):
        kind = script_kind(file_name)
        if kind is None:
            continue
        stem, script_class = kind
        if stem == INIT_STEM:
            class_name, own_source = script_class, source
            continue
        _add_child(children, Node(stem, script_class, source), name)
    for folder, inner in sorted(nested.items()):
        _add_child(children, tree_from_files(folder, inner), name)
    return Node(name, class_name, own_source, tuple(children[key] for key in sorted(children)))


def _add_child(children: dict[str, Node], node: Node, parent: str) -> None:
    if node.name in children:
        raise OutputError(
            f"two Luau sources in {parent} both become an instance named {node.name}; "
            "Roblox paths would be ambiguous, so rename one."
        )
    children[node.name] = node


def layout(runtime: Mapping[str, str], weights: Mapping[str, str]) -> Layout:
    """The Mnist folder (runtime modules + weights module) and the client LocalScript."""
    client_prefix = f"{CLIENT_DIR}/"
    shared = {path: text for path, text in runtime.items() if not path.startswith(client_prefix)}
    client_files = {
        path[len(client_prefix) :]: text for path, text in runtime.items() if path.startswith(client_prefix)
    }
    weights_node = tree_from_files(FOLDER_NAME, weights).children
    if [node.name for node in weights_node] != [MODULE_NAME]:
        found = ", ".join(sorted(weights)) or "nothing"
        raise OutputError(f"expected the weights module files of {MODULE_NAME}, found {found}.")
    runtime_folder = tree_from_files(FOLDER_NAME, shared)
    children = {node.name: node for node in runtime_folder.children}
    _add_child(children, weights_node[0], FOLDER_NAME)
    mnist = Node(FOLDER_NAME, "Folder", None, tuple(children[key] for key in sorted(children)))
    client = tree_from_files(CLIENT_NAME, client_files)
    if client.class_name != "LocalScript":
        raise OutputError(f"luau/{CLIENT_DIR} must hold init.client.luau so it becomes a LocalScript.")
    return Layout(mnist=mnist, client=client)


def place_services(tree: Layout) -> tuple[Node, ...]:
    """The services of the demo place, in the order Studio lists them."""
    return (
        Node("Workspace", "Workspace"),
        # a GUI-only demo: no character to fall through an empty Workspace
        Node("Players", "Players", properties=(("CharacterAutoLoads", False),)),
        Node("ReplicatedStorage", "ReplicatedStorage", children=(tree.mnist,)),
        Node(
            "StarterPlayer",
            "StarterPlayer",
            children=(Node("StarterPlayerScripts", "StarterPlayerScripts", children=(tree.client,)),),
        ),
    )


# --- XML ---------------------------------------------------------------------------------


def referent(path: str) -> str:
    """Studio-style referent, derived from the instance path so rebuilds are identical."""
    return "RBX" + hashlib.md5(path.encode("utf-8")).hexdigest().upper()


def cdata_pieces(text: str) -> list[str]:
    """`text` as CDATA section contents: split where it holds "]]>", which would end a section."""
    parts = text.split(CDATA_END)
    if len(parts) == 1:
        return parts
    return [parts[0] + "]]", *(">" + part + "]]" for part in parts[1:-1]), ">" + parts[-1]]


def _check_text(text: str, what: str) -> None:
    bad = _FORBIDDEN.search(text)
    if bad is not None:
        line = text.count("\n", 0, bad.start()) + 1
        raise OutputError(
            f"{what} holds the control character U+{ord(bad.group()):04X} on line {line}; "
            "Roblox XML files cannot carry it, so remove it from the source."
        )


class _Writer:
    """Builds one Studio XML document; indentation is added as explicit text nodes so
    minidom never inserts whitespace of its own (inside CDATA it would change sources)."""

    def __init__(self) -> None:
        self.doc = minidom.Document()
        self.root = self.doc.createElement("roblox")
        for key, value in ROOT_ATTRIBUTES:
            self.root.setAttribute(key, value)
        self.doc.appendChild(self.root)
        for value in ("null", "nil"):
            external = self._append(self.root, "External", 1)
            external.appendChild(self.doc.createTextNode(value))

    def _append(self, parent: minidom.Element, tag: str, depth: int) -> minidom.Element:
        parent.appendChild(self.doc.createTextNode("\n" + "\t" * depth))
        element = self.doc.createElement(tag)
        parent.appendChild(element)
        return element

    def _close(self, element: minidom.Element, depth: int) -> None:
        element.appendChild(self.doc.createTextNode("\n" + "\t" * depth))

    def item(self, node: Node, parent: minidom.Element | None, path: str, depth: int) -> None:
        where = f"{path}/{node.name}" if path else node.name
        _check_text(node.name, f"the instance name {where!r}")
        element = self._append(parent if parent is not None else self.root, "Item", depth)
        element.setAttribute("class", node.class_name)
        element.setAttribute("referent", referent(where))
        properties = self._append(element, "Properties", depth + 1)
        name = self._append(properties, "string", depth + 2)
        name.setAttribute("name", "Name")
        name.appendChild(self.doc.createTextNode(node.name))
        for key, flag in node.properties:
            value = self._append(properties, "bool", depth + 2)
            value.setAttribute("name", key)
            value.appendChild(self.doc.createTextNode("true" if flag else "false"))
        if node.source is not None:
            _check_text(node.source, f"the source of {where}")
            source = self._append(properties, "ProtectedString", depth + 2)
            source.setAttribute("name", "Source")
            for piece in cdata_pieces(node.source):
                source.appendChild(self.doc.createCDATASection(piece))
        self._close(properties, depth + 1)
        for child in node.children:
            self.item(child, element, where, depth + 1)
        self._close(element, depth)

    def text(self) -> str:
        self._close(self.root, 0)
        stream = io.StringIO()
        # no XML declaration, like Studio; all whitespace is already in the tree
        self.root.writexml(stream, indent="", addindent="", newl="")
        return stream.getvalue() + "\n"


def xml_document(items: Iterable[Node]) -> str:
    """A Studio XML file (.rbxmx or .rbxlx) whose top-level instances are `items`."""
    writer = _Writer()
    for node in items:
        writer.item(node, None, "", 1)
    return writer.text()


# --- Rojo ---------------------------------------------------------------------------------


def weights_project(weights: Mapping[str, str]) -> str:
    """A Rojo project for the weights module of this build, whichever layout it has."""
    return _json({"name": MODULE_NAME, "tree": {"$path": module_path(weights)}})


def repository_project(
    runtime: Mapping[str, str], *, luau_dir: str = "luau", build_dir: str = "build"
) -> str:
    """The repository's `default.project.json`: every runtime file mapped once, laid out as the place."""
    client_prefix = f"{CLIENT_DIR}/"
    mnist: dict[str, object] = {"$className": "Folder"}
    entries: dict[str, str] = {}
    for relative in sorted(runtime):
        if relative.startswith(client_prefix):
            continue
        head = PurePosixPath(relative).parts[0]
        if "/" in relative:
            entries[head] = f"{luau_dir}/{head}"  # a sub-folder maps as a whole
            continue
        kind = script_kind(head)
        if kind is not None:
            entries[kind[0]] = f"{luau_dir}/{head}"
    entries[MODULE_NAME] = f"{build_dir}/{WEIGHTS_PROJECT_FILE}"
    for name in sorted(entries):
        mnist[name] = {"$path": entries[name]}
    tree = {
        "$className": "DataModel",
        "Players": {"$className": "Players", "$properties": {"CharacterAutoLoads": False}},
        "ReplicatedStorage": {"$className": "ReplicatedStorage", FOLDER_NAME: mnist},
        "StarterPlayer": {
            "$className": "StarterPlayer",
            "StarterPlayerScripts": {
                "$className": "StarterPlayerScripts",
                CLIENT_NAME: {"$path": f"{luau_dir}/{CLIENT_DIR}"},
            },
        },
        "Workspace": {"$className": "Workspace"},
    }
    return _json({"name": PROJECT_NAME, "tree": tree})


def _json(value: object) -> str:
    return json.dumps(value, indent=2) + "\n"


# --- the build's outputs ---------------------------------------------------------------------


def roblox_files(weights: Mapping[str, str], runtime: Mapping[str, str] | None = None) -> dict[str, str]:
    """File name -> text of the model, the place and the weights' Rojo project.

    `weights` is the weights module as the build writes it (relative path -> source);
    `runtime` defaults to the repository's `luau/` sources.
    """
    sources = read_luau() if runtime is None else runtime
    tree = layout(sources, weights)
    return {
        MODEL_FILE: xml_document([tree.mnist]),
        PLACE_FILE: xml_document(place_services(tree)),
        WEIGHTS_PROJECT_FILE: weights_project(weights),
    }

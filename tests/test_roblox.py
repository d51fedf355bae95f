"""packer/roblox.py: the .rbxmx model, the .rbxlx place and the Rojo projects.

The XML is read back with ElementTree (not the minidom that wrote it), every script is
compared with its file in luau/, and the repository's default.project.json is walked by
Rojo's own rules to show it maps every file of luau/ exactly once.
"""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest
from mnistpack.build import build
from mnistpack.errors import OutputError
from mnistpack.roblox import (
    MODEL_FILE,
    PLACE_FILE,
    REPOSITORY_PROJECT_FILE,
    WEIGHTS_PROJECT_FILE,
    cdata_pieces,
    read_luau,
    repository_project,
    roblox_files,
)

from tests.luau_host import LUAU_DIR, ROOT
from tests.random_model import save_random_model

SINGLE = {"MnistWeights.luau": 'return { format = "mnistpack", data = [[\nQUJD\n]] }\n'}
SPLIT = {
    "MnistWeights/init.luau": "return { data = table.concat({ require(script.Part1) }) }\n",
    "MnistWeights/Part1.luau": "return [[\nQUJD\n]]\n",
}
REFERENT = re.compile(r"RBX[0-9A-F]{32}")


def items(element: ET.Element, path: str = "") -> Iterator[tuple[str, ET.Element]]:
    """(instance path, Item element) for every Item under `element`, depth first."""
    for item in element.findall("Item"):
        name = item.find("Properties/string[@name='Name']")
        assert name is not None and name.text
        where = f"{path}/{name.text}" if path else name.text
        yield where, item
        yield from items(item, where)


def scripts(document: str) -> dict[str, tuple[str, str]]:
    """Instance path -> (class, source) of every script in a Studio XML file."""
    found = {}
    for path, item in items(ET.fromstring(document)):
        source = item.find("Properties/ProtectedString[@name='Source']")
        if source is not None:
            found[path] = (item.get("class", ""), source.text or "")
    return found


def expected_scripts(
    prefix: str, client_prefix: str | None, weights: Mapping[str, str]
) -> dict[str, tuple[str, str]]:
    """What Rojo would make of luau/ and the weights files, by path: written out by hand here."""
    runtime = read_luau()
    expected = {}
    for relative, source in runtime.items():
        if relative.startswith("client/"):
            if client_prefix is None:
                continue
            name = relative.removeprefix("client/")
            if name == "init.client.luau":
                expected[client_prefix] = ("LocalScript", source)
            else:
                expected[f"{client_prefix}/{name.removesuffix('.luau')}"] = ("ModuleScript", source)
        else:
            expected[f"{prefix}/{relative.removesuffix('.luau')}"] = ("ModuleScript", source)
    for relative, source in weights.items():
        stem = relative.removesuffix(".luau").removesuffix("/init")
        expected[f"{prefix}/{stem}"] = ("ModuleScript", source)
    return expected


@pytest.fixture(scope="module")
def files() -> dict[str, str]:
    return roblox_files(SINGLE)


def test_both_files_are_studio_xml(files: dict[str, str]) -> None:
    for name in (MODEL_FILE, PLACE_FILE):
        root = ET.fromstring(files[name])
        assert root.tag == "roblox" and root.get("version") == "4"
        schema = root.get("{http://www.w3.org/2001/XMLSchema-instance}noNamespaceSchemaLocation")
        assert schema == "http://www.roblox.com/roblox.xsd"
        for _, item in items(root):
            assert len(item.findall("Properties")) == 1


def test_model_is_one_folder_with_every_module_and_the_weights(files: dict[str, str]) -> None:
    root = ET.fromstring(files[MODEL_FILE])
    top = root.findall("Item")
    assert [(item.get("class"), item.findtext("Properties/string")) for item in top] == [("Folder", "Mnist")]
    assert scripts(files[MODEL_FILE]) == expected_scripts("Mnist", None, SINGLE)


def test_place_has_the_folder_in_replicated_storage_and_the_client_in_player_scripts(
    files: dict[str, str],
) -> None:
    root = ET.fromstring(files[PLACE_FILE])
    classes = {path: item.get("class") for path, item in items(root)}
    assert classes["ReplicatedStorage"] == "ReplicatedStorage"
    assert classes["ReplicatedStorage/Mnist"] == "Folder"
    assert classes["StarterPlayer"] == "StarterPlayer"
    assert classes["StarterPlayer/StarterPlayerScripts"] == "StarterPlayerScripts"
    client = "StarterPlayer/StarterPlayerScripts/MnistClient"
    assert scripts(files[PLACE_FILE]) == expected_scripts("ReplicatedStorage/Mnist", client, SINGLE)
    players = root.find("Item[@class='Players']/Properties/bool[@name='CharacterAutoLoads']")
    assert players is not None and players.text == "false"


def test_referents_are_unique_studio_style_and_stable(files: dict[str, str]) -> None:
    for name in (MODEL_FILE, PLACE_FILE):
        refs = [item.get("referent", "") for _, item in items(ET.fromstring(files[name]))]
        assert all(REFERENT.fullmatch(ref) for ref in refs), refs
        assert len(refs) == len(set(refs))
    again = roblox_files(dict(reversed(list(SINGLE.items()))))
    assert again == files, "a rebuild must be byte-identical"


def test_split_weights_become_a_module_with_part_children() -> None:
    split = roblox_files(SPLIT)
    assert scripts(split[MODEL_FILE]) == expected_scripts("Mnist", None, SPLIT)
    assert "Mnist/MnistWeights/Part1" in scripts(split[MODEL_FILE])
    assert json.loads(split[WEIGHTS_PROJECT_FILE]) == {
        "name": "MnistWeights",
        "tree": {"$path": "MnistWeights"},
    }
    single = json.loads(roblox_files(SINGLE)[WEIGHTS_PROJECT_FILE])
    assert single == {"name": "MnistWeights", "tree": {"$path": "MnistWeights.luau"}}


def test_a_source_holding_the_cdata_terminator_survives() -> None:
    tricky = "local s = t[a[1]]>0 and [[x]]>\n-- ]]>]]>\n"
    assert "".join(cdata_pieces(tricky)) == tricky
    assert all("]]>" not in piece for piece in cdata_pieces(tricky))
    runtime = {**read_luau(), "Tricky.luau": tricky}
    model = roblox_files(SINGLE, runtime)[MODEL_FILE]
    assert scripts(model)["Mnist/Tricky"] == ("ModuleScript", tricky)


@pytest.mark.parametrize("bad", ["\x00", "\x07", "\r", "\x1b", "\x7f"])
def test_control_characters_are_refused(bad: str) -> None:
    runtime = {**read_luau(), "Bad.luau": f"local x = 1\nlocal y = '{bad}'\n"}
    with pytest.raises(
        OutputError, match=r"the source of Mnist/Bad holds the control character U\+00.. on line 2"
    ):
        roblox_files(SINGLE, runtime)


def test_two_files_with_one_instance_name_are_refused() -> None:
    with pytest.raises(OutputError, match="both become an instance named MnistWeights"):
        roblox_files(SINGLE, {**read_luau(), "MnistWeights.luau": "return {}"})


def test_a_missing_runtime_folder_is_a_sentence(tmp_path: Path) -> None:
    with pytest.raises(OutputError, match="cannot find the Luau runtime folder .*nowhere"):
        read_luau(tmp_path / "nowhere")


# --- the Rojo project --------------------------------------------------------------------------


def rojo_files(node: Mapping[str, object], base: Path) -> list[Path]:
    """Every file a Rojo project node pulls in: `$path` to a file is that file, to a folder
    every file below it; other keys are child nodes (Rojo's rules, written out here)."""
    found: list[Path] = []
    for key, value in node.items():
        if key == "$path":
            target = base / str(value)
            found.extend(sorted(p for p in target.rglob("*") if p.is_file()) if target.is_dir() else [target])
        elif not key.startswith("$"):
            assert isinstance(value, dict)
            found.extend(rojo_files(value, base))
    return found


def test_project_json_maps_every_luau_file_exactly_once() -> None:
    project = json.loads((ROOT / REPOSITORY_PROJECT_FILE).read_text(encoding="utf-8"))
    assert set(project) == {"name", "tree"} and project["tree"]["$className"] == "DataModel"
    mapped = rojo_files(project["tree"], ROOT)
    luau = [p for p in mapped if p.is_relative_to(LUAU_DIR)]
    assert sorted(luau) == sorted(LUAU_DIR.rglob("*.luau")), "a luau/ file is unmapped"
    assert len(luau) == len(set(luau)), "a luau/ file is mapped twice"
    assert ROOT / "build" / WEIGHTS_PROJECT_FILE in mapped
    tree = project["tree"]
    assert tree["StarterPlayer"]["StarterPlayerScripts"]["MnistClient"] == {"$path": "luau/client"}


def test_project_json_is_up_to_date() -> None:
    committed = (ROOT / REPOSITORY_PROJECT_FILE).read_text(encoding="utf-8")
    assert committed == repository_project(read_luau()), (
        "default.project.json is stale: regenerate it with\n"
        '.venv/bin/python -c "from mnistpack.roblox import *; '
        "open('default.project.json', 'w').write(repository_project(read_luau()))\""
    )


# --- mnistpack build writes them --------------------------------------------------------------


def test_build_writes_the_roblox_files_beside_the_weights(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MNISTPACK_DATA", raising=False)
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "empty-keras-home"))
    model = save_random_model(tmp_path / "random8.keras", 8)
    outputs = []
    for out in ("a", "b"):
        build(model=model, precision="int8", out_dir=tmp_path / out, compression="zstd", data_dir=None)
        outputs.append({p.name: p.read_bytes() for p in sorted((tmp_path / out).iterdir())})
    assert set(outputs[0]) == {"MnistWeights.luau", MODEL_FILE, PLACE_FILE, WEIGHTS_PROJECT_FILE}
    assert outputs[0] == outputs[1], "two builds must be byte-identical"
    weights = {"MnistWeights.luau": outputs[0]["MnistWeights.luau"].decode("utf-8")}
    model_xml = outputs[0][MODEL_FILE].decode("utf-8")
    assert scripts(model_xml) == expected_scripts("Mnist", None, weights)

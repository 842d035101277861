"""docs/layout.md's package map matches the tree: every package and stage it names exists, and every
module of the package is named in its row, so the map cannot drift from the code."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
SRC = REPO / "src"
PACKAGE = SRC / "synthmix"
DOC = REPO / "docs" / "layout.md"


def map_rows() -> dict[str, str]:
    """{package path (e.g. synthmix/data/): what its row says it owns} from the package table."""
    text = DOC.read_text()
    table = text[text.index("| package | what it owns |") :].split("\n\n")[0]
    rows = {}
    for line in table.splitlines()[2:]:
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        rows[cells[0].strip("`")] = cells[1]
    return rows


def defined_names(package: Path) -> set[str]:
    names: set[str] = set()
    for path in package.rglob("*.py"):
        for match in re.finditer(r"^(?:def|class) (\w+)|^(\w+)\s*[:=]", path.read_text(), re.M):
            names.add(match[1] or match[2])
    return names


def test_every_package_and_module_is_on_the_map():
    rows = map_rows()
    packages = {f"synthmix/{p.name}/" for p in PACKAGE.iterdir() if (p / "__init__.py").exists()}
    assert packages | {"synthmix/cli.py"} == set(rows), "docs/layout.md's package table vs src/synthmix/"
    for name, owns in rows.items():
        path = SRC / name
        if path.is_file():
            continue
        named = set(re.findall(r"`([\w./]+)`", owns))
        modules = {p.stem for p in path.glob("*.py") if p.stem != "__init__"}
        subpackages = {f"{p.name}/" for p in path.iterdir() if (p / "__init__.py").exists()}
        assert not (modules | subpackages) - named, f"{name}: modules missing from its row in docs/layout.md"
        for sub in subpackages:  # a subpackage's modules are named in the same row
            inner = {p.stem for p in (path / sub).glob("*.py") if p.stem != "__init__"}
            assert not inner - named, f"{name}{sub}: modules missing from docs/layout.md"


def test_every_name_on_the_map_exists():
    for name, owns in map_rows().items():
        path = SRC / name
        assert path.exists(), f"docs/layout.md names {name}, which is not in src/"
        if path.is_file():
            continue
        known = defined_names(path) | {"__init__"}
        for word in re.findall(r"`([\w]+/?)`", owns):
            word = word.rstrip("/")
            exists = (
                (path / f"{word}.py").exists()
                or (path / word).is_dir()
                or any((sub / f"{word}.py").exists() for sub in path.iterdir() if sub.is_dir())
                or word in known
            )
            assert exists, f"docs/layout.md says {name} owns `{word}`, which is not there"


def test_every_dvc_stage_leads_to_its_module():
    from test_dvc_deps import command_modules

    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    text = DOC.read_text()
    for stage, spec in stages.items():
        command = spec["cmd"].split()[1]
        assert command == stage, f"dvc.yaml stage {stage} runs `synthmix {command}`: name them alike"
        called = {m for m in command_modules(command) if m.startswith("synthmix.stages.")}
        assert called == {f"synthmix.stages.{stage}"}, f"`synthmix {stage}` calls {called}"
        module = PACKAGE / "stages" / f"{stage}.py"
        assert module.exists(), f"dvc.yaml stage {stage} has no module src/synthmix/stages/{stage}.py"
        assert f"def {stage}_stage(" in module.read_text()
        assert f"| {stage} | `synthmix {stage}" in text, f"docs/layout.md's stage table lacks {stage}"
    for path in SRC.glob("synthmix/stages/*.py"):
        if path.stem != "__init__":
            assert f"`synthmix/stages/{path.name}`" in text


def test_every_file_path_the_doc_names_exists():
    for path in re.findall(r"`(synthmix/[\w/]+(?:\.py)?)`", DOC.read_text()):
        assert (SRC / path).exists(), f"docs/layout.md names {path}, which is not in src/"

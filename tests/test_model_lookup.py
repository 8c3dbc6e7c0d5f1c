"""model_lookup's scan of a zoo's packages, on throw-away zoos: no SSH, no training."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

REMOTE = Path(__file__).resolve().parents[1] / "plugins" / "fuxictr_workflow" / "remote"
if str(REMOTE) not in sys.path:  # the runner bundle is a flat dir of modules, imported as such
    sys.path.append(str(REMOTE))

from errors import UserError  # noqa: E402
from model_lookup import model_class  # noqa: E402

# Importing either of these packages fails: a lookup that only parses them must not touch them.
EXPLODES = "raise RuntimeError('imported')\n"


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_class_in_another_models_package_is_imported_alone(tmp_path: Path) -> None:
    write(tmp_path / "Base/src/__init__.py", "from .Base import *\n")
    write(tmp_path / "Base/src/helpers.py", "WIDTH = 3\n")
    write(tmp_path / "Base/src/Base.py", "class Base:\n    pass\n")
    write(
        tmp_path / "Base/src/Variant.py", "from .helpers import WIDTH\n\nclass Variant:\n    width = WIDTH\n"
    )
    write(tmp_path / "Other/Other_torch/src/__init__.py", EXPLODES)
    write(tmp_path / "multitask/Mtl/src/__init__.py", EXPLODES)

    found = model_class("Variant", str(tmp_path))
    assert found.__name__ == "Variant" and found.width == 3


def test_class_defined_in_two_packages_is_an_error_naming_both(tmp_path: Path) -> None:
    write(tmp_path / "A/src/__init__.py", EXPLODES + "class Dup:\n    pass\n")
    write(tmp_path / "B/B_torch/src/__init__.py", EXPLODES)
    write(tmp_path / "B/B_torch/src/dup.py", "class Dup:\n    pass\n")
    write(tmp_path / "C/src/__init__.py", EXPLODES + "def Dup():\n    pass\n")  # not a class

    with pytest.raises(UserError) as raised:
        model_class("Dup", str(tmp_path))
    message = str(raised.value)
    assert "model 'Dup' is defined in several model_zoo packages" in message
    assert str(tmp_path / "A/src") in message and str(tmp_path / "B/B_torch/src") in message
    assert str(tmp_path / "C/src") not in message


def test_not_found_names_every_place_searched(tmp_path: Path) -> None:
    write(tmp_path / "A/src/__init__.py", EXPLODES + "class Nested:\n    class Missing:\n        pass\n")
    write(tmp_path / "A/src/broken.py", "class Missing(:\n")  # does not parse: skipped, not fatal

    with pytest.raises(UserError) as raised:
        model_class("Missing", str(tmp_path))
    message = str(raised.value)
    assert message.startswith("model 'Missing' not found; searched: ")
    for searched in (
        "Missing.py",
        "Missing/__init__.py",
        "Missing/src",
        "Missing/Missing_torch/src",
        "multitask/Missing/src",
        "*/src",
        "*/*_torch/src",
        "multitask/*/src",
    ):
        assert f"{tmp_path / searched}," in message or f"{tmp_path / searched} " in message, searched
    assert message.endswith("fuxictr.pytorch.models")

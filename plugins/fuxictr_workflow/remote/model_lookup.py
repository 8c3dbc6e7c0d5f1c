"""Find a model class by the experiment's `model` name, the way FuXiCTR's own checkouts lay them out.

With a model_zoo dir the candidates are, in order: `<zoo>/<Model>.py`, `<zoo>/<Model>/__init__.py`,
`<zoo>/<Model>/src`, `<zoo>/<Model>/<Model>_torch/src` and `<zoo>/multitask/<Model>/src`; a `src`
dir is imported as a package (the zoo's modules use relative imports), its `__init__` re-exports
the class. Some zoo experiments name a class that lives in another model's package (APG_DeepFM in
APG/src, GDCNP in GDCN/src, PPNet in PEPNet/src): when no candidate has it, every package dir
(SCANNED) is parsed, not imported, for a top-level `class <Model>`, and only the one package that
defines it is imported. Two packages defining it is an error: picking one would train a model the
user may not have meant. The classes fuxictr itself ships in `fuxictr.pytorch.models` are found
too. The demo's models (`--demo-models`, given on the embedded demo's server only) are used only
when no zoo is configured, so a zoo model that is missing is an error, never a different model
trained under the same name.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import sys
import traceback
from pathlib import Path
from types import ModuleType

from errors import UserError

SCANNED = ("*/src", "*/*_torch/src", "multitask/*/src")


def zoo_candidates(zoo: Path, name: str) -> list[Path]:
    return [
        zoo / f"{name}.py",
        zoo / name / "__init__.py",
        zoo / name / "src",
        zoo / name / f"{name}_torch" / "src",
        zoo / "multitask" / name / "src",
    ]


def _import(path: Path, module_name: str) -> ModuleType:
    """A .py file as a module, or a dir (with or without __init__.py) as a package."""
    if path.is_dir():
        init = path / "__init__.py"
        spec = importlib.util.spec_from_file_location(
            module_name, init if init.is_file() else None, submodule_search_locations=[str(path)]
        )
    else:
        spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module  # relative imports inside the package resolve through it
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[module_name]
        raise
    return module


def _from_candidate(path: Path, name: str, module_name: str, submodule: str | None = None) -> type | None:
    """The class `name` from a module or package; in a package whose `__init__` does not export it,
    from its submodule (`<name>.py` unless told which file defines it)."""
    submodule = submodule or name
    try:
        module = _import(path, module_name)
        if path.is_dir() and not hasattr(module, name) and (path / f"{submodule}.py").is_file():
            module = importlib.import_module(f"{module_name}.{submodule}")
    except Exception as err:
        where = "".join(traceback.format_exception_only(type(err), err)).strip()
        raise UserError(f"model {name!r} at {path} failed to import: {where}") from None
    found = getattr(module, name, None)
    return found if isinstance(found, type) else None


def _defines(source: Path, name: str) -> bool:
    """Whether the file has a top-level `class <name>`; a file that does not parse defines nothing."""
    try:
        tree = ast.parse(source.read_bytes(), filename=str(source))
    except (SyntaxError, ValueError, OSError):
        return False  # importing it would fail as well: it cannot be where the model comes from
    return any(isinstance(node, ast.ClassDef) and node.name == name for node in tree.body)


def _scan(zoo: Path, name: str) -> type | None:
    """The class from the one zoo package that defines it; UserError if several do."""
    packages = dict.fromkeys(p for pattern in SCANNED for p in sorted(zoo.glob(pattern)) if p.is_dir())
    defining = {
        package: source
        for package in packages
        for source in sorted(package.glob("*.py"))
        if _defines(source, name)
    }
    if len(defining) > 1:
        where = ", ".join(str(package) for package in defining)
        raise UserError(
            f"model {name!r} is defined in several model_zoo packages: {where}; "
            "rename the class in all but one (or remove the extra copies) so the experiment names one model"
        )
    if not defining:
        return None
    [(package, source)] = defining.items()
    return _from_candidate(package, name, f"_fxw_zoo_scan_{name}", source.stem)


def _fuxictr_builtin(name: str) -> type | None:
    import fuxictr.pytorch.models as builtin

    found = getattr(builtin, name, None)
    return found if isinstance(found, type) else None


def model_class(name: str, model_zoo: str | None, demo_models: str | None = None) -> type:
    """The model class called `name`; UserError naming every place searched when there is none."""
    searched: list[str] = []
    if model_zoo:
        zoo = Path(model_zoo)
        if not zoo.is_dir():
            raise UserError(f"model_zoo {model_zoo} is not a directory on the training server")
        for index, path in enumerate(zoo_candidates(zoo, name)):
            searched.append(str(path))
            if path.exists():
                package = path.parent if path.name == "__init__.py" else path
                found = _from_candidate(package, name, f"_fxw_zoo_{index}_{name}")
                if found is not None:
                    return found
        searched.extend(f"{zoo / pattern} (parsed for class {name})" for pattern in SCANNED)
        found = _scan(zoo, name)
        if found is not None:
            return found
    elif demo_models:
        searched.append(demo_models)
        found = _from_candidate(Path(demo_models), name, f"_fxw_zoo_0_{name}")
        if found is not None:
            return found
    searched.append("fuxictr.pytorch.models")
    found = _fuxictr_builtin(name)
    if found is not None:
        return found
    raise UserError(f"model {name!r} not found; searched: {', '.join(searched)}")

"""Recipe files → validated Recipe: jinja2 variables, --set overrides, errors with YAML lines.

    loaded = load_recipe(Path("recipes/hpc-mpi.yaml"), overrides=["os.release=trixie"])

Every error is a RecipeError whose message starts with `file:line: field:` and
whose hint says how to fix it. Files the recipe refers to (file sources, run
scripts, repository keys) are read here, so a missing one fails before a build.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jinja2
import jinja2.sandbox
import yaml
from pydantic import BaseModel, ValidationError

from rain.errors import RecipeError
from rain.generate.lock import Lock, lock_path, read_lock
from rain.generate.recipe import Recipe


@dataclass(frozen=True)
class LoadedRecipe:
    recipe: Recipe
    path: Path
    text: str
    inputs: dict[str, bytes] = field(default_factory=dict)
    """Contents of files the recipe refers to, keyed by the name written in the recipe."""
    lock: Lock | None = None
    """The lock file beside the recipe (rain.generate.lock), when it locks the OS this build is for."""
    lock_note: str = ""
    """Why a lock beside the recipe is not used (it is for another OS), for the build to say."""


def parse_overrides(items: typing.Iterable[str]) -> dict[str, Any]:
    """['os.release=trixie', 'packages=[a, b]'] → {'os.release': 'trixie', 'packages': ['a', 'b']}."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise RecipeError(f"bad --set {item!r}", hint="use --set field=value, e.g. --set os.release=trixie")
        try:
            out[key.strip()] = yaml.safe_load(value) if value.strip() else ""
        except yaml.YAMLError:
            out[key.strip()] = value
    return out


def load_recipe(path: Path | str, overrides: typing.Iterable[str] | dict[str, Any] = (),
                use_lock: bool = True) -> LoadedRecipe:
    """The recipe at path, with the lock file beside it unless `use_lock` is False (`fg-image lock --update`)."""
    path = Path(path)
    try:
        source = path.read_text()
    except OSError as e:
        raise RecipeError(f"cannot read recipe {path}: {e.strerror}", hint="check the path") from e
    sets = overrides if isinstance(overrides, dict) else parse_overrides(overrides)
    loaded = load_recipe_text(source, path, sets)
    if not use_lock or not lock_path(path).is_file():
        return loaded
    lock = read_lock(lock_path(path))
    o = loaded.recipe.os
    if not lock.locks(str(o.family), o.release, o.arch):
        note = (f"not using {lock.path.name}: it locks {lock.os_text}, this build is {o.family} {o.release} "
                f"{o.arch}")
        return dataclasses.replace(loaded, lock_note=note)
    return dataclasses.replace(loaded, lock=lock)


def load_recipe_text(source: str, path: Path, sets: dict[str, Any] | None = None) -> LoadedRecipe:
    sets = dict(sets or {})
    var_sets = {k[5:]: v for k, v in sets.items() if k.startswith("vars.")}
    variables = {**_declared_vars(source, path), **var_sets}
    text = _render(source, path, variables)
    try:
        node = yaml.compose(text)
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = f":{mark.line + 1}" if mark else ""
        raise RecipeError(f"{path}{line}: not valid YAML: {getattr(e, 'problem', e)}",
                          hint="check indentation and quoting") from e
    if not isinstance(data, dict):
        raise RecipeError(f"{path}: a recipe is a mapping of fields", hint="start with `name:` and `os:`")
    lines = _line_map(node)
    data["vars"] = {**data.get("vars", {}), **var_sets} if isinstance(data.get("vars", {}), dict) else data["vars"]
    for key, value in sets.items():
        if not key.startswith("vars."):
            _assign(data, key, value)
    try:
        recipe = Recipe.model_validate(data)
    except ValidationError as e:
        raise _recipe_error(e, path, lines) from None
    return LoadedRecipe(recipe, path, text, read_inputs(recipe, path, lines))


def _declared_vars(source: str, path: Path) -> dict[str, Any]:
    """The recipe's own `vars:` block, read from a lenient first rendering."""
    env = jinja2.sandbox.SandboxedEnvironment(undefined=jinja2.ChainableUndefined, keep_trailing_newline=True)
    try:
        data = yaml.safe_load(env.from_string(source).render())
    except (jinja2.TemplateError, yaml.YAMLError):
        return {}
    declared = data.get("vars") if isinstance(data, dict) else None
    return dict(declared) if isinstance(declared, dict) else {}


def _render(source: str, path: Path, variables: dict[str, Any]) -> str:
    env = jinja2.sandbox.SandboxedEnvironment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True)
    try:
        return env.from_string(source).render(**variables)
    except jinja2.TemplateSyntaxError as e:
        raise RecipeError(f"{path}:{e.lineno}: template error: {e.message}",
                          hint="check the {{ }} and {% %} markers") from None
    except jinja2.UndefinedError as e:
        raise RecipeError(f"{path}: {e.message}",
                          hint="declare it under `vars:` or pass --set vars.NAME=value") from None
    except jinja2.TemplateError as e:
        raise RecipeError(f"{path}: template error: {e}", hint="check the jinja2 expressions") from None


def _line_map(node: yaml.Node | None) -> dict[tuple[Any, ...], int]:
    """(key, index, ...) → 1-based line of that value in the YAML text."""
    lines: dict[tuple[Any, ...], int] = {}

    def walk(n: yaml.Node, loc: tuple[Any, ...]) -> None:
        lines.setdefault(loc, n.start_mark.line + 1)
        if isinstance(n, yaml.MappingNode):
            for k, v in n.value:
                key = k.value
                lines[(*loc, key)] = k.start_mark.line + 1
                walk(v, (*loc, key))
        elif isinstance(n, yaml.SequenceNode):
            for i, item in enumerate(n.value):
                walk(item, (*loc, i))

    if node is not None:
        walk(node, ())
    return lines


def _assign(data: dict[str, Any], dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    target: Any = data
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        if isinstance(target, list):
            if not part.isdigit() or int(part) >= len(target):
                raise RecipeError(f"--set {dotted}: {part!r} is not an index of that list",
                                  hint=f"use 0..{len(target) - 1}")
            if last:
                target[int(part)] = value
            else:
                target = target[int(part)]
        elif isinstance(target, dict):
            if last:
                target[part] = value
            else:
                target = target.setdefault(part, {})
        else:
            raise RecipeError(f"--set {dotted}: {'.'.join(parts[:i])} is not a mapping or list",
                              hint="set the whole field instead")


def _recipe_error(e: ValidationError, path: Path, lines: dict[tuple[Any, ...], int]) -> RecipeError:
    err = e.errors()[0]
    loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-")))
    line = next((lines[loc[:n]] for n in range(len(loc), -1, -1) if loc[:n] in lines), None)
    where = f"{path}:{line}" if line else str(path)
    fld = ".".join(str(p) for p in loc) or "recipe"
    msg = err["msg"].removeprefix("Value error, ")
    more = f" (and {len(e.errors()) - 1} more)" if len(e.errors()) > 1 else ""
    if err["type"] == "extra_forbidden":
        valid = _fields_at(loc[:-1])
        return RecipeError(f"{where}: unknown field {fld!r}{more}",
                           hint="valid fields here: " + ", ".join(valid) if valid else "remove it")
    if err["type"] == "missing":
        return RecipeError(f"{where}: missing field {fld!r}{more}", hint="see docs/recipes.md")
    return RecipeError(f"{where}: {fld}: {msg}{more}", hint="see docs/recipes.md for the field's format")


def _fields_at(loc: tuple[Any, ...]) -> list[str]:
    model: Any = Recipe
    for part in loc:
        if isinstance(part, int):
            continue
        info = model.model_fields.get(part) if isinstance(model, type) and issubclass(model, BaseModel) else None
        if info is None:
            return []
        model = _model_of(info.annotation)
    return list(model.model_fields) if isinstance(model, type) and issubclass(model, BaseModel) else []


def _model_of(annotation: Any) -> Any:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        found = _model_of(arg)
        if found is not None:
            return found
    return None


def read_inputs(recipe: Recipe, path: Path, lines: dict[tuple[Any, ...], int] | None = None) -> dict[str, bytes]:
    """The files the recipe refers to, read relative to the recipe file's directory."""
    lines = lines or {}
    here = path.parent
    wanted: list[tuple[str, tuple[Any, ...]]] = []
    wanted += [(f.source, ("files", i, "source")) for i, f in enumerate(recipe.files) if f.source]
    wanted += [(s.script, ("run", i, "script")) for i, s in enumerate(recipe.run) if s.script]
    wanted += [(r.gpgkey, ("repositories", i, "gpgkey")) for i, r in enumerate(recipe.repositories)
               if r.gpgkey and "://" not in r.gpgkey]
    inputs: dict[str, bytes] = {}
    for name, loc in wanted:
        try:
            inputs[name] = (here / name).read_bytes()
        except OSError as e:
            line = lines.get(loc)
            raise RecipeError(f"{path}{f':{line}' if line else ''}: {'.'.join(map(str, loc))}: "
                              f"cannot read {name!r}: {e.strerror}",
                              hint="paths are relative to the recipe file") from None
    return inputs

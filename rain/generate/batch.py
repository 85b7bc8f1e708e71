"""Batch files: many recipes, and matrices over recipe fields, built together.

    defaults:                 # --set overrides applied to every build
      formats: [tar.zst]
    recipes:                  # paths relative to the batch file
      - debian-bookworm-minimal.yaml
      - path: hpc-compute.yaml
        set: {formats: [qcow2]}
    matrix:
      - recipe: debian-minimal.yaml
        axes:                 # every combination becomes one build
          vars.release: [bookworm, trixie]
          os.arch: [amd64]

The whole batch is loaded and validated before anything is built.
"""

from __future__ import annotations

import dataclasses
import itertools
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from rain.config import Settings
from rain.errors import RainError, RecipeError
from rain.generate.build import BuildOptions, BuildResult, generate, needs_repository
from rain.generate.loader import LoadedRecipe, load_recipe
from rain.host import command
from rain.progress import Reporter
from rain.repository.base import Repository


class _Entry(BaseModel):
    model_config = ConfigDict(extra="forbid")
    path: str
    set: dict[str, Any] = Field(default_factory=dict)


class _Matrix(BaseModel):
    model_config = ConfigDict(extra="forbid")
    recipe: str
    axes: dict[str, list[Any]]
    set: dict[str, Any] = Field(default_factory=dict)


class BatchFile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    defaults: dict[str, Any] = Field(default_factory=dict)
    recipes: list[str | _Entry] = Field(default_factory=list)
    matrix: list[_Matrix] = Field(default_factory=list)


@dataclass(frozen=True)
class BatchItem:
    label: str
    loaded: LoadedRecipe


@dataclass
class Outcome:
    label: str
    name: str
    status: str  # built | cached | failed | skipped | would build | would reuse
    seconds: float = 0.0
    image_ids: dict[str, str] = field(default_factory=dict)
    error: str = ""
    result: BuildResult | None = None

    @property
    def base(self) -> str:
        """Where the build's base system came from: `made <key>` by this build, `shared <key>` from the base
        cache (made by another build of the batch, or earlier), or `clone of <image id>`."""
        facts = self.result.manifest.get("base", {}) if self.result is not None else {}
        if facts.get("clone_of"):
            return f"clone of {facts['clone_of']}"
        if not facts.get("base_key"):
            return ""
        return ("shared " if facts.get("base_cached") else "made ") + str(facts["base_key"])


def load_batch(path: Path | str, extra_sets: dict[str, Any] | None = None) -> list[BatchItem]:
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
        batch = BatchFile.model_validate(data or {})
    except OSError as e:
        raise RecipeError(f"cannot read batch file {path}: {e.strerror}", hint="check the path") from e
    except yaml.YAMLError as e:
        raise RecipeError(f"{path}: not valid YAML: {e}", hint="check indentation and quoting") from e
    except ValidationError as e:
        err = e.errors()[0]
        where = ".".join(str(p) for p in err["loc"]) or "the whole file"
        raise RecipeError(f"{path}: {where}: {err['msg']}",
                          hint="a batch file has defaults, recipes and matrix; see docs/build.md") from None
    here = path.parent
    planned: list[tuple[str, Path, dict[str, Any]]] = []
    for entry in batch.recipes:
        ent = _Entry(path=entry) if isinstance(entry, str) else entry
        label = ent.path + ("[" + ",".join(f"{k}={v}" for k, v in ent.set.items()) + "]" if ent.set else "")
        planned.append((label, here / ent.path, {**batch.defaults, **ent.set, **(extra_sets or {})}))
    for m in batch.matrix:
        keys = list(m.axes)
        for combo in itertools.product(*(m.axes[k] for k in keys)):
            axis = dict(zip(keys, combo, strict=True))
            label = f"{m.recipe}[" + ",".join(f"{k.split('.')[-1]}={v}" for k, v in axis.items()) + "]"
            planned.append((label, here / m.recipe, {**batch.defaults, **m.set, **axis, **(extra_sets or {})}))
    if not planned:
        raise RecipeError(f"{path}: the batch lists no recipes", hint="add `recipes:` or `matrix:`")
    seen: dict[str, int] = {}
    for i, (label, recipe_path, sets) in enumerate(planned):  # the same entry twice still gets two rows
        seen[label] = seen.get(label, 0) + 1
        if seen[label] > 1:
            planned[i] = (f"{label}#{seen[label]}", recipe_path, sets)
    items = []
    for label, recipe_path, sets in planned:
        try:
            items.append(BatchItem(label, load_recipe(recipe_path, sets)))
        except RecipeError as e:
            raise RecipeError(f"batch entry {label}: {e.message}", hint=e.hint) from None
    _unique_names(items)
    return items


def _unique_names(items: list[BatchItem]) -> None:
    seen: dict[tuple[str, str], str] = {}
    for it in items:
        r = it.loaded.recipe
        key = (r.image_name(), r.os.release + r.os.arch + ",".join(r.formats))
        if key in seen:
            raise RecipeError(f"batch entries {seen[key]} and {it.label} build the same image {r.image_name()!r}",
                              hint="put a matrix variable into `name:`, e.g. name: hpc-{{ release }}")
        seen[key] = it.label


def run_batch(items: list[BatchItem], settings: Settings, options: BuildOptions, reporter: Reporter,
              jobs: int = 1, keep_going: bool = False, dry_run: bool = False,
              repo_factory: Callable[[], Repository] | None = None) -> list[Outcome]:
    from rain.generate.build import prepare
    from rain.generate.cache import Cache

    cache = Cache.for_data(settings.data_path)
    needs_repo = any(needs_repository(i.loaded.recipe, options) for i in items)
    repo = repo_factory() if repo_factory and needs_repo else None
    plans = [prepare(it.loaded, settings, options, repo) for it in items]  # validate all first
    if dry_run:
        return [Outcome(it.label, it.loaded.recipe.name,
                        "would reuse" if options.use_cache and cache.result(p.result_key) else "would build")
                for it, p in zip(items, plans, strict=True)]
    outcomes = {it.label: Outcome(it.label, it.loaded.recipe.name, "skipped") for it in items}

    def one(it: BatchItem) -> Outcome:
        t0 = time.monotonic()
        own_repo = repo_factory() if repo_factory and needs_repository(it.loaded.recipe, options) else None
        own = options
        if options.output is not None:  # each build's files in their own directory: manifest.json per build
            own = dataclasses.replace(options, output=options.output / it.loaded.recipe.image_name())
        res = generate(it.loaded, settings, own, reporter.child(it.loaded.recipe.name), own_repo)
        return Outcome(it.label, it.loaded.recipe.name, "cached" if res.cached else "built",
                       round(time.monotonic() - t0, 1), res.image_ids, result=res)

    pending = list(items)
    running: dict[Future[Outcome], BatchItem] = {}
    failed = False
    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        try:
            while pending or running:
                while pending and len(running) < max(1, jobs) and not (failed and not keep_going):
                    it = pending.pop(0)
                    running[pool.submit(one, it)] = it
                if not running:
                    break
                done, _ = wait(running, return_when=FIRST_COMPLETED)
                for fut in done:
                    it = running.pop(fut)
                    try:
                        outcomes[it.label] = fut.result()
                    except RainError as e:
                        failed = True
                        outcomes[it.label] = Outcome(it.label, it.loaded.recipe.name, "failed", error=e.one_line())
        except KeyboardInterrupt:
            command.cancel_all()
            pool.shutdown(wait=True, cancel_futures=True)
            command.reset_cancel()
            raise
    return [outcomes[it.label] for it in items]

"""The manifest: exactly what went into an image and how it was made.

It is written beside the artifacts as manifest.json and uploaded with each
artifact as its provenance (`fg-image show` prints it).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import rain
from rain.generate.artifact import ArtifactFile
from rain.generate.bootstrap.base import Package
from rain.generate.recipe import Recipe
from rain.host.files import replace_file
from rain.progress import Timing


def build_manifest(*, recipe: Recipe, recipe_text: str, recipe_hash: str, mirror: str, builder: str,
                   packages: list[Package], artifacts: list[ArtifactFile], timings: list[Timing],
                   facts: dict[str, Any]) -> dict[str, Any]:
    return {
        "schema": 1,
        "name": recipe.name,
        "rain_version": rain.__version__,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "os": recipe.os.model_dump(mode="json"),
        "variant": str(recipe.variant),
        "mirror": mirror,
        "repositories": [r.url for r in recipe.repositories],
        "builder": builder,
        "recipe": recipe.model_dump(mode="json"),
        "recipe_text": recipe_text,
        "recipe_hash": recipe_hash,
        "packages": [_package(p, facts.get("archives")) for p in packages],
        "artifacts": [{"format": str(a.format), "file": a.path.name, "size": a.size, "sha256": a.sha256,
                       **({} if a.bootable is None else {"bootable": a.bootable})} for a in artifacts],
        "timings": [{"step": t.step, "seconds": t.seconds} for t in timings],
        "total_seconds": round(sum(t.seconds for t in timings), 3),
        "base": {k: v for k, v in facts.items() if k.startswith(("base", "clone"))},
        "source_date_epoch": facts.get("source_date_epoch"),
        "disk_seed": facts.get("disk_seed"),
    }


def _package(p: Package, archives: object) -> dict[str, str]:
    """A package as the manifest (and a lock file) gives it: with the license it states and the archive
    (apt's suite/component) its version came from, where known."""
    archive = archives.get(p.name) if isinstance(archives, dict) else None
    return {"name": p.name, "version": p.version, "arch": p.arch,
            **({} if p.license is None else {"license": p.license}),
            **({"archive": archive} if isinstance(archive, str) else {})}


def write_manifest(manifest: dict[str, Any], directory: Path) -> Path:
    return replace_file(directory / "manifest.json", (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode())


def read_manifest(directory: Path) -> dict[str, Any]:
    return json.loads((directory / "manifest.json").read_text())

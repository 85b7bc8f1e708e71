"""An image's SBOM: an SPDX 2.3 JSON document of the packages in it, written from its manifest.

Everything in the document comes from what the generate stage recorded and
the repository keeps unchanged: the manifest (the image's provenance: the
recipe's name, every installed package with its version, architecture and
license as the package states it, the source date epoch, Rain's version)
and the image file's sha256 and format. So the document is the same bytes
whether `generate --output` writes it beside the file, `fg-image sbom`
prints it from the local repository or the service serves it, and a copy
pulled to another repository gives it too; its sha256 names it, and a
registration records the sha256 of the SBOM its copy derives from.

The image is one package (its file's sha256 among its checksums) that
CONTAINS each installed package; each has a purl (pkg:deb or pkg:rpm) and its
declared license as an SPDX expression (rain.image.licenses), or
NOASSERTION where the package's metadata states none. Nothing about the
build host or the wall clock is in it: `created` is the source date epoch.
"""

from __future__ import annotations

import hashlib
import json
import re
import uuid
from datetime import UTC, datetime
from typing import Any, TypeGuard
from urllib.parse import quote

from rain.errors import NotFound
from rain.image.licenses import spdx_expression

MEDIA_TYPE = "application/spdx+json"
_NAMESPACE = uuid.UUID("8f0d4a36-5c1e-4b7a-9d63-2a4f0c9e1b57")  # Rain's, for the documents' namespace URNs
_DEB_FAMILIES = {"debian", "ubuntu"}


def has_sbom(provenance: dict[str, Any] | None) -> TypeGuard[dict[str, Any]]:
    """Whether an image's provenance is a generate manifest, which an SBOM is written from."""
    return provenance is not None and isinstance(provenance.get("packages"), list) and "recipe_hash" in provenance


def document(provenance: dict[str, Any] | None, sha256: str | None, fmt: str) -> bytes | None:
    """The SBOM of a stored image (its provenance, sha256 and record's format), None if no build of Rain's made
    it. Its format is the one the build wrote the file in: a later `modify --format` of the record does not
    change the document."""
    if not has_sbom(provenance) or not sha256:
        return None
    listed = [a for a in provenance.get("artifacts") or [] if isinstance(a, dict) and a.get("sha256") == sha256]
    return render(provenance, sha256, str(listed[0].get("format") or fmt) if listed else fmt)


def sbom_for(image_id: str, provenance: dict[str, Any] | None, sha256: str | None, fmt: str) -> bytes:
    """document(), or NotFound (one line) for an image no build of Rain's made."""
    found = document(provenance, sha256, fmt)
    if found is None:
        raise NotFound(f"image {image_id} has no SBOM: it was not built by `fg-image generate`",
                       hint="an SBOM is written from a generate build's package list; `fg-image show ID` says "
                            "where the image came from")
    return found


def digest_of(provenance: dict[str, Any] | None, sha256: str | None, fmt: str) -> str | None:
    """The sha256 that names a stored image's SBOM (shown by `show`, recorded by a registration), if it has one."""
    found = document(provenance, sha256, fmt)
    return None if found is None else digest(found)


def render(manifest: dict[str, Any], sha256: str, fmt: str) -> bytes:
    """The SPDX 2.3 JSON of the image file `sha256` (in format `fmt`) that `manifest` describes."""
    name = f"{manifest.get('name') or 'image'}.{fmt}"
    refs: dict[str, str] = {}
    packages = [_image_package(manifest, name, sha256)]
    relationships = [{"spdxElementId": "SPDXRef-DOCUMENT", "relationshipType": "DESCRIBES",
                      "relatedSpdxElement": "SPDXRef-Image"}]
    family = str((manifest.get("os") or {}).get("family") or "")
    release = str((manifest.get("os") or {}).get("release") or "")
    for i, p in enumerate(manifest.get("packages") or []):
        spdx_id = f"SPDXRef-Package-{i}-{_id_part(str(p.get('name', '')))}"
        license_name = p.get("license")
        declared = "NOASSERTION"
        if isinstance(license_name, str) and license_name.strip():
            declared, used = spdx_expression(license_name.strip())
            refs.update(used)
        packages.append({
            "SPDXID": spdx_id, "name": str(p.get("name", "")), "versionInfo": str(p.get("version", "")),
            "downloadLocation": "NOASSERTION", "filesAnalyzed": False, "licenseConcluded": "NOASSERTION",
            "licenseDeclared": declared, "copyrightText": "NOASSERTION",
            "externalRefs": [{"referenceCategory": "PACKAGE-MANAGER", "referenceType": "purl",
                              "referenceLocator": _purl(family, release, p)}],
        })
        relationships.append({"spdxElementId": "SPDXRef-Image", "relationshipType": "CONTAINS",
                              "relatedSpdxElement": spdx_id})
    document = {
        "spdxVersion": "SPDX-2.3", "dataLicense": "CC0-1.0", "SPDXID": "SPDXRef-DOCUMENT", "name": name,
        "documentNamespace": f"urn:uuid:{uuid.uuid5(_NAMESPACE, sha256)}",
        "creationInfo": {"created": _created(manifest), "creators": [f"Tool: rain-{manifest.get('rain_version', '')}"]},
        "packages": packages, "relationships": relationships,
    }
    if refs:
        document["hasExtractedLicensingInfos"] = [
            {"licenseId": ref, "name": text, "extractedText": f"The license a package's metadata names {text!r}; "
                                                              "its text is in the package's copyright file."}
            for ref, text in sorted(refs.items())]
    return (json.dumps(document, indent=2, sort_keys=True) + "\n").encode()


def digest(document: bytes) -> str:
    return hashlib.sha256(document).hexdigest()


def _image_package(manifest: dict[str, Any], name: str, sha256: str) -> dict[str, Any]:
    os_info = manifest.get("os") or {}
    return {"SPDXID": "SPDXRef-Image", "name": name, "versionInfo": str(manifest.get("recipe_hash", ""))[:12],
            "primaryPackagePurpose": "OPERATING-SYSTEM", "downloadLocation": "NOASSERTION", "filesAnalyzed": False,
            "checksums": [{"algorithm": "SHA256", "checksumValue": sha256}], "licenseConcluded": "NOASSERTION",
            "licenseDeclared": "NOASSERTION", "copyrightText": "NOASSERTION",
            "comment": f"built by Rain from recipe {manifest.get('name', '')} ({os_info.get('family', '')} "
                       f"{os_info.get('release', '')} {os_info.get('arch', '')}), recipe hash "
                       f"{manifest.get('recipe_hash', '')}"}


def _created(manifest: dict[str, Any]) -> str:
    epoch = manifest.get("source_date_epoch")
    if isinstance(epoch, int) and epoch >= 0:
        when = datetime.fromtimestamp(epoch, UTC)
    else:  # a build that had no archive date: when the manifest was written
        try:
            when = datetime.fromisoformat(str(manifest.get("created"))).astimezone(UTC)
        except ValueError:
            when = datetime.fromtimestamp(0, UTC)
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


def _id_part(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9.]+", "-", name).strip("-")[:100] or "unnamed"


def _purl(family: str, release: str, package: dict[str, Any]) -> str:
    name, version, arch = (quote(str(package.get(k, "")), safe="") for k in ("name", "version", "arch"))
    if family in _DEB_FAMILIES:
        return f"pkg:deb/{family}/{name}@{version}?arch={arch}&distro={quote(f'{family}-{release}', safe='')}"
    return f"pkg:rpm/{quote(family, safe='') or 'rpm'}/{name}@{version}?arch={arch}"

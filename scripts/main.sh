#!/usr/bin/env bash
# The main job on the embedded default repository: install everything, build the
# minimal Debian recipe, store it, and register it.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"
bash scripts/setup.sh
fg="${RAIN_VENV:-$here/.venv}/bin/fg-image"
recipe="${1:-recipes/debian-bookworm-minimal.yaml}"

echo "== generate $recipe"
image=$("$fg" generate "$recipe")
echo "image: $image"
"$fg" show "$image"
if "$fg" register --help >/dev/null 2>&1; then
  echo "== register $image on hpc (with a boot test under QEMU)"
  "$fg" register "$image" --target hpc --boot-test
  "$fg" show "$image"
fi

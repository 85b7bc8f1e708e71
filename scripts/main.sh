#!/usr/bin/env bash
# The main job, on the embedded default repository: install everything, build the
# bootable minimal Debian recipe, store it in the repository, vet it and register
# it on bare metal (the strictest policy), booting the result under QEMU first.
# Then the cloud path: build the cloud recipe (a GPT disk that boots by BIOS and
# UEFI, with cloud-init), store it, and for OpenStack, OpenNebula and EC2 adapt,
# vet and pack a copy, boot it the way that cloud would (its metadata handed over
# its own way, its disk bus, an SSH login with the key it handed over) and write
# the disk a site would receive (--output: no cloud service runs on this machine).
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"
bash scripts/setup.sh
fg="${RAIN_VENV:-$here/.venv}/bin/fg-image"
recipe="${1:-recipes/debian-bookworm-kernel.yaml}"

# A bare-metal site on this machine, unless one is configured: published netboot
# files go under the data directory (what a site's TFTP/HTTP server would serve).
data=$("$fg" config show --json | python3 -c 'import json,sys; print({s["name"]: s["value"] for s in json.load(sys.stdin)["settings"]}["data_dir"])')
targets="${RAIN_TARGETS_FILE:-$data/targets.yaml}"
if [ ! -f "$targets" ] && [ ! -f "${XDG_CONFIG_HOME:-$HOME/.config}/rain/targets.yaml" ]; then
  mkdir -p "$data/provision"
  cat > "$targets" <<YAML
hpc:
  default:
    provision_dir: $data/provision
    http_url: http://127.0.0.1:8080/rain
YAML
  echo "main: wrote a local bare-metal site to $targets"
fi

echo "== generate $recipe"
image=$("$fg" generate "$recipe" --format tar.zst)
echo "== stored as image $image"
echo "== register $image on hpc (vet, adapt, pack, boot test under QEMU, publish)"
"$fg" register "$image" --target hpc --boot-test
"$fg" show "$image"

cloud_recipe=recipes/debian-bookworm-cloud.yaml
echo "== generate $cloud_recipe"
cloud=$("$fg" generate "$cloud_recipe")
echo "== stored as image $cloud"
out="$data/exports"
mkdir -p "$out"
for target in openstack opennebula ec2; do
  ext=qcow2; [ "$target" = ec2 ] && ext=raw
  echo "== register $cloud for $target: vet, adapt, pack, boot test as $target boots it, write $out/$target.$ext"
  "$fg" register "$cloud" --target "$target" --boot-test --output "$out/$target.$ext" --force
done
"$fg" show "$cloud"
ls -l "$out"

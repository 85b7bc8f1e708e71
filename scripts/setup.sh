#!/usr/bin/env bash
# Installs everything Rain needs on a fresh Debian machine: the system tools
# builds use and a virtualenv with Rain, its test tools and the embedded
# MongoDB-wire server (SecantusDB, run as a separate process). Idempotent.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
venv="${RAIN_VENV:-$here/.venv}"

apt_packages=(mmdebstrap debootstrap qemu-utils qemu-system-x86 squashfs-tools zstd
              ipxe-qemu  # the NIC ROMs hpc launch's diskless nodes netboot with (PXE, then iPXE over HTTP)
              e2fsprogs fdisk busybox-static rpm createrepo-c dnf
              openssh-server openssh-client  # sshd: the cloud builder simulators' VMs are real SSH endpoints
              libcap2-bin  # setcap/getcap: tests check that file capabilities survive every copy
              time  # GNU time: the repository tests measure fg-image's peak memory with it
              xorriso ovmf  # boot tests: seed CDs (config drive, NoCloud, CONTEXT) and UEFI firmware
              mtools dosfstools grub-pc-bin grub-efi-amd64-bin  # bootable disks: ESP and GRUB for BIOS+UEFI
              chromium)  # the web tests' browser, driven by Playwright (tests/support/browser.py)
missing=()
for p in "${apt_packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing system packages: ${missing[*]}"
  sudo_cmd=(); [ "$(id -u)" -eq 0 ] || sudo_cmd=(sudo)
  "${sudo_cmd[@]}" apt-get update -q
  DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
fi
stamp="$venv/.rain-installed"
if [ ! -f "$stamp" ] || [ "$here/pyproject.toml" -nt "$stamp" ]; then
  echo "setup: installing Rain into $venv"
  # Playwright uses the system chromium above; never let it fetch a browser of its own.
  PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 "$venv/bin/pip" install -q --disable-pip-version-check -e "$here[embedded,test]"
  touch "$stamp"
fi

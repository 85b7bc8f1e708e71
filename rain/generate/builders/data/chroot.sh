#!/bin/sh
# rain: make an image root ready for `chroot ROOT argv...` (enter), and undo it (leave).
#
#   chroot.sh enter ROOT STATE DEBIAN     DEBIAN=1: keep services from starting, dpkg without fsync
#   chroot.sh leave ROOT STATE
#
# Every builder runs this same script: the local builder on this host, VM
# builders on their machine. Only Rain calls it, with its own paths; nothing
# from a recipe reaches it. STATE is a file outside the image recording what
# `enter` added, so `leave` removes just that.
set -eu
op="$1"; r="$2"; state="$3"
fail() { echo "rain-chroot: $*" >&2; exit 3; }
plain_dir() { [ -d "$1" ] && [ ! -L "$1" ]; }

case "$op" in
enter)
  debian="$4"
  : > "$state"
  for d in proc sys dev; do
    [ -L "$r/$d" ] && fail "the image's /$d is a symlink (the base image is broken)"
    mkdir -p "$r/$d"
  done
  mount -t proc proc "$r/proc"; echo "mount proc" >> "$state"
  mount -t sysfs -o ro sysfs "$r/sys"; echo "mount sys" >> "$state"
  mount -t tmpfs -o mode=755,nosuid rain-dev "$r/dev"; echo "mount dev" >> "$state"
  while read -r name major minor; do
    mknod -m 666 "$r/dev/$name" c "$major" "$minor"
  done <<NODES
null 1 3
zero 1 5
full 1 7
random 1 8
urandom 1 9
tty 5 0
NODES
  ln -s /proc/self/fd "$r/dev/fd"
  ln -s /proc/self/fd/0 "$r/dev/stdin"
  ln -s /proc/self/fd/1 "$r/dev/stdout"
  ln -s /proc/self/fd/2 "$r/dev/stderr"
  ln -s pts/ptmx "$r/dev/ptmx"
  mkdir "$r/dev/pts"
  mkdir -m 1777 "$r/dev/shm"
  if [ "$debian" = 1 ]; then
    p="$r/usr/sbin/policy-rc.d"
    if plain_dir "$r/usr/sbin" && [ ! -e "$p" ] && [ ! -L "$p" ]; then
      printf '#!/bin/sh\n# written by rain for the build; removed afterwards\nexit 101\n' > "$p"
      chmod 755 "$p"; echo "file usr/sbin/policy-rc.d" >> "$state"
    fi
    c="$r/etc/dpkg/dpkg.cfg.d/rain-unsafe-io"
    if plain_dir "$r/etc/dpkg/dpkg.cfg.d" && [ ! -e "$c" ] && [ ! -L "$c" ]; then
      printf '# written by rain for the build; removed afterwards\nforce-unsafe-io\n' > "$c"
      echo "file etc/dpkg/dpkg.cfg.d/rain-unsafe-io" >> "$state"
    fi
  fi
  if plain_dir "$r/etc"; then  # lend the builder's resolver for the build
    if [ -e "$r/etc/resolv.conf" ] || [ -L "$r/etc/resolv.conf" ]; then
      mv "$r/etc/resolv.conf" "$r/etc/.rain-resolv.conf.orig"; echo "resolv saved" >> "$state"
    else
      echo "resolv new" >> "$state"
    fi
    cat /etc/resolv.conf > "$r/etc/resolv.conf" 2>/dev/null || : > "$r/etc/resolv.conf"
  fi
  ;;
leave)
  [ -f "$state" ] || exit 0
  failed=""
  for d in dev sys proc; do
    if grep -qx "mount $d" "$state" && mountpoint -q "$r/$d"; then
      umount "$r/$d" 2>/dev/null || umount -l "$r/$d" || failed="$failed /$d"
    fi
  done
  grep '^file ' "$state" | while read -r _ f; do rm -f "$r/$f"; done
  if grep -qx "resolv saved" "$state"; then
    rm -f "$r/etc/resolv.conf"; mv "$r/etc/.rain-resolv.conf.orig" "$r/etc/resolv.conf"
  elif grep -qx "resolv new" "$state"; then
    rm -f "$r/etc/resolv.conf"
  fi
  rm -f "$state"
  [ -z "$failed" ] || fail "could not unmount$failed"
  ;;
*)
  fail "unknown operation $op"
  ;;
esac

"""SSHBuilder: a build on a builder machine (QEMU VM, OpenNebula VM, OpenStack server) over SSH.

A Provider launches the machine (machine.py); this module does everything
else over paramiko, the same for every provider:

- the host key is pinned: Rain made the machine's host key itself and refuses
  any server presenting another;
- every command is an argv list: it is written NUL-separated to a file on
  the machine and started by a fixed perl one-liner with `exec {$a[0]} @a`,
  so no value (package name, recipe path, run step) ever passes through a
  shell there either;
- the image root lives in a private work directory on the machine; commands
  inside the image run as `chroot ROOT argv...` after data/chroot.sh (the same
  script the local builder runs) has mounted /proc, /sys and /dev;
- `push` and `fetch` move image trees as tar streams: over SSH zstd-compressed
  (`tar -I`: no shell), or, for a VM on this host, as plain tar on its transfer
  disks (machine.DiskChannel), which under emulation is far faster than SSH's
  cipher; `fetch` unpacks what comes back with the same member-by-member checks
  as a cloned base image (no '..', no absolute names, no device nodes, no links
  out of the root); both ways the stream carries extended attributes (file
  capabilities such as ping's cap_net_raw);
- `attach_base`, for a VM on this host: the cached base system's squashfs image
  on the VM's base disk becomes the read-only lower layer of an overlay at the
  image root, so the base is never unpacked there, and `fetch` brings back only
  the upper layer, which the safe unpacker lays over the same base here
  (whiteouts and opaque directories become removals);
- `stop` releases the machine (VM deleted), unless the build failed with
  `--on-error keep`, which leaves it running and says how to reach it.
"""

from __future__ import annotations

import io
import logging
import os
import select
import shlex
import subprocess
import threading
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import paramiko
import zstandard

from rain.errors import BuildError, Interrupted, RainError, Unreachable
from rain.generate.builders.base import BuildSpec, Handle
from rain.generate.builders.local import chroot_script
from rain.generate.builders.machine import DiskChannel, Machine, Provider
from rain.host import command
from rain.host.command import Result
from rain.host.ssh import MachineKeys, client_pkey
from rain.image.formats import TAR_OPTS

log = logging.getLogger(__name__)
# Reads a 10-digit length and that many bytes of NUL-terminated arguments from stdin (sysread: not a
# byte more), then execs them without a shell; the rest of stdin is the command's own.
_RUNNER = ('my ($h, $b) = ("", ""); while (length($h) < 10) { sysread(STDIN, $h, 10 - length($h), length($h)) '
           'or die "rain: no argv\\n" } my $n = int($h); while (length($b) < $n) { sysread(STDIN, $b, '
           '$n - length($b), length($b)) or die "rain: short argv\\n" } my @a = split(/\\0/, $b, -1); pop @a; '
           'exec { $a[0] } @a or die "rain: cannot run $a[0]: $!\\n"')
_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
_CHUNK = 1 << 20
WIRE_ZSTD = "zstd -1 -T0"
"""Image trees cross the SSH link zstd-compressed (about a third of the bytes): SSH's cipher is the slow
part on a VM without KVM, where zstd -1 costs the guest less than encrypting the bytes it saves."""


@dataclass
class Session:
    machine: Machine
    ssh: paramiko.SSHClient
    workspace: str
    released: bool = False
    base_mounted: bool = False
    """attach_base's overlay (and the base image under it) is mounted in the workspace."""


def connect(machine: Machine, timeout: float = 30) -> paramiko.SSHClient:
    """An SSH connection that accepts only the machine's pinned host key."""
    client = paramiko.SSHClient()
    pinned = paramiko.Ed25519Key(data=machine.keys.host.public_blob)
    name = machine.host if machine.port == 22 else f"[{machine.host}]:{machine.port}"
    client.get_host_keys().add(name, pinned.get_name(), pinned)
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    pkey = client_pkey(machine.keys.client)
    try:
        client.connect(machine.host, machine.port, username=machine.user, pkey=pkey, look_for_keys=False,
                       allow_agent=False, timeout=timeout, banner_timeout=timeout, auth_timeout=timeout)
    except paramiko.BadHostKeyException:
        client.close()
        raise BuildError(f"builder {machine.name} presented an SSH host key other than the one Rain gave it",
                         hint="something else answers on that address; the build was stopped") from None
    except (OSError, paramiko.SSHException) as e:
        client.close()
        raise Unreachable(f"cannot reach builder {machine.name} over SSH at {machine.host}:{machine.port}: {e}",
                          hint="see the machine's console log") from None
    transport = client.get_transport()
    assert transport is not None
    transport.set_keepalive(15)
    return client


_slots: dict[str, threading.BoundedSemaphore] = {}
_slots_lock = threading.Lock()


def _slot(provider: Provider) -> threading.BoundedSemaphore:
    """The pool: at most provider.limit machines of one provider at once in this process."""
    with _slots_lock:
        if provider.name not in _slots:
            _slots[provider.name] = threading.BoundedSemaphore(max(1, int(provider.limit)))
        return _slots[provider.name]


def _session(handle: Handle) -> Session:
    """The handle's session on its machine (start made it; a handle without one was never started)."""
    if handle.remote is None:
        raise RuntimeError(f"build {handle.spec.name} has no machine: start() did not finish")
    return handle.remote


class SSHBuilder:
    local = False

    def __init__(self, provider: Provider) -> None:
        self.provider = provider
        self.name: str = provider.name

    # -- lifecycle ----------------------------------------------------------

    def start(self, spec: BuildSpec) -> Handle:
        mdir = spec.workdir / "machine"
        mdir.mkdir(mode=0o700, parents=True, exist_ok=True)
        slot = _slot(self.provider)
        while not slot.acquire(timeout=0.5):  # wait for a free machine; Ctrl-C still gets through
            if command.cancelled():
                raise Interrupted("build cancelled", hint="the batch was interrupted")
        try:
            machine = self.provider.launch(spec.name, MachineKeys.generate(spec.name), mdir, spec.reporter)
        except BaseException:
            slot.release()
            raise
        handle = Handle(spec=spec, root=spec.workdir / "root")
        handle.root.mkdir(exist_ok=True)
        try:
            ssh = connect(machine)
            handle.remote = Session(machine, ssh, "")
            ws = self.outside(handle, ["mktemp", "-d", "/var/tmp/rain-build.XXXXXXXX"], what="mktemp").output
            handle.remote.workspace = handle.workspace = ws.strip().splitlines()[-1]
            handle.inner_root = f"{handle.remote.workspace}/root"
            self.outside(handle, ["mkdir", "-m", "0755", handle.inner_root], what="mkdir")
        except BaseException:
            if handle.remote is not None:
                handle.remote.ssh.close()
            machine.release()
            slot.release()
            raise
        if machine.console_log:
            log.info("builder %s: console log %s", machine.name, machine.console_log)
        return handle

    def stop(self, handle: Handle, failed: bool = False) -> str | None:
        """Undo the chroot set-up and release the machine; with failed + on_error_keep, keep it.

        Returns the 'how to reach it' line of a kept machine."""
        s: Session | None = handle.remote
        if s is None or s.released:
            return None
        keep = failed and handle.spec.on_error_keep and s.machine.keep is not None
        try:
            handle.undo.close()  # leave the chroot (unmount) while the machine is still there
            if s.base_mounted and not keep:  # a failed build's overlay is still mounted in the workspace
                self._exec(handle, ["sh", "-c", _UNMOUNT_FAILED, "sh", s.workspace, handle.inner_root], check=False,
                           cleanup=True, what="umount")
            if s.workspace and not keep:  # a machine may outlive the build (a reused cloud VM)
                self._exec(handle, ["rm", "-rf", "--one-file-system", "--", s.workspace], what="rm", cleanup=True)
        except RainError as e:
            log.warning("builder %s: %s", s.machine.name, e.message)
        handle.entered = False
        s.released = True
        s.ssh.close()
        try:
            if keep:
                assert s.machine.keep is not None
                return s.machine.keep()
            s.machine.release()
        finally:
            _slot(self.provider).release()
        return None

    # -- commands -------------------------------------------------------------

    def outside(self, handle: Handle, argv: Sequence[str], env: Mapping[str, str] | None = None,
                what: str | None = None, check: bool = True, cleanup: bool = False) -> Result:
        return self._exec(handle, argv, env=env, what=what or argv[0], check=check, cleanup=cleanup)

    def run(self, handle: Handle, argv: Sequence[str], env: Mapping[str, str] | None = None,
            what: str | None = None) -> Result:
        self._enter(handle)
        full_env = {"DEBIAN_FRONTEND": "noninteractive", "DEBCONF_NONINTERACTIVE_SEEN": "true", **handle.env,
                    **(env or {})}
        return self._exec(handle, ["chroot", handle.inner_root, *argv], env=full_env, what=what or argv[0])

    def put(self, handle: Handle, data: bytes, path: str, mode: str = "0644",
            owner: str = "root", group: str = "root") -> None:
        """Bytes through stdin to `install` running inside the image, so links resolve there."""
        self._enter(handle)
        self._exec(handle, ["chroot", handle.inner_root, "install", "-D", "-m", mode, "-o", owner, "-g", group,
                            "/dev/stdin", path], stdin=io.BytesIO(data), what=f"placing {path}")

    def get(self, handle: Handle, path: str) -> bytes:
        self._enter(handle)
        out = io.BytesIO()
        self._exec(handle, ["chroot", handle.inner_root, "cat", "--", path], stdout=out, what=f"reading {path}")
        return out.getvalue()

    def exists(self, handle: Handle, path: str) -> bool:
        self._enter(handle)
        r = self._exec(handle, ["chroot", handle.inner_root, "stat", "--", path], check=False, what="stat")
        return r.returncode == 0

    def push(self, handle: Handle, source: Path | None = None, dest: str | None = None) -> None:
        """The tree at `source` (default handle.root) on this host → the image root on the machine (or `dest`
        there): through the machine's transfer disk when it has one, else a zstd-compressed tar stream over SSH."""
        src = source or handle.root
        into = dest or handle.inner_root
        if dest is not None:
            self.outside(handle, ["mkdir", "-p", "--", dest], what="mkdir")
        disks = _session(handle).machine.disks
        what = f"sending {src.name if dest else 'the base image'} to the builder"
        with _tar_of(src, compress=disks is None) as stream:
            if disks is None:
                self._exec(handle, ["tar", "-C", into, *TAR_OPTS, "--zstd", "-xpf", "-"], stdin=stream, what=what)
                return
            n = _fill(disks.inbound, stream, disks.size)
            if n is None:
                raise BuildError(f"the tree at {src} is larger than the builder's transfer disk "
                                 f"({disks.size >> 30} GiB)", hint="raise qemu.disk_gib in the builders file")
        self._exec(handle, ["sh", "-c", _READ_DISK, "sh", disks.inbound_device, str(n),
                            "-C", into, *TAR_OPTS, "-xpf", "-"], what=what)

    def attach_base(self, handle: Handle, image: Callable[[], Path]) -> bool:
        """Make the cached base system the image root's read-only lower layer on the machine: `image()` (its
        squashfs file here) goes onto the machine's base disk, which it mounts under an overlay at the image
        root. False when the machine has no base disk (a cloud VM): push the tree instead."""
        disks = _session(handle).machine.disks
        if disks is None or disks.base is None or handle.upper:
            return False
        path = image()
        size = path.stat().st_size
        if size > disks.size:
            raise BuildError(f"the read-only image {path} is larger than the builder's base disk "
                             f"({disks.size >> 30} GiB)", hint="raise qemu.disk_gib in the builders file")
        with open(path, "rb") as src:
            _fill(disks.base, src, disks.size)
        upper = f"{handle.workspace}/upper"
        s = _session(handle)
        s.base_mounted = True  # set first: a mount that half worked is undone by stop all the same
        self._exec(handle, ["sh", "-c", _MOUNT_BASE, "sh", disks.base_device, handle.workspace, handle.inner_root],
                   what="mounting the base system on the builder")
        handle.upper = upper
        return True

    def fetch(self, handle: Handle) -> None:
        """The finished image root on the machine → handle.root, unpacked with the safe unpacker (the
        stream is zstd-compressed on the machine; its decompressed size is bounded by the unpacker). Over
        an attached base only the overlay's upper layer comes, laid over the same base here."""
        from rain.generate.bootstrap.clone import safe_extract

        self.leave(handle)
        s = _session(handle)
        if s.machine.disks is not None:
            self._fetch_by_disk(handle, s.machine.disks)
            return
        chan = self._open(s, ["tar", "-C", handle.inner_root, *TAR_OPTS, "--one-file-system", "-I", WIRE_ZSTD,
                              "-cf", "-", "."], env=None)
        try:
            with chan.makefile("rb") as wire, zstandard.ZstdDecompressor().stream_reader(
                    wire, read_across_frames=True) as stream:
                safe_extract(stream, handle.root, what="the built image")  # type: ignore[arg-type]
            status = chan.recv_exit_status()
            err = b""
            while chan.recv_stderr_ready():
                err += chan.recv_stderr(_CHUNK)
        except zstandard.ZstdError as e:
            raise BuildError(f"the image stream from {s.machine.name} is damaged: {e}",
                             hint="see the build log") from None
        finally:
            chan.close()
        if status != 0:
            raise BuildError(f"streaming the image back from {s.machine.name} failed (exit {status}): "
                             f"{err.decode(errors='replace').strip()[-200:]}", hint="see the build log")

    def _fetch_by_disk(self, handle: Handle, disks: DiskChannel) -> None:
        """tar on the machine writes the root to its outbound disk; this host unpacks that file (the machine's
        bytes, untrusted: the safe unpacker; at most disks.size of them, the disk's size)."""
        from rain.generate.bootstrap.clone import safe_extract

        tree = handle.inner_root
        if handle.upper:  # the layer alone, read once nothing changes it any more
            self._exec(handle, ["sh", "-c", _UNMOUNT_BASE, "sh", handle.workspace, handle.inner_root],
                       what="unmounting the base system on the builder")
            _session(handle).base_mounted = False
            tree = handle.upper
        self._exec(handle, ["sh", "-c", _WRITE_DISK, "sh", disks.outbound_device,
                            "-C", tree, *TAR_OPTS, "--one-file-system", "-cf", "-", "."],
                   what="writing the image to the transfer disk")
        with open(disks.outbound, "rb") as f:
            safe_extract(f, handle.root, what="the built image", layer=bool(handle.upper))

    def leave(self, handle: Handle) -> None:
        """Undo the chroot set-up (unmount) but keep the machine."""
        handle.undo.close()
        handle.entered = False

    # -- plumbing ---------------------------------------------------------------

    def _enter(self, handle: Handle) -> None:
        if handle.entered:
            return
        handle.entered = True
        state = f"{_session(handle).workspace}/chroot.state"
        handle.undo.callback(chroot_script, self.outside, handle, "leave", state)
        chroot_script(self.outside, handle, "enter", state, "1" if handle.spec.debian else "0")

    def _open(self, s: Session, argv: Sequence[str], env: Mapping[str, str] | None,
              cleanup: bool = False) -> paramiko.Channel:
        if command.cancelled() and not cleanup:
            raise Interrupted("build cancelled", hint="the batch was interrupted")
        full = ["env", f"PATH={_PATH}", "LC_ALL=C.UTF-8", "HOME=/root",
                *(f"{k}={v}" for k, v in (env or {}).items()), *[str(a) for a in argv]]
        if any("\x00" in a for a in full):
            raise BuildError("an argument contains a NUL byte", hint="remove it from the recipe")
        transport = s.ssh.get_transport()
        if transport is None or not transport.is_active():
            raise Unreachable(f"lost the SSH connection to builder {s.machine.name}",
                              hint="see the machine's console log")
        payload = b"".join(a.encode() + b"\0" for a in full)
        chan = transport.open_session()
        chan.exec_command(f"perl -e {shlex.quote(_RUNNER)}")
        chan.sendall(b"%010d" % len(payload) + payload)
        return chan

    def _exec(self, handle: Handle, argv: Sequence[str], env: Mapping[str, str] | None = None,
              stdin: IO[bytes] | None = None, stdout: IO[bytes] | None = None, what: str = "",
              check: bool = True, cleanup: bool = False) -> Result:
        s = _session(handle)
        chan = self._open(s, argv, env, cleanup)
        chan.set_combine_stderr(stdout is None)
        sender = None
        if stdin is not None:
            sender = threading.Thread(target=_send, args=(chan, stdin), daemon=True)
            sender.start()
        else:
            chan.shutdown_write()
        tail: deque[str] = deque(maxlen=40)
        partial = b""
        sink = open(handle.spec.log_file, "ab") if handle.spec.log_file else None

        def text(data: bytes) -> None:
            nonlocal partial
            if sink:
                sink.write(data)
            lines = (partial + data).split(b"\n")
            partial = lines.pop()
            tail.extend(ln.decode(errors="replace").rstrip() for ln in lines)

        try:
            while True:
                if command.cancelled() and not cleanup:
                    raise Interrupted("build cancelled", hint="the batch was interrupted")
                select.select([chan], [], [], 0.5)
                while chan.recv_ready():
                    data = chan.recv(_CHUNK)
                    stdout.write(data) if stdout is not None else text(data)
                while chan.recv_stderr_ready():
                    text(chan.recv_stderr(_CHUNK))
                # closed without EOF: the link went (machine stopped, sshd killed) and select would
                # answer at once, forever. The end is seen before the buffers are checked: once it is,
                # no more data can arrive, while data may arrive between a look at the buffers and it
                over = chan.closed or chan.exit_status_ready() and chan.eof_received
                if over and not chan.recv_ready() and not chan.recv_stderr_ready():
                    break
            status = chan.exit_status if chan.exit_status_ready() else -1
        except BaseException:
            chan.close()  # the machine is released by stop(); nothing of this command outlives it
            raise
        finally:
            if sink:
                sink.close()
        chan.close()
        if sender is not None:
            sender.join(timeout=5)
        if partial:
            tail.append(partial.decode(errors="replace").rstrip())
        result = Result(status, "\n".join(tail))
        if check and status == -1:  # paramiko's value when no exit-status came
            raise BuildError(f"{what or argv[0]} on builder {s.machine.name} ended without an exit status: "
                             "the machine stopped, its SSH link broke or a signal killed the command",
                             hint="see the machine's console log and the build log; run again")
        if check and status != 0:
            last = [ln for ln in tail if ln.strip()][-3:]
            raise BuildError(f"{what or argv[0]} failed on builder {s.machine.name} (exit {status}): "
                             + " | ".join(last), hint="run with --debug or see the build log")
        return result


_READ_DISK = 'dev=$1 n=$2; shift 2; blockdev --flushbufs "$dev" && head -c "$n" "$dev" | tar "$@"'
"""On the machine: drop what the kernel cached of the inbound disk (its partition probe at boot read zeros
there), then unpack exactly the n bytes this host wrote. Values arrive as arguments, never as shell text."""
_WRITE_DISK = 'dev=$1; shift; tar "$@" > "$dev" && blockdev --flushbufs "$dev"'
"""On the machine: the tar stream onto the outbound disk, flushed to QEMU before this host reads the file."""
_MOUNT_BASE = ('set -e; dev=$1 ws=$2 root=$3; modprobe -a squashfs overlay; blockdev --flushbufs "$dev"; '
               'mkdir -p "$ws/lower" "$ws/upper" "$ws/work"; mount -t squashfs -o ro "$dev" "$ws/lower"; '
               'mount -t overlay rain-root -o "lowerdir=$ws/lower,upperdir=$ws/upper,workdir=$ws/work,'
               'redirect_dir=off,index=off,metacopy=off,xino=off" "$root"')
"""On the machine: the base disk read-only under an overlay at the image root, whose upper directory gets all
the build changes. Redirects, the inode index and metadata-only copies are off, so the upper layer is a plain
tree with whiteouts and opaque directories only (what extract's layer mode reads)."""
_UNMOUNT_BASE = 'set -e; ws=$1 root=$2; umount "$root"; umount "$ws/lower"'
_UNMOUNT_FAILED = 'ws=$1 root=$2; umount -R "$root"; umount "$ws/lower"'
"""As _UNMOUNT_BASE after a failure, in one round trip: the chroot's mounts may still be under the root, and
each umount is tried whatever the other did."""


@contextmanager
def _tar_of(src: Path, compress: bool) -> Iterator[IO[bytes]]:
    """`tar -c` of the tree at src as a stream; leaving the block waits for tar and raises if it failed
    (unless the block itself raised: that error is the one that matters)."""
    producer = subprocess.Popen(["tar", "-C", str(src), *TAR_OPTS, *(["-I", WIRE_ZSTD] if compress else []),
                                 "-cf", "-", "."],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    assert producer.stdout is not None
    try:
        yield producer.stdout
    finally:
        producer.stdout.close()
        err = producer.communicate()[1]
    if producer.returncode != 0:
        raise BuildError(f"packing the base image failed: {err.decode(errors='replace').strip()[-200:]}",
                         hint="check free disk space")


def _fill(path: Path, stream: IO[bytes], limit: int) -> int | None:
    """Copy stream into the start of the (sparse, pre-sized) disk file at path; its length, or None when it
    would not fit in limit bytes. The file is not truncated: QEMU has it open at its size."""
    n = 0
    fd = os.open(path, os.O_WRONLY)
    try:
        while chunk := stream.read(_CHUNK):
            if n + len(chunk) > limit:
                return None
            os.pwrite(fd, chunk, n)
            n += len(chunk)
    finally:
        os.close(fd)
    return n


def _send(chan: paramiko.Channel, stdin: IO[bytes]) -> None:
    try:
        while True:
            chunk = stdin.read(_CHUNK)
            if not chunk:
                break
            chan.sendall(chunk)
    except (OSError, paramiko.SSHException):
        pass
    finally:
        try:
            chan.shutdown_write()
        except (OSError, paramiko.SSHException):
            pass


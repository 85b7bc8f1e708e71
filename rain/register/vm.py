"""Boot a cloud disk the way its cloud would, under QEMU on this host, until Rain logs in over SSH.

A boot test passes only when the image's own boot loader (SeaBIOS or OVMF),
kernel and contextualization bring up sshd and let in the key Rain handed
over through that cloud's metadata path: a seed CD (config drive, NoCloud,
OpenNebula CONTEXT) or the EC2 metadata service (rain.register.imds) reached
at 169.254.169.254 through QEMU's user network (guestfwd).

The published bytes are never written: QEMU runs on a qcow2 overlay in a
temporary directory (which may also be larger than the image, to show the root
file system grows). QEMU runs in its own session, is tracked by the reaper (so
it dies with Rain even on SIGKILL) and is always killed and waited for; the
serial console log is kept for the user. The guest's host keys are made by the
image at first boot, so they cannot be pinned: a boot test trusts whatever
answers on its own 127.0.0.1 forward, and logs in only with a key made for
this one boot.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import paramiko

from rain.errors import InvalidInput, TargetError, one_line
from rain.host import reaper
from rain.host.qemu import TCG_CPU
from rain.host.ssh import KeyPair, client_pkey, fingerprint
from rain.host.tools import run, tool
from rain.register import imds as imds_service
from rain.register.seeds import GUEST_MAC
from rain.waiting import Deadline, poll

OVMF_CODE = Path("/usr/share/OVMF/OVMF_CODE_4M.fd")
OVMF_VARS = Path("/usr/share/OVMF/OVMF_VARS_4M.fd")
FIRMWARES = ("bios", "uefi")
BUSES = ("virtio", "nvme")
FORMATS = ("raw", "qcow2")
ACCELS = ("tcg", "kvm")
GUEST_PROBE = ("findmnt -bno SIZE / && lsblk -bdno SIZE \"/dev/$(lsblk -no PKNAME \"$(findmnt -no SOURCE /)\")\"")
"""Run in the guest after login: the root file system's size, then its whole disk's size (bytes)."""


def smbios_ec2(instance_uuid: str = "ec2e1916-9099-7caf-fd21-012345abcdef",
               product: str = "t3.micro") -> dict[str, str]:
    """SMBIOS type 1 as on a Nitro instance: cloud-init 22.4 knows AWS by uuid == serial, both starting ec2."""
    return {"manufacturer": "Amazon EC2", "product": product, "serial": instance_uuid, "uuid": instance_uuid}


def smbios_openstack() -> dict[str, str]:
    """SMBIOS type 1 as Nova sets it: ds-identify checks product_name for the OpenStack datasource."""
    return {"manufacturer": "OpenStack Foundation", "product": "OpenStack Nova"}


@dataclass(frozen=True)
class BootResult:
    seconds: float
    """From QEMU's start to the first successful SSH login."""
    root_fs_bytes: int
    disk_bytes: int
    """The root disk's size as the guest sees it."""
    user: str
    console_log: Path
    imds_requests: list[imds_service.Request] = field(default_factory=list)


class QemuProcess:
    """One qemu-system process in its own session: reaper-tracked, its stderr kept, killed idempotently."""

    def __init__(self, argv: list[str], stderr_path: Path) -> None:
        self.stderr_path = stderr_path
        with open(stderr_path, "wb") as err:
            self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err,
                                         start_new_session=True)
        reaper.track_pid(self.proc.pid)
        self.detached = False

    def detach(self) -> None:
        """Leave it running past Rain: `kill` does nothing from now on, and the reaper no longer watches it."""
        self.detached = True
        reaper.untrack_pid(self.proc.pid)

    def exited(self) -> int | None:
        return self.proc.poll()

    def stderr_tail(self) -> str:
        try:
            lines = self.stderr_path.read_text(errors="replace").strip().splitlines()
        except OSError:
            return ""
        return lines[-1][-200:] if lines else ""

    def kill(self) -> None:
        """SIGKILL the session (a test VM has nothing to save) and reap it; nothing once detached."""
        if self.detached:
            return
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()
        reaper.untrack_pid(self.proc.pid)


@contextlib.contextmanager
def qemu(argv: list[str], stderr_path: Path) -> Iterator[QemuProcess]:
    """A QemuProcess for the block's duration; killed and waited for however the block ends."""
    vm = QemuProcess(argv, stderr_path)
    try:
        yield vm
    finally:
        vm.kill()


def last_console_line(log_path: Path) -> str:
    """The console's last non-empty line, for error messages (the whole log is in the hint's path)."""
    try:
        text = log_path.read_text(errors="replace")
    except OSError:
        return "no console output"
    lines = [line.strip() for line in text.replace("\r", "\n").splitlines() if line.strip()]
    return f"last console line: {''.join(c for c in lines[-1][:160] if c.isprintable())!r}" if lines \
        else "no console output"


def boot_to_ssh(disk: Path, fmt: str, *, user: str, key: KeyPair, log_path: Path, timeout: float,
                firmware: str = "bios", bus: str = "virtio", cdrom: Path | None = None,
                imds: imds_service.Instance | None = None, memory_mb: int = 1024,
                smbios: dict[str, str] | None = None, disk_size: int | None = None,
                accel: str = "tcg") -> BootResult:
    """Boot `disk` (never written) until `user` logs in over SSH with `key`; raise TargetError otherwise.

    `disk_size` (bytes) boots an overlay that large, to show the root file system grows to fill it."""
    _check(disk, fmt, firmware, bus, accel, cdrom, smbios)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log_path.unlink(missing_ok=True)
    with contextlib.ExitStack() as stack:
        work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="rain-boot-")))
        reaper.track_path(work)
        stack.callback(reaper.untrack_path, work)
        overlay = work / "disk.qcow2"
        run(["qemu-img", "create", "-q", "-f", "qcow2", "-b", str(disk.resolve()), "-F", fmt, str(overlay),
             *([str(disk_size)] if disk_size else [])], "making the boot test's overlay", error=TargetError)
        service = stack.enter_context(imds_service.serve(imds)) if imds is not None else None
        argv = qemu_argv(overlay, work, log_path, firmware=firmware, bus=bus, cdrom=cdrom, memory_mb=memory_mb,
                         smbios=smbios, accel=accel)
        start = time.monotonic()
        vm, port = start_with_ssh_forward(stack, argv, work, service.port if service else None)
        wait_for_login(vm, port, user, key, log_path, Deadline(start + timeout, timeout))
        seconds = time.monotonic() - start
        root_fs, disk_bytes = _guest_sizes(port, user, key, log_path)
        return BootResult(seconds, root_fs, disk_bytes, user, log_path,
                          list(service.requests) if service else [])


def _check(disk: Path, fmt: str, firmware: str, bus: str, accel: str, cdrom: Path | None,
           smbios: dict[str, str] | None) -> None:
    for value, allowed, what in ((fmt, FORMATS, "disk format"), (firmware, FIRMWARES, "firmware"),
                                 (bus, BUSES, "disk bus"), (accel, ACCELS, "accelerator")):
        if value not in allowed:
            raise InvalidInput(f"unknown {what} {value!r}", hint=f"use one of: {', '.join(allowed)}")
    for path, what in ((disk, "disk"), (cdrom, "seed CD")):
        if path is not None and not path.is_file():
            raise InvalidInput(f"the boot test's {what} {path} is not a file", hint="check the path")
    if firmware == "uefi" and not (OVMF_CODE.is_file() and OVMF_VARS.is_file()):
        raise TargetError(f"UEFI boot needs {OVMF_CODE} and {OVMF_VARS}",
                          hint="apt-get install ovmf (or run scripts/setup.sh)")
    for name, value in (smbios or {}).items():
        if not name.isalpha() or any(c in value for c in ",\n") or not value.isprintable():
            raise InvalidInput(f"SMBIOS field {name}={value[:40]!r} cannot be passed to QEMU",
                               hint="use letters for names; no commas or control characters in values "
                                    "(QEMU splits options at commas; '=' in a value is kept: serial=ds=nocloud)")


def _opt(path: Path) -> str:
    """A path inside a QEMU option list, where a comma must be doubled."""
    return str(path).replace(",", ",,")


def qemu_argv(overlay: Path | None, work: Path, log_path: Path, *, firmware: str, bus: str, cdrom: Path | None,
              memory_mb: int, smbios: dict[str, str] | None, accel: str, cpus: int = 2) -> list[str]:
    """QEMU for a cloud disk: its console to `log_path`, the overlay as its root disk, one NIC (netdev n0,
    which `start_with_ssh_forward` adds), `cdrom` as a seed CD; sandboxed. Without `overlay`, a diskless
    node: it boots from its NIC (QEMU's iPXE ROM, by PXE from netdev n0's TFTP)."""
    # graphics=off makes SeaBIOS write to the serial console too
    argv = [tool("qemu-system-x86_64"), "-nodefaults", "-no-user-config", "-machine", "pc,graphics=off",
            "-accel", accel, "-cpu", "host" if accel == "kvm" else TCG_CPU, "-smp", str(cpus), "-m", str(memory_mb),
            "-display", "none", "-monitor", "none", "-no-reboot",
            "-chardev", f"file,id=console,path={_opt(log_path)}", "-serial", "chardev:console",
            # qemu runs as root and boots an image under test: no exec, setuid or obsolete calls
            "-sandbox", "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny"]
    if overlay is None:
        argv += ["-device", f"virtio-net-pci,netdev=n0,mac={GUEST_MAC},bootindex=0"]  # iPXE, PXE first
    else:
        argv += ["-drive", f"file={_opt(overlay)},format=qcow2,if=none,id=root,cache=unsafe,discard=unmap",
                 "-device", "nvme,serial=rain-boot-test,drive=root" if bus == "nvme"
                 else "virtio-blk-pci,drive=root,bootindex=0",
                 "-device", f"virtio-net-pci,netdev=n0,mac={GUEST_MAC},romfile="]  # no iPXE: boots from disk
    if firmware == "uefi":
        vars_copy = work / "OVMF_VARS.fd"
        shutil.copyfile(OVMF_VARS, vars_copy)
        argv += ["-drive", f"if=pflash,format=raw,unit=0,readonly=on,file={_opt(OVMF_CODE)}",
                 "-drive", f"if=pflash,format=raw,unit=1,file={_opt(vars_copy)}"]
    if cdrom is not None:
        argv += ["-drive", f"file={_opt(cdrom.resolve())},format=raw,if=none,id=seed,media=cdrom,readonly=on",
                 "-device", "virtio-scsi-pci,id=scsi0", "-device", "scsi-cd,bus=scsi0.0,drive=seed"]
    if smbios:
        argv += ["-smbios", ",".join(["type=1", *(f"{k}={v}" for k, v in smbios.items())])]
    return argv


def start_with_ssh_forward(stack: contextlib.ExitStack, argv: list[str], work: Path, imds_port: int | None = None,
                           tries: int = 3, tftp: Path | None = None) -> tuple[QemuProcess, int]:
    """Start QEMU with a free 127.0.0.1 port forwarded to the guest's sshd; another port if one is taken.
    `tftp`: a directory QEMU's TFTP serves, whose boot.ipxe is the DHCP boot file (a netbooting node)."""
    for attempt in range(tries):
        port = _free_port()
        net = f"user,id=n0,hostfwd=tcp:127.0.0.1:{port}-:22"
        if tftp is not None:
            net += f",tftp={_opt(tftp)},bootfile=boot.ipxe"
        if imds_port is not None:
            net += (f",net={imds_service.USER_NETWORK}"
                    f",guestfwd=tcp:{imds_service.GUEST_ADDRESS}:80-tcp:127.0.0.1:{imds_port},,reconnect=1")
        vm = stack.enter_context(qemu([*argv, "-netdev", net], work / f"qemu-{attempt}.err"))
        time.sleep(0.5)
        if vm.exited() is None or "host forwarding" not in vm.stderr_tail() or attempt == tries - 1:
            return vm, port
        vm.kill()
    raise AssertionError("unreachable")


def wait_for_login(vm: QemuProcess | None, port: int, user: str, key: KeyPair, log_path: Path | None,
                   deadline: Deadline, host_key: bytes | None = None, what: str = "boot test",
                   host: str = "127.0.0.1", hint: str = "") -> None:
    """Until `user` logs in with `key` on host:`port`; with `host_key`, only to a guest showing that key.
    `vm`: the local QEMU, whose exit ends the wait at once (None for a machine elsewhere, e.g. a cloud's)."""
    problem = "no answer yet"

    def logged_in() -> bool:
        nonlocal problem
        rc = vm.exited() if vm is not None else None
        if vm is not None and log_path is not None and rc is not None:
            qemu_err = vm.stderr_tail()
            raise TargetError(f"the {what} VM stopped (exit {rc}) before SSH answered "
                              f"({last_console_line(log_path)})",
                              hint=f"console log: {log_path}" + (f"; qemu: {qemu_err}" if qemu_err else ""))
        try:
            with ssh(port, user, key, timeout=min(10.0, max(3.0, deadline.left)), host_key=host_key, host=host):
                return True
        except _NotYet as e:
            problem = str(e)
        return False

    if poll(logged_in, deadline, 2):
        return
    console = f"; {last_console_line(log_path)}" if log_path is not None else ""
    raise TargetError(f"{what}: no SSH login as {user} within {deadline.seconds:.0f}s "
                      f"({problem}{console})",
                      hint=hint or f"console log: {log_path}; the image must boot by its own loader and take the "
                                   "key from the cloud's metadata")


class _NotYet(Exception):
    """sshd is not there yet, or does not (yet) let the key in: try again until the deadline."""


@contextlib.contextmanager
def ssh(port: int, user: str, key: KeyPair, timeout: float, host_key: bytes | None = None,
        host: str = "127.0.0.1") -> Iterator[paramiko.Transport]:
    """An authenticated transport to the guest, or _NotYet. With `host_key`, a guest showing another host key
    is refused at once (TargetError): it is not the machine Rain seeded."""
    try:
        sock = socket.create_connection((host, port), timeout=timeout)
    except OSError as e:
        raise _NotYet(one_line(e.strerror or e)) from None
    transport: paramiko.Transport | None = None
    try:
        # QEMU's forward accepts and hangs up while the guest has no sshd: wait for the banner here
        try:
            if not sock.recv(4, socket.MSG_PEEK).startswith(b"SSH-"):
                raise _NotYet("no SSH banner")
        except OSError as e:
            raise _NotYet(f"no SSH banner ({one_line(e)})") from None
        transport = paramiko.Transport(sock)
        transport.banner_timeout = transport.handshake_timeout = transport.auth_timeout = timeout
        try:
            transport.start_client(timeout=timeout)
            shown = transport.get_remote_server_key().asbytes()
            if host_key is not None and shown != host_key:
                raise TargetError(f"the machine at {host}:{port} presented host key {fingerprint(shown)}, "
                                  f"not the one Rain gave it ({fingerprint(host_key)})",
                                  hint="the image must take its host keys from cloud-init (cc_ssh) and carry none "
                                       "of its own; if it does, something else answers on that port")
            transport.auth_publickey(user, client_pkey(key))
        except paramiko.AuthenticationException:
            raise _NotYet(f"sshd refused the key for {user} (not installed yet, or not at all)") from None
        except (paramiko.SSHException, OSError, EOFError) as e:
            raise _NotYet(one_line(e) or "no SSH handshake") from None
        yield transport
    finally:
        if transport is not None:
            transport.close()
        sock.close()


def _guest_sizes(port: int, user: str, key: KeyPair, log_path: Path) -> tuple[int, int]:
    """The root file system's and the root disk's size in bytes, as the guest reports them."""
    try:
        with ssh(port, user, key, timeout=60) as transport:
            channel = transport.open_session(timeout=60)
            channel.settimeout(120)
            channel.exec_command(GUEST_PROBE)
            out = channel.makefile("rb").read().decode(errors="replace")
            status = channel.recv_exit_status()
    except (_NotYet, paramiko.SSHException, OSError) as e:
        raise TargetError(f"boot test: logged in as {user}, then lost the connection ({one_line(e)})",
                          hint=f"console log: {log_path}") from None
    numbers = out.split()
    if status != 0 or len(numbers) != 2 or not all(n.isdigit() for n in numbers):
        raise TargetError(f"boot test: could not read the guest's disk sizes (exit {status}: {out.strip()[:120]!r})",
                          hint=f"the image needs findmnt and lsblk (util-linux); console log: {log_path}")
    return int(numbers[0]), int(numbers[1])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])

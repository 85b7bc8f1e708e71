"""A job on launched machines, over SSH with each machine's pinned host key.

On every machine, as the image's default user: `~/machines` (one name per line, the head first), the
launch's key as `~/.ssh/id_ed25519` with every machine's host key in `~/.ssh/known_hosts` (so the job
reaches any machine by its name, checked), and `--upload DIR`'s contents in `~/job`. Then SCRIPT runs
on the head, in `~/job`, with RAIN_MACHINES naming the machines file; its output streams here as it
comes, and its exit status is the job's. `--download DIR` brings the head's `~/job/DIR` back as a tar
stream, unpacked here with tarfile's `data` filter: absolute names made relative, no `..`, no links
out of the directory, no device nodes or FIFOs. Every SSH failure is one JobError line.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import tarfile
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path, PurePosixPath
from typing import BinaryIO

import paramiko

from rain.errors import InvalidInput, RainError, TargetError, one_line
from rain.host.ssh import KeyPair
from rain.launch.fleet import Machine
from rain.launch.records import known_host
from rain.register import vm

JOB_DIR = "job"
HOME_JOB = f'"$HOME"/{JOB_DIR}'
"""The job's directory in commands: under $HOME, not wherever sshd starts the shell."""
MACHINES_FILE = "machines"
BUFFER = 1 << 16


class JobError(TargetError):
    """The job's machinery failed (not the script: its status is the job's exit code)."""


def remote_dir(text: str) -> str:
    """`--download DIR` as a path under ~/job on the head: relative, without `..`."""
    path = PurePosixPath(text)
    if not text or path.is_absolute() or ".." in path.parts or any(ord(c) < 32 for c in text):
        raise InvalidInput(f"--download {text[:60]!r}: give a directory relative to the job's directory",
                           hint="e.g. --download out, for what the script writes under ./out on the head")
    return str(path)


class Job:
    """SSH sessions to the machines, opened once and closed with the job."""

    def __init__(self, machines: list[Machine], user: str, key: KeyPair) -> None:
        self.machines, self.user, self.key = machines, user, key
        self._stack = contextlib.ExitStack()
        self._transports: dict[str, paramiko.Transport] = {}

    def __enter__(self) -> Job:
        try:
            for m in self.machines:
                self._transports[m.name] = self._stack.enter_context(
                    vm.ssh(m.port, self.user, self.key, timeout=30, host_key=m.host_key.public_blob, host=m.host))
        except BaseException as e:
            self._stack.close()
            if isinstance(e, Exception) and not isinstance(e, RainError):
                raise JobError(f"lost the SSH connection to {m.name} after it came up: {one_line(e)}",
                               hint=m.where_to_look()) from e
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self._stack.close()

    def prepare(self, upload: Path | None) -> None:
        """Machines file, keys and known hosts, and the upload, on every machine."""
        names = "".join(f"{m.listed}\n" for m in self.machines)
        known = "".join(known_host(sorted({m.name, m.address, m.listed}), m.host_key) for m in self.machines)
        with _tar_of(upload) if upload is not None else contextlib.nullcontext() as archive:
            for m in self.machines:
                self._prepare(m, names, known, archive, upload)

    def _prepare(self, m: Machine, names: str, known: str, archive: BinaryIO | None, upload: Path | None) -> None:
        with self._sftp(m) as sftp:
            _put(sftp, MACHINES_FILE, names.encode(), 0o644)
            with contextlib.suppress(OSError):
                sftp.mkdir(".ssh", 0o700)
            _put(sftp, ".ssh/id_ed25519", self.key.private_openssh.encode(), 0o600)
            _put(sftp, ".ssh/known_hosts", known.encode(), 0o644)
            with contextlib.suppress(OSError):
                sftp.mkdir(JOB_DIR, 0o755)
        if archive is not None:
            archive.seek(0)
            status, output = self._exec(m, f"tar -x -C {HOME_JOB} -f -", stdin=archive)
            if status != 0:
                raise JobError(f"copying {upload} to {m.name} failed (tar exit {status}: {output[-200:]!r})",
                               hint="the image needs tar; is the machine's disk full?")

    def run(self, script: Path, out: Callable[[bytes], None]) -> int:
        """SCRIPT on the head in ~/job; its output (stdout and stderr) to `out` as it comes; its exit status."""
        head = self.machines[0]
        with self._sftp(head) as sftp:
            _put(sftp, f"{JOB_DIR}/{script.name}", script.read_bytes(), 0o755)
        command = f"cd {HOME_JOB} && RAIN_MACHINES=\"$HOME/{MACHINES_FILE}\" exec ./{shlex.quote(script.name)}"
        channel = self._channel(head)
        with contextlib.closing(channel), self._lost(head, f"while {script.name} ran"):
            channel.set_combine_stderr(True)
            channel.exec_command(command)
            channel.shutdown_write()
            while data := channel.recv(BUFFER):
                out(data)
            status = channel.recv_exit_status()
        if status == -1:  # no exit-status message: the connection ended, or a signal killed the script
            raise JobError(f"{script.name} on {head.name} ended without an exit status (the machine stopped, "
                           "or a signal killed the script)", hint=head.where_to_look())
        return status

    def download(self, directory: str, dest: Path) -> int:
        """The head's ~/job/DIRECTORY as the new local directory `dest`; the number of files brought back."""
        head = self.machines[0]
        with tempfile.TemporaryFile() as archive:
            status, output = self._exec(head, f"tar -c -C {HOME_JOB}/{shlex.quote(directory)} -f - .", stdout=archive)
            if status != 0:
                raise JobError(f"the job left no {directory}/ to download on {head.name} ({output.strip()[-160:]})",
                               hint=f"the script must write its results under ./{directory} in its directory")
            archive.seek(0)
            return unpack(archive, dest, head.name)

    # -- SSH -----------------------------------------------------------------------------------

    @contextlib.contextmanager
    def _sftp(self, m: Machine) -> Iterator[paramiko.SFTPClient]:
        try:
            sftp = paramiko.SFTPClient.from_transport(self._transports[m.name])
        except (paramiko.SSHException, OSError) as e:
            raise JobError(f"no SFTP session on {m.name}: {one_line(e)}",
                           hint="the image's sshd must offer the sftp subsystem (openssh-sftp-server)") from e
        assert sftp is not None
        try:
            yield sftp
        except (paramiko.SSHException, OSError) as e:
            if isinstance(e, RainError):
                raise
            raise JobError(f"copying to {m.name} failed: {one_line(e)}", hint="is the machine's disk full?") from e
        finally:
            sftp.close()

    @contextlib.contextmanager
    def _lost(self, m: Machine, when: str) -> Iterator[None]:
        """paramiko's and the socket's errors as one JobError line."""
        try:
            yield
        except (paramiko.SSHException, OSError, EOFError) as e:
            raise JobError(f"lost the SSH connection to {m.name} {when}: {one_line(e) or type(e).__name__}",
                           hint=m.where_to_look()) from e

    def _channel(self, m: Machine) -> paramiko.Channel:
        try:
            return self._transports[m.name].open_session(timeout=30)
        except (paramiko.SSHException, OSError) as e:
            raise JobError(f"lost the SSH connection to {m.name}: {one_line(e)}",
                           hint=m.where_to_look()) from e

    def _exec(self, m: Machine, command: str, stdin: BinaryIO | None = None,
              stdout: BinaryIO | None = None) -> tuple[int, str]:
        """Run `command` on `m`; its status and its stderr (stdout too when not kept)."""
        channel = self._channel(m)
        with contextlib.closing(channel), self._lost(m, f"running {command.split()[0]}"):
            if stdout is None:
                channel.set_combine_stderr(True)
            channel.exec_command(command)
            if stdin is not None:
                while block := stdin.read(BUFFER):
                    channel.sendall(block)
            channel.shutdown_write()
            kept = b""
            while data := channel.recv(BUFFER):
                if stdout is not None:
                    stdout.write(data)
                else:
                    kept = (kept + data)[-4096:]
            while err := channel.recv_stderr(BUFFER):  # what is left of it once stdout has ended
                kept = (kept + err)[-4096:]
            return channel.recv_exit_status(), kept.decode(errors="replace")


def unpack(archive: BinaryIO, dest: Path, source: str) -> int:
    """A tar stream from a machine as the new directory `dest`: files, directories and links inside it only
    (tarfile's data filter: no absolute paths, no `..`, no link out, no device node or FIFO). Unpacked
    beside `dest` and renamed into place, so a refused stream leaves nothing. Returns the number of files."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = Path(tempfile.mkdtemp(prefix=f".{dest.name}.rain-part-", dir=dest.parent))
    try:
        count = 0
        with tarfile.open(fileobj=archive, mode="r|") as tar:
            for member in tar:
                try:
                    tar.extract(member, part, filter="data")
                except tarfile.FilterError as e:
                    raise JobError(f"refused {member.name[:80]!r} from {source}: {one_line(e)}",
                                   hint="a download brings back files inside its directory only") from e
                count += member.isfile()
        os.rename(part, dest)
        return count
    except tarfile.TarError as e:
        raise JobError(f"the download from {source} is not a tar stream: {one_line(e)}",
                       hint="the image needs tar") from e
    finally:
        shutil.rmtree(part, ignore_errors=True)


def _put(sftp: paramiko.SFTPClient, path: str, data: bytes, mode: int) -> None:
    with sftp.open(path, "wb") as f:
        f.chmod(mode)  # before a byte of a private key is in it
        f.write(data)


@contextlib.contextmanager
def _tar_of(directory: Path) -> Iterator[BinaryIO]:
    """DIRECTORY's contents as a tar (spooled to disk past 16 MiB), names relative to it."""
    with tempfile.SpooledTemporaryFile(16 << 20) as spool:
        with tarfile.open(fileobj=spool, mode="w") as tar:
            for entry in sorted(os.listdir(directory)):
                tar.add(directory / entry, arcname=entry)
        yield spool  # type: ignore[misc]

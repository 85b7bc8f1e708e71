"""The qemu launch site: N machines from one bootable disk, under QEMU on this host (TCG unless told KVM).

Each machine of a launch gets
- a qcow2 overlay over the image's disk (the image itself is never written);
- a NoCloud seed (cidata) that hands cloud-init the machine's name, a host key Rain made for it (pinned:
  Rain logs in only to a machine that shows exactly that key), the launch's client key for the image's
  default user, the launch's private network and the other machines' names in /etc/hosts;
- two NICs: QEMU's user network, with the guest's sshd forwarded to a free port on 127.0.0.1 (nothing
  else listens), and the launch's private network: a QEMU socket network (UDP multicast on the
  loopback, on a random group and port of its own). It keeps launches apart, not local users: the
  group is in QEMU's command line, and a process on this host that joins it reaches the machines.

Every QEMU runs in its own session and is tracked by the reaper, so a machine dies with Rain even when
Rain is SIGKILLed; leaving `LocalSite.machines` (an error, Ctrl-C or the end of the job) kills every
machine and removes the launch's files. Console logs are kept only when the launch fails.
"""

from __future__ import annotations

import contextlib
import logging
import random
import shutil
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from rain.errors import InvalidInput, TargetError
from rain.host.ssh import KeyPair
from rain.host.tools import run, tool
from rain.launch import netboot
from rain.launch.fleet import Fleet, Machine, check_count, cloud_config, drop_work, keep_work, work_dir
from rain.launch.netboot import Netboot
from rain.register import seeds, vm
from rain.waiting import Deadline

log = logging.getLogger(__name__)

PRIVATE_NET = "10.99.0"
"""The launch's private network, a /24: machine i (from 1) is PRIVATE_NET.(10 + i)."""
ACCELS = ("tcg", "kvm")


@dataclass(frozen=True)
class LocalSite:
    """Machines from `disk` (`fmt`: qcow2 or raw) that let `user` in with the launch's client key."""

    disk: Path
    fmt: str
    user: str
    memory_mb: int = 1024
    accel: str = "tcg"
    cpus: int = 1
    """vCPUs per machine (the CLI gives each machine its share of this host's cores)."""
    lifetime: int = 86400
    """Seconds after which each QEMU is killed, whatever else happens (the launch_lifetime setting)."""
    logs: Path | None = None
    """A directory of this launch's own for the machines' console logs, kept only if the launch fails
    (without it they live and go with the launch's temporary files)."""
    netboot: Netboot | None = None
    """Diskless nodes that netboot the hpc site's published files instead (`disk` and `fmt` unused)."""
    site_name: str = "local"

    def check(self, count: int) -> None:
        """What would refuse `machines(count)`, checked before anything is fetched or made."""
        check_count(count)
        if self.accel not in ACCELS:
            raise InvalidInput(f"unknown accelerator {self.accel!r}", hint="use tcg or kvm")
        if self.netboot is not None:
            self.netboot.check(self.site_name)
        if self.lifetime < 1:
            raise InvalidInput(f"launch_lifetime {self.lifetime}: give a number of seconds, 1 or more",
                               hint="set launch_lifetime in the config file or RAIN_LAUNCH_LIFETIME")

    @contextlib.contextmanager
    def machines(self, count: int, key: KeyPair, timeout: float, prefix: str = "node",
                 report: Callable[[str], None] = lambda _: None,
                 started: Callable[[Fleet], None] = lambda _: None) -> Iterator[Fleet]:
        """`count` machines, each answering SSH; all killed and their files removed when the block ends,
        unless `Fleet.keep` was called. `started(fleet)` runs once they all exist, before the wait."""
        self.check(count)
        names = [seeds.hostname(f"{prefix}{i}") for i in range(1, count + 1)]
        hosts = "".join(f"{_address(i)} {name}\n" for i, name in enumerate(names, 1))
        net = _private_network()
        kept = False
        with contextlib.ExitStack() as stack:
            work = work_dir()
            stack.callback(drop_work, work)
            processes: list[vm.QemuProcess] = []

            def keep() -> None:
                nonlocal kept
                for process in processes:
                    process.detach()
                stack.pop_all()  # the directory stays too
                keep_work(work)
                kept = True

            try:
                seeds_url = ""
                if self.netboot is not None:
                    (work / "seeds").mkdir(mode=0o700)
                    seeds_url = stack.enter_context(self.netboot.serve(work / "seeds"))
                start = time.monotonic()
                machines = []
                for i, name in enumerate(names, 1):
                    host_key = KeyPair.generate(f"rain-host@{name}")
                    machine_dir = work / name
                    machine_dir.mkdir()
                    console = self._console(machine_dir, name)
                    if self.netboot is None:
                        argv = self._argv(machine_dir, console, name, i, host_key, key, hosts, net)
                    else:
                        argv = self._netboot_argv(machine_dir, console, name, i, host_key, key, hosts, net,
                                                  seeds_url, work / "seeds")
                    process, port = vm.start_with_ssh_forward(
                        stack, argv, machine_dir, tftp=machine_dir / "tftp" if self.netboot else None)
                    processes.append(process)
                    machines.append(Machine(name, _address(i), "127.0.0.1", port, host_key, str(process.proc.pid),
                                            name, console))
                    report(f"{name}: started (ssh on 127.0.0.1:{port})")
                fleet = Fleet(machines, work, keep, {"logs": str(self.logs)} if self.logs else {})
                started(fleet)
                deadline = Deadline(start + timeout, timeout)
                for machine, process in zip(machines, processes, strict=True):
                    vm.wait_for_login(process, machine.port, self.user, key, machine.console, deadline,
                                      host_key=machine.host_key.public_blob, what=f"machine {machine.name}")
                    report(f"{machine.name}: answers SSH after {time.monotonic() - start:.0f}s")
                shutil.rmtree(work / "seeds", ignore_errors=True)  # their host keys are in place
                yield fleet
            except BaseException:
                if self.logs is not None and any(self.logs.iterdir()):  # the error names a machine's log: it stays
                    log.info("console logs of the failed launch: %s", self.logs)
                elif self.logs is not None:
                    shutil.rmtree(self.logs, ignore_errors=True)
                raise
            if self.logs is not None and not kept:
                shutil.rmtree(self.logs, ignore_errors=True)

    def _argv(self, machine_dir: Path, console: Path, name: str, index: int, host_key: KeyPair, key: KeyPair,
              hosts: str, net: str) -> list[str]:
        overlay = machine_dir / "disk.qcow2"
        run(["qemu-img", "create", "-q", "-f", "qcow2", "-b", str(self.disk.resolve()), "-F", self.fmt,
             str(overlay)], f"making {name}'s disk", error=TargetError)
        seed = seeds.nocloud(machine_dir / "seed.iso", instance_id=f"i-{uuid.uuid4().hex[:12]}", host=name,
                             key=key.public_line, user_data=_cloud_config(key, host_key, hosts),
                             network_config=_network_config(_mac(index), _address(index)))
        argv = vm.qemu_argv(overlay, machine_dir, console, firmware="bios", bus="virtio", cdrom=seed,
                            memory_mb=self.memory_mb, smbios={"serial": "ds=nocloud"}, accel=self.accel,
                            cpus=self.cpus)
        return self._wrapped(argv, index, net)

    def _netboot_argv(self, machine_dir: Path, console: Path, name: str, index: int, host_key: KeyPair,
                      key: KeyPair, hosts: str, net: str, seeds_url: str, seeds_dir: Path) -> list[str]:
        """A diskless node: its TFTP boot file chains the published boot.ipxe, its seed is served by Rain."""
        assert self.netboot is not None
        (seeds_dir / f"{name}.tar").write_bytes(netboot.seed(host_key, key, name, hosts, _address(index)))
        (machine_dir / "tftp").mkdir()
        (machine_dir / "tftp" / "boot.ipxe").write_text(self.netboot.script(f"{seeds_url}{name}.tar"))
        argv = vm.qemu_argv(None, machine_dir, console, firmware="bios", bus="virtio", cdrom=None,
                            memory_mb=self.memory_mb, smbios=None, accel=self.accel, cpus=self.cpus)
        return self._wrapped(argv, index, net)

    def _wrapped(self, argv: list[str], index: int, net: str) -> list[str]:
        """Under `timeout`, with the launch's private network as a second NIC."""
        # timeout: the lifetime holds even when no Rain process is left to enforce it (a detached launch)
        return [tool("timeout"), "--signal=KILL", str(self.lifetime), *argv,
                "-netdev", f"socket,id=private,mcast={net},localaddr=127.0.0.1",
                "-device", f"virtio-net-pci,netdev=private,mac={_mac(index)},romfile="]

    def _console(self, machine_dir: Path, name: str) -> Path:
        if self.logs is None:
            return machine_dir / "console.log"
        self.logs.mkdir(parents=True, exist_ok=True)
        return self.logs / f"{name}.console.log"


def _mac(index: int) -> str:
    """Machine `index`'s MAC on the launch's private network."""
    return f"02:00:0a:63:00:{10 + index:02x}"


def _address(index: int) -> str:
    """Machine `index`'s (from 1) address on the launch's private network."""
    return f"{PRIVATE_NET}.{10 + index}"


def _private_network() -> str:
    """A multicast group and port of this launch's own (administratively scoped: never leaves the host)."""
    rng = random.SystemRandom()
    return f"239.{rng.randrange(1, 255)}.{rng.randrange(1, 255)}.{rng.randrange(1, 255)}:{rng.randrange(20000, 60000)}"


def _cloud_config(key: KeyPair, host_key: KeyPair, hosts: str) -> str:
    """The machine's host key (and no other), the client key for the default user, the launch's names."""
    return cloud_config(host_key, {
        "ssh_authorized_keys": [seeds.public_key(key.public_line)],
        "manage_etc_hosts": False,  # else cloud-init rewrites /etc/hosts from its template after write_files
        "write_files": [{"path": "/etc/hosts", "append": True, "content": hosts}],
    })


def _network_config(private_mac: str, address: str) -> dict[str, object]:
    """DHCP on QEMU's user network (its NIC has the boot test's MAC), a fixed address on the private one."""
    return {"version": 2, "ethernets": {
        "public": {"match": {"macaddress": seeds.GUEST_MAC}, "dhcp4": True},
        "private": {"match": {"macaddress": private_mac}, "addresses": [f"{address}/24"]}}}


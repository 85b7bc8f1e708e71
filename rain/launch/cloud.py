"""What every cloud launch site does the same way; each cloud (openstack.py, opennebula.py, ec2.py) makes the calls.

A launch on a cloud has a TAG (8 hex digits). Its machines are named `rain-TAG-nodeI` and carry TAG in
their metadata, so Rain can find every one of them again: after a Ctrl-C that cut a create call short
(the cloud made the machine, Rain never heard its id), and from a record (`instances stop`), which is
not trusted to name machines: only machines named and tagged with the record's TAG are released.

`machines()` creates them all, waits until each is running and has an address, records the launch
(`started`), then waits until each lets the user in over SSH with the host key Rain made for it (the
cloud hands it to the machine's cloud-init). Leaving the block releases them all, also on failure and
Ctrl-C, unless the fleet is kept (--detach).

A SIGKILLed fg-image gets no chance to release them. So before it creates anything a launch takes a
lease (rain/clouds/leases.py, in DATA_DIR/launch/leases) naming its target, site, TAG, each machine as it
is made and the record once there is one, and asks Rain's watcher (rain/host/reaper.py) to run
`fg-image instances reap` (`reap` here) as soon as this process is gone: that releases what a stale lease
names, with the same settings and credentials, and drops the record. Should that fail (the cloud down),
the next launch and `fg-image instances reap` try again.
"""

from __future__ import annotations

import contextlib
import logging
import re
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import ClassVar

from rain.clouds import leases
from rain.clouds.leases import Lease, Leases, Reap
from rain.config import Settings
from rain.errors import InvalidInput, RainError, one_line
from rain.host.ssh import KeyPair
from rain.launch.fleet import Fleet, Machine, check_count, drop_work, keep_work, work_dir
from rain.register import seeds, vm
from rain.repository.models import ID_RE, Launch
from rain.waiting import Deadline

log = logging.getLogger(__name__)

TAG_RE = re.compile(r"^[0-9a-f]{8}$")
META = "rain-launch"
CLOUDS = ("openstack", "opennebula", "ec2")
REAP = [sys.executable, "-m", "rain.cli", "instances", "reap"]
"""What the watcher runs once a launching fg-image is gone (its lease left behind)."""


class CloudSite:
    """A cloud's machines that let `user` in with the launch's key. Subclasses make the calls."""

    target: ClassVar[str]
    """The target's name (openstack, opennebula, ec2)."""

    cloud: ClassVar[str]
    """What one machine is called in messages ("OpenStack server", "OpenNebula VM", "EC2 instance")."""

    size_setting: ClassVar[str] = ""
    """The site setting that gives the machines' size when --size is not given (flavor, instance_type)."""

    def __init__(self, site_name: str, user: str, ssh_port: int, size: str | None = None) -> None:
        self.site_name, self.user, self.ssh_port, self.size = site_name, user, ssh_port, size
        self.unreleased = ""
        """Why leaving `machines` could not release them (then the launch's record must stay)."""
        self.leases: Leases | None = None
        """Where a launch takes its lease (open_site sets it); None: none is taken, nothing is reaped."""

    def check(self, count: int) -> None:
        check_count(count)
        if self.size_setting and not self.size:
            raise InvalidInput(f"no size for the machines on {self.cloud.split()[0]} site {self.site_name!r}",
                               hint=f"give --size, or set {self.size_setting} for the site in the targets file")

    @contextlib.contextmanager
    def machines(self, count: int, key: KeyPair, timeout: float, image_ref: str, prefix: str = "node",
                 report: Callable[[str], None] = lambda _: None,
                 started: Callable[[Fleet], None] = lambda _: None) -> Iterator[Fleet]:
        """`count` machines of the cloud's image `image_ref`, each answering SSH (see the module's doc)."""
        self.check(count)
        tag = uuid.uuid4().hex[:8]
        made: list[str] = []
        kept = False
        work = work_dir()
        lease = self._lease(tag)

        def keep() -> None:
            nonlocal kept
            keep_work(work)
            self._let_go(lease)  # recorded, and the user's now: `instances stop` releases them
            kept = True

        def recorded(launch_id: str) -> None:
            if lease is not None:
                lease.record(launch=launch_id)

        try:
            start = time.monotonic()
            deadline = Deadline(start + timeout, timeout)
            self._begin(tag, key)
            names = [seeds.hostname(f"rain-{tag}-{prefix}{i}") for i in range(1, count + 1)]
            host_keys = [KeyPair.generate(f"rain-host@{name}") for name in names]
            for name, host_key in zip(names, host_keys, strict=True):
                made.append(self._create(name, image_ref, tag, key, host_key))
                if lease is not None:
                    lease.record(**{name: made[-1]})
                report(f"{name}: created ({self.cloud} {made[-1]})")
            machines = []
            for name, remote_id, host_key in zip(names, made, host_keys, strict=True):
                address = self._wait_running(remote_id, deadline)
                machines.append(Machine(name, address, address, self.ssh_port, host_key, remote_id, address))
                report(f"{name}: running at {address}")
            fleet = Fleet(machines, work, keep, {"tag": tag}, recorded)
            started(fleet)
            for m in machines:
                vm.wait_for_login(None, m.port, self.user, key, None, deadline, host_key=m.host_key.public_blob,
                                  what=f"machine {m.name}", host=m.host,
                                  hint=f"{m.where_to_look()}; the image must take the host key and the key from "
                                       "cloud-init, and this host must reach the machine's address")
                report(f"{m.name}: answers SSH after {time.monotonic() - start:.0f}s")
            yield fleet
        except BaseException:
            if not kept:
                self._release_or_note(tag, made, work, lease)
            raise
        if not kept:
            self._release_or_note(tag, made, work, lease)

    def _release_or_note(self, tag: str, made: list[str], work: Path, lease: Lease | None) -> None:
        """Release the launch's machines; when that fails, note why in `unreleased` (the caller keeps the
        record, so `instances stop` can try again) rather than hide the launch's own outcome."""
        try:
            self._release(tag, made)
        except RainError as e:
            self.unreleased = one_line(e.message)
            log.warning("could not release launch %s's machines: %s", tag, self.unreleased)
        finally:
            drop_work(work)
            self._let_go(lease)

    def _lease(self, tag: str) -> Lease | None:
        """The launch's lease, taken before anything is made (the watcher reaps it should this process die
        holding it)."""
        if self.leases is None:
            return None
        return self.leases.take(f"{self.target}-{tag}", target=self.target, site=self.site_name, tag=tag)

    def _let_go(self, lease: Lease | None) -> None:
        """The machines are released, or the user's (kept): nothing for the watcher to do."""
        if lease is not None:
            lease.drop()

    def release(self, launch: Launch) -> int:
        """Release a recorded launch's machines (those named and tagged with its TAG); how many there were."""
        tag = str(launch.detail.get("tag", ""))
        return self._release(tag, []) if TAG_RE.match(tag) else 0

    # -- what each cloud does ----------------------------------------------------------------------

    def _begin(self, tag: str, key: KeyPair) -> None:
        """Before the first machine (e.g. import the launch's key pair)."""

    def _create(self, name: str, image_ref: str, tag: str, key: KeyPair, host_key: KeyPair) -> str:
        """Start one machine; its id."""
        raise NotImplementedError

    def _wait_running(self, remote_id: str, deadline: Deadline) -> str:
        """Until the machine runs; its address."""
        raise NotImplementedError

    def _release(self, tag: str, known: list[str]) -> int:
        """Release the launch's machines: those Rain knows the ids of (`known`) and those the cloud lists
        as named and tagged with `tag`; and whatever _begin made. How many machines there were."""
        raise NotImplementedError


def open_site(settings: Settings, target: str, site_name: str | None, user: str | None,
              size: str | None) -> CloudSite:
    """The target's site in the targets file, as a launch site (its settings checked, its secret read),
    that takes a lease for each launch in DATA_DIR/launch/leases."""
    from rain.register.seeds import username
    from rain.register.targets.sites import open_target

    cloud, name = open_target(settings, target, site_name)
    login = username(user or cloud.login_user)
    site_conf = cloud.site  # type: ignore[attr-defined]
    site: CloudSite
    if target == "openstack":
        from rain.launch.openstack import OpenStackLaunch

        site = OpenStackLaunch(site_conf, name, login, size)
    elif target == "opennebula":
        from rain.launch.opennebula import OpenNebulaLaunch

        site = OpenNebulaLaunch(site_conf, name, login, size)
    elif target == "ec2":
        from rain.launch.ec2 import Ec2Launch

        site = Ec2Launch(cloud, name, login, size)  # type: ignore[arg-type]
    else:
        raise InvalidInput(f"launch on {target!r} is not a cloud", hint="use --target " + " or ".join(CLOUDS))
    # the watcher's `instances reap` needs the repository flags this fg-image was given, and writes what
    # it did to DATA_DIR/launch/reap.log
    env = tuple((f"RAIN_{k.upper()}", str(v)) for k in ("repo_url", "token") if (v := getattr(settings, k)))
    site.leases = _leases(settings, Reap(tuple(REAP), env, settings.data_path / "launch" / "reap.log"))
    return site


def _leases(settings: Settings, reap: Reap | None = None) -> Leases:
    return Leases(settings.data_path / "launch" / "leases", reap)


def reap(settings: Settings, forget: Callable[[str], None]) -> list[str]:
    """Release what this host's killed launches left on their clouds (their stale leases) and `forget`
    their records; one line for each. A lease whose release fails stays, for the next try."""
    sites: dict[tuple[str, str], CloudSite] = {}

    def what(lease: Lease) -> str:
        return f"launch {lease.data.get('tag')} on {lease.data.get('target')} site {lease.data.get('site')}"

    def release(lease: Lease) -> str:
        target, site_name, tag = (str(lease.data.get(k, "")) for k in ("target", "site", "tag"))
        if target not in CLOUDS or not TAG_RE.match(tag):
            return f"dropped {lease.path.name}: not a launch's lease"
        ids = lease.ids
        record = ids.pop("launch", "")
        if (target, site_name) not in sites:  # one login for the leases of one site
            sites[target, site_name] = open_site(settings, target, site_name or None, None, None)
        count = sites[target, site_name]._release(tag, list(ids.values()))
        if ID_RE.match(record):
            forget(record)
        return f"released {what(lease)} ({count} machine(s)): its {lease.owner()} is gone"
    return leases.reap(_leases(settings), release, lambda lease, why: f"could not release {what(lease)}: {why}")

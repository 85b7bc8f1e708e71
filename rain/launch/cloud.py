"""What every cloud launch site does the same way; each cloud (openstack.py, opennebula.py, ec2.py) makes the calls.

A launch on a cloud has a TAG (8 hex digits). Its machines are named `rain-TAG-nodeI` and carry TAG in
their metadata, so Rain can find every one of them again: after a Ctrl-C that cut a create call short
(the cloud made the machine, Rain never heard its id), and from a record (`instances stop`), which is
not trusted to name machines: only machines named and tagged with the record's TAG are released.

`machines()` creates them all, waits until each is running and has an address, records the launch
(`started`), then waits until each lets the user in over SSH with the host key Rain made for it (the
cloud hands it to the machine's cloud-init). Leaving the block releases them all, also on failure and
Ctrl-C, unless the fleet is kept (--detach).
"""

from __future__ import annotations

import contextlib
import logging
import re
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import ClassVar

from rain.errors import InvalidInput, RainError, one_line
from rain.host.ssh import KeyPair
from rain.launch.fleet import Fleet, Machine, check_count, drop_work, keep_work, work_dir
from rain.register import seeds, vm
from rain.repository.models import Launch
from rain.waiting import Deadline

log = logging.getLogger(__name__)

TAG_RE = re.compile(r"^[0-9a-f]{8}$")
META = "rain-launch"


class CloudSite:
    """A cloud's machines that let `user` in with the launch's key. Subclasses make the calls."""

    cloud: ClassVar[str]
    """What one machine is called in messages ("OpenStack server", "OpenNebula VM", "EC2 instance")."""

    size_setting: ClassVar[str] = ""
    """The site setting that gives the machines' size when --size is not given (flavor, instance_type)."""

    def __init__(self, site_name: str, user: str, ssh_port: int, size: str | None = None) -> None:
        self.site_name, self.user, self.ssh_port, self.size = site_name, user, ssh_port, size
        self.unreleased = ""
        """Why leaving `machines` could not release them (then the launch's record must stay)."""

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

        def keep() -> None:
            nonlocal kept
            keep_work(work)
            kept = True

        try:
            start = time.monotonic()
            deadline = Deadline(start + timeout, timeout)
            self._begin(tag, key)
            names = [seeds.hostname(f"rain-{tag}-{prefix}{i}") for i in range(1, count + 1)]
            host_keys = [KeyPair.generate(f"rain-host@{name}") for name in names]
            for name, host_key in zip(names, host_keys, strict=True):
                made.append(self._create(name, image_ref, tag, key, host_key))
                report(f"{name}: created ({self.cloud} {made[-1]})")
            machines = []
            for name, remote_id, host_key in zip(names, made, host_keys, strict=True):
                address = self._wait_running(remote_id, deadline)
                machines.append(Machine(name, address, address, self.ssh_port, host_key, remote_id, address))
                report(f"{name}: running at {address}")
            fleet = Fleet(machines, work, keep, {"tag": tag})
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
                self._release_or_note(tag, made, work)
            raise
        if not kept:
            self._release_or_note(tag, made, work)

    def _release_or_note(self, tag: str, made: list[str], work: Path) -> None:
        """Release the launch's machines; when that fails, note why in `unreleased` (the caller keeps the
        record, so `instances stop` can try again) rather than hide the launch's own outcome."""
        try:
            self._release(tag, made)
        except RainError as e:
            self.unreleased = one_line(e.message)
            log.warning("could not release launch %s's machines: %s", tag, self.unreleased)
        finally:
            drop_work(work)

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

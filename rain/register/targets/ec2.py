"""EC2: a raw disk sent block by block with the EBS direct APIs, then registered as an AMI.

start_snapshot → put_snapshot_block for every non-zero 512 KiB block (zero
blocks skipped, blocks sent in parallel, each with its SHA-256) →
complete_snapshot (with the linear aggregate checksum) → register_image.
A failure after start_snapshot deletes the snapshot (and the AMI, if made).
"""

from __future__ import annotations

import base64
import hashlib
import logging
import threading
from collections.abc import Iterator
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import Field

from rain.config import Settings
from rain.errors import ConfigError, TargetError, Unreachable
from rain.image.disk import make_disk
from rain.register import adapt, cloudtest
from rain.register.chroot import Sandbox
from rain.register.models import Label, Packed, Severity, VetPolicy
from rain.register.targets.base import SiteSettings, TargetName
from rain.settings_file import one_secret
from rain.waiting import Deadline, poll

log = logging.getLogger(__name__)
BLOCK = 512 * 1024
ZERO = bytes(BLOCK)
GIB = 1 << 30
ROOT_DEVICE = "/dev/xvda"
BOOT_MODES = {"bios": "legacy-bios", "uefi": "uefi", "uefi-preferred": "uefi-preferred"}


class Ec2Site(SiteSettings):
    region: str
    endpoint_url: str | None = None
    """Only for EC2-compatible endpoints (or a test server); unset = AWS's own for the region."""
    access_key_id_env: str | None = None
    secret_access_key_env: str | None = None
    secret_access_key_file: str | None = None
    workers: int = 8
    architecture: str = "x86_64"
    timeout: float = 600.0
    firmware: Literal["bios", "uefi", "uefi-preferred"] = "bios"
    """The AMI's BootMode: legacy-bios, uefi, or uefi-preferred (UEFI where the instance type has it)."""
    instance_type: str | None = None
    """`fg-image launch`: the machines' instance type when --size is not given."""
    subnet_id: str | None = None
    """`fg-image launch`: the subnet the instances join (this host must reach their addresses); unset: the
    default VPC's."""
    security_group_ids: list[str] = []
    """`fg-image launch`: security groups of the instances (they must let this host in on ssh_port)."""
    ssh_port: int = Field(22, ge=1, le=65535)
    """`fg-image launch`: the port the instances' sshd listens on."""
    poll_interval: float = Field(2.0, gt=0, le=60)
    """`fg-image launch`: seconds between looks at an instance that is not running yet."""
    check_secrets = one_secret("secret_access_key")


def ec2_error(e: Exception, what: str) -> Exception:
    from botocore.exceptions import (
        BotoCoreError,
        ClientError,
        EndpointConnectionError,
        NoCredentialsError,
    )

    if isinstance(e, ClientError):
        err = e.response.get("Error", {})
        return TargetError(f"EC2 refused {what}: {err.get('Code', '?')}: {err.get('Message', '')}".strip(),
                           hint="check the site's region, credentials and account limits")
    if isinstance(e, EndpointConnectionError):
        return Unreachable(f"cannot reach EC2 for {what}: {e}", hint="check region/endpoint_url and the network")
    if isinstance(e, NoCredentialsError):
        return ConfigError("no EC2 credentials", hint="set access_key_id_env and secret_access_key_env")
    if isinstance(e, BotoCoreError):
        return TargetError(f"EC2 {what} failed: {e}")
    return e


@contextmanager
def ec2_calls(what: str) -> Iterator[None]:
    """boto3's and botocore's failures inside the block as Rain's errors (ec2_error), naming `what`."""
    try:
        yield
    except Exception as e:
        translated = ec2_error(e, what)
        if translated is e:
            raise
        raise translated from e


class Ec2Target:
    name: ClassVar[TargetName] = TargetName.EC2
    vet_policy: ClassVar[VetPolicy] = VetPolicy("cloud-ec2", Severity.HIGH, frozenset({"kernel", "nvme_ena"}))
    derived_format: ClassVar[str] = "raw"
    site_model: ClassVar[type[Ec2Site]] = Ec2Site
    login_user: ClassVar[str] = "admin"
    profile: ClassVar[adapt.CloudProfile] = adapt.CloudProfile(
        "ec2", ("Ec2",), "admin", ("nvme", "ena"),
        {"datasource": {"Ec2": {"strict_id": False, "metadata_urls": ["http://169.254.169.254"]}}})
    """Debian's own EC2 images log in as admin; Nitro instances show the root disk as NVMe, the NIC as ENA.
    cloud-init 22.4's Ec2 datasource asks for an IMDSv2 token first; ImdsSupport v2.0 makes it required."""

    def __init__(self, site: Ec2Site, site_name: str, settings: Settings, offline: bool = False) -> None:
        self.site, self.site_name, self.settings = site, site_name, settings
        self._clients: dict[str, Any] = {}
        self._keys = ("", "") if offline else self._credentials()  # offline (--output) needs none

    def _credentials(self) -> tuple[str, str]:
        """Both keys, read now: a missing one is an error before anything moves."""
        if not self.site.access_key_id_env:
            raise ConfigError(f"ec2 site {self.site_name!r} has no credentials",
                              hint="set access_key_id_env and secret_access_key_env (variable names) "
                                   "in the targets file")
        return self.site.secret("access_key_id"), self.site.secret("secret_access_key")

    def client(self, service: str) -> Any:  # Any: boto3 is untyped without the boto3-stubs package
        if service not in self._clients:
            import boto3
            from botocore.config import Config

            key_id, secret = self._keys
            cfg = Config(retries={"max_attempts": 5, "mode": "standard"}, connect_timeout=10, read_timeout=60,
                         max_pool_connections=max(10, self.site.workers * 2))
            self._clients[service] = boto3.client(service, region_name=self.site.region,
                                                  endpoint_url=self.site.endpoint_url, aws_access_key_id=key_id,
                                                  aws_secret_access_key=secret, config=cfg)
        return self._clients[service]

    def adapt(self, root: Path, sandbox: Sandbox) -> list[str]:
        return adapt.cloud_disk(root, self.profile, sandbox)

    def pack(self, root: Path, out: Path) -> Packed:
        out.mkdir(parents=True, exist_ok=True)
        raw = make_disk(root, out / "disk.raw", bootable=True).path
        return Packed(out, {"disk.raw": raw}, "disk.raw", "raw")

    def boot_test(self, packed: Packed, log_path: Path, timeout: float) -> None:
        """Boot the packed disk as ec2 would (imds, nvme, the site's firmware) to an SSH login."""
        how = cloudtest.CloudBoot("imds", self.login_user, cloudtest.firmware_of(self.site.firmware), "nvme")
        cloudtest.boot_test(packed.primary_path, packed.format, how, log_path, timeout)

    def publish(self, packed: Packed, label: Label) -> str:
        raw = packed.primary_path
        size_gib = max(1, -(-raw.stat().st_size // GIB))
        ebs, ec2 = self.client("ebs"), self.client("ec2")
        try:
            snap = ebs.start_snapshot(VolumeSize=size_gib, Description=f"Rain {label.name} ({label.image_id})",
                                      Tags=[{"Key": "rain:image", "Value": label.image_id}], Timeout=60)
        except Exception as e:
            raise ec2_error(e, "start_snapshot") from e
        snapshot_id = snap["SnapshotId"]
        ami: str | None = None
        try:
            count, aggregate = self._send_blocks(ebs, snapshot_id, raw)
            ebs.complete_snapshot(SnapshotId=snapshot_id, ChangedBlocksCount=count, Checksum=aggregate,
                                  ChecksumAlgorithm="SHA256", ChecksumAggregationMethod="LINEAR")
            self._wait_snapshot(ec2, snapshot_id)
            ami = ec2.register_image(**self.image_params(label, snapshot_id))["ImageId"]
            ec2.create_tags(Resources=[ami], Tags=[{"Key": "rain:image", "Value": label.image_id},
                                                   {"Key": "rain:snapshot", "Value": snapshot_id}])
            log.info("registered %s as %s (snapshot %s, %d blocks)", label.slug, ami, snapshot_id, count)
            return str(ami)
        except Exception as e:
            self._cleanup(ami, snapshot_id)
            raise ec2_error(e, "publishing the image") from e

    def image_params(self, label: Label, snapshot_id: str) -> dict[str, Any]:
        """register_image's parameters: HVM, ENA, the site's boot mode, IMDSv2 only, the root device."""
        return {"Name": label.slug, "Description": f"{label.name} registered by Rain from {label.image_id}",
                "Architecture": self.site.architecture, "RootDeviceName": ROOT_DEVICE, "VirtualizationType": "hvm",
                "EnaSupport": True, "BootMode": BOOT_MODES[self.site.firmware], "ImdsSupport": "v2.0",
                "BlockDeviceMappings": [{"DeviceName": ROOT_DEVICE, "Ebs": {
                    "SnapshotId": snapshot_id, "DeleteOnTermination": True, "VolumeType": "gp3"}}]}

    def _send_blocks(self, ebs: Any, snapshot_id: str, raw: Path) -> tuple[int, str]:
        """Send each non-zero block (bounded in flight); return the count and the aggregate checksum."""
        digests: dict[int, bytes] = {}
        slots = threading.BoundedSemaphore(self.site.workers * 2)  # bounds the blocks held in memory
        failed = threading.Event()
        futures: list[Future[None]] = []

        def put(index: int, data: bytes, digest: bytes) -> None:
            try:
                ebs.put_snapshot_block(SnapshotId=snapshot_id, BlockIndex=index, BlockData=data, DataLength=BLOCK,
                                       Checksum=base64.b64encode(digest).decode(), ChecksumAlgorithm="SHA256")
            except Exception:
                failed.set()
                raise
            finally:
                slots.release()

        with ThreadPoolExecutor(self.site.workers, thread_name_prefix="rain-ebs") as pool, open(raw, "rb") as f:
            index = 0
            while block := f.read(BLOCK):
                if len(block) < BLOCK:
                    block = block.ljust(BLOCK, b"\0")
                if block != ZERO:
                    digest = hashlib.sha256(block).digest()
                    digests[index] = digest
                    slots.acquire()
                    futures.append(pool.submit(put, index, block, digest))
                if failed.is_set():
                    break
                index += 1
            done, _ = wait(futures, return_when=FIRST_EXCEPTION)
            for fut in done:
                fut.result()  # re-raise the first failure
        aggregate = hashlib.sha256(b"".join(digests[i] for i in sorted(digests))).digest()
        return len(digests), base64.b64encode(aggregate).decode()

    def _wait_snapshot(self, ec2: Any, snapshot_id: str) -> None:
        def completed() -> bool:
            state = ec2.describe_snapshots(SnapshotIds=[snapshot_id])["Snapshots"][0]["State"]
            if state == "error":
                raise TargetError(f"EC2 snapshot {snapshot_id} ended in state error")
            return bool(state == "completed")

        if poll(completed, Deadline.after(self.site.timeout), 2):
            return
        raise TargetError(f"EC2 snapshot {snapshot_id} not completed after {self.site.timeout:.0f}s")

    def _cleanup(self, ami: str | None, snapshot_id: str | None) -> None:
        ec2 = self.client("ec2")
        undo = ((ec2.deregister_image, {"ImageId": ami}), (ec2.delete_snapshot, {"SnapshotId": snapshot_id}))
        for call, kwargs in undo:
            if next(iter(kwargs.values())):
                try:
                    call(**kwargs)
                except Exception as e:  # best effort while undoing; the original error is what matters
                    log.warning("cleanup %s failed: %s", call.__name__, e)

    def delete(self, remote_id: str) -> None:
        ec2 = self.client("ec2")
        try:
            images = ec2.describe_images(ImageIds=[remote_id])["Images"]
        except Exception as e:
            if "NotFound" in str(e):
                return
            raise ec2_error(e, "describe_images") from e
        snapshots = {t["Value"] for img in images for t in img.get("Tags", []) if t["Key"] == "rain:snapshot"}
        snapshots |= {m["Ebs"]["SnapshotId"] for img in images for m in img.get("BlockDeviceMappings", [])
                      if "Ebs" in m and "SnapshotId" in m["Ebs"]}
        try:
            ec2.deregister_image(ImageId=remote_id)
            for snapshot_id in snapshots:
                ec2.delete_snapshot(SnapshotId=snapshot_id)
        except Exception as e:
            raise ec2_error(e, "deleting the AMI") from e

"""The ec2 launch site: instances (run_instances) of the AMI Rain registered, through boto3.

Rain imports the launch's public key as a key pair `rain-launch-TAG` (cloud-init gives it to the
image's login user) and starts each instance of the AMI with the instance type (`--size`, else the
site's `instance_type`), the key pair, the site's subnet and security groups, the tags Name =
`rain-TAG-nodeI` and rain-launch = TAG, and user data holding its host key (cloud.py); its ClientToken
is its name, so a retried call starts no second instance. Its address is its public IPv4 if it has
one, else its private one. Releasing terminates every instance EC2 lists with the launch's tag (and
those Rain knows), and deletes the key pair.
"""

from __future__ import annotations

import logging
from typing import Any, ClassVar

from rain.errors import TargetError
from rain.host.ssh import KeyPair
from rain.launch.cloud import META, CloudSite
from rain.launch.fleet import cloud_config
from rain.register.targets.ec2 import Ec2Target, ec2_calls
from rain.waiting import Deadline, Pending, wait_for

log = logging.getLogger(__name__)
LIVE = ["pending", "running", "stopping", "stopped"]


class Ec2Launch(CloudSite):
    target: ClassVar[str] = "ec2"
    cloud: ClassVar[str] = "EC2 instance"
    size_setting: ClassVar[str] = "instance_type"

    def __init__(self, target: Ec2Target, site_name: str, user: str, size: str | None = None) -> None:
        super().__init__(site_name, user, target.site.ssh_port, size or target.site.instance_type)
        self.site = target.site
        self.ec2 = target.client("ec2")

    def _begin(self, tag: str, key: KeyPair) -> None:
        with ec2_calls("importing the launch's key pair"):
            self.ec2.import_key_pair(KeyName=f"rain-launch-{tag}", PublicKeyMaterial=key.public_line.encode(),
                                     TagSpecifications=[{"ResourceType": "key-pair",
                                                         "Tags": [{"Key": META, "Value": tag}]}])

    def _create(self, name: str, image_ref: str, tag: str, key: KeyPair, host_key: KeyPair) -> str:
        extra: dict[str, Any] = {}
        if self.site.subnet_id:
            extra["SubnetId"] = self.site.subnet_id
        if self.site.security_group_ids:
            extra["SecurityGroupIds"] = self.site.security_group_ids
        with ec2_calls(f"starting instance {name}"):
            answer = self.ec2.run_instances(
                ImageId=image_ref, InstanceType=self.size, KeyName=f"rain-launch-{tag}", MinCount=1, MaxCount=1,
                ClientToken=name, UserData=cloud_config(host_key), **extra,
                TagSpecifications=[{"ResourceType": "instance",
                                    "Tags": [{"Key": "Name", "Value": name}, {"Key": META, "Value": tag}]}])
        return str(answer["Instances"][0]["InstanceId"])

    def _wait_running(self, remote_id: str, deadline: Deadline) -> str:
        def running() -> str | Pending:
            try:
                with ec2_calls(f"describing instance {remote_id}"):
                    reservations = self.ec2.describe_instances(InstanceIds=[remote_id])["Reservations"]
            except TargetError as e:  # EC2 is eventually consistent: a new instance may not be found yet
                if "InvalidInstanceID.NotFound" in e.message:
                    return Pending("not yet known")
                raise
            if not reservations or not reservations[0]["Instances"]:
                return Pending("not yet known")
            instance = reservations[0]["Instances"][0]
            state = instance["State"]["Name"]
            if state in ("shutting-down", "terminated", "stopping", "stopped"):
                reason = instance.get("StateReason", {}).get("Message") or "no reason given"
                raise TargetError(f"EC2 instance {remote_id} went to {state}: {reason}",
                                  hint="check the AMI, the instance type and the account's limits")
            if state != "running":
                return Pending(state)
            address = instance.get("PublicIpAddress") or instance.get("PrivateIpAddress")
            if not address:
                raise TargetError(f"EC2 instance {remote_id} is running without an address",
                                  hint="check subnet_id in the targets file")
            return str(address)

        return wait_for(running, deadline, self.site.poll_interval, lambda state: TargetError(
            f"EC2 instance {remote_id} still {state} after {deadline.seconds:.0f}s",
            hint="the region may be slow or out of capacity; give --boot-timeout more seconds"))

    def _release(self, tag: str, known: list[str]) -> int:
        with ec2_calls("listing the launch's instances"):
            pages = self.ec2.get_paginator("describe_instances").paginate(Filters=[
                {"Name": f"tag:{META}", "Values": [tag]}, {"Name": "tag:Name", "Values": [f"rain-{tag}-*"]},
                {"Name": "instance-state-name", "Values": LIVE}])
            instances = set(known) | {i["InstanceId"] for page in pages for r in page["Reservations"]
                                      for i in r["Instances"]}
        if instances:
            with ec2_calls("terminating the launch's instances"):
                self.ec2.terminate_instances(InstanceIds=sorted(instances))
            log.info("EC2 instances %s terminated", ", ".join(sorted(instances)))
        with ec2_calls("deleting the launch's key pair"):
            self.ec2.delete_key_pair(KeyName=f"rain-launch-{tag}")
        return len(instances)

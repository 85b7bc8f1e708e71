"""Builder fixtures: the cloud SIMULATORS (Nova's in front of the real Keystone and Glance) and the qemu builder
image (defined in support/builders.py and support/openstack_cloud.py)."""

from support.builders import (  # noqa: F401
    opennebula_builder_env,
    opennebula_builders_file,
    opennebula_sim,
    openstack_builder_env,
    openstack_builders_file,
    openstack_sim,
    qemu_builder_env,
    qemu_bundle,
    qemu_settings,
)
from support.openstack_cloud import openstack_cloud  # noqa: F401

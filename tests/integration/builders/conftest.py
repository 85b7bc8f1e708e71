"""Builder fixtures: the cloud SIMULATORS and the qemu builder image (defined in support/builders.py)."""

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

"""Builder fixtures: the cloud SIMULATORS (cloud_env.py) and the qemu builder image (qemu_env.py)."""

from cloud_env import (  # noqa: F401
    opennebula_builder_env,
    opennebula_builders_file,
    opennebula_sim,
    openstack_builder_env,
    openstack_builders_file,
    openstack_sim,
)
from qemu_env import qemu_builder_env, qemu_bundle, qemu_settings  # noqa: F401, E402

"""Register integration fixtures: the target sites (support/sites.py) and the qemu builder bundle, adapt's
default sandbox (support/builders.py)."""

from support.builders import qemu_bundle  # noqa: F401
from support.openstack_cloud import edge_keystone, glance, openstack_cloud  # noqa: F401
from support.sites import bad_tarball, clean_tarball, moto_url, repos, sites  # noqa: F401

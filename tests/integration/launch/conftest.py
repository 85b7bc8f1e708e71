"""Launch integration fixtures: the real Keystone and Glance with the Nova SIMULATOR in their catalog
(support/builders.py), and the target sites (support/sites.py) the image is registered on first."""

from support.builders import openstack_sim  # noqa: F401
from support.openstack_cloud import openstack_cloud  # noqa: F401
from support.sites import clean_tarball, moto_url, sites  # noqa: F401

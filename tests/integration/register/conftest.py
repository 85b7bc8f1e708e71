"""Register integration fixtures live in register_sites.py (importable by the tests by that name)."""

from register_sites import bad_tarball, clean_tarball, moto_url, repos, sites  # noqa: F401

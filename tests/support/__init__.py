"""What the tests share: helpers and fixture definitions, importable as `support.*` from any test tree.

pyproject.toml puts tests/ on pytest's path (`pythonpath = ["tests"]`), so no test
edits sys.path. Fixtures defined here become visible to a tree only when its
conftest.py imports them; nothing here runs at import time beyond definitions.

- cli.py: the `fg-image` console script, the recipes directory, free ports, reading its output.
- repository.py: putting bytes and image files into a repository, waiting, expected errors.
- images.py: small fake image trees and archives, and reading the files of a built image.
- hostile_tars.py: hand-made hostile tar archives and a canary tree for the unpacker tests.
- built_images.py: the real Debian images, generated once into the test cache.
- builders.py: the cloud builder simulators and the qemu builder image (fixtures).
- sites.py: the register targets' sites on 127.0.0.1 (fixtures).
- rpmrepo.py: a tiny real RPM repository for the RHEL path.
- host.py: what a run leaves on the host (mounts) and children that Ctrl-C can stop.
- openstack_cloud.py: the real Keystone and Glance, on 127.0.0.1 once per session (fixtures).
- browser.py: Debian's chromium driven by Playwright (fixtures), screenshots into the test output.
- web.py: a repository with users, tokens and images for the web catalog's tests, and signing in.
- simulators/: OpenNebula, Nova, SSH VMs, fault and connection-cutting proxies.
"""

"""`fg-image generate/batch --builder opennebula|openstack` end to end, against the cloud SIMULATORS.

The simulators (tests/support/simulators/) speak the real OpenNebula XML-RPC and Nova APIs (the openstack
builder logs in to the real Keystone and finds its builder image in the real Glance; only Nova is simulated);
each VM they "boot" is a real sshd on 127.0.0.N, so the whole build (the cached base system sent, apt-get, the
recipe's files, the tar stream back) really runs over SSH; it just runs on this host.
"""

from __future__ import annotations

import json
import shlex
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from support.builders import ONE_PASSWORD_ENV, OS_PASSWORD_ENV, OS_USER, BuildersFile  # fixtures: conftest.py
from support.cli import RECIPES
from support.images import manifest, tar_names
from support.openstack_cloud import password
from support.rpmrepo import build_rpm_repo

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
RECIPE = RECIPES / "debian-bookworm-minimal.yaml"


def _env(file: BuildersFile) -> dict[str, str]:
    secrets = {"opennebula": (ONE_PASSWORD_ENV, "one-secret"), "openstack": (OS_PASSWORD_ENV, password(OS_USER))}
    var, value = secrets[file.section]
    return {"RAIN_BUILDERS_FILE": str(file.path), var: value}


def _build(gen: Any, out: Path, *extra: str, env: dict[str, str] | None = None) -> dict[str, Any]:
    r = gen("generate", str(RECIPE), "--no-upload", "--output", str(out), "--json", *extra, env=env or {})
    assert r.returncode == 0, r.stderr
    return manifest(out)


def _vm_build_dirs() -> set[Path]:
    """The build directories simulated builder VMs made on this host (theirs is this host's /var/tmp). A test
    compares what it leaves with what was there before it: a run stopped by SIGKILL may have left one."""
    return set(Path("/var/tmp").glob("rain-build.*"))


def _package_set(m: dict[str, Any]) -> set[tuple[str, str]]:
    return {(p["name"], p["version"]) for p in m["packages"]}


def test_an_opennebula_builder_vm_builds_the_same_image_as_the_local_builder(
        gen: Any, tmp_path: Path, opennebula_builders_file: BuildersFile, opennebula_sim: Any) -> None:
    before = _vm_build_dirs()
    local = _build(gen, tmp_path / "local")
    remote = _build(gen, tmp_path / "one", "--builder", "opennebula", env=_env(opennebula_builders_file))
    assert remote["builder"] == "opennebula" and local["builder"] == "local"
    # the VM got the base system this host cached (over SSH: not a VM on this host), not a bootstrap
    assert (remote["base"]["base_layer"], remote["base"]["base_key"]) == ("sent", local["base"]["base_key"])
    assert _package_set(remote) == _package_set(local)
    assert remote["recipe_hash"] == local["recipe_hash"], "the same recipe: only where it ran differs"
    assert remote["artifacts"][0]["sha256"] == local["artifacts"][0]["sha256"], "a builder VM makes the same bytes"
    names = tar_names(tmp_path / "one" / "debian-bookworm-minimal.tar.zst")
    assert {"etc/motd", "usr/sbin/update-ca-certificates", "var/lib/dpkg/status"} <= names
    assert "usr/sbin/policy-rc.d" not in names and "etc/resolv.conf" not in names
    assert "dev/null" not in names, "no device nodes come back from a builder"
    assert [vm.state for vm in opennebula_sim.vms.values()] == [6], "one VM, and it was terminated"
    assert _vm_build_dirs() <= before, "the build's files left the (simulated) VM"


def test_a_clone_extends_a_repository_image_on_a_builder_vm(
        gen: Any, fg: Any, tmp_path: Path, openstack_builders_file: BuildersFile) -> None:
    r = gen("generate", str(RECIPE), "--set", "name=clone-base")
    assert r.returncode == 0, r.stderr
    base_id = r.stdout.split()[0]
    recipe = tmp_path / "clone.yaml"
    recipe.write_text(yaml.safe_dump({
        "name": "cloned-on-a-vm", "os": {"family": "debian", "release": "bookworm", "arch": "amd64"},
        "base": base_id, "packages": ["less"],
        "files": [{"path": "/etc/rain-clone", "content": "cloned\n"}]}))
    out = tmp_path / "out"
    r = gen("generate", str(recipe), "--builder", "openstack", "--no-upload", "--output", str(out),
            env=_env(openstack_builders_file))
    assert r.returncode == 0, r.stderr
    m = manifest(out)
    assert m["builder"] == "openstack"
    assert {"less", "ca-certificates"} <= {p["name"] for p in m["packages"]}
    names = tar_names(out / "cloned-on-a-vm.tar.zst")
    assert {"etc/rain-clone", "usr/bin/less", "etc/motd"} <= names  # added on the VM + kept from the base


def test_a_batch_spreads_over_the_pool_and_reports_a_failed_build(
        gen: Any, tmp_path: Path, openstack_builders_file: BuildersFile, openstack_sim: Any) -> None:
    openstack_builders_file.update(limit=1)
    batch = tmp_path / "batch.yaml"
    batch.write_text(yaml.safe_dump({"recipes": [
        {"path": str(RECIPE), "set": {"name": "pool-a"}},
        {"path": str(RECIPE), "set": {"name": "pool-b", "packages": ["no-such-package-rain"]}}]}))
    r = gen("batch", str(batch), "--builder", "openstack", "--jobs", "2", "--keep-going", "--no-upload",
            "--no-cache", "--json", env=_env(openstack_builders_file))
    assert r.returncode != 0, f"a failed build fails the batch: {r.stdout}"
    outcomes = {o["name"]: o for o in json.loads(r.stdout)}
    assert outcomes["pool-a"]["status"] == "built"
    assert outcomes["pool-b"]["status"] == "failed"
    assert "no-such-package-rain" in outcomes["pool-b"]["error"]
    assert openstack_sim.max_live_servers == 1, "limit: 1 keeps the pool to one VM at a time"
    assert openstack_sim.servers == {}, "every VM was deleted, the failed one too"


@pytest.mark.timeout(1800)  # two TCG VMs at once
def test_two_qemu_builds_with_jobs_2_match_the_local_build(gen: Any, tmp_path: Path,
                                                          qemu_bundle: tuple[str, Path]) -> None:
    """Two real QEMU builder VMs at once (TCG here): one builds the minimal recipe on the base system the
    local build left in the base cache (its squashfs image on the VM's base disk, the lower layer of the
    image root there; not bootstrapped there) and must give the same tar.zst, byte for byte, as the local
    build of that recipe (issue #16: a builder VM is no reason for other bytes), including what its steps
    deleted from the base; the other clones that local build from the repository and adds to it. The first
    sends back only its overlay's upper layer, the clone its whole tree, both on the VMs' outbound disks
    through the safe unpacker. The package is `less`, not the recipe's ca-certificates, whose postinst
    alone takes ~90 s under TCG."""
    from support.builders import write_builders_file

    builders = write_builders_file(tmp_path / "builders.yaml", qemu_bundle[0], cpus=1, limit=2)
    # `rm` without -f: the step fails unless the base has the file, so a build that passes deleted it
    steps = [["rm", "/etc/issue.net"], ["rm", "-r", "/usr/share/doc/gzip"]]
    r = gen("generate", str(RECIPE), "--set", "name=qemu-a", "--set", "packages=[less]",
            "--set", f"run={json.dumps(steps)}", "--output", str(tmp_path / "local"))
    assert r.returncode == 0, r.stderr
    base_id, local = r.stdout.split()[0], manifest(tmp_path / "local")
    clone = tmp_path / "clone.yaml"
    clone.write_text(yaml.safe_dump({
        "name": "qemu-b", "os": {"family": "debian", "release": "bookworm", "arch": "amd64"}, "base": base_id,
        "files": [{"path": "/etc/rain-clone", "content": "cloned on a qemu builder\n"}]}))
    batch = tmp_path / "batch.yaml"
    batch.write_text(yaml.safe_dump({"recipes": [
        {"path": str(RECIPE), "set": {"name": "qemu-a", "packages": ["less"], "run": steps}},
        {"path": str(clone)}]}))
    r = gen("batch", str(batch), "--builder", "qemu", "--jobs", "2", "--no-upload",
            "--output", str(tmp_path / "vm"), "--json", env={"RAIN_BUILDERS_FILE": str(builders)}, timeout=1800)
    assert r.returncode == 0, r.stderr[-3000:]
    outcomes = {o["name"]: o for o in json.loads(r.stdout)}
    assert outcomes["qemu-a"]["status"] == outcomes["qemu-b"]["status"] == "built"
    vm_a, vm_b = manifest(tmp_path / "vm" / "qemu-a"), manifest(tmp_path / "vm" / "qemu-b")
    assert (vm_a["builder"], vm_b["builder"], local["builder"]) == ("qemu", "qemu", "local")
    sent = vm_a["base"]
    assert (sent["base_cached"], sent["base_layer"], sent["base_key"]) \
        == (True, "attached", local["base"]["base_key"])
    assert vm_a["source_date_epoch"] == local["source_date_epoch"] is not None
    assert _package_set(vm_a) == _package_set(local)
    names_a = tar_names(tmp_path / "vm" / "qemu-a" / "qemu-a.tar.zst")
    assert not {n for n in names_a if n == "etc/issue.net" or n.startswith("usr/share/doc/gzip")}, \
        "what the VM deleted from the base stays deleted here"
    assert {"usr/share/doc/less/copyright", "etc/motd"} <= names_a, "the rest of the base is all there"
    assert vm_a["artifacts"][0]["sha256"] == local["artifacts"][0]["sha256"], \
        "the qemu builder makes the same tar.zst as the local builder"
    assert _package_set(vm_b) == _package_set(local), "a clone keeps its base"
    names = tar_names(tmp_path / "vm" / "qemu-b" / "qemu-b.tar.zst")
    assert {"etc/rain-clone", "etc/motd"} <= names  # added on the VM + kept from the base


@pytest.mark.timeout(900)
def test_a_rocky_recipe_builds_on_the_qemu_builder_with_the_local_package_set(
        gen: Any, tmp_path: Path, qemu_bundle: tuple[str, Path]) -> None:
    """`variant: important`: the @core base is made here and sent; dnf runs in the VM for the recipe's packages
    (no RHEL mirror is reachable: a local RPM repository made here, which the VM cannot read from this host,
    so Rain sends its directory with dnf's configuration). The VM's dnf and rpm record the base's epoch, and
    the image is the same bytes as the one built here."""
    from support.builders import write_builders_file

    repo = build_rpm_repo(tmp_path, ("rain-probe", "rain-extra"), core=("rain-probe",))
    builders = write_builders_file(tmp_path / "builders.yaml", qemu_bundle[0], cpus=1)
    argv = ["generate", str(RECIPES / "rocky9.yaml"), "--no-upload", "--format", "tar.zst",
            "--set", f"repositories=[{{name: local, url: 'file://{repo}', trusted: true}}]",
            "--set", "variant=important", "--set", "packages=[rain-extra]"]
    r = gen(*argv, "--output", str(tmp_path / "local"))
    assert r.returncode == 0, r.stderr
    r = gen(*argv, "--builder", "qemu", "--no-cache", "--output", str(tmp_path / "vm"),
            env={"RAIN_BUILDERS_FILE": str(builders)})
    assert r.returncode == 0, r.stderr[-3000:]
    local, vm = manifest(tmp_path / "local"), manifest(tmp_path / "vm")
    assert (vm["builder"], local["builder"]) == ("qemu", "local")
    # the @core base (rain-probe) was made here and sent; rain-extra was installed by dnf in the VM
    assert (vm["base"]["base_layer"], vm["base"]["base_key"]) == ("attached", local["base"]["base_key"])
    assert {(p["name"], p["version"], p["arch"]) for p in vm["packages"]} \
        == {(p["name"], p["version"], p["arch"]) for p in local["packages"]} \
        == {("rain-probe", "1.0-1", "noarch"), ("rain-extra", "1.0-1", "noarch")}
    names = tar_names(tmp_path / "vm" / "rocky9-base.tar.zst")
    assert {"usr/share/rain-probe/README", "usr/share/rain-extra/README"} <= names
    assert any(n.startswith("var/lib/rpm/") for n in names), "the rpm database the VM's dnf wrote"
    assert not any(n.startswith(("var/tmp/rain-build", "var/cache/dnf/")) for n in names), \
        "neither the machine's workspace nor dnf's cache is in the image"
    assert vm["artifacts"][0]["sha256"] == local["artifacts"][0]["sha256"], "the VM's dnf made the same bytes"


def test_a_rocky_minbase_recipe_on_a_builder_vm_is_the_same_bytes_as_one_built_here(
        gen: Any, tmp_path: Path, opennebula_builders_file: BuildersFile, opennebula_sim: Any) -> None:
    """`variant: minbase`: dnf makes the whole system on the machine, from no base made here. Rain first asks
    the machine's own dnf what the install adds, so its rpm records their newest build time as every
    install time, as here: the same bytes, and the epoch is rain-extra's build time."""
    built = 1_700_000_000  # rain-probe's BUILDTIME; rain-extra's a minute later
    repo = build_rpm_repo(tmp_path, ("rain-probe", "rain-extra"), built=built)
    argv = ["generate", str(RECIPES / "rocky9.yaml"), "--no-upload", "--format", "tar.zst",
            "--set", f"repositories=[{{name: local, url: 'file://{repo}', trusted: true}}]",
            "--set", "variant=minbase", "--set", "packages=[rain-probe, rain-extra]"]
    r = gen(*argv, "--output", str(tmp_path / "local"))
    assert r.returncode == 0, r.stderr
    r = gen(*argv, "--builder", "opennebula", "--output", str(tmp_path / "vm"), env=_env(opennebula_builders_file))
    assert r.returncode == 0, r.stderr[-3000:]
    local, vm = manifest(tmp_path / "local"), manifest(tmp_path / "vm")
    assert (vm["builder"], local["builder"]) == ("opennebula", "local")
    assert vm["source_date_epoch"] == local["source_date_epoch"] == built + 60
    assert vm["artifacts"][0]["sha256"] == local["artifacts"][0]["sha256"], "the machine's dnf made the same bytes"


def test_a_missing_rpm_on_a_builder_vm_is_named_in_one_line_and_the_vm_is_deleted(
        gen: Any, tmp_path: Path, opennebula_builders_file: BuildersFile, opennebula_sim: Any) -> None:
    before = _vm_build_dirs()
    repo = build_rpm_repo(tmp_path)
    r = gen("generate", str(RECIPES / "rocky9.yaml"), "--builder", "opennebula", "--no-upload", "--no-cache",
            "--set", f"repositories=[{{name: local, url: 'file://{repo}', trusted: true}}]",
            "--set", "packages=[rain-probe, no-such-rpm]", env=_env(opennebula_builders_file))
    assert r.returncode == 2, r.stderr
    errors = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "'no-such-rpm' does not exist" in errors[0], r.stderr
    assert [vm.state for vm in opennebula_sim.vms.values()] == [6], "the VM was terminated"
    assert _vm_build_dirs() <= before, "the build's files left the (simulated) VM"


def test_on_error_keep_leaves_the_failed_builder_vm_and_says_how_to_reach_it(
        gen: Any, tmp_path: Path, opennebula_builders_file: BuildersFile, opennebula_sim: Any) -> None:
    from rain.clouds.opennebula import OneClient
    from rain.errors import BuildError

    before = _vm_build_dirs()
    r = gen("generate", str(RECIPE), "--builder", "opennebula", "--on-error", "keep", "--no-upload", "--no-cache",
            "--set", "packages=[no-such-package-rain]", env=_env(opennebula_builders_file))
    assert r.returncode == 2, r.stderr
    errors = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "no-such-package-rain" in errors[0]
    kept = [line for line in r.stderr.splitlines() if "kept the failed builder machine" in line]
    assert len(kept) == 1 and "onevm terminate" in kept[0], r.stderr
    (vm,) = opennebula_sim.vms.values()
    assert vm.state != 6, "the failed build's VM is still there for inspection"
    assert _vm_build_dirs() - before, "with the build's files"
    login = shlex.split(kept[0].split("left running: ")[1].split(";")[0])
    assert login[0] == "ssh" and Path(login[2]).stat().st_mode & 0o777 == 0o600
    r = subprocess.run([*login, "-o", "BatchMode=yes", "test", "-d", "/var/tmp"], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, f"the printed ssh line logs in with the pinned host key: {r.stderr}"
    one = OneClient(opennebula_sim.endpoint, "rain", "one-secret", failure=BuildError, settings_file="test")
    one("one.vm.action", "terminate-hard", vm.id)  # what the kept line says to do, by hand
    for leftover in _vm_build_dirs() - before:
        subprocess.run(["rm", "-rf", "--one-file-system", str(leftover)], check=True)

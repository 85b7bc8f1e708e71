"""Each vetting rule fires on the thing a user would be told about, and stays quiet on a clean tree."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import pytest
from support.images import PRIVATE_KEY, make_bad_tree, make_tree

from rain.register.models import Severity, Verdict, VetPolicy
from rain.register.rules import all_rules
from rain.register.vet import vet_tree

STRICT = VetPolicy("hpc", Severity.MEDIUM, frozenset({"kernel"}))
EC2 = VetPolicy("ec2", Severity.HIGH, frozenset({"kernel", "nvme_ena"}))


def rules_of(report) -> set[str]:
    return {f.rule for f in report.findings}


def write(root: Path, rel: str, text: str, mode: int = 0o644) -> None:
    p = root / rel.lstrip("/")
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(text)
    os.chmod(p, mode)


def test_clean_tree_passes_the_strictest_policy(tmp_path):
    report = vet_tree(make_tree(tmp_path / "r"), "clean", STRICT, "hpc")
    assert report.verdict == Verdict.PASS, report.findings
    assert report.findings == []


def test_every_rule_has_id_severity_message_and_hint():
    for rule in all_rules().values():
        assert rule.id and rule.message and rule.hint and isinstance(rule.severity, Severity)


def test_bad_tree_names_each_rule_and_fails(tmp_path):
    report = vet_tree(make_bad_tree(tmp_path / "r"), "bad", STRICT, "hpc")
    assert report.verdict == Verdict.FAIL
    assert {"empty-password", "ssh-host-keys", "private-keys"} <= {f.rule for f in report.blocking}
    keys = next(f for f in report.findings if f.rule == "private-keys")
    assert keys.paths == ["/root/.ssh/id_ed25519"]
    assert "vetting failed" in report.summary() and "empty-password" in report.summary()


@pytest.mark.parametrize("setup, rule", [
    (lambda r: write(r, "/etc/shadow", "root:$1$x$abc:1:0:99999:7:::\n"), None),
    (lambda r: write(r, "/etc/passwd", "root:x:0:0::/root:/bin/sh\ntoor:x:0:0::/root:/bin/sh\n"), "extra-uid0"),
    (lambda r: write(r, "/root/.ssh/authorized_keys", "ssh-ed25519 AAAA me\n"), "root-authorized-keys"),
    (lambda r: write(r, "/etc/ssh/sshd_config.d/x.conf", "PermitRootLogin yes\n"), "sshd-root-login"),
    (lambda r: write(r, "/etc/ssh/sshd_config", "PasswordAuthentication yes\n"), "sshd-password-login"),
    (lambda r: write(r, "/home/alice/.netrc", "machine x login a password b\n"), "credential-files"),
    (lambda r: write(r, "/root/.aws/credentials", "[default]\naws_secret_access_key=x\n"), "credential-files"),
    (lambda r: write(r, "/home/alice/.bash_history", "mysql -psecret\n"), "shell-history"),
    (lambda r: write(r, "/etc/cron.d/job", "* * * * * root x\n", 0o666), "world-writable"),
    (lambda r: write(r, "/usr/local/bin/rootme", "#!/bin/sh\n", 0o4755), "setuid-unlisted"),
    (lambda r: write(r, "/etc/apt/sources.list", "deb [trusted=yes] http://x.invalid/ stable main\n"),
     "unsigned-sources"),
    (lambda r: write(r, "/etc/apt/sources.list.d/x.sources", "Types: deb\nTrusted: yes\n"), "unsigned-sources"),
    (lambda r: write(r, "/etc/yum.repos.d/x.repo", "[x]\ngpgcheck=0\n"), "unsigned-sources"),
    (lambda r: write(r, "/opt/app/key.pem", PRIVATE_KEY), "private-keys"),
])
def test_rule_fires(tmp_path, setup, rule):
    root = make_tree(tmp_path / "r")
    setup(root)
    found = rules_of(vet_tree(root, "x", STRICT, "hpc"))
    assert (rule in found) if rule else found == set()


def test_known_password_hash_is_recognised(tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import crypt  # stdlib up to 3.12, which Rain's venv runs
    root = make_tree(tmp_path / "r")
    write(root, "/etc/shadow", f"root:{crypt.crypt('changeme', crypt.mksalt(crypt.METHOD_SHA512))}:1:0:::::\n")
    assert "known-password" in rules_of(vet_tree(root, "x", STRICT, "hpc"))


def test_sticky_shared_directories_are_not_world_writable_findings(tmp_path):
    root = make_tree(tmp_path / "r")
    (root / "var/lib/shared").mkdir(parents=True)
    os.chmod(root / "var/lib/shared", 0o1777)
    assert "world-writable" not in rules_of(vet_tree(root, "x", STRICT, "hpc"))


def test_kernel_rule_only_where_the_target_needs_one(tmp_path):
    root = make_tree(tmp_path / "r", kernel=False)
    assert "kernel-missing" not in rules_of(vet_tree(root, "x"))
    report = vet_tree(root, "x", STRICT, "hpc")
    assert report.verdict == Verdict.FAIL and "kernel-missing" in rules_of(report)


def test_ec2_needs_nvme_and_ena(tmp_path):
    root = make_tree(tmp_path / "r")
    assert vet_tree(root, "x", EC2, "ec2").verdict == Verdict.PASS
    dep = next((root / "lib/modules").iterdir()) / "modules.dep"
    dep.write_text("kernel/drivers/nvme/host/nvme.ko:\n")
    report = vet_tree(root, "x", EC2, "ec2")
    assert report.verdict == Verdict.FAIL and "kernel-nvme-ena" in rules_of(report)


def test_bare_metal_is_stricter_than_clouds(tmp_path):
    root = make_tree(tmp_path / "r")
    write(root, "/usr/local/bin/tool", "#!/bin/sh\n", 0o4755)  # medium
    assert vet_tree(root, "x", STRICT, "hpc").verdict == Verdict.FAIL
    assert vet_tree(root, "x", EC2, "ec2").verdict == Verdict.PASS


def test_accepted_rule_no_longer_blocks_but_stays_in_the_report(tmp_path):
    root = make_tree(tmp_path / "r")
    write(root, "/usr/local/bin/tool", "#!/bin/sh\n", 0o4755)
    report = vet_tree(root, "x", STRICT, "hpc", accepted=["setuid-unlisted"])
    assert report.verdict == Verdict.PASS
    finding = next(f for f in report.findings if f.rule == "setuid-unlisted")
    assert finding.accepted and not finding.blocking


def test_links_in_the_image_never_reach_host_files(tmp_path):
    root = make_tree(tmp_path / "r")
    (root / "etc/shadow").unlink()
    os.symlink("/etc/shadow-host-does-not-matter", root / "etc/shadow")
    os.symlink("/", root / "root/.ssh") if (root / "root").exists() else None
    report = vet_tree(root, "x", STRICT, "hpc")  # would read the host's /root/.ssh if links were followed
    assert "private-keys" not in rules_of(report)


def test_the_vetting_guide_lists_every_rule():
    guide = (Path(__file__).resolve().parents[3] / "docs" / "vetting.md").read_text()
    missing = [r for r in all_rules() if f"| `{r}` |" not in guide]
    assert missing == [], f"docs/vetting.md does not describe {missing}"

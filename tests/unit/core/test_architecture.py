"""Architecture names: a recipe may say either Debian's or the kernel's name, and each tool gets its own."""

from __future__ import annotations

import platform

import pytest

from rain.arch import Architecture


@pytest.mark.parametrize(("name", "deb", "rpm", "cloud", "qemu"), [
    ("amd64", "amd64", "x86_64", "x86_64", "qemu-system-x86_64"),
    ("x86_64", "amd64", "x86_64", "x86_64", "qemu-system-x86_64"),
    ("arm64", "arm64", "aarch64", "aarch64", "qemu-system-aarch64"),
    ("aarch64", "arm64", "aarch64", "aarch64", "qemu-system-aarch64"),
    ("ppc64el", "ppc64el", "ppc64le", "ppc64le", "qemu-system-ppc64"),
    ("ppc64le", "ppc64el", "ppc64le", "ppc64le", "qemu-system-ppc64"),
    ("s390x", "s390x", "s390x", "s390x", "qemu-system-s390x"),
])
def test_either_spelling_of_an_architecture_gives_every_tools_name(name: str, deb: str, rpm: str, cloud: str,
                                                                  qemu: str) -> None:
    arch = Architecture.lookup(name)
    assert arch is not None
    assert (arch.deb, arch.rpm, arch.cloud, arch.qemu) == (deb, rpm, cloud, qemu)


@pytest.mark.parametrize("name", ["i386", "armhf", "x86-64", "AMD64", ""])
def test_an_architecture_rain_does_not_build_is_unknown(name: str) -> None:
    assert Architecture.lookup(name) is None


def test_uname_names_are_the_kernels_not_debians() -> None:
    assert Architecture.from_uname("x86_64") is Architecture.X86_64
    assert Architecture.from_uname("aarch64") is Architecture.ARM64
    assert Architecture.from_uname("amd64") is None


def test_this_host_is_an_architecture_rain_knows() -> None:
    assert Architecture.native().value == platform.machine()

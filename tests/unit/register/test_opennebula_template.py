"""OpenNebula templates Rain writes: whatever a value holds, it stays that one value.

Read back with the OpenNebula simulator's template parser (tests/support/simulators/opennebula.py), which
tokenizes quoted strings with backslash escapes as oned's template parser does, and, written out as oned
writes a TEMPLATE element, through pyone's bindings as Rain reads it.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from pyone import bindings
from support.simulators.opennebula import parse_template, template_xml

from rain.clouds.opennebula import render_template, template_from_pyone
from rain.config import load_settings
from rain.register.models import Label
from rain.register.targets.opennebula import OpenNebulaSite, OpenNebulaTarget

HOSTILE = ['x"\nEVIL = "1', 'y" ]\nCONTEXT = [ A = "b', 'z\\" EVIL2 = "', 'w\\\\"\nEVIL3 = "\\']
IN_XML = ["]]><EVIL>1</EVIL><![CDATA[", "</TEMPLATE><EVIL/>", "a & b < c"]


def _target(tmp_path: Path) -> OpenNebulaTarget:
    settings = load_settings(environ={"RAIN_CONFIG": str(tmp_path / "none.toml"), "RAIN_DATA_DIR": str(tmp_path)})
    site = OpenNebulaSite(endpoint="http://one.invalid:2633/RPC2", username="u", password_env="RAIN_UT_ONE",
                          staging_dir=tmp_path / "staging")
    return OpenNebulaTarget(site, "default", settings, offline=True)


@pytest.mark.parametrize("name", HOSTILE)
def test_an_image_name_with_quotes_brackets_or_newlines_cannot_add_a_template_attribute(tmp_path, name):
    label = Label("0123456789ab", name, "debian", "12", "x86_64")
    parsed = parse_template(_target(tmp_path).template(label, "/staging/disk.qcow2"))
    assert [k for k, _ in parsed] == ["NAME", "PATH", "TYPE", "DRIVER", "FORMAT", "DEV_PREFIX", "RAIN_FIRMWARE",
                                      "DESCRIPTION", "RAIN_IMAGE"]
    values = dict(parsed)
    assert values["NAME"] == label.slug
    assert values["DESCRIPTION"] == f"{name} registered by Rain from 0123456789ab"


@pytest.mark.parametrize("value", HOSTILE)
def test_a_vector_value_cannot_close_its_vector_or_add_an_attribute(value):
    parsed = parse_template(render_template([("NAME", value), ("CONTEXT", [("SSH_PUBLIC_KEY", value),
                                                                           ("NETWORK", "YES")])]))
    assert parsed == [("NAME", value), ("CONTEXT", {"SSH_PUBLIC_KEY": value, "NETWORK": "YES"})]


@pytest.mark.parametrize("value", HOSTILE + IN_XML)
def test_a_template_read_back_through_pyone_is_the_template_rain_wrote(value):
    written = [("NAME", value), ("MEMORY", "512"), ("NIC", [("NETWORK_ID", "0")]), ("NIC", [("NETWORK_ID", "1")]),
               ("CONTEXT", [("SSH_PUBLIC_KEY", value), ("EMPTY", "")])]
    as_oned_writes_it = template_xml(parse_template(render_template(written)))
    vm_template = bindings.parseString(
        f"<VMTEMPLATE><ID>1</ID><NAME>t</NAME><TEMPLATE>{as_oned_writes_it}</TEMPLATE></VMTEMPLATE>".encode())
    assert template_from_pyone(vm_template.TEMPLATE) == written

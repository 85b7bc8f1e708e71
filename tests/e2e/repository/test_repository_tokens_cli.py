"""`fg-image users token ...` as a user runs it: make, list, revoke one, revoke all; tokens used against
the real `fg-image serve`."""

from __future__ import annotations

import pytest
from support.cli import json_out

pytestmark = [pytest.mark.e2e, pytest.mark.integration]


def test_tokens_are_made_listed_and_revoked_from_the_command_line(fg, service):
    def ok(*args: str, env: dict[str, str] | None = None) -> str:
        result = fg(*args, env=env)
        assert result.returncode == 0, result.stderr
        return result.stdout

    def as_holder(token: str, *args: str) -> tuple[int, str]:
        result = fg("--repo", service.url, "--token", token, *args)
        return result.returncode, result.stderr

    ok("users", "add", "alice")
    old_form = ok("users", "token", "alice").strip()  # what scripts have always run: the secret alone
    assert old_form.startswith("rain_") and "\n" not in old_form
    made = json_out(fg("users", "token", "alice", "--name", "ci-runner", "--expires", "30d", "--json"))
    assert (made["name"], made["user"]) == ("ci-runner", "alice") and made["expires"]

    listing = ok("users", "token", "list", "alice")
    assert "ci-runner" in listing and made["id"] in listing and "never" in listing
    assert old_form not in listing and made["token"] not in listing
    assert as_holder(made["token"], "list")[0] == 0

    said = ok("users", "token", "revoke", made["id"], "--user", "alice")
    assert made["id"] in said and "ci-runner" in said
    code, err = as_holder(made["token"], "list")
    assert code == 5 and "not valid" in err
    assert as_holder(old_form, "list")[0] == 0  # revoking one leaves the other

    bad = fg("users", "token", "alice", "--expires", "soon")
    assert bad.returncode == 2 and bad.stderr.startswith("error: bad expiry 'soon'")
    assert "revoked all 1 token(s) of alice" in ok("users", "token", "revoke", "--all", "alice")
    assert as_holder(old_form, "list")[0] == 5
    assert "no tokens" in ok("users", "token", "list", "alice")

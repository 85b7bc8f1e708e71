"""Fuzz the service through its own OpenAPI schema (schemathesis) as anonymous, alice and admin.

Every operation in GET /api/v1/openapi.json gets generated requests, valid and invalid,
from three callers: no token, alice (a plain user with one image of her own) and an
administrator (last: their calls may delete users and collect garbage in this throwaway
database). Every answer must be no 5xx, declared in the schema, and shaped as declared
(errors as {"error", "message", "hint"}); valid requests must not be refused as invalid,
invalid ones must be. Runs are bounded and derandomized: the same requests every run.

Nothing is left out. The upload PUT is fuzzed like the rest (its body is declared as
bytes; with no upload waiting, every try is a 404); uploading real bytes through it is
tested by hand in test_repository_service.py and the contract suite.
"""

from __future__ import annotations

import time
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from support.repository import payload, put

from rain.repository.client import Client
from rain.repository.connect import open_store

pytestmark = [pytest.mark.integration, pytest.mark.slow]
EXAMPLES = 20
"""Generated requests per operation, caller and mode: about 3,000 cases in all, in under 2 minutes."""
FUZZ = hypothesis_settings(max_examples=EXAMPLES, derandomize=True, database=None, deadline=None,
                phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))


def _real_ids(case: Any, use: bool, real: dict[str, str]) -> Any:
    """Point half the valid requests at what exists (alice's image, alice), not only at random ids."""
    if use:
        for name, value in real.items():
            if name in (case.path_parameters or {}):
                case.path_parameters[name] = value
    return case


def _fuzz(operation: Any, mode: GenerationMode, token: str | None, url: str, real: dict[str, str]) -> list[str]:
    """The first failure of this operation for this caller and mode, if any, as one line."""
    found: list[str] = []
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    cases = operation.as_strategy(generation_mode=mode)
    if mode is GenerationMode.POSITIVE:  # an invalid request must stay invalid: only valid ones get real ids
        cases = st.tuples(cases, st.booleans()).map(lambda pair: _real_ids(pair[0], pair[1], real))

    @FUZZ
    @given(case=cases)
    def run(case: Any) -> None:
        if found:
            return
        try:
            case.call_and_validate(base_url=url, headers=headers, timeout=30)
        except (AssertionError, BaseExceptionGroup) as e:  # failed checks: kept, reported with the others
            found.append(f"{operation.label} [{mode.value}]: {' '.join(str(e).split())[:1500]}")

    try:
        run()
    except Unsatisfiable:
        # No invalid request exists for an operation without inputs (GET /whoami): nothing to send.
        assert mode is GenerationMode.NEGATIVE, operation.label
    return found


def test_fuzzing_the_schema_finds_no_server_errors_and_no_undeclared_answers(settings, service):
    admin = open_store(settings, "admin")
    admin.add_user("alice")
    tokens = {"anonymous": None, "alice": admin.issue_token("alice"), "admin": admin.issue_token("admin")}
    image = put(Client(service.url, tokens["alice"]), payload(4096), "alices")
    real = {"image_id": image.id, "upload_id": image.id, "name": "alice"}
    schema = schemathesis.openapi.from_url(service.url + "/api/v1/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 25, [op.label for op in operations]

    started, failures = time.monotonic(), []
    for who, token in tokens.items():
        for operation in operations:
            for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
                failures += [f"as {who}: {f}" for f in _fuzz(operation, mode, token, service.url, real)]
    assert not failures, f"{len(failures)} failures:\n" + "\n".join(failures)
    assert time.monotonic() - started < 300, "the fuzzing run outgrew its budget; lower EXAMPLES"

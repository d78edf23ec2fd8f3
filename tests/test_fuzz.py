"""Property-based fuzzing of the whole API from its own OpenAPI schema (schemathesis):
no 5xx for any generated request, as an admin and as a caseworker. Bounded and seeded in
`make test`; `make fuzz` runs the same with many more examples."""

from __future__ import annotations

import os

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error

from tests.conftest import World

EXAMPLES = int(os.environ.get("LEDGER_FUZZ_EXAMPLES", "10"))


@pytest.fixture
def backend() -> str:
    return "sqlite"  # one backend: what is fuzzed here is the HTTP layer


def test_no_generated_request_makes_the_server_fail(world: World) -> None:
    world.agency("fuzz-ngo").open_case()
    world.http.app.state.rate_limiter.rate = 0  # type: ignore[attr-defined]
    tokens = [world.admin, world.agencies["fuzz-ngo"].tokens["caseworker"]]
    schema = schemathesis.openapi.from_asgi("/openapi.json", world.http.app)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 20

    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(
            max_examples=EXAMPLES,
            derandomize=True,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def fuzz(case: schemathesis.Case) -> None:
            for token in tokens:
                case.call_and_validate(
                    headers={"Authorization": f"Bearer {token}"}, checks=[not_a_server_error]
                )

        fuzz()

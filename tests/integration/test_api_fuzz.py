"""schemathesis over the service's own OpenAPI document: every route, with and without the
token. Any 5xx, or an answer the document does not describe, fails the test. Bounded in
examples (and so in time): it runs in `make test`.

(schemathesis' pytest loader does not run under pytest 9, so each operation's strategy is
driven with hypothesis directly.)"""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.specs.openapi.checks import positive_data_acceptance

from tests.support import TOKEN

MAX_EXAMPLES = 25
FUZZ = settings(max_examples=MAX_EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))


@pytest.mark.parametrize("authenticated", [True, False], ids=["with-token", "without-token"])
def test_no_route_answers_5xx_or_off_the_document(make_service, authenticated):
    server = make_service()
    schema = schemathesis.openapi.from_url(f"{server.url}/openapi.json")
    headers = {"Authorization": f"Bearer {TOKEN}"} if authenticated else {}
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {op.path for op in operations} >= {
        "/process-jobs",
        "/jobs/{job_id}",
        "/process-image",
        "/process-complete-pack",
        "/process-aplus",
        "/healthz",
        "/metrics",
    }
    for operation in operations:

        @given(case=operation.as_strategy())
        @FUZZ
        def fuzz(case) -> None:
            # Every check but one: a schema-valid body may still be refused with 400 for
            # what JSON Schema cannot say exactly (a job type name that is only blanks).
            case.call_and_validate(
                headers=headers, timeout=30, excluded_checks=[positive_data_acceptance]
            )

        fuzz()

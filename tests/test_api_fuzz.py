"""A schema-driven fuzz of the HTTP API from its own OpenAPI document (schemathesis), in process.

Every operation gets bodies that fit the published schema and bodies that break it. Whatever comes in, the
service must answer without a 5xx, with a status, content type, headers and body its document declares, and
refuse (4xx) every body that breaks the schema. Bounded: a fixed number of examples per operation and mode,
no example database, about 10-20 s in all.
"""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from seqfraud.scoring.service import Limits
from tests.conftest import service_client

LIMITS = Limits(
    max_events_per_session=16,
    max_sessions_per_batch=4,
    max_batch_in_flight=1,  # a worker process each (see service_client): requests come one at a time
    max_explain_in_flight=1,
)
EXAMPLES = 50  # per operation and mode
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    negative_data_rejection,
]


@pytest.fixture(scope="module")
def client(exported_artifact):
    with service_client(exported_artifact, limits=LIMITS) as c:
        yield c


@pytest.fixture(scope="module")
def operations(client) -> dict[str, schemathesis.APIOperation]:
    schema = schemathesis.openapi.from_dict(client.get("/openapi.json").json())
    return {
        f"{op.method.upper()} {op.path}": op for op in (result.ok() for result in schema.get_all_operations())
    }


OPERATIONS = [
    "GET /healthz",
    "GET /readyz",
    "GET /metadata",
    "POST /score",
    "POST /explain",
    "POST /score/batch",
    "POST /events",
    "POST /labels",
    "GET /sessions/{session_id}",
]


def test_the_document_describes_every_request_body(operations):
    assert set(operations) == set(OPERATIONS)
    for name, op in operations.items():
        if name.startswith("POST"):
            assert [body.media_type for body in op.body] == ["application/json"], name


# Operations that answer 4xx to every valid body here: the fuzzed model reads no labels, and a fuzzed session id
# is almost never one that /events opened.
NEVER_OK = {"POST /labels", "GET /sessions/{session_id}"}
POSITIVE, NEGATIVE = schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE
CASES = [(name, POSITIVE) for name in OPERATIONS]
CASES += [(name, NEGATIVE) for name in OPERATIONS if name.startswith("POST")]  # a GET takes no body


@pytest.mark.parametrize(("name", "mode"), CASES)
def test_fuzzed_requests_get_declared_answers(client, operations, name, mode):
    seen: dict[int, int] = {}

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        derandomize=True,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operations[name].as_strategy(mode))
    def fuzz(case):
        kwargs = case.as_transport_kwargs(base_url=str(client.base_url))
        if "data" in kwargs:  # raw bytes, in the requests library's spelling
            kwargs["content"] = kwargs.pop("data")
        response = client.request(**kwargs)
        seen[response.status_code] = seen.get(response.status_code, 0) + 1
        case.validate_response(response, checks=CHECKS)

    fuzz()
    assert sum(seen.values()) >= 1 and all(status < 500 for status in seen), seen
    if mode is POSITIVE and name not in NEVER_OK:
        assert seen.get(200), f"no fuzzed request reached the model: {seen}"  # the document's examples do

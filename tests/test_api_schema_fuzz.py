"""Property-based checks of the API against its own OpenAPI schema (schemathesis): whatever a client
sends, the answer is never a 5xx, its status code is documented and its body matches the schema.

Not checked: that every schema-valid body is accepted. The schema cannot say everything ingest checks
(a marker's session must exist, an empty batch is refused, a total must equal its items), so such
bodies are rightly answered 400 with the reason."""

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis import checks

from progress_site.wsgi import application

schema = schemathesis.openapi.from_wsgi("/api/schema/", application)


@pytest.fixture
def auth_headers(token):
    return {"Authorization": f"Bearer {token}"}


@schema.parametrize()
@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
@pytest.mark.django_db(transaction=True)
def test_api_conforms_to_its_schema(case, auth_headers, patient_a):
    case.call_and_validate(headers=auth_headers, excluded_checks=[checks.positive_data_acceptance])

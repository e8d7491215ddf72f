"""FHIR R4 export (DESIGN §8): a patient's questionnaire data as a Bundle of type collection. Pure.

No ORM and no settings: the caller passes plain data and the site URL. The Bundle is checked against the
`fhir.resources.R4B` models (fhir.resources 7+ puts R5 at the top level; R4B is R4-compatible for these
resources) and returned as a JSON-ready dict.
"""

import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from fhir.resources.R4B.bundle import Bundle

from reports.instruments import get_instrument, score_errors

OBSERVATION_CATEGORY_SYSTEM = "http://terminology.hl7.org/CodeSystem/observation-category"
LOINC = "http://loinc.org"


@dataclass(frozen=True)
class FhirInstrument:
    questionnaire: str  # canonical URL of the LOINC questionnaire
    total_code: str  # LOINC code of the total score
    total_text: str


FHIR_INSTRUMENTS: dict[str, FhirInstrument] = {
    "phq9": FhirInstrument("http://loinc.org/q/44249-1", "44261-6", "PHQ-9 total score"),
    "gad7": FhirInstrument("http://loinc.org/q/69737-5", "70274-6", "GAD-7 total score"),
}


@dataclass(frozen=True)
class Response:
    """One questionnaire response: `instrument` is a code of `reports.instruments` (phq9, gad7)."""

    response_id: str
    instrument: str
    administered_at: datetime
    total: int | None
    items: list[int] | None


def patient_identifier_system(site_url: str, clinic_slug: str) -> str:
    return f"{site_url.rstrip('/')}/clinics/{clinic_slug}/players"


def _fhir_datetime(value: datetime) -> str:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError("administered_at must be timezone-aware")
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _urn(namespace: uuid.UUID, name: str) -> str:
    return f"urn:uuid:{uuid.uuid5(namespace, name)}"


def validate(bundle_dict: dict[str, Any]) -> Bundle:
    """Parse the dict with the R4B models; raises pydantic's ValidationError (a ValueError) when invalid."""
    return Bundle.model_validate(bundle_dict)


def bundle(*, player_id: str, clinic_slug: str, site_url: str, responses: Iterable[Response]) -> dict[str, Any]:
    """The patient's responses as a FHIR R4 Bundle (type collection), validated, as a JSON-ready dict.

    `fullUrl`s are urn:uuid, uuid5 of the clinic and the player or response id, so the output is stable.
    """
    clinic_url = f"{site_url.rstrip('/')}/clinics/{clinic_slug}"
    system = patient_identifier_system(site_url, clinic_slug)
    namespace = uuid.uuid5(uuid.NAMESPACE_URL, clinic_url)
    patient_url = _urn(namespace, f"patient:{player_id}")
    subject = {"reference": patient_url}
    entries: list[dict[str, Any]] = [
        {
            "fullUrl": patient_url,
            "resource": {"resourceType": "Patient", "identifier": [{"system": system, "value": player_id}]},
        }
    ]
    ordered = sorted(responses, key=lambda r: (r.administered_at, r.response_id))
    for response in ordered:
        instrument = get_instrument(response.instrument)
        fhir_instrument = FHIR_INSTRUMENTS[instrument.code]
        errors = score_errors(instrument, response.items, response.total)
        if errors:
            raise ValueError(f"response {response.response_id}: {errors}")
        total = response.total if response.total is not None else sum(response.items or [])
        authored = _fhir_datetime(response.administered_at)
        qr_url = _urn(namespace, f"questionnaire-response:{response.response_id}")
        questionnaire_response: dict[str, Any] = {
            "resourceType": "QuestionnaireResponse",
            "identifier": {"system": f"{clinic_url}/responses", "value": response.response_id},
            "questionnaire": fhir_instrument.questionnaire,
            "status": "completed",
            "subject": subject,
            "authored": authored,
        }
        if response.items:
            questionnaire_response["item"] = [
                {"linkId": str(n), "text": text, "answer": [{"valueInteger": score}]}
                for n, (text, score) in enumerate(zip(instrument.items, response.items, strict=True), start=1)
            ]
        observation = {
            "resourceType": "Observation",
            "status": "final",
            "category": [{"coding": [{"system": OBSERVATION_CATEGORY_SYSTEM, "code": "survey", "display": "Survey"}]}],
            "code": {
                "coding": [{"system": LOINC, "code": fhir_instrument.total_code}],
                "text": fhir_instrument.total_text,
            },
            "subject": subject,
            "effectiveDateTime": authored,
            "valueInteger": total,
            "derivedFrom": [{"reference": qr_url}],
        }
        entries.append({"fullUrl": qr_url, "resource": questionnaire_response})
        entries.append({"fullUrl": _urn(namespace, f"observation:{response.response_id}"), "resource": observation})
    result: dict[str, Any] = {"resourceType": "Bundle", "type": "collection", "entry": entries}
    validate(result)
    return result

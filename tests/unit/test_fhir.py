"""FHIR R4 export (DESIGN §8): the Bundle parses under fhir.resources.R4B and carries the right codes."""

import json
from datetime import UTC, datetime, timedelta, timezone

import pytest
from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.observation import Observation
from fhir.resources.R4B.patient import Patient
from fhir.resources.R4B.questionnaireresponse import QuestionnaireResponse

from reports.fhir import Response, bundle, validate

SITE = "https://progress.example.org/"
PHQ9_AT = datetime(2026, 3, 2, 9, 30, tzinfo=UTC)
GAD7_AT = datetime(2026, 3, 2, 11, 45, tzinfo=timezone(timedelta(hours=2)))  # 09:45 UTC
PHQ9_TOTAL_ONLY_AT = datetime(2026, 3, 16, 10, 0, tzinfo=UTC)

RESPONSES = [
    Response("r-phq-2", "phq9", PHQ9_TOTAL_ONLY_AT, 8, None),
    Response("r-phq-1", "phq9", PHQ9_AT, None, [2, 2, 1, 2, 1, 1, 1, 1, 1]),
    Response("r-gad-1", "gad7", GAD7_AT, 9, [1, 2, 1, 2, 1, 1, 1]),
]


def make() -> dict:
    return bundle(player_id="player-42", clinic_slug="north", site_url=SITE, responses=RESPONSES)


def by_type(result: dict) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for entry in result["entry"]:
        out.setdefault(entry["resource"]["resourceType"], []).append(entry)
    return out


def test_parses_as_an_r4b_collection_bundle():
    result = make()
    parsed = Bundle.model_validate(result)
    assert parsed.type == "collection"
    kinds = [type(e.resource) for e in parsed.entry]
    assert kinds.count(Patient) == 1
    assert kinds.count(QuestionnaireResponse) == 3
    assert kinds.count(Observation) == 3
    # JSON-ready: a round trip through json changes nothing.
    assert json.loads(json.dumps(result)) == result
    for entry in result["entry"]:
        assert entry["fullUrl"].startswith("urn:uuid:")
    assert len({e["fullUrl"] for e in result["entry"]}) == len(result["entry"])


def test_patient_identifier():
    (patient,) = by_type(make())["Patient"]
    assert patient["resource"]["identifier"] == [
        {"system": "https://progress.example.org/clinics/north/players", "value": "player-42"}
    ]


def test_questionnaire_responses():
    result = make()
    patient_url = by_type(result)["Patient"][0]["fullUrl"]
    qrs = {e["resource"]["identifier"]["value"]: e for e in by_type(result)["QuestionnaireResponse"]}

    phq = qrs["r-phq-1"]["resource"]
    assert phq["status"] == "completed"
    assert phq["questionnaire"] == "http://loinc.org/q/44249-1"
    assert phq["subject"] == {"reference": patient_url}
    assert datetime.fromisoformat(phq["authored"]) == PHQ9_AT
    assert [i["linkId"] for i in phq["item"]] == [str(n) for n in range(1, 10)]
    assert [i["answer"][0]["valueInteger"] for i in phq["item"]] == [2, 2, 1, 2, 1, 1, 1, 1, 1]

    gad = qrs["r-gad-1"]["resource"]
    assert gad["questionnaire"] == "http://loinc.org/q/69737-5"
    assert datetime.fromisoformat(gad["authored"]) == GAD7_AT
    assert [i["linkId"] for i in gad["item"]] == [str(n) for n in range(1, 8)]
    assert [i["answer"][0]["valueInteger"] for i in gad["item"]] == [1, 2, 1, 2, 1, 1, 1]

    total_only = qrs["r-phq-2"]["resource"]
    assert "item" not in total_only
    assert total_only["questionnaire"] == "http://loinc.org/q/44249-1"
    assert total_only["subject"] == {"reference": patient_url}

    parsed = Bundle.model_validate(result)
    parsed_total_only = next(
        e.resource
        for e in parsed.entry
        if isinstance(e.resource, QuestionnaireResponse) and e.resource.identifier.value == "r-phq-2"
    )
    assert not parsed_total_only.item


def test_observations_of_the_totals():
    result = make()
    patient_url = by_type(result)["Patient"][0]["fullUrl"]
    qr_urls = {e["resource"]["identifier"]["value"]: e["fullUrl"] for e in by_type(result)["QuestionnaireResponse"]}
    observations = {o["resource"]["derivedFrom"][0]["reference"]: o["resource"] for o in by_type(result)["Observation"]}
    assert set(observations) == set(qr_urls.values())

    expected = {
        "r-phq-1": ("44261-6", 12, PHQ9_AT),
        "r-gad-1": ("70274-6", 9, GAD7_AT),
        "r-phq-2": ("44261-6", 8, PHQ9_TOTAL_ONLY_AT),
    }
    for response_id, (code, total, at) in expected.items():
        obs = observations[qr_urls[response_id]]
        assert obs["status"] == "final"
        assert obs["category"][0]["coding"][0]["system"] == (
            "http://terminology.hl7.org/CodeSystem/observation-category"
        )
        assert obs["category"][0]["coding"][0]["code"] == "survey"
        assert obs["code"]["coding"] == [{"system": "http://loinc.org", "code": code}]
        assert obs["valueInteger"] == total
        assert datetime.fromisoformat(obs["effectiveDateTime"]) == at
        assert obs["subject"] == {"reference": patient_url}
        assert obs["derivedFrom"] == [{"reference": qr_urls[response_id]}]

    parsed = Bundle.model_validate(result)
    parsed_obs = [e.resource for e in parsed.entry if isinstance(e.resource, Observation)]
    assert sorted(o.valueInteger for o in parsed_obs) == [8, 9, 12]
    assert {o.code.coding[0].code for o in parsed_obs} == {"44261-6", "70274-6"}


def test_deterministic():
    first = make()
    again = bundle(player_id="player-42", clinic_slug="north", site_url=SITE, responses=list(reversed(RESPONSES)))
    assert json.dumps(first, sort_keys=True) == json.dumps(again, sort_keys=True)
    other_clinic = bundle(player_id="player-42", clinic_slug="south", site_url=SITE, responses=RESPONSES)
    assert {e["fullUrl"] for e in first["entry"]}.isdisjoint({e["fullUrl"] for e in other_clinic["entry"]})


def test_no_responses_is_just_the_patient():
    result = bundle(player_id="p1", clinic_slug="north", site_url="https://x.example", responses=[])
    assert [e["resource"]["resourceType"] for e in result["entry"]] == ["Patient"]
    validate(result)


def test_rejects_bad_input():
    with pytest.raises(ValueError):
        bundle(player_id="p", clinic_slug="c", site_url=SITE, responses=[Response("r", "phq9", PHQ9_AT, 5, [1, 1])])
    with pytest.raises(ValueError):
        bundle(
            player_id="p",
            clinic_slug="c",
            site_url=SITE,
            responses=[Response("r", "phq9", datetime(2026, 1, 1), 5, None)],
        )
    with pytest.raises(ValueError):
        validate(
            {
                "resourceType": "Bundle",
                "type": "collection",
                "entry": [{"resource": {"resourceType": "Observation", "status": "final", "valueInteger": "x"}}],
            }
        )

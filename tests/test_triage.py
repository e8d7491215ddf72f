"""Alert triage (DESIGN §6 pages, §7 Alerts): the header inbox and `/alerts/` most severe first, the
caseload's attention-first order and severity badge, bulk acknowledgement with one note, and forms that
refuse a NUL character with a clear message instead of breaking."""

import re
from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from django.utils.timesince import timesince

from reports import alerts
from reports.models import Alert, AlertKind
from reports.selectors import AlertQuery, alert_inbox, therapist_alerts
from tests.conftest import logged_in
from tests.factories import CareAssignmentFactory, PatientFactory
from tracking import read_models, recompute
from tracking.models import Patient, ProgressSummary
from tracking.templatetags.caseload import local

NUL_MESSAGE = "Contains a NUL character"


# ----- helpers ---------------------------------------------------------------------------------------------


def signal(player_id: str, alert_id: str, level: str, minutes_ago: float = 1, reason: str = "Crisis phrase") -> dict:
    return {
        "alert_id": alert_id,
        "player_id": player_id,
        "level": level,
        "reason": reason,
        "occurred_at": (timezone.now() - timedelta(minutes=minutes_ago)).isoformat(),
    }


def ingest(api, **batch) -> None:
    response = api.post("/api/v1/ingest", batch, content_type="application/json")
    assert response.status_code == 201, response.content


def signals(api, *items: dict) -> list[Alert]:
    """Posts crisis signals through the ingest API; returns their alerts, in the order given."""
    ingest(api, alerts=list(items))
    by_id = {a.alert_id: a for a in Alert.objects.filter(alert_id__in=[i["alert_id"] for i in items])}
    return [by_id[i["alert_id"]] for i in items]


def item9_response(player_id: str, response_id: str, item9: int = 1) -> dict:
    items = [1, 1, 1, 1, 1, 1, 1, 1, item9]
    return {
        "response_id": response_id,
        "player_id": player_id,
        "instrument": "phq9",
        "items": items,
        "total": sum(items),
        "administered_at": (timezone.now() - timedelta(minutes=5)).isoformat(),
    }


def phq9_total(player_id: str, response_id: str, total: int, days_ago: int) -> dict:
    return {
        "response_id": response_id,
        "player_id": player_id,
        "instrument": "phq9",
        "total": total,
        "administered_at": (timezone.now() - timedelta(days=days_ago)).isoformat(),
    }


def assigned(clinic, therapist, player_id: str, dropout: float | None = None) -> Patient:
    patient = CareAssignmentFactory(
        patient=PatientFactory(clinic=clinic, player_id=player_id), therapist=therapist
    ).patient
    if dropout is not None:
        ProgressSummary.objects.create(
            patient=patient,
            computed_at=timezone.now(),
            local_date=timezone.now().date(),
            data={},
            current_streak_days=0,
            sessions_this_week=0,
            dropout_risk_score=dropout,
            last_active_day=timezone.now().date(),
        )
    return patient


def acknowledge(client, patient, alert, note: str = "Seen"):
    return client.post(f"/patients/{patient.player_id}/alerts/{alert.pk}/acknowledge", {"note": note})


def row(html: str, player_id: str) -> str:
    match = re.search(rf'<tr data-player-id="{re.escape(player_id)}">(.*?)</tr>', html, re.DOTALL)
    assert match, f"no caseload row for {player_id}"
    return match.group(1)


def cell(row_html: str, column: str) -> str:
    match = re.search(rf'<td data-col="{column}"[^>]*>(.*?)</td>', row_html, re.DOTALL)
    assert match, f"no {column} cell"
    return match.group(1)


def messages_of(response) -> list[str]:
    return [str(m) for m in response.context["messages"]]


def queries_for(client, url: str) -> int:
    with CaptureQueriesContext(connection) as ctx:
        assert client.get(url).status_code == 200
    return len(ctx.captured_queries)


# ----- the header inbox --------------------------------------------------------------------------------------


def test_urgent_alert_heads_the_inbox_behind_older_moderate_ones(api, therapist_a, patients_a):
    a1, a2, a3 = patients_a
    signals(
        api,
        signal(a1.player_id, "mod-old", "moderate", minutes_ago=300),
        signal(a2.player_id, "high-mid", "high", minutes_ago=120),
        signal(a3.player_id, "urg-new", "urgent", minutes_ago=2),
        signal(a1.player_id, "urg-old", "urgent", minutes_ago=60),
        signal(a2.player_id, "mod-new", "moderate", minutes_ago=10),
    )
    inbox = alert_inbox(therapist_a)
    # most severe first, then within a severity the one waiting longest first
    assert [(a["severity"], a["player_id"]) for a in inbox["latest"]] == [
        ("urgent", a1.player_id),
        ("urgent", a3.player_id),
        ("high", a2.player_id),
        ("moderate", a1.player_id),
        ("moderate", a2.player_id),
    ]
    assert inbox["counts"] == {"urgent": 2, "high": 1, "moderate": 2} and inbox["open"] == 5
    assert list(inbox["counts"]) == ["urgent", "high", "moderate"]
    assert logged_in(therapist_a).get("/live/inbox.json").json() == inbox


def test_the_inbox_holds_only_open_alerts_of_the_caseload(
    api, other_token, therapist_a, patient_a, patient_b, foreign_patient
):
    from django.test import Client

    mine, done = signals(
        api, signal(patient_a.player_id, "mine", "high"), signal(patient_a.player_id, "done", "urgent", minutes_ago=30)
    )
    signals(api, signal(patient_b.player_id, "b-urgent", "urgent", minutes_ago=500))  # therapist B's patient
    foreign = Client(headers={"Authorization": f"Bearer {other_token}"})
    ingest(foreign, alerts=[signal(foreign_patient.player_id, "r-urgent", "urgent", minutes_ago=500)])
    acknowledge(logged_in(therapist_a), patient_a, done)
    inbox = logged_in(therapist_a).get("/live/inbox.json").json()
    assert inbox["open"] == 1 and inbox["counts"] == {"urgent": 0, "high": 1, "moderate": 0}
    assert [(a["player_id"], a["severity"]) for a in inbox["latest"]] == [(patient_a.player_id, "high")]
    assert "reason" not in inbox["latest"][0]  # ids and kinds only


@pytest.mark.parametrize(("n", "listed"), [(7, 7), (8, 8), (9, 8)])
def test_the_inbox_lists_at_most_8_but_counts_all(api, therapist_a, patient_a, n, listed):
    signals(api, *(signal(patient_a.player_id, f"c{i}", "moderate", minutes_ago=i + 1) for i in range(n)))
    inbox = alert_inbox(therapist_a)
    assert inbox["open"] == n and inbox["counts"]["moderate"] == n and len(inbox["latest"]) == listed


def test_the_inbox_is_for_therapists_only(personas):
    assert personas["clinic_admin"].get("/live/inbox.json").status_code == 403
    assert personas["auditor"].get("/alerts/").status_code == 403


# ----- /alerts/ ------------------------------------------------------------------------------------------------


@pytest.fixture
def triage(api, therapist_a, patients_a, patient_b):
    """Open alerts of every severity on therapist A's caseload, one acknowledged, one of therapist B's."""
    a1, a2, a3 = patients_a
    alerts = dict(
        zip(
            ("moderate", "high", "urgent_new", "urgent_old", "acked"),
            signals(
                api,
                signal(a1.player_id, "moderate", "moderate", minutes_ago=600),
                signal(a2.player_id, "high", "high", minutes_ago=300),
                signal(a3.player_id, "urgent-new", "urgent", minutes_ago=5),
                signal(a1.player_id, "urgent-old", "urgent", minutes_ago=90),
                signal(a2.player_id, "acked", "high", minutes_ago=1000),
            ),
            strict=True,
        )
    )
    acknowledge(logged_in(therapist_a), a2, alerts["acked"], note="Phoned")
    signals(api, signal(patient_b.player_id, "b-urgent", "urgent", minutes_ago=2000))
    return alerts


def ids(alerts) -> list[int]:
    return [a.pk for a in alerts]


def test_alerts_page_lists_open_alerts_most_severe_then_oldest_first(therapist_a, triage):
    expected = [triage[k].pk for k in ("urgent_old", "urgent_new", "high", "moderate")]
    assert ids(therapist_alerts(therapist_a, AlertQuery())) == expected
    response = logged_in(therapist_a).get("/alerts/")
    assert response.status_code == 200
    assert ids(response.context["page"].object_list) == expected
    html = response.content.decode()
    assert re.findall(r'data-severity="(\w+)"', html) == ["urgent", "urgent", "high", "moderate"]
    assert "p-b1" not in html  # another therapist's patient


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"severity": "urgent"}, ["urgent_old", "urgent_new"]),
        ({"severity": "high"}, ["high"]),
        ({"severity": "moderate"}, ["moderate"]),
        ({"kind": "crisis_signal"}, ["urgent_old", "urgent_new", "high", "moderate"]),
        ({"kind": "reliable_deterioration"}, []),
        ({"status": "acknowledged"}, ["acked"]),
        ({"status": "all"}, ["urgent_old", "urgent_new", "high", "moderate", "acked"]),
        ({"status": "all", "severity": "high"}, ["high", "acked"]),
        ({"status": "acknowledged", "severity": "urgent"}, []),
    ],
)
def test_alerts_page_filters(therapist_a, triage, params, expected):
    response = logged_in(therapist_a).get("/alerts/", params)
    assert ids(response.context["page"].object_list) == [triage[k].pk for k in expected]
    assert ids(therapist_alerts(therapist_a, AlertQuery.from_params(params))) == [triage[k].pk for k in expected]


@pytest.mark.parametrize(
    "params",
    [
        {"severity": "critical"},
        {"severity": "URGENT"},
        {"kind": "everything"},
        {"status": "closed"},
        {"status": ""},
        {"severity": "", "kind": "", "status": "open"},
    ],
)
def test_alerts_page_invalid_filters_fall_back_to_the_defaults(therapist_a, triage, params):
    response = logged_in(therapist_a).get("/alerts/", params)
    assert response.status_code == 200
    assert response.context["query"] == AlertQuery(severity="", kind="", status="open")
    assert ids(response.context["page"].object_list) == [
        triage[k].pk for k in ("urgent_old", "urgent_new", "high", "moderate")
    ]


def test_acknowledged_alerts_follow_the_open_ones_latest_acknowledgement_first(api, therapist_a, patient_a):
    p = patient_a.player_id
    urgent, moderate, high = signals(
        api, signal(p, "u", "urgent", minutes_ago=30), signal(p, "m", "moderate", 20), signal(p, "h", "high", 10)
    )
    client = logged_in(therapist_a)
    acknowledge(client, patient_a, moderate)
    acknowledge(client, patient_a, urgent)
    assert ids(therapist_alerts(therapist_a, AlertQuery(status="all"))) == [high.pk, urgent.pk, moderate.pk]
    html = client.get("/alerts/", {"status": "all"}).content.decode()
    assert html.count("Acknowledged by therapist.a") == 2 and "Open · review" in html


def test_alerts_page_shows_patient_open_for_and_escalation_in_local_time(api, clinic_admin, therapist_a, patient_a):
    patient_a.timezone = "Asia/Tokyo"
    patient_a.save()
    clinic_admin.email = "admin@clinic.test"
    clinic_admin.save()
    (alert,) = signals(api, signal(patient_a.player_id, "c1", "urgent", minutes_ago=3 * 24 * 60 + 10))
    client = logged_in(therapist_a)
    html = client.get("/alerts/").content.decode()
    assert f'href="/patients/{patient_a.player_id}/#alerts">{patient_a.player_id}</a>' in html
    assert "Open for" in html and timesince(alert.occurred_at) in html and "3\xa0days" in html
    assert "Escalated to clinic admins" not in html
    assert "Escalates if not acknowledged in time" in html

    assert alerts.escalate_unacknowledged(now=timezone.now() + timedelta(minutes=31)) == 1
    alert.refresh_from_db()
    expected = f"Escalated to clinic admins at {local(alert.escalated_at, 'Asia/Tokyo')}"
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d", local(alert.escalated_at, "Asia/Tokyo"))
    assert expected in client.get("/alerts/").content.decode()
    # the patient page says it too
    page = client.get(f"/patients/{patient_a.player_id}/").content.decode()
    assert f"escalated to clinic admins at {local(alert.escalated_at, 'Asia/Tokyo')}" in page


def test_alerts_page_costs_the_same_queries_for_2_and_20_alerts(
    api, clinic, therapist_a, patients_a, django_assert_num_queries
):
    client = logged_in(therapist_a)
    a1, a2, _ = patients_a
    first = signals(api, signal(a1.player_id, "x0", "urgent"), signal(a2.player_id, "x1", "high"))
    acknowledge(client, a2, first[1])
    client.get("/alerts/")  # first request of the session: not part of the measure
    few = queries_for(client, "/alerts/?status=all")
    more = [assigned(clinic, therapist_a, f"q-{n}") for n in range(6)]
    more[0].timezone = "America/New_York"
    more[0].save()
    batch = [
        signal(p.player_id, f"y{p.player_id}{k}", level)
        for p in more
        for k, level in enumerate(("urgent", "high", "moderate"))
    ]
    alerts = signals(api, *batch)
    for alert in alerts[::3]:
        acknowledge(client, alert.patient, alert)
    assert Alert.objects.filter(patient__in=[a1, a2, *more]).count() == 20
    with django_assert_num_queries(few):
        response = client.get("/alerts/?status=all")
    assert len(response.context["page"].object_list) == 20


# ----- the caseload: attention first, the severity badge, Item 9, one score ---------------------------------------


def test_caseload_puts_what_needs_attention_first(api, clinic, therapist_a):
    nosummary = assigned(clinic, therapist_a, "a-nosummary")
    low = assigned(clinic, therapist_a, "b-low", dropout=0.3)
    risky = assigned(clinic, therapist_a, "c-risky", dropout=0.9)
    flagged = assigned(clinic, therapist_a, "d-flagged", dropout=0.2)
    moderate = assigned(clinic, therapist_a, "e-moderate", dropout=0.0)
    high = assigned(clinic, therapist_a, "f-high", dropout=0.5)
    urgent_calm = assigned(clinic, therapist_a, "g-urgent", dropout=0.1)
    urgent_risky = assigned(clinic, therapist_a, "h-urgent", dropout=0.7)
    _, old = signals(
        api,
        signal(moderate.player_id, "m", "moderate"),
        signal(flagged.player_id, "f", "high"),  # acknowledged below: the flag stays raised
        signal(high.player_id, "h", "high"),
        signal(urgent_calm.player_id, "u1", "urgent"),
        signal(urgent_risky.player_id, "u2", "urgent"),
        signal(urgent_calm.player_id, "u3", "moderate"),
    )[:2]
    client = logged_in(therapist_a)
    acknowledge(client, flagged, old)
    assert Patient.objects.get(pk=flagged.pk).risk_flag and not Patient.objects.get(pk=moderate.pk).risk_flag
    response = client.get("/")
    assert response.context["query"].sort == "attention"
    order = [p.player_id for p in response.context["page"].object_list]
    assert order == [p.player_id for p in (urgent_risky, urgent_calm, high, moderate, flagged, risky, low, nosummary)]
    assert "those who need attention first" in response.content.decode()
    # an unknown sort falls back to the same order
    assert [p.player_id for p in client.get("/?sort=nonsense").context["page"].object_list] == order


def test_caseload_badge_names_the_highest_open_severity(api, clinic, therapist_a):
    one_urgent = assigned(clinic, therapist_a, "one-urgent")
    two_high = assigned(clinic, therapist_a, "two-high")
    mixed = assigned(clinic, therapist_a, "mixed")
    moderate = assigned(clinic, therapist_a, "moderate-only")
    quiet = assigned(clinic, therapist_a, "quiet")
    signals(
        api,
        signal(one_urgent.player_id, "u", "urgent"),
        signal(two_high.player_id, "h1", "high"),
        signal(two_high.player_id, "h2", "high"),
        signal(mixed.player_id, "x1", "moderate"),
        signal(mixed.player_id, "x2", "urgent"),
        signal(mixed.player_id, "x3", "high"),
        signal(moderate.player_id, "m", "moderate"),
    )
    html = logged_in(therapist_a).get("/").content.decode()

    def badge(patient):
        match = re.search(
            r'<a class="badge badge--(\w+)"[^>]*>([^<]*)</a>', cell(row(html, patient.player_id), "alerts")
        )
        return match and match.groups()

    assert badge(one_urgent) == ("urgent", "Urgent")
    assert badge(two_high) == ("high", "High · 2 open")
    assert badge(mixed) == ("urgent", "Urgent · 3 open")
    assert badge(moderate) == ("moderate", "Moderate")
    assert badge(quiet) is None and "None" in cell(row(html, quiet.player_id), "alerts")


def test_caseload_badge_follows_acknowledgement(api, clinic, therapist_a, patient_a):
    urgent, _ = signals(api, signal(patient_a.player_id, "u", "urgent"), signal(patient_a.player_id, "m", "moderate"))
    client = logged_in(therapist_a)
    acknowledge(client, patient_a, urgent)
    alerts_cell = cell(row(client.get("/").content.decode(), patient_a.player_id), "alerts")
    assert 'class="badge badge--moderate"' in alerts_cell and ">Moderate<" in alerts_cell


def test_an_open_item9_alert_shows_an_item9_tag_on_its_row(api, clinic, therapist_a, patients_a):
    a1, a2, a3 = patients_a
    ingest(api, outcomes=[item9_response(a1.player_id, "r-a1", item9=2), item9_response(a3.player_id, "r-a3", item9=0)])
    signals(api, signal(a2.player_id, "u", "urgent"))
    client = logged_in(therapist_a)
    html = client.get("/").content.decode()
    assert "Item 9" in cell(row(html, a1.player_id), "alerts")
    assert 'class="badge badge--urgent"' in cell(row(html, a1.player_id), "alerts")
    assert "Item 9" not in cell(row(html, a2.player_id), "alerts")  # urgent, but a crisis signal
    assert "Item 9" not in cell(row(html, a3.player_id), "alerts")  # item 9 answered 0: no alert
    item9 = Alert.objects.get(patient=a1, kind=AlertKind.ITEM9)
    acknowledge(client, a1, item9)
    assert "Item 9" not in cell(row(client.get("/").content.decode(), a1.player_id), "alerts")


@pytest.mark.parametrize(
    ("totals", "shown", "not_shown"),
    [
        ((12,), "1 score, no change yet", "± 0"),
        ((12, 12), "± 0", "no change yet"),
        ((12, 17), "▲ +5", "reliable"),
        ((12, 18), "▲ +6 reliable", "no change yet"),
        ((12, 6), "▼ -6 reliable", "no change yet"),
    ],
)
def test_caseload_measure_cell_with_one_and_more_scores(api, therapist_a, patient_a, totals, shown, not_shown):
    ingest(api, outcomes=[phq9_total(patient_a.player_id, f"r{n}", t, 30 - n) for n, t in enumerate(totals)])
    phq9_cell = cell(row(logged_in(therapist_a).get("/").content.decode(), patient_a.player_id), "phq9")
    text = re.sub(r"<[^>]+>", "", phq9_cell)
    assert shown in text and not_shown not in text


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        # first click on a column of risk sorts the riskiest first; other columns ascending
        ("/", {"risk": "-risk", "alerts": "-alerts", "flag": "-flag", "player_id": "player_id", "phq9": "phq9"}),
        ("/?sort=-risk", {"risk": "risk", "alerts": "-alerts", "flag": "-flag", "player_id": "player_id"}),
        ("/?sort=risk", {"risk": "-risk"}),
        ("/?sort=player_id", {"player_id": "-player_id", "risk": "-risk"}),
        ("/?sort=-alerts", {"alerts": "alerts", "flag": "-flag"}),
    ],
)
def test_sort_headers_first_click_on_risk_columns_is_descending(therapist_a, patient_a, url, expected):
    html = logged_in(therapist_a).get(url).content.decode()
    hrefs = {
        value.lstrip("-"): value
        for value in re.findall(
            r'<th scope="col" aria-sort="\w+"><a class="sort-link[^"]*" href="\?sort=([-\w]+)"', html
        )
    }
    for key, value in expected.items():
        assert hrefs[key] == value


def test_sort_headers_keep_the_filters(api, therapist_a, patient_a):
    signals(api, signal(patient_a.player_id, "c1", "urgent"))  # flagged: the patient is "at risk"
    html = logged_in(therapist_a).get("/?filter=at_risk").content.decode()
    assert 'href="?sort=-risk&amp;filter=at_risk"' in html and 'href="?sort=streak&amp;filter=at_risk"' in html


def test_sorting_by_alerts_descending_puts_the_most_severe_first(api, clinic, therapist_a):
    patients = {lvl: assigned(clinic, therapist_a, f"s-{lvl}") for lvl in ("moderate", "none", "urgent", "high")}
    signals(api, *(signal(p.player_id, lvl, lvl) for lvl, p in patients.items() if lvl != "none"))
    page = logged_in(therapist_a).get("/?sort=-alerts").context["page"]
    assert [p.player_id for p in page.object_list] == ["s-urgent", "s-high", "s-moderate", "s-none"]


def test_caseload_costs_the_same_queries_with_few_and_many_patients_with_alerts(api, clinic, therapist_a):
    client = logged_in(therapist_a)

    def add(start: int, n: int) -> None:
        patients = [assigned(clinic, therapist_a, f"n-{i:03d}", dropout=(i % 10) / 10) for i in range(start, start + n)]
        levels = ("urgent", "high", "moderate")
        ingest(
            api,
            alerts=[signal(p.player_id, f"a-{p.player_id}", levels[i % 3]) for i, p in enumerate(patients)],
            outcomes=[item9_response(p.player_id, f"r-{p.player_id}") for p in patients[::4]],
        )

    add(0, 3)
    client.get("/")  # first request of the session: not part of the measure
    few = queries_for(client, "/")
    add(3, 40)
    assert queries_for(client, "/") == few
    assert queries_for(client, "/?sort=-alerts") == few


# ----- bulk acknowledgement ----------------------------------------------------------------------------------------


@pytest.fixture
def open_alerts(api, patients_a):
    a1, a2, _ = patients_a
    return signals(
        api,
        signal(a1.player_id, "one", "urgent", minutes_ago=30),
        signal(a1.player_id, "two", "high", minutes_ago=20),
        signal(a1.player_id, "three", "moderate", minutes_ago=10),
        signal(a2.player_id, "other", "urgent", minutes_ago=5),
    )


def bulk(client, patient, alerts, note="Called the patient; safety plan in place", follow=True):
    data = {"alert": [a.pk if isinstance(a, Alert) else a for a in alerts], "note": note}
    return client.post(f"/patients/{patient.player_id}/alerts/acknowledge", data, follow=follow)


def test_several_alerts_are_acknowledged_together_with_one_note(therapist_a, patients_a, open_alerts):
    one, two, three, _ = open_alerts
    response = bulk(logged_in(therapist_a), patients_a[0], [one, two])
    assert response.redirect_chain[-1][0] == f"/patients/{patients_a[0].player_id}/#alerts"
    assert "2 alerts acknowledged." in messages_of(response)
    for alert in (one, two):
        alert.refresh_from_db()
        assert (alert.acknowledged_by, alert.note) == (therapist_a, "Called the patient; safety plan in place")
    assert one.acknowledged_at == two.acknowledged_at is not None
    three.refresh_from_db()
    assert three.acknowledged_at is None


def test_bulk_acknowledgement_ignores_ids_of_another_patients_alerts(
    api, therapist_a, therapist_b, patients_a, patient_b, open_alerts
):
    one, _, _, other = open_alerts
    (foreign,) = signals(api, signal(patient_b.player_id, "b", "urgent"))
    response = bulk(logged_in(therapist_a), patients_a[0], [one, other, foreign, 999999])
    assert "Alert acknowledged." in messages_of(response)
    one.refresh_from_db()
    assert one.acknowledged_at is not None
    for alert in (other, foreign):
        alert.refresh_from_db()
        assert alert.acknowledged_at is None and alert.note == ""


@pytest.mark.parametrize("alert_ids", [[], ["abc"], ["-1"], [""]])
def test_bulk_acknowledgement_without_ids_says_so_and_changes_nothing(therapist_a, patients_a, open_alerts, alert_ids):
    response = bulk(logged_in(therapist_a), patients_a[0], alert_ids)
    assert response.status_code == 200
    assert "Select the alerts to acknowledge." in messages_of(response)
    assert Alert.objects.filter(acknowledged_at__isnull=False).count() == 0


@pytest.mark.parametrize(
    ("note", "message"),
    [
        ("Called\x00 the patient", NUL_MESSAGE),
        ("\x00", NUL_MESSAGE),
        ("x" * 2001, "At most 2000 characters."),
    ],
)
def test_bulk_acknowledgement_with_a_bad_note_says_why_and_acknowledges_nothing(
    therapist_a, patients_a, open_alerts, note, message
):
    response = bulk(logged_in(therapist_a), patients_a[0], open_alerts[:3], note=note)
    assert response.status_code == 200
    [shown] = messages_of(response)
    assert shown.startswith("Note: ") and message in shown
    assert Alert.objects.filter(acknowledged_at__isnull=False).count() == 0


def test_a_note_of_exactly_2000_characters_is_accepted(therapist_a, patients_a, open_alerts):
    bulk(logged_in(therapist_a), patients_a[0], open_alerts[:1], note="x" * 2000)
    open_alerts[0].refresh_from_db()
    assert open_alerts[0].note == "x" * 2000


def test_the_single_acknowledgement_still_works_and_is_idempotent(therapist_a, therapist_b, patients_a, open_alerts):
    one = open_alerts[0]
    client = logged_in(therapist_a)
    response = client.post(
        f"/patients/{patients_a[0].player_id}/alerts/{one.pk}/acknowledge", {"note": "Rang"}, follow=True
    )
    assert "Alert acknowledged." in messages_of(response)
    one.refresh_from_db()
    first_at = one.acknowledged_at
    assert (one.acknowledged_by, one.note) == (therapist_a, "Rang") and first_at is not None
    client.post(f"/patients/{patients_a[0].player_id}/alerts/{one.pk}/acknowledge", {"note": "Again"})
    one.refresh_from_db()
    assert (one.acknowledged_at, one.note) == (first_at, "Rang")  # the first acknowledgement is kept
    # the other patient's alert cannot be reached through this patient's URL
    other = open_alerts[3]
    assert client.post(f"/patients/{patients_a[0].player_id}/alerts/{other.pk}/acknowledge").status_code == 404


def test_the_single_acknowledgement_refuses_a_nul_note(therapist_a, patients_a, open_alerts):
    one = open_alerts[0]
    url = f"/patients/{patients_a[0].player_id}/alerts/{one.pk}/acknowledge"
    response = logged_in(therapist_a).post(url, {"note": "a\x00b"}, follow=True)
    assert any(NUL_MESSAGE in m for m in messages_of(response))
    one.refresh_from_db()
    assert one.acknowledged_at is None


def test_acknowledging_leaves_the_patients_analytics_stale_so_recommendations_refresh(
    therapist_a, patients_a, open_alerts
):
    patient = patients_a[0]
    assert recompute.patient_recompute(patient.pk)
    patient.refresh_from_db()
    assert patient.data_changed_at <= patient.analytics_computed_at
    client = logged_in(therapist_a)
    assert bulk(client, patient, open_alerts[:2], follow=False).status_code == 302
    patient.refresh_from_db()
    assert patient.data_changed_at > patient.analytics_computed_at
    assert Patient.objects.stale_analytics().filter(pk=patient.pk).exists()
    assert not read_models.is_fresh(patient)
    client.get(f"/patients/{patient.player_id}/")  # the page recomputes what is stale
    patient.refresh_from_db()
    assert read_models.is_fresh(patient)


def test_an_ignored_acknowledgement_leaves_the_analytics_fresh(therapist_a, patients_a, open_alerts):
    patient = patients_a[0]
    recompute.patient_recompute(patient.pk)
    bulk(logged_in(therapist_a), patient, [open_alerts[3]], follow=False)  # another patient's alert: nothing done
    patient.refresh_from_db()
    assert read_models.is_fresh(patient)


# ----- NUL characters in forms ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("term", ["a\x00b", "\x00", "p-a1\x00"])
def test_a_nul_in_the_caseload_search_is_refused_and_the_caseload_keeps_working(therapist_a, patients_a, term):
    client = logged_in(therapist_a)
    response = client.post("/caseload/search", {"q": term}, follow=True)
    assert response.status_code == 200
    assert any(m.startswith("Search: ") and NUL_MESSAGE in m for m in messages_of(response))
    for _ in range(2):  # and afterwards, not broken until logout
        again = client.get("/")
        assert again.status_code == 200
        assert again.context["page"].paginator.count == 3
    assert client.post("/caseload/search", {"q": "p-a2"}).status_code == 302
    assert [p.player_id for p in client.get("/").context["page"].object_list] == ["p-a2"]


def test_a_nul_search_term_already_in_the_session_is_ignored(therapist_a, patients_a):
    client = logged_in(therapist_a)
    session = client.session
    session["caseload_search"] = "p-a\x00"
    session.save()
    response = client.get("/")
    assert response.status_code == 200 and response.context["page"].paginator.count == 3


@pytest.mark.parametrize("note", ["Safety plan\x00 reviewed", "\x00"])
def test_a_nul_in_the_risk_flag_note_is_refused_and_the_flag_stays(api, therapist_a, patient_a, note):
    signals(api, signal(patient_a.player_id, "c1", "urgent"))
    client = logged_in(therapist_a)
    response = client.post(f"/patients/{patient_a.player_id}/risk-flag/clear", {"note": note}, follow=True)
    assert response.status_code == 200
    assert any(NUL_MESSAGE in m for m in messages_of(response))
    patient = Patient.objects.get(pk=patient_a.pk)
    assert patient.risk_flag is True and patient.risk_flag_clear_note == ""
    client.post(f"/patients/{patient_a.player_id}/risk-flag/clear", {"note": "Safety plan reviewed"})
    assert Patient.objects.get(pk=patient_a.pk).risk_flag is False


@pytest.mark.parametrize("junk", ["9" * 30, "٣", "1e3", " 1"])
def test_bulk_acknowledgement_skips_ids_that_are_not_plain_numbers(therapist_a, patients_a, open_alerts, junk):
    response = bulk(logged_in(therapist_a), patients_a[0], [junk, str(open_alerts[0].pk)])
    assert response.status_code == 200
    open_alerts[0].refresh_from_db()
    assert open_alerts[0].acknowledged_at is not None
    assert Alert.objects.filter(acknowledged_at__isnull=False).count() == 1


def test_acknowledging_only_alerts_already_acknowledged_says_nothing_changed(therapist_a, patients_a, open_alerts):
    client = logged_in(therapist_a)
    bulk(client, patients_a[0], open_alerts[:1], note="First")
    response = bulk(client, patients_a[0], open_alerts[:1], note="Second")
    assert "Already acknowledged: nothing changed." in messages_of(response)
    open_alerts[0].refresh_from_db()
    assert open_alerts[0].note == "First"

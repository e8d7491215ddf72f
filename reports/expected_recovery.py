"""Expected recovery, stored (DESIGN §8): each clinic's references, its patients' not-on-track results,
and the moderate alert raised once while a patient is not on track. The rules are
`reports.trajectories` (pure); the API judges afresh with `reports.selectors.measure_results`.

- `clinic_refresh` (the Celery task after a clinic's new responses, debounced, and nightly for every
  clinic) rebuilds the clinic's references from all its patients' scores, then refreshes every patient's
  results against them, in batches of patients locked in id order (as the analytics recompute locks them).
- `patients_refresh` refreshes some patients against the stored references (the analytics recompute
  calls it after their data changed).
- A patient becomes not on track when one of their measures is and none was before: that raises one
  moderate `not_on_track` alert naming the measures. While any measure stays not on track, nothing more
  is raised, even once the alert is acknowledged; after every measure is back on track (or no longer
  judged), the next time raises a new one.
"""

import logging
from collections.abc import Mapping, Sequence
from datetime import datetime

from django.db import transaction
from django.db.models import Aggregate, Max, Min, QuerySet
from django.utils import timezone

from reports import alerts, selectors, trajectories
from reports.instruments import INSTRUMENTS
from reports.models import Alert, AlertKind, AlertSeverity, MeasureStatus, OutcomeResponse, TrajectoryReference
from reports.outcomes import Score
from tracking.models import Clinic, Patient
from tracking.signals import alerts_changed, send_on_commit

logger = logging.getLogger(__name__)

BATCH = 500  # patients per transaction when a whole clinic is refreshed
STATUS_FIELDS = ("not_on_track", "basis", "intake_band", "trajectory", "since", "computed_at")


# ----- references ----------------------------------------------------------------------------------


def references_rebuild(clinic: Clinic, patients: Sequence[Patient], scores: Mapping[int, list[Score]]) -> None:
    """Stores the clinic's reference for each instrument, built from `scores` (patient pk → scores) of
    `patients` (all the clinic's)."""
    now = timezone.now()
    for instrument in selectors.REPORT_INSTRUMENTS:
        group = []
        for patient in patients:
            own = [s for s in scores.get(patient.pk, []) if s.instrument == instrument.code]
            if own:
                group.append(trajectories.patient_scores(str(patient.pk), own, selectors.local_date_of(patient)))
        reference = trajectories.build_reference(group, instrument)
        in_group = sum(1 for p in group if instrument.at_caseness(p.scores[0][1]))  # first score at caseness
        TrajectoryReference.objects.update_or_create(
            clinic=clinic,
            instrument=instrument.code,
            defaults={"data": reference.to_json(), "group_size": in_group, "built_at": now},
        )


# ----- results and the alert -----------------------------------------------------------------------


def _reason(results: Mapping[str, trajectories.Result]) -> str:
    """'PHQ-9 17 at week 8 is above the 75th percentile (14.5) of the clinic's patients with the same
    intake band (12 patients).' for each measure not on track, then a reminder of what it is."""
    parts = []
    for code, result in results.items():
        if not result.not_on_track:
            continue
        name = INSTRUMENTS[code].name
        if result.basis == trajectories.BASIS_CLINIC_REFERENCE:
            parts.append(
                f"{name} {result.latest} at week {result.week} is above the 75th percentile ({result.p75:g}) of the "
                f"clinic's patients with the same intake band ({result.n_patients} patients)"
            )
        else:
            parts.append(
                f"{name} {result.latest} at week {result.week} is still at caseness with no reliable improvement "
                "since the first score"
            )
    return "Not on track: " + "; ".join(parts) + ". A signal to review, not a prediction."


def _refresh_locked(patients: Sequence[Patient], now: datetime) -> list[Alert]:
    """The patients' results against the stored references, written where they changed (a patient
    without any score keeps no result); every result of `patients` is stamped checked at `now`. The rows
    of `patients` are locked by the caller's transaction. Returns the alerts raised."""
    scores = selectors.scores_by_patient([p.pk for p in patients])
    references = selectors.clinic_references({p.clinic_id for p in patients})
    stored = {(s.patient_id, s.instrument): s for s in MeasureStatus.objects.filter(patient__in=patients)}
    unscored = [p.pk for p in patients if p.pk not in scores]
    if unscored:
        MeasureStatus.objects.filter(patient_id__in=unscored).delete()  # their responses were removed
    to_create: list[MeasureStatus] = []
    to_update: list[MeasureStatus] = []
    raised: list[Alert] = []
    for patient in patients:
        if patient.pk not in scores:
            continue
        results = selectors.measure_results(patient, scores[patient.pk], references)
        was_off = any(
            (status := stored.get((patient.pk, code))) is not None and status.not_on_track for code in results
        )
        for code, result in results.items():
            values = {
                "not_on_track": result.not_on_track,
                "basis": result.basis or "",
                "intake_band": result.intake_band or "",
                "trajectory": result.inputs(),
            }
            status = stored.get((patient.pk, code))
            if status is None:
                since = now if result.not_on_track else None
                to_create.append(
                    MeasureStatus(patient=patient, instrument=code, since=since, computed_at=now, **values)
                )
                continue
            if all(getattr(status, name) == value for name, value in values.items()):
                continue
            status.since = (status.since if status.not_on_track else now) if result.not_on_track else None
            for name, value in values.items():
                setattr(status, name, value)
            status.computed_at = now
            to_update.append(status)
        off = [code for code, result in results.items() if result.not_on_track]
        if off and not was_off:
            latest = max(s.administered_at for s in scores[patient.pk] if s.instrument in off)
            raised.append(
                alerts.alert_raise(
                    patient=patient,
                    kind=AlertKind.NOT_ON_TRACK,
                    severity=AlertSeverity.MODERATE,
                    reason=_reason(results),
                    occurred_at=latest,
                    measures=off,
                )
            )
    MeasureStatus.objects.bulk_create(to_create)
    MeasureStatus.objects.bulk_update(to_update, STATUS_FIELDS)
    MeasureStatus.objects.filter(patient__in=patients, computed_at__lt=now).update(computed_at=now)
    return raised


def _with_new_responses(patients: Sequence[Patient]) -> list[Patient]:
    """Those of `patients` whose results may be out of date: a response received after their results
    were last checked, or results without any response left. Two queries."""
    ids = [p.pk for p in patients]
    newest = _per_patient(OutcomeResponse.objects.filter(patient_id__in=ids), Max("received_at"))
    checked = _per_patient(MeasureStatus.objects.filter(patient_id__in=ids), Min("computed_at"))
    return [
        p
        for p in patients
        if (p.pk in newest and (p.pk not in checked or newest[p.pk] >= checked[p.pk]))
        or (p.pk not in newest and p.pk in checked)
    ]


def _per_patient(rows: QuerySet, aggregate: Aggregate) -> dict[int, datetime]:
    """patient id → `aggregate` over their `rows`: one query."""
    return dict(rows.order_by().values("patient_id").annotate(at=aggregate).values_list("patient_id", "at"))


def _announce(raised: Sequence[Alert]) -> None:
    if raised:
        send_on_commit(alerts_changed, clinic_ids=sorted({a.clinic_id for a in raised}), raised=[a.pk for a in raised])


def patients_refresh(patients: Sequence[Patient], *, all_of_them: bool = False) -> list[Alert]:
    """Refreshes these patients' results (their rows locked by the caller's transaction, `clinic`
    loaded) and raises the alerts of those who became not on track; announced after commit. Only those
    with responses received since their results were checked, unless `all_of_them` (a new reference)."""
    if not all_of_them:
        patients = _with_new_responses(patients)
    if not patients:
        return []
    raised = _refresh_locked(patients, timezone.now())
    _announce(raised)
    return raised


def clinic_refresh(clinic_id: int) -> int:
    """Rebuilds the clinic's references, then refreshes all its patients against them. Returns how many
    alerts it raised (0 for a clinic that no longer exists)."""
    clinic = Clinic.objects.filter(pk=clinic_id).first()
    if clinic is None:
        return 0
    patients = list(Patient.objects.filter(clinic=clinic).select_related("clinic").order_by("pk"))
    references_rebuild(
        clinic, patients, selectors.scores_by_patient(Patient.objects.filter(clinic=clinic).values("pk"))
    )
    raised = 0
    ids = [p.pk for p in patients]
    for start in range(0, len(ids), BATCH):
        with transaction.atomic():
            locked = list(
                Patient.objects.select_for_update(of=("self",))
                .select_related("clinic")
                .filter(pk__in=ids[start : start + BATCH])
                .order_by("pk")
            )
            raised += len(patients_refresh(locked, all_of_them=True))
    return raised


def all_clinics_refresh(*, stop_on: tuple[type[BaseException], ...] = ()) -> int:
    """Every clinic's references and results (the nightly task). One clinic's failure is logged by its
    id and error class, and the others go on. Returns how many alerts were raised."""
    raised = 0
    for clinic_id in Clinic.objects.order_by("pk").values_list("pk", flat=True):
        try:
            raised += clinic_refresh(clinic_id)
        except stop_on:
            raise
        except Exception as error:
            logger.warning("expected-recovery refresh failed clinic_id=%s error=%s", clinic_id, type(error).__name__)
    return raised

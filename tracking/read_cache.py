"""Where a patient's cached read model lives, so the writes that change what it shows can forget it.

The key names the computation (the patient, when its analytics were computed and its local day): a
recompute makes a new key, so only writes that change a read model without a recompute (a dismissal, a
celebration shown) need `forget_read_model`.
"""

from datetime import date

from django.core.cache import cache

from tracking.history import local_today
from tracking.models import Patient


def is_fresh(patient: Patient) -> bool:
    """Whether the stored analytics are as new as the patient's data."""
    computed, changed = patient.analytics_computed_at, patient.data_changed_at
    return computed is not None and (changed is None or changed <= computed)


def read_model_key(patient: Patient, today: date) -> str | None:
    """The cache key of the current computation's read model; None while the analytics are stale."""
    if not is_fresh(patient) or patient.analytics_computed_at is None:
        return None
    return f"progress-read:{patient.pk}:{patient.analytics_computed_at.timestamp()}:{today}"


def forget_read_model(patient: Patient) -> None:
    key = read_model_key(patient, local_today(patient.tz_name))
    if key is not None:
        cache.delete(key)

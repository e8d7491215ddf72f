"""Expected recovery, stored (DESIGN §8): each clinic's references, its patients' not-on-track results,
and the moderate alert raised once while a result holds. The rules are `reports.trajectories` (pure)."""


def clinic_refresh(clinic_id: int) -> int:
    return 0


def all_clinics_refresh(*, stop_on: tuple[type[BaseException], ...] = ()) -> int:
    return 0

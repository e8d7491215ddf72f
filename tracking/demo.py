"""Deterministic demo data: two clinics' worth of patients, play sessions, markers, questionnaires, alerts.

This module only *generates* plain rows (tuples, see the ``*_FIELDS`` names below); the `seed_demo`
management command creates the clinics and users and writes the rows (PostgreSQL COPY or bulk_create).
No ORM, no clock, no I/O here: everything is a function of the seed, the size and the ``now`` passed in.

Conventions of the rows:
- timestamps are whole seconds since the Unix epoch, UTC (``None`` for a missing one);
- a row refers to a patient, session or response of the same batch by its index in that batch's list
  (``*_ref``), because database ids are only known to the writer;
- clinics and therapists are referred to by their database ids, which the caller passes in.

Times are built from the patient's local calendar and clock (the patient's time zone, else the clinic's),
so sessions happen at plausible local hours, including some late in the evening.
"""

from __future__ import annotations

import bisect
import random
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from zoneinfo import ZoneInfo

# --- The two demo clinics and their staff -------------------------------------------------------------


@dataclass(frozen=True)
class DemoClinic:
    slug: str
    name: str
    timezone: str
    prefix: str  # player_id prefix
    therapists: tuple[str, ...]
    admin: str
    auditor: str
    # A few patients live elsewhere: their own time zone differs from the clinic's.
    other_timezones: tuple[str, ...]


CLINICS: tuple[DemoClinic, ...] = (
    DemoClinic(
        slug="northside",
        name="Northside Wellbeing Clinic",
        timezone="Europe/London",
        prefix="nw",
        therapists=("therapist.anna", "therapist.ben"),
        admin="admin.northside",
        auditor="auditor.northside",
        other_timezones=("Europe/Berlin", "Asia/Kolkata", "America/Toronto"),
    ),
    DemoClinic(
        slug="riverside",
        name="Riverside Counselling",
        timezone="America/New_York",
        prefix="rv",
        therapists=("therapist.carla", "therapist.dev"),
        admin="admin.riverside",
        auditor="auditor.riverside",
        other_timezones=("America/Los_Angeles", "America/Chicago", "Europe/London"),
    ),
)

# --- Row layouts ----------------------------------------------------------------------------------------

PATIENT_FIELDS = ("clinic_id", "player_id", "timezone", "risk_flag", "risk_flag_raised_at", "data_changed_at")
ASSIGNMENT_FIELDS = ("patient_ref", "therapist_id")
SESSION_FIELDS = (
    "patient_ref",
    "clinic_id",
    "session_id",
    "started_at",
    "ended_at",
    "status",
    "duration_minutes",
    "world",
    "character",
    "approaches",  # tuple of str
    "interventions_count",
    "key_achievements",  # tuple of str
)
MARKER_FIELDS = (
    "session_ref",
    "patient_ref",
    "clinic_id",
    "marker_id",
    "type",
    "description",
    "achieved_at",
    "therapeutic_value",
    "related_goal_id",
)
RESPONSE_FIELDS = ("patient_ref", "clinic_id", "response_id", "instrument", "administered_at", "total", "items")
ALERT_FIELDS = (
    "patient_ref",
    "clinic_id",
    "kind",
    "severity",
    "reason",
    "alert_id",  # the game's id of a crisis signal; None for alerts we raise
    "response_ref",  # the PHQ-9 response behind an item-9 alert; None otherwise
    "occurred_at",
)


@dataclass
class Batch:
    """The rows of a batch of patients, in the order they must be written."""

    first_patient: int  # index of the batch's first patient in the whole plan
    patients: list[tuple] = field(default_factory=list)
    assignments: list[tuple] = field(default_factory=list)
    sessions: list[tuple] = field(default_factory=list)
    markers: list[tuple] = field(default_factory=list)
    responses: list[tuple] = field(default_factory=list)
    alerts: list[tuple] = field(default_factory=list)


# --- Vocabulary -----------------------------------------------------------------------------------------

WORLDS = ("Calm Meadows", "Lantern Forest", "Tidepool Bay", "Ember Peaks", "Skyward Isles")
CHARACTERS = ("Fox", "Owl", "Heron", "Bear", "Otter")
APPROACHES = ("mindfulness", "cbt", "dbt", "act", "grounding", "breathing")
ACHIEVEMENTS = (
    "Finished a breathing exercise",
    "Calmed the storm spirit",
    "Helped a villager",
    "Wrote a journal entry",
    "Named three feelings",
    "Reached the lighthouse",
    "Tried a new coping skill",
    "Stayed through a hard scene",
)
# Local hours a session may start at (several a day are at distinct hours, some late in the evening).
SESSION_HOURS = (7, 8, 9, 10, 12, 13, 16, 17, 18, 19, 20, 21, 22, 23)

# type -> (weight, lowest therapeutic value, highest, descriptions); skill_acquired is the most common.
MARKER_TYPES: dict[str, tuple[int, float, float, tuple[str, ...]]] = {
    "skill_acquired": (
        46,
        0.35,
        0.65,
        (
            "Completed a guided breathing exercise",
            "Practised 5-4-3-2-1 grounding",
            "Finished a thought-record exercise",
            "Used a body scan to settle",
        ),
    ),
    "insight": (14, 0.40, 0.80, ("Noticed a link between sleep and mood", "Recognised an avoidance pattern")),
    "setback_overcome": (9, 0.50, 0.85, ("Came back after a difficult day", "Finished a level after failing twice")),
    "milestone": (9, 0.50, 0.80, ("Unlocked a new region", "Completed a story chapter")),
    "goal_achieved": (8, 0.60, 0.90, ("Reached a weekly practice goal", "Kept a sleep routine for a week")),
    "therapeutic_goal": (8, 0.55, 0.90, ("Set a goal with the companion", "Reviewed progress on a goal")),
    "breakthrough": (6, 0.75, 1.00, ("Shared a difficult memory with the companion", "Reframed a core belief")),
}
_MARKER_NAMES = tuple(MARKER_TYPES)
_MARKER_CUMULATIVE = tuple(
    sum(MARKER_TYPES[name][0] for name in _MARKER_NAMES[: i + 1]) / sum(w for w, *_ in MARKER_TYPES.values())
    for i in range(len(_MARKER_NAMES))
)
_GOAL_TYPES = frozenset({"goal_achieved", "therapeutic_goal"})

CRISIS_REASONS = (
    "Player told a companion character they do not want to be here any more",
    "Distress check-in answered 'I might hurt myself'",
    "Crisis keywords in an in-game journal entry",
)

# Plan proportions (weights). Every label appears at least once when there are enough patients.
PATTERNS = {"steady": 35, "improving": 20, "dropping_out": 15, "returning": 12, "sporadic": 18}
TRAJECTORIES = {"recovering": 25, "improving": 20, "non_responder": 25, "deteriorating": 12, "subclinical": 18}
OUTCOME_MODES = {"regular": 84, "one": 8, "none": 8}

# Sessions on an active day (cumulative odds of 1, 2, ...): 1..6, about 3.4 on average (1..3, about 1.5, for
# sporadic players).
_SESSIONS_PER_DAY = (0.08, 0.24, 0.50, 0.75, 0.92, 1.0)
_SESSIONS_PER_DAY_SPORADIC = (0.6, 0.9, 1.0)

_EPOCH_ORDINAL = date(1970, 1, 1).toordinal()


# --- The plan: who each patient is -----------------------------------------------------------------------


@dataclass(frozen=True)
class PatientPlan:
    index: int
    clinic: DemoClinic
    player_id: str
    therapist: str  # username
    timezone: str  # blank = the clinic's
    pattern: str
    trajectory: str
    outcomes: str  # regular | one | none
    streak: bool  # active every day lately (a current streak of at least 8 days)
    risk: bool  # answers PHQ-9 item 9 above 0
    crisis: bool  # the game reports a crisis signal
    # Started a third of the way in, at caseness and not improving: not on track against the clinic's
    # expected-recovery reference (DESIGN §8), which the other patients' histories make.
    stalled: bool = False

    @property
    def tz_name(self) -> str:
        return self.timezone or self.clinic.timezone


def _quota(rng: random.Random, n: int, weights: dict[str, int]) -> list[str]:
    """n labels in proportion to weights (each at least once when n allows), shuffled."""
    total = sum(weights.values())
    floor = 1 if n >= len(weights) else 0
    labels = [label for label, w in weights.items() for _ in range(max(floor, round(n * w / total)))]
    counts = Counter(labels)
    while len(labels) > n:
        labels.remove(counts.most_common(1)[0][0])
        counts = Counter(labels)
    labels += [max(weights, key=weights.__getitem__)] * (n - len(labels))
    rng.shuffle(labels)
    return labels


def plan_patients(seed: int, count: int) -> list[PatientPlan]:
    """Who the `count` patients are: clinic, therapist, time zone and the shape of their history."""
    rng = random.Random(f"demo-plan:{seed}")
    patterns = _quota(rng, count, PATTERNS)
    trajectories = _quota(rng, count, TRAJECTORIES)
    outcomes = _quota(rng, count, OUTCOME_MODES)
    indexes = range(count)
    streakers = set(
        rng.sample(
            [i for i in indexes if patterns[i] in ("steady", "improving")] or list(indexes),
            k=0 if count == 0 else max(1, round(0.55 * sum(p in ("steady", "improving") for p in patterns))),
        )
    )
    at_risk_candidates = [i for i in indexes if outcomes[i] == "regular" and trajectories[i] != "subclinical"]
    at_risk = set(rng.sample(at_risk_candidates, k=min(len(at_risk_candidates), max(1, round(count * 0.03)))))
    crisis = set(rng.sample(list(indexes), k=min(count, max(2, round(count * 0.01)))))
    away = set(rng.sample(list(indexes), k=min(count, max(2, round(count * 0.06)))))
    # One steady player per clinic who is not improving, on the first therapist's caseload (the first
    # demo login's), among the first patients so that small seeds have one.
    stalled: set[int] = set()
    for clinic_number in range(len(CLINICS)):
        stalled.update(
            [
                i
                for i in indexes
                if i % len(CLINICS) == clinic_number
                and patterns[i] == "steady"
                and (i // len(CLINICS)) % len(CLINICS[clinic_number].therapists) == 0  # the first therapist's
                and outcomes[i] == "regular"
                and i not in at_risk | crisis | away
            ][:1]
        )

    plans = []
    numbers = Counter()
    for i in indexes:
        clinic = CLINICS[i % len(CLINICS)]
        numbers[clinic.slug] += 1
        number = numbers[clinic.slug]
        plans.append(
            PatientPlan(
                index=i,
                clinic=clinic,
                player_id=f"{clinic.prefix}-{number:04d}",
                therapist=clinic.therapists[(number - 1) % len(clinic.therapists)],
                timezone=rng.choice(clinic.other_timezones) if i in away else "",
                pattern=patterns[i],
                trajectory=trajectories[i],
                outcomes=outcomes[i],
                streak=i in streakers,
                risk=i in at_risk,
                crisis=i in crisis,
                stalled=i in stalled,
            )
        )
    return plans


# --- Generation ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Context:
    seed: int
    days: int  # history length, ending with the patient's local today
    now: int  # epoch seconds; nothing happens after it
    clinic_ids: dict[str, int]  # slug -> id
    therapist_ids: dict[str, int]  # username -> id


def generate_batches(plans: Sequence[PatientPlan], ctx: Context, batch_size: int = 100) -> Iterator[Batch]:
    """The rows for `plans`, `batch_size` patients at a time (memory stays bounded)."""
    day_starts = _DayStarts(ctx.now)
    for first in range(0, len(plans), batch_size):
        batch = Batch(first_patient=first)
        for plan in plans[first : first + batch_size]:
            _PatientGenerator(plan, ctx, batch, day_starts).run()
        yield batch


class _DayStarts:
    """The UTC epoch second at which a patient-local day starts, cached per (time zone, day).

    Uses the day's UTC offset at local noon: sessions start between 07:00 and 23:59 local time, after any
    daylight-saving change of that day, so the offset is exact for them."""

    def __init__(self, now: int) -> None:
        self.now = now
        self._zones: dict[str, ZoneInfo] = {}
        self._cache: dict[tuple[str, int], int] = {}

    def today_ordinal(self, tz_name: str) -> int:
        return datetime.fromtimestamp(self.now, self._zone(tz_name)).date().toordinal()

    def start(self, tz_name: str, ordinal: int) -> int:
        key = (tz_name, ordinal)
        value = self._cache.get(key)
        if value is None:
            day = date.fromordinal(ordinal)
            offset = self._zone(tz_name).utcoffset(datetime(day.year, day.month, day.day, 12))
            value = self._cache[key] = (ordinal - _EPOCH_ORDINAL) * 86400 - int(offset.total_seconds())
        return value

    def _zone(self, tz_name: str) -> ZoneInfo:
        zone = self._zones.get(tz_name)
        if zone is None:
            zone = self._zones[tz_name] = ZoneInfo(tz_name)
        return zone


class _PatientGenerator:
    """Everything about one patient, appended to a batch. Uses its own random stream (seed + player_id), so a
    patient's data does not depend on the batch size or on the other patients."""

    def __init__(self, plan: PatientPlan, ctx: Context, batch: Batch, day_starts: _DayStarts) -> None:
        self.plan = plan
        self.ctx = ctx
        self.batch = batch
        self.day_starts = day_starts
        self.rng = random.Random(f"demo:{ctx.seed}:{plan.player_id}")
        self.ref = len(batch.patients)
        self.clinic_id = ctx.clinic_ids[plan.clinic.slug]
        self.tz_name = plan.tz_name
        self.today = day_starts.today_ordinal(self.tz_name)
        self.urgent_times: list[int] = []

    def run(self) -> None:
        rng, days = self.rng, self.ctx.days
        # The shape of the history: the days with activity, as [start, stop) minus an optional gap.
        self.start_day = (
            0
            if self.plan.pattern in ("dropping_out", "returning") or self.plan.risk
            else (0 if rng.random() < 0.7 else rng.randrange(0, max(1, days // 3)))
        )
        if self.plan.stalled:
            self.start_day = days // 3
        self.stop_day = days
        self.gap = (0, 0)
        if self.plan.pattern == "dropping_out":
            ago = min(rng.randint(10, 40), max(1, days - self.start_day - 5))
            self.stop_day = max(self.start_day + 1, days - ago)
        elif self.plan.pattern == "returning":
            length = min(rng.randint(14, 28), max(1, days // 2))
            end = max(self.start_day + length, days - rng.randint(3, 20))
            self.gap = (max(self.start_day + 1, end - length), min(end, days - 1))

        self.batch.patients.append(None)  # placeholder; the row is final once the alerts are known
        self.batch.assignments.append((self.ref, self.ctx.therapist_ids[self.plan.therapist]))
        sessions = self._sessions()
        self._outcomes()
        if self.plan.crisis and sessions:
            self._crisis_signal(sessions)
        raised = min(self.urgent_times) if self.urgent_times else None
        self.batch.patients[self.ref] = (
            self.clinic_id,
            self.plan.player_id,
            self.plan.timezone,
            raised is not None,
            raised,
            self.ctx.now,
        )

    # Sessions and markers ------------------------------------------------------------------------------

    def _sessions_per_day(self) -> list[int]:
        rng, plan, days = self.rng, self.plan, self.ctx.days
        probability = {
            "steady": rng.uniform(0.75, 0.95),
            "improving": 0.0,  # ramps up below
            "dropping_out": rng.uniform(0.6, 0.9),
            "returning": rng.uniform(0.65, 0.9),
            "sporadic": rng.uniform(0.12, 0.3),
        }[plan.pattern]
        streak_from = days - rng.randint(8, 45) if plan.streak else days
        table = _SESSIONS_PER_DAY_SPORADIC if plan.pattern == "sporadic" else _SESSIONS_PER_DAY
        span = max(1, self.stop_day - self.start_day - 1)
        per_day = [0] * days
        for day in range(self.start_day, self.stop_day):
            if self.gap[0] <= day < self.gap[1]:
                continue
            if plan.pattern == "improving":
                probability = 0.15 + 0.8 * (day - self.start_day) / span
            if day < streak_from and rng.random() >= probability:
                continue
            per_day[day] = bisect.bisect(table, rng.random()) + 1
        return per_day

    def _sessions(self) -> list[tuple[int, int, int]]:
        """Sessions and their markers; returns (session ref, start, end) of each."""
        rng, plan, now = self.rng, self.plan, self.ctx.now
        sessions, markers = self.batch.sessions, self.batch.markers
        pid, patient_ref, clinic_id = plan.player_id, self.ref, self.clinic_id
        world, character = rng.choice(WORLDS), rng.choice(CHARACTERS)
        favourite = rng.sample(APPROACHES, 2)
        approach_sets = (
            (favourite[0],),
            tuple(favourite),
            (favourite[0], rng.choice(APPROACHES)),
            (favourite[1],),
            (rng.choice(APPROACHES),),
        )
        approach_sets = tuple(tuple(dict.fromkeys(s)) for s in approach_sets)  # no duplicates within a set
        achievement_sets = ((), (), (rng.choice(ACHIEVEMENTS),), tuple(rng.sample(ACHIEVEMENTS, 2)))
        goal_count = rng.randint(1, 4)
        first_day = self.today - self.ctx.days + 1
        tz_name, day_start = self.tz_name, self.day_starts.start
        random_ = rng.random
        spans: list[tuple[int, int, int]] = []
        number = marker_number = 0
        for day, count in enumerate(self._sessions_per_day()):
            if not count:
                continue
            base = day_start(tz_name, first_day + day)
            for hour in sorted(rng.sample(SESSION_HOURS, count)):
                start = base + hour * 3600 + int(random_() * 840)  # starts in the hour's first 14 minutes
                if start > now:
                    break
                r = random_()
                if r < 0.86:
                    status, minutes = "completed", round(5 + 20 * (random_() + random_()), 1)
                    interventions, marker_odds = int(random_() * 7), random_()
                elif r < 0.95:
                    status, minutes = "abandoned", round(5 + 10 * random_(), 1)
                    interventions, marker_odds = int(random_() * 3), 0.4 + 0.6 * random_()
                else:
                    status, minutes = "paused", round(5 + 15 * random_(), 1)
                    interventions, marker_odds = int(random_() * 4), 0.4 + 0.6 * random_()
                seconds = int(minutes * 60)
                end = start + seconds
                if end > now:  # still being played
                    status, seconds = "active", now - start
                    minutes = round(seconds / 60, 1)
                number += 1
                session_ref = len(sessions)
                sessions.append(
                    (
                        patient_ref,
                        clinic_id,
                        f"{pid}-s{number:05d}",
                        start,
                        end if status in ("completed", "abandoned") else None,
                        status,
                        minutes,
                        world if random_() < 0.7 else WORLDS[int(random_() * len(WORLDS))],
                        character if random_() < 0.85 else CHARACTERS[int(random_() * len(CHARACTERS))],
                        approach_sets[int(random_() * len(approach_sets))],
                        interventions,
                        achievement_sets[int(random_() * len(achievement_sets))],
                    )
                )
                spans.append((session_ref, start, start + seconds))
                # 0-3 markers a session, about one every two completed sessions.
                n_markers = 0 if marker_odds < 0.62 else 1 if marker_odds < 0.88 else 2 if marker_odds < 0.97 else 3
                for _ in range(n_markers):
                    kind = _MARKER_NAMES[bisect.bisect(_MARKER_CUMULATIVE, random_())]
                    _, low, high, descriptions = MARKER_TYPES[kind]
                    marker_number += 1
                    markers.append(
                        (
                            session_ref,
                            patient_ref,
                            clinic_id,
                            f"{pid}-m{marker_number:05d}",
                            kind,
                            descriptions[int(random_() * len(descriptions))],
                            start + int(random_() * seconds),
                            round(low + (high - low) * random_(), 2),
                            f"goal-{1 + int(random_() * goal_count)}" if kind in _GOAL_TYPES else "",
                        )
                    )
        # Sometimes the latest session, started within the last 45 minutes, is still going on.
        if spans and now - spans[-1][1] <= 45 * 60 and rng.random() < 0.5:
            ref, start, _ = spans[-1]
            row = sessions[ref]
            sessions[ref] = (*row[:4], None, "active", round((now - start) / 60, 1), *row[7:])
        return spans

    def _crisis_signal(self, sessions: list[tuple[int, int, int]]) -> None:
        _, start, end = self.rng.choice(sessions)
        occurred = start + int(self.rng.random() * max(1, end - start))
        self.urgent_times.append(occurred)
        self.batch.alerts.append(
            (
                self.ref,
                self.clinic_id,
                "crisis_signal",
                "urgent",
                self.rng.choice(CRISIS_REASONS),
                f"{self.plan.player_id}-crisis-1",
                None,
                occurred,
            )
        )

    # Questionnaires ------------------------------------------------------------------------------------

    def _outcomes(self) -> None:
        """PHQ-9 and GAD-7 together about every two weeks while the patient plays."""
        rng, plan, days = self.rng, self.plan, self.ctx.days
        if plan.outcomes == "none":
            return
        visit_days = []
        day = self.start_day + rng.randint(0, 3)
        if plan.risk:
            day = min(day, max(0, days - 2))  # its first (alerting) response is never cut off by `now`
        while day < self.stop_day:
            if not (self.gap[0] <= day < self.gap[1]):
                visit_days.append(day)
                if plan.outcomes == "one":
                    break
            day += rng.randint(12, 16)
        phq_from, phq_to, gad_from, gad_to = self._trajectory()
        first_day = self.today - days + 1
        last = max(1, len(visit_days) - 1)
        for k, day in enumerate(visit_days):
            at = self.day_starts.start(self.tz_name, first_day + day) + rng.randint(9 * 3600, 20 * 3600)
            if at > self.ctx.now:
                break
            noise = 0 if k in (0, len(visit_days) - 1) else rng.randint(-1, 1)
            phq = round(phq_from + (phq_to - phq_from) * k / last) + noise
            gad = round(gad_from + (gad_to - gad_from) * k / last) + noise
            item9 = 0
            if plan.risk and (k == 0 or (phq >= 15 and rng.random() < 0.5)):
                item9 = rng.randint(1, 2)
            phq_items = self._items(phq, 9, item9)
            ref = self._response("phq9", k + 1, at, phq_items)
            if item9:
                self.urgent_times.append(at)
                self.batch.alerts.append(
                    (self.ref, self.clinic_id, "phq9_item9", "urgent", f"PHQ-9 item 9 answered {item9}", None, ref, at)
                )
            if rng.random() < 0.95:  # now and then only the PHQ-9 is filled in
                self._response("gad7", k + 1, at + rng.randint(120, 600), self._items(gad, 7, None))

    def _trajectory(self) -> tuple[int, int, int, int]:
        """First and last PHQ-9 and GAD-7 totals (NHS Talking Therapies: caseness PHQ-9 >= 10, GAD-7 >= 8;
        reliable change 6 and 4 points)."""
        r = self.rng.randint
        match self.plan.trajectory:
            case _ if self.plan.stalled:  # stays in the middle of the bands, as the reference improves
                return 17, 17, 16, 16
            case "recovering":  # at caseness, ends below it by a reliable margin: reliable recovery
                return r(12, 21), r(2, 7), r(10, 17), r(1, 5)
            case "improving":  # reliable improvement, not (yet) recovered
                phq, gad = r(17, 24), r(13, 19)
                return phq, phq - r(6, 7), gad, gad - r(4, 5)
            case "non_responder":
                phq, gad = r(11, 20), r(9, 16)
                return phq, phq + r(-3, 3), gad, gad + r(-2, 2)
            case "deteriorating":
                phq, gad = r(6, 13), r(5, 11)
                return phq, phq + r(6, 10), gad, gad + r(4, 7)
            case _:  # subclinical
                return r(2, 8), r(1, 7), r(1, 6), r(1, 6)

    def _items(self, total: int, count: int, item9: int | None) -> list[int]:
        """Item scores 0-3 summing to about `total` (clamped to what is possible); for PHQ-9, item 9 is
        given (`item9`) and the others carry the rest."""
        items = [0] * count
        free = list(range(count))
        if item9 is not None:
            items[8] = item9
            free.remove(8)
        remaining = max(0, min(total - (item9 or 0), 3 * len(free)))
        random_ = self.rng.random
        for _ in range(remaining):
            i = int(random_() * len(free))
            items[free[i]] += 1
            if items[free[i]] == 3:
                free.pop(i)
        return items

    def _response(self, instrument: str, number: int, at: int, items: list[int]) -> int:
        ref = len(self.batch.responses)
        self.batch.responses.append(
            (
                self.ref,
                self.clinic_id,
                f"{self.plan.player_id}-{instrument}-{number:03d}",
                instrument,
                at,
                sum(items),
                tuple(items),
            )
        )
        return ref

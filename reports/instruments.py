"""Standardised questionnaires as data. Adding an instrument = one more `Instrument` here plus a test.

Sources: PHQ-9 — Kroenke, Spitzer & Williams (2001); GAD-7 — Spitzer, Kroenke, Williams & Löwe (2006);
caseness and reliable-change thresholds — NHS Talking Therapies manual.
"""

from dataclasses import dataclass

RESPONSE_OPTIONS = ("Not at all", "Several days", "More than half the days", "Nearly every day")


@dataclass(frozen=True)
class Band:
    name: str
    low: int
    high: int

    @property
    def label(self) -> str:
        return self.name.replace("_", " ").capitalize()


@dataclass(frozen=True)
class Instrument:
    code: str
    name: str
    items: tuple[str, ...]
    bands: tuple[Band, ...]
    caseness_threshold: int  # a total at or above this is "at caseness"
    reliable_change: int  # a change of at least this many points is reliable
    item_min: int = 0
    item_max: int = 3
    # Item (1-based) whose any non-zero answer raises an urgent alert, if the instrument has one.
    risk_item: int | None = None

    @property
    def item_count(self) -> int:
        return len(self.items)

    @property
    def total_min(self) -> int:
        return self.item_min * self.item_count

    @property
    def total_max(self) -> int:
        return self.item_max * self.item_count

    def band(self, total: int) -> str:
        for band in self.bands:
            if band.low <= total <= band.high:
                return band.name
        raise ValueError(f"{self.code} total {total} is outside {self.total_min}–{self.total_max}")

    def at_caseness(self, total: int) -> bool:
        return total >= self.caseness_threshold


PHQ9 = Instrument(
    code="phq9",
    name="PHQ-9",
    items=(
        "Little interest or pleasure in doing things",
        "Feeling down, depressed, or hopeless",
        "Trouble falling or staying asleep, or sleeping too much",
        "Feeling tired or having little energy",
        "Poor appetite or overeating",
        "Feeling bad about yourself — or that you are a failure or have let yourself or your family down",
        "Trouble concentrating on things, such as reading the newspaper or watching television",
        "Moving or speaking so slowly that other people could have noticed; or the opposite — being so "
        "fidgety or restless that you have been moving around a lot more than usual",
        "Thoughts that you would be better off dead, or of hurting yourself in some way",
    ),
    bands=(
        Band("minimal", 0, 4),
        Band("mild", 5, 9),
        Band("moderate", 10, 14),
        Band("moderately_severe", 15, 19),
        Band("severe", 20, 27),
    ),
    caseness_threshold=10,
    reliable_change=6,
    risk_item=9,
)

GAD7 = Instrument(
    code="gad7",
    name="GAD-7",
    items=(
        "Feeling nervous, anxious, or on edge",
        "Not being able to stop or control worrying",
        "Worrying too much about different things",
        "Trouble relaxing",
        "Being so restless that it is hard to sit still",
        "Becoming easily annoyed or irritable",
        "Feeling afraid, as if something awful might happen",
    ),
    bands=(
        Band("minimal", 0, 4),
        Band("mild", 5, 9),
        Band("moderate", 10, 14),
        Band("severe", 15, 21),
    ),
    caseness_threshold=8,
    reliable_change=4,
)

INSTRUMENTS: dict[str, Instrument] = {i.code: i for i in (PHQ9, GAD7)}
MAX_ITEMS = max(i.item_count for i in INSTRUMENTS.values())


def get_instrument(code: str) -> Instrument:
    try:
        return INSTRUMENTS[code]
    except KeyError:
        raise ValueError(f"unknown instrument {code!r}; expected one of {', '.join(INSTRUMENTS)}") from None


def score_errors(instrument: Instrument, items: list[int] | None, total: int | None) -> dict[str, str]:
    """Validate one response; returns {field: reason}, empty when valid."""
    errors: dict[str, str] = {}
    if items is None and total is None:
        return {"items": "give the item scores, the total, or both"}
    if items is not None:
        if len(items) != instrument.item_count:
            errors["items"] = f"{instrument.name} has {instrument.item_count} items, got {len(items)}"
        else:
            for n, score in enumerate(items, start=1):
                if not (instrument.item_min <= score <= instrument.item_max):
                    errors["items"] = (
                        f"item {n} is {score}; {instrument.name} items are scored "
                        f"{instrument.item_min}–{instrument.item_max}"
                    )
                    break
    if total is not None and not (instrument.total_min <= total <= instrument.total_max):
        errors["total"] = f"{instrument.name} total must be {instrument.total_min}–{instrument.total_max}, got {total}"
    if not errors and items is not None and total is not None and sum(items) != total:
        errors["total"] = f"total {total} disagrees with the sum of the items ({sum(items)})"
    return errors

"""The "Review the open alert" insight (DESIGN §4): while an urgent or high alert is open it heads the
recommendations and "Maintain current pace" is not offered. Pure rule, no database."""

from dataclasses import replace
from datetime import UTC, date, datetime, time

import pytest

from tracking.analytics import (
    ActiveDay,
    PatientHistory,
    ScoredValue,
    compute_summary,
    recommendations,
)

TODAY = date(2025, 3, 20)
URGENT_CRISIS = ("urgent", "Crisis signal from the game")
URGENT_ITEM9 = ("urgent", "PHQ-9 item 9 answered above 0")
HIGH_DETERIORATION = ("high", "Reliable deterioration")


def history(open_alerts=(), **fields) -> PatientHistory:
    day = ActiveDay(TODAY, 1, 20.0, datetime.combine(TODAY, time(9), tzinfo=UTC))
    return PatientHistory(today=TODAY, timezone="UTC", active_days=(day,), open_alerts=open_alerts, **fields)


def summary_with(*, streak: int = 0, momentum: float = 0.3, risk: float = 0.0):
    base = compute_summary(history())
    return replace(
        base,
        metrics=replace(base.metrics, current_streak_days=streak),
        therapeutic_momentum=ScoredValue(momentum, (), {}),
        dropout_risk=replace(base.dropout_risk, value=risk),
    )


def types(drafts) -> list[str]:
    return [d.type for d in drafts]


@pytest.mark.parametrize("alerts", [(URGENT_CRISIS,), (HIGH_DETERIORATION,), (URGENT_ITEM9, HIGH_DETERIORATION)])
def test_an_open_urgent_or_high_alert_puts_review_alert_first_with_priority_1(alerts):
    drafts = recommendations(summary_with(), history(alerts))
    assert types(drafts)[0] == "review_alert"
    review = drafts[0]
    assert (review.title, review.priority) == ("Review the open alert", 1)
    assert f"{len(alerts)} open alert" in review.reasoning
    for severity, kind in alerts:
        assert f"{severity}: {kind}" in review.reasoning


@pytest.mark.parametrize(("streak", "momentum"), [(3, 0.6), (4, 0.61), (10, 1.0)])
def test_maintain_pace_is_not_offered_while_a_serious_alert_is_open(streak, momentum):
    calm = recommendations(summary_with(streak=streak, momentum=momentum), history())
    assert "maintain_pace" in types(calm)  # the condition of "Maintain current pace" holds
    for alerts in ((URGENT_CRISIS,), (HIGH_DETERIORATION,)):
        drafts = recommendations(summary_with(streak=streak, momentum=momentum), history(alerts))
        assert "maintain_pace" not in types(drafts)
        assert types(drafts)[0] == "review_alert"


def test_review_alert_heads_the_list_even_beside_other_priority_1_advice():
    hist = history((URGENT_CRISIS,), skills_last_7_days=3, approaches_last_7_days={"cbt": 3})
    drafts = recommendations(summary_with(streak=3, momentum=0.7, risk=0.7), hist)
    assert types(drafts) == ["review_alert", "shorter_sessions", "continue_approach"]
    assert [d.priority for d in drafts] == [1, 1, 3]


@pytest.mark.parametrize(
    "alerts", [(), (("moderate", "Disengagement"),), (("moderate", "Crisis signal from the game"),)]
)
def test_no_open_urgent_or_high_alert_no_review_alert_and_maintain_pace_again(alerts):
    # No open alert, or only moderate ones: the engagement advice stands.
    drafts = recommendations(summary_with(streak=3, momentum=0.6), history(alerts))
    assert types(drafts) == ["maintain_pace"]


def test_only_the_urgent_and_high_alerts_are_listed_in_the_reasoning():
    alerts = (URGENT_CRISIS, ("moderate", "Disengagement"))
    (review,) = recommendations(summary_with(), history(alerts))
    assert review.reasoning == "1 open alert of urgent or high severity (urgent: Crisis signal from the game)."


def test_one_alert_is_not_pluralised_and_two_are():
    (one,) = recommendations(summary_with(), history((URGENT_CRISIS,)))
    assert one.reasoning.startswith("1 open alert of urgent or high severity")
    (two,) = recommendations(summary_with(), history((URGENT_CRISIS, HIGH_DETERIORATION)))
    assert two.reasoning.startswith("2 open alerts of urgent or high severity")

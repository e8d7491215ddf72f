"""Shapes of the outcome read endpoints, for the OpenAPI schema. The views return the selectors' plain
data, so the effectiveness endpoint is exactly one element of the report's `patients`."""

from rest_framework import serializers

from reports.instruments import INSTRUMENTS


class OutcomeScoreSerializer(serializers.Serializer):
    response_id = serializers.CharField()
    instrument = serializers.ChoiceField(choices=list(INSTRUMENTS))
    administered_at = serializers.DateTimeField()
    total = serializers.IntegerField()
    band = serializers.CharField(help_text="Severity band of the total, e.g. moderately_severe.")
    at_caseness = serializers.BooleanField(help_text="Total at or above the caseness threshold (PHQ-9 10, GAD-7 8).")
    items = serializers.ListField(
        child=serializers.IntegerField(),
        allow_null=True,
        help_text="Item scores, or null when only the total is known.",
    )
    item9 = serializers.IntegerField(
        allow_null=True,
        help_text="PHQ-9 item 9 (thoughts of being better off dead or of self-harm); null for GAD-7 or when the "
        "items are unknown. Any answer above 0 raises an urgent alert. A 0 is not evidence of safety.",
    )


class TrajectorySerializer(serializers.Serializer):
    week = serializers.IntegerField(
        allow_null=True, help_text="Week of the latest score: whole weeks since the first score, in local days."
    )
    latest = serializers.IntegerField(allow_null=True)
    n_patients = serializers.IntegerField(allow_null=True, help_text="Patients in the reference at that week.")
    n_scores = serializers.IntegerField(allow_null=True, help_text="Their scores in weeks w−1, w and w+1.")
    p25 = serializers.FloatField(allow_null=True)
    p50 = serializers.FloatField(allow_null=True)
    p75 = serializers.FloatField(allow_null=True)


class MeasureSerializer(serializers.Serializer):
    first = serializers.IntegerField(allow_null=True)
    last = serializers.IntegerField(allow_null=True)
    severity_first = serializers.CharField(allow_null=True)
    severity_last = serializers.CharField(allow_null=True)
    paired = serializers.BooleanField()
    change = serializers.IntegerField(allow_null=True, help_text="last − first; negative = fewer symptoms.")
    reliable_improvement = serializers.BooleanField(allow_null=True)
    reliable_deterioration = serializers.BooleanField(allow_null=True)
    at_caseness_first = serializers.BooleanField(allow_null=True)
    at_caseness_last = serializers.BooleanField(allow_null=True)
    not_on_track = serializers.BooleanField(
        allow_null=True,
        help_text="Expected recovery (DESIGN §8): true when the latest score is worse than expected; null without a "
        "score, when the first score was below caseness, or before week 3. A signal to review, not a prediction.",
    )
    not_on_track_basis = serializers.ChoiceField(
        choices=["clinic_reference", "no_reliable_improvement"],
        allow_null=True,
        help_text="clinic_reference: above the 75th percentile of the clinic's patients with the same intake band at "
        "that week; no_reliable_improvement (no reference at that week): week 6 or later, still at caseness and no "
        "reliable improvement since the first score.",
    )
    trajectory = TrajectorySerializer(help_text="The inputs of not_on_track.")


class EffectivenessSerializer(serializers.Serializer):
    player_id = serializers.CharField()
    phq9 = MeasureSerializer()
    gad7 = MeasureSerializer()
    caseness_at_start = serializers.BooleanField(allow_null=True)
    recovery = serializers.BooleanField(allow_null=True, help_text="Null (unknown) unless both measures are paired.")
    reliable_improvement = serializers.BooleanField(allow_null=True)
    reliable_deterioration = serializers.BooleanField(allow_null=True)
    reliable_recovery = serializers.BooleanField(allow_null=True)
    item9_alert = serializers.BooleanField(
        help_text="Any PHQ-9 response with item 9 above 0. False is not evidence of safety."
    )


class AlertOutSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    kind = serializers.CharField()
    severity = serializers.CharField()
    reason = serializers.CharField()
    alert_id = serializers.CharField(allow_null=True)
    occurred_at = serializers.DateTimeField()
    created_at = serializers.DateTimeField()
    acknowledged = serializers.SerializerMethodField()
    acknowledged_at = serializers.DateTimeField(allow_null=True)

    def get_acknowledged(self, alert) -> bool:
        return alert.acknowledged_at is not None


class DueMeasureSerializer(serializers.Serializer):
    instrument = serializers.ChoiceField(choices=sorted(INSTRUMENTS))
    due_since = serializers.DateField(
        allow_null=True, help_text="Last administration's local date + the interval; null if never given."
    )
    last_administered_at = serializers.DateTimeField(allow_null=True)


class MeasuresDueSerializer(serializers.Serializer):
    due = DueMeasureSerializer(many=True, help_text="Only the measures that are due (DESIGN §8).")

"""Shapes of the ingest API's answers, for the OpenAPI schema. What it accepts is `tracking.ingest`."""

from rest_framework import serializers


class KindCountsSerializer(serializers.Serializer):
    created = serializers.IntegerField()
    updated = serializers.IntegerField()
    unchanged = serializers.IntegerField()


class IngestResultSerializer(serializers.Serializer):
    sessions = KindCountsSerializer()
    markers = KindCountsSerializer()
    outcomes = KindCountsSerializer()
    alerts = KindCountsSerializer()

"""The same batch posted 20 times at once against a live server leaves one copy of each item."""

import json
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import pytest

from reports.models import Alert, OutcomeResponse
from tests.test_ingest import make_batch
from tracking.models import Patient, ProgressMarker, TherapySession

pytestmark = pytest.mark.live


def post_over_http(base_url: str, token: str, batch: dict) -> tuple[int, dict]:
    """Posts a batch to a live server's ingest API; returns the status and the JSON answer."""
    request = urllib.request.Request(
        f"{base_url}/api/v1/ingest",
        data=json.dumps(batch).encode(),
        method="POST",
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"{}")


@pytest.mark.django_db(transaction=True)
def test_twenty_concurrent_identical_batches_store_each_item_once(live_server, token):
    batch = make_batch(player="concurrent-player")
    batch["sessions"] += [
        {**batch["sessions"][0], "session_id": f"extra-{n}", "player_id": f"other-{n % 3}"} for n in range(10)
    ]
    with ThreadPoolExecutor(max_workers=20) as pool:
        results = list(pool.map(lambda _: post_over_http(live_server.url, token, batch), range(20)))

    statuses = [status for status, _ in results]
    assert all(status < 500 for status in statuses), results
    assert set(statuses) <= {200, 201}, results
    assert statuses.count(201) == 1, statuses  # exactly one request created the items
    created = sum(payload["sessions"]["created"] for _, payload in results)
    assert created == 12
    assert TherapySession.objects.count() == 12
    assert ProgressMarker.objects.count() == 2
    assert OutcomeResponse.objects.count() == 2
    assert Alert.objects.count() == 1
    assert Patient.objects.count() == 4

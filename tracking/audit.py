"""The audit log (DESIGN §7): append, chain, verify, export.

Every event is one row of `audit_event`, appended in the caller's transaction by `audit_record`. Each
clinic has its own hash chain (its slug), and events that belong to no clinic go to `system`. An event's
`hash` is SHA-256 of the previous event's hash followed by the canonical JSON of the event (every field
but `id` and `hash`, keys sorted, no spaces, UTF-8), so editing, deleting, inserting or reordering a row
breaks the chain from that row on. Appends lock the chain's head row (`audit_chain_head`), so they are
serialised per chain only: one clinic's load does not slow another's.

A database trigger refuses every UPDATE and every DELETE of an event younger than 2,192 days (migration
0006). A superuser can switch triggers off; what catches that is `verify_chains`, and the signed heads
that `export_heads` writes outside the database (`AUDIT_HEAD_DIR`), which reveal a tail that was cut off.
"""

import hashlib
import hmac
import json
import secrets
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from tracking.models import AuditAction, AuditChainHead, AuditEvent, AuditOutcome

ZERO_HASH = "0" * 64
SYSTEM_CHAIN = "system"
SYSTEM_ACTOR = "system"
MASK = "***"
# Keys of a detail whose values are secrets: masked wherever they appear, at any depth.
SECRET_WORDS = ("password", "secret", "token", "key", "signature", "otp", "code")
EXPORT_FIELDS = (
    "id",
    "chain",
    "seq",
    "at",
    "actor",
    "role",
    "action",
    "patients",
    "object",
    "detail",
    "ip",
    "outcome",
    "prev_hash",
    "hash",
)
HASHED_FIELDS = tuple(f for f in EXPORT_FIELDS if f not in ("id", "hash"))


# ----- the canonical form and the hash ----------------------------------------------------------------


def format_at(at: datetime) -> str:
    """UTC, ISO 8601, microseconds, 'Z': how `at` is hashed and exported."""
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def event_fields(event: AuditEvent) -> dict[str, Any]:
    """The event as it is exported (JSONL, CSV) and, without `id` and `hash`, as it is hashed."""
    return {
        "id": event.pk,
        "chain": event.chain,
        "seq": event.seq,
        "at": format_at(event.at),
        "actor": event.actor,
        "role": event.role,
        "action": event.action,
        "patients": list(event.patients),
        "object": event.object,
        "detail": event.detail,
        "ip": event.ip,
        "outcome": event.outcome,
        "prev_hash": event.prev_hash,
        "hash": event.hash,
    }


def canonical(fields: dict[str, Any]) -> bytes:
    hashed = {key: fields[key] for key in HASHED_FIELDS}
    return json.dumps(hashed, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def chain_hash(prev_hash: str, fields: dict[str, Any]) -> str:
    return hashlib.sha256(prev_hash.encode("ascii") + canonical(fields)).hexdigest()


def masked(detail: Any) -> Any:
    """The detail with the value of every secret-looking key replaced by '***' (a token, a password, a
    webhook secret), at any depth."""
    if isinstance(detail, dict):
        return {
            key: MASK if any(word in str(key).lower() for word in SECRET_WORDS) else masked(value)
            for key, value in detail.items()
        }
    if isinstance(detail, list | tuple):
        return [masked(value) for value in detail]
    return detail


# ----- append -----------------------------------------------------------------------------------------


def audit_record(
    *,
    chain: str,
    actor: str,
    action: str,
    role: str = "",
    patients: Iterable[str] = (),
    object: str = "",  # noqa: A002 (the field's name in DESIGN §7)
    detail: dict[str, Any] | None = None,
    ip: str | None = None,
    outcome: str = AuditOutcome.OK,
    at: datetime | None = None,
) -> AuditEvent:
    """Appends one event to `chain`, in the caller's transaction (it commits or rolls back with the
    change it records). The chain's head row stays locked until that transaction ends: keep audited
    writes short."""
    with transaction.atomic():
        head = _locked_head(chain)
        event = AuditEvent(
            chain=chain,
            seq=head.seq + 1,
            at=at or timezone.now(),
            actor=actor[:200],
            role=role,
            action=action,
            patients=sorted(set(patients)),
            object=object[:200],
            detail=masked(detail or {}),
            ip=ip,
            outcome=outcome,
            prev_hash=head.hash,
        )
        event.hash = chain_hash(event.prev_hash, event_fields(event))
        event.save()
        AuditChainHead.objects.filter(chain=chain).update(seq=event.seq, hash=event.hash)
    return event


def _locked_head(chain: str) -> AuditChainHead:
    head = AuditChainHead.objects.select_for_update().filter(chain=chain).first()
    if head is None:
        AuditChainHead.objects.bulk_create([AuditChainHead(chain=chain, seq=0, hash=ZERO_HASH)], ignore_conflicts=True)
        head = AuditChainHead.objects.select_for_update().get(chain=chain)
    return head


# ----- verify -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Broken:
    event_id: int | None
    chain: str
    seq: int
    reason: str

    def __str__(self) -> str:
        return f"audit log broken: event {self.event_id} (chain {self.chain}, seq {self.seq}): {self.reason}"


@dataclass(frozen=True)
class ChainResult:
    chain: str
    events: int
    last_seq: int
    broken: Broken | None


def verify_chain(chain: str, *, head_dir: Path | None = None) -> ChainResult:
    """Recomputes the chain from its checkpoint (or its first event) and names the first event whose
    `seq`, `prev_hash` or `hash` does not follow; then checks every signed head exported for it."""
    head = AuditChainHead.objects.filter(chain=chain).first()
    expected_seq = (head.checkpoint_seq if head else 0) + 1
    prev = head.checkpoint_hash if head and head.checkpoint_hash else ZERO_HASH
    count, last_id, last_seq = 0, None, expected_seq - 1
    rows = AuditEvent.objects.filter(chain=chain).order_by("seq").iterator(chunk_size=5000)
    for event in rows:
        fields = event_fields(event)
        reason = None
        if event.seq != expected_seq:
            reason = (
                f"seq {event.seq} follows seq {expected_seq - 1}: an event is missing"
                if event.seq > expected_seq
                else f"seq {event.seq} repeats or goes back"
            )
        elif event.prev_hash != prev:
            reason = "prev_hash is not the hash of the event before it (deleted, inserted or reordered)"
        elif chain_hash(event.prev_hash, fields) != event.hash:
            reason = "hash does not match the event's content (edited)"
        if reason:
            return ChainResult(chain, count, last_seq, Broken(event.pk, chain, event.seq, reason))
        count, last_id, last_seq, prev, expected_seq = count + 1, event.pk, event.seq, event.hash, event.seq + 1
    for exported in _exported_heads(chain, head_dir):
        if exported["bad_signature"]:
            reason = f"the head exported at {exported['exported_at']} ({exported['file']}) has a wrong signature"
            return ChainResult(chain, count, last_seq, Broken(last_id, chain, last_seq, reason))
        present = AuditEvent.objects.filter(chain=chain, seq=exported["seq"]).values_list("hash", flat=True).first()
        if present is None:
            reason = (
                f"the signed head exported at {exported['exported_at']} names seq {exported['seq']}, but the chain "
                f"ends at seq {last_seq}: its tail was cut off"
            )
            return ChainResult(chain, count, last_seq, Broken(last_id, chain, last_seq, reason))
        if present != exported["hash"]:
            event_id = AuditEvent.objects.filter(chain=chain, seq=exported["seq"]).values_list("pk", flat=True).first()
            reason = f"differs from the signed head exported at {exported['exported_at']}: the tail was rewritten"
            return ChainResult(chain, count, last_seq, Broken(event_id, chain, exported["seq"], reason))
    return ChainResult(chain, count, last_seq, None)


def chains() -> list[str]:
    return sorted(set(AuditChainHead.objects.values_list("chain", flat=True)))


def verify_chains(
    only: Iterable[str] | None = None, *, head_dir: Path | None = None, via: str = "verify_audit_log"
) -> list[ChainResult]:
    """Every chain (or `only` these). The outcome is stored on the head row for the console, and the
    verification itself is audited (`audit.verify`, in each chain verified)."""
    results = [verify_chain(chain, head_dir=head_dir) for chain in (list(only) if only is not None else chains())]
    now = timezone.now()
    with transaction.atomic():
        for result in results:
            AuditChainHead.objects.filter(chain=result.chain).update(
                verified_at=now,
                verified_seq=result.last_seq,
                verified_ok=result.broken is None,
                verified_message=str(result.broken)[:500] if result.broken else "",
            )
            audit_record(
                chain=result.chain,
                actor=SYSTEM_ACTOR,
                action=AuditAction.AUDIT_VERIFY,
                detail={"via": via, "events": result.events, "up_to_seq": result.last_seq},
                outcome=AuditOutcome.FAILED if result.broken else AuditOutcome.OK,
            )
    return results


# ----- export -----------------------------------------------------------------------------------------


def events_between(chain: str, date_from: date | None = None, date_to: date | None = None) -> Iterator[AuditEvent]:
    """The chain's events from `date_from` to `date_to` (UTC dates, both included), in order."""
    events = AuditEvent.objects.filter(chain=chain)
    if date_from:
        events = events.filter(at__gte=datetime.combine(date_from, time.min, tzinfo=UTC))
    if date_to:
        events = events.filter(at__lt=datetime.combine(date_to + timedelta(days=1), time.min, tzinfo=UTC))
    return events.order_by("seq").iterator(chunk_size=5000)


def export_cell(value: Any) -> Any:
    """A value as a CSV cell: JSON for lists and objects, empty for None."""
    if value is None:
        return ""
    if isinstance(value, list | dict):
        return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return value


# ----- signed heads -----------------------------------------------------------------------------------


def head_dir() -> Path:
    return Path(settings.AUDIT_HEAD_DIR)


def signing_key() -> bytes:
    """`AUDIT_SIGNING_KEY` (required in production); for the demo a key generated once and kept beside
    the database, so its heads stay verifiable from one run to the next."""
    if settings.AUDIT_SIGNING_KEY:
        return settings.AUDIT_SIGNING_KEY.encode()
    path = Path(settings.AUDIT_HEAD_DIR) / ".signing-key"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(secrets.token_hex(32))
        path.chmod(0o600)
    return path.read_text().strip().encode()


def _head_signature(head: dict[str, Any], key: bytes) -> str:
    message = json.dumps({k: head[k] for k in ("chain", "seq", "hash", "at")}, sort_keys=True, separators=(",", ":"))
    return hmac.new(key, message.encode(), hashlib.sha256).hexdigest()


def export_heads(directory: Path | None = None, now: datetime | None = None) -> Path:
    """Writes the head (chain, seq, hash, at) of every chain, each signed with HMAC-SHA256 under the
    signing key, to one new file in `AUDIT_HEAD_DIR`. Returns the file."""
    directory = directory or head_dir()
    directory.mkdir(parents=True, exist_ok=True)
    now = now or timezone.now()
    key = signing_key()
    heads = []
    for head in AuditChainHead.objects.filter(seq__gt=0).order_by("chain"):
        at = AuditEvent.objects.filter(chain=head.chain, seq=head.seq).values_list("at", flat=True).first()
        entry = {"chain": head.chain, "seq": head.seq, "hash": head.hash, "at": format_at(at) if at else None}
        heads.append({**entry, "signature": _head_signature(entry, key)})
    path = directory / f"audit-heads-{now.astimezone(UTC):%Y%m%dT%H%M%S%fZ}.json"
    path.write_text(json.dumps({"exported_at": format_at(now), "heads": heads}, indent=1) + "\n")
    AuditChainHead.objects.filter(seq__gt=0).update(exported_at=now)
    for head in heads:
        AuditChainHead.objects.filter(chain=head["chain"]).update(exported_seq=head["seq"])
    return path


def _exported_heads(chain: str, directory: Path | None) -> Iterator[dict[str, Any]]:
    """The heads of `chain` in every export file still in the directory, each marked with whether its
    signature is good (one that is not is reported, never trusted)."""
    directory = directory or head_dir()
    if not directory.is_dir():
        return
    key = signing_key()
    for path in sorted(directory.glob("audit-heads-*.json")):
        content = json.loads(path.read_text())
        for head in content.get("heads", []):
            if head.get("chain") != chain:
                continue
            good = hmac.compare_digest(_head_signature(head, key), str(head.get("signature", "")))
            yield {**head, "exported_at": content.get("exported_at"), "file": path.name, "bad_signature": not good}

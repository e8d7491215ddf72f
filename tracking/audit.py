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
import ipaddress
import json
import secrets
from collections.abc import Iterable, Iterator
from contextvars import ContextVar, Token
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from tracking import metrics
from tracking.models import (
    AUDIT_RETENTION_MIN_DAYS,
    AuditAction,
    AuditChainHead,
    AuditEvent,
    AuditOutcome,
    Clinic,
    Membership,
)
from tracking.validators import echo_safe, external_id_error, text_error

if TYPE_CHECKING:
    from django.http import HttpRequest

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
    writes short. Two round trips on PostgreSQL: take the next seq (locking the head), then insert the
    event and move the head's hash in one statement."""
    with transaction.atomic(savepoint=False):  # in the caller's transaction: a failure fails it too
        seq, prev_hash = _next_seq(chain)
        event = AuditEvent(
            chain=chain,
            seq=seq,
            at=at or timezone.now(),
            actor=actor[:200],
            role=role,
            action=action,
            patients=sorted(set(patients)),
            object=object[:200],
            detail=masked(detail or {}),
            ip=ip,
            outcome=outcome,
            prev_hash=prev_hash,
        )
        event.hash = chain_hash(event.prev_hash, event_fields(event))
        _insert_and_move_head(event)
        metrics.audit_recorded(action)
    return event


def _next_seq(chain: str) -> tuple[int, str]:
    """Locks the chain's head and takes its next seq; returns it with the hash the new event follows."""
    with connection.cursor() as cursor:
        for _ in range(2):
            cursor.execute("UPDATE audit_chain_head SET seq = seq + 1 WHERE chain = %s RETURNING seq, hash", [chain])
            row = cursor.fetchone()
            if row is not None:
                return int(row[0]), str(row[1])
            # The chain's first event: create its head (a concurrent first append may win; then retry).
            AuditChainHead.objects.bulk_create(
                [AuditChainHead(chain=chain, seq=0, hash=ZERO_HASH)], ignore_conflicts=True
            )
    raise RuntimeError(f"audit chain {chain!r} has no head row")


_INSERT_COLUMNS = [f for f in AuditEvent._meta.concrete_fields if f.column != "id"]


def _insert_and_move_head(event: AuditEvent) -> None:
    if connection.vendor != "postgresql":
        event.save()
        AuditChainHead.objects.filter(chain=event.chain).update(hash=event.hash)
        return
    columns = ", ".join(connection.ops.quote_name(f.column) for f in _INSERT_COLUMNS)
    values = [f.get_db_prep_save(getattr(event, f.attname), connection) for f in _INSERT_COLUMNS]
    placeholders = ", ".join(["%s"] * len(values))
    with connection.cursor() as cursor:
        cursor.execute(
            f"WITH new_event AS (INSERT INTO audit_event ({columns}) VALUES ({placeholders}) RETURNING id) "  # noqa: S608 (column names from the model)
            "UPDATE audit_chain_head SET hash = %s WHERE chain = %s RETURNING (SELECT id FROM new_event)",
            [*values, event.hash, event.chain],
        )
        event.pk = cursor.fetchone()[0]


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
    `seq`, `prev_hash` or `hash` does not follow; then checks every signed head exported for it. Reads
    plain rows in chunks (no model instances): about 20 µs an event, a million in well under 30 s."""
    head = AuditChainHead.objects.filter(chain=chain).first()
    expected_seq = (head.checkpoint_seq if head else 0) + 1
    prev = head.checkpoint_hash if head and head.checkpoint_hash else ZERO_HASH
    count, last_id, last_seq = 0, None, expected_seq - 1
    for event_id, fields, stored_hash in _chain_rows(chain):
        seq = fields["seq"]
        reason = None
        if seq != expected_seq:
            reason = (
                f"seq {seq} follows seq {expected_seq - 1}: an event is missing"
                if seq > expected_seq
                else f"seq {seq} repeats or goes back"
            )
        elif fields["prev_hash"] != prev:
            reason = "prev_hash is not the hash of the event before it (deleted, inserted or reordered)"
        elif _hash_of(fields) != stored_hash:
            reason = "hash does not match the event's content (edited)"
        if reason:
            return ChainResult(chain, count, last_seq, Broken(event_id, chain, seq, reason))
        count, last_id, last_seq, prev, expected_seq = count + 1, event_id, seq, stored_hash, seq + 1
    for exported in _exported_heads(chain, head_dir):
        if exported["bad_signature"]:
            reason = f"the head exported at {exported['exported_at']} ({exported['file']}) has a wrong signature"
            return ChainResult(chain, count, last_seq, Broken(last_id, chain, last_seq, reason))
        if head is not None and exported["seq"] <= head.checkpoint_seq:
            # Retention removed this head's event with the prefix: the checkpoint must be that event, or
            # the event must have been old enough to remove (the database refuses younger ones).
            if _removed_by_retention(exported, head):
                continue
            reason = (
                f"the signed head exported at {exported['exported_at']} names seq {exported['seq']}, before the "
                f"checkpoint at seq {head.checkpoint_seq}, but it is not an event retention could remove"
            )
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


def _removed_by_retention(exported: dict[str, Any], head: AuditChainHead) -> bool:
    if exported["seq"] == head.checkpoint_seq:
        return bool(exported["hash"] == head.checkpoint_hash)
    try:
        at = datetime.fromisoformat(str(exported.get("at")))
    except ValueError:
        return False
    return at < timezone.now() - timedelta(days=AUDIT_RETENTION_MIN_DAYS)


_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode
_ROWS_SQL = (
    "SELECT id, seq, {at}, actor, role, action, patients, object, detail, ip, outcome, prev_hash, hash "
    "FROM audit_event WHERE chain = %s ORDER BY seq"
)
_PG_AT = "to_char(at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')"


def _loads(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str | bytes) else value


def _hash_of(fields: dict[str, Any]) -> str:
    return hashlib.sha256(fields["prev_hash"].encode("ascii") + _CANONICAL(fields).encode("utf-8")).hexdigest()


def _chain_rows(chain: str) -> Iterator[tuple[int, dict[str, Any], str]]:
    """(id, the hashed fields, the stored hash) of each event of the chain, in seq order, streamed."""
    postgres = connection.vendor == "postgresql"
    with connection.chunked_cursor() as cursor:
        cursor.execute(_ROWS_SQL.format(at=_PG_AT if postgres else "at"), [chain])
        while rows := cursor.fetchmany(5000):
            for event_id, seq, at, actor, role, action, patients, obj, detail, ip, outcome, prev, stored in rows:
                if not postgres:  # SQLite gives the time as a datetime or text
                    at = format_at(at if isinstance(at, datetime) else datetime.fromisoformat(at).replace(tzinfo=UTC))
                # Django's cursor hands JSON columns over as text (the model field decodes them).
                patients, detail = _loads(patients), _loads(detail)
                fields = {
                    "action": action,
                    "actor": actor,
                    "at": at,
                    "chain": chain,
                    "detail": detail,
                    "ip": ip,
                    "object": obj,
                    "outcome": outcome,
                    "patients": patients,
                    "prev_hash": prev,
                    "role": role,
                    "seq": seq,
                }
                yield event_id, fields, stored


def chains() -> list[str]:
    return sorted(set(AuditChainHead.objects.values_list("chain", flat=True)))


def verify_chains(
    only: Iterable[str] | None = None,
    *,
    head_dir: Path | None = None,
    via: str = "verify_audit_log",
    actor: str = SYSTEM_ACTOR,
    role: str = "",
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
                actor=actor,
                role=role,
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


# ----- who and where: what every recorder needs ---------------------------------------------------
#
# An event names its chain (the clinic's slug, or `system`), its actor (a username; `token:NAME` for an
# ingest token; `system` outside a request; for a failed login the name that was tried), the actor's role
# in that clinic, and the client's IP. `tracking.middleware.AuditRequestMiddleware` keeps the current
# request in a context variable, so that a service deep below the view records who asked and from where
# without being handed the request; a command or a task has no request and records `system`.

_current_request: ContextVar["HttpRequest | None"] = ContextVar("audit_current_request", default=None)
TOKEN_ACTOR_PREFIX = "token:"  # noqa: S105 (a marker, not a secret)


def request_bind(request: "HttpRequest") -> Token["HttpRequest | None"]:
    """Makes `request` the current one (the middleware; undone with `request_unbind`)."""
    return _current_request.set(request)


def request_unbind(token: Token["HttpRequest | None"]) -> None:
    _current_request.reset(token)


def current_request() -> "HttpRequest | None":
    return _current_request.get()


def client_ip(request: "HttpRequest | None" = None) -> str | None:
    """The client's address: REMOTE_ADDR, or, behind `AUDIT_PROXY_HOPS` trusted reverse proxies, the
    address that many hops from the right of X-Forwarded-For (what the outermost trusted proxy saw).
    None outside a request, or when the value is not an IP address."""
    request = request if request is not None else current_request()
    if request is None:
        return None
    address = request.META.get("REMOTE_ADDR") or ""
    hops = int(getattr(settings, "AUDIT_PROXY_HOPS", 0) or 0)
    if hops > 0:
        forwarded = [a.strip() for a in str(request.META.get("HTTP_X_FORWARDED_FOR", "")).split(",") if a.strip()]
        if len(forwarded) >= hops:
            address = forwarded[-hops]
    try:
        return str(ipaddress.ip_address(address.strip()))
    except ValueError:
        return None


def token_actor(name: str) -> str:
    return TOKEN_ACTOR_PREFIX + name


def storable_text(value: object, limit: int = 150) -> str:
    """Text from outside (a username tried at login) as an event may hold it: no NUL (PostgreSQL refuses
    it), unpaired surrogates escaped, at most `limit` characters."""
    text = str(value)
    if text_error(text):
        text = text.replace("\x00", "\\u0000")
    return echo_safe(text, limit=limit)


def actor_of(user: Any) -> str:
    """`token:NAME` for the game server (tracking.api.authentication.GameServer), the username of a
    logged-in person, else `system`."""
    token_name = getattr(user, "token_name", None)
    if token_name:
        return token_actor(token_name)
    if user is not None and getattr(user, "is_authenticated", False) and hasattr(user, "get_username"):
        return str(user.get_username())
    return SYSTEM_ACTOR


def current_user() -> Any:
    """The user of the current request (a person, the game server, or an AnonymousUser), None outside."""
    request = current_request()
    return getattr(request, "user", None) if request is not None else None


def roles_by_clinic(user: Any) -> dict[int, str]:
    """clinic id → role of a person (the same cache as `tracking.access.roles_of`); {} for anyone else."""
    if user is None or getattr(user, "token_name", None) or not getattr(user, "is_authenticated", False):
        return {}
    cached: dict[int, str] | None = getattr(user, "_clinic_roles", None)
    if cached is None:
        cached = dict(Membership.objects.filter(user_id=user.pk).values_list("clinic_id", "role"))
        setattr(user, "_clinic_roles", cached)  # noqa: B010 (an attribute the user model does not declare)
    return cached


def clinic_slug(clinic: "Clinic | int | None") -> str:
    """The chain of a clinic (given as a row or an id): its slug; `system` for none."""
    if clinic is None:
        return SYSTEM_CHAIN
    if isinstance(clinic, Clinic):
        return clinic.slug
    return Clinic.objects.filter(pk=clinic).values_list("slug", flat=True).first() or SYSTEM_CHAIN


def user_chain(user: Any) -> tuple[str, str]:
    """(chain, role) of an event about a person that belongs to no particular clinic (a login, a logout):
    the clinic of their only membership, with their role there; `system` with no role when they have
    none or several. The game server's events belong to its token's clinic."""
    clinic_id = getattr(user, "clinic_id", None)
    if getattr(user, "token_name", None) and clinic_id:
        return clinic_slug(clinic_id), ""
    roles = roles_by_clinic(user)
    if len(roles) == 1:
        [(only, role)] = roles.items()
        return clinic_slug(only), role
    return SYSTEM_CHAIN, ""


def audit_here(
    *,
    action: str,
    clinic: "Clinic | int | None" = None,
    user: Any = None,
    actor: str | None = None,
    patients: Iterable[str] = (),
    object: str = "",  # noqa: A002 (the field's name in DESIGN §7)
    detail: dict[str, Any] | None = None,
    outcome: str = AuditOutcome.OK,
) -> AuditEvent:
    """`audit_record` with who and where filled in. The chain is the clinic's (or, without one, the
    user's: see `user_chain`). The actor is `actor` if given, else `user`, else the current request's
    user, else `system`; the role is that person's role in the chain's clinic; the IP is the current
    request's. In the caller's transaction, like `audit_record`."""
    who = user if user is not None else current_user()
    if clinic is None:
        chain, role = user_chain(who)
    else:
        chain = clinic_slug(clinic)
        clinic_id = clinic.pk if isinstance(clinic, Clinic) else clinic
        role = roles_by_clinic(who).get(clinic_id, "")
    return audit_record(
        chain=chain,
        actor=actor or actor_of(who),
        role=role,
        action=action,
        patients=patients,
        object=object,
        detail=detail,
        ip=client_ip(),
        outcome=outcome,
    )


def patient_object(player_id: str) -> str:
    """The `object` of an event about a patient asked for by id: `patient:<id>`, or `patient:?` when the
    id asked for is not a valid player id (it could be any text)."""
    return f"patient:{player_id}" if isinstance(player_id, str) and not external_id_error(player_id) else "patient:?"


# ----- logins and logouts: Django's auth signals (connected in TrackingConfig.ready) ------------------


def _login_chain(username: str) -> tuple[str, str]:
    memberships = list(Membership.objects.filter(user__username=username).values_list("clinic_id", "role")[:2])
    if len(memberships) == 1:
        return clinic_slug(memberships[0][0]), memberships[0][1]
    return SYSTEM_CHAIN, ""


def on_user_logged_in(sender: Any, request: "HttpRequest | None" = None, user: Any = None, **kwargs: Any) -> None:
    chain, role = user_chain(user)
    audit_record(
        chain=chain, actor=actor_of(user), role=role, action=AuditAction.LOGIN, ip=client_ip(request), detail={}
    )


def on_user_login_failed(
    sender: Any, credentials: dict[str, Any] | None = None, request: "HttpRequest | None" = None, **kwargs: Any
) -> None:
    """A failed login, for an unknown username too: the actor is the name that was tried. Nothing else of
    the credentials is kept (not even masked)."""
    tried = storable_text((credentials or {}).get("username", "") or "")
    chain, role = _login_chain(tried) if tried else (SYSTEM_CHAIN, "")
    audit_record(
        chain=chain,
        actor=tried or "(no username)",
        role=role,
        action=AuditAction.LOGIN_FAILED,
        ip=client_ip(request),
        outcome=AuditOutcome.FAILED,
    )


def on_user_logged_out(sender: Any, request: "HttpRequest | None" = None, user: Any = None, **kwargs: Any) -> None:
    if user is None:  # logging out without being logged in
        return
    chain, role = user_chain(user)
    audit_record(chain=chain, actor=actor_of(user), role=role, action=AuditAction.LOGOUT, ip=client_ip(request))


def lockout_record(
    *, username: str, request: "HttpRequest | None" = None, detail: dict[str, Any] | None = None
) -> AuditEvent:
    """A username + IP locked out after too many failures (`auth.lockout`, outcome `denied`). The hook
    for django-axes: connect its `user_locked_out` signal to a receiver that calls this."""
    tried = storable_text(username or "")
    chain, role = _login_chain(tried) if tried else (SYSTEM_CHAIN, "")
    return audit_record(
        chain=chain,
        actor=tried or "(no username)",
        role=role,
        action=AuditAction.LOCKOUT,
        ip=client_ip(request),
        detail=detail,
        outcome=AuditOutcome.DENIED,
    )


def axes_client_ip(request: "HttpRequest") -> str | None:
    """django-axes' idea of the client's address (AXES_CLIENT_IP_CALLABLE): the audit log's, so that a
    lockout and the failed logins that caused it name the same IP behind the same proxies."""
    return client_ip(request)


def on_axes_locked_out(sender: Any, request: "HttpRequest | None" = None, username: str = "", **kwargs: Any) -> None:
    """django-axes' `user_locked_out`: audited once per lockout, when the limit is reached. Axes sends the
    signal again for every attempt during the lockout; those are already `auth.login_failed` events."""
    failures = getattr(request, "axes_failures_since_start", None)
    limit = int(getattr(settings, "AXES_FAILURE_LIMIT", 0))
    if failures != limit:
        return
    minutes = int(getattr(settings, "LOGIN_COOLOFF_MINUTES", 0))
    lockout_record(username=username, request=request, detail={"failures": failures, "minutes": minutes})

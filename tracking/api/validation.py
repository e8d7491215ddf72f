"""Turns an ingest body into validated items, or one error per bad item and field."""

from rest_framework import serializers

from tracking.api.errors import BatchInvalid
from tracking.api.serializers import ITEM_ID_FIELD, ITEM_SERIALIZERS
from tracking.validators import echo_safe, external_id_error

KINDS = tuple(ITEM_SERIALIZERS)


def batch_validate(data, *, max_items: int) -> dict[str, list[dict]]:
    try:
        return _batch_validate(data, max_items=max_items)
    except BatchInvalid as invalid:
        # Field names and messages may quote the client's input; a quoted unpaired surrogate would make
        # the JSON answer unencodable (a 500 instead of this 400).
        raise BatchInvalid([_echo_safe(e) for e in invalid.errors]) from None


def _echo_safe(error: dict) -> dict:
    return {key: echo_safe(value, limit=500) if isinstance(value, str) else value for key, value in error.items()}


def _batch_validate(data, *, max_items: int) -> dict[str, list[dict]]:
    if not isinstance(data, dict):
        raise BatchInvalid(
            [{"field": "body", "reason": "Expected a JSON object with sessions, markers, outcomes, alerts."}]
        )
    errors: list[dict] = []
    unknown = sorted(set(data) - set(KINDS))
    errors += [{"field": key, "reason": f"Unknown key; expected one of {', '.join(KINDS)}."} for key in unknown]
    lists = {kind: [] if data.get(kind) is None else data[kind] for kind in KINDS}
    for kind, items in lists.items():
        if not isinstance(items, list):
            errors.append({"kind": kind, "field": kind, "reason": "Expected a list."})
    if errors:
        raise BatchInvalid(errors)
    total = sum(len(items) for items in lists.values())
    if total == 0:
        raise BatchInvalid([{"field": "body", "reason": "The batch has no items."}])
    if total > max_items:
        raise BatchInvalid(
            [{"field": "body", "reason": f"The batch has {total} items; at most {max_items} per request."}]
        )

    validated: dict[str, list[dict]] = {kind: [] for kind in KINDS}
    for kind, items in lists.items():
        seen: set[str] = set()
        id_field = ITEM_ID_FIELD[kind]
        for index, item in enumerate(items):
            where = {"kind": kind, "index": index}
            # An invalid id is not quoted back: the error names the field and says why instead.
            if isinstance(item, dict) and isinstance(item.get(id_field), str) and not external_id_error(item[id_field]):
                where["item_id"] = item[id_field]
            if not isinstance(item, dict):
                errors.append({**where, "field": kind, "reason": "Expected a JSON object."})
                continue
            serializer = ITEM_SERIALIZERS[kind](data=item)
            if not serializer.is_valid():
                errors += [{**where, **e} for e in _field_errors(serializer.errors)]
                continue
            unknown_fields = sorted(set(item) - set(serializer.fields))
            if unknown_fields:
                errors += [{**where, "field": f, "reason": "Unknown field."} for f in unknown_fields]
                continue
            if item[id_field] in seen:
                errors.append({**where, "field": id_field, "reason": "Appears twice in this batch."})
                continue
            seen.add(item[id_field])
            validated[kind].append(dict(serializer.validated_data, _index=index))
    if errors:
        raise BatchInvalid(errors)
    return validated


def _field_errors(detail) -> list[dict]:
    out = []
    for field, messages in detail.items():
        if isinstance(messages, dict):  # a nested list field: {position: [messages]}
            for position, inner in messages.items():
                out += [{"field": f"{field}[{position}]", "reason": str(m)} for m in _as_list(inner)]
        else:
            out += [{"field": field, "reason": str(m)} for m in _as_list(messages)]
    return out


def _as_list(messages):
    if isinstance(messages, list | tuple):
        return messages
    if isinstance(messages, serializers.ErrorDetail | str):
        return [messages]
    return [str(messages)]

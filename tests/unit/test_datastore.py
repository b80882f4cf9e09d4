"""The Secret codec of the data keyring: round trip, content-free refusals, and the Events
the loop derives from a ring change."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta

import pytest

from mcp_operator.auth import datakeys
from mcp_operator.keys import datastore
from mcp_operator.keys.datacontroller import describe
from mcp_operator.keys.schedule import Event, KeyRecord, KeyRing

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def ring_of(*records: KeyRecord) -> KeyRing:
    return KeyRing(keys=records, rotations=len(records), last_rotation=T0)


def test_round_trip_keeps_schedule_and_material() -> None:
    a, b = datastore.generate(), datastore.generate()
    ring = ring_of(
        KeyRecord(a.kid, "A256GCM", T0, T0, T0, T0 + timedelta(days=7), timedelta(days=90)),
        KeyRecord(b.kid, "A256GCM", T0, T0, T0 + timedelta(days=7), None, timedelta(days=90)),
    )
    decoded, materials = datastore.decode(datastore.encode(ring, {a.kid: a, b.kid: b}))
    assert decoded == ring and materials == {a.kid: a, b.kid: b}
    assert datakeys.parse(datastore.document(ring, {a.kid: a, b.kid: b})).active == b.kid


def test_a_secret_that_does_not_parse_is_refused_without_quoting_it() -> None:
    key = datastore.generate()
    good = json.loads(
        datastore.document(ring_of(KeyRecord(key.kid, "A256GCM", T0, activated=T0)), {key.kid: key})
    )
    secret_value = base64.b64encode(key.key).decode()
    two_active = {**good, "keys": [good["keys"][0], {**good["keys"][0], "kid": "other"}]}
    wrong_active = {**good, "active": "other"}
    for doc in (two_active, wrong_active, {**good, "version": 2}, {**good, "keys": "x"}):
        data = {datakeys.FILE: base64.b64encode(json.dumps(doc).encode()).decode()}
        with pytest.raises(datastore.UnreadableKeyring) as exc:
            datastore.decode(data)
        assert secret_value not in str(exc.value) and "A256" not in str(exc.value)
    with pytest.raises(datastore.UnreadableKeyring, match=r"no keyring\.json"):
        datastore.decode({})
    with pytest.raises(datastore.UnreadableKeyring, match="not base64"):
        datastore.decode({datakeys.FILE: "%%%"})


def test_events_name_kids_and_times_only() -> None:
    old = KeyRecord("old", "A256GCM", T0, T0, T0, None, timedelta(days=1))
    new = KeyRecord("new", "A256GCM", T0, T0)
    before = ring_of(old, new)
    after = ring_of(
        KeyRecord("old", "A256GCM", T0, T0, T0, T0 + timedelta(hours=1), timedelta(days=1)),
        KeyRecord("new", "A256GCM", T0, T0, T0 + timedelta(hours=1)),
        KeyRecord("next", "A256GCM", T0),
    )
    out = describe(before, after, [Event("KeyRotated", "", rotation="scheduled")])
    assert ("Normal", "DataKeyAdded", "kid next mounted, decrypt-only") in out
    [(kind, _, message)] = [e for e in out if e[1] == "DataKeyRotated"]
    assert kind == "Normal" and "kid new encrypts now" in message
    assert "kid old decrypts until 2026-01-02T01:00:00+00:00" in message
    gone = describe(after, ring_of(*after.keys[1:]), [])
    assert gone == [("Normal", "DataKeyRemoved", gone[0][2])] and "kid old" in gone[0][2]
    fresh = KeyRecord("fresh", "A256GCM", T0, activated=T0)
    emergency = describe(before, ring_of(fresh), [Event("KeyActivated", "", True, "emergency")])
    assert ("Warning", "DataKeyRotated", "kid fresh encrypts now (emergency rotation)") in emergency


@pytest.mark.parametrize("hold", [1e400, -1.0, float("nan"), 1e15])
def test_an_absurd_hold_is_an_unreadable_secret_not_a_crash(hold: float) -> None:
    """holdSeconds 1e400 parses as inf: reported as DataKeysUnreadable (content-free), not
    an OverflowError that the loop would report as a failed sync and retry forever."""
    key = datastore.generate()
    doc = json.loads(
        datastore.document(ring_of(KeyRecord(key.kid, "A256GCM", T0, activated=T0)), {key.kid: key})
    )
    doc["keys"][0]["holdSeconds"] = hold
    raw = json.dumps(doc).encode()  # json writes inf as Infinity, which Python reads back
    with pytest.raises(datastore.UnreadableKeyring, match="malformed"):
        datastore.decode({datakeys.FILE: base64.b64encode(raw).decode()})

"""The tenant guard: the incident's UUID-vs-str set difference."""

import uuid

import pytest

import safestash
from safestash import reconcile

TENANTS = [uuid.UUID(int=n) for n in range(1, 21)]


def spellings(u):
    s = str(u)
    return [s, s.upper(), "{" + s + "}", "urn:uuid:" + s, s.replace("-", ""), u]


def test_incident_uuid_objects_minus_strings_plans_no_delete():
    local = set(TENANTS)  # uuid.UUID objects
    auth = {str(t).upper() for t in TENANTS}  # strings, spelled another way
    assert local - auth == local  # the naive code: every tenant "gone"
    p = reconcile.plan(local, auth)
    assert p.delete == [] and len(p.keep) == 20
    assert p.unparseable_local == [] and p.unparseable_authoritative == []


@pytest.mark.parametrize("i", range(6))
def test_any_spelling_on_either_side(i):
    left = [spellings(t)[i] for t in TENANTS]
    right = [spellings(t)[(i + 3) % 6] for t in TENANTS]
    assert reconcile.plan(left, right).delete == []
    assert reconcile.plan(right, left).delete == []
    assert reconcile.canonical(spellings(TENANTS[0])[i]) == str(TENANTS[0])


def test_execute_deletes_exactly_the_one_gone_and_can_restore(store):
    db = {t: f"calls of {t}" for t in TENANTS}
    local = list(db)
    truth = ["{" + str(t).upper() + "}" for t in TENANTS[1:]]
    p = reconcile.plan(local, truth)
    assert p.delete == [TENANTS[0]]
    r = reconcile.Reconciler(store)
    report = r.execute(p, local, truth, lambda t: db[t], lambda t: db.pop(t))
    assert report.deleted == [TENANTS[0]] and report.complete
    assert len(db) == 19 and report.stashed[0][0] == TENANTS[0]

    reconcile.restore_tenant(store, str(TENANTS[0]), lambda s: db.__setitem__(TENANTS[0], s.value))
    assert db[TENANTS[0]] == f"calls of {TENANTS[0]}" and len(db) == 20


def test_empty_source_of_truth_is_refused(store):
    with pytest.raises(reconcile.RefusedError) as e:
        p = reconcile.plan(TENANTS, [])
        reconcile.Reconciler(store).execute(p, TENANTS, [], lambda t: 1, lambda t: pytest.fail("deleted"))
    assert "EmptyAuthority" in e.value.rules and isinstance(e.value, safestash.StashError)


def test_too_many_refused_unless_allowed(store):
    truth = TENANTS[:10]
    p = reconcile.plan(TENANTS, truth)
    with pytest.raises(reconcile.RefusedError) as e:
        reconcile.Reconciler(store).check(p)
    assert set(e.value.rules) == {"TooMany", "TooLargeShare"}
    lifted = reconcile.Reconciler(store, allow=["TooMany", "TooLargeShare"]).check(p)
    assert len(lifted) == 2


def test_unparseable_ids_are_reported_never_deleted():
    p = reconcile.plan(["not-a-uuid", TENANTS[0]], [TENANTS[0]])
    assert p.delete == [] and p.unparseable_local[0][0] == "not-a-uuid"
    with pytest.raises(TypeError):
        reconcile.plan([42], [])


def test_a_failed_delete_keeps_the_stash(store):
    p = reconcile.plan(TENANTS[:2], TENANTS[1:2])

    def delete(t):
        raise PermissionError("no")

    report = reconcile.Reconciler(store, allow=["TooLargeShare"]).execute(
        p, TENANTS[:2], TENANTS[1:2], lambda t: {"t": str(t)}, delete
    )
    tenant, error = report.stopped
    assert tenant == TENANTS[0] and not report.complete
    assert isinstance(error, reconcile.ReconcileError) and isinstance(error.__cause__, PermissionError)
    got = []
    reconcile.restore_tenant(store, TENANTS[0], lambda s: got.append(s.value))
    assert got == [{"t": str(TENANTS[0])}]

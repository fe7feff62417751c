"""DeyelHook's instance helpers over real HTTP: encoded paths, typed errors, replayed writes settled."""

from __future__ import annotations

import pytest

from deyel_provider.exceptions import (
    DeyelConfigError,
    DeyelConflictError,
    DeyelNotFoundError,
    DeyelRequestError,
    DeyelServerError,
)
from deyel_provider.hooks.deyel import DeyelHook

FORM = "CRM_ACCOUNT"
INSTANCES = f"/forms/{FORM}/instances"

#: The emulator applies the write, then answers as a gateway that timed out, or breaks the connection.
LOST_ANSWERS = [
    {"action": "apply_status"},
    {"action": "apply_status", "status": 502},
    {"action": "apply_drop"},
]


def api_requests(emulator) -> int:
    return emulator.stats()["api_requests"]


def test_create_read_update_delete(emulator, deyel_conn):
    hook = DeyelHook()
    created = hook.create_instance(FORM, {"dsCompany": "Helpers SA", "qtEmployee": 12, "cbIsPartner": True})
    assert created["idObjectValue"] == created["value"] and created["dtLastUpdate"]
    instance_id = created["idObjectValue"]

    read = hook.get_instance(FORM, instance_id)
    assert (read["dsCompany"], read["qtEmployee"], read["cbIsPartner"]) == ("Helpers SA", 12, True)

    hook.update_instance(FORM, instance_id, {"qtEmployee": 13, "dtLastUpdate": read["dtLastUpdate"]})
    patched = hook.get_instance(FORM, int(instance_id))
    assert (patched["dsCompany"], patched["qtEmployee"]) == ("Helpers SA", 13)

    whole = {"dsCompany": "Replaced SA", "dtLastUpdate": patched["dtLastUpdate"]}
    hook.update_instance(FORM, instance_id, whole, partial=False)
    replaced = hook.get_instance(FORM, instance_id)
    assert replaced["dsCompany"] == "Replaced SA" and "qtEmployee" not in replaced  # PUT replaced them all

    hook.delete_instance(FORM, instance_id)
    with pytest.raises(DeyelNotFoundError):
        hook.get_instance(FORM, instance_id)
    assert api_requests(emulator) == 8


def test_a_stale_dtlastupdate_is_a_conflict_without_a_reread(emulator, deyel_conn):
    hook = DeyelHook()
    stale = hook.get_instance(FORM, 3)["dtLastUpdate"]
    hook.update_instance(FORM, 3, {"dsCompany": "First", "dtLastUpdate": stale})
    for partial in (True, False):
        with pytest.raises(DeyelConflictError) as conflict:
            hook.update_instance(FORM, 3, {"dsCompany": "Second", "dtLastUpdate": stale}, partial=partial)
        assert conflict.value.status == 409 and conflict.value.attempts == 1
        assert "may have been applied" not in str(conflict.value)
    assert api_requests(emulator) == 4  # GET, PATCH, PATCH 409, PUT 409: no re-read of a first-attempt 409
    assert hook.get_instance(FORM, 3)["dsCompany"] == "First"


@pytest.mark.parametrize("partial", [False, True], ids=["PUT", "PATCH"])
@pytest.mark.parametrize("lost", LOST_ANSWERS, ids=["504", "502", "dropped"])
def test_a_replayed_update_whose_first_attempt_was_applied_succeeds(emulator, deyel_conn, partial, lost):
    hook = DeyelHook()
    stamp = hook.get_instance(FORM, 5)["dtLastUpdate"]
    method = "PATCH" if partial else "PUT"
    emulator.set_faults([{"route": "data", "method": method, "count": 1, **lost}])
    values = {"dsCompany": "Applied Once SA", "qtEmployee": 77, "dtLastUpdate": stamp}

    hook.update_instance(FORM, 5, values, partial=partial)  # the replay met a 409: settled by a re-read

    # GET, the applied write whose answer was lost, its replay (409), the re-read.
    assert api_requests(emulator) == 4
    assert emulator.stats()["status_counts"].get("409") == 1
    instance = hook.get_instance(FORM, 5)
    assert (instance["dsCompany"], instance["qtEmployee"]) == ("Applied Once SA", 77)


def test_a_server_that_answers_a_stale_replay_with_400_is_settled_too(deyel_conn):
    from deyel_provider.emulator import run_emulator

    with run_emulator(records=10, stale_status=400) as emulator:
        deyel_conn(url=emulator.url)
        hook = DeyelHook()
        stamp = hook.get_instance(FORM, 2)["dtLastUpdate"]
        emulator.set_faults([{"route": "data", "method": "PUT", "action": "apply_status", "count": 1}])
        hook.update_instance(FORM, 2, {"dsCompany": "Lost Answer SA", "dtLastUpdate": stamp}, partial=False)
        assert emulator.stats()["status_counts"].get("400") == 1
        assert api_requests(emulator) == 4  # GET, the applied PUT (504), its replay (400), the re-read
        # On the first attempt a 400 is the server's answer, not settled by a re-read.
        with pytest.raises(DeyelRequestError) as stale:
            hook.update_instance(FORM, 2, {"dsCompany": "Stale SA", "dtLastUpdate": stamp})
        assert (stale.value.status, stale.value.attempts) == (400, 1)
        assert api_requests(emulator) == 5


def test_a_replayed_update_that_finds_other_values_is_a_conflict(emulator, deyel_conn):
    hook = DeyelHook()
    stale = hook.get_instance(FORM, 6)["dtLastUpdate"]
    hook.update_instance(FORM, 6, {"dsCompany": "Someone Else", "dtLastUpdate": stale})
    # The first attempt fails without being applied; the replay meets the other writer's change.
    emulator.set_faults([{"route": "data", "method": "PUT", "action": "status", "status": 503, "count": 1}])
    before = api_requests(emulator)
    with pytest.raises(DeyelConflictError) as conflict:
        hook.update_instance(FORM, 6, {"dsCompany": "Mine", "dtLastUpdate": stale}, partial=False)
    error = conflict.value
    assert "an earlier attempt of this call may have been applied" in str(error)
    assert (error.status, error.method, error.attempts) == (409, "PUT", 2)
    assert error.errors and error.errors[0]["attribute-name"] == "dtLastUpdate"
    assert api_requests(emulator) - before == 3  # 503, 409, re-read
    assert hook.get_instance(FORM, 6)["dsCompany"] == "Someone Else"


def test_a_patch_without_dtlastupdate_is_not_replayed(emulator, deyel_conn):
    emulator.set_faults([{"route": "data", "method": "PATCH", "action": "apply_status", "count": 1}])
    with pytest.raises(DeyelServerError) as lost:
        DeyelHook().update_instance(FORM, 7, {"dsCompany": "No Lock"})
    assert lost.value.status == 504
    assert api_requests(emulator) == 1


@pytest.mark.parametrize("lost", LOST_ANSWERS, ids=["504", "502", "dropped"])
def test_a_replayed_delete_whose_first_attempt_was_applied_succeeds(emulator, deyel_conn, lost):
    hook = DeyelHook()
    emulator.set_faults([{"route": "data", "method": "DELETE", "count": 1, **lost}])
    hook.delete_instance(FORM, 8)
    assert api_requests(emulator) == 2  # the applied DELETE whose answer was lost, its replay (404)
    with pytest.raises(DeyelNotFoundError):
        hook.get_instance(FORM, 8)


def test_deleting_a_missing_instance_is_not_found(emulator, deyel_conn):
    with pytest.raises(DeyelNotFoundError) as missing:
        DeyelHook().delete_instance(FORM, 999999)
    assert (missing.value.status, missing.value.attempts) == (404, 1)
    assert api_requests(emulator) == 1


def test_a_create_whose_answer_was_lost_is_not_replayed(emulator, deyel_conn):
    hook = DeyelHook()
    before = int(hook.request("GET", INSTANCES, params={"pageSize": 1}).headers["X-Total-Count"])
    emulator.set_faults([{"route": "data", "method": "POST", "action": "apply_status", "count": 1}])
    with pytest.raises(DeyelServerError):
        hook.create_instance(FORM, {"dsCompany": "Exactly Once SA"})
    after = int(hook.request("GET", INSTANCES, params={"pageSize": 1}).headers["X-Total-Count"])
    assert after == before + 1
    assert api_requests(emulator) == 3


@pytest.mark.parametrize(
    ("instance_id", "path"),
    [("1/../2", "1%2F..%2F2"), ("4?x=1", "4%3Fx%3D1"), ("a b#c", "a%20b%23c")],
)
def test_ids_are_encoded_into_one_path_segment(emulator, deyel_conn, instance_id, path):
    with pytest.raises(DeyelNotFoundError) as missing:
        DeyelHook().get_instance(FORM, instance_id)
    assert missing.value.path == f"{INSTANCES}/{path}"
    assert api_requests(emulator) == 1


@pytest.mark.parametrize("instance_id", ["", " ", ".", "..", None, True, 1.5])
def test_ids_that_name_no_instance_are_refused_before_any_call(emulator, deyel_conn, instance_id):
    hook = DeyelHook()
    for call in (
        lambda: hook.get_instance(FORM, instance_id),
        lambda: hook.update_instance(FORM, instance_id, {"dsCompany": "x"}),
        lambda: hook.delete_instance(FORM, instance_id),
    ):
        with pytest.raises(DeyelConfigError, match="instance_id"):
            call()
    assert api_requests(emulator) == 0


@pytest.mark.parametrize("form", [".", "..", " .. ", "", "A/B"])
def test_form_names_that_are_path_segments_are_refused(emulator, deyel_conn, form):
    hook = DeyelHook()
    with pytest.raises(DeyelConfigError, match="form identifier"):
        hook.create_instance(form, {"dsCompany": "x"})
    with pytest.raises(DeyelConfigError, match="form identifier"):
        next(hook.iter_instances(form))
    assert api_requests(emulator) == 0


@pytest.mark.parametrize("values", [["dsCompany"], "dsCompany=x", {1: "x"}])
def test_values_must_be_a_mapping_of_field_names(emulator, deyel_conn, values):
    with pytest.raises(DeyelConfigError, match="values must be a mapping"):
        DeyelHook().create_instance(FORM, values)
    assert api_requests(emulator) == 0


def test_only_an_absolute_url_can_name_another_host(emulator, deyel_conn):
    hook = DeyelHook()
    # "://" inside the query of a relative endpoint: still relative, sent to the connection's host.
    assert len(hook.request("GET", INSTANCES + "?pageSize=2&note=https://elsewhere.example/x").json()) == 2
    with pytest.raises(
        DeyelConfigError, match=r"endpoint 'https://elsewhere\.example:443' is not the connection's host"
    ):
        hook.request("GET", "https://elsewhere.example/forms?next=" + emulator.url)
    assert api_requests(emulator) == 1

"""DeyelInstanceSensor and DeyelInstanceTrigger against the emulator: the same XCom in both modes, typed
failures at once, transient failures as "not yet", and one token for many deferred sensors."""

from __future__ import annotations

import asyncio
import json
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import pytest

try:
    from airflow.sdk.exceptions import (
        AirflowFailException,
        AirflowSensorTimeout,
        AirflowSkipException,
        TaskDeferred,
    )
except ImportError:  # 3.0 and 3.1 keep them in airflow.exceptions
    from airflow.exceptions import (
        AirflowFailException,
        AirflowSensorTimeout,
        AirflowSkipException,
        TaskDeferred,
    )

from deyel_provider.auth.cache import PROCESS_CACHE
from deyel_provider.emulator import run_emulator
from deyel_provider.exceptions import (
    DeyelAuthError,
    DeyelConfigError,
    DeyelIncompleteError,
    DeyelNotFoundError,
)
from deyel_provider.hooks.deyel import DeyelHook
from deyel_provider.sensors.deyel import DeyelInstanceSensor
from deyel_provider.triggers import deyel as triggers_module
from deyel_provider.triggers.deyel import DeyelInstanceTrigger
from tests.support.helpers import CLIENT_SECRET

FORM = "PURCHASE_REQUEST"
APPROVED = "cdStatus=eq:APPROVED"


def create_requests(*statuses: str) -> list[str]:
    """Purchase requests with these statuses; their ids in order."""
    hook = DeyelHook()
    created = [
        hook.create_instance(FORM, {"cdStatus": s, "dsItem": f"item {n}", "qtAmount": 10 * n})
        for n, s in enumerate(statuses)
    ]
    return [c["idObjectValue"] for c in created]


def approve(instance_id: str) -> None:
    hook = DeyelHook()
    current = hook.get_instance(FORM, instance_id)
    hook.update_instance(FORM, instance_id, {"cdStatus": "APPROVED", "dtLastUpdate": current["dtLastUpdate"]})


def sensor(**kwargs) -> DeyelInstanceSensor:
    kwargs.setdefault("form", FORM)
    kwargs.setdefault("search", APPROVED)
    kwargs.setdefault("timeout", 30)
    return DeyelInstanceSensor(task_id="wait", poke_interval=0.01, **kwargs)


async def first_event(trigger: DeyelInstanceTrigger, timeout: float = 20.0) -> dict:
    async def first() -> dict:
        async for event in trigger.run():
            return event.payload
        raise AssertionError("the trigger ended without an event")

    return await asyncio.wait_for(first(), timeout)


def test_sync_sensor_returns_count_and_bounded_instances(emulator, deyel_conn):
    ids = create_requests("APPROVED", "PENDING", "APPROVED", "APPROVED")
    emulator.reset()
    xcom = sensor(min_count=3, max_instances=2, fields=["qtAmount", "cdStatus"]).execute({})
    assert xcom == {
        "form": FORM,
        "search": APPROVED,
        "count": 3,
        "count_exact": True,
        "instances": [
            {"idObjectValue": ids[0], "qtAmount": 0, "cdStatus": "APPROVED"},
            {"idObjectValue": ids[2], "qtAmount": 20, "cdStatus": "APPROVED"},
        ],
    }
    # One probe: the first page (two instances) with the total header.
    assert emulator.stats()["api_requests"] == 1
    json.dumps(xcom)


def test_poke_is_not_yet_until_the_instance_is_approved(emulator, deyel_conn):
    (pending,) = create_requests("PENDING")
    waiting = sensor(search=f"idObjectValue=eq:{pending},{APPROVED}")
    emulator.reset()
    assert waiting.poke({}) is False
    approve(pending)
    done = waiting.poke({})
    assert done.is_done
    assert done.xcom_value["instances"] == [{"idObjectValue": pending}]
    assert emulator.stats()["api_requests"] == 2 + 2  # two probes, the GET and PATCH of the approval


def test_sensor_times_out_with_airflow_semantics(emulator, deyel_conn):
    create_requests("PENDING")
    waiting = DeyelInstanceSensor(
        task_id="wait", form=FORM, search=APPROVED, poke_interval=0.01, timeout=0.05
    )
    with pytest.raises(AirflowSensorTimeout):
        waiting.execute({})
    soft = DeyelInstanceSensor(
        task_id="soft", form=FORM, search=APPROVED, poke_interval=0.01, timeout=0.05, soft_fail=True
    )

    with pytest.raises(AirflowSkipException):
        soft.execute({})


def test_a_form_without_instances_is_not_yet(emulator, deyel_conn):
    """The emulator's PURCHASE_REQUEST form exists before any request is created (as on a real server)."""
    emulator.reset()
    assert sensor(search=None).poke({}) is False
    assert emulator.stats()["api_requests"] == 1


def test_missing_form_fails_at_once(emulator, deyel_conn):
    emulator.reset()
    with pytest.raises(DeyelNotFoundError) as caught:
        sensor(form="NO_SUCH_FORM").execute({})
    assert caught.value.status == 404
    assert emulator.stats()["api_requests"] == 1


@pytest.mark.parametrize("deferrable", [False, True])
def test_a_failure_skips_with_never_fail_and_waits_with_silent_fail_in_both_modes(
    emulator, deyel_conn, deferrable
):
    """Airflow's sensor flags apply to the probe on the worker whatever the mode (the deferrable sensor's
    first probe is its own code, not Airflow's poke loop)."""
    emulator.reset()
    with pytest.raises(AirflowSkipException):
        sensor(form="NO_SUCH_FORM", never_fail=True, deferrable=deferrable).execute({})
    assert emulator.stats()["api_requests"] == 1
    silent = sensor(form="NO_SUCH_FORM", silent_fail=True, timeout=0.05, deferrable=deferrable)
    # The failure is logged and counts as "not yet": a deferrable sensor hands the wait to the triggerer.
    with pytest.raises(TaskDeferred if deferrable else AirflowSensorTimeout):
        silent.execute({})
    with pytest.raises(DeyelNotFoundError):  # without a flag it fails at once in both modes
        sensor(form="NO_SUCH_FORM", deferrable=deferrable).execute({})


class FailingSensor(DeyelInstanceSensor):
    """A user's subclass whose poke fails the task on purpose (``AirflowFailException``)."""

    def poke(self, context):
        raise AirflowFailException("the request was withdrawn")


@pytest.mark.parametrize("deferrable", [False, True])
def test_a_fail_exception_is_never_silenced_and_skips_with_soft_fail_in_both_modes(deferrable):
    """Airflow's poke loop, step for step: ``silent_fail`` swallows errors but not a fail exception (or a
    timeout), which ``soft_fail`` turns into a skip."""
    with pytest.raises(AirflowFailException):
        FailingSensor(task_id="wait", form=FORM, silent_fail=True, deferrable=deferrable).execute({})
    with pytest.raises(AirflowSkipException):
        FailingSensor(task_id="wait", form=FORM, soft_fail=True, deferrable=deferrable).execute({})


def test_refused_credentials_fail_at_once(emulator, deyel_conn):
    deyel_conn(password="wrong-secret")
    with pytest.raises(DeyelAuthError):
        sensor().execute({})
    stats = emulator.stats()
    assert stats["token_requests"] == 1
    assert stats["api_requests"] == 0


def test_transient_errors_count_as_not_yet(emulator, deyel_conn):
    deyel_conn(extra={"retry_attempts": 2, "retry_backoff": 0.001, "retry_max_backoff": 0.001})
    create_requests("APPROVED")
    emulator.reset()
    emulator.set_faults([{"route": "data", "action": "status", "status": 503, "count": 2}])
    waiting = sensor()
    assert waiting.poke({}) is False  # two attempts, both 503: not yet
    assert emulator.stats()["api_requests"] == 2
    assert waiting.poke({}).xcom_value["count"] == 1
    assert emulator.stats()["api_requests"] == 3


def test_without_a_total_header_the_count_is_read_from_pages(deyel_conn):
    with run_emulator(records=2500, send_total=False) as emulator:
        deyel_conn(url=emulator.url)
        emulator.reset()
        xcom = sensor(form="CRM_ACCOUNT", search=None, min_count=1500).execute({})
        assert (xcom["count"], xcom["count_exact"]) == (2000, False)
        assert xcom["instances"] == [{"idObjectValue": "1"}]
        # The first page holds up to min_count (1000 at most), then one more page of 1000: 1500 are seen.
        assert emulator.stats()["api_requests"] == 2
        emulator.reset()
        # Three matches, five wanted: the first page (of five) is short; the next page of three is empty,
        # which proves the end (a short page alone could be the server's cap), so 3 is exact.
        few = sensor(form="CRM_ACCOUNT", search="idObjectValue=in:1;2;3", min_count=5)
        assert few.poke({}) is False
        assert emulator.stats()["api_requests"] == 2
        few.min_count = 3
        assert few.poke({}).xcom_value["count"] == 3


def test_bad_bounds_fail_at_parse_time():
    with pytest.raises(DeyelConfigError):
        DeyelInstanceSensor(task_id="wait", form=FORM, min_count=0)
    with pytest.raises(DeyelConfigError):
        DeyelInstanceSensor(task_id="wait", form=FORM, max_instances=101)


# -- deferred -----------------------------------------------------------------------------------------------


def test_a_hanging_tenant_holds_none_of_another_connections_threads(emulator, deyel_conn):
    """Two tenants on one triggerer: while every thread the slow one's connection may take (half of the
    triggers' threads) waits on it, the other connection's triggers still poll."""
    threads = triggers_module.thread_cap() // 2
    create_requests("APPROVED")
    with run_emulator(records=5) as slow:
        slow_conn = deyel_conn("deyel_slow_tenant", url=slow.url)
        slow.set_faults([{"route": "data", "action": "delay", "delay_ms": 5_000}])
        hung = [
            DeyelInstanceTrigger(form="CRM_ACCOUNT", deyel_conn_id=slow_conn, poll_interval=0.01)
            for _ in range(threads)
        ]
        healthy = DeyelInstanceTrigger(
            form=FORM, search=APPROVED, deyel_conn_id=deyel_conn("deyel_healthy_tenant"), poll_interval=0.01
        )

        async def scenario() -> tuple[int, dict]:
            waiting = [asyncio.ensure_future(first_event(trigger)) for trigger in hung]
            while slow.stats()["api_in_flight"] < threads:  # every thread of the slow connection is taken
                await asyncio.sleep(0.01)
            event = await first_event(healthy)
            in_flight = slow.stats()["api_in_flight"]
            for task in waiting:
                task.cancel()
            await asyncio.gather(*waiting, return_exceptions=True)
            return in_flight, event

        in_flight, event = asyncio.run(scenario())
    assert in_flight == threads  # the healthy tenant's probe did not wait for the slow one's threads
    assert event["status"] == "success" and event["xcom"]["count"] == 1


def test_a_hanging_deyel_holds_none_of_the_event_loops_default_threads(emulator, deyel_conn):
    """Other providers' triggers in the same triggerer run their blocking calls in the event loop's default
    thread pool: a Deyel that does not answer must not hold those threads."""
    create_requests("APPROVED")
    emulator.set_faults([{"route": "data", "action": "delay", "delay_ms": 5_000, "count": 1}])
    trigger = DeyelInstanceTrigger(form=FORM, search=APPROVED, poll_interval=0.01)

    async def scenario() -> tuple[int, dict]:
        # The default pool at its smallest: one thread, as when every default thread is busy.
        asyncio.get_running_loop().set_default_executor(ThreadPoolExecutor(max_workers=1))
        waiting = asyncio.ensure_future(first_event(trigger))
        while emulator.stats()["api_in_flight"] == 0:
            await asyncio.sleep(0.01)
        # Another trigger's blocking call, while the probe hangs: it runs now, not after the probe.
        in_flight = await asyncio.to_thread(lambda: emulator.stats()["api_in_flight"])
        return in_flight, await waiting

    in_flight, event = asyncio.run(scenario())
    assert in_flight == 1  # the probe was still waiting on Deyel
    assert event["status"] == "success" and event["xcom"]["count"] == 1


def test_deferred_sensor_resumes_with_the_sync_xcom(emulator, deyel_conn):
    ids = create_requests("PENDING", "APPROVED", "PENDING")
    args = {"min_count": 2, "max_instances": 5, "fields": ["dsItem"]}
    deferred = sensor(deferrable=True, **args)
    with pytest.raises(TaskDeferred) as caught:
        deferred.execute({})
    assert caught.value.method_name == "execute_complete"
    assert caught.value.timeout == timedelta(seconds=30)
    trigger = caught.value.trigger
    assert isinstance(trigger, DeyelInstanceTrigger)
    assert trigger.poll_interval == 0.01

    async def approve_later_and_wait() -> dict:
        waiting = asyncio.ensure_future(first_event(trigger))
        await asyncio.sleep(0.05)
        assert not waiting.done()
        await asyncio.to_thread(approve, ids[2])
        return await waiting

    event = asyncio.run(approve_later_and_wait())
    resumed = deferred.execute_complete({}, event)
    assert resumed == sensor(**args).execute({})
    assert resumed["count"] == 2
    assert [i["idObjectValue"] for i in resumed["instances"]] == [ids[1], ids[2]]


def test_deferrable_sensor_already_satisfied_does_not_defer(emulator, deyel_conn):
    create_requests("APPROVED")
    assert sensor(deferrable=True).execute({})["count"] == 1


def test_trigger_reports_a_missing_form_as_the_typed_error(emulator, deyel_conn):
    trigger = DeyelInstanceTrigger(form="NO_SUCH_FORM", poll_interval=0.01)
    event = asyncio.run(first_event(trigger))
    assert event["status"] == "error"
    with pytest.raises(DeyelNotFoundError) as caught:
        sensor(form="NO_SUCH_FORM", deferrable=True).execute_complete({}, event)
    assert caught.value.status == 404


def test_trigger_counts_transient_errors_as_not_yet(emulator, deyel_conn):
    deyel_conn(extra={"retry_attempts": 1})
    create_requests("APPROVED")
    emulator.reset()
    emulator.set_faults([{"route": "data", "action": "status", "status": 503, "count": 3}])
    event = asyncio.run(first_event(DeyelInstanceTrigger(form=FORM, search=APPROVED, poll_interval=0.01)))
    assert event["status"] == "success"
    assert emulator.stats()["api_requests"] == 4


def test_trigger_serialises_to_plain_values_without_secrets(emulator, deyel_conn):
    trigger = DeyelInstanceTrigger(
        form=FORM, search=APPROVED, min_count=2, max_instances=3, fields=("dsItem",), poll_interval=5
    )
    classpath, kwargs = trigger.serialize()
    assert classpath == "deyel_provider.triggers.deyel.DeyelInstanceTrigger"
    text = json.dumps(kwargs)  # plain JSON values only
    assert CLIENT_SECRET not in text
    assert emulator.url not in text
    # Nothing in the trigger touched the server: the connection is read in the triggerer, at run time.
    assert emulator.stats()["token_requests"] == 0
    assert DeyelInstanceTrigger(**json.loads(text)).serialize() == (classpath, kwargs)


def test_trigger_survives_a_triggerer_restart(emulator, deyel_conn):
    (pending,) = create_requests("PENDING")
    trigger = DeyelInstanceTrigger(
        form=FORM, search=f"idObjectValue=eq:{pending},{APPROVED}", poll_interval=0.01
    )
    _, kwargs = trigger.serialize()
    with pytest.raises(asyncio.TimeoutError):
        asyncio.run(first_event(trigger, timeout=0.1))  # the triggerer stops while it waits
    approve(pending)
    PROCESS_CACHE.clear()  # a new triggerer process: an empty memory tier
    event = asyncio.run(first_event(DeyelInstanceTrigger(**kwargs)))
    assert event["xcom"]["instances"] == [{"idObjectValue": pending}]


@pytest.mark.parametrize("cache", ["memory", "file"])
def test_many_deferred_sensors_share_one_token(emulator, deyel_conn, cache, tmp_path):
    """Twenty deferred sensors on one triggerer: one token POST, one probe each."""
    create_requests("APPROVED")
    deyel_conn(extra={"cache": cache, "cache_dir": str(tmp_path / "tokens")})
    PROCESS_CACHE.clear()
    emulator.reset()
    triggers = [DeyelInstanceTrigger(form=FORM, search=APPROVED, poll_interval=0.01) for _ in range(20)]

    async def all_events() -> list[dict]:
        return await asyncio.gather(*(first_event(t) for t in triggers))

    events = asyncio.run(all_events())
    assert all(e["status"] == "success" for e in events)
    stats = emulator.stats()
    assert stats["token_requests"] == 1
    assert stats["api_requests"] == 20


@pytest.mark.parametrize(
    ("server", "min_count", "expected"),
    [
        # A total that counts the whole form, not the search: no match must not look like 50.
        ({"total_ignores_search": True}, 1, (0, True)),
        # A total that counts the page sent: 50 is reached at once; 60 wanted of 50 makes the probe ask a
        # page of one, whose total of 1 gives the header away: a typed error (test_page_walker.py).
        ({"total_counts_page": True}, 60, None),
        ({"total_counts_page": True}, 50, (50, True)),
        # Pages capped below what is asked, no total: read in pages of what the server sends.
        ({"send_total": False, "page_size_max": 500}, 800, (1000, False)),
        ({"send_total": False, "ignore_page_size": True}, 1500, (1500, False)),
    ],
)
def test_a_total_that_disagrees_or_a_capped_page_never_makes_a_wrong_count(
    deyel_conn, server, min_count, expected
):
    """A sensor must not fire on nothing, nor wait forever on a server that pages below what it is asked."""
    records = 2500 if "page_size_max" in server or "ignore_page_size" in server else 50
    with run_emulator(records=records, **server) as emulator:
        deyel_conn(url=emulator.url)
        search = "idObjectValue=eq:999999" if "total_ignores_search" in server else None
        waiting = sensor(form="CRM_ACCOUNT", search=search, min_count=min_count)
        if expected is None:
            with pytest.raises(DeyelIncompleteError, match="counts the page sent"):
                waiting.poke({})
            return
        outcome = waiting.poke({})
        if expected[0] >= min_count:
            assert (outcome.xcom_value["count"], outcome.xcom_value["count_exact"]) == expected
        else:
            assert outcome is False

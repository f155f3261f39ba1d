"""MicroBatcher with a fake runner: order, limits, splitting, cancellation, failure isolation."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pytest

from serve.batching import MicroBatcher
from serve.columns import Feed, Outputs
from serve.errors import (
    DeadlineExceededError,
    InferenceFailedError,
    ModelNotReadyError,
    ServeError,
    ServerBusyError,
)
from serve.reports import BatchRecord
from serve.statistics import ModelStatistics

FAR = 1e12


class FakeModel:
    """Doubles x; fails on any batch containing -1; records every batch it saw."""

    def __init__(self) -> None:
        self.batches: list[list[float]] = []
        self.threads: list[str] = []

    def run(self, feed: Feed) -> Feed:
        x = feed["x"]
        self.batches.append(x.ravel().tolist())
        self.threads.append(threading.current_thread().name)
        if (x == -1).any():
            raise ValueError("cannot score -1")
        return {"y": x * 2, "label": (x > 0).ravel()}


def rows(*values: float, dtype: Any = np.float32) -> Feed:
    return {"x": np.array(values, dtype=dtype).reshape(-1, 1)}


def run(coroutine_factory: Callable[[], Any]) -> Any:
    return asyncio.run(coroutine_factory())


def test_lone_request_runs_at_once_in_a_batch_of_its_own() -> None:
    model = FakeModel()

    async def scenario() -> Outputs:
        async with MicroBatcher(model.run) as batcher:
            return await batcher.submit(rows(3.0), 1, FAR)

    result = run(scenario)
    assert result["y"].tolist() == [[6.0]]
    assert model.batches == [[3.0]]


def test_concurrent_requests_share_a_batch_and_each_gets_its_own_rows_in_order() -> None:
    model = FakeModel()
    rng = np.random.default_rng(7)
    payloads = [rng.normal(size=int(rng.integers(1, 4))).astype(np.float32) for _ in range(12)]

    async def scenario() -> list[Outputs]:
        async with MicroBatcher(model.run, max_batch_size=1000) as batcher:
            futures = [batcher.submit(rows(*values), len(values), FAR) for values in payloads]
            return list(await asyncio.gather(*futures))

    results = run(scenario)
    assert len(model.batches) == 1
    for values, result in zip(payloads, results, strict=True):
        np.testing.assert_array_equal(result["y"].ravel(), values * 2)
        np.testing.assert_array_equal(result["label"], values > 0)


def test_batches_never_exceed_max_batch_size_rows() -> None:
    model = FakeModel()

    async def scenario() -> None:
        async with MicroBatcher(model.run, max_batch_size=8) as batcher:
            await asyncio.gather(*[batcher.submit(rows(i, i, i), 3, FAR) for i in range(10)])

    run(scenario)
    assert [len(batch) for batch in model.batches] == [6, 6, 6, 6, 6]
    assert [value for batch in model.batches for value in batch] == [i for i in range(10) for _ in range(3)]


def test_request_larger_than_max_batch_size_runs_alone() -> None:
    model = FakeModel()

    async def scenario() -> Outputs:
        async with MicroBatcher(model.run, max_batch_size=4) as batcher:
            small = batcher.submit(rows(1), 1, FAR)
            big = batcher.submit(rows(*range(10)), 10, FAR)
            after = batcher.submit(rows(2), 1, FAR)
            await asyncio.gather(small, after)
            return await big

    big = run(scenario)
    assert big["y"].ravel().tolist() == [2.0 * i for i in range(10)]
    assert [len(batch) for batch in model.batches] == [1, 10, 1]


def test_full_queue_answers_busy_at_once() -> None:
    model = FakeModel()

    async def scenario() -> None:
        async with MicroBatcher(model.run, max_queue_size=2) as batcher:
            first = batcher.submit(rows(1), 1, FAR)
            second = batcher.submit(rows(2), 1, FAR)
            with pytest.raises(ServerBusyError, match="2 requests queued"):
                batcher.submit(rows(3), 1, FAR)
            await asyncio.gather(first, second)
            await batcher.submit(rows(4), 1, FAR)  # room again once the queue drained

    run(scenario)


def test_cancelled_requests_are_dropped_before_running() -> None:
    model = FakeModel()

    async def scenario() -> None:
        async with MicroBatcher(model.run) as batcher:
            first = batcher.submit(rows(1), 1, FAR)
            gone = batcher.submit(rows(2), 1, FAR)
            third = batcher.submit(rows(3), 1, FAR)
            gone.cancel()
            await asyncio.gather(first, third)

    run(scenario)
    assert model.batches == [[1.0, 3.0]]


def test_expired_requests_get_deadline_exceeded_and_do_not_run() -> None:
    model = FakeModel()

    async def scenario() -> None:
        async with MicroBatcher(model.run) as batcher:
            late = batcher.submit(rows(1), 1, deadline=0.0)
            ok = batcher.submit(rows(2), 1, FAR)
            with pytest.raises(DeadlineExceededError, match="passed its deadline"):
                await late
            await ok

    run(scenario)
    assert model.batches == [[2.0]]


def test_a_failing_request_fails_alone_and_its_batch_neighbours_succeed() -> None:
    model = FakeModel()

    async def scenario() -> list[Any]:
        async with MicroBatcher(model.run) as batcher:
            futures = [batcher.submit(rows(value), 1, FAR) for value in (1, -1, 3)]
            return list(await asyncio.gather(*futures, return_exceptions=True))

    good, bad, other = run(scenario)
    assert good["y"].tolist() == [[2.0]] and other["y"].tolist() == [[6.0]]
    assert isinstance(bad, InferenceFailedError) and "cannot score -1" in bad.message


def test_a_failing_batch_report_costs_no_answer_and_the_batcher_keeps_serving(caplog: pytest.LogCaptureFixture) -> None:
    """Before: the report's exception ended the worker with its batch unanswered, and those requests hung."""
    model = FakeModel()

    def broken(record: BatchRecord) -> None:
        raise RuntimeError("a statistics bug")

    async def scenario() -> list[list[float]]:
        async with MicroBatcher(model.run, on_batch=broken) as batcher:
            await parked(batcher)
            answers = []
            for wave in ([1], [2, 3], [4, 5]):  # alone in its caller's task; alone, then queued; one batch
                futures = [batcher.submit(rows(value), 1, FAR) for value in wave]
                answers.append([part["y"].item() for part in await asyncio.wait_for(asyncio.gather(*futures), 5)])
            return answers

    assert run(scenario) == [[2.0], [4.0, 6.0], [8.0, 10.0]]
    assert model.batches == [[1.0], [2.0], [3.0], [4.0, 5.0]]
    logged = [record for record in caplog.records if record.name == "tabserve.batching"]
    assert len(logged) == 1 and "reporting a batch failed" in logged[0].getMessage(), "said once, not per batch"


def test_a_model_answering_with_a_non_tensor_fails_its_batch_and_the_batcher_keeps_serving() -> None:
    """Before: a list output (onnxruntime's sequence outputs) broke `split` outside its checks, and hung."""
    model = FakeModel()

    def sequence_on_seven(feed: Feed) -> Feed:
        outputs = model.run(feed)
        return {**outputs, "y": outputs["y"].tolist()} if (feed["x"] == 7).any() else outputs

    async def scenario() -> list[Any]:
        async with MicroBatcher(sequence_on_seven) as batcher:
            outcomes = []
            for wave in ([7, 1], [2]):
                futures = [batcher.submit(rows(value), 1, FAR) for value in wave]
                outcomes += await asyncio.wait_for(asyncio.gather(*futures, return_exceptions=True), 5)
            return outcomes

    seven, one, two = run(scenario)
    for failed in (seven, one):  # no input is to blame, so the whole batch fails
        assert isinstance(failed, ServeError) and failed.status == 500
        assert "output 'y' is a list, not a batch of 2 rows" in failed.message
    assert two["y"].tolist() == [[4.0]]


def test_whatever_breaks_in_a_batch_its_requests_get_an_answer_and_the_worker_carries_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The worker's last guard: here a model answering with no outputs at all, which nothing else checks."""
    model = FakeModel()

    def nothing_on_seven(feed: Feed) -> Feed:
        outputs = model.run(feed)
        return None if (feed["x"] == 7).any() else outputs  # type: ignore[return-value]

    async def scenario() -> list[Any]:
        async with MicroBatcher(nothing_on_seven) as batcher:
            outcomes = []
            for wave in ([7, 1], [2, 3]):  # both waves queue for the worker
                futures = [batcher.submit(rows(value), 1, FAR) for value in wave]
                outcomes += await asyncio.wait_for(asyncio.gather(*futures, return_exceptions=True), 5)
            return outcomes

    seven, one, two, three = run(scenario)
    for failed in (seven, one):
        assert isinstance(failed, ServeError) and failed.status == 500 and "see the server log" in failed.message
    assert (two["y"].item(), three["y"].item()) == (4.0, 6.0)
    assert any("running a batch of 2 requests failed" in record.getMessage() for record in caplog.records)


def test_requests_with_different_datatypes_never_share_a_batch() -> None:
    model = FakeModel()

    async def scenario() -> None:
        async with MicroBatcher(model.run) as batcher:
            await asyncio.gather(
                batcher.submit(rows(1), 1, FAR),
                batcher.submit(rows(2, dtype=np.float64), 1, FAR),
                batcher.submit(rows(3), 1, FAR),
            )

    run(scenario)
    assert model.batches == [[1.0, 3.0], [2.0]]


def test_close_finishes_queued_requests_then_refuses_new_ones() -> None:
    model = FakeModel()

    async def scenario() -> None:
        batcher = MicroBatcher(model.run)
        await batcher.__aenter__()
        pending = [batcher.submit(rows(i), 1, FAR) for i in range(5)]
        await batcher.close()
        assert [future.result()["y"].item() for future in pending] == [0.0, 2.0, 4.0, 6.0, 8.0]
        with pytest.raises(ModelNotReadyError, match="shutting down"):
            batcher.submit(rows(1), 1, FAR)

    run(scenario)


def test_large_batches_run_in_the_executor_and_small_ones_inline() -> None:
    model = FakeModel()

    async def scenario() -> None:
        with ThreadPoolExecutor(1, thread_name_prefix="ort") as executor:
            async with MicroBatcher(model.run, inline_batch_rows=2, executor=executor) as batcher:
                await batcher.submit(rows(1, 2), 2, FAR)
                await batcher.submit(rows(1, 2, 3), 3, FAR)

    run(scenario)
    assert model.threads[0] == threading.main_thread().name
    assert model.threads[1].startswith("ort")


def test_batch_delay_gathers_requests_that_arrive_within_it() -> None:
    model = FakeModel()

    async def scenario() -> None:
        async with MicroBatcher(model.run, max_batch_delay_ms=100) as batcher:
            first = batcher.submit(rows(1), 1, FAR)
            await asyncio.sleep(0.01)
            second = batcher.submit(rows(2), 1, FAR)
            await asyncio.gather(first, second)

    run(scenario)
    assert model.batches == [[1.0, 2.0]]


def test_statistics_count_requests_rows_and_batches() -> None:
    model = FakeModel()
    stats = ModelStatistics()

    async def scenario() -> None:
        async with MicroBatcher(model.run, on_batch=stats.record) as batcher:
            await asyncio.gather(*[batcher.submit(rows(i, i), 2, FAR) for i in range(3)])

    run(scenario)
    assert (stats.inference_count, stats.execution_count, stats.success.count, stats.fail.count) == (6, 1, 3, 0)
    assert list(stats.batch_sizes) == [6]
    measured = stats.to_triton("m", 1)["inference_stats"]
    for stage in ("compute_input", "compute_infer", "compute_output"):
        assert measured[stage]["count"] == 1 and measured[stage]["ns"] > 0, stage


def test_a_failed_batch_counts_only_the_request_that_broke_it() -> None:
    model = FakeModel()
    stats = ModelStatistics()
    outcomes: list[str] = []

    def observe(batch: BatchRecord) -> None:
        outcomes.append(batch.outcome)
        stats.record(batch)

    async def scenario() -> list[Any]:
        async with MicroBatcher(model.run, on_batch=observe) as batcher:
            futures = [batcher.submit(rows(-1 if i == 17 else i), 1, FAR) for i in range(64)]
            return list(await asyncio.gather(*futures, return_exceptions=True))

    results = run(scenario)
    assert [isinstance(result, InferenceFailedError) for result in results].count(True) == 1
    assert outcomes == ["retried"] + ["success"] * 17 + ["failure"] + ["success"] * 46
    assert (stats.success.count, stats.fail.count, stats.queue.count) == (63, 1, 64)
    assert (stats.execution_count, stats.inference_count) == (65, 63)


class SlowModel(FakeModel):
    def run(self, feed: Feed) -> Feed:
        time.sleep(0.5)
        return super().run(feed)


def test_deadlines_are_kept_while_a_batch_runs_in_a_thread_and_while_queued_behind_it() -> None:
    model = SlowModel()

    async def scenario() -> tuple[list[Any], float]:
        loop = asyncio.get_running_loop()
        with ThreadPoolExecutor(1) as executor:
            async with MicroBatcher(model.run, inline_batch_rows=0, executor=executor) as batcher:
                started = loop.time()
                running = batcher.submit(rows(1), 1, started + 0.1)
                await asyncio.sleep(0.02)  # the first batch is now in the thread
                queued = batcher.submit(rows(2), 1, started + 0.15)
                patient = batcher.submit(rows(3), 1, FAR)
                outcomes = list(await asyncio.gather(running, queued, return_exceptions=True))
                answered_after = loop.time() - started
                outcomes.append(await patient)
                return outcomes, answered_after

    (running, queued, patient), answered_after = run(scenario)
    assert isinstance(running, DeadlineExceededError) and "while its batch ran" in running.message
    assert isinstance(queued, DeadlineExceededError) and "in the queue" in queued.message
    assert answered_after < 0.4, "expired requests are answered at their deadlines, not when the model returns"
    assert patient["y"].tolist() == [[6.0]]
    assert model.batches == [[1.0], [3.0]], "the expired queued request never ran"


def test_list_columns_take_the_signature_dtype_and_share_a_batch_with_arrays() -> None:
    model = FakeModel()
    signature = (("x", "<f4", (1,)),)

    async def scenario() -> list[Outputs]:
        async with MicroBatcher(model.run) as batcher:
            futures = [
                batcher.submit({"x": [1, 2.5]}, 2, FAR, signature),
                batcher.submit(rows(3), 1, FAR, signature),
                batcher.submit({"x": [4.0]}, 1, FAR, signature),
            ]
            return list(await asyncio.gather(*futures))

    first, second, third = run(scenario)
    assert model.batches == [[1.0, 2.5, 3.0, 4.0]]
    assert first["y"].dtype == np.float32 and first["y"].tolist() == [[2.0], [5.0]]
    assert second["y"].tolist() == [[6.0]] and third["y"].tolist() == [[8.0]]


def test_list_columns_need_a_signature() -> None:
    async def scenario() -> None:
        async with MicroBatcher(FakeModel().run) as batcher:
            with pytest.raises(TypeError, match="submit it with the model's signature"):
                batcher.submit({"x": [1.0]}, 1, FAR)

    run(scenario)


def test_adaptive_wait_never_delays_a_lone_request() -> None:
    model = FakeModel()

    async def scenario() -> float:
        loop = asyncio.get_running_loop()
        async with MicroBatcher(model.run, adaptive_wait_ms=5000) as batcher:
            await batcher.submit(rows(1), 1, FAR)
            started = loop.time()
            await batcher.submit(rows(2), 1, FAR)  # follows a batch of one: no sign of concurrency
            return loop.time() - started

    assert run(scenario) < 1.0
    assert model.batches == [[1.0], [2.0]]


def test_adaptive_wait_gathers_a_full_batch_under_sustained_load_and_stops_when_full() -> None:
    model = FakeModel()

    async def scenario() -> float:
        loop = asyncio.get_running_loop()
        async with MicroBatcher(model.run, max_batch_size=3, adaptive_wait_ms=5000) as batcher:
            await asyncio.gather(*(batcher.submit(rows(value), 1, FAR) for value in (1, 2, 3)))  # a wave of 3
            started = loop.time()
            waves = [batcher.submit(rows(4, 5), 2, FAR)]
            await asyncio.sleep(0.05)  # the rest trickles in
            waves.append(batcher.submit(rows(6), 1, FAR))
            await asyncio.gather(*waves)
            return loop.time() - started

    elapsed = run(scenario)
    assert model.batches == [[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]
    assert 0.04 < elapsed < 1.0, "the wait ends when the batch is full (3 rows, 2 requests), not after the bound"


def test_adaptive_wait_stops_when_a_wave_as_large_as_the_recent_batches_has_come() -> None:
    """Fewer clients than max_batch_size rows: the wait ends when the wave is in, not after the bound."""
    model = FakeModel()

    async def scenario() -> tuple[float, float]:
        loop = asyncio.get_running_loop()
        async with MicroBatcher(model.run, max_batch_size=1000, adaptive_wait_ms=1000) as batcher:
            await asyncio.gather(*(batcher.submit(rows(value), 1, FAR) for value in (1, 2, 3)))
            started = loop.time()
            wave = [batcher.submit(rows(4), 1, FAR)]
            await asyncio.sleep(0.05)  # the wave is cut: the rest of it comes later
            wave += [batcher.submit(rows(5), 1, FAR), batcher.submit(rows(6), 1, FAR)]
            await asyncio.gather(*wave)
            whole = loop.time() - started
            started = loop.time()
            await asyncio.gather(batcher.submit(rows(7), 1, FAR), batcher.submit(rows(8), 1, FAR))
            return whole, loop.time() - started  # two of a wave of three: they wait out the bound

    whole, short = run(scenario)
    assert model.batches == [[1.0, 2.0, 3.0], [4.0, 5.0, 6.0], [7.0, 8.0]]
    assert 0.04 < whole < 0.5, "the wait ends when three requests (the largest recent batch) are queued"
    assert short > 0.9, "a wave smaller than the recent batches waits for the rest, up to adaptive_wait_ms"


def test_adaptive_wait_is_bounded_and_skipped_after_a_pause() -> None:
    model = FakeModel()

    async def scenario() -> tuple[float, float]:
        loop = asyncio.get_running_loop()
        async with MicroBatcher(model.run, adaptive_wait_ms=100) as batcher:
            await asyncio.gather(batcher.submit(rows(1), 1, FAR), batcher.submit(rows(2), 1, FAR))
            started = loop.time()
            await batcher.submit(rows(3), 1, FAR)  # right after a batch of two: waits, at most 100 ms
            waited = loop.time() - started
            await asyncio.gather(batcher.submit(rows(4), 1, FAR), batcher.submit(rows(5), 1, FAR))
            await asyncio.sleep(0.2)  # a pause after a batch of two: the load is no longer sustained
            started = loop.time()
            await batcher.submit(rows(6), 1, FAR)
            return waited, loop.time() - started

    waited, after_pause = run(scenario)
    assert 0.09 < waited < 0.5
    assert after_pause < 0.05
    assert model.batches == [[1.0, 2.0], [3.0], [4.0, 5.0], [6.0]]


async def parked(batcher: MicroBatcher) -> MicroBatcher:
    """The batcher once its worker has started and waits for work, as it does between requests."""
    await asyncio.sleep(0)
    return batcher


def test_a_lone_request_to_an_idle_batcher_is_answered_before_submit_returns() -> None:
    model = FakeModel()
    stats = ModelStatistics()

    async def scenario() -> tuple[bool, Outputs]:
        async with MicroBatcher(model.run, on_batch=stats.record) as batcher:
            await parked(batcher)
            future = batcher.submit(rows(3.0), 1, FAR)
            answered = future.done()  # no wake-up of the worker, no second task step
            return answered, await future

    answered, result = run(scenario)
    assert answered and result["y"].tolist() == [[6.0]]
    assert model.batches == [[3.0]] and model.threads == ["MainThread"]
    assert (stats.inference_count, stats.execution_count, stats.success.count) == (1, 1, 1)


def test_requests_arriving_with_one_that_ran_alone_share_the_next_batch_and_then_batch_together() -> None:
    model = FakeModel()

    async def scenario() -> list[list[float]]:
        async with MicroBatcher(model.run, max_batch_size=1000) as batcher:
            await parked(batcher)
            waves = [[1, 2, 3], [4, 5, 6], [7]]
            for wave in waves:  # clients in step: each wave arrives in one pass of the loop
                results = await asyncio.gather(*[batcher.submit(rows(value), 1, FAR) for value in wave])
                assert [part["y"].item() for part in results] == [2.0 * value for value in wave]
            return model.batches

    # The first of a wave after a quiet spell runs at once; the rest queue behind it and count as its
    # company, so the next wave shares one batch, as does the lone request that follows.
    assert run(scenario) == [[1.0], [2.0, 3.0], [4.0, 5.0, 6.0], [7.0]]


def test_a_lone_request_keeps_its_deadline_and_fails_alone() -> None:
    model = FakeModel()

    async def scenario() -> list[Any]:
        async with MicroBatcher(model.run) as batcher:
            outcomes: list[Any] = []
            for value, deadline in ((1.0, 0.0), (-1.0, FAR), (2.0, FAR)):
                await parked(batcher)
                future = batcher.submit(rows(value), 1, deadline)
                outcomes.append(future.done())
                outcomes.append((await asyncio.gather(future, return_exceptions=True))[0])
            return outcomes

    late_done, late, failed_done, failed, ok_done, ok = run(scenario)
    assert isinstance(late, DeadlineExceededError) and not late_done  # a late one goes the usual way: refused
    assert failed_done and isinstance(failed, InferenceFailedError) and "cannot score -1" in failed.message
    assert ok_done and ok["y"].tolist() == [[4.0]]
    assert model.batches == [[-1.0], [2.0]]


def test_a_small_request_never_runs_alone_ahead_of_one_already_queued() -> None:
    model = FakeModel()

    async def scenario() -> None:
        with ThreadPoolExecutor(1, thread_name_prefix="ort") as executor:
            async with MicroBatcher(model.run, inline_batch_rows=2, executor=executor) as batcher:
                await parked(batcher)
                large = batcher.submit(rows(1, 2, 3), 3, FAR)  # too large to run inline: it queues
                small = batcher.submit(rows(4), 1, FAR)  # the worker is still parked, but not idle
                assert not small.done()
                await asyncio.gather(large, small)

    run(scenario)
    assert model.batches == [[1.0, 2.0, 3.0, 4.0]]

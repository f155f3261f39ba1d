"""Locust scenarios for tabserve, built from the served models' metadata and golden vectors.

Tags pick the scenario (`--tags v2-json`); every response is validated against the golden vectors.
Settings come from TABSERVE_* variables set by `python -m loadtest run`:
  TABSERVE_MODEL      model for the single-model scenarios (default: penguins, else the first one)
  TABSERVE_RATE       requests/s for OpenLoopUser (fixed arrival rate, independent of responses)
  TABSERVE_SHAPE      "step" or "spike" to drive users by StepShape
  TABSERVE_TIMINGS    file to write exact client-side latencies to (locust's own are bucketed)
  TABSERVE_GRPC       host:port of the gRPC front end, for the grpc scenario
"""

from __future__ import annotations

import itertools
import json
import os
import random
import time
from typing import Any

import gevent
import gevent.pool
import grpc
import grpc.experimental.gevent
from locust import FastHttpUser, LoadTestShape, User, constant, events, tag, task
from locust.env import Environment

from loadtest.payloads import (
    ModelPayloads,
    Payload,
    decode_outputs,
    fetch_models,
    grpc_outputs,
    mismatch,
    records_outputs,
)

# grpcio blocks its calling thread; under gevent that would be every user at once. This makes its
# waits cooperative, and must run before the first channel exists.
grpc.experimental.gevent.init_gevent()

BAD_SHARE = 0.2
BATCH_ROWS = 100
MAX_SAMPLES = 500_000
CATALOG: dict[str, ModelPayloads] = {}
SAMPLES: dict[str, list[float]] = {}


@events.test_start.add_listener
def load_catalog(environment: Environment, **kwargs: Any) -> None:
    """Fetch metadata and golden vectors once per process, before any user starts."""
    import urllib.request

    host = (environment.host or "").rstrip("/")

    def get_json(path: str) -> Any:
        with urllib.request.urlopen(host + path, timeout=10) as response:
            return json.loads(response.read())

    for model in fetch_models(get_json):
        CATALOG[model.name] = model


@events.request.add_listener
def record_exact_latency(name: str, response_time: float, **kwargs: Any) -> None:
    """Locust rounds below 100 ms to whole milliseconds; keep the exact figure for sub-ms budgets."""
    samples = SAMPLES.setdefault(name, [])
    if len(samples) < MAX_SAMPLES:
        samples.append(response_time)


# The exact timings travel as a message to whoever judges the run: the local runner (to itself), or
# the master from every worker (`--processes N`, or workers on other machines). The master keeps the
# merged samples and rewrites the file on every arrival, so the order of quitting does not matter.
MERGED: dict[str, list[float]] = {}
BY_WORKER: dict[str, int] = {}
TIMINGS_MESSAGE = "tabserve_timings"


@events.init.add_listener
def listen_for_timings(environment: Environment, **kwargs: Any) -> None:
    from locust.runners import WorkerRunner

    if environment.runner is not None and not isinstance(environment.runner, WorkerRunner):
        environment.runner.register_message(TIMINGS_MESSAGE, merge_timings)


def merge_timings(environment: Environment, msg: Any, **kwargs: Any) -> None:
    for name, samples in msg.data.items():
        MERGED.setdefault(name, []).extend(samples)
    BY_WORKER[str(msg.node_id)] = BY_WORKER.get(str(msg.node_id), 0) + sum(map(len, msg.data.values()))
    path = os.environ.get("TABSERVE_TIMINGS")
    if path:
        with open(path, "w") as handle:
            json.dump(MERGED, handle)
        with open(path.removesuffix(".json") + "_workers.json", "w") as handle:
            json.dump(BY_WORKER, handle)


@events.test_stop.add_listener
def send_exact_latency(environment: Environment, **kwargs: Any) -> None:
    from locust.runners import MasterRunner

    if environment.runner is not None and not isinstance(environment.runner, MasterRunner) and SAMPLES:
        samples = {name: list(values) for name, values in SAMPLES.items()}
        SAMPLES.clear()
        environment.runner.send_message(TIMINGS_MESSAGE, samples)


def chosen_model() -> ModelPayloads:
    wanted = os.environ.get("TABSERVE_MODEL", "penguins")
    return CATALOG.get(wanted) or next(iter(CATALOG.values()))


class Scenarios:
    """The requests every user kind sends; `send` validates the answer."""

    client: Any

    def send(self, payload: Payload, name: str) -> None:
        with self.client.post(
            payload.path, data=payload.body, headers=payload.headers, name=name, catch_response=True
        ) as response:
            if response.status_code != payload.expected_status:
                response.failure(
                    f"status {response.status_code}, expected {payload.expected_status}: {response.text[:200]}"
                )
                return
            if payload.expected is None:
                response.success()  # a correct 4xx is the right answer to a bad request
                return
            if payload.path.endswith(":predict"):
                got = records_outputs(response.content)
            else:
                got = decode_outputs(response.content, response.headers.get("Inference-Header-Content-Length"))
            problem = mismatch(got, payload.expected)
            if problem:
                response.failure(problem)

    def one_row(self, model: ModelPayloads) -> list[int]:
        return [random.randrange(model.rows)]

    def many_rows(self, model: ModelPayloads) -> list[int]:
        return [random.randrange(model.rows) for _ in range(BATCH_ROWS)]


class ScenarioUser(Scenarios, FastHttpUser):
    """Closed loop: each user sends its next request when the previous one is answered."""

    wait_time = constant(0)

    @tag("v2-json")
    @task
    def v2_json(self) -> None:
        model = chosen_model()
        self.send(model.v2_json(self.one_row(model)), f"v2-json {model.name}")

    @tag("records")
    @task
    def records(self) -> None:
        model = chosen_model()
        self.send(model.records(self.one_row(model)), f"records {model.name}")

    @tag("batch100")
    @task
    def batch(self) -> None:
        model = chosen_model()
        self.send(model.v2_json(self.many_rows(model)), f"batch100 {model.name}")

    @tag("binary")
    @task
    def binary(self) -> None:
        model = chosen_model()
        self.send(model.v2_binary(self.one_row(model)), f"binary {model.name}")

    @tag("binary100")
    @task
    def binary_batch(self) -> None:
        model = chosen_model()
        self.send(model.v2_binary(self.many_rows(model)), f"binary100 {model.name}")

    @tag("mixed")
    @task
    def mixed(self) -> None:
        model = random.choice(list(CATALOG.values()))
        self.send(model.v2_json(self.one_row(model)), f"mixed {model.name}")

    @tag("drift")
    @task
    def drift(self) -> None:
        model = chosen_model()
        feature = os.environ.get("TABSERVE_DRIFT_FEATURE") or model.first_number()
        factor = float(os.environ.get("TABSERVE_DRIFT_FACTOR", "1000"))
        self.send(model.shifted(feature, factor, self.one_row(model)), f"drift {model.name}")

    @tag("bad")
    @task
    def with_bad_requests(self) -> None:
        model = chosen_model()
        if random.random() < BAD_SHARE:
            self.send(random.choice(model.bad()), "bad 4xx")
        else:
            self.send(model.v2_json(self.one_row(model)), f"v2-json {model.name}")


class GrpcUser(Scenarios, User):
    """Closed loop over gRPC: ModelInfer with raw contents, each answer checked against the golden vectors."""

    wait_time = constant(0)

    def on_start(self) -> None:
        from tritonclient.grpc import service_pb2_grpc

        self.channel = grpc.insecure_channel(os.environ["TABSERVE_GRPC"])
        self.stub = service_pb2_grpc.GRPCInferenceServiceStub(self.channel)

    def on_stop(self) -> None:
        self.channel.close()

    @tag("grpc")
    @task
    def grpc_infer(self) -> None:
        model = chosen_model()
        rows = self.one_row(model)
        request = model.grpc_request(rows)
        started = time.perf_counter()
        exception: Exception | None = None
        length = 0
        try:
            response = self.stub.ModelInfer(request, timeout=10)
            length = response.ByteSize()
            problem = mismatch(grpc_outputs(response), model.expected(rows))
            exception = AssertionError(problem) if problem else None
        except grpc.RpcError as exc:
            exception = exc
        events.request.fire(
            request_type="grpc",
            name=f"grpc {model.name}",
            response_time=(time.perf_counter() - started) * 1000,
            response_length=length,
            exception=exception,
            context={},
        )


class OpenLoopUser(Scenarios, FastHttpUser):
    """Open loop: requests leave at a fixed rate whether or not earlier ones were answered.

    A closed loop slows down with the server and hides queueing delay; here a slow server means a
    growing number of requests in flight (bounded: an arrival that finds max_in_flight requests
    outstanding is recorded as a failure). Run exactly one of these users; TABSERVE_RATE sets the rate.
    """

    wait_time = constant(0)
    max_in_flight = 512

    @tag("open-loop")
    @task
    def arrivals(self) -> None:
        rate = float(os.environ.get("TABSERVE_RATE", "200"))
        pool = gevent.pool.Pool(self.max_in_flight)
        model = chosen_model()
        started = time.perf_counter()
        for sent in itertools.count():
            due = started + sent / rate
            delay = due - time.perf_counter()
            if delay > 0:
                gevent.sleep(delay)
            if pool.full():
                events.request.fire(
                    request_type="POST",
                    name=f"open-loop {model.name}",
                    response_time=0.0,
                    response_length=0,
                    exception=RuntimeError(f"{self.max_in_flight} requests in flight: the server fell behind"),
                )
                continue
            pool.spawn(self.send, model.v2_json(self.one_row(model)), f"open-loop {model.name}")


# Locust uses any LoadTestShape it finds in the locustfile, overriding -u/-t: define it only when asked for.
if os.environ.get("TABSERVE_SHAPE"):

    class StepShape(LoadTestShape):
        """Step load (users double every TABSERVE_STEP_S) or a spike (4, 64, 4 users): finds the knee."""

        def __init__(self) -> None:
            super().__init__()
            self.mode = os.environ.get("TABSERVE_SHAPE", "")
            self.step_s = float(os.environ.get("TABSERVE_STEP_S", "5"))
            self.steps = [1, 2, 4, 8, 16, 32, 64] if self.mode == "step" else [4, 64, 4]

        def tick(self) -> tuple[int, float] | None:
            step = int(self.get_run_time() // self.step_s)
            if step >= len(self.steps):
                return None
            users = self.steps[step]
            return users, float(users)

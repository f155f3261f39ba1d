"""The Grafana dashboard (deploy/grafana/tabserve.json): every query run by a real Prometheus that scrapes a
real server under traffic, and every panel showing that server's series."""

from __future__ import annotations

import contextlib
import itertools
import json
import math
import re
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from loadtest.servers import free_port, server_process
from tests.conftest import running_server

DASHBOARD = Path(__file__).resolve().parents[1] / "deploy" / "grafana" / "tabserve.json"
WINDOW = "30s"
"""What the test gives $__rate_interval: the traffic's few seconds, scraped every second, fit in it."""


def panels() -> list[dict[str, Any]]:
    return [panel for panel in json.loads(DASHBOARD.read_text())["panels"] if panel["type"] != "row"]


def test_the_dashboard_is_laid_out_on_grafanas_grid_with_its_variables() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    variables = {variable["name"]: variable for variable in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    model = variables["model"]
    assert model["query"] == model["definition"] == "label_values(tabserve_requests_total, model)"
    titles = [panel["title"] for panel in panels()]
    assert len(titles) == len(set(titles)), "one title per panel"
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids)) and all(isinstance(number, int) for number in ids), "unique panel ids"
    taken: set[tuple[int, int]] = set()
    for panel in dashboard["panels"]:
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["x"] + grid["w"] <= 24, panel["title"]
        cells = {(grid["x"] + dx, grid["y"] + dy) for dx in range(grid["w"]) for dy in range(grid["h"])}
        assert not cells & taken, f"{panel['title']} overlaps another panel"
        taken |= cells
    for panel in panels():
        assert panel["datasource"]["uid"] == "${datasource}" and panel["description"], panel["title"]
        assert [target["refId"] for target in panel["targets"]] == [chr(65 + i) for i in range(len(panel["targets"]))]


@contextlib.contextmanager
def prometheus_scraping(target: str, folder: Path) -> Iterator[str]:
    """Debian's Prometheus on a loopback port, scraping `target` every second; yields its API's base URL."""
    binary = shutil.which("prometheus")
    assert binary, "Prometheus comes with Debian's prometheus package (scripts/system-deps.sh installs it)"
    config = folder / "prometheus.yml"
    config.write_text(
        "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
        f"scrape_configs: [{{job_name: tabserve, static_configs: [{{targets: ['{target}']}}]}}]\n"
    )
    port = free_port()
    command = [binary, f"--config.file={config}", f"--storage.tsdb.path={folder / 'data'}",
               f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"]  # fmt: skip
    with server_process(command, f"http://127.0.0.1:{port}/-/ready", cwd=folder):
        yield f"http://127.0.0.1:{port}"


def query(api: str, expr: str) -> list[dict[str, Any]]:
    answer = httpx.get(f"{api}/api/v1/query", params={"query": expr}, timeout=10).json()
    assert answer["status"] == "success", f"{expr}: {answer}"
    return answer["data"]["result"]  # type: ignore[no-any-return]


class Traffic:
    """Clients sending what each panel is about, until stopped: new and repeated rows (batches, cache hits),
    a bad request, odd penguins (unseen, out of range, missing), explanations, and more at once than
    SERVE_MAX_IN_FLIGHT lets through (rejections)."""

    def __init__(self, url: str, clients: int = 6) -> None:
        self.url = url
        self.stopping = threading.Event()
        self.threads = [threading.Thread(target=self._send, args=(index,), daemon=True) for index in range(clients)]

    def __enter__(self) -> Traffic:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stopping.set()
        for thread in self.threads:
            thread.join(timeout=15)

    def _send(self, index: int) -> None:
        penguin = {"island": "Dream", "bill_length_mm": 45.1, "bill_depth_mm": 17.0, "flipper_length_mm": 200.0,
                   "body_mass_g": 3800.0, "sex": "female"}  # fmt: skip
        odd = [{**penguin, "island": "Atlantis"}, {**penguin, "bill_length_mm": 99.0}, {**penguin, "sex": None}]
        age = {"name": "age", "datatype": "FP32", "shape": [1, 1], "data": [35 + index]}
        requests = [
            ("/predict", {"age": 35}),  # the same every time: cache hits
            ("/predict", {"age": "thirty-five"}),  # a 400
            ("/v1/models/penguins:predict", {"instances": [penguin, *odd]}),
            ("/v2/models/age-weight/explain", {"inputs": [age]}),
        ]
        with httpx.Client(base_url=self.url, timeout=10) as client:
            for sent in itertools.count():
                if self.stopping.is_set():
                    return
                client.post("/predict", json={"age": 20 + sent % 1000 + index / 10})  # new rows: batches run
                for path, body in requests:
                    client.post(path, json=body)


@pytest.mark.slow
def test_every_dashboard_query_runs_on_prometheus_and_shows_the_servers_series(model_dir: Path, tmp_path: Path) -> None:
    env = {"SERVE_MAX_IN_FLIGHT": "2", "SERVE_CACHE_MAX_ENTRIES": "64"}
    with running_server(model_dir, env) as url, prometheus_scraping(url.removeprefix("http://"), tmp_path) as api:
        with Traffic(url):
            deadline = time.monotonic() + 30
            # A rate needs two scrapes of a moving counter; rejections need a moment of crowding.
            while not (query(api, "count_over_time(tabserve_requests_total[1m]) >= 3")
                       and query(api, "tabserve_rejected_requests_total")):  # fmt: skip
                assert time.monotonic() < deadline, "Prometheus saw no traffic or no rejection in 30 s"
                time.sleep(0.5)
            time.sleep(1)
        # The model selector lists the values of a label that the server's series carry.
        variable = json.loads(DASHBOARD.read_text())["templating"]["list"][1]["query"]
        source = re.fullmatch(r"label_values\((\w+), (\w+)\)", variable)
        assert source and query(api, f"count by ({source[2]}) ({source[1]})"), variable
        for panel in panels():
            for target in panel["targets"]:
                expr = target["expr"].replace("$__rate_interval", WINDOW).replace("$model", ".+")
                series = query(api, expr)
                shown = [item for item in series if math.isfinite(float(item["value"][1]))]
                assert shown, f"{panel['title']}: {expr} shows nothing ({series})"
                # The legend names series by labels the query keeps.
                for label in re.findall(r"\{\{(\w+)\}\}", target["legendFormat"]):
                    assert all(label in item["metric"] for item in shown), (panel["title"], label, shown[0]["metric"])

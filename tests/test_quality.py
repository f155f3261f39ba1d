"""Input quality and drift: exact counts through every way in, PSI by hand, workers, cards without a reference."""

from __future__ import annotations

import json
import math
import shutil
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import tritonclient.http as triton

from contract import find_bin
from tests.conftest import read_card, running_server

PENGUIN_FLOATS = ["bill_length_mm", "bill_depth_mm", "flipper_length_mm", "body_mass_g"]


@pytest.fixture(scope="module")
def repository(model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("quality-models")
    for name in ("age-weight", "penguins"):
        shutil.copytree(model_dir / name, out / name)
    return out


def known_rows(card: dict[str, Any]) -> list[dict[str, Any]]:
    """Penguin rows whose every quality flag is known: in range, below and above the range, missing, unseen."""
    features = {feature["name"]: feature for feature in card["features"]}
    low, high = features["bill_length_mm"]["minimum"], features["bill_length_mm"]["maximum"]
    middle = {name: (features[name]["minimum"] + features[name]["maximum"]) / 2 for name in PENGUIN_FLOATS}
    return [
        {**middle, "island": "Dream", "sex": "female"},
        {**middle, "bill_length_mm": low - 1, "island": "Biscoe", "sex": "male"},
        {**middle, "bill_length_mm": high + 1, "island": "Torgersen", "sex": "male"},
        {**middle, "bill_length_mm": None, "island": "Atlantis", "sex": ""},
        {**middle, "bill_depth_mm": None, "island": "", "sex": "unknown"},
        {**middle, "island": "Dream", "sex": "missing"},  # the imputer's fill value: the graph knows it, the card not
    ]


def expected_counts(card: dict[str, Any], rows: list[dict[str, Any]]) -> dict[tuple[str, ...], int]:
    """Every counter the rows should move, worked out from the card alone."""
    features = {feature["name"]: feature for feature in card["features"]}
    reference = card["monitoring"]["features"]
    counts: Counter[tuple[str, ...]] = Counter()
    for row in rows:
        for name, feature in features.items():
            value = row.get(name)
            counts[("values", name)] += 1
            if feature["kind"] == "categorical":
                if value in (None, ""):
                    counts[("missing", name)] += 1
                elif value not in feature["categories"]:
                    counts[("unseen", name)] += 1
                    counts[("bin", name, "(unseen)")] += 1
                else:
                    counts[("bin", name, value)] += 1
            elif value is None:
                counts[("missing", name)] += 1
            else:
                stored = float(np.float32(value))
                counts[("low", name)] += stored < feature["minimum"]
                counts[("high", name)] += stored > feature["maximum"]
                counts[("bin", name, str(find_bin(reference[name]["edges"], stored)))] += 1
    return {key: count for key, count in counts.items() if count}


def metric_counts(base: str, model: str) -> dict[tuple[str, ...], int]:
    names = {"tabserve_feature_values_total": "values", "tabserve_feature_missing_total": "missing",
             "tabserve_feature_unseen_category_total": "unseen", "tabserve_feature_bin_total": "bin"}  # fmt: skip
    counts: dict[tuple[str, ...], int] = {}
    for line in httpx.get(f"{base}/metrics").text.splitlines():
        if not line.startswith("tabserve_feature_") or f'model="{model}"' not in line:
            continue
        name, rest = line.split("{", 1)
        labels = dict(part.split("=", 1) for part in rest.rsplit("}", 1)[0].replace('"', "").split(","))
        value = int(float(line.rsplit(" ", 1)[1]))
        if name == "tabserve_feature_out_of_range_total" and value:
            counts[(labels["side"], labels["feature"])] = value
        elif name in names and value:
            key = (names[name], labels["feature"], *([labels["bin"]] if name == "tabserve_feature_bin_total" else []))
            counts[key] = value
    return counts


def v2_json(rows: list[dict[str, Any]], card: dict[str, Any]) -> dict[str, Any]:
    inputs = []
    for feature in card["features"]:
        name, datatype = feature["name"], feature["datatype"]
        inputs.append({"name": name, "datatype": datatype, "shape": [len(rows), 1],
                       "data": [row.get(name, "" if datatype == "BYTES" else None) for row in rows]})  # fmt: skip
    return {"inputs": inputs}


def v2_binary(client: triton.InferenceServerClient, rows: list[dict[str, Any]], card: dict[str, Any]) -> None:
    inputs = []
    for feature in card["features"]:
        name, datatype = feature["name"], feature["datatype"]
        if datatype == "BYTES":
            array = np.array([[row.get(name) or ""] for row in rows], dtype=object)
        else:
            array = np.array([[math.nan if row.get(name) is None else row[name]] for row in rows], dtype=np.float32)
        item = triton.InferInput(name, list(array.shape), datatype)
        item.set_data_from_numpy(array, binary_data=True)
        inputs.append(item)
    client.infer("penguins", inputs)


def test_every_row_counts_exactly_through_json_binary_records_and_the_cache_from_many_clients(
    repository: Path, tmp_path: Path
) -> None:
    card = read_card(repository, "penguins")
    rows = known_rows(card)
    many = rows * 8  # a batch this large is counted off the model's taps, the small ones by value
    senders: list[Callable[[str], object]] = [
        lambda base: httpx.post(f"{base}/v1/models/penguins:predict", json={"instances": rows}).raise_for_status(),
        lambda base: httpx.post(f"{base}/v2/models/penguins/infer", json=v2_json(many, card)).raise_for_status(),
        lambda base: v2_binary(triton.InferenceServerClient(base.removeprefix("http://")), rows, card),
        # One row per request, so that concurrent requests share batches.
        lambda base: [httpx.post(f"{base}/v1/models/penguins:predict", json=row).raise_for_status() for row in rows],
    ]
    repeats = 6
    log = tmp_path / "server.log"
    with running_server(repository, {"SERVE_CACHE_MAX_ENTRIES": "64"}, log_path=log) as base:
        threads = [threading.Thread(target=lambda send=send: [send(base) for _ in range(repeats)])
                   for send in senders for _ in range(3)]  # fmt: skip
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        sent = (len(senders) - 1 + len(many) // len(rows)) * 3 * repeats  # how often each row was sent
        want = {key: count * sent for key, count in expected_counts(card, rows).items()}
        assert metric_counts(base, "penguins") == want
        quality = httpx.get(f"{base}/v2/models/penguins/quality").json()
        hits = httpx.get(f"{base}/metrics").text
    assert 'tabserve_cache_lookups_total{result="hit"}' in hits, "repeats were answered from the cache and counted"
    assert "monitoring counts island, sex off the model's taps" in log.read_text()
    by_name = {feature["name"]: feature for feature in quality["features"]}
    for name, feature in by_name.items():
        assert feature["values"] == want[("values", name)]
        assert feature["missing"] == want.get(("missing", name), 0)
        assert feature["counts"] == [want.get(("bin", name, label), 0) for label in feature["bins"]]
        assert sum(feature["window"]) == min(sum(feature["counts"]), quality["window_rows"])
    assert by_name["island"]["unseen_category"] == want[("unseen", "island")]
    assert by_name["bill_length_mm"]["out_of_range"] == {"low": want[("low", "bill_length_mm")],
                                                          "high": want[("high", "bill_length_mm")]}  # fmt: skip
    assert sum(quality["prediction"]["counts"]) == len(rows) * sent


def test_psi_matches_a_hand_computation_and_a_shifted_feature_alerts(repository: Path) -> None:
    card = read_card(repository, "penguins")
    reference = card["monitoring"]["features"]["bill_length_mm"]
    edges, expected = reference["edges"], np.array(reference["shares"])
    generator = np.random.default_rng(5)
    shifted = (generator.normal(58.0, 1.0, size=400)).astype(np.float32)  # near the top of the training range
    rows = [{"bill_length_mm": float(value), "island": "Dream"} for value in shifted]
    with running_server(repository, {"SERVE_QUALITY_WINDOW_ROWS": "300"}) as base:
        for start in range(0, len(rows), 50):
            httpx.post(
                f"{base}/v1/models/penguins:predict", json={"instances": rows[start : start + 50]}
            ).raise_for_status()
        quality = httpx.get(f"{base}/v2/models/penguins/quality").json()
        metrics = httpx.get(f"{base}/metrics").text
    window = shifted[-300:]  # the window keeps the most recent rows
    actual = np.bincount([find_bin(edges, float(value)) for value in window], minlength=len(expected)) / len(window)
    a, e = np.maximum(actual, 1e-4), np.maximum(expected, 1e-4)
    by_hand = float(np.sum((a - e) * np.log(a / e)))
    feature = next(item for item in quality["features"] if item["name"] == "bill_length_mm")
    assert feature["psi"] == pytest.approx(by_hand, rel=1e-9)
    assert feature["status"] == "alert" and by_hand >= 0.25
    gauge = 'tabserve_feature_psi{feature="bill_length_mm",model="penguins",version="1"} '
    (exported,) = [float(line.removeprefix(gauge)) for line in metrics.splitlines() if line.startswith(gauge)]
    assert exported == pytest.approx(by_hand, rel=1e-9)
    island = next(item for item in quality["features"] if item["name"] == "island")
    assert island["status"] == "alert", "every row says Dream: the island mix moved too"
    assert quality["prediction"]["psi"] is not None


def test_several_workers_count_every_row_and_share_one_window(repository: Path) -> None:
    """Both workers' rows are counted and their windows summed; once a worker is killed, its counts stay
    but its window leaves the sum (the supervisor drops a dead worker's live gauges)."""
    import os
    import signal

    card = read_card(repository, "penguins")
    rows = known_rows(card)
    present = sum(1 for row in rows if row["island"])

    def island(base: str) -> dict[str, Any]:
        quality = httpx.get(f"{base}/v2/models/penguins/quality").json()
        found: dict[str, Any] = next(item for item in quality["features"] if item["name"] == "island")
        return found

    # The access log gives every answer a request id that starts with its worker's pid, in hex.
    with running_server(repository, {"SERVE_WORKERS": "2", "SERVE_ACCESS_LOG": "true"}) as base:
        answered: Counter[int] = Counter()  # worker pid -> requests it answered
        with httpx.Client() as client:  # new connections spread over both workers, as the kernel hands them
            while sum(answered.values()) < 40 or (len(answered) < 2 and sum(answered.values()) < 200):
                response = client.post(f"{base}/v1/models/penguins:predict", json={"instances": rows},
                                       headers={"connection": "close"})  # fmt: skip
                response.raise_for_status()
                answered[int(response.headers["x-request-id"].split("-")[0], 16)] += 1
        assert len(answered) == 2, answered
        sent = sum(answered.values())
        want = {key: count * sent for key, count in expected_counts(card, rows).items()}
        give_up = time.monotonic() + 15  # each worker counts its pending rows within a second
        while metric_counts(base, "penguins") != want:
            assert time.monotonic() < give_up, metric_counts(base, "penguins")
            time.sleep(0.2)
        both = island(base)
        assert sum(both["window"]) == sum(both["counts"]) == sent * present, "both workers' windows, summed"
        assert both["psi"] is not None
        killed, survivor = answered
        os.kill(killed, signal.SIGKILL)
        give_up = time.monotonic() + 15  # the supervisor notices within a second or so and starts another
        while sum(island(base)["window"]) != answered[survivor] * present:
            assert time.monotonic() < give_up, (island(base)["window"], answered)
            time.sleep(0.2)
        assert metric_counts(base, "penguins") == want, "a dead worker's counts stay"


def test_a_card_without_a_reference_still_counts_and_says_why_there_is_no_psi(repository: Path, tmp_path: Path) -> None:
    shutil.copytree(repository / "age-weight", tmp_path / "age-weight")
    card_path = tmp_path / "age-weight" / "1" / "model.json"
    card = json.loads(card_path.read_text())
    del card["monitoring"]
    card_path.write_text(json.dumps(card))
    with running_server(tmp_path) as base:
        for age in (10, 20, 30, 1000):
            httpx.post(f"{base}/predict", json={"age": age}).raise_for_status()
        quality = httpx.get(f"{base}/v2/models/age-weight/quality").json()
    (age,) = quality["features"]
    assert age["values"] == 4 and age["out_of_range"]["high"] == 1
    assert age["status"] == "unknown" and "no training reference" in age["reason"]


def test_per_row_flags_are_returned_only_when_asked_and_an_unload_leaves_every_row_counted(repository: Path) -> None:
    card = read_card(repository, "penguins")
    rows = known_rows(card)
    with running_server(repository) as base:
        plain = httpx.post(f"{base}/v1/models/penguins:predict", json={"instances": rows}).json()
        flagged = httpx.post(f"{base}/v1/models/penguins:predict?quality=true", json={"instances": rows}).json()
        v2 = httpx.post(
            f"{base}/v2/models/penguins/infer", json={**v2_json(rows, card), "parameters": {"quality": True}}
        )
        bad = httpx.post(f"{base}/v1/models/penguins:predict?quality=maybe", json={"instances": rows})
        off = httpx.post(f"{base}/v2/models/penguins/infer", json=v2_json(rows, card)).json()
        # One process exports its figures when they are read, so an unload is these rows' last chance.
        httpx.post(f"{base}/v2/repository/models/penguins/unload").raise_for_status()
        counted = metric_counts(base, "penguins")
    assert counted == {key: 4 * count for key, count in expected_counts(card, rows).items()}
    assert "quality" not in plain["predictions"][0] and "parameters" not in off
    flags = [prediction["quality"] for prediction in flagged["predictions"]]
    assert flags == v2.json()["parameters"]["quality"]
    assert flags[0] == {"missing": [], "out_of_range": [], "unseen": []}
    assert flags[1]["out_of_range"] == ["bill_length_mm"] and flags[2]["out_of_range"] == ["bill_length_mm"]
    assert flags[3] == {"missing": ["bill_length_mm", "sex"], "out_of_range": [], "unseen": ["island"]}
    assert flags[4] == {"missing": ["island", "bill_depth_mm"], "out_of_range": [], "unseen": ["sex"]}
    assert bad.status_code == 400 and "quality must be true or false" in bad.json()["error"]


def test_the_alerting_rules_parse_and_name_only_metrics_and_labels_the_server_exports(repository: Path) -> None:
    """promtool checks the rules and runs their unit tests (they fire on the series they are for, not on
    healthy ones); then every expression is held to what a real server exports, names and labels."""
    import re
    import subprocess

    import yaml

    folder = Path(__file__).resolve().parents[1] / "deploy" / "prometheus"
    rules_file = folder / "tabserve-alerts.yml"
    promtool = shutil.which("promtool")
    assert promtool, "promtool comes with Debian's prometheus package (scripts/system-deps.sh installs it)"
    for command in (["check", "rules", rules_file.name], ["test", "rules", "tabserve-alerts.test.yml"]):
        done = subprocess.run([promtool, *command], cwd=folder, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stdout + done.stderr
    (group,) = yaml.safe_load(rules_file.read_text())["groups"]
    with running_server(repository) as base:
        httpx.post(f"{base}/predict", json={"age": 35}).raise_for_status()
        httpx.post(f"{base}/v1/models/penguins:predict", json={"island": "Atlantis", "bill_length_mm": 99.0})
        exposed = httpx.get(f"{base}/metrics").text
    families = {line.split()[2]: line.split()[3] for line in exposed.splitlines() if line.startswith("# TYPE ")}
    labelled = {name: set(re.findall(r"(\w+)=", line)) for line in exposed.splitlines()
                if not line.startswith("#") and (name := line.split("{")[0]) and "{" in line}  # fmt: skip
    alerts = [rule["alert"] for rule in group["rules"]]
    assert {"TabserveUnseenCategories", "TabserveFeatureDrift", "TabservePredictionDrift"} <= set(alerts)
    for rule in group["rules"]:
        assert re.fullmatch(r"\d+[smh]", rule["for"]), rule["for"]
        assert rule["labels"]["severity"] in ("warning", "critical") and rule["annotations"]["summary"]
        assert rule["expr"].count("(") == rule["expr"].count(")"), rule["expr"]
        for metric in re.findall(r"\btabserve_\w+", rule["expr"]):
            assert metric in families or metric.removesuffix("_total") in families, f"{rule['alert']}: no {metric}"
            if metric in labelled:
                grouped = {label.strip() for clause in re.findall(r"by \(([^)]*)\)", rule["expr"])
                           for label in clause.split(",")}  # fmt: skip
                assert grouped <= labelled[metric], (rule["alert"], grouped, labelled[metric])
    psi = re.search(r"tabserve_feature_psi\) > ([\d.]+)", group["rules"][alerts.index("TabserveFeatureDrift")]["expr"])
    assert psi and float(psi.group(1)) == 0.25, "the alert fires where /quality says alert"


def test_a_tally_counts_like_a_value_by_value_reference_whatever_shape_its_parts_arrive_in() -> None:
    """The vectorised paths (every cut compared with every value at once, one concatenation of the batcher's
    arrays, categories through a dict with a default, the window's chunks) against the binning rule applied
    to one value at a time."""
    from serve.quality import _joined
    from serve.watched import Tally

    generator = np.random.default_rng(7)
    edges = np.array([2.0, 4.0, 6.0, 8.0], dtype=np.float32)
    numeric = Tally("x", "numeric", 1.0, 9.0, (), edges.astype(np.float64), np.full(5, 0.2), window_rows=50)
    values = generator.uniform(-2, 12, 380).astype(np.float32)
    values[::7] = np.nan
    values[5] = 9.0  # the range's ends are in range
    values[6] = 1.0
    parts: list[Any] = [values[:100].reshape(-1, 1), values[100:200].reshape(-1, 1)]
    numeric.count(_joined(parts, "numeric"))
    numeric.count(_joined([values[200:210].astype(np.float64).tolist(), values[210:230].reshape(-1, 1)], "numeric"))
    # The window (50 rows) after every part: chunks of 1 to 60 rows, small ones joined, old ones dropped.
    for start, end in [(230, 231), (231, 232), (232, 260), (260, 300), (300, 303), (303, 320), (320, 380)]:
        numeric.count(_joined([values[start:end].reshape(-1, 1)], "numeric"))
        recent = values[:end][-50:]
        recent_bins = Counter(find_bin(edges.tolist(), value) for value in recent[~np.isnan(recent)].tolist())
        assert numeric.window().tolist() == [recent_bins[index] for index in range(5)], end
    finite = values[~np.isnan(values)].astype(np.float64)
    assert (numeric.values, numeric.missing) == (380, int(np.isnan(values).sum()))
    assert (numeric.low, numeric.high) == (int((finite < 1.0).sum()), int((finite > 9.0).sum()))
    want = Counter(min(max(find_bin(edges.tolist(), value), 0), 4) for value in finite.tolist())
    assert numeric.bins.tolist() == [want[index] for index in range(5)]

    categorical = Tally("c", "categorical", None, None, ("a", "b"), None, None, window_rows=4)
    categorical.count(_joined([np.array([["a"], ["b"]], dtype=object), np.array([["zz"], [""]], dtype=object)],
                              "categorical"))  # fmt: skip
    categorical.count(_joined([["a", None, "b"], np.array(["a", "q"])], "categorical"))
    assert (categorical.values, categorical.missing, categorical.unseen) == (9, 1, 3)
    assert categorical.bins.tolist() == [3, 2, 3]
    assert categorical.window().tolist() == [1, 1, 2]  # the last 4: None (unseen), "b", "a", "q" (unseen)

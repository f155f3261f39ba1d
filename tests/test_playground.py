"""The playground page in real headless Chromium (Debian's), driven by Playwright against a real server."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import running_server

pytestmark = pytest.mark.slow
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# The closed network makes Chromium retry background connections; these flags stop it trying.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--disable-quic"]  # fmt: skip
PENGUIN = {"island": "Dream", "bill_length_mm": 45.1, "bill_depth_mm": 17.0, "flipper_length_mm": 200.0,
           "body_mass_g": 3800.0, "sex": "female"}  # fmt: skip


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not Path(CHROMIUM).exists():
        # Never a silent skip: `make test` installs chromium; a machine without it fails here, loudly.
        pytest.fail(f"Chromium not found at {CHROMIUM}: apt-get install chromium (make test does this as root)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser: Any, tmp_path: Path) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    page = context.new_page()
    yield page
    context.close()


def fill_penguin(page: Any) -> None:
    page.locator("#models button[data-model='penguins']").click()
    page.wait_for_selector("#fields select[name='island']")
    for name, value in PENGUIN.items():
        control = page.locator(f"#fields [name='{name}']")
        if isinstance(value, str):
            control.select_option(value)
        else:
            control.fill(str(value))


def test_the_model_chosen_last_is_shown_whatever_order_the_answers_come_in(page: Any, server_url: str) -> None:
    held: list[Any] = []  # the first model's metadata, answered only after the second model is shown
    page.route("**/v2/models/age-weight/versions/1", lambda route: held.append(route))
    page.goto(server_url + "/")
    page.wait_for_selector("#models button[data-model='penguins']")
    page.wait_for_function(
        "document.querySelector(\"#models button[data-model='age-weight']\").classList.contains('selected')"
    )
    page.locator("#models button[data-model='penguins']").click()
    page.wait_for_selector("#fields select[name='island']")
    assert len(held) == 1, "the page opened on age-weight, whose answer is held"
    with page.expect_response("**/v2/models/age-weight/versions/1"):
        held[0].continue_()
    page.wait_for_timeout(300)  # the late answer's handler runs, and must give way
    assert page.locator("#model-title").inner_text() == "penguins v1"
    assert page.locator("#fields select[name='island']").count() == 1


def test_predicting_in_the_page_shows_what_the_api_answers(page: Any, server_url: str, tmp_path: Path) -> None:
    page.goto(server_url + "/")
    page.wait_for_selector("#models button[data-model='penguins']")
    # The page opens on the first model, not on an empty panel.
    first = page.locator("#models button").first
    page.wait_for_selector("#model-panel:not([hidden])")
    assert (
        page.locator("#model-title").inner_text()
        == f"{first.get_attribute('data-model')} v{first.get_attribute('data-version')}"
    )
    assert "selected" in (first.get_attribute("class") or "")
    fill_penguin(page)
    card = page.locator("#model-card").inner_text()
    assert "parity probabilities" in card and "CV accuracy" in card
    page.locator("#predict").click()
    page.wait_for_selector("#prediction:not([hidden])")
    api = httpx.post(f"{server_url}/v1/models/penguins:predict", json={"instances": [PENGUIN]}).json()["predictions"][0]
    assert page.locator("#prediction-value").inner_text() == api["label"]
    for name, probability in api["probabilities"].items():
        shown = page.locator(f".bar[data-class='{name}'] span").last.inner_text()
        assert shown == f"{probability * 100:.1f} %"
    assert "ms round trip" in page.locator("#latency").inner_text()
    # The live panel turns /metrics into a request rate once it has two scrapes around some traffic.
    for _ in range(5):
        page.locator("#predict").click()
    page.wait_for_function("Number(document.getElementById('live-rps').textContent) > 0", timeout=10_000)
    shot = tmp_path / "playground.png"  # for a person to look at (pytest keeps recent tmp dirs); never the repo
    page.screenshot(path=str(shot), full_page=True)
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_each_prediction_shows_its_signed_contributions_and_the_card_its_global_importance(
    page: Any, server_url: str, tmp_path: Path
) -> None:
    page.goto(server_url + "/")
    page.wait_for_selector("#models button[data-model='penguins']")
    fill_penguin(page)
    metadata = httpx.get(f"{server_url}/v2/models/penguins").json()["parameters"]
    importance = page.locator("#importance .bar")
    assert importance.count() == len(metadata["importance"]["columns"]) == len(PENGUIN)
    first = metadata["importance"]["columns"][0]
    assert importance.first.get_attribute("data-column") == first["column"]
    page.locator("#predict").click()
    page.wait_for_selector("#why:not([hidden])")
    label = page.locator("#prediction-value").inner_text()
    api = httpx.post(f"{server_url}/v1/models/penguins:explain", json={"instances": [PENGUIN]}).json()
    index = api["outputs"].index(label)
    assert page.locator("#why-output").inner_text() == f"on {label}"
    for column, values in api["values"][0].items():
        bar = page.locator(f"#contributions .bar[data-column='{column}']")
        value = values[index]
        shown = bar.locator("span").last.inner_text()
        assert shown.startswith("+" if value >= 0 else "-"), (column, shown, value)
        assert abs(float(shown) - value) <= 0.001 + 0.001 * abs(value), (column, shown, value)
        # Pushes up are drawn right of the middle line, pushes down left of it.
        assert ("down" in (bar.locator(".fill").get_attribute("class") or "")) == (value < 0)
    # The largest push is listed first, and the note states the additivity the bars add up to.
    shown_columns = [
        page.locator("#contributions .bar").nth(i).get_attribute("data-column") for i in range(len(PENGUIN))
    ]
    assert shown_columns[0] == max(api["values"][0], key=lambda column: abs(api["values"][0][column][index]))
    assert "exact" in page.locator("#why-note").inner_text()
    page.screenshot(path=str(tmp_path / "explain.png"), full_page=True)


def test_the_quality_panel_shows_each_features_status_and_recent_values_against_training(
    page: Any, model_dir: Path
) -> None:
    with running_server(model_dir, {"SERVE_QUALITY_WINDOW_ROWS": "200"}) as url:
        shifted = [{**PENGUIN, "bill_length_mm": 58.5 + (i % 5) * 0.1} for i in range(300)]
        httpx.post(f"{url}/v1/models/penguins:predict", json={"instances": shifted}).raise_for_status()
        page.goto(url + "/")
        page.locator("#models button[data-model='penguins']").click()
        row = page.locator("#quality tr[data-feature='bill_length_mm']")
        row.locator(".status.alert").wait_for()
        report = httpx.get(f"{url}/v2/models/penguins/quality").json()
        for feature in report["features"]:
            shown = page.locator(f"#quality tr[data-feature='{feature['name']}'] td")
            assert shown.nth(1).inner_text() == feature["status"], feature["name"]
            if feature["psi"] is not None:
                assert float(shown.nth(2).inner_text()) == pytest.approx(feature["psi"], rel=0.01)
            assert shown.nth(4).inner_text() == f"{feature['missing']} of {feature['values']}"
        # The histogram is drawn: the recent window (all in the top bins) as filled bars.
        drawn = row.locator("canvas").evaluate(
            "c => Array.from(c.getContext('2d').getImageData(0, 0, c.width, c.height).data).some(v => v > 0)"
        )
        assert drawn


def test_the_page_shows_a_server_error_as_the_server_worded_it(page: Any, server_url: str) -> None:
    page.goto(server_url + "/")
    page.locator("#models button[data-model='age-weight']").click()
    page.wait_for_selector("#fields input[name='age']")
    page.locator("#fields input[name='age']").fill("")
    page.locator("#predict").click()
    page.wait_for_selector("#error:not([hidden])")
    api = httpx.post(f"{server_url}/v1/models/age-weight:predict", json={"instances": [{}]}).json()["error"]
    assert page.locator("#error").inner_text() == api


def test_with_api_keys_on_the_page_works_once_a_key_is_entered(page: Any, model_dir: Path) -> None:
    with running_server(model_dir, {"SERVE_API_KEYS": "s3cret-key"}) as url:
        page.goto(url + "/")
        page.wait_for_selector("#models-error:not([hidden])")
        assert "missing API key" in page.locator("#models-error").inner_text()
        page.locator("#api-key").fill("s3cret-key")
        page.locator("#api-key").dispatch_event("change")
        page.wait_for_selector("#models button[data-model='penguins']")
        fill_penguin(page)
        page.locator("#predict").click()
        page.wait_for_selector("#prediction:not([hidden])")
        assert page.evaluate("sessionStorage.getItem('tabserve-api-key')") == "s3cret-key"
        assert page.evaluate("localStorage.length") == 0
        assert page.locator("#prediction-value").inner_text() in {"Adelie", "Chinstrap", "Gentoo"}


def test_every_asset_is_served_by_tabserve_itself(server_url: str) -> None:
    html = httpx.get(server_url + "/").text
    assert "http://" not in html and "https://" not in html
    for asset in ("/static/playground.js", "/static/playground.css"):
        response = httpx.get(server_url + asset)
        assert response.status_code == 200 and "http://" not in response.text and "https://" not in response.text

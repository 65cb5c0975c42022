"""The web studio in headless Chromium (Debian's ``chromium`` driven by Playwright): compose,
see the roll, select two bars and regenerate them, undo, download the MIDI, see an error.

Set ``MIDILM_STUDIO_SCREENSHOT=docs/images/studio.png`` to refresh the README's picture.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import requests

import midilm
from midilm.server import ServerLimits, create_app
from server_helpers import serving, tiny_model_dir, wait_until

pytestmark = pytest.mark.slow

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
if CHROMIUM is None and not os.environ.get("CI"):
    pytest.skip("needs Debian's chromium (apt-get install chromium)", allow_module_level=True)

sync_api = pytest.importorskip("playwright.sync_api")


@pytest.fixture(scope="module")
def server(tmp_path_factory, bach_scores):
    model = midilm.load_model(tiny_model_dir(tmp_path_factory, bach_scores), device="cpu")
    with serving(create_app({"tiny": model}, limits=ServerLimits(workers=1))) as live:
        yield live.url


@pytest.fixture(scope="module")
def browser():
    assert CHROMIUM, "chromium is not installed"
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--autoplay-policy=no-user-gesture-required"],
        )
        yield browser
        browser.close()


@pytest.fixture
def page(browser, server):
    context = browser.new_context(viewport={"width": 1360, "height": 820}, accept_downloads=True)
    page = context.new_page()
    problems: list[str] = []
    page.on("pageerror", lambda err: problems.append(f"page error: {err}"))
    page.on("dialog", lambda dialog: problems.append(f"dialog: {dialog.message}"))
    page.goto(server + "/")
    page.wait_for_selector("#server-status.ok")
    yield page
    context.close()
    assert problems == []


def _result(response) -> dict:
    """The score of a task's server-sent events (its ``result`` event)."""
    assert response.ok
    events = response.text().split("\n\n")
    for event in events:
        lines = event.split("\n")
        if lines[0] == "event: result":
            return json.loads(lines[1].removeprefix("data: "))["scores"][0]
    raise AssertionError(f"no result event in {events}")


def _notes(track: dict) -> list[tuple]:
    return sorted(tuple(n) for n in track["notes"])


def _studio_score(page) -> dict:
    return page.evaluate("JSON.parse(JSON.stringify(window.midilmStudio.score))")


def test_compose_select_regenerate_undo_download(page, tmp_path):
    roll = page.locator("#roll")
    assert roll.get_attribute("data-notes") == "0"
    assert page.locator("#empty").is_visible()

    page.fill("#bars", "4")
    page.fill("#seed", "1")
    with page.expect_response(lambda r: r.url.endswith("/generate")) as answer:
        page.click("#generate")
    composed = _result(answer.value)
    page.wait_for_function("Number(document.querySelector('#roll').dataset.notes) > 0")
    assert not page.locator("#empty").is_visible()
    assert int(roll.get_attribute("data-notes")) == sum(len(t["notes"]) for t in composed["tracks"])
    assert int(roll.get_attribute("data-bars")) == len(composed["bars"])
    assert roll.get_attribute("data-tracks") == "2"
    painted = page.evaluate(
        """() => {
            const c = document.querySelector('#roll');
            const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
            let n = 0;
            for (let i = 0; i < d.length; i += 4) {
                if (d[i] > 200 && d[i + 1] > 120 && d[i + 2] < 100) n++;
            }
            return n;  // pixels in the first track's amber
        }"""
    )
    assert painted > 50

    # drag across bars 2 and 3 of track 1
    bars = composed["bars"]
    total = bars[-1]["start"] + bars[-1]["length"]
    box = roll.bounding_box()
    y = box["y"] + 26 + 40  # below the ruler, inside the first lane
    x2 = box["x"] + box["width"] * (bars[1]["start"] + bars[1]["length"] / 2) / total
    x3 = box["x"] + box["width"] * (bars[2]["start"] + bars[2]["length"] / 2) / total
    page.mouse.move(x2, y)
    page.mouse.down()
    page.mouse.move(x3, y, steps=4)
    page.mouse.up()
    assert "Track 1" in page.inner_text("#selection-text")
    assert "bars 2–3" in page.inner_text("#selection-text")

    with page.expect_response(lambda r: r.url.endswith("/infill")) as answer:
        page.click("#regenerate")
    request = json.loads(answer.value.request.post_data)
    assert (request["track"], request["bars"]) == (1, [2, 3])
    rewritten = _result(answer.value)
    page.wait_for_function("!document.body.dataset.busy")
    start, stop = bars[1]["start"], bars[2]["start"] + bars[2]["length"]

    def outside(track):
        return [n for n in _notes(track) if not start <= n[0] < stop]

    assert outside(rewritten["tracks"][0]) == outside(composed["tracks"][0])
    assert _notes(rewritten["tracks"][1]) == _notes(composed["tracks"][1])
    assert _studio_score(page)["tracks"] == rewritten["tracks"]

    page.click("#undo")
    assert _studio_score(page)["tracks"] == composed["tracks"]
    page.click("#redo")
    assert _studio_score(page)["tracks"] == rewritten["tracks"]

    with page.expect_download() as download:
        page.click("#download")
    saved = tmp_path / "studio.mid"
    download.value.save_as(saved)
    score = midilm.load_midi(saved)
    assert [
        sorted(
            zip(*(t.notes.numpy()[k].tolist() for k in ("time", "duration", "pitch")), strict=True)
        )
        for t in score.tracks
    ] == [sorted((n[0], n[1], n[2]) for n in t["notes"]) for t in rewritten["tracks"]]

    page.screenshot(path=str(tmp_path / "studio.png"))
    target = os.environ.get("MIDILM_STUDIO_SCREENSHOT")
    if target:
        Path(target).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(tmp_path / "studio.png", target)


def test_errors_are_shown_in_the_page(page, server):
    page.fill("#bars", "2")
    page.click("#generate")
    page.wait_for_function("Number(document.querySelector('#roll').dataset.notes) > 0")
    page.fill("#continue-bars", "500")
    page.click("#continue")
    error = page.locator("#error")
    error.wait_for(state="visible")
    text = page.inner_text("#error-text")
    assert "bars" in text and "64" in text and "{" not in text  # a sentence, not raw JSON
    page.click("#error-close")
    assert not error.is_visible()


def test_cancel_while_composing(page, server):
    for _ in range(2):
        page.select_option("#new-instrument", "drums")
        page.click("#add-track")
    page.fill("#bars", "64")
    page.click("#generate")
    page.wait_for_function("document.querySelector('#progress-text').textContent.includes('bar')")
    page.click("#cancel")
    page.wait_for_function("!document.body.dataset.busy")
    assert page.evaluate("window.midilmStudio.score") is None  # nothing half-written is kept
    assert not page.locator("#error").is_visible()
    assert page.locator("#empty").is_visible()

    def cancelled() -> bool:
        queue = requests.get(f"{server}/health", timeout=10).json()["queue"]
        return queue["finished"].get("cancelled", 0) >= 1 and queue["running"] == 0

    assert wait_until(cancelled, 30)


def test_play_and_stop(page):
    page.fill("#bars", "2")
    page.click("#generate")
    page.wait_for_function("Number(document.querySelector('#roll').dataset.notes) > 0")
    page.wait_for_function("!document.body.dataset.busy")
    with page.expect_response(lambda r: "/render" in r.url) as answer:
        page.click("#play")
    if answer.value.status == 503:  # no synthesizer or soundfont here: said in the page
        page.locator("#error").wait_for(state="visible")
        assert "render" in page.inner_text("#error-text")
        return
    assert answer.value.headers["content-type"] == "audio/wav"
    page.wait_for_function("!document.querySelector('#stop').disabled")
    page.wait_for_function("document.querySelector('#audio').currentTime > 0")
    page.click("#stop")
    assert page.evaluate("document.querySelector('#audio').paused")
    assert not page.locator("#error").is_visible()


def test_open_a_midi_file(page, server, bach_scores, tmp_path):
    _, chorale = bach_scores[0]
    path = tmp_path / "chorale.mid"
    midilm.save_midi(chorale, path)
    page.set_input_files("#file", str(path))
    page.wait_for_function("Number(document.querySelector('#roll').dataset.notes) > 0")
    assert int(page.locator("#roll").get_attribute("data-tracks")) == len(chorale.tracks)
    assert int(page.locator("#roll").get_attribute("data-notes")) == chorale.note_num()
    assert requests.get(f"{server}/health", timeout=10).json()["queue"]["running"] == 0

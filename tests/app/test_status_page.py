"""The status page (GET /) in headless Debian chromium, driven by playwright, against ``stacdrop serve``
with real jobs flowing: it shows the failed job's reason and its dead letter, the replay button replays
it (the ledger records the replay and the daemon runs the job again), and screenshots are saved."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import requests

from tests.support.daemon import wait_until
from tests.support.pipeline import BAD_NAME, COLLECTION, TOKEN, flowing

pytestmark = pytest.mark.e2e  # slow: daemons, servers or many rasters (the fast suite is -m 'not e2e')

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
ARTIFACTS = Path(os.environ.get("STACDROP_TEST_ARTIFACTS") or Path(__file__).parents[1] / "artifacts")


def test_status_page_shows_failures_and_replays_a_dead_letter(tmp_path: Path) -> None:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: run scripts/services.sh (installs Debian's chromium)")
    from playwright.sync_api import expect, sync_playwright

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with flowing(tmp_path) as run:
        letters = requests.get(run.api.url + "/dead-letters", timeout=30).json()["dead_letters"]
        assert [d["job_id"] for d in letters] == [run.bad.id]
        letter = letters[0]
        assert run.bad.error

        # GET /footprints: the published raster's bbox as a GeoJSON Feature (bad and collection jobs have none).
        footprints = requests.get(run.api.url + "/footprints?limit=5", timeout=30).json()
        assert footprints["type"] == "FeatureCollection"
        [feature] = footprints["features"]
        assert feature["properties"]["job_id"] == run.good.id and feature["properties"]["item_id"] == "bio1"
        assert feature["properties"]["collection"] == COLLECTION and feature["properties"]["finished_at"]
        assert feature["bbox"] == pytest.approx([-10.0, 40.0, 30.0, 60.0])
        assert feature["geometry"]["type"] == "Polygon"
        ring = [[round(v, 6) for v in point] for point in feature["geometry"]["coordinates"][0]]
        assert ring == [[-10.0, 40.0], [30.0, 40.0], [30.0, 60.0], [-10.0, 60.0], [-10.0, 40.0]]
        assert requests.get(run.api.url + "/footprints?limit=0", timeout=30).status_code == 422

        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            try:
                page = browser.new_page(viewport={"width": 1400, "height": 1100})
                errors: list[str] = []
                page.on("pageerror", lambda exc: errors.append(str(exc)))
                page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
                page.goto(run.api.url + "/")

                # Queues per stage, with the dead letter counted on the process queue.
                queues = page.locator("#queues tbody tr")
                expect(queues).to_have_count(2)
                expect(page.locator('#queues tr[data-id="process"] td').nth(4)).to_have_text("1")

                # The failure with its reason, and the file name with markup shown as text, not HTML.
                failed = page.locator(f'#failed tr[data-id="{run.bad.id}"]')
                expect(failed).to_contain_text(run.bad.error_class)
                expect(failed.locator("td.reason")).to_have_text(run.bad.error)
                expect(failed).to_contain_text(f"{COLLECTION}/{BAD_NAME}")
                assert page.locator("#failed tbody b").count() == 0

                # Recent jobs: the published raster with a duration, the failed one.
                good_row = page.locator(f'#jobs tr[data-id="{run.good.id}"]')
                expect(good_row.locator("td.state")).to_have_text("published")
                expect(good_row.locator("td").nth(8)).not_to_have_text("")
                expect(page.locator(f'#jobs tr[data-id="{run.bad.id}"] td.state')).to_have_text("failed")

                # The published item's footprint on the map (its bbox: -10..30 E, 40..60 N).
                rect = page.locator(f'#footprints rect[data-job="{run.good.id}"]')
                expect(rect).to_have_count(1)
                box = [round(float(rect.get_attribute(a))) for a in ("x", "y", "width", "height")]
                assert box == [-10, -60, 40, 20]

                # The dead letter, listed with its replay button.
                dead = page.locator(f'#dead-letters tr[data-id="{letter["id"]}"]')
                expect(dead).to_contain_text(run.bad.error_class)
                page.screenshot(path=str(ARTIFACTS / "status-page.png"), full_page=True)

                # Without the token the replay is refused on the page, and nothing moves.
                dead.locator("button.replay").click()
                expect(page.locator("#notice")).to_contain_text("Enter the API token")
                assert requests.get(run.api.url + "/dead-letters", timeout=30).json()["dead_letters"] == letters

                assert not errors, errors
                # A wrong token: the API refuses (401) and the page says so.
                page.fill("#token", "not-the-token")
                page.click("#token-form button[type=submit]")
                dead.locator("button.replay").click()
                expect(page.locator("#notice")).to_contain_text("Replay failed: 401")
                assert requests.get(run.api.url + "/dead-letters", timeout=30).json()["dead_letters"] == letters
                assert errors == ["Failed to load resource: the server responded with a status of 401 (Unauthorized)"]
                errors.clear()

                page.fill("#token", TOKEN)
                page.click("#token-form button[type=submit]")
                expect(page.locator("#notice")).to_contain_text("Token saved")
                assert page.evaluate("localStorage.getItem('stacdrop.token')") == TOKEN
                dead.locator("button.replay").click()
                expect(page.locator("#notice")).to_contain_text(f"Replayed 1 dead letter ({letter['id']})")
                page.screenshot(path=str(ARTIFACTS / "status-page-replayed.png"), full_page=True)
                assert not errors, errors
            finally:
                browser.close()

        # The ledger shows the replay, and the daemon ran the job's process stage again (the raster is
        # still bad, so it fails again and is dead-lettered again).
        def replayed_and_rerun() -> bool:
            job = run.ledger.get(run.bad.id, with_events=True)
            assert job is not None
            statuses = [(e.stage, e.status) for e in job.events]
            return ("process", "replayed") in statuses and statuses.count(("process", "started")) == 2 \
                and job.state == "failed"

        wait_until(replayed_and_rerun, 60, "the replayed job to run again", run.daemon)
        events = run.ledger.get(run.bad.id, with_events=True).events  # type: ignore[union-attr]
        replay = next(e for e in events if e.status == "replayed")
        assert letter["id"] in (replay.message or "")

"""`midilm serve` under load, in its own process: bursts of 50 concurrent requests against
a bounded queue are each answered 200 or 429 (none lost, none 500), and the server's memory
comes back to where it was."""

from __future__ import annotations

import signal
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import psutil
import pytest
import requests

import midilm
from server_helpers import free_port, tiny_model_dir, wait_until

pytestmark = pytest.mark.slow

CONCURRENT = 50
WORKERS = 2
QUEUE = 6


def _healthy(url: str) -> bool:
    try:
        return requests.get(f"{url}/health", timeout=2).status_code == 200
    except requests.ConnectionError:
        return False


def test_bursts_of_concurrent_requests(tmp_path_factory, bach_scores):
    model_dir = tiny_model_dir(tmp_path_factory, bach_scores)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command = [sys.executable, "-m", "midilm", "serve", "--model", f"tiny={model_dir}",
               "--port", str(port), "--workers", str(WORKERS), "--queue", str(QUEUE)]  # fmt: skip
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        assert wait_until(lambda: _healthy(url), 120, 0.2), "the server did not start"
        server = psutil.Process(process.pid)

        def one(seed: int) -> tuple[int, str | None, bytes]:
            answer = requests.post(
                f"{url}/generate",
                json={"bars": 2, "instruments": ["piano", "bass"], "seed": seed},
                timeout=300,
            )
            return answer.status_code, answer.headers.get("Retry-After"), answer.content

        def burst() -> list[tuple[int, str | None, bytes]]:
            with ThreadPoolExecutor(CONCURRENT) as pool:
                return list(pool.map(one, range(CONCURRENT)))

        burst()  # the first burst warms caches and the allocator up
        rss_start = server.memory_info().rss
        answers = burst() + burst()
        assert wait_until(lambda: _queue(url)["running"] == 0, 60)
        rss_end = server.memory_info().rss

        statuses = [status for status, _, _ in answers]
        assert len(answers) == 2 * CONCURRENT
        assert set(statuses) <= {200, 429}, statuses
        assert statuses.count(200) >= 2 * (WORKERS + QUEUE)  # each burst fills the queue
        for status, retry_after, content in answers:
            if status == 200:
                assert midilm.load_midi(content).tracks
            else:
                assert int(retry_after) >= 1
        finished = _queue(url)["finished"]
        assert set(finished) == {"done"}  # nothing failed, nothing was dropped
        assert _queue(url)["queued"] == 0
        grown_mb = (rss_end - rss_start) / 2**20
        print(f"RSS {rss_start / 2**20:.0f} → {rss_end / 2**20:.0f} MiB; "
              f"{statuses.count(200)} × 200, {statuses.count(429)} × 429")  # fmt: skip
        assert grown_mb < max(48.0, 0.15 * rss_start / 2**20), (rss_start, rss_end)
    finally:
        process.terminate()
        output = process.communicate(timeout=30)[0].decode(errors="replace")
    # uvicorn shuts down gracefully on SIGTERM, then ends by that signal
    assert process.returncode in (0, -signal.SIGTERM), output
    assert "Traceback" not in output, output


def _queue(url: str) -> dict:
    return requests.get(f"{url}/health", timeout=10).json()["queue"]

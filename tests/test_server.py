"""The HTTP API against the real app on loopback (uvicorn in a thread, a tiny trained model):
each endpoint's happy path, and each limit and error a client can run into."""

from __future__ import annotations

import json
import logging
import socket
import threading
import time

import numpy as np
import pytest
import requests
from click.testing import CliRunner

import midilm
from midilm.cli.main import cli
from midilm.cli.serve import is_loopback
from midilm.model.music_model import MusicModel
from midilm.score import bar_grid
from midilm.server import (
    MAX_BARS,
    MAX_CANDIDATES,
    MAX_TRACKS,
    JobCancelled,
    JobQueue,
    QueueFullError,
    ScoreJSON,
    ServerLimits,
    create_app,
    score_from_json,
    score_to_json,
)
from server_helpers import serving, sse_events, tiny_model_dir, wait_until

JSON = {"Accept": "application/json"}
SSE = {"Accept": "text/event-stream"}


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, bach_scores):
    return tiny_model_dir(tmp_path_factory, bach_scores)


@pytest.fixture(scope="module")
def model(model_dir) -> MusicModel:
    return midilm.load_model(model_dir, device="cpu")


@pytest.fixture(scope="module")
def server(model):
    app = create_app({"tiny": model}, limits=ServerLimits(workers=1, queue_size=4))
    with serving(app) as live:
        yield live.url


@pytest.fixture(scope="module")
def piece(server) -> dict:
    """A generated two-track piece of four bars, as the server's JSON score."""
    answer = requests.post(
        f"{server}/generate",
        json={"bars": 4, "instruments": ["piano", "bass"], "seed": 1},
        headers=JSON,
        timeout=60,
    )
    assert answer.status_code == 200, answer.text
    return answer.json()["scores"][0]


@pytest.fixture(scope="module")
def piece_midi(server, piece) -> bytes:
    answer = requests.post(
        f"{server}/convert", json={"score": piece}, headers={"Accept": "audio/midi"}, timeout=30
    )
    assert answer.status_code == 200
    return answer.content


def _error(answer, status: int, field: str | None = None) -> dict:
    """The error body, after checking what every error answer promises."""
    assert answer.status_code == status, answer.text
    body = answer.json()
    assert body["status"] == status
    assert body["message"] and "Traceback" not in body["message"]
    assert body["request_id"] == answer.headers["X-Request-ID"]
    if field is not None:
        assert body["field"] == field, body
    return body


def _notes(track: dict) -> list[tuple]:
    return sorted(tuple(n) for n in track["notes"])


# --------------------------------------------------------------------------- the server
def test_health_reports_models_and_queue(server):
    answer = requests.get(f"{server}/health", timeout=10)
    assert answer.status_code == 200
    body = answer.json()
    assert body["status"] == "ok" and body["models"] == ["tiny"]
    assert body["queue"]["workers"] == 1 and body["queue"]["queue_size"] == 4
    assert {"running", "queued"} <= body["queue"].keys()
    assert answer.headers["X-Request-ID"]


def test_models_and_capabilities(server, model):
    models = requests.get(f"{server}/models", timeout=10).json()
    assert models == [
        {"id": "tiny", "kind": "mmm", "default": True, "parameters": model.num_parameters}
    ]
    info = requests.get(f"{server}/models/tiny", timeout=10).json()
    assert info["id"] == "tiny" and info["kind"] == "mmm"
    for key in ("instruments", "density_bins", "meters", "max_bars", "infill"):
        assert key in info
    assert any(i["name"] == "drums" for i in info["instruments"])
    assert info["limits"]["max_bars"] == MAX_BARS and info["limits"]["max_upload_bytes"] > 0


def test_unknown_model(server):
    body = _error(requests.get(f"{server}/models/nope", timeout=10), 404)
    assert "tiny" in body["message"]
    answer = requests.post(f"{server}/generate", json={"model": "nope", "bars": 1}, timeout=10)
    _error(answer, 422, "model")


def test_request_id_is_echoed_or_made(server):
    answer = requests.get(f"{server}/health", headers={"X-Request-ID": "my-id.1"}, timeout=10)
    assert answer.headers["X-Request-ID"] == "my-id.1"
    answer = requests.get(f"{server}/health", headers={"X-Request-ID": "bad id!"}, timeout=10)
    assert answer.headers["X-Request-ID"] != "bad id!"
    _error(requests.get(f"{server}/no-such-page", timeout=10), 404)


# --------------------------------------------------------------------------- generate
def test_generate_answers_midi(server):
    answer = requests.post(
        f"{server}/generate",
        json={"bars": 4, "instruments": ["piano", "bass"], "seed": 1},
        timeout=60,
    )
    assert answer.status_code == 200, answer.text
    assert answer.headers["Content-Type"] == "audio/midi"
    score = midilm.load_midi(answer.content)
    assert [(t.program, t.is_drum) for t in score.tracks] == [(0, False), (33, False)]
    assert len(bar_grid(score)) <= 4


def test_generate_every_field_optional(server):
    answer = requests.post(f"{server}/generate", timeout=120)
    assert answer.status_code == 200, answer.text
    midilm.load_midi(answer.content)


def test_generate_with_query_parameters(server):
    answer = requests.post(f"{server}/generate?bars=2&instruments=piano,drums&seed=4", timeout=60)
    assert answer.status_code == 200, answer.text
    assert [t.is_drum for t in midilm.load_midi(answer.content).tracks] == [False, True]


def test_generate_json_candidates_are_reproducible(server):
    request = {"bars": 2, "instruments": ["piano"], "seed": 7, "num_samples": 2}
    first = requests.post(f"{server}/generate", json=request, headers=JSON, timeout=60)
    again = requests.post(f"{server}/generate", json=request, headers=JSON, timeout=60)
    assert first.status_code == 200, first.text
    body = first.json()
    assert body["model"] == "tiny" and body["job_id"] == first.headers["X-Job-ID"]
    assert len(body["scores"]) == 2
    for score in body["scores"]:
        ScoreJSON.model_validate(score)  # answers are valid requests too
        assert score["bars"] and score["ticks_per_quarter"] > 0
    assert [s["tracks"] for s in again.json()["scores"]] == [s["tracks"] for s in body["scores"]]


def test_several_candidates_need_json(server):
    answer = requests.post(f"{server}/generate", json={"bars": 1, "num_samples": 2}, timeout=10)
    assert "JSON" in _error(answer, 422, "num_samples")["message"]


@pytest.mark.parametrize(
    ("request_body", "field", "bound"),
    [
        ({"bars": 0}, "bars", "1"),
        ({"bars": MAX_BARS + 1}, "bars", str(MAX_BARS)),
        ({"num_samples": MAX_CANDIDATES + 1}, "num_samples", str(MAX_CANDIDATES)),
        ({"instruments": ["piano"] * (MAX_TRACKS + 1)}, "instruments", str(MAX_TRACKS)),
        ({"instruments": []}, "instruments", "1"),
        ({"top_p": 1.5}, "top_p", "1"),
        ({"temperature": -1}, "temperature", "0"),
        ({"density": "loud"}, "density", "low"),
        ({"meter": "four"}, "meter", "pattern"),
        ({"barz": 4}, "barz", "unknown field"),
    ],
    ids=lambda v: str(v) if not isinstance(v, dict) else "-".join(v),
)
def test_generate_bounds(server, request_body, field, bound):
    answer = requests.post(f"{server}/generate", json=request_body, timeout=10)
    body = _error(answer, 422)
    assert body["field"].startswith(field)
    assert field in body["message"] and bound in body["message"]


def test_unknown_instrument_names_close_ones(server):
    answer = requests.post(f"{server}/generate", json={"instruments": ["piano", "bas"]}, timeout=10)
    body = _error(answer, 422, "instruments.1")
    assert "bass" in body["message"]


def test_bad_json_is_400(server):
    answer = requests.post(
        f"{server}/generate", data=b"{bars: 4", headers={"Content-Type": "application/json"}
    )
    _error(answer, 400)
    answer = requests.post(f"{server}/generate", json=[1, 2], timeout=10)
    _error(answer, 422)
    answer = requests.post(
        f"{server}/generate", data=b"bars=4", headers={"Content-Type": "text/plain"}, timeout=10
    )
    _error(answer, 415)


# --------------------------------------------------------------------------- with a score
def test_continue_a_midi_body(server, piece, piece_midi):
    answer = requests.post(
        f"{server}/continue?bars=2&seed=3",
        data=piece_midi,
        headers={"Content-Type": "audio/midi", **JSON},
        timeout=60,
    )
    assert answer.status_code == 200, answer.text
    (score,) = answer.json()["scores"]
    assert len(score["tracks"]) == len(piece["tracks"])
    assert len(score["bars"]) > len(piece["bars"])
    end = piece["bars"][-1]["start"] + piece["bars"][-1]["length"]
    for old, new in zip(piece["tracks"], score["tracks"], strict=True):
        kept = [n for n in _notes(new) if n[0] < end]
        assert kept == _notes(old)  # the prompt is kept as it was


def test_continue_a_multipart_upload(server, piece_midi):
    answer = requests.post(
        f"{server}/continue",
        files={"file": ("idea.mid", piece_midi, "audio/midi")},
        data={"bars": "2", "seed": "5"},
        timeout=60,
    )
    assert answer.status_code == 200, answer.text
    assert len(midilm.load_midi(answer.content).tracks) == 2


def test_infill_rewrites_only_the_chosen_bars(server, piece):
    answer = requests.post(
        f"{server}/infill",
        json={"score": piece, "track": 1, "bars": [2, 3], "seed": 11},
        headers=JSON,
        timeout=60,
    )
    assert answer.status_code == 200, answer.text
    (score,) = answer.json()["scores"]
    bars = piece["bars"]
    start, stop = bars[1]["start"], bars[2]["start"] + bars[2]["length"]

    def outside(track):
        return [n for n in _notes(track) if not start <= n[0] < stop]

    assert outside(score["tracks"][0]) == outside(piece["tracks"][0])
    assert _notes(score["tracks"][1]) == _notes(piece["tracks"][1])


def test_infill_out_of_range(server, piece):
    body = {"score": piece, "track": 3, "bars": 1}
    _error(requests.post(f"{server}/infill", json=body, timeout=10), 422, "track")
    body = {"score": piece, "track": 1, "bars": [len(piece["bars"]) + 1]}
    _error(requests.post(f"{server}/infill", json=body, timeout=10), 422, "bars")
    _error(
        requests.post(f"{server}/infill", json={"track": 1, "bars": 1}, timeout=10), 422, "score"
    )


def test_add_track_streams_progress_then_the_result(server, piece):
    with requests.post(
        f"{server}/add-track",
        json={"score": piece, "instrument": "drums", "seed": 2},
        headers=SSE,
        stream=True,
        timeout=60,
    ) as answer:
        assert answer.status_code == 200
        assert answer.headers["Content-Type"].startswith("text/event-stream")
        events = [(kind, json.loads(data)) for kind, data in sse_events(answer)]
    kinds = [kind for kind, _ in events]
    assert kinds[0] == "job" and kinds[-1] == "result" and "progress" in kinds
    progress = [data for kind, data in events if kind == "progress"]
    assert all(p["kind"] == "bar" and 0 < p["done"] <= p["total"] for p in progress)
    assert progress[-1]["done"] == progress[-1]["total"]
    (score,) = events[-1][1]["scores"]
    assert [t["is_drum"] for t in score["tracks"]] == [False, False, True]
    for old, new in zip(piece["tracks"], score["tracks"], strict=False):
        assert _notes(old) == _notes(new)


def test_regenerate_track_keeps_the_others(server, piece):
    body = {"score": piece, "track": 2, "density": "high", "seed": 3}
    answer = requests.post(f"{server}/regenerate-track", json=body, headers=JSON, timeout=60)
    assert answer.status_code == 200, answer.text
    (score,) = answer.json()["scores"]
    assert _notes(score["tracks"][0]) == _notes(piece["tracks"][0])
    assert score["tracks"][1]["program"] == piece["tracks"][1]["program"]
    body["track"] = 3
    _error(requests.post(f"{server}/regenerate-track", json=body, timeout=10), 422, "track")


def test_model_request_errors_name_their_field(server, piece):
    """A request the schema lets through but the model refuses: its GenerationRequestError
    comes back as a 422 with the field."""
    for density in ([3], 99):
        body = {"score": piece, "bars": 1, "density": density}
        answer = requests.post(f"{server}/continue", json=body, timeout=30)
        assert "density" in _error(answer, 422, "density")["message"]


def test_convert_round_trip(server, piece, piece_midi):
    answer = requests.post(
        f"{server}/convert", files={"file": ("a.mid", piece_midi, "audio/midi")}, timeout=30
    )
    assert answer.status_code == 200
    back = answer.json()
    assert [_notes(t) for t in back["tracks"]] == [_notes(t) for t in piece["tracks"]]
    assert back["bars"] == piece["bars"]


def _can_render() -> bool:
    """A soundfont is all it takes: the synthesizer (FluidSynth, else rustysynth) comes with
    midilm."""
    from midilm import render

    try:
        render.find_soundfont()
    except FileNotFoundError:
        return False
    return True


def test_render_wav_and_png(server, piece):
    if not _can_render():  # no FluidSynth or no soundfont here: a clear 503
        answer = requests.post(f"{server}/render", json={"score": piece}, timeout=60)
        assert _error(answer, 503)["error"] == "render_unavailable"
        return
    answer = requests.post(f"{server}/render", json={"score": piece}, timeout=120)
    assert answer.status_code == 200, answer.text
    assert answer.headers["Content-Type"] == "audio/wav"
    assert answer.content[:4] == b"RIFF" and answer.content[8:12] == b"WAVE"
    answer = requests.post(
        f"{server}/render?format=png&highlight=2,3&track=1", json={"score": piece}, timeout=120
    )
    assert answer.status_code == 200, answer.text
    assert answer.headers["Content-Type"] == "image/png"
    assert answer.content.startswith(b"\x89PNG")


def test_render_refuses_long_scores(server):
    long_note = {"ticks_per_quarter": 480, "tempos": [{"time": 0, "qpm": 60}],
                 "tracks": [{"notes": [[0, 480 * 700, 60, 80]]}]}  # fmt: skip
    answer = requests.post(f"{server}/render", json={"score": long_note}, timeout=30)
    assert "600 s" in _error(answer, 422, "score")["message"]
    _error(requests.post(f"{server}/render?format=mp3", json={"score": long_note}), 422, "format")


# --------------------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "empty"),
        (b"RIFF....WAVEfmt ", "not_midi"),
        (b"MThd\x00\x00\x00\x06\x00\x01\x00\x02", "corrupt"),
        (
            b"MThd\x00\x00\x00\x06\x00\x00\x00\x01\x01\xe0MTrk\x00\x00\x00\x04\x00\xff\x2f\x00",
            "no_notes",
        ),
    ],
    ids=["empty", "wav", "truncated", "no-notes"],
)
def test_invalid_midi_is_400_with_the_reason(server, data, reason):
    answer = requests.post(
        f"{server}/infill?track=1&bars=1",
        data=data,
        headers={"Content-Type": "audio/midi"},
        timeout=10,
    )
    body = _error(answer, 400, "score")
    assert body["error"] == f"invalid_midi:{reason}"


def test_invalid_json_score_names_the_field(server, piece):
    bad = json.loads(json.dumps(piece))
    bad["tracks"][0]["notes"][0][2] = 200
    answer = requests.post(f"{server}/continue", json={"score": bad}, timeout=10)
    body = _error(answer, 422)
    assert body["field"] == "score.tracks.0.notes.0.2" and "127" in body["message"]
    many = {"tracks": [{"program": 0, "notes": [[0, 480, 60, 80]]}] * (MAX_TRACKS + 1)}
    answer = requests.post(f"{server}/continue", json={"score": many}, timeout=10)
    assert str(MAX_TRACKS) in _error(answer, 422, "score.tracks")["message"]


def test_uploads_over_the_limit_are_413(server):
    big = b"MThd" + bytes(5 * 1024 * 1024)
    answer = requests.post(
        f"{server}/infill?track=1&bars=1", data=big, headers={"Content-Type": "audio/midi"}
    )
    assert "5 MiB" in _error(answer, 413)["message"]

    def chunks():  # no Content-Length: the limit is enforced while reading
        for _ in range(6):
            yield bytes(1024 * 1024)

    answer = requests.post(
        f"{server}/infill?track=1&bars=1", data=chunks(), headers={"Content-Type": "audio/midi"}
    )
    _error(answer, 413)


# --------------------------------------------------------------------------- jobs
def test_cancel_a_streaming_job(server):
    with requests.post(
        f"{server}/generate",
        json={"bars": MAX_BARS, "instruments": ["piano", "bass", "drums"], "seed": 1},
        headers=SSE,
        stream=True,
        timeout=120,
    ) as answer:
        events = sse_events(answer)
        kind, data = next(events)
        assert kind == "job"
        job_id = json.loads(data)["job_id"]
        cancelled = requests.post(f"{server}/jobs/{job_id}/cancel", timeout=10)
        assert cancelled.status_code == 200 and cancelled.json()["id"] == job_id
        rest = list(events)
    kind, data = rest[-1]
    assert kind == "error" and json.loads(data)["status"] == 409
    status = requests.get(f"{server}/jobs/{job_id}", timeout=10).json()
    assert status["state"] == "cancelled" and status["done"] < MAX_BARS
    _error(requests.post(f"{server}/jobs/nope/cancel", timeout=10), 404)


def test_a_client_that_disconnects_cancels_its_job(server):
    before = requests.get(f"{server}/health", timeout=10).json()["queue"]["finished"]
    body = json.dumps({"bars": MAX_BARS, "instruments": ["piano", "bass", "drums"]}).encode()
    with socket.create_connection(("127.0.0.1", int(server.rsplit(":", 1)[1]))) as sock:
        sock.sendall(
            b"POST /generate HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
        )
        assert wait_until(lambda: _queue(server)["running"] == 1, 20)
    assert wait_until(lambda: _queue(server)["running"] == 0, 60)
    after = _queue(server)["finished"]
    assert after.get("cancelled", 0) == before.get("cancelled", 0) + 1


def _queue(server) -> dict:
    return requests.get(f"{server}/health", timeout=10).json()["queue"]


def test_a_full_queue_answers_429_with_retry_after(model):
    app = create_app({"tiny": model}, limits=ServerLimits(workers=1, queue_size=1))
    long_job = {"bars": MAX_BARS, "instruments": ["piano", "bass", "drums"]}
    with serving(app) as live:
        streams = []
        try:
            for _ in range(2):  # one runs, one waits
                answer = requests.post(
                    f"{live.url}/generate", json=long_job, headers=SSE, stream=True, timeout=60
                )
                assert answer.status_code == 200
                streams.append(answer)
            refused = requests.post(f"{live.url}/generate", json={"bars": 1}, timeout=10)
            _error(refused, 429)
            assert int(refused.headers["Retry-After"]) >= 1
        finally:
            for answer in streams:
                answer.close()
        # closing the streams cancelled both jobs: the queue has room again
        assert wait_until(lambda: _queue(live.url)["running"] == 0, 60)
        answer = requests.post(f"{live.url}/generate", json={"bars": 1}, timeout=60)
        assert answer.status_code == 200


def test_a_job_past_the_time_limit_is_stopped(model):
    app = create_app({"tiny": model}, limits=ServerLimits(job_timeout_s=0.3))
    with serving(app) as live:
        answer = requests.post(
            f"{live.url}/generate",
            json={"bars": MAX_BARS, "instruments": ["piano", "bass", "drums"]},
            timeout=60,
        )
        assert "0.3 s" in _error(answer, 503)["message"]
        assert _queue(live.url)["finished"] == {"cancelled": 1}


class _BrokenModel(MusicModel):
    """A real model whose sampling has a bug: the server must answer 500 and log it."""

    def stream(self, task, **kwargs):
        raise RuntimeError("a bug in sampling")


def test_an_unexpected_failure_is_500_with_a_logged_request_id(model, caplog):
    broken = _BrokenModel(model.model, model.tokenizer, info=model.info)
    with serving(create_app({"broken": broken})) as live, caplog.at_level(logging.ERROR):
        answer = requests.post(f"{live.url}/generate", json={"bars": 1}, timeout=30)
        body = _error(answer, 500)
    assert "a bug in sampling" not in body["message"]
    assert body["request_id"] in body["message"]
    assert any(body["request_id"] in r.getMessage() for r in caplog.records)


# --------------------------------------------------------------------------- access
def test_token_guards_every_api_call(model):
    app = create_app({"tiny": model}, token="s3cret-token")
    with serving(app) as live:
        for path in ("/health", "/models", "/models/tiny", "/jobs/x"):
            answer = requests.get(f"{live.url}{path}", timeout=10)
            _error(answer, 401)
            assert answer.headers["WWW-Authenticate"] == "Bearer"
        wrong = {"Authorization": "Bearer nope"}
        _error(requests.post(f"{live.url}/generate", headers=wrong, timeout=10), 401)
        right = {"Authorization": "Bearer s3cret-token"}
        assert requests.get(f"{live.url}/health", headers=right, timeout=10).status_code == 200
        # the studio page and the API docs load without it (they hold no data)
        for path in ("/", "/studio/studio.js", "/docs", "/openapi.json"):
            assert requests.get(f"{live.url}{path}", timeout=10).status_code == 200


def test_docs_work_offline(server):
    page = requests.get(f"{server}/docs", timeout=10)
    assert page.status_code == 200
    assets = [a for a in _links(page.text) if a.endswith((".js", ".css"))]
    assert assets and all(a.startswith("/") for a in assets)  # nothing from a CDN
    for asset in assets:
        assert requests.get(f"{server}{asset}", timeout=10).status_code == 200
    spec = requests.get(f"{server}/openapi.json", timeout=10).json()
    assert {"/generate", "/continue", "/infill", "/add-track", "/render"} <= spec["paths"].keys()
    generate = spec["paths"]["/generate"]["post"]["requestBody"]["content"]["application/json"]
    bars = generate["schema"]["properties"]["bars"]["anyOf"]
    assert {"type": "integer", "minimum": 1, "maximum": MAX_BARS} in bars
    assert "ScoreJSON" in spec["components"]["schemas"]


def _links(html: str) -> list[str]:
    import re

    return re.findall(r'(?:src|href)="([^"]+)"', html) + re.findall(r"(?:src|href)='([^']+)'", html)


def test_studio_page_is_served_without_a_cdn(server):
    page = requests.get(f"{server}/", timeout=10)
    assert page.status_code == 200 and "midilm studio" in page.text
    for link in _links(page.text):
        assert link.startswith("/studio/"), link
        assert requests.get(f"{server}{link}", timeout=10).status_code == 200


# --------------------------------------------------------------------------- the CLI
def test_serve_refuses_an_open_host_without_a_token():
    result = CliRunner().invoke(cli, ["serve", "--host", "0.0.0.0"])
    assert result.exit_code == 2
    assert result.stderr.startswith("error:") and "--token" in result.stderr
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.2")


# --------------------------------------------------------------------------- units
def test_json_score_round_trip_on_a_chorale(bach_scores):
    _, score = bach_scores[0]
    data = score_to_json(score)
    back = score_from_json(ScoreJSON.model_validate(data.model_dump()))
    assert back.ticks_per_quarter == score.ticks_per_quarter
    assert len(back.tracks) == len(score.tracks)
    for a, b in zip(score.tracks, back.tracks, strict=True):
        assert (a.program, a.is_drum, a.name) == (b.program, b.is_drum, b.name)
        na, nb = a.notes.numpy(), b.notes.numpy()
        for key in ("time", "duration", "pitch", "velocity"):
            assert np.array_equal(np.sort(na[key]), np.sort(nb[key]))
    assert [(t.time, t.numerator, t.denominator) for t in back.time_signatures] == [
        (t.time, t.numerator, t.denominator) for t in score.time_signatures
    ]
    assert len(data.bars) == len(bar_grid(score))


def test_json_score_in_beats():
    data = ScoreJSON.model_validate(
        {
            "ticks_per_quarter": 96,
            "unit": "beat",
            "tempos": [{"time": 0, "qpm": 90}],
            "time_signatures": [{"time": 0, "numerator": 3, "denominator": 4}],
            "tracks": [{"program": 40, "notes": [[0, 1, 60, 90], [1.5, 0.5, 62, 70]]}],
        }
    )
    score = score_from_json(data)
    notes = score.tracks[0].notes.numpy()
    assert notes["time"].tolist() == [0, 144] and notes["duration"].tolist() == [96, 48]
    assert score.tempos[0].qpm == pytest.approx(90)
    assert [b.meter.numerator for b in bar_grid(score)] == [3]


def test_job_queue_is_bounded_and_cancellable():
    queue = JobQueue(workers=1, queue_size=1, timeout_s=0.5)
    release = threading.Event()

    def blocking(job):
        while not release.wait(0.01):
            job.check()
        return "ran"

    try:
        running = queue.submit("block", blocking)
        assert wait_until(lambda: running.state == "running", 5)
        waiting = queue.submit("block", blocking)
        with pytest.raises(QueueFullError) as full:
            queue.submit("block", blocking)
        assert full.value.retry_after_s >= 1
        waiting.cancel()  # cancelled before it started: never runs
        assert running.wait(5) and running.state == "cancelled"  # past its 0.5 s limit
        assert running.cancel_reason == "timeout"
        assert waiting.wait(5) and waiting.state == "cancelled" and waiting.started_s is None
        release.set()
        done = queue.submit("quick", lambda job: 42)
        assert done.wait(5) and done.result == 42
        with pytest.raises(JobCancelled):
            running.check()
    finally:
        queue.shutdown()


def test_job_queue_keeps_the_error_of_a_failed_job():
    queue = JobQueue(workers=2, queue_size=0)
    try:
        job = queue.submit("fail", lambda job: 1 / 0)
        assert job.wait(5) and job.state == "failed"
        assert isinstance(job.error, ZeroDivisionError)
        assert queue.stats()["finished"] == {"failed": 1}
    finally:
        queue.shutdown()
    time.sleep(0)  # nothing left running

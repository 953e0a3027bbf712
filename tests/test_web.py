"""The explorer (``mobilenet explore``) and ``export --format web``.

The server runs on a free port of 127.0.0.1 in this process; the page runs in Debian's chromium
driven by Playwright (never a browser Playwright downloads). Browser tests skip, saying why,
where ``/usr/bin/chromium``, Playwright or the bundled onnxruntime-web (``make``) is missing.
"""

from __future__ import annotations

import base64
import contextlib
import io
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mobilenet.arch import ArchConfig
from mobilenet.cost import network_cost
from mobilenet.errors import InputError

pytest.importorskip("starlette", reason="the explorer needs the [web] extra")
pytest.importorskip("uvicorn", reason="the explorer needs the [web] extra")

from mobilenet.web import assets, browser  # noqa: E402
from mobilenet.web.serve import bind, url_of  # noqa: E402

# (page controls, ArchConfig settings, bytes per element): the configurations read off the page.
CONFIGS = [
    ({"alpha": "0.5", "resolution": "160"}, {"alpha": 0.5, "resolution": 160}, 4),
    ({"alpha": "0.75", "resolution": "192", "variant": "shallow"}, {"alpha": 0.75, "resolution": 192,
                                                                       "variant": "shallow"}, 4),
    ({"alpha": "1.0", "resolution": "224", "variant": "conv"}, {"variant": "conv"}, 4),
    ({"alpha": "0.35", "resolution": "129", "variant": "separable", "classes": "10"},
     {"alpha": 0.35, "resolution": 129, "num_classes": 10}, 4),
]


# ------------------------------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def server():
    """The explorer on a free port, served by uvicorn in a thread: its base URL."""
    import uvicorn

    from mobilenet.web.app import create_app

    sock = bind("127.0.0.1", 0)
    instance = uvicorn.Server(uvicorn.Config(create_app(), log_level="warning", lifespan="off"))
    thread = threading.Thread(target=instance.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    url = url_of(sock).rstrip("/")
    for _ in range(100):
        if instance.started:
            break
        time.sleep(0.05)
    yield url
    instance.should_exit = True
    thread.join(timeout=10)
    sock.close()


def request(url: str, data: bytes | None = None, method: str | None = None, timeout: float = 60) -> tuple[int, dict]:
    """(status, JSON body) of one request; HTTP errors are answers too (a body that is not JSON
    comes back as ``{"text": ...}``)."""
    req = urllib.request.Request(url, data=data, method=method or ("POST" if data is not None else "GET"),
                                 headers={"Content-Type": "application/octet-stream"} if data is not None else {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as response:
            status, body = response.status, response.read()
    except urllib.error.HTTPError as err:
        status, body = err.code, err.read()
    try:
        return status, json.loads(body or b"null")
    except ValueError:
        return status, {"text": body.decode("utf-8", "replace")}


def validator_message(**settings) -> str:
    with pytest.raises(InputError) as info:
        ArchConfig(**settings)
    return str(info.value)


@pytest.fixture(scope="module")
def chromium():
    reason = browser.unavailable_reason()
    if reason is not None:
        pytest.skip(reason)
    with browser.headless_chromium() as context:
        yield context


@pytest.fixture
def page(chromium, server):
    page = chromium.new_page()
    page.set_viewport_size({"width": 1280, "height": 900})
    page.set_default_timeout(60_000)
    errors: list[str] = []
    page.on("pageerror", lambda err: errors.append(str(err)))
    page.goto(server + "/")
    settled(page)
    yield page
    page.close()
    assert not errors, errors


def settled(page) -> None:
    """Wait until the page has shown the answer to its last control change."""
    page.wait_for_function("() => !document.body.classList.contains('busy') && "
                           "document.querySelector('[data-testid=total-mult-adds]').dataset.value")


def set_controls(page, controls: dict[str, str]) -> None:
    for name, value in ({"variant": "separable", "classes": "1000"} | controls).items():
        if name == "variant":
            page.select_option("[data-testid=variant]", value)
        else:
            page.fill(f"[data-testid={name}]", value)
    settled(page)


def integer_on_page(page, testid: str) -> int:
    return int(page.text_content(f"[data-testid={testid}]").replace(",", "").removesuffix(" B"))


# ------------------------------------------------------------------------------------------ the API


def test_cost_api_is_the_cost_model_and_the_cli_json(server, capsys):
    from mobilenet.cli import main

    for controls, settings, bytes_per_element in CONFIGS:
        query = "&".join(f"{k}={v}" for k, v in controls.items())
        status, view = request(f"{server}/api/cost?{query}&bytes_per_element={bytes_per_element}")
        assert status == 200, view
        expected = network_cost(ArchConfig(**settings), bytes_per_element=bytes_per_element).to_dict()
        assert view["network"] == json.loads(json.dumps(expected))
        assert (view["comparison"] is None) == (settings.get("variant") == "conv")
    # The same totals as the command prints, for a non-square int8 configuration.
    status, view = request(f"{server}/api/cost?alpha=0.25&height=200&width=320&variant=shallow&bytes_per_element=1")
    assert status == 200
    assert main(["cost", "--alpha", "0.25", "--height", "200", "--width", "320", "--variant", "shallow",
                 "--bytes-per-element", "1", "--json"]) == 0
    assert view["network"]["total"] == json.loads(capsys.readouterr().out)["total"]


def test_bad_values_get_the_validators_own_message_and_the_server_keeps_serving(server):
    cases = [
        ("alpha=-1", validator_message(alpha=-1)),
        ("alpha=abc", validator_message(alpha="abc")),
        ("resolution=16", validator_message(resolution=16)),
        ("variant=wide", validator_message(variant="wide")),
        ("depth_multiplier=0", validator_message(depth_multiplier=0)),
        ("height=200", "height and width go together"),
    ]
    for query, message in cases:
        status, body = request(f"{server}/api/cost?{query}")
        assert (status, body["error"]) == (400, message)
    status, body = request(f"{server}/api/cost?bytes_per_element=3.5")
    assert status == 400 and "bytes_per_element must be an int >= 1" in body["error"]
    status, body = request(f"{server}/api/cost")
    assert status == 200 and body["network"]["total"]["mult_adds"] == 568_740_352


def test_twenty_concurrent_requests_are_all_answered(server):
    paths = [f"/api/cost?alpha={0.25 + 0.05 * i}&resolution={96 + 8 * i}" for i in range(14)]
    paths += ["/api/options", "/", "/static/explorer.js", "/static/classify.js", "/api/cost?alpha=-2", "/api/choose"]
    assert len(paths) == 20

    def fetch(path: str) -> int:
        try:
            with urllib.request.urlopen(server + path, timeout=60) as response:
                response.read()
                return response.status
        except urllib.error.HTTPError as err:
            return err.code

    with ThreadPoolExecutor(max_workers=20) as pool:
        statuses = list(pool.map(fetch, paths))
    assert statuses == [200] * 18 + [400, 200]


def bomb_png(side: int = 13000) -> bytes:
    """A 1-bit PNG of ``side``×``side`` zeros: about 20 KB, 169 megapixels once decoded."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return len(data).to_bytes(4, "big") + kind + data + zlib.crc32(kind + data).to_bytes(4, "big")

    compressor = zlib.compressobj(9)
    row = b"\0" * (1 + (side + 7) // 8)
    idat = b"".join(compressor.compress(row) for _ in range(side)) + compressor.flush()
    header = side.to_bytes(4, "big") * 2 + bytes([1, 0, 0, 0, 0])
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def test_uploads_refused_with_a_clear_message_and_the_server_keeps_serving(server):
    status, body = request(f"{server}/api/classify", data=b"\0" * (50 * 2**20))
    assert status == 413 and body["error"] == "the upload is 50.0 MB; photos up to 20 MB are accepted"
    status, body = request(f"{server}/api/classify", data=b"this is not an image")
    assert status == 400 and body["error"] == "the upload: not an image Pillow can read"
    status, body = request(f"{server}/api/classify", data=bomb_png())
    assert status == 400 and "declares 13000×13000 pixels" in body["error"] and "not decoded" in body["error"]
    status, body = request(f"{server}/api/classify", data=b"")
    assert status == 400 and "no photo" in body["error"]
    assert request(f"{server}/api/cost?alpha=0.5")[0] == 200


def test_a_client_that_leaves_mid_upload_costs_no_traceback_and_the_server_keeps_serving(server):
    """Starlette's ClientDisconnect escaped the upload's reader: uvicorn logged "Exception in ASGI
    application" with a traceback for a client that had merely gone."""
    logged: list[logging.LogRecord] = []
    handler = logging.Handler(level=logging.WARNING)
    handler.emit = logged.append  # type: ignore[method-assign]
    uvicorn_log = logging.getLogger("uvicorn.error")
    uvicorn_log.addHandler(handler)
    try:
        host, port = server.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port)), timeout=10) as client:
            client.sendall(b"POST /api/classify HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nabc")
            time.sleep(0.2)  # (the 3 bytes read, the server waits for the other 97)
        deadline = time.monotonic() + 2
        while time.monotonic() < deadline and not logged:
            time.sleep(0.05)
        assert request(f"{server}/api/options")[0] == 200
    finally:
        uvicorn_log.removeHandler(handler)
    assert [record.getMessage() for record in logged if record.exc_info or record.levelno >= logging.ERROR] == []


def test_more_threads_than_the_servers_cpus_are_refused_before_a_job_starts(server):
    """threads=100000 started a measurement that grew in memory and could not be cancelled."""
    cpus = len(os.sched_getaffinity(0))  # (the CPUs this process, the server's, may use)
    query = f"alpha=0.25&resolution=64&runtime=onnxruntime&threads={cpus + 1}"
    refused = (f"threads is {cpus + 1}, more than the {cpus} CPU{'s' if cpus > 1 else ''} this process may use: "
               f"ask for at most {cpus}, or leave it out for the runtime's default")
    assert request(f"{server}/api/predict?{query}") == (400, {"error": refused})
    assert request(f"{server}/api/measure?{query}", data=b"") == (400, {"error": refused})
    assert request(f"{server}/api/calibrate?runtime=torch&threads={cpus + 1}", data=b"") == (400, {"error": refused})


def test_a_precision_the_runtime_lacks_names_only_the_runtimes_this_server_offers(server):
    from mobilenet.deploy.runtimes import offered_precisions

    offered = request(f"{server}/api/options")[1]["runtimes"]
    for precision in ("fp16", "bf16"):
        for runtime in offered:
            if precision in offered_precisions(runtime):
                continue
            status, body = request(f"{server}/api/predict?alpha=0.25&runtime={runtime}&precision={precision}")
            assert status == 400 and body["error"].startswith(f"{runtime} does not offer {precision}; ")
            offering = [r for r in offered if precision in offered_precisions(r)]
            if offering:
                assert body["error"].endswith(f"the runtimes here that do: {', '.join(offering)}")
            else:
                assert "none of the runtimes here does: choose " in body["error"]


def test_the_server_never_opens_a_path_the_client_names(server, tmp_path):
    secret = tmp_path / "secret.png"
    Image.new("RGB", (8, 8)).save(secret)
    status, body = request(f"{server}/api/classify?weights={secret}", data=secret.read_bytes())
    assert status == 400 and body["error"].startswith("unknown weights")
    status, body = request(f"{server}/api/browser/{str(secret).replace('/', '%2F')}/model.onnx")
    assert status in (400, 404)
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(f"{server}/static/..%2F..%2F..%2Fcost.py", timeout=10)
    assert info.value.code == 404


def measure_while_reading_costs(server: str, query: str) -> tuple[dict, int]:
    """Start a measurement and read the cost view until it ends: (the finished job, how many cost
    views were answered while it still ran). A cost view queued behind the measurement would be
    answered only once it had ended: none while it ran. (Counted, not timed: a measurement that
    exports its network holds the interpreter for seconds at a time, and a loaded machine slows
    every answer without queueing any.)"""
    status, job = request(f"{server}/api/measure?{query}", data=b"")
    assert status == 200 and job["state"] == "running", job
    status, busy = request(f"{server}/api/measure?runtime=torch", data=b"")
    assert status == 409 and busy["error"].endswith("is already running; wait for it to finish")
    answered_while_running = 0
    while job["state"] == "running":
        assert request(f"{server}/api/cost?alpha=0.75")[0] == 200
        job = request(f"{server}/api/jobs/{job['id']}")[1]
        answered_while_running += job["state"] == "running"
    return job, answered_while_running


def test_a_measurement_runs_in_the_background_while_the_cost_view_answers(server, monkeypatch):
    from mobilenet.web import time_view

    def slow_measure(cfg, runtime, precision, threads, progress):
        for step in range(10):
            progress(step / 10, f"step {step}")
            time.sleep(0.1)
        return {"median_ms": 1.0, "model": cfg.name}

    monkeypatch.setattr(time_view, "measure", slow_measure)
    monkeypatch.setattr("mobilenet.web.app.measure", slow_measure)
    job, answered = measure_while_reading_costs(server, "alpha=0.5&runtime=torch")
    assert job["state"] == "done" and job["result"] == {"median_ms": 1.0, "model": "mobilenet_v1_0.5_224"}
    assert answered >= 2


@pytest.mark.slow
def test_a_real_measurement_times_the_network_and_each_layer_type(server):
    from mobilenet.deploy.optional import available
    from mobilenet.web import time_view

    runtime = "onnxruntime" if available("onnxruntime") else "torch"  # PyTorch compiles for a minute first
    job, answered = measure_while_reading_costs(server, f"alpha=0.25&resolution=64&runtime={runtime}&threads=1")
    assert job["state"] == "done", job
    assert answered >= 1, "every cost view waited for the measurement to end"
    assert job["result"]["median_ms"] > 0 and job["result"]["runs"] >= 3 * time_view.MEASURE_ROUNDS
    assert {row["kind"] for row in job["result"]["kinds"]} >= {"conv", "depthwise", "pointwise", "fc"}


def fixed_calibration(runtime: str = "torch", precision: str = "fp32"):
    """Constants of an imaginary machine (100 G mult-adds/s, 20 GB/s, 2 µs a layer, 10 µs a call)."""
    from mobilenet.latency import KERNELS, Calibration, Roofline

    roof = Roofline(macs_per_s=100e9, bytes_per_s=20e9, overhead_s=2e-6)
    return Calibration(runtime=runtime, precision=precision, batch_size=1, threads=None,
                       kernels=dict.fromkeys(KERNELS, roof), call_s=10e-6, feed_bytes_per_s=float("inf"))


def test_without_latency_constants_the_page_is_offered_calibration_and_mult_adds(server, monkeypatch):
    from mobilenet.web import time_view

    def not_calibrated(runtime, precision, threads):
        raise time_view.NotCalibratedError(f"this machine has no latency constants for {runtime} {precision} yet")

    monkeypatch.setattr(time_view, "calibration", not_calibrated)
    status, prediction = request(f"{server}/api/predict?alpha=0.5&runtime=torch")
    assert status == 200 and prediction["available"] is False and prediction["can_calibrate"] is True
    assert prediction["reason"] == "this machine has no latency constants for torch fp32 yet"
    status, choice = request(f"{server}/api/choose?budget=300&runtime=torch")
    assert status == 200 and choice["axis"] == "mult_adds_millions"
    fits = [c for c in choice["candidates"] if c["mult_adds"] <= 300e6]
    assert choice["chosen"]["top1"] == max(c["top1"] for c in fits)
    front = [c for c in choice["candidates"] if c["pareto"]]
    assert all(not (o["cost"] <= c["cost"] and o["top1"] > c["top1"]) for c in front for o in choice["candidates"])
    assert request(f"{server}/api/choose?budget=-1")[0] == 400
    assert request(f"{server}/api/choose?budget=1")[1]["error"].startswith("no published model fits 1M mult-adds")


def test_with_latency_constants_the_page_shows_the_latency_models_numbers(server, monkeypatch):
    from mobilenet import latency
    from mobilenet.web import time_view

    constants = fixed_calibration()
    monkeypatch.setattr(time_view, "calibration", lambda runtime, precision, threads: constants)
    status, prediction = request(f"{server}/api/predict?alpha=0.5&resolution=160&runtime=torch")
    expected = latency.predict_with(constants, ArchConfig(alpha=0.5, resolution=160))
    assert status == 200 and prediction["available"] is True
    assert prediction["predicted_ms"] == expected.total_ms
    assert [(x["name"], x["bound"]) for x in prediction["layers"]] == [(x.name, x.bound) for x in expected.layers]
    assert [x["attained_macs_per_s"] for x in prediction["layers"]] == [x.attained_macs_per_s for x in expected.layers]
    status, choice = request(f"{server}/api/choose?budget=2&runtime=torch")
    chosen = latency.choose(2, "torch", measure_best=0, calibration=constants).chosen
    assert status == 200 and choice["axis"] == "predicted_ms" and choice["chosen"]["name"] == chosen.name
    assert any(c["pareto"] for c in choice["candidates"])


def test_calibration_runs_as_a_background_job(server, monkeypatch):
    from mobilenet import latency

    def calibrated(runtime, precision, threads=None, remeasure=False, log=None):
        log("latency: probing")
        time.sleep(0.3)
        return fixed_calibration(runtime, precision)

    monkeypatch.setattr(latency, "calibrated", calibrated)
    status, job = request(f"{server}/api/calibrate?runtime=torch", data=b"")
    assert status == 200 and job["what"] == "calibrating torch fp32"
    while job["state"] == "running":
        time.sleep(0.05)
        job = request(f"{server}/api/jobs/{job['id']}")[1]
    assert job["state"] == "done" and job["result"]["runtime"] == "torch"


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")  # (SystemExit ends it)
def test_a_job_ended_by_system_exit_fails_and_frees_the_slot(server, monkeypatch):
    """A job raising SystemExit (a BaseException, not an Exception) stayed "running" for ever, and
    every later measurement was refused as busy (409) until the server restarted."""
    def exits(cfg, runtime, precision, threads, progress):
        raise SystemExit(3)

    monkeypatch.setattr("mobilenet.web.app.measure", exits)
    status, job = request(f"{server}/api/measure?alpha=0.25&runtime=torch", data=b"")
    assert status == 200, job
    deadline = time.monotonic() + 30
    while job["state"] == "running" and time.monotonic() < deadline:
        time.sleep(0.05)
        job = request(f"{server}/api/jobs/{job['id']}")[1]
    assert job["state"] == "failed", job
    assert job["error"] == "measuring mobilenet_v1_0.25_224 in torch fp32 ended without a result (SystemExit: 3); " \
                           "start it again"
    monkeypatch.setattr("mobilenet.web.app.measure", lambda cfg, runtime, precision, threads, progress: {"ok": 1})
    status, job = request(f"{server}/api/measure?alpha=0.25&runtime=torch", data=b"")
    assert status == 200, job
    while job["state"] == "running":
        time.sleep(0.05)
        job = request(f"{server}/api/jobs/{job['id']}")[1]
    assert job["state"] == "done" and job["result"] == {"ok": 1}


def _explore_command() -> tuple[subprocess.Popen, str]:
    """`mobilenet explore --port 0` started, and the address its first line says it serves on."""
    process = subprocess.Popen([sys.executable, "-m", "mobilenet", "explore", "--port", "0"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = process.stdout.readline()
    if not line.startswith("mobilenet explore: serving on http://127.0.0.1:"):
        process.kill()
        pytest.fail(f"explore did not start: {line!r}")
    return process, line.split()[4]


def test_explore_command_prints_its_address_and_stops_on_ctrl_c():
    process, url = _explore_command()
    try:
        with urllib.request.urlopen(url + "api/cost", timeout=30) as response:
            assert json.loads(response.read())["network"]["total"]["mult_adds"] == 568_740_352
        # Served from inside the command line, a request's error still names the page's own
        # control (its query's "classes"), not the command line's --classes nor num_classes.
        status, body = request(url + "api/cost?classes=0")
        assert status == 400 and body["error"].startswith("classes must be an int >= 1"), body
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=30)
    finally:
        process.kill()
    assert process.returncode == 0 and "stopped" in out and "Traceback" not in err


def test_explore_command_stops_on_sigterm_as_on_ctrl_c():
    """SIGTERM (a service manager's stop, `kill`) ended the command with status 143 and without its
    "stopped" line: uvicorn shut down, then raised the signal again under Python's default handler."""
    process, url = _explore_command()
    try:
        assert request(url + "api/options")[0] == 200  # (serving: uvicorn has its handlers in place)
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=30)
    finally:
        process.kill()
    assert (process.returncode, out, err) == (0, "mobilenet explore: stopped\n", "")


def test_a_missing_web_extra_is_one_line_naming_it(monkeypatch, capsys):
    import importlib.util

    from mobilenet.cli import main

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "uvicorn" else real(name, *a))
    assert main(["explore", "--port", "0"]) == 2
    assert capsys.readouterr().err == ("mobilenet explore: error: the explorer needs uvicorn, which is not installed: "
                                       "pip install 'mobilenet[web]'\n")


# ------------------------------------------------------------------------------------------ in the browser


def test_page_shows_the_cost_models_exact_integers(page):
    assert integer_on_page(page, "total-mult-adds") == 568_740_352
    for controls, settings, _ in CONFIGS:
        set_controls(page, controls)
        total = network_cost(ArchConfig(**settings)).total
        assert integer_on_page(page, "total-mult-adds") == total.mult_adds, controls
        assert integer_on_page(page, "total-params") == total.trainable_params, controls
        assert integer_on_page(page, "total-weights") == total.weights, controls
    page.check("[data-testid=non-square]")
    set_controls(page, {"alpha": "0.25", "height": "200", "width": "320"})
    page.select_option("[data-testid=bytes-per-element]", "1")
    settled(page)
    total = network_cost(ArchConfig(alpha=0.25, resolution=(200, 320)), bytes_per_element=1).total
    assert integer_on_page(page, "total-mult-adds") == total.mult_adds
    assert integer_on_page(page, "total-peak-bytes") == total.peak_activation_bytes


def test_page_shows_the_validators_error_and_recovers(page, server):
    set_controls(page, {"alpha": "-1"})
    assert page.text_content("[data-testid=error]") == validator_message(alpha=-1)
    set_controls(page, {"alpha": "1.0", "resolution": "20"})
    assert page.text_content("[data-testid=error]") == validator_message(resolution=20)
    assert request(f"{server}/api/cost")[0] == 200  # still serving
    set_controls(page, {"alpha": "0.5", "resolution": "160"})
    assert page.text_content("[data-testid=error]") == ""
    expected = network_cost(ArchConfig(alpha=0.5, resolution=160)).total.mult_adds
    assert integer_on_page(page, "total-mult-adds") == expected


def test_the_page_says_when_its_latency_constants_were_measured_and_offers_to_measure_them_again(page, monkeypatch):
    """Constants keep the speed of the spell they were measured in: the page says when that was, and
    its calibrate button stays, as "Calibrate again", once there are constants (it used to vanish).
    Constants measured on a moving machine, or missing their own networks, are said to be so."""
    from dataclasses import replace

    from mobilenet.web import time_view

    def status_saying(text: str) -> str:
        page.wait_for_function("(text) => document.querySelector('[data-testid=prediction-status]')"
                               ".textContent.includes(text)", arg=text)
        return page.text_content("[data-testid=prediction-status]")

    constants = replace(fixed_calibration(), fit={"measured_at": "2026-12-06T14:02:00+00:00"})
    monkeypatch.setattr(time_view, "calibration", lambda runtime, precision, threads: constants)
    set_controls(page, {"alpha": "0.5"})
    assert "; calibrated 2026-12-06 14:02 UTC, " in status_saying("calibrated")
    button = page.locator("[data-testid=calibrate]")
    assert button.is_visible() and button.text_content() == "Calibrate again"

    def not_calibrated(runtime, precision, threads):
        raise time_view.NotCalibratedError(f"this machine has no latency constants for {runtime} {precision} yet")

    monkeypatch.setattr(time_view, "calibration", not_calibrated)
    set_controls(page, {"alpha": "0.75"})
    assert "calibrated" not in status_saying("no latency constants")
    assert button.is_visible() and button.text_content() == "Calibrate the latency model"

    moved = replace(fixed_calibration(), fit={"machine_drift": 1.4, "in_network": {"rmspe_after": 0.19}})
    monkeypatch.setattr(time_view, "calibration", lambda runtime, precision, threads: moved)
    set_controls(page, {"alpha": "0.5"})
    assert ("the machine's pace moved 1.40x while they were measured and they missed their own networks by 19%: "
            "calibrate again when the machine is quiet") in status_saying("pace moved")
    monkeypatch.setattr(time_view, "calibration", lambda runtime, precision, threads: constants)
    set_controls(page, {"alpha": "0.75"})
    assert "pace moved" not in status_saying("calibrated 2026-12-06"), "steady constants: nothing to say"


def text_becomes(page, testid: str, expected: str, timeout: float = 30_000, contains: bool = False) -> None:
    """Wait until the element's text is (or contains) ``expected``; a timeout says what it showed."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeoutError

    test = "includes(expected)" if contains else "trim() === expected"
    try:
        page.wait_for_function(f"([id, expected]) => document.querySelector(`[data-testid=${{id}}]`)"
                               f".textContent.{test}", arg=[testid, expected], timeout=timeout)
    except PlaywrightTimeoutError:
        shown = page.text_content(f"[data-testid={testid}]")
        raise AssertionError(f"{testid} shows {shown!r}, not {expected!r}") from None


def predicted_ms_text(constants, **settings) -> str:
    from mobilenet import latency

    return f"{latency.predict_with(constants, ArchConfig(**settings)).total_ms:.2f} ms"


def test_the_choose_view_reads_the_constants_of_the_thread_count_typed(page, monkeypatch):
    """The choose view sent runtime and precision but not the thread count, so constants calibrated
    at a typed thread count predicted the time beside it while the choose view said "calibrate"."""
    from mobilenet.web import time_view

    constants = fixed_calibration()

    def only_at_one_thread(runtime, precision, threads):
        if threads != 1:
            raise time_view.NotCalibratedError(f"this machine has no latency constants for {runtime} {precision} "
                                               f"at threads={threads} yet")
        return constants

    monkeypatch.setattr(time_view, "calibration", only_at_one_thread)
    page.fill("[data-testid=threads]", "1")
    page.dispatch_event("[data-testid=threads]", "change")
    text_becomes(page, "prediction-status", predicted_ms_text(constants), contains=True)
    text_becomes(page, "choose-status", "predicted for torch fp32 on this machine")
    assert page.text_content("#budget-label") == "budget (ms)"


def test_the_budgets_unit_is_the_one_the_server_reads_it_in(page, monkeypatch):
    """The budget's unit (ms with latency constants, million mult-adds without) followed the
    server's answer: switched to settings without constants, the page sent its "2" (ms), the
    server read 2M mult-adds and refused it, and the label kept saying ms."""
    from mobilenet.web import time_view
    from mobilenet.web.time_view import _choose_by_mult_adds

    constants = fixed_calibration()

    def only_fp32(runtime, precision, threads):
        if precision != "fp32":
            raise time_view.NotCalibratedError(f"this machine has no latency constants for {runtime} {precision} yet")
        return constants

    monkeypatch.setattr(time_view, "calibration", only_fp32)
    page.select_option("[data-testid=precision]", "fp32")
    page.dispatch_event("[data-testid=precision]", "change")
    text_becomes(page, "choose-status", "predicted for torch fp32 on this machine")
    assert page.text_content("#budget-label") == "budget (ms)"
    page.fill("[data-testid=budget]", "2")
    text_becomes(page, "chosen", "Chosen: ", contains=True)

    page.select_option("[data-testid=precision]", "bf16")
    page.dispatch_event("[data-testid=precision]", "change")
    text_becomes(page, "choose-status", "Until then: published top-1 against mult-adds", contains=True)
    text_becomes(page, "chosen", "Chosen: ", contains=True)
    assert page.text_content("#budget-label") == "budget (million mult-adds)"
    assert page.input_value("[data-testid=budget]") != "2"
    # A budget typed now is read in the unit shown, and no later answer replaces it.
    with page.expect_response(lambda response: response.url.endswith("budget=300")) as answered:
        page.fill("[data-testid=budget]", "300")
    assert answered.value.ok
    chosen = _choose_by_mult_adds(300e6)["chosen"]
    text_becomes(page, "chosen", f"Chosen: {chosen['name']}, {chosen['top1']:g}% top-1")
    page.wait_for_timeout(500)
    assert page.input_value("[data-testid=budget]") == "300"
    assert page.text_content("#budget-label") == "budget (million mult-adds)"


def test_a_late_answer_for_older_settings_never_replaces_the_newer_one(page, server, monkeypatch):
    """The prediction and the choice were shown in the order their answers came back: the answer
    for the settings before last, arriving late, replaced the one for the settings shown."""
    from playwright.sync_api import Error as PlaywrightError

    from mobilenet import latency
    from mobilenet.web import time_view

    constants = fixed_calibration()
    monkeypatch.setattr(time_view, "calibration", lambda runtime, precision, threads: constants)
    set_controls(page, {"alpha": "1.0"})
    text_becomes(page, "choose-status", "predicted for torch fp32 on this machine")
    held = []

    def hold_the_first(route):  # the first answer for alpha 0.5, and for a 2 ms budget: kept back
        url = route.request.url
        if not held and (("/api/predict?" in url and "alpha=0.5&" in url) or url.endswith("budget=2")):
            held.append(route)
        else:
            route.continue_()

    def release_late() -> None:
        route = held.pop()
        with contextlib.suppress(PlaywrightError):  # (the page may have given up on the request)
            route.fulfill(status=200, json=request(route.request.url)[1])  # the answer it would have had, late

    def never_shows(testid: str, text: str) -> None:  # (given 2 s to, as the late answer once did at once)
        with pytest.raises(AssertionError, match="shows"):
            text_becomes(page, testid, text, timeout=2_000, contains=True)

    page.route(lambda url: "/api/predict?" in url or "/api/choose?" in url, hold_the_first)
    set_controls(page, {"alpha": "0.5"})
    while not held:
        page.wait_for_timeout(50)
    set_controls(page, {"alpha": "0.75"})
    text_becomes(page, "prediction-status", predicted_ms_text(constants, alpha=0.75), contains=True)
    release_late()
    never_shows("prediction-status", predicted_ms_text(constants, alpha=0.5))
    assert predicted_ms_text(constants, alpha=0.75) in page.text_content("[data-testid=prediction-status]")

    slow, fast = (latency.choose(budget, "torch", measure_best=0, calibration=constants).chosen for budget in (2, 10))
    assert slow.name != fast.name
    page.fill("[data-testid=budget]", "2")
    while not held:
        page.wait_for_timeout(50)
    page.fill("[data-testid=budget]", "10")
    text_becomes(page, "chosen", f"Chosen: {fast.name}", contains=True)
    release_late()
    never_shows("chosen", f"Chosen: {slow.name},")
    assert page.text_content("[data-testid=chosen]").startswith(f"Chosen: {fast.name},")


def test_a_measurement_is_shown_beside_the_prediction_for_the_network_it_measured(page, server, monkeypatch):
    """The measurement was paired with whatever prediction the page showed when it ended: change α
    while it runs, and 0.5's time stood beside 0.75's prediction."""
    from mobilenet.web import time_view

    constants = fixed_calibration()
    monkeypatch.setattr(time_view, "calibration", lambda runtime, precision, threads: constants)
    go = threading.Event()

    def measure_when_told(cfg, runtime, precision, threads, progress):
        progress(0.5, "waiting for the test")
        go.wait(60)
        return {"runtime": runtime, "precision": precision, "description": "a stand-in", "median_ms": 9.0,
                "p10_ms": 8.0, "p90_ms": 10.0, "runs": 30, "kinds": []}

    monkeypatch.setattr("mobilenet.web.app.measure", measure_when_told)
    try:
        set_controls(page, {"alpha": "0.5"})
        text_becomes(page, "prediction-status", predicted_ms_text(constants, alpha=0.5), contains=True)
        page.click("[data-testid=measure]")
        page.wait_for_selector("#measure-progress:not([hidden])")
        set_controls(page, {"alpha": "0.75"})
        text_becomes(page, "prediction-status", predicted_ms_text(constants, alpha=0.75), contains=True)
    finally:
        go.set()  # (the server's one job slot is free for the next test whatever happened)
    page.wait_for_selector("[data-testid=time-result] table")
    cells = page.eval_on_selector_all("[data-testid=time-result] tbody tr:first-child td",
                                      "tds => tds.map((td) => td.textContent)")
    assert cells[:2] == ["whole call, ms", predicted_ms_text(constants, alpha=0.5).removesuffix(" ms")]
    assert page.text_content("[data-testid=time-result] caption").startswith("mobilenet_v1_0.5_224 in torch fp32")


def test_screenshot_is_not_blank(page):
    shot = np.asarray(Image.open(io.BytesIO(page.screenshot())).convert("RGB"))
    colours = len(np.unique(shot.reshape(-1, 3), axis=0))
    assert shot.shape[:2] == (900, 1280) and colours > 100 and shot.std() > 20


def needs_bundled_runtime() -> None:
    try:
        assets.onnxruntime_web()
    except InputError as err:
        pytest.skip(str(err))


@pytest.mark.slow
def test_a_photo_classified_on_the_server_and_in_the_browser_agrees_with_pytorch(page):
    import torch

    from mobilenet.factory import mobilenet_v1
    from mobilenet.preprocess import preprocess_images, sample_photos
    from mobilenet.weights import imagenet_names

    needs_bundled_runtime()
    # A PNG decodes to the same pixels everywhere; a browser decodes JPEGs with the accurate IDCT
    # where TF's recipe takes the fast one (Preprocess.decoder), a level or two apart.
    photo = next((p for p in sample_photos() if p.suffix == ".png"), sample_photos()[0])
    tolerance = 1e-4 if photo.suffix == ".png" else 2e-2
    model = mobilenet_v1(weights="tf_mobilenet_v1_1.0_224").eval()
    with torch.no_grad():
        probabilities = torch.softmax(model(preprocess_images([photo], model.pretrained_cfg.preprocess))[0], 0)
    expected = imagenet_names()[int(probabilities.argmax())]
    page.set_input_files("[data-testid=photo]", str(photo))
    page.wait_for_function("() => document.querySelector('[data-testid=server-top1]').textContent && "
                           "document.querySelector('[data-testid=browser-top1]').textContent", timeout=240_000)
    assert page.text_content("[data-testid=server-top1]") == expected
    assert page.text_content("[data-testid=browser-top1]") == expected
    rows = page.eval_on_selector_all("[data-testid=browser-top5] li",
                                     "items => items.map(i => [+i.dataset.index, +i.dataset.probability])")
    assert len(rows) == 5
    for index, probability in rows:
        assert probability == pytest.approx(float(probabilities[index]), abs=tolerance)
    for side in ("server", "browser"):
        assert page.text_content(f"[data-testid={side}-time]").endswith(("ms", "preprocessing)"))


# ------------------------------------------------------------------------------------------ export --format web


@pytest.mark.slow
def test_web_export_that_disagrees_with_pytorch_writes_nothing(tmp_path, model, monkeypatch):
    from mobilenet.deploy.verify import ExportMismatchError
    from mobilenet.web import writer
    from mobilenet.web.export import export_web

    needs_bundled_runtime()
    if browser.unavailable_reason():
        pytest.skip(browser.unavailable_reason())
    real_write = writer.write

    def write_a_wrong_recipe(model, path, **kwargs):
        files = real_write(model, path, **kwargs)
        recipe = json.loads((Path(path) / "preprocess.json").read_text())
        (Path(path) / "preprocess.json").write_text(json.dumps(recipe | {"mean": [0.4, 0.4, 0.4]}))
        return files

    monkeypatch.setattr(writer, "write", write_a_wrong_recipe)
    with pytest.raises(ExportMismatchError, match="differs from PyTorch"):
        export_web(model, tmp_path / "site")
    assert list(tmp_path.iterdir()) == []


def test_web_export_requests_it_cannot_do_are_refused_before_any_work(tmp_path, capsys):
    from mobilenet.cli import main
    from mobilenet.deploy.export import export

    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "mine.txt").write_text("not an export")
    cases = [
        (["--fixed-batch", "1"], "takes no --calibration"),
        (["--precision", "int8", "--calibration", str(tmp_path)], "takes no --calibration"),
        (["--precision", "fp16"], "web export offers fp32, not fp16"),
    ]
    for flags, message in cases:
        assert main(["export", str(tmp_path / "site"), "--format", "web", *flags]) == 2
        assert message in capsys.readouterr().err
    assert main(["export", str(tmp_path / "notes"), "--format", "web"]) == 2
    assert "exists and is not a web export" in capsys.readouterr().err
    assert (tmp_path / "notes" / "mine.txt").read_text() == "not an export"
    with pytest.raises(InputError, match=r"use mobilenet\.web\.export\.export_web"):
        export(None, tmp_path / "site", format="web")


@pytest.mark.slow
def test_export_command_writes_a_verified_web_folder_whose_page_classifies(tmp_path, capsys, chromium):
    import onnxruntime

    from mobilenet.cli import main
    from mobilenet.preprocess import Preprocess, preprocess_images, sample_photos

    needs_bundled_runtime()
    target = tmp_path / "site"
    assert main(["export", str(target), "--format", "web", "--random-init", "--alpha", "0.25",
                 "--resolution", "96"]) == 0
    out = capsys.readouterr().out
    assert f"wrote {target}" in out and "web fp32, dynamic batch, input NCHW 3x96x96" in out
    assert f"verified onnxruntime-web fp32 on {len(sample_photos())} real images" in out
    assert {p.name for p in target.iterdir()} == {"index.html", "classify.js", "model.onnx", "labels.json",
                                                   "preprocess.json", "model.json", "ort"}
    assert [p.name for p in tmp_path.iterdir()] == ["site"]  # no staging folder left behind
    # The page as a person uses it: pick a photo, read the answer; the same as the file in ONNX Runtime.
    photo = sample_photos()[0]
    recipe = Preprocess.from_dict(json.loads((target / "preprocess.json").read_text()))
    session = onnxruntime.InferenceSession(str(target / "model.onnx"))
    logits = session.run(None, {session.get_inputs()[0].name: preprocess_images([photo], recipe).numpy()})[0][0]
    expected = json.loads((target / "labels.json").read_text())[int(logits.argmax())]
    page = chromium.new_page()
    page.goto(browser.serve_folder(chromium, target))
    page.set_input_files("#photo", str(photo))
    page.wait_for_function("() => document.querySelector('#top li')", timeout=120_000)
    assert page.text_content("#top li span") == expected
    page.close()


def test_the_exported_page_shows_only_the_latest_photos_answer(chromium, tmp_path):
    """A second photo picked while the first was still being classified added its five rows to the
    first's: ten rows, two photos mixed. Whichever answer comes back first, the latest photo's alone
    is shown."""
    (tmp_path / "index.html").write_bytes(assets.EXPORT_PAGE.read_bytes())
    (tmp_path / "classify.js").write_bytes(assets.CLASSIFIER.read_bytes())
    page = chromium.new_page()
    page.goto(browser.serve_folder(chromium, tmp_path))
    for order in ([0, 1], [1, 0]):
        labels = page.evaluate(
            """async (order) => {
                const pending = [];  // the model's answers, given back in the order the test says
                window.mobilenetPage.classify = (file) => new Promise((resolve) => pending.push({ file, resolve }));
                const answer = (name) => ({
                    ms: 1, modelMs: 1, top: [0, 1, 2, 3, 4].map((i) => ({ label: `${name} ${i}`, probability: 0.1 })),
                });
                const shown = [show(new File(["a"], "a.png")), show(new File(["b"], "b.png"))];
                for (const i of order) {
                    pending[i].resolve(answer(pending[i].file.name));
                    await new Promise((resolve) => setTimeout(resolve, 50));
                }
                await Promise.all(shown);
                return [...document.querySelectorAll("#top li span:first-child")].map((span) => span.textContent);
            }""", order)
        assert labels == [f"b.png {i}" for i in range(5)], order
    page.close()


def test_the_browser_prepares_a_photo_exactly_as_pytorch_does(chromium, tmp_path):
    """classify.js's preprocessing, for every publisher's recipe, against mobilenet.preprocess:
    the same float32 tensor, bit for bit (TF's float resize, Pillow's fixed-point resampling)."""
    from mobilenet.preprocess import Preprocess, load_image, sample_photos
    from mobilenet.weights.publishers import timm_preprocess, transformers_preprocess

    recipes = [
        Preprocess(resolution=224, resize="tf"),  # TF-slim
        Preprocess(resolution=160),  # Keras: Pillow bilinear, central 87.5%
        timm_preprocess(224, alpha=1.25),
        transformers_preprocess(192),
        # An odd margin (107 px on the first photo): torchvision's crop rounds it, transformers' floors it.
        Preprocess(resolution=(160, 200), resize="tf", crop_mode="resize_shorter"),
        Preprocess(resolution=(160, 200), resize="tf", crop_mode="resize_shorter", crop_offset="floor"),
    ]
    (tmp_path / "classify.js").write_bytes(assets.CLASSIFIER.read_bytes())
    (tmp_path / "index.html").write_text('<!doctype html><script src="classify.js"></script>')
    photos = [load_image(p) for p in sample_photos()[:2]]
    handed = {f"pixels/{i}": np.asarray(img.convert("RGBA")).tobytes() for i, img in enumerate(photos)}
    page = chromium.new_page()
    page.goto(browser.serve_folder(chromium, tmp_path, handed))
    for i, image in enumerate(photos):
        for recipe in recipes:
            encoded = page.evaluate(
                """async ([i, width, height, recipe]) => {
                    const pixels = new Uint8Array(await (await fetch(`pixels/${i}`)).arrayBuffer());
                    const bytes = new Uint8Array(MobileNetBrowser.preprocess(pixels, width, height, recipe).buffer);
                    let text = "";
                    for (let at = 0; at < bytes.length; at += 32768) {
                        text += String.fromCharCode(...bytes.subarray(at, at + 32768));
                    }
                    return btoa(text);
                }""", [i, image.width, image.height, recipe.to_dict()])
            tensor = np.frombuffer(base64.b64decode(encoded), dtype="<f4")
            assert np.array_equal(tensor, recipe.eval_transform()(image).numpy().ravel()), recipe
    page.close()


def test_choosing_by_mult_adds_counts_each_models_own_network():
    # Without latency constants /api/choose ranks by mult-adds: each published model's as
    # `mobilenet cost` counts the network its weights load into (TF's 1,001 classes, ...).
    from mobilenet.web.time_view import _choose_by_mult_adds
    from mobilenet.weights import REGISTRY

    candidates = _choose_by_mult_adds(None)["candidates"]
    assert candidates and any(REGISTRY[c["name"]].arch_cfg.num_classes != 1000 for c in candidates)
    for c in candidates:
        assert c["mult_adds"] == network_cost(REGISTRY[c["name"]].arch_cfg).total.mult_adds, c["name"]

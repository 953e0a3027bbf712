"""The explorer's two timing targets (issue 17), in a real headless Chromium against a real server:
how long the cost view takes to settle after a control changes, and the time the page itself shows
for one photo classified in the browser (onnxruntime-web, WASM) beside the server's.

    .venv/bin/python benchmarks/bench_explorer.py [--changes 10] [--weights tf_mobilenet_v1_1.0_224]

Record what it prints in docs/explorer.md with the CPU it names. Needs the [web] extra, Playwright,
Debian's chromium and the bundled onnxruntime-web (`make`).
"""

from __future__ import annotations

import argparse
import statistics
import threading
import time

from mobilenet.cpu import cpu_info
from mobilenet.preprocess import sample_photos
from mobilenet.web import browser
from mobilenet.web.serve import bind, url_of

SETTLED = ("() => !document.body.classList.contains('busy') && "
           "document.querySelector('[data-testid=total-mult-adds]').dataset.value")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--changes", type=int, default=10, help="α changes timed (default 10)")
    args = p.parse_args()
    import uvicorn

    from mobilenet.web.app import create_app

    print(f"CPU: {cpu_info().summary()}")
    sock = bind("127.0.0.1", 0)
    server = uvicorn.Server(uvicorn.Config(create_app(), log_level="warning", lifespan="off"))
    threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True).start()
    while not server.started:
        time.sleep(0.05)
    try:
        with browser.headless_chromium() as context:
            page = context.new_page()
            page.set_default_timeout(300_000)
            page.goto(url_of(sock))
            page.wait_for_function(SETTLED)
            times = []
            for i in range(args.changes):
                alpha = ("0.5", "0.75")[i % 2]
                start = time.perf_counter()
                page.fill("[data-testid=alpha]", alpha)
                page.wait_for_function(SETTLED)
                times.append((time.perf_counter() - start) * 1e3)
            print(f"cost view settled after an α change: median {statistics.median(times):.0f} ms, "
                  f"max {max(times):.0f} ms over {len(times)} changes (includes the page's debounce)")
            page.fill("[data-testid=alpha]", "1.0")
            page.wait_for_function(SETTLED)
            photo = sample_photos()[0]
            page.set_input_files("[data-testid=photo]", str(photo))
            page.wait_for_function("() => document.querySelector('[data-testid=server-time]').textContent && "
                                   "document.querySelector('[data-testid=browser-time]').textContent")
            print(f"{photo.name}: server {page.text_content('[data-testid=server-time]')}; "
                  f"browser {page.text_content('[data-testid=browser-time]')}")
    finally:
        server.should_exit = True
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Take docs/annotating.png: the `a2lc query --serve` page in headless Chromium.

    a2lc init --preset city --n-train 24 --n-val 4 --seed 3 && a2lc pseudolabel
    a2lc train --r 0 --iterations 150 && a2lc acquire --r 1
    a2lc query --r 1 --budget 40 --annotator human
    python docs/annotating_screenshot.py a2lc-work docs/annotating.png

Answers a few masks with the keyboard first (so the progress bar moves), on a copy
of the workspace's query.h5 that is put back afterwards.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import threading
from pathlib import Path

from a2lc_cli.serve import make_server
from a2lc_cli.workspace import Workspace

ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def main(root: str, out: str, answers: int = 6) -> None:
    from playwright.sync_api import sync_playwright

    ws = Workspace(root)
    qpath = ws.artifact(1, "query.h5")
    backup = qpath.with_name("query.h5.screenshot-backup")
    shutil.copy2(qpath, backup)
    server, ds = make_server(ws, ws.config(), 1, port=0)
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    try:
        with sync_playwright() as pw, tempfile.TemporaryDirectory() as profile:
            ctx = pw.chromium.launch_persistent_context(profile, executable_path="/usr/bin/chromium", headless=True,
                                                        args=ARGS, viewport={"width": 1366, "height": 768})
            page = ctx.pages[0] if ctx.pages else ctx.new_page()
            page.goto(server.url)
            page.wait_for_selector("#classes li")
            page.fill("#name", "Ana")
            page.press("#name", "Enter")
            for _ in range(answers):
                page.wait_for_selector("body[data-ready]:not([data-ready=''])")
                ready = page.get_attribute("body", "data-ready")
                page.keyboard.press("1")
                page.wait_for_selector(f"body[data-ready]:not([data-ready='{ready}'])")  # the page's CSP forbids eval
            page.wait_for_selector("body[data-ready]:not([data-ready='']):not([data-ready='none'])")
            page.wait_for_timeout(300)
            page.screenshot(path=out)
            ctx.close()
    finally:
        server.shutdown()
        server.server_close()
        ds.close()
        shutil.move(backup, qpath)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])

"""Look at the built documentation site as a reader would: a headless browser, offline.

    pip install -e ".[docs]" playwright && python -m playwright install chromium
    mkdocs build --strict --site-dir /tmp/site
    python docs/_ext/screenshots.py /tmp/site --out /tmp/site-shots

Serves the built site from a local HTTP server, opens the main pages in headless
Chromium with every request to another host refused (the site must work offline), waits
until MathJax has typeset, and for each page:

* saves a full-page screenshot ``<out>/<page>.png``;
* counts the typeset formulas (``mjx-container``) and the raw ``\\[``/``\\(`` spans left in
  the visible text (formulas MathJax did not typeset);
* lists the requests to other hosts that were refused, and the console errors.

Prints a table of the findings and exits with 1 when a page has raw formulas, refused
requests or console errors. ``tests/test_docs_site.py`` runs it on the site it builds when
Playwright and its Chromium are installed (they are not part of any extra: the browser is
a download of its own).
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import http.server
import pathlib
import sys
import threading

#: The pages a reader meets first, and the ones heaviest in formulas.
PAGES = (
    "index.html",
    "quickstart/index.html",
    "optimizers/index.html",
    "optimizers/adam-family/index.html",
    "optimizers/recent/index.html",
    "schedules/index.html",
    "low-precision/index.html",
    "training-loop/index.html",
)

#: Raw TeX left in the rendered text: a formula MathJax did not typeset.
RAW_MATH = ("\\[", "\\(")


@contextlib.contextmanager
def serve(site: pathlib.Path):
    """The site served on a free local port: yields its base URL."""
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(site))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()


def look(site: pathlib.Path, out: pathlib.Path, pages=PAGES) -> list[dict]:
    """Open every page of ``pages`` that exists in ``site``; the findings, one per page."""
    from playwright.sync_api import sync_playwright

    out.mkdir(parents=True, exist_ok=True)
    findings = []
    with serve(site) as base, sync_playwright() as playwright:
        browser = playwright.chromium.launch()
        for page_path in pages:
            if not (site / page_path).exists():
                continue
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            refused, errors = [], []

            def route(request_route, refused=refused):
                url = request_route.request.url
                if url.startswith(base):
                    request_route.continue_()
                else:
                    refused.append(url)
                    request_route.abort()

            page.route("**/*", route)
            page.on("console", lambda m, errors=errors: errors.append(m.text)
                    if m.type == "error" else None)  # fmt: skip
            page.goto(base + page_path, wait_until="networkidle")
            # MathJax 3 resolves this promise once the page is typeset
            page.evaluate("() => window.MathJax && MathJax.startup ? "
                          "MathJax.startup.promise : null")  # fmt: skip
            text = page.inner_text("body")
            name = page_path.replace("/index.html", "").replace(".html", "") or "index"
            page.screenshot(path=str(out / f"{name.replace('/', '-')}.png"), full_page=True)
            findings.append({
                "page": page_path,
                "typeset": page.locator("mjx-container").count(),
                "raw": sum(text.count(marker) for marker in RAW_MATH),
                "refused": refused,
                "console_errors": errors,
            })  # fmt: skip
            page.close()
        browser.close()
    return findings


def problems(findings: list[dict]) -> list[str]:
    """What is wrong, page by page (empty: the site looks as it should)."""
    found = []
    for f in findings:
        if f["raw"]:
            found.append(f"{f['page']}: {f['raw']} formula(s) left as raw TeX")
        if f["refused"]:
            found.append(f"{f['page']}: loads from other hosts: {', '.join(f['refused'][:3])}")
        if f["console_errors"]:
            found.append(f"{f['page']}: console errors: {'; '.join(f['console_errors'][:3])}")
    return found


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("site", type=pathlib.Path, help="the built site (mkdocs build)")
    parser.add_argument("--out", type=pathlib.Path, default=pathlib.Path("site-screenshots"))
    args = parser.parse_args(argv)
    findings = look(args.site, args.out)
    print("| page | typeset formulas | raw TeX | refused requests | console errors |")
    print("|---|---:|---:|---:|---:|")
    for f in findings:
        print(f"| {f['page']} | {f['typeset']} | {f['raw']} | {len(f['refused'])} | "
              f"{len(f['console_errors'])} |")  # fmt: skip
    found = problems(findings)
    for line in found:
        print(line)
    print(f"screenshots in {args.out}")
    return 1 if found or not findings else 0


if __name__ == "__main__":
    sys.exit(main())

"""How tall a report page is in a browser: the scroll height of ``report.html`` at a fixed
window width, measured by headless Chromium.

    python benchmarks/report_height.py RUN_DIR/report.html                # 1280 px wide
    python benchmarks/report_height.py report.html --width 1024 --open    # every <details> open
    python benchmarks/report_height.py report.html --screenshot top.png --screenshot-height 2400

Prints ``HEIGHT px at WIDTH px`` (with ``--json``: one JSON object). The page is copied to a
temporary file with a few lines of script appended that write the scroll height into an
attribute of ``<html>`` after the load event; Chromium's ``--dump-dom`` returns the DOM with
that attribute. ``--open`` opens every ``<details>`` first (what a printout shows), so the
closed and the open height of one page can be compared. The report itself is not changed.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

__all__ = ["browser", "page_height", "screenshot"]

_MEASURE = """<script>
window.addEventListener("load", function () {
  if (%(open)s) document.querySelectorAll("details").forEach(function (d) { d.open = true; });
  var h = Math.max(document.documentElement.scrollHeight, document.body.scrollHeight);
  document.documentElement.setAttribute("data-xb-height", String(h));
});
</script>"""


def browser() -> str:
    """The path of a headless-capable Chromium, or a one-line error."""
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    raise SystemExit("Error: no Chromium found (install Debian's chromium package)")


def _run(args, tmp: Path, timeout: int = 180) -> str:
    # its own profile: a shared one can block a second instance
    cmd = [browser(), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
           f"--user-data-dir={tmp / 'profile'}", *args]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if result.returncode != 0:
        raise SystemExit(f"Error: chromium failed: {result.stderr.strip().splitlines()[-1:]}")
    return result.stdout


def page_height(path, width: int = 1280, *, open_all: bool = False) -> int:
    """The scroll height in CSS pixels of the page at ``path`` in a window ``width`` px wide."""
    page = Path(path).read_text(encoding="utf-8")
    script = _MEASURE % {"open": "true" if open_all else "false"}
    with tempfile.TemporaryDirectory(prefix="report_height_") as tmp:
        tmp = Path(tmp)
        copy = tmp / "page.html"
        at = page.rfind("</body>")
        copy.write_text(page[:at] + script + page[at:] if at >= 0 else page + script,
                        encoding="utf-8")
        dom = _run([f"--window-size={width},800", "--virtual-time-budget=10000",
                    "--dump-dom", copy.as_uri()], tmp)
    found = re.search(r'data-xb-height="(\d+)"', dom)
    if not found:
        raise SystemExit(f"Error: {path}: the page did not report its height")
    return int(found.group(1))


def screenshot(path, png, width: int = 1280, height: int = 2400) -> Path:
    """A PNG of the page's top ``height`` pixels at ``width``."""
    with tempfile.TemporaryDirectory(prefix="report_shot_") as tmp:
        _run([f"--window-size={width},{height}", f"--screenshot={Path(png).resolve()}",
              Path(path).resolve().as_uri()], Path(tmp))
    return Path(png)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("report", type=Path, help="a report.html")
    parser.add_argument("--width", type=int, default=1280, help="window width in px")
    parser.add_argument("--open", action="store_true", help="open every <details> first")
    parser.add_argument("--screenshot", type=Path, help="also write the page's top as PNG")
    parser.add_argument("--screenshot-height", type=int, default=2400)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    if not args.report.is_file():
        print(f"Error: {args.report} not found; pass a report.html", file=sys.stderr)
        return 2
    if args.width < 200 or args.screenshot_height < 100:
        print("Error: --width must be at least 200 and --screenshot-height at least 100",
              file=sys.stderr)
        return 2
    height = page_height(args.report, args.width, open_all=args.open)
    if args.screenshot:
        screenshot(args.report, args.screenshot, args.width, args.screenshot_height)
    if args.json:
        print(json.dumps(dict(report=str(args.report), width=args.width, open=args.open,
                              height=height)))
    else:
        print(f"{height} px at {args.width} px" + (" (every <details> open)" if args.open
                                                    else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Opens a report in headless Chromium and checks that it renders with every figure.

    python -m analysis.render_check --report=DIR/analysis/report.html [--chromium=/usr/bin/chromium]

Chromium loads a copy of the report with a small script appended that, once the page has loaded, counts
the images and those that decoded (complete, natural width > 0) and writes the counts into the page;
`--dump-dom` gives the page back. A screenshot of the top of the page is saved beside the report
(report_screenshot.png). Exits 1 when an image did not render or the page did not load.

Chromium is not in requirements.txt: on Debian, `apt-get install chromium`.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from absl import app, flags

PROBE = """<script>
window.addEventListener('load', () => {
  const images = Array.from(document.images);
  const ok = images.filter(i => i.complete && i.naturalWidth > 0);
  const out = document.createElement('pre');
  out.id = 'render-check';
  out.textContent = JSON.stringify({images: images.length, rendered: ok.length,
    headings: Array.from(document.querySelectorAll('h2')).map(h => h.textContent)});
  document.body.appendChild(out);
});
</script>"""


def check(report: Path, chromium: str) -> dict:
    """{'images', 'rendered', 'headings'} as Chromium saw them."""
    binary = shutil.which(chromium) or chromium
    if not Path(binary).exists():
        raise FileNotFoundError(f"{chromium}: no Chromium; on Debian: apt-get install chromium")
    with tempfile.TemporaryDirectory() as tmp:
        page = Path(tmp) / "report.html"
        page.write_text(report.read_text().replace("</body>", PROBE + "</body>"))
        common = [binary, "--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=10000",
                  f"--user-data-dir={tmp}/profile"]
        dom = subprocess.run([*common, "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120)
        subprocess.run([*common, f"--screenshot={report.with_name('report_screenshot.png')}",
                        "--window-size=1200,1600", page.as_uri()], capture_output=True, timeout=120)
    found = re.search(r'<pre id="render-check">(.*?)</pre>', dom.stdout, re.S)
    if not found:
        raise RuntimeError(f"{report}: Chromium did not finish loading the page:\n{dom.stderr[-2000:]}")
    return json.loads(found.group(1).replace("&quot;", '"').replace("&amp;", "&"))


def define_flags():
    flags.DEFINE_string("report", None, "the report.html to check")
    flags.DEFINE_string("chromium", "chromium", "Chromium binary")
    flags.mark_flag_as_required("report")


def main(argv):
    del argv
    report = Path(flags.FLAGS.report)
    result = check(report, flags.FLAGS.chromium)
    print(f"{report}: {result['rendered']} of {result['images']} images rendered; sections: "
          f"{', '.join(result['headings'])}")
    if result["images"] == 0 or result["rendered"] != result["images"]:
        sys.exit(1)


if __name__ == "__main__":
    define_flags()
    app.run(main)

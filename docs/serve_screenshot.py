"""Makes docs/serve-page.png: `seglab serve RUN` in headless Chromium after an upload of IMAGE
(the page test's own driver, tests/test_serve_page.py):

    uv run python docs/serve_screenshot.py RUN IMAGE
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.test_serve_page import screenshot_of_the_page  # noqa: E402

if __name__ == "__main__":
    out = Path(__file__).resolve().parent / "serve-page.png"
    screenshot_of_the_page(Path(sys.argv[1]), Path(sys.argv[2]), out)
    print(out)

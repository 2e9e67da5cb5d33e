"""Drive serve's page in headless Chromium (Debian's, through Playwright): load, give a clip, ask.

Used by test_page_browser.py, and to refresh the README's screenshot:

    python -m tests.serve.page_driver --model runs/demo/export --out docs/serve_page.png
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

CHROMIUM = "/usr/bin/chromium"  # Debian's package; Playwright's own browser download is not used
# no background traffic from the browser itself: the tests run with only loopback allowed
QUIET = ["--no-sandbox", "--no-first-run", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", "--disable-default-apps", "--use-fake-ui-for-media-stream",
         "--use-fake-device-for-media-stream"]


def chromium_path() -> str | None:
    return CHROMIUM if Path(CHROMIUM).exists() else shutil.which("chromium")


def launch(playwright):
    return playwright.chromium.launch(executable_path=chromium_path(), headless=True, args=QUIET)


def ask_on_page(page, url: str, instruction: str, *, wav: Path | None = None, record_s: float = 0.0,
                max_tokens: int = 16, timeout_ms: int = 60_000) -> dict:
    """Load the page, upload `wav` (or record `record_s` seconds from the fake microphone), ask.

    Returns what the page shows: model, duration, reply, status, and `updates`, the number of
    times the reply grew while it streamed in.
    """
    page.goto(url + "/")
    page.wait_for_function("document.getElementById('model').textContent !== '…'", timeout=timeout_ms)
    if wav is not None:
        page.set_input_files("#file", str(wav))
    else:
        page.click("#record")
        page.wait_for_timeout(int(record_s * 1000))
        page.click("#record")
    page.wait_for_function("document.getElementById('duration').textContent.endsWith(' s')", timeout=timeout_ms)
    page.fill("#instruction", instruction)
    page.fill("#max-tokens", str(max_tokens))
    page.evaluate("""() => {
        window.__replyUpdates = 0;
        new MutationObserver(() => window.__replyUpdates++).observe(
            document.getElementById('reply'), {childList: true, characterData: true, subtree: true});
    }""")
    page.click("#ask")
    page.wait_for_function("/^(Done|Error)/.test(document.getElementById('status').textContent)",
                           timeout=timeout_ms)
    return {"model": page.text_content("#model"), "duration": page.text_content("#duration"),
            "reply": page.text_content("#reply"), "status": page.text_content("#status"),
            "updates": page.evaluate("window.__replyUpdates")}


def main() -> None:
    from playwright.sync_api import sync_playwright

    from speech_adapter.inference.api import load
    from speech_adapter.serve.app import create_app
    from speech_adapter.serve.config import ServeConfig
    from speech_adapter.serve.server import background
    from tests.inference.export_fixtures import write_wav

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True, help="export dir to serve")
    p.add_argument("--out", type=Path, required=True, help="screenshot PNG to write")
    p.add_argument("--wav", type=Path, default=None, help="clip to upload (default: a synthetic tone)")
    p.add_argument("--instruction", default="What is the gender of the speaker?")
    args = p.parse_args()
    config = ServeConfig(model=args.model)
    wav = args.wav or write_wav(args.out.with_suffix(".wav"), seconds=2.0)
    with background(create_app(load(args.model), config, Path(args.model).resolve().name)) as url:
        with sync_playwright() as pw:
            browser = launch(pw)
            page = browser.new_page(viewport={"width": 900, "height": 760})
            print(ask_on_page(page, url, args.instruction, wav=wav, max_tokens=64))
            page.screenshot(path=str(args.out), full_page=True)
            browser.close()
    if args.wav is None:
        wav.unlink()


if __name__ == "__main__":
    main()

"""Without Chromium the browser tests are skipped loudly, unless PARLEY_REQUIRE_BROWSER=1 makes that a failure."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.processes import ROOT


def run_browser_tests(**env: str) -> subprocess.CompletedProcess:
    environment = {k: v for k, v in os.environ.items() if k != "PARLEY_REQUIRE_BROWSER"} | env
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "tests/browser/test_frames.py",
            "-q",
            "-k",
            "escape",
            "-p",
            "no:cacheprovider",
        ],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_without_chromium_make_test_says_the_browser_tests_were_skipped():
    result = run_browser_tests(PARLEY_CHROMIUM="/nonexistent/chromium")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "BROWSER TESTS SKIPPED: no Chromium found" in result.stdout
    assert "1 skipped" in result.stdout


def test_when_a_browser_is_required_a_missing_chromium_fails():
    result = run_browser_tests(PARLEY_CHROMIUM="/nonexistent/chromium", PARLEY_REQUIRE_BROWSER="1")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "PARLEY_REQUIRE_BROWSER=1 but no Chromium found" in result.stdout
    assert "SKIPPED" not in result.stdout

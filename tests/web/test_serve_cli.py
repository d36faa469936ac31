"""The command line around the web catalogue: ``lorahub serve`` itself (a real process on a free port), and the
same pictures in the terminal world, ``lineage --svg`` and ``show --loss-plot``."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.cli.test_provenance_cli import Home
from tests.web.catalogue import DemoHome
from tests.web.conftest import Served


@pytest.fixture
def home(demo: DemoHome, capsys: pytest.CaptureFixture[str]) -> Home:
    return Home(demo.hub.settings.home, capsys)


def test_lineage_svg_and_loss_plot_are_the_pictures_the_pages_show(home: Home, served: Served, tmp_path: Path) -> None:
    graph = tmp_path / "style.svg"
    _, err = home.run("lineage", "style@1", "--svg", str(graph))
    assert "wrote" in err
    drawn = graph.read_text(encoding="utf-8")
    served_graph = httpx.get(served.url + "/api/adapters/style@1/lineage.svg").text
    assert drawn == re.sub(r"<a href=\"[^\"]*\">(.*?)</a>", r"\1", served_graph)  # the same, less the links
    assert 'data-ref="style@2"' in drawn and "resized-from · rank 2" in drawn

    plot = tmp_path / "loss.svg"
    shown, err = home.run("show", "style@1", "--loss-plot", str(plot))
    assert "style@1" in shown and "wrote" in err
    assert plot.read_text(encoding="utf-8") == httpx.get(served.url + "/api/adapters/style@1/loss.svg").text

    _, err = home.run("show", "ink@1", "--loss-plot", str(tmp_path / "none.svg"), expect=1)
    assert "error[argument-invalid]" in err and "no training record" in err
    assert not (tmp_path / "none.svg").exists()
    _, err = home.run("lineage", "style@1", "--svg", str(graph), "--json", expect=1)
    assert "error[arguments-conflict]" in err
    _, err = home.run("lineage", "style@1", "--svg", str(tmp_path / "no" / "g.svg"), expect=3)
    assert "error[path-not-found]" in err


def test_serve_runs_until_interrupted(demo: DemoHome, served: Served) -> None:
    env = {**os.environ, "LORAHUB_HOME": str(demo.hub.settings.home)}
    command = [sys.executable, "-m", "lorahub", "serve", "--port", "0", "--allow-writes"]
    process = subprocess.Popen(command, env=env, stderr=subprocess.PIPE, text=True)
    try:
        assert process.stderr is not None
        lines = [process.stderr.readline() for _ in range(2)]
        url = re.search(r"http://127\.0\.0\.1:\d+/", lines[0])
        token_link = re.search(r"http://127\.0\.0\.1:\d+/session\?token=[\w-]+", lines[1])
        assert url is not None and token_link is not None, lines
        assert "style@1" in httpx.get(url.group(0) + "adapters/style@1").text
        with httpx.Client() as browser:
            assert browser.get(token_link.group(0)).status_code == 303
            assert browser.get(url.group(0) + "api/session").json()["writes"] is True
    finally:
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=20) == 0

    _, port = served.url.rsplit(":", 1)  # a taken port: said plainly, no traceback
    taken = subprocess.run([*command[:-3], "--port", port], env=env, capture_output=True, text=True, check=False)
    assert taken.returncode == 1 and "error[serve-address-unavailable]" in taken.stderr, taken.stderr
    assert "Traceback" not in taken.stderr

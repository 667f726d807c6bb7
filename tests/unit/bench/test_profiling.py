"""Summaries of py-spy's raw output (one stack per line with a count)."""

from __future__ import annotations

from pathlib import Path

import pytest

from infra.bench.coldstart import parse_importtime
from infra.bench.profiling import render, summarise

RAW = """\
main (app.py:1);refresh (tokenbroker/refresh.py:10);scrub (tokenbroker/redaction.py:60) 6
main (app.py:1);refresh (tokenbroker/refresh.py:12);call (botocore/client.py:5) 3
main (app.py:1);idle (x.py:1) 1
"""


def test_self_and_inclusive_shares_merge_lines_of_one_function(tmp_path: Path) -> None:
    raw = tmp_path / "p.raw"
    raw.write_text(RAW)
    profile = summarise(raw)
    assert profile.samples == 10
    assert profile.self_time[0] == (pytest.approx(0.6), "scrub (tokenbroker/redaction.py)")
    inclusive = dict((frame, share) for share, frame in profile.inclusive)
    assert inclusive["refresh (tokenbroker/refresh.py)"] == pytest.approx(0.9)  # lines 10 and 12
    assert inclusive["main (app.py)"] == pytest.approx(1.0)
    focused = summarise(raw, only=("botocore",))
    assert [frame for _, frame in focused.inclusive] == ["call (botocore/client.py)"]
    assert "10 samples" in render("bench", profile)


def test_empty_or_garbled_output_is_an_empty_profile(tmp_path: Path) -> None:
    raw = tmp_path / "p.raw"
    raw.write_text("not a stack\n\n")
    assert summarise(raw).samples == 0


def test_importtime_self_times_are_summed_per_top_level_package() -> None:
    stderr = (
        "import time: self [us] | cumulative | imported package\n"
        "import time:       500 |        500 |     botocore.exceptions\n"
        "import time:      1500 |       2000 |   botocore\n"
        "import time:      1000 |       3000 | boto3\n"
        "import time:       250 |        250 | tokenbroker.wiring\n"
        "some other line\n"
    )
    assert parse_importtime(stderr) == {"botocore": 2.0, "boto3": 1.0, "tokenbroker": 0.25}

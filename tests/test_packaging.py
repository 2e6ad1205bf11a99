"""Packaging promises CI keeps: the supported Python versions and the dependency floors."""

from __future__ import annotations

import configparser
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def setup_cfg() -> configparser.ConfigParser:
    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg")
    return config


def floors() -> dict[str, str]:
    """``name: version`` for each ``name>=version`` among the runtime requirements."""
    config = setup_cfg()
    lines = (
        config["options"]["install_requires"] + "\n" + config["options.extras_require"]["postgres"]
    ).split()
    found = {}
    for line in lines:
        match = re.fullmatch(r"([A-Za-z0-9_.-]+)(?:\[[\w,]+\])?>=([\d.]+)", line)
        assert match, f"setup.cfg: {line!r} has no >= floor"
        found[match.group(1).lower()] = match.group(2)
    return found


def test_the_floors_run_pins_every_runtime_floor() -> None:
    pins = dict(
        re.findall(
            r"(?m)^([\w.-]+)==([\d.]+)$", (ROOT / "tests" / "constraints-floors.txt").read_text()
        )
    )
    expected = {**floors(), "psycopg-binary": floors()["psycopg"]}  # psycopg[binary]
    assert pins == expected


def test_python_versions_agree_across_setup_cfg_and_ci() -> None:
    config = setup_cfg()
    classified = re.findall(
        r"Programming Language :: Python :: (3\.\d+)", config["metadata"]["classifiers"]
    )
    assert classified == ["3.9", "3.10", "3.11", "3.12", "3.13"]
    assert config["options"]["python_requires"] == f">={classified[0]}"
    ci = (ROOT / ".ci" / "matrix").read_text()
    assert f'supported="{" ".join(classified)}"' in ci
    assert f"{sys.version_info[0]}.{sys.version_info[1]}" in classified

"""Shared fixtures: tiny datasets and models made by the tests themselves, once per session."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

from edgecls import logs
from edgecls.samples import SampleSpec, write_sample

logs.configure(logs.NORMAL)  # as the CLI does: no TensorFlow/absl chatter in the test log
# `auto`'s measured choices go to a cache of this session's own, never the user's ~/.cache/edgecls:
# a choice cached by one run of the suite (with a runtime a test had broken) would otherwise
# decide the next run's, and commands the tests start inherit it
os.environ["EDGECLS_CACHE"] = tempfile.mkdtemp(prefix="edgecls-test-cache-")

IMG = 64  # small images keep CI well inside its limit


@pytest.fixture(scope="session")
def casting_data(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("casting")
    write_sample("casting", out, SampleSpec(n_train=150, n_test=30, size=96, seed=1))
    return out


@pytest.fixture(scope="session")
def insects_data(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("insects")
    # 100 test images per class: a parity gate of 1 point is then 3 images, not 1 (less luck)
    write_sample("insects", out, SampleSpec(n_train=160, n_test=100, size=96, seed=1))
    return out


@pytest.fixture(scope="session")
def insects_run(insects_data, tmp_path_factory) -> Path:
    """A seed-cnn trained on the insect sample: the model later tests export and run."""
    from edgecls.train import TrainConfig, train
    from edgecls.train.models import ModelConfig

    out = tmp_path_factory.mktemp("run") / "insects"
    train(
        TrainConfig(
            data=insects_data,
            out=out,
            model=ModelConfig("seed-cnn", (IMG, IMG)),
            epochs=12,
            seed=3,
            augment=False,
        )
    )
    return out


@pytest.fixture(scope="session")
def int8_bundle(insects_run, tmp_path_factory) -> Path:
    """The insect model exported with int8 TFLite and ONNX, once for every test file: tests
    that change a bundle copy it first."""
    from typer.testing import CliRunner

    from edgecls.cli import app

    out = tmp_path_factory.mktemp("bundle") / "insects"
    args = ["export", str(insects_run), "--int8", "--out", str(out), "--calibration-size", "120"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    return out


@pytest.fixture(scope="session")
def anomaly_run(casting_data, tmp_path_factory) -> Path:
    """An anomaly scorer trained on the casting sample's good images only (train/ok), with its
    test defects (test/def, which have masks) to report on: about a minute on 2 cores."""
    from edgecls.anomaly import AnomalyConfig, train_anomaly

    out = tmp_path_factory.mktemp("run") / "casting-anomaly"
    config = AnomalyConfig(
        data=casting_data / "train" / "ok",
        out=out,
        defects=casting_data / "test" / "def",
        img_size=(IMG, IMG),
        seed=0,
    )
    train_anomaly(config)
    return out


@pytest.fixture(scope="session")
def anomaly_bundle(anomaly_run, tmp_path_factory) -> Path:
    """The anomaly scorer exported with int8 TFLite and ONNX; tests that change it copy it.

    Its gate allows 2 more verdict flips in its 52 images than the product's 0.98: a score
    within the int8 error of the threshold flips, and which images sit there depends on the
    float training, which differs from CPU to CPU (measured here: 0 and 1 flip). The figures
    are asserted with their own tolerances in test_anomaly.py."""
    from typer.testing import CliRunner

    from edgecls.cli import app

    out = tmp_path_factory.mktemp("bundle") / "casting-anomaly"
    args = ["export", str(anomaly_run), "--int8", "--out", str(out), "--min-agreement", "0.94"]
    args += ["--max-drop", "6"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    return out


@pytest.fixture(scope="module")
def browser():
    """A real headless Chromium (Debian's chromium and chromium-driver, which the project's setup
    installs) driven by Selenium: pages are tested as people see them."""
    chromium, driver_path = shutil.which("chromium"), shutil.which("chromedriver")
    if not (chromium and driver_path):
        pytest.skip("chromium and chromium-driver are not installed (tools/system-packages.sh)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(executable_path=driver_path), options=options)
    driver.set_window_size(1200, 950)
    yield driver
    driver.quit()

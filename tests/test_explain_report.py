"""The explain report as a person reads it, in a real headless browser: the colour legend, the true
label beside the prediction, misclassified and least confident images first, the per-class
table, figures that decode from the page itself."""

import json
import shutil

from typer.testing import CliRunner

from edgecls.cli import app


def _photos(insects_data, tmp_path):
    """Beetles filed under dragonflies (a true label the model should contradict), beetles where
    they belong, and cockroaches in a folder that names no class (no true label)."""
    beetles = sorted((insects_data / "test" / "beetles").glob("*.jpg"))
    layout = {
        "dragonflies": beetles[:3],
        "beetles": beetles[3:6],
        "unsorted": sorted((insects_data / "test" / "cockroach").glob("*.jpg"))[:2],
    }
    for folder, files in layout.items():
        (tmp_path / "photos" / folder).mkdir(parents=True)
        for f in files:
            shutil.copy(f, tmp_path / "photos" / folder / f.name)
    return tmp_path / "photos"


def test_the_report_reads_in_a_browser(browser, insects_run, insects_data, tmp_path):
    from selenium.webdriver.common.by import By

    photos = _photos(insects_data, tmp_path)
    out = tmp_path / "report"
    args = ["explain", str(insects_run), "--method", "kernel", "--max-evals", "60"]
    args += ["--segments", "20", "--out", str(out), "--images", str(photos)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    browser.get((out / "report.html").as_uri())

    legend = browser.find_element(By.ID, "legend")
    assert legend.is_displayed()
    for words in ("pushes the class down", "no effect", "pushes the class up"):
        assert words in legend.text
    scale = legend.find_element(By.CLASS_NAME, "scale")
    assert "linear-gradient" in scale.value_of_css_property("background-image")

    cards = browser.find_elements(By.CSS_SELECTOR, "section.image")
    assert len(cards) == 8
    folder = {p.name: p.parent.name for p in photos.rglob("*.jpg")}
    wrong = []
    for card in cards:
        name = card.find_element(By.TAG_NAME, "h3").text.split(":")[0]
        truth = card.find_element(By.CLASS_NAME, "truth").text
        predicted = card.find_element(By.CLASS_NAME, "predicted").text
        if folder[name] == "unsorted":
            assert truth == "true label unknown"
        else:
            assert truth.startswith(f"true: {folder[name]}")
        wrong.append(folder[name] not in ("unsorted", predicted))
        assert ("misclassified" in truth) == wrong[-1]
        img = card.find_element(By.TAG_NAME, "img")
        assert browser.execute_script("return arguments[0].naturalWidth", img) > 500
    assert any(wrong), "beetles filed as dragonflies: the model should contradict one"
    assert wrong == sorted(wrong, reverse=True)  # misclassified first
    confidence = [float(c.get_attribute("data-confidence")) for c in cards]
    for group in (True, False):  # then the least confident first, within each group
        values = [c for c, w in zip(confidence, wrong, strict=True) if w is group]
        assert values == sorted(values)

    table = browser.find_element(By.ID, "per-class")
    rows = {
        r.text.split()[0]: r.text.split()[1:3] for r in table.find_elements(By.TAG_NAME, "tr")[1:]
    }
    assert rows["dragonflies"][0] == "3" and rows["beetles"][0] == "3"
    report = json.loads((out / "explain.json").read_text())
    assert report["summary"]["unlabelled"] == 2
    assert "no true label" in browser.find_element(By.TAG_NAME, "body").text

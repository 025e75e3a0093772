"""The board's pages and the collection on its HTTP server (issue 37): the labelling page and its
JSON API, the home page, the files `edgecls data pull` fetches, and who may reach them. The HTTP
sink's own server on a port of its own, a collection folder filled by hand, and a real headless
Chromium for what a person does on the pages."""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import json
import os
import threading
import time
from types import SimpleNamespace

import cv2
import numpy as np
import pytest

from edgecls.runtime.collection.store import HIDDEN, QUEUE, UNCLEAR, CollectStore
from edgecls.runtime.loop_options import HttpConfig
from edgecls.runtime.records import Identity, Record, Summary
from edgecls.runtime.sinks import SinkContext
from edgecls.runtime.sinks.http_auth import COOKIE
from edgecls.runtime.sinks.http_view import HttpSink

TOKEN = "t0k-secret"
BEARER = {"Authorization": f"Bearer {TOKEN}"}
EVIL = "<img src=x onerror=window.pwned=1>"  # a class name that is markup: shown as text
CLASSES = ("beetles", "cockroach", EVIL)
ID = Identity("insects", "model_int8.tflite", "ab" * 32, CLASSES)


def name_of(i: int) -> str:
    return f"c-20250101T{i // 3600:02d}{i // 60 % 60:02d}{i % 60:02d}.000000Z-f{i:08d}.jpg"


def fill(store: CollectStore, n: int) -> list[str]:
    """`n` queued frames, as the collecting sink writes them: frame i at time 1000 + i, its top-1
    margin shuffled so that newest first and most uncertain first differ."""
    names = []
    for i in range(n):
        top = 0.4 + 0.5 * ((i * 7) % n) / n
        probs = {CLASSES[0]: top, CLASSES[1]: (1 - top) * 0.75, CLASSES[2]: (1 - top) * 0.25}
        record = {"type": "frame", "frame": i, "time": 1000.0 + i, "label": None,
                  "confidence": top, "probs": probs, **ID.to_dict()}  # fmt: skip
        _, jpeg = cv2.imencode(".jpg", np.full((24, 32, 3), 10 * i % 256, np.uint8))
        sidecar = {"reasons": ["margin"] if i % 2 else ["audit"], "record": record}
        store.add(name_of(i), jpeg.tobytes(), sidecar)
        names.append(name_of(i))
    return names


@pytest.fixture
def store(tmp_path) -> CollectStore:
    store = CollectStore(tmp_path / "collect", CLASSES)
    store.create()
    return store


@contextlib.contextmanager
def serve(store: CollectStore | None, token: str | None = TOKEN, user: str | None = None):
    """The HTTP sink on a free port with `store` as the run's collection; yields (sink, port)."""
    context = SinkContext(
        summary=Summary(), stop=threading.Event(), log=lambda m: None, identity=ID, collect=store
    )
    sink = HttpSink(SimpleNamespace(http=HttpConfig(port=0, token=token, user=user)))
    sink.open(context)
    try:
        yield sink, sink.port
    finally:
        sink.close()


def call(port: int, path: str, method: str = "GET", headers: dict | None = None, body=None):
    """(status, headers, body) of one request on a connection of its own."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        data = json.dumps(body).encode() if isinstance(body, dict) else body
        conn.request(method, path, body=data, headers=headers or {})
        r = conn.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
    finally:
        conn.close()


def head_of(port: int, path: str, headers: dict | None = None) -> tuple[int, dict]:
    """A GET's status and headers only (a stream's body never ends)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path, headers=headers or {})
        r = conn.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}
    finally:
        conn.close()


def record(i: int) -> Record:
    return Record(
        frame=i, time=time.time(), label="beetles", top="beetles", confidence=0.9,
        probs=(0.9, 0.07, 0.03), latency_ms=1.5, source="cam", identity=ID,
        image=np.full((48, 64, 3), (i * 7) % 256, np.uint8),
    )  # fmt: skip


@contextlib.contextmanager
def feeding(sink: HttpSink, fps: float = 20.0):
    """Frames into the sink, as the loop hands them over, until the block ends."""
    done = threading.Event()

    def feed():
        i = 0
        while not done.wait(1 / fps):
            sink.context.summary.frames += 1
            sink.context.summary.classified += 1
            sink.context.summary.last_frame = time.monotonic()
            sink.handle(record(i))
            i += 1

    thread = threading.Thread(target=feed, daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join(5)


def place(store: CollectStore, name: str) -> list[str]:
    """Every place on disk where the frame's image is (one, if nothing was lost or doubled)."""
    places = [f"{HIDDEN}/{QUEUE}", f"{HIDDEN}/{UNCLEAR}", *CLASSES]
    return [p for p in places if (store.folder / p / name).is_file()]


# --- the home page and the stream at / ---------------------------------------------------------


def test_a_client_that_does_not_ask_for_html_still_gets_the_stream_at_root(store):
    with serve(store, token=None) as (sink, port), feeding(sink):
        for headers in ({}, {"Accept": "*/*"}, {"Accept": "image/jpeg"}):  # curl, ffmpeg, an NVR
            status, got = head_of(port, "/", headers)
            assert status == 200 and got["content-type"].startswith("multipart/x-mixed-replace")
        status, got = head_of(port, "/stream?fps=2")
        assert status == 200 and got["content-type"].startswith("multipart/x-mixed-replace")
        assert call(port, "/stream?fps=100")[0] == 400
        assert wait_for(lambda: sink.state.viewers == 0)  # the views above noticed they ended
        cap = cv2.VideoCapture(f"http://127.0.0.1:{port}/", cv2.CAP_FFMPEG)
        assert cap.isOpened()
        ok, frame = cap.read()
        cap.release()
        assert ok and frame.shape == (48, 64, 3)
        browser = {"Accept": "text/html,application/xhtml+xml,*/*;q=0.8"}
        status, got, body = call(port, "/", headers=browser)
        assert status == 200 and got["content-type"].startswith("text/html")
        assert "script-src 'nonce-" in got["content-security-policy"]
        assert b'src="/stream"' in body and b'href="/label"' in body
        status, got, body = call(port, "/", "HEAD", browser)
        assert status == 200 and got["content-type"].startswith("text/html") and body == b""


def test_the_home_page_escapes_the_model_and_links_label_only_when_collecting(store):
    global ID
    saved, ID = ID, Identity("<script>bad()</script>", "a&b.tflite", "cd" * 32, CLASSES)
    try:
        with serve(None) as (_, port):
            body = call(port, "/", headers={**BEARER, "Accept": "text/html"})[2].decode()
    finally:
        ID = saved
    assert "<script>bad()" not in body and "&lt;script&gt;bad()&lt;/script&gt;" in body
    assert "a&amp;b.tflite" in body and "cdcdcdcdcdcd" in body
    assert 'href="/label"' not in body and 'href="/metrics"' in body


def wait_for(predicate, seconds: float = 10.0) -> bool:
    until = time.monotonic() + seconds
    while time.monotonic() < until:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


# --- who may reach it ---------------------------------------------------------------------------


def test_without_the_token_every_collection_path_is_refused(store):
    names = fill(store, 2)
    gets = ["/label", "/label/queue", f"/label/image/{names[0]}", "/collect/files",
            f"/collect/file/{HIDDEN}/{QUEUE}/{names[0]}", "/", "/stream"]  # fmt: skip
    posts = ["/label", "/label/undo", "/label/lease"]
    wrong = [{}, {"Authorization": "Bearer nope"}, {"Cookie": f"{COOKIE}={TOKEN}"},
             {"Cookie": f"{COOKIE}=0000"}]  # fmt: skip
    with serve(store) as (_, port):
        for headers in wrong:
            for path in gets:
                assert call(port, path, headers=headers)[0] == 401, (path, headers)
            for path in posts:
                body = {"name": names[0], "label": "beetles", "who": "a"}
                assert call(port, path, "POST", headers, body)[0] == 401, (path, headers)
        status, got, _ = call(port, "/label?token=nope")
        assert status == 401 and "set-cookie" not in got
        assert call(port, "/collect/files", headers=BEARER)[0] == 200
        assert call(port, "/health")[0] == 503  # open as before; no frame yet
    assert place(store, names[0]) == [f"{HIDDEN}/{QUEUE}"]


def test_a_token_in_the_url_becomes_a_cookie_that_opens_the_pages(store):
    fill(store, 1)
    with serve(store) as (_, port):
        status, got, _ = call(port, f"/label?order=uncertain&token={TOKEN}")
        assert status == 303 and got["location"] == "/label?order=uncertain"
        cookie = got["set-cookie"]
        assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/" in cookie
        assert TOKEN not in cookie  # the browser keeps a digest, not the token
        jar = {"Cookie": cookie.split(";")[0]}
        for path in ("/label", "/label/queue", "/collect/files", "/latest"):
            assert call(port, path, headers=jar)[0] in (200, 503), path  # /latest: no frame yet
        # a URL that a browser would read as another site's is sent to this one
        status, got, _ = call(port, f"//evil.example/x?token={TOKEN}")
        assert status == 303 and got["location"] == "/evil.example/x"


def test_basic_auth_opens_the_pages_and_names_the_labeller(store):
    import base64

    names = fill(store, 1)
    basic = {"Authorization": "Basic " + base64.b64encode(b"ops:pw").decode()}
    with serve(store, token=None, user="ops:pw") as (_, port):
        status, got, _ = call(port, "/label")
        assert status == 401 and got["www-authenticate"] == 'Basic realm="edgecls"'
        assert call(port, "/label", headers=basic)[0] == 200
        label = {"name": names[0], "label": "cockroach"}
        assert call(port, "/label", "POST", basic, label)[0] == 200
    assert store.sidecar(names[0])["history"][0]["by"] == "basic ops from 127.0.0.1"


def test_head_answers_the_new_paths_without_a_body(store):
    names = fill(store, 1)
    queued = f"{HIDDEN}/{QUEUE}/{names[0]}"
    paths = ["/label", "/label/queue", f"/label/image/{names[0]}", "/collect/files",
             f"/collect/file/{queued}", "/label/x", "/collect/file/x"]  # fmt: skip
    with serve(store) as (_, port):
        for path in paths:
            got, head = call(port, path, headers=BEARER), call(port, path, "HEAD", BEARER)
            assert head[0] == got[0] and head[2] == b"" and got[2] != b"", path
            assert head[1]["content-type"] == got[1]["content-type"], path
            assert head[1]["content-length"] == got[1]["content-length"], path


def test_a_post_from_another_site_is_refused(store):
    names = fill(store, 1)
    with serve(store) as (_, port):
        status, got, _ = call(port, f"/label?token={TOKEN}")
        jar = {"Cookie": got["set-cookie"].split(";")[0]}
        body = {"name": names[0], "label": "beetles"}
        others = ({"Origin": "http://evil.example"}, {"Origin": "null"},
                  {"Sec-Fetch-Site": "cross-site"}, {"Origin": "http://127.0.0.1:1"})  # fmt: skip
        for other in others:
            status, _, answer = call(port, "/label", "POST", {**jar, **other}, body)
            assert status == 403 and "refused" in json.loads(answer)["error"], other
        assert place(store, names[0]) == [f"{HIDDEN}/{QUEUE}"]
        own = {**jar, "Origin": f"http://127.0.0.1:{port}", "Sec-Fetch-Site": "same-origin"}
        assert call(port, "/label", "POST", own, body)[0] == 200
    assert place(store, names[0]) == ["beetles"]


# --- the labelling API -------------------------------------------------------------------------


def test_label_undo_and_what_the_api_refuses(store):
    names = fill(store, 3)
    with serve(store) as (_, port):
        status, _, body = call(
            port, "/label", "POST", BEARER, {"name": names[0], "label": "beetles"}
        )
        assert status == 200 and json.loads(body)["progress"]["labelled"]["beetles"] == 1
        assert place(store, names[0]) == ["beetles"]
        again = call(port, "/label", "POST", BEARER, {"name": names[0], "label": "cockroach"})
        assert again[0] == 409 and "labelled 'beetles' already" in json.loads(again[2])["error"]
        refused = [
            ({"name": names[1], "label": "moth"}, 400),  # not a class
            ({"name": name_of(99), "label": "beetles"}, 404),  # no such frame
            ({"name": "../../etc/passwd", "label": "beetles"}, 404),
            ({"name": names[1]}, 400),  # no label
        ]
        for body, code in refused:
            status, _, answer = call(port, "/label", "POST", BEARER, body)
            assert status == code and "\n" not in json.loads(answer)["error"], body
        assert call(port, "/label", "POST", BEARER, b"{not json")[0] == 400
        status, _, body = call(port, "/label/undo", "POST", BEARER, {"name": names[0]})
        assert status == 200 and json.loads(body)["label"] == "beetles"
        assert place(store, names[0]) == [f"{HIDDEN}/{QUEUE}"]
        assert call(port, "/label/undo", "POST", BEARER, {"name": names[0]})[0] == 409
        unclear = {"name": names[2], "label": "unclear"}
        assert call(port, "/label", "POST", BEARER, unclear)[0] == 200
        assert place(store, names[2]) == [f"{HIDDEN}/{UNCLEAR}"]
        # any frame's image, wherever it is now; nothing else
        status, got, body = call(port, f"/label/image/{names[2]}", headers=BEARER)
        assert status == 200 and got["content-type"] == "image/jpeg"
        assert body == (store.folder / HIDDEN / UNCLEAR / names[2]).read_bytes()
        assert call(port, "/label/image/..%2F..%2Fetc%2Fpasswd", headers=BEARER)[0] == 404
    history = store.sidecar(names[0])["history"]
    assert [h["to"] for h in history] == ["beetles", "queue"]
    assert history[0]["by"] == "token from 127.0.0.1"


def test_the_queue_in_either_order_leaves_out_what_another_labeller_is_shown(store):
    names = fill(store, 6)
    with serve(store) as (_, port):

        def queue(order: str, who: str) -> dict:
            status, _, body = call(port, f"/label/queue?order={order}&who={who}", headers=BEARER)
            assert status == 200
            return json.loads(body)

        newest = queue("newest", "a")
        assert [i["name"] for i in newest["items"]] == names[::-1]
        assert newest["classes"] == list(CLASSES) and newest["progress"]["queued"] == 6
        margins = [i["margin"] for i in queue("uncertain", "a")["items"]]
        assert margins == sorted(margins) and margins != [i["margin"] for i in newest["items"]]
        first = newest["items"][0]
        assert first["guess"] == "beetles" and first["reasons"] == ["margin"]
        lease = {"name": names[5], "who": "a"}
        assert call(port, "/label/lease", "POST", BEARER, lease)[0] == 200
        assert names[5] not in [i["name"] for i in queue("newest", "b")["items"]]
        assert names[5] in [i["name"] for i in queue("newest", "a")["items"]]
        taken = call(port, "/label/lease", "POST", BEARER, {"name": names[5], "who": "b"})
        assert taken[0] == 409
        # a lease is advice: whoever labels first wins, and the lease ends with the frame
        label = {"name": names[5], "label": "cockroach"}
        assert call(port, "/label", "POST", BEARER, label)[0] == 200
        assert call(port, "/label/lease", "POST", BEARER, {"name": names[5], "who": "b"})[0] == 409
        # a labeller's new lease ends its old one
        assert call(port, "/label/lease", "POST", BEARER, {"name": names[4], "who": "a"})[0] == 200
        assert call(port, "/label/lease", "POST", BEARER, {"name": names[3], "who": "a"})[0] == 200
        assert names[4] in [i["name"] for i in queue("newest", "b")["items"]]
        for bad in ("order=random", "who=a%20b", "who=" + "a" * 65):
            assert call(port, f"/label/queue?{bad}", headers=BEARER)[0] == 400, bad


def test_two_labellers_at_once_never_lose_or_double_a_frame(store):
    names = fill(store, 24)
    results: dict[str, list[int]] = {n: [] for n in names}
    with serve(store) as (_, port):

        def labeller(k: int):
            for name in names:
                body = {"name": name, "label": CLASSES[k % 2]}
                results[name].append(call(port, "/label", "POST", BEARER, body)[0])

        threads = [threading.Thread(target=labeller, args=(k,)) for k in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
    for name in names:
        assert sorted(results[name]) == [200, 409, 409, 409], (name, results[name])
        assert len(place(store, name)) == 1 and place(store, name)[0] in CLASSES[:2]
    on_disk = [p for c in CLASSES for p in (store.folder / c).glob("*.jpg")]
    assert len(on_disk) == len(names) and not list(store.path(QUEUE).glob("*.jpg"))


def test_without_collect_the_label_and_collect_paths_are_404(store):
    with serve(None) as (_, port):
        for path in ("/label", "/label/queue", f"/label/image/{name_of(1)}", "/collect/files",
                     f"/collect/file/beetles/{name_of(1)}"):  # fmt: skip
            status, got, body = call(port, path, headers=BEARER)
            assert status == 404 and got["content-type"] == "application/json", path
            assert "--collect" in json.loads(body)["error"] and body.count(b"\n") == 0
        status, _, body = call(port, "/label", "POST", BEARER, {"name": "x", "label": "y"})
        assert status == 404 and "--collect" in json.loads(body)["error"]


# --- the files, for `edgecls data pull` --------------------------------------------------------


def test_collect_files_lists_and_serves_them_with_range_resume(store):
    names = fill(store, 3)
    store.label(names[0], "beetles")
    store.label(names[1], "unclear")
    big = store.folder / "cockroach" / name_of(50)
    big.parent.mkdir()
    big.write_bytes(os.urandom(700_000))  # larger than a chunk: sent in several
    (store.folder / "beetles" / "notours.jpg").write_bytes(b"x")  # not a name edgecls wrote
    with serve(store) as (_, port):
        listing = json.loads(call(port, "/collect/files", headers=BEARER)[2])
        assert listing["classes"] == list(CLASSES)
        paths = {f["path"]: f for f in listing["files"]}
        assert set(paths) == {f"beetles/{names[0]}", f"cockroach/{name_of(50)}"}
        every = json.loads(call(port, "/collect/files?all=1", headers=BEARER)[2])["files"]
        assert {f["path"] for f in every} == set(paths) | {
            f"{HIDDEN}/{UNCLEAR}/{names[1]}",
            f"{HIDDEN}/{QUEUE}/{names[2]}",
        }
        entry = paths[f"cockroach/{name_of(50)}"]
        data = big.read_bytes()
        assert entry["bytes"] == len(data) and entry["sha256"] == hashlib.sha256(data).hexdigest()
        url = f"/collect/file/cockroach/{name_of(50)}"
        status, got, body = call(port, url, headers=BEARER)
        assert status == 200 and body == data and got["etag"] == f'"{entry["sha256"]}"'
        assert got["accept-ranges"] == "bytes"
        # a transfer cut at 123456 bytes resumes with exactly the tail
        status, got, body = call(port, url, headers={**BEARER, "Range": "bytes=123456-"})
        assert status == 206 and body == data[123456:]
        assert got["content-range"] == f"bytes 123456-{len(data) - 1}/{len(data)}"
        same = {**BEARER, "Range": "bytes=100-", "If-Range": got["etag"]}
        assert call(port, url, headers=same)[2] == data[100:]
        changed = {**BEARER, "Range": "bytes=100-", "If-Range": '"0000"'}
        assert call(port, url, headers=changed)[:1] == (200,)  # not the same file: all of it
        status, got, body = call(port, url, headers={**BEARER, "Range": f"bytes={len(data)}-"})
        assert status == 416 and got["content-range"] == f"bytes */{len(data)}"
        status, got, body = call(port, url, "HEAD", BEARER)
        assert status == 200 and body == b"" and int(got["content-length"]) == len(data)
        for path in (
            "/collect/file/../../etc/passwd",
            "/collect/file/%2e%2e/%2e%2e/etc/passwd",
            "/collect/file/.edgecls/meta/" + names[0][:-4] + ".json",
            f"/collect/file/.edgecls/full/{names[0]}",
            "/collect/file/beetles/notours.jpg",
            f"/collect/file/beetles/{names[1]}",  # unclear, not beetles
            f"/collect/file//{store.folder}/beetles/{names[0]}",
        ):
            assert call(port, path, headers=BEARER)[0] == 404, path


# --- in a browser ------------------------------------------------------------------------------


def shown(browser, id_: str) -> str:
    from selenium.webdriver.common.by import By

    return browser.find_element(By.ID, id_).text


def until(browser, predicate, seconds: float = 10.0):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(browser, seconds, poll_frequency=0.05).until(lambda b: predicate())


def press(browser, key: str) -> None:
    from selenium.webdriver.common.action_chains import ActionChains

    ActionChains(browser).send_keys(key).perform()


def progress_of(browser) -> dict[str, str]:
    """The progress table as the page shows it, read in one go (the page redraws it)."""
    return browser.execute_script(
        "return Object.fromEntries(Array.from(document.querySelectorAll('#progress tr'),"
        " (tr) => [tr.dataset.key, tr.children[1].textContent]))"
    )


def test_labelling_with_the_keyboard_in_a_browser(browser, store):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    names = fill(store, 6)  # newest first: names[5], names[4], ...
    with serve(store) as (_, port):
        browser.get(f"http://127.0.0.1:{port}/label?token={TOKEN}")
        assert browser.current_url == f"http://127.0.0.1:{port}/label"  # the token is gone
        until(browser, lambda: shown(browser, "name") == names[5])
        frame = browser.find_element(By.ID, "frame")
        until(browser, lambda: browser.execute_script("return arguments[0].naturalWidth", frame))
        assert shown(browser, "guess") == "beetles" and shown(browser, "reasons") == "margin"
        buttons = browser.find_elements(By.CSS_SELECTOR, "#classes button")
        assert [b.text for b in buttons] == ["1 beetles", "2 cockroach", f"3 {EVIL}"]
        assert browser.execute_script("return window.pwned") is None  # the class name is text
        assert all(b.size["height"] >= 40 for b in buttons)  # a finger's size on a phone
        press(browser, "1")
        until(browser, lambda: shown(browser, "name") == names[4])
        press(browser, "2")
        until(browser, lambda: shown(browser, "name") == names[3])
        press(browser, "x")
        until(browser, lambda: shown(browser, "name") == names[2])
        press(browser, "s")  # skipped: stays in the queue
        until(browser, lambda: shown(browser, "name") == names[1])
        assert place(store, names[5]) == ["beetles"] and place(store, names[4]) == ["cockroach"]
        assert place(store, names[3]) == [f"{HIDDEN}/{UNCLEAR}"]
        assert place(store, names[2]) == [f"{HIDDEN}/{QUEUE}"]
        until(browser, lambda: progress_of(browser)["1 beetles"] == "1")
        assert progress_of(browser)["2 cockroach"] == "1" and progress_of(browser)["unclear"] == "1"
        press(browser, "u")  # the page's last label, "unclear", is undone and shown again
        until(browser, lambda: shown(browser, "name") == names[3])
        assert "undone" in shown(browser, "status")
        assert place(store, names[3]) == [f"{HIDDEN}/{QUEUE}"]
        press(browser, Keys.BACKSPACE)  # then the one before: names[4], cockroach
        until(browser, lambda: shown(browser, "name") == names[4])
        until(browser, lambda: progress_of(browser)["2 cockroach"] == "0")
        assert place(store, names[4]) == [f"{HIDDEN}/{QUEUE}"]
        browser.find_elements(By.CSS_SELECTOR, "#classes button")[2].click()  # a tap, as on a phone
        until(browser, lambda: place(store, names[4]) == [EVIL])
        until(browser, lambda: progress_of(browser)[f"3 {EVIL}"] == "1")
        browser.find_element(By.ID, "order-uncertain").click()
        margins = sorted((i.margin, i.name) for i in store.items())
        until(browser, lambda: shown(browser, "name") == margins[0][1])


def test_two_labellers_in_a_browser_see_different_frames_and_a_late_one_moves_on(browser, store):
    names = fill(store, 4)
    with serve(store) as (_, port):
        browser.get(f"http://127.0.0.1:{port}/label?token={TOKEN}")
        until(browser, lambda: shown(browser, "name") == names[3])
        first = browser.current_window_handle
        browser.switch_to.new_window("tab")  # a second labeller (the same cookie)
        try:
            browser.get(f"http://127.0.0.1:{port}/label")
            until(browser, lambda: shown(browser, "name") == names[2])  # not the first's frame
        finally:
            browser.close()
            browser.switch_to.window(first)
        # a third labeller labels the first's frame through the API, without a lease
        body = {"name": names[3], "label": "cockroach"}
        assert call(port, "/label", "POST", BEARER, body)[0] == 200
        press(browser, "1")
        until(browser, lambda: "Someone else was first" in shown(browser, "status"))
        until(browser, lambda: shown(browser, "name") not in ("", "-", names[3]))
        assert place(store, names[3]) == ["cockroach"]  # one label, one place
        until(browser, lambda: progress_of(browser)["2 cockroach"] == "1")
        assert progress_of(browser)["1 beetles"] == "0"


def test_the_home_page_in_a_browser(browser, store):
    from selenium.webdriver.common.by import By

    with serve(store) as (sink, port), feeding(sink):
        browser.get(f"http://127.0.0.1:{port}/?token={TOKEN}")
        live = browser.find_element(By.ID, "live")
        until(browser, lambda: browser.execute_script("return arguments[0].naturalWidth", live))
        assert browser.execute_script("return arguments[0].naturalHeight", live) == 48
        until(browser, lambda: shown(browser, "frames") not in ("", "-"))
        until(browser, lambda: int(shown(browser, "frames")) > 1)
        assert shown(browser, "state") == "ok" and shown(browser, "drift") == "off"
        assert shown(browser, "bundle") == "insects" and shown(browser, "sha256") == "ab" * 6
        until(browser, lambda: len(browser.find_elements(By.CSS_SELECTOR, "#recent-rows tr")) >= 2)
        heads = [th.text for th in browser.find_elements(By.CSS_SELECTOR, "#recent-head th")]
        assert heads == ["frame", "time", "label", "confidence", "ms"]
        links = [a.get_attribute("href") for a in browser.find_elements(By.CSS_SELECTOR, "nav a")]
        assert [link.rsplit("/", 1)[1] for link in links] == ["label", "metrics", "latest"]
        browser.get("about:blank")  # the view's connection ends, and its viewer's slot

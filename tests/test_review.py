"""`synthmix review`: the decisions file, and the page a person accepts or rejects synthetic images on,
driven in headless Chromium with real clicks and key presses (Chrome DevTools protocol over a pipe)."""

from __future__ import annotations

import fcntl
import http.client
import json
import os
import re
import select
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import yaml

from conftest import write_image
from synthmix.cli import run as cli
from synthmix.core.errors import UserError
from synthmix.core.files import sha256_file
from synthmix.data.split import SplitSizes, prepare_split
from synthmix.data.vetting import (
    DECISIONS_PATH,
    Decision,
    left_out,
    read_decisions,
    set_decision,
    write_decisions,
)
from synthmix.generate.manifest import SyntheticRow, read_synthetic_manifest, write_synthetic_manifest
from test_report import CHROMIUM_FLAGS, _chromium

CLASSES = ("a", "b")
SYNTHETIC_PER_CLASS = 3
SECRET = "top-secret-marker-4711"


# --- a tiny project: 2 classes, 4 train + 2 test real images, 3 synthetic images per class -----------


def write_synthetic(label: str, index: int, seed: int, folder: Path = Path("synthetic")) -> SyntheticRow:
    path = write_image(folder / label / f"{index:04d}.png", seed)
    return SyntheticRow(path, label, index, seed, "ddpm", "m", "", "p", 1, 1.0, 0, sha256_file(path))


@pytest.fixture
def project(in_tmp: Path) -> Path:
    for c, label in enumerate(CLASSES):
        for i in range(6):
            write_image(Path("data") / label / f"{i:03d}.png", 10 * c + i)
    prepare_split(Path("data"), Path("prepared"), SplitSizes(4, 2), seed=0)
    rows = [write_synthetic(label, i, 100 + 10 * c + i) for c, label in enumerate(CLASSES) for i in range(3)]
    write_synthetic_manifest(rows, Path("synthetic/manifest.csv"))
    params = {
        "data": {"train_per_class": 4, "test_per_class": 2},
        "generate": {"images_per_class": 3},
        "study": {"mixes": ["4r0s", "4r3s"], "baseline": "4r0s"},
    }
    Path("params.yaml").write_text(yaml.safe_dump(params) + f"# {SECRET}\n")
    return in_tmp


def rejected(decisions: list[Decision], rows: list[SyntheticRow]) -> set[Path]:
    """The paths of `rows` (generator ddpm's) that a @reviewed mix leaves out."""
    out = left_out("reviewed", "ddpm", [], decisions)
    return {row.path for row in rows if row.sha256 in out}


def synthetic_paths() -> list[str]:
    return [r.path.as_posix() for r in read_synthetic_manifest(Path("synthetic/manifest.csv"))]


# --- the server, as `synthmix review` runs it --------------------------------------------------------


class Server:
    """`python -m synthmix review --port 0` in `root`; the URL it prints tells its port."""

    def __init__(self, root: Path, *args: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "synthmix", "review", "--port", "0", *args],
            cwd=root,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        first = self._first_line()
        match = re.search(r"http://127\.0\.0\.1:(\d+)/", first)
        if match is None:
            self.proc.kill()
            pytest.fail(f"synthmix review did not start: {first}{self.proc.communicate()[1]}")
        self.url, self.port = match.group(0), int(match.group(1))
        self.output = first

    def _first_line(self) -> str:
        ready, _, _ = select.select([self.proc.stderr], [], [], 30)
        assert ready, "synthmix review printed nothing within 30 s"
        return self.proc.stderr.readline()

    def get(self, target: str, **headers: str) -> tuple[int, bytes]:
        """GET `target` exactly as written (no normalising of `..` or percent escapes)."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            conn.request("GET", target, headers=headers)
            response = conn.getresponse()
            return response.status, response.read()
        finally:
            conn.close()

    def post(self, body: object, content_type: str = "application/json", **headers: str) -> tuple[int, dict]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            data = json.dumps(body).encode()
            conn.request("POST", "/decision", data, {"Content-Type": content_type, **headers})
            response = conn.getresponse()
            return response.status, json.loads(response.read())
        finally:
            conn.close()

    def stop(self, sig: int = signal.SIGTERM) -> str:
        """Stop it with `sig`; it must exit 0 without a traceback. Returns what it printed."""
        self.proc.send_signal(sig)
        _, err = self.proc.communicate(timeout=15)
        output = self.output + err
        assert self.proc.returncode == 0, output
        assert "Traceback" not in output and "Stopped." in output
        return output


@contextmanager
def serving(root: Path) -> Iterator[Server]:
    """A server for the block, stopped after it: cleanly (checked) when the block succeeded."""
    server = Server(root)
    try:
        yield server
    except BaseException:
        server.proc.kill()
        server.proc.communicate()
        raise
    if server.proc.poll() is None:
        server.stop()


# --- the decisions file ---------------------------------------------------------------------------


def decision(path: str, verdict: str = "reject", sha: str = "s", generator: str = "ddpm") -> Decision:
    return Decision(generator, Path(path), sha, verdict, "2030-01-01T00:00:00+00:00")  # type: ignore[arg-type]


def test_decisions_round_trip_one_row_per_image_the_latest_winning(in_tmp):
    first, later = decision("synthetic/b/0001.png", "reject"), decision("synthetic/b/0001.png", "accept")
    other = decision("synthetic/@lora/a/0000.png", generator="lora", sha="t")
    write_decisions([first, other, later], DECISIONS_PATH)
    assert read_decisions(DECISIONS_PATH) == [later, other]  # sorted by generator, then path
    assert DECISIONS_PATH.read_text().splitlines()[0] == "generator,path,sha256,decision,decided_at"
    assert not list(DECISIONS_PATH.parent.glob(".*tmp*"))  # no temp file left behind


def test_a_damaged_decisions_file_is_a_user_error_naming_it(in_tmp):
    DECISIONS_PATH.parent.mkdir()
    DECISIONS_PATH.write_text("path,verdict\nx.png,no\n")
    with pytest.raises(UserError, match=r"vetting/decisions\.csv is not a synthmix decisions file"):
        read_decisions(DECISIONS_PATH)
    DECISIONS_PATH.write_text("generator,path,sha256,decision,decided_at\nddpm,x.png,s,maybe,t\n")
    with pytest.raises(UserError, match="not 'maybe'"):
        read_decisions(DECISIONS_PATH)


def test_two_concurrent_writers_both_land(in_tmp):
    def write(generator: str) -> None:
        for i in range(15):
            set_decision(decision(f"synthetic/a/{i:04d}.png", generator=generator, sha=f"{generator}{i}"))

    threads = [threading.Thread(target=write, args=(name,)) for name in ("ddpm", "lora")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(read_decisions()) == 30  # neither writer's decisions overwrote the other's


def test_a_rejection_holds_for_the_image_judged_not_a_regenerated_one_at_its_path(project):
    rows = read_synthetic_manifest(Path("synthetic/manifest.csv"))
    write_decisions([decision(r.path.as_posix(), sha=r.sha256) for r in rows[:2]])
    assert rejected(read_decisions(), rows) == {rows[0].path, rows[1].path}
    regenerated = write_synthetic(rows[0].label, rows[0].index, seed=999)  # a new image, same path
    assert regenerated.path == rows[0].path and regenerated.sha256 != rows[0].sha256
    assert rejected(read_decisions(), [regenerated, *rows[1:]]) == {rows[1].path}
    write_synthetic_manifest([regenerated, *rows[1:]], Path("synthetic/manifest.csv"))
    with serving(project) as server:
        _, page = server.get("/")
    assert page_decisions(page.decode()) == {
        **{path: "undecided" for path in synthetic_paths()},
        rows[1].path.as_posix(): "rejected",
    }


def page_decisions(html: str) -> dict[str, str]:
    """Each synthetic image's decision as the served page shows it (its CSS class)."""
    found = re.findall(r'<figure class="image (\w+)" tabindex="0" data-path="([^"]+)"', html)
    return {path: css for css, path in found}


# --- the HTTP surface -----------------------------------------------------------------------------


def test_only_listed_images_are_served_and_nothing_else_ever(project, tmp_path_factory):
    outside = tmp_path_factory.mktemp("outside") / "secret.png"
    outside.write_text(SECRET)
    Path("synthetic/a/link.png").symlink_to(outside)  # a stray link in synthetic/, not listed
    Path("synthetic/b/0002.png").unlink()  # a listed image replaced by a link to a file outside
    Path("synthetic/b/0002.png").symlink_to(outside)
    Path("synthetic/a/passwd.png").symlink_to("/etc/passwd")
    with serving(project) as server:
        status, body = server.get("/image?path=synthetic/a/0000.png")
        assert status == 200 and body == Path("synthetic/a/0000.png").read_bytes()
        train = Path("prepared/train.csv").read_text()  # a real training image is served too
        real = next(p.as_posix() for p in sorted(Path("data/a").iterdir()) if p.as_posix() in train)
        assert server.get(f"/image?path={real}") == (200, Path(real).read_bytes())
        refused = [
            "/image?path=../../etc/passwd",
            "/image?path=/etc/passwd",
            "/image?path=%2e%2e/%2e%2e/etc/passwd",
            "/image?path=%2e%2e%2f%2e%2e%2f%2e%2e%2fetc%2fpasswd",
            "/image?path=synthetic/../../../../etc/passwd",
            "/image?path=params.yaml",
            "/image?path=synthetic/manifest.csv",
            "/image?path=synthetic/a/link.png",
            "/image?path=synthetic/a/passwd.png",
            "/image?path=synthetic/b/0002.png",
            f"/image?path={outside}",
            "/images/../../etc/passwd",
            "/../../etc/passwd",
            "/params.yaml",
            "/image?path=synthetic/a/0000.png%00.txt",
        ]
        for target in refused:
            status, body = server.get(target)
            assert status in (403, 404), target
            assert b"root:" not in body and SECRET.encode() not in body and b"class," not in body, target
        # a page elsewhere reaching the server by another name (DNS rebinding) is refused
        assert server.get("/image?path=synthetic/a/0000.png", Host="evil.example:80")[0] == 403


def test_a_decision_must_name_an_image_of_that_generators_manifest(project):
    with serving(project) as server:
        good = {"generator": "ddpm", "path": "synthetic/a/0001.png", "decision": "reject"}
        for bad in (
            {**good, "path": "params.yaml"},
            {**good, "path": "../synthetic/a/0001.png"},
            {**good, "path": next(Path("data/a").iterdir()).as_posix()},  # a real image
            {**good, "generator": "nope"},
            {**good, "decision": "maybe"},
            {"generator": "ddpm"},
            ["not", "an", "object"],
        ):
            status, answer = server.post(bad)
            assert status == 400 and answer["error"], bad
        assert server.post(good, content_type="text/plain")[0] == 415  # a cross-site form cannot post
        assert server.post(good, Origin="http://evil.example")[0] == 403
        assert not DECISIONS_PATH.exists()  # nothing refused was recorded
        status, answer = server.post(good)
        sha = sha256_file(Path("synthetic/a/0001.png"))
        assert status == 200 and answer["decision"] == "reject" and answer["sha256"] == sha
        server.stop(signal.SIGINT)  # Ctrl-C: a clean stop too
    assert [(d.path.as_posix(), d.decision) for d in read_decisions()] == [("synthetic/a/0001.png", "reject")]


def test_nothing_to_review_and_a_busy_port_are_user_errors(in_tmp, capsys):
    assert cli(["review", "--port", "0"]) == 2
    assert "synthmix generate" in capsys.readouterr().err
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        write_synthetic_manifest([write_synthetic("a", 0, 1)], Path("synthetic/manifest.csv"))
        assert cli(["review", "--port", str(port)]) == 2
    err = capsys.readouterr().err
    assert f"Port {port} on 127.0.0.1 is already in use" in err and "--port" in err
    assert "Traceback" not in err


# --- the page in headless Chromium ----------------------------------------------------------------

KEYS = {  # key: (code, Windows virtual key code, text typed)
    "ArrowRight": ("ArrowRight", 39, ""),
    "ArrowDown": ("ArrowDown", 40, ""),
    "j": ("KeyJ", 74, "j"),
    "k": ("KeyK", 75, "k"),
    "a": ("KeyA", 65, "a"),
    "r": ("KeyR", 82, "r"),
}


class Browser:
    """Headless Chromium driven over the DevTools protocol on a pipe (--remote-debugging-pipe: it reads
    commands on fd 3 and writes answers on fd 4, each a JSON message ended by a NUL byte)."""

    def __init__(self, chromium: str, profile: Path) -> None:
        commands_in, self._commands = os.pipe()
        self._answers, answers_out = os.pipe()

        def wire_fds() -> None:  # in the child, before exec: its fd 3 and fd 4 are the pipes' ends
            high = [fcntl.fcntl(fd, fcntl.F_DUPFD, 10) for fd in (commands_in, answers_out)]
            for target, fd in zip((3, 4), high, strict=True):
                os.dup2(fd, target)
                os.close(fd)

        self.proc = subprocess.Popen(
            [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--remote-debugging-pipe"],
            preexec_fn=wire_fds,
            close_fds=False,  # Python's own fds are not inheritable; fds 3 and 4 are, after dup2
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        os.close(commands_in)
        os.close(answers_out)
        self._buffer, self._next_id, self.session = b"", 0, None
        target = self.call("Target.createTarget", url="about:blank")["targetId"]
        self.session = self.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        self.call("Emulation.setFocusEmulationEnabled", enabled=True)  # focus as in a focused window

    def call(self, method: str, **params: object) -> dict:
        self._next_id += 1
        message = {"id": self._next_id, "method": method, "params": params}
        if self.session:
            message["sessionId"] = self.session
        os.write(self._commands, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + 30
        while True:
            while b"\0" not in self._buffer:
                ready, _, _ = select.select([self._answers], [], [], max(0, deadline - time.monotonic()))
                assert ready, f"chromium did not answer {method} within 30 s"
                chunk = os.read(self._answers, 1 << 16)
                assert chunk, "chromium closed the DevTools pipe"
                self._buffer += chunk
            raw, self._buffer = self._buffer.split(b"\0", 1)
            answer = json.loads(raw)
            if answer.get("id") == self._next_id:  # anything else is an event: not needed here
                assert "error" not in answer, (method, answer["error"])
                return answer["result"]

    def evaluate(self, expression: str) -> object:
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        assert "exceptionDetails" not in result, result["exceptionDetails"]
        return result["result"].get("value")

    def wait_for(self, expression: str, timeout: float = 15) -> object:
        deadline = time.monotonic() + timeout
        while not (value := self.evaluate(expression)):
            status = self.evaluate("document.getElementById('status')?.textContent")
            assert time.monotonic() < deadline, f"timed out waiting for {expression}; page status: {status}"
            time.sleep(0.05)
        return value

    def open(self, url: str) -> None:
        self.call("Page.navigate", url=url)
        self.wait_for(
            f"location.href === {json.dumps(url)} && document.readyState === 'complete' && "
            "[...document.images].every(i => i.complete)"
        )

    def click(self, selector: str) -> None:
        """A left click in the middle of the element, as a mouse makes it (failing if anything covers it)."""
        x, y = self.evaluate(
            f"(() => {{ const e = document.querySelector({json.dumps(selector)});"
            " e.scrollIntoView({block: 'center'}); const r = e.getBoundingClientRect();"
            " const x = r.x + r.width / 2, y = r.y + r.height / 2;"
            " return document.elementFromPoint(x, y) === e ? [x, y] : null; })()"
        ) or pytest.fail(f"{selector} is covered by another element")
        self.call("Input.dispatchMouseEvent", type="mouseMoved", x=x, y=y)
        for kind in ("mousePressed", "mouseReleased"):
            self.call("Input.dispatchMouseEvent", type=kind, x=x, y=y, button="left", clickCount=1)

    def press(self, key: str) -> None:
        code, vk, text = KEYS[key]
        keys = {"key": key, "code": code, "windowsVirtualKeyCode": vk, "nativeVirtualKeyCode": vk}
        self.call("Input.dispatchKeyEvent", type="keyDown", text=text, **keys)
        self.call("Input.dispatchKeyEvent", type="keyUp", **keys)

    def decisions(self) -> dict[str, str]:
        """Each synthetic image's decision as the page's DOM shows it."""
        return self.evaluate(  # type: ignore[return-value]
            "Object.fromEntries([...document.querySelectorAll('figure.image')].map(f => [f.dataset.path,"
            " ['accepted', 'rejected', 'undecided'].find(c => f.classList.contains(c))]))"
        )

    def focused(self) -> str | None:
        return self.evaluate("document.activeElement.dataset.path || null")  # type: ignore[return-value]

    def close(self) -> None:
        try:
            self.session = None
            self.call("Browser.close")
            self.proc.wait(timeout=15)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
            os.close(self._commands)
            os.close(self._answers)


@contextmanager
def browsing(tmp_path: Path) -> Iterator[Browser]:
    browser = Browser(_chromium(), tmp_path / "profile")
    try:
        yield browser
    finally:
        browser.close()


def css(decision: str) -> str:
    return "rejected" if decision == "reject" else "accepted"


@pytest.mark.slow
def test_a_person_rejects_images_by_click_and_keyboard_and_the_decisions_last(project, tmp_path):
    paths = synthetic_paths()  # a/0000, a/0001, a/0002, b/0000, b/0001, b/0002
    undecided = dict.fromkeys(paths, "undecided")
    with browsing(tmp_path) as browser:
        with serving(project) as server:
            browser.open(server.url)
            assert browser.decisions() == undecided
            assert browser.evaluate("[...document.images].every(i => i.naturalWidth > 0)")  # all loaded
            assert browser.evaluate("document.querySelectorAll('.real img').length") == 2 * 4

            tile = f'figure[data-path="{paths[0]}"]'
            browser.click(f'{tile} button[data-decision="reject"]')  # by mouse
            browser.wait_for(f"document.querySelector('{tile}').classList.contains('rejected')")
            for key, expected in (("j", 1), ("j", 2), ("k", 1), ("ArrowRight", 2)):  # focus by keyboard
                browser.press(key)
                assert browser.focused() == paths[expected]
            browser.press("r")
            browser.press("ArrowDown")
            assert browser.focused() == paths[3]
            browser.press("r")
            browser.press("j")
            browser.press("a")
            done = {**undecided, paths[0]: "rejected", paths[2]: "rejected", paths[3]: "rejected"}
            done[paths[4]] = "accepted"
            browser.wait_for(f"JSON.stringify({json.dumps(done)}) === JSON.stringify({_DOM_DECISIONS})")

            browser.open(server.url)  # a reload shows what was saved
            assert browser.decisions() == done
            saved = {d.path.as_posix(): d.decision for d in read_decisions()}
            assert {p for p, d in saved.items() if d == "reject"} == {paths[0], paths[2], paths[3]}
            assert saved == {
                p: {"rejected": "reject", "accepted": "accept"}[d]
                for p, d in done.items()
                if d != "undecided"
            }

        with serving(project) as server:  # a restarted server shows the same
            browser.open(server.url)
            assert browser.decisions() == done
            tile = f'figure[data-path="{paths[2]}"]'
            browser.click(f'{tile} button[data-decision="accept"]')  # changed back
            browser.wait_for(f"document.querySelector('{tile}').classList.contains('accepted')")
            browser.open(server.url)
            assert browser.decisions() == {**done, paths[2]: "accepted"}
    rows = read_synthetic_manifest(Path("synthetic/manifest.csv"))
    assert rejected(read_decisions(), rows) == {Path(paths[0]), Path(paths[3])}
    assert len(read_decisions()) == 4  # one row per image judged
    assert server.proc.returncode == 0 and browser.proc.returncode is not None  # nothing left running


_DOM_DECISIONS = (
    "Object.fromEntries([...document.querySelectorAll('figure.image')].map(f => [f.dataset.path,"
    " ['accepted', 'rejected', 'undecided'].find(c => f.classList.contains(c))]))"
)


def test_another_generators_images_are_reviewed_on_their_own_page(project):
    params = yaml.safe_load(Path("params.yaml").read_text())
    params["generate"]["generators"] = {"sd": {"generator": "text2image"}}
    Path("params.yaml").write_text(yaml.safe_dump(params))
    with serving(project) as server:
        status, page = server.get("/?generator=sd")  # not generated yet: the page says so
        assert status == 404 and b"synthmix generate" in page
        assert server.get("/?generator=nope")[0] == 404
        row = write_synthetic("a", 0, seed=7, folder=Path("synthetic/@sd"))
        write_synthetic_manifest([row], Path("synthetic/@sd/manifest.csv"))
        status, page = server.get("/?generator=sd")
        assert status == 200 and page_decisions(page.decode()) == {row.path.as_posix(): "undecided"}
        assert server.get(f"/image?path={row.path.as_posix()}") == (200, row.path.read_bytes())
        first = {"generator": "sd", "path": "synthetic/a/0000.png", "decision": "reject"}
        assert server.post(first)[0] == 400  # the first generator's image is not sd's
        assert server.post({**first, "path": row.path.as_posix()})[0] == 200
        _, page = server.get("/")  # the first generator's page: its own images, none decided
        assert page_decisions(page.decode()) == dict.fromkeys(synthetic_paths(), "undecided")
    (made,) = read_decisions()
    assert (made.generator, made.path, made.decision) == ("sd", row.path, "reject")


# --- a reviewer's rejects in a real pipeline ---------------------------------------------------------


def _done_stamps(repo: Path) -> dict[str, int]:
    return {
        p.parent.relative_to(repo / "runs").as_posix(): p.stat().st_mtime_ns
        for p in (repo / "runs").glob("*/*/*/DONE")
    }


@pytest.mark.slow
def test_rejects_on_the_page_retrain_only_the_reviewed_mix_on_the_next_repro(study_repo, tmp_path):
    """The tiny study (tests/tiny_study.py) has 6r4s, 6r4s@filtered and 6r4s@reviewed, two seeds, each
    seed its own block of 6 synthetic images a class. Rejecting three of the first block's circles on
    the page changes what 6r4s@reviewed's seed-0 replicate trains on (it takes 4 of those 6), and
    nothing else."""
    from tiny_study import sh

    repo = tmp_path / "repo"
    shutil.copytree(study_repo, repo, symlinks=True)  # the session's study stays as it was
    before = _done_stamps(repo)
    circles = [f"synthetic/circle/{i:04d}.png" for i in range(3)]
    with browsing(tmp_path) as browser, serving(repo) as server:
        browser.open(server.url)
        tile = f'figure[data-path="{circles[0]}"]'
        browser.click(f'{tile} button[data-decision="reject"]')  # the mouse, then the keyboard
        for _ in circles[1:]:
            browser.press("j")
            browser.press("r")
        wanted = " && ".join(
            f"document.querySelector('figure[data-path=\"{p}\"]').classList.contains('rejected')"
            for p in circles
        )
        browser.wait_for(wanted)
        browser.open(server.url)  # reloaded: still rejected
        assert {p: d for p, d in browser.decisions().items() if d == "rejected"} == dict.fromkeys(
            circles, "rejected"
        )
    assert sorted(d.path.as_posix() for d in read_decisions(repo / DECISIONS_PATH)) == circles

    repro = sh("dvc", "repro", cwd=repo).stdout
    assert "Running stage 'train'" in repro and "Running stage 'quality'" not in repro
    after = _done_stamps(repo)
    assert after.keys() == before.keys()
    retrained = sorted(run for run in after if after[run] != before[run])
    assert retrained == ["cnn/6r4s@reviewed/seed0", "resnet50/6r4s@reviewed/seed0"]
    record = json.loads((repo / "runs/cnn/6r4s@reviewed/seed0/run.json").read_text())
    assert record["synthetic_images"] < 3 * 4  # fewer circles left in the block than the mix asks for
    assert "up to date" in sh("dvc", "status", cwd=repo).stdout

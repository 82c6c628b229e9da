"""scripts/setup_opencv.py: which OpenCV build is wanted where, and the pip commands that get there (run none)."""

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

TOOL = Path(__file__).resolve().parents[2] / "scripts" / "setup_opencv.py"
_spec = importlib.util.spec_from_file_location("setup_opencv", TOOL)
setup_opencv = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(setup_opencv)

PY = "python"
PIP = [PY, "-m", "pip"]
WHEELS = "wheels"
FETCH = [*PIP, "download", "--no-deps", "--only-binary=:all:", "-d", WHEELS]
INSTALL = [*PIP, "install", "--no-deps", "--force-reinstall", "--no-index", "--find-links", WHEELS]


@pytest.mark.parametrize(
    ("platform", "env", "gui"),
    [
        ("linux", {}, False),
        ("linux", {"DISPLAY": ""}, False),
        ("linux", {"DISPLAY": ":0"}, True),
        ("linux", {"WAYLAND_DISPLAY": "wayland-0"}, True),
        ("freebsd14", {"DISPLAY": ":0"}, True),
        ("freebsd14", {}, False),
        ("darwin", {}, True),
        ("win32", {}, True),
    ],
)
def test_a_desktop_wants_the_gui_build(platform, env, gui):
    wanted, why = setup_opencv.wants_gui(platform, env)
    assert wanted is gui
    assert why


@pytest.mark.parametrize("platform", ["linux", "darwin", "win32"])
def test_flags_force_the_choice(platform):
    assert setup_opencv.wants_gui(platform, {}, "gui") == (True, "--gui")
    assert setup_opencv.wants_gui(platform, {"DISPLAY": ":0"}, "headless") == (False, "--headless")


def test_the_wanted_distribution_keeps_contrib():
    assert setup_opencv.wanted_dist({"opencv-python-headless": "5.0.0.93"}, gui=True) == "opencv-python"
    assert setup_opencv.wanted_dist({"opencv-python-headless": "5.0.0.93"}, gui=False) == "opencv-python-headless"
    assert setup_opencv.wanted_dist({}, gui=True) == "opencv-python"
    contrib = {"opencv-contrib-python-headless": "4.10.0.84"}
    assert setup_opencv.wanted_dist(contrib, gui=True) == "opencv-contrib-python"
    assert setup_opencv.wanted_dist(contrib, gui=False) == "opencv-contrib-python-headless"


def _plan(installed: dict[str, str], gui: bool, ok: bool = True, pin: str | None = None) -> list[list[str]]:
    wanted = setup_opencv.wanted_dist(installed, gui)
    return setup_opencv.plan(installed, wanted, ok, pin, PY, WHEELS)


def test_only_headless_on_a_server_needs_nothing():
    assert _plan({"opencv-python-headless": "5.0.0.93"}, gui=False) == []


def test_a_broken_cv2_is_reinstalled_even_when_the_distribution_is_right():
    assert _plan({"opencv-python-headless": "5.0.0.93"}, gui=False, ok=False) == [
        [*FETCH, "opencv-python-headless==5.0.0.93"],
        [*PIP, "uninstall", "-y", "opencv-python-headless"],
        [*INSTALL, "opencv-python-headless==5.0.0.93"],
    ]


def test_only_headless_on_a_desktop_switches_to_the_gui_build_at_the_same_version():
    assert _plan({"opencv-python-headless": "5.0.0.93"}, gui=True, ok=False) == [
        [*FETCH, "opencv-python==5.0.0.93"],
        [*PIP, "uninstall", "-y", "opencv-python-headless"],
        [*INSTALL, "opencv-python==5.0.0.93"],
    ]


@pytest.mark.parametrize(("gui", "wanted"), [(True, "opencv-python"), (False, "opencv-python-headless")])
def test_both_installed_uninstalls_both_and_installs_the_wanted_one(gui, wanted):
    both = {"opencv-python": "4.11.0.86", "opencv-python-headless": "4.10.0.84"}
    assert _plan(both, gui=gui) == [
        [*FETCH, f"{wanted}==4.10.0.84"],
        [*PIP, "uninstall", "-y", "opencv-python", "opencv-python-headless"],
        [*INSTALL, f"{wanted}==4.10.0.84"],  # albumentations' requirement was resolved for the headless version
    ]


def test_contrib_headless_on_a_desktop_becomes_the_contrib_gui_build():
    assert _plan({"opencv-contrib-python-headless": "4.10.0.84"}, gui=True, ok=False) == [
        [*FETCH, "opencv-contrib-python==4.10.0.84"],
        [*PIP, "uninstall", "-y", "opencv-contrib-python-headless"],
        [*INSTALL, "opencv-contrib-python==4.10.0.84"],
    ]


def test_versions_fall_back_to_the_installed_one_then_the_newest():
    assert _plan({"opencv-python": "4.9.0.80"}, gui=False, ok=False)[-1] == [*INSTALL, "opencv-python-headless"]
    assert _plan({"opencv-python": "4.9.0.80"}, gui=True, ok=False)[-1] == [*INSTALL, "opencv-python==4.9.0.80"]
    assert _plan({}, gui=False, ok=False) == [[*FETCH, "opencv-python-headless"], [*INSTALL, "opencv-python-headless"]]
    assert _plan({"opencv-python": "4.9.0.80"}, gui=False, pin="4.8.1.78")[-1] == [
        *INSTALL,
        "opencv-python-headless==4.8.1.78",
    ]


def test_check_on_this_machine_reports_one_line():
    done = subprocess.run([sys.executable, str(TOOL), "--check"], capture_output=True, text=True, timeout=120)
    lines = done.stdout.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("opencv: "), done.stdout + done.stderr
    if setup_opencv.wants_gui(sys.platform, os.environ)[0]:
        assert done.returncode in (0, 1)  # a desktop may lack the GUI build's system libraries: headless stays
    else:  # a server, CI or this machine: the headless build that albumentations installs, alone
        assert done.returncode == 0, lines
        assert "opencv-python-headless" in lines[0] and "nothing to do" in lines[0], lines


def test_a_gui_build_that_does_not_import_is_rolled_back_to_headless(monkeypatch, capsys):
    states = iter([{"opencv-python-headless": "5.0.0.93"}, {"opencv-python": "5.0.0.93"}])
    probes = iter([(None, False), ("ImportError: libGL.so.1: cannot open shared object file", False), (None, False)])
    ran = []
    monkeypatch.setattr(setup_opencv, "installed_opencv", lambda: next(states))
    monkeypatch.setattr(setup_opencv, "probe", lambda py: next(probes))
    monkeypatch.setattr(setup_opencv, "run_pip", ran.extend)
    monkeypatch.setattr(setup_opencv.sys, "executable", PY)
    monkeypatch.setattr(setup_opencv.sys, "platform", "linux")
    monkeypatch.setenv("DISPLAY", ":0")
    args = setup_opencv.argparse.Namespace(gui=False, headless=False, check=False, dry_run=False)
    assert setup_opencv.setup(args, WHEELS) == 0
    assert ran == [
        [*FETCH, "opencv-python==5.0.0.93"],
        [*PIP, "uninstall", "-y", "opencv-python-headless"],
        [*INSTALL, "opencv-python==5.0.0.93"],
        [*FETCH, "opencv-python-headless==5.0.0.93"],
        [*PIP, "uninstall", "-y", "opencv-python"],
        [*INSTALL, "opencv-python-headless==5.0.0.93"],
    ]
    out = capsys.readouterr().out
    assert "libGL.so.1" in out and "put opencv-python-headless back" in out and "apt install libgl1" in out


def test_offline_nothing_is_removed(monkeypatch, capsys):
    # The wheel cannot be fetched: the tool stops before uninstalling anything.
    ran = []

    def run_pip(steps):
        for cmd in steps:
            if cmd[3] == "download":
                raise setup_opencv.Failure("-m pip download failed: No matching distribution found")
            ran.append(cmd)

    monkeypatch.setattr(setup_opencv, "installed_opencv", lambda: {"opencv-python-headless": "5.0.0.93"})
    monkeypatch.setattr(setup_opencv, "probe", lambda py: (None, False))
    monkeypatch.setattr(setup_opencv, "run_pip", run_pip)
    monkeypatch.setattr(setup_opencv.sys, "argv", ["setup_opencv.py", "--gui"])
    assert setup_opencv.main() == 1
    assert ran == []
    assert "download failed" in capsys.readouterr().err

"""Leave exactly one working OpenCV in this Python: the GUI build on a desktop, the headless build elsewhere.

albumentations needs opencv-python-headless; opencv-python (the detect.py --show window) unpacks into the same cv2/
folder. A wrong state (several builds, the wrong kind, a broken cv2) is fixed by fetching the wanted wheel (at the
headless version), removing every OpenCV distribution and installing it --no-deps. A GUI build that does not import
(missing libGL etc.) is rolled back to headless. Offline, nothing is removed. Never imports cv2 nor detector."""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Mapping

DISTS = ("opencv-python", "opencv-python-headless", "opencv-contrib-python", "opencv-contrib-python-headless")
PROBE = """try:
    import json, cv2
    gui = [ln.split(':', 1)[1].strip() for ln in cv2.getBuildInformation().splitlines() if ln.strip()[:4] == 'GUI:']
    print(json.dumps({'gui': bool(gui) and gui[0].upper() != 'NONE'}))
except Exception as e:
    print(json.dumps({'error': (type(e).__name__ + ': ' + str(e)).splitlines()[0]}))
"""


class Failure(Exception):
    """Why the tool could not finish (one line)."""


def wants_gui(platform: str, env: Mapping[str, str], force: str | None = None) -> tuple[bool, str]:
    """Whether the GUI build is wanted on ``platform`` (sys.platform) with ``env``, and why (a few words)."""
    if force:
        return force == "gui", f"--{force}"
    if platform in ("darwin", "win32", "cygwin"):
        return True, "macOS" if platform == "darwin" else "Windows"
    display = bool(env.get("DISPLAY") or env.get("WAYLAND_DISPLAY"))
    return display, "display here" if display else "no display here"


def wanted_dist(installed: Mapping[str, str], gui: bool) -> str:
    """The distribution to keep: opencv-python[-headless], or the contrib one when a contrib build is installed."""
    base = "opencv-contrib-python" if any("contrib" in d for d in installed) else "opencv-python"
    return base if gui else base + "-headless"


def pin_version(installed: Mapping[str, str], wanted: str) -> str | None:
    """The installed headless version (albumentations' minimum was resolved for it), else ``wanted``'s; None: newest."""
    order = (wanted.removesuffix("-headless") + "-headless", *(d for d in DISTS if d.endswith("-headless")), wanted)
    return next((installed[d] for d in order if d in installed), None)


def plan(installed: Mapping[str, str], wanted: str, ok: bool, pin: str | None, py: str, wheels: str) -> list[list[str]]:
    """The pip commands (argv lists): fetch ``wanted`` (at ``pin`` or pin_version()) into ``wheels``, remove every
    OpenCV, install it; [] when it alone is installed and ``ok`` (cv2 imports, with a GUI iff a GUI build)."""
    if set(installed) == {wanted} and ok:
        return []
    version = pin or pin_version(installed, wanted)
    spec, pip = f"{wanted}=={version}" if version else wanted, [py, "-m", "pip"]
    steps = [[*pip, "download", "--no-deps", "--only-binary=:all:", "-d", wheels, spec]]
    steps += [[*pip, "uninstall", "-y", *sorted(installed)]] if installed else []
    return [*steps, [*pip, "install", "--no-deps", "--force-reinstall", "--no-index", "--find-links", wheels, spec]]


def installed_opencv() -> dict[str, str]:
    """The OpenCV distributions installed in this Python: name -> version."""
    found = (next(iter(importlib.metadata.distributions(name=name)), None) for name in DISTS)
    return {name: dist.version for name, dist in zip(DISTS, found) if dist}


def probe(python: str) -> tuple[str | None, bool]:
    """Import cv2 in a fresh ``python``: (the import error's first line or None, whether the build has a GUI)."""
    done = subprocess.run([python, "-c", PROBE], capture_output=True, text=True)
    try:
        result = json.loads(done.stdout.strip().splitlines()[-1])
    except (IndexError, ValueError):
        return (done.stderr.strip().splitlines() or [f"the import crashed (exit status {done.returncode})"])[-1], False
    return result.get("error"), bool(result.get("gui"))


def describe(installed: Mapping[str, str], error: str | None, gui: bool) -> str:
    """``opencv-python-headless 5.0.0.93, no GUI``-style summary of the installed state."""
    names = " + ".join(f"{d} {v}" for d, v in sorted(installed.items())) or "no OpenCV installed"
    return f"{names}, " + (f"cv2 broken ({error})" if error else "GUI" if gui else "no GUI")


def run_pip(steps: list[list[str]]) -> None:
    """Run the pip commands; Failure with pip's last error line when one fails."""
    for cmd in steps:
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode:
            lines = (done.stderr.strip() or done.stdout.strip() or f"exit status {done.returncode}").splitlines()
            raise Failure(f"{' '.join(cmd[1:])} failed: {lines[-1]}")


def setup(args: argparse.Namespace, wheels: str) -> int:
    """Check the OpenCV state and switch it when needed (wheels fetched into ``wheels``); the exit status."""
    py, before = sys.executable, installed_opencv()
    gui, why = wants_gui(sys.platform, os.environ, "gui" if args.gui else "headless" if args.headless else None)
    version, (error, has_gui) = pin_version(before, wanted := wanted_dist(before, gui)), probe(py)
    steps = plan(before, wanted, error is None and has_gui == gui, version, py, wheels)
    state = describe(before, error, has_gui)
    if not steps:
        print(f"opencv: {state} ({why}) - nothing to do")
        return 0
    if args.check or args.dry_run:
        todo = "\n  ".join(["would run:", *map(" ".join, steps)]) if args.dry_run else "run this without --check"
        print(f"opencv: {state} - wanted {wanted} alone ({why}); {todo}")
        return int(args.check)
    print(f"opencv: {state} - switching to {wanted} ({why})", flush=True)
    run_pip(steps[:1])  # the wheel first: when it cannot be had, nothing has changed
    try:
        run_pip(steps[1:])
        error, has_gui = probe(py)
    except Failure as e:  # the old build may be gone already: a GUI switch puts the headless one back below
        error, has_gui, steps = str(e), False, []
    if gui and (error or not has_gui):
        headless = wanted + "-headless"
        run_pip(plan(installed_opencv(), headless, False, version, py, wheels))
        fix = "install the system libraries it needs (e.g. apt install libgl1 libglib2.0-0)" if steps else "fix that"
        print(f"opencv: {wanted} does not work here ({error or 'no GUI backend'}); put {headless} back - for a "
              f"window, {fix} and run scripts/setup_opencv.py again")  # fmt: skip
        error, has_gui = probe(py)
        if error is None:
            return 1 if args.gui else 0
    if error:
        raise Failure(f"no working cv2 after installing {wanted}: {error}")
    print(f"opencv: {describe(installed_opencv(), error, has_gui)} ({why}) - done")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    choice = parser.add_mutually_exclusive_group()
    choice.add_argument("--gui", action="store_true", help="want the GUI build, display or not")
    choice.add_argument("--headless", action="store_true", help="want the headless build, even on a desktop")
    parser.add_argument("--check", action="store_true", help="only report; exit status 1 when a switch is needed")
    parser.add_argument("--dry-run", action="store_true", help="print the pip commands a switch would run")
    try:
        with tempfile.TemporaryDirectory() as wheels:
            return setup(parser.parse_args(), wheels)
    except (Failure, OSError) as e:
        print(f"opencv: error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())

"""make test: compiles the project's modules once, before the suite's processes start, instead of in each.

Every xdist worker imports every test module to collect it, and pytest rewrites a test module's asserts before
compiling it: about 5 s of CPU for this suite's modules, in each worker. The workers start together, so on a
fresh clone each of them rewrites every module, and where PYTHONDONTWRITEBYTECODE is set none of them keeps
the result, so every run rewrites them again, four times. The provider's modules likewise, in each of the
subprocesses the tests start. This writes both caches where they are missing or stale (``__pycache__``,
git-ignored): Python checks a module's cache against the source's time and size, pytest against its hash.
The installed pytest plugins' modules are rewritten too (pytest rewrites every module of a plugin's
distribution), beside their bytecode in the virtualenv. pytest's cache is written with pytest's own
functions (private ones: a pytest that renamed them gets no warm cache, only the note below, and rewrites as
before).
"""

from __future__ import annotations

import compileall
import importlib.metadata
import os
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from types import SimpleNamespace

ROOT = Path(__file__).resolve().parent.parent
#: Imported by the suite's processes (tests/ also by subprocesses that import a test module's helpers).
SOURCES = ("provider", "dags_examples", "bench", "scripts", "tests")


def test_modules() -> list[Path]:
    """The files pytest rewrites: test modules (``python_files``: test_*.py) and conftest.py files."""
    return sorted(
        path
        for path in (ROOT / "tests").rglob("*.py")
        if path.name.startswith("test_") or path.name == "conftest.py"
    )


def plugin_modules() -> list[Path]:
    """The modules of the installed pytest plugins' distributions (Hypothesis, xdist, anyio, time-machine):
    pytest rewrites them too as a worker imports them (``_mark_plugins_for_rewrite``), 173 modules here and
    1.1 s of CPU in each worker."""
    from _pytest.config import _iter_rewritable_modules

    found = []
    for dist in importlib.metadata.distributions():
        if not any(point.group == "pytest11" for point in dist.entry_points):
            continue
        files = [str(file) for file in dist.files or []]
        names = set(_iter_rewritable_modules(files))
        for file in files:
            module = file.removesuffix(".py").replace("/", ".").removesuffix(".__init__")
            if file.endswith(".py") and any(module == n or module.startswith(n + ".") for n in names):
                found.append(Path(str(dist.locate_file(file))))
    return sorted(found)


def rewritten_pyc(path: Path) -> Path:
    from _pytest.assertion.rewrite import PYC_TAIL, get_cache_dir

    return get_cache_dir(path) / (path.name[:-3] + PYC_TAIL)


def rewrite(path: Path) -> None:
    """What pytest's import hook does for a test module that has no valid cache: rewrite, compile, write
    (atomically: a worker reading it meanwhile sees the old file or the new one)."""
    from _pytest.assertion.rewrite import _rewrite_test, _write_pyc

    pyc = rewritten_pyc(path)
    pyc.parent.mkdir(exist_ok=True)
    # No config: the rewrite reads only enable_assertion_pass_hook from it, which this project leaves off.
    source_key, code = _rewrite_test(path, None)
    _write_pyc(SimpleNamespace(trace=lambda message: None), code, source_key, pyc)


def stale_test_modules() -> list[Path]:
    from _pytest.assertion.rewrite import _read_pyc

    try:
        plugins = plugin_modules()
    except Exception as exc:  # a pytest that renamed its helper: the test modules are still warmed
        print(f"warm_bytecode: the pytest plugins' modules are not warmed ({exc!r})", file=sys.stderr)
        plugins = []
    return [path for path in test_modules() + plugins if _read_pyc(path, rewritten_pyc(path)) is None]


def main() -> None:
    # A module that does not compile is reported here and fails where the suite imports it.
    for folder in SOURCES:
        compileall.compile_dir(ROOT / folder, quiet=1, workers=0)
    try:
        stale = stale_test_modules()
        if stale:
            with ProcessPoolExecutor(os.cpu_count()) as pool:
                list(pool.map(rewrite, stale))
    except Exception as exc:  # a cache: without it the workers rewrite as they always did
        print(f"warm_bytecode: pytest's assert cache not written ({exc!r})", file=sys.stderr)


if __name__ == "__main__":
    main()

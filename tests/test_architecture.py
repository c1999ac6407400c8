"""The house rules a tool can check: the job table covers every job type, the layers hold (lint-imports),
nothing in the library reaches up through importlib, and the top-level package names are ours alone."""

from __future__ import annotations

import importlib.metadata
import re
import subprocess
import sys
import typing
from pathlib import Path

from conftest import REPO

TOP_PACKAGES = ("distill_ray", "actors", "serve", "jobs", "cluster")


def test_the_job_table_has_exactly_the_configs_job_types():
    from distill_ray.config.schema import JobType
    from jobs.job_types import JOB_TYPES

    assert set(JOB_TYPES) == set(typing.get_args(JobType))
    assert all(callable(run) for run in JOB_TYPES.values())


def test_layer_contracts_hold():
    lint = Path(sys.executable).parent / "lint-imports"
    proc = subprocess.run([str(lint)], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert "0 broken" in proc.stdout and "5 kept" in proc.stdout


def test_the_library_never_imports_the_layers_above_by_name():
    pattern = re.compile(r"""(import_module|__import__)\(\s*f?["'](jobs|serve|actors|cluster)\b""")
    hits = [f"{path.relative_to(REPO)}:{n}" for path in (REPO / "distill_ray").rglob("*.py")
            for n, line in enumerate(path.read_text().splitlines(), 1) if pattern.search(line)]  # fmt: skip
    assert hits == []


def test_no_other_installed_distribution_provides_our_top_level_packages():
    """The design card keeps jobs/, serve/, actors/, cluster/ at the top level, so they install as top-level
    packages (docs/architecture.md, "Package names"); another distribution shipping one of these names would
    shadow ours or be shadowed."""
    owners = importlib.metadata.packages_distributions()
    for name in TOP_PACKAGES:
        assert set(owners.get(name, ["distill-ray"])) <= {"distill-ray", "distill_ray"}, (name, owners[name])


def test_test_modules_have_unique_basenames():
    # pytest imports test files outside packages by basename (rootdir-relative "rootdir" import mode), so
    # two `test_x.py` in different folders make collection fail for the whole suite, not for one file.
    from collections import Counter

    from conftest import REPO

    tests = REPO / "tests"
    loose = [p for p in tests.rglob("test_*.py") if not (p.parent / "__init__.py").is_file()]
    repeated = [name for name, n in Counter(p.name for p in loose).items() if n > 1]
    assert not repeated, f"test files sharing a basename: {repeated}"

"""`make test`'s two xdist workers keep each file's tests on one worker, so a module fixture (a verl run of minutes)
is built once: the suite's time depends on it (tests/conftest.py)."""

import os
import subprocess
import sys
from collections import defaultdict

CONFTEST = os.path.join(os.path.dirname(os.path.abspath(__file__)), "conftest.py")


def test_each_files_tests_run_on_one_worker(tmp_path):
    (tmp_path / "pytest.ini").write_text("[pytest]\nmarkers =\n    verl_cpu: x\n")
    (tmp_path / "conftest.py").write_text(  # the suite's own hooks
        "import importlib.util\n"
        f"spec = importlib.util.spec_from_file_location('suite_conftest', {CONFTEST!r})\n"
        "suite = importlib.util.module_from_spec(spec); spec.loader.exec_module(suite)\n"
        "globals().update({k: v for k, v in vars(suite).items() if k.startswith('pytest_collection_modifyitems')"
        " or k.startswith('pytest_itemcollected')})\n")
    body = ("import os, pytest\n{mark}\n@pytest.mark.parametrize('i', range(3))\ndef test_x(i):\n"
            "    with open(os.path.join({out!r}, os.environ['PYTEST_XDIST_WORKER']), 'a') as f:\n"
            "        f.write(__name__ + ' ' + str({verl}) + '\\n')\n")
    for name, verl in (("a", True), ("b", True), ("c", True), ("d", False), ("e", False), ("f", False)):
        (tmp_path / f"test_{name}.py").write_text(body.format(
            mark="pytestmark = pytest.mark.verl_cpu" if verl else "", out=str(tmp_path), verl=verl))
    cmd = [sys.executable, "-m", "pytest", "-q", "-n", "2", "--dist", "loadgroup", "--no-loadscope-reorder",
           "-p", "no:cacheprovider", str(tmp_path)]  # as `make test` runs the suite
    run = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    workers_of = defaultdict(set)
    for worker in ("gw0", "gw1"):
        path = tmp_path / worker
        for line in (path.read_text().splitlines() if path.exists() else []):
            module, verl = line.split()
            workers_of[module].add(worker)
    assert set(workers_of) == {"test_a", "test_b", "test_c", "test_d", "test_e", "test_f"}
    assert all(len(workers) == 1 for workers in workers_of.values()), dict(workers_of)

"""The one-call GPU check (benchmarks/gpu_check.py) where no GPU is: its arguments, the steps it
records as not run, its JSON and table, the parsers of what its steps print; and
benchmarks/each_kernel.py, which the sanitizers run, launching every kernel in the simulator."""

import json
import sys

import numpy as np
import pytest

from benchmarks import each_kernel, gpu_check
from fused_backends import backend_or_skip
from tinyvae.backends import cuda_ops, cudasim


def test_bad_arguments_end_with_one_error_line(tmp_path, tiny_data_dir, capsys):
    assert gpu_check.main([str(tmp_path / "out"), "--data-dir", str(tmp_path)]) == 2
    assert capsys.readouterr().err.startswith(f"error: --data-dir {tmp_path} lacks train-images-idx3-ubyte")
    (tmp_path / "used").mkdir()
    (tmp_path / "used" / "keep.txt").write_text("a user's file")
    assert gpu_check.main([str(tmp_path / "used"), "--data-dir", str(tiny_data_dir)]) == 2
    assert "is not empty" in capsys.readouterr().err
    assert (tmp_path / "used" / "keep.txt").read_text() == "a user's file"
    with pytest.raises(SystemExit):
        gpu_check.main([str(tmp_path / "out")])  # --data-dir is required


def test_without_a_gpu_no_step_runs_and_the_json_says_so(tmp_path, tiny_data_dir, monkeypatch):
    monkeypatch.setattr(gpu_check, "device_info", lambda: {"python": "3", "missing_packages": ["cupy"],
                                                           "error": "no usable CUDA device: no cupy"})
    out = tmp_path / "out"
    assert gpu_check.main([str(out), "--data-dir", str(tiny_data_dir)]) == 2
    result = json.loads((out / "gpu_check.json").read_text())
    assert result["passed"] is False and result["device"]["missing_packages"] == ["cupy"]
    assert list(result["steps"]) == ["tests", "memcheck", "racecheck", "benchmark", "train"]
    assert all(s == {"not_run": "no GPU", "passed": False} for s in result["steps"].values())
    table = (out / "gpu_check.md").read_text().splitlines()
    assert table[2] == "| device | no usable CUDA device: no cupy |" and table[3] == "| tests | not run: no GPU |"


def test_the_device_step_names_what_is_missing():
    info = gpu_check.device_info()
    assert info["numpy"] == np.__version__
    try:
        import cupy  # noqa: F401
    except ImportError:
        assert "cupy" in info["missing_packages"] and info["error"].startswith("no usable CUDA device")


def test_a_step_is_stopped_at_its_time_limit(tmp_path):
    rec = gpu_check.run_step("sleepy", [sys.executable, "-c", "print('started', flush=True); import time; "
                                                              "time.sleep(30)"], 1, tmp_path)
    assert rec["exit"] is None and "stopped after 1 s" in rec["output_tail"] and rec["seconds"] < 10
    assert "stopped after" in (tmp_path / "sleepy.log").read_text()


def test_pytest_results_are_read_from_junit_xml(tmp_path):
    xml = tmp_path / "r.xml"
    xml.write_text('<testsuites><testsuite tests="3" failures="1" errors="0" skipped="1">'
                   '<testcase classname="tests.test_a" name="test_ok"/>'
                   '<testcase classname="tests.test_a" name="test_bad"><failure message="x"/></testcase>'
                   '<testcase classname="tests.test_b" name="test_skip"><skipped/></testcase>'
                   '</testsuite></testsuites>')
    assert gpu_check.junit_counts(xml) == {"tests": 3, "failures": 1, "errors": 0, "skipped": 1,
                                           "failed": ["tests.test_a::test_bad"]}


def test_sanitizer_summary_and_loss_comparison():
    assert gpu_check.sanitizer_errors("========= ERROR SUMMARY: 0 errors\n") == 0
    assert gpu_check.sanitizer_errors("...\n========= ERROR SUMMARY: 12 errors\n") == 12
    assert gpu_check.sanitizer_errors("========= RACECHECK SUMMARY: 0 hazards displayed (0 errors, 0 warnings)\n") == 0
    assert gpu_check.sanitizer_errors("RACECHECK SUMMARY: 3 hazards displayed (2 errors, 1 warnings)") == 2
    assert gpu_check.sanitizer_errors("Traceback ...") is None
    ok = gpu_check.compare_losses([100.0, 90.0], [100.2, 90.0], rtol=0.005)
    assert ok["passed"] and ok["max_rel_diff"] == pytest.approx(0.2 / 100.2)
    assert not gpu_check.compare_losses([100.0, 80.0], [100.0, 90.0], rtol=0.005)["passed"]
    assert not gpu_check.compare_losses([], [], rtol=0.005)["passed"]


def test_the_table_states_each_steps_figures():
    bench = {"passed": True, "kernels_cuda": [{"op": "bce_with_logits", "size": "65536x784", "of_copy": 0.81}],
             "train_cuda": [{"what": "tinyvae cuda", "epoch_s": 0.41, "vs_pytorch": 0.37},
                            {"what": "pytorch eager", "epoch_s": 1.1, "vs_pytorch": 1.0},
                            {"what": "tinyvae cuda conv", "epoch_s": 0.9, "vs_pytorch": 0.8}]}
    assert gpu_check.summary("benchmark", bench) == ("passed: BCE at 65536x784 0.81 of copy bandwidth; epoch 0.410 s, "
                                                     "0.37x PyTorch; conv epoch 0.900 s, 0.80x PyTorch")
    assert gpu_check.summary("memcheck", {"passed": False, "errors": 3}) == "FAILED: 3 errors"
    tests = {"passed": True, "tests": 120, "failures": 0, "errors": 0, "skipped": 0, "seconds": 80.0}
    assert gpu_check.summary("tests", tests) == "passed: 120 tests, 0 failed, 0 skipped, 80.0 s"


@pytest.mark.cudasim
def test_each_kernel_is_launched(monkeypatch):
    """benchmarks.each_kernel reaches every <op>_f32 and <op>_f64 kernel (what the sanitizers must see)."""
    be = backend_or_skip("cuda-sim")
    launched = set()
    original = cudasim.Module.get_function

    def recording(self, name):
        launched.add(name)
        return original(self, name)

    monkeypatch.setattr(cudasim.Module, "get_function", recording)
    each_kernel.launch_each_kernel(be)
    assert launched == cuda_ops.kernel_names()

"""The built wheel carries everything the package needs, the CUDA kernels among them: installed from it,
outside the checkout, a cuda-sim op runs the kernel the wheel holds."""

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PROBE = """
import sys
from pathlib import Path
import numpy as np
import tinyvae
from tinyvae.backends import cuda_ops, get_backend, reference
site = Path(sys.argv[1]).resolve()
assert Path(tinyvae.__file__).resolve().is_relative_to(site), tinyvae.__file__
assert cuda_ops.KERNEL_DIR.resolve() == site / "tinyvae" / "kernels", cuda_ops.KERNEL_DIR
sim = get_backend("cuda-sim")
rng = np.random.default_rng(0)
out, b = rng.standard_normal((37, 5)), rng.standard_normal(5)
ref = out.copy()
sim.bias_act(out, b, True)
reference.bias_act(ref, b, True)
np.testing.assert_array_equal(out, ref)
model = tinyvae.build(model="dae", hidden=(6,), latent_dim=2, input_dim=9)
print("ran", cuda_ops.source("bias_act").name, type(model).__name__)
"""


def test_the_wheel_carries_the_kernels_and_runs_them_from_where_it_is_installed(tmp_path):
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                           str(tmp_path / "dist"), str(ROOT)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    wheel = next((tmp_path / "dist").glob("tinyvae-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    kernels = sorted(p.name for p in (ROOT / "kernels").iterdir() if p.suffix in (".cu", ".cuh"))
    assert sorted(n.rsplit("/", 1)[1] for n in names if n.startswith("tinyvae/kernels/")) == kernels
    assert "tinyvae/backends/cudasim.h" in names
    packages = {str(p.parent.relative_to(ROOT)) for p in (ROOT / "tinyvae").rglob("__init__.py")}
    assert packages <= {n.rsplit("/", 1)[0] for n in names}, "a subpackage the wheel does not carry"
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(site), "TINYVAE_CACHE": str(tmp_path / "cache"),
           "HOME": str(tmp_path)}
    run = subprocess.run([sys.executable, "-c", PROBE, str(site)], cwd=tmp_path, env=env, capture_output=True,
                         text=True)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "ran linear.cu Autoencoder"

"""Which kernels NumPy's BLAS runs, and the trainer's hint where it leaves AVX-512 unused."""

import pytest

from tinyvae import train
from tinyvae.backends.blas import avx512_hint, cpu_flags, numpy_blas

NUMPY_OPENBLAS = {"user_api": "blas", "internal_api": "openblas", "architecture": "Haswell", "version": "0.3.31",
                  "num_threads": 2, "filepath": "/venv/site-packages/numpy.libs/libscipy_openblas64_-1.so"}
SCIPY_OPENBLAS = {**NUMPY_OPENBLAS, "architecture": "SkylakeX",
                  "filepath": "/venv/site-packages/scipy.libs/libscipy_openblas-2.so"}
OPENMP = {"user_api": "openmp", "internal_api": "openmp", "filepath": "/venv/site-packages/numba/libgomp.so"}
AVX512 = frozenset({"avx2", "fma", "avx512f"})


def test_cpu_flags_reads_the_flags_line(tmp_path):
    f = tmp_path / "cpuinfo"
    f.write_text("processor\t: 0\nmodel name\t: Some CPU\nflags\t\t: fpu sse2 avx2 avx512f\n\nprocessor\t: 1\n")
    assert cpu_flags(str(f)) == {"fpu", "sse2", "avx2", "avx512f"}
    assert cpu_flags(str(tmp_path / "missing")) == frozenset()


def test_numpy_blas_prefers_numpys_own_library():
    assert numpy_blas([OPENMP, SCIPY_OPENBLAS, NUMPY_OPENBLAS]) is NUMPY_OPENBLAS
    assert numpy_blas([OPENMP, SCIPY_OPENBLAS]) is SCIPY_OPENBLAS  # the only BLAS there is
    assert numpy_blas([OPENMP]) is None and numpy_blas([]) is None


def test_numpy_blas_in_this_process():
    from threadpoolctl import threadpool_info

    blas = [i for i in threadpool_info() if i["user_api"] == "blas"]
    found = numpy_blas()
    assert (found is None) == (not blas)
    assert found is None or found in blas


@pytest.mark.parametrize("core", ["Haswell", "haswell", "Zen"])
def test_hint_when_the_environment_forces_avx2_kernels(core):
    hint = avx512_hint({**NUMPY_OPENBLAS, "architecture": core}, AVX512, {"OPENBLAS_CORETYPE": core})
    assert f"OPENBLAS_CORETYPE={core} in the environment" in hint and "unset it" in hint and core in hint


def test_hint_when_openblas_chose_avx2_kernels_itself():
    hint = avx512_hint(NUMPY_OPENBLAS, AVX512, {})
    assert "OpenBLAS chose them" in hint and "set OPENBLAS_CORETYPE=SkylakeX" in hint


@pytest.mark.parametrize("blas, flags", [
    ({**NUMPY_OPENBLAS, "architecture": "SkylakeX"}, AVX512),  # already on AVX-512 kernels
    ({**NUMPY_OPENBLAS, "architecture": "Cooperlake"}, AVX512),
    (NUMPY_OPENBLAS, frozenset({"avx2", "fma"})),  # a CPU without AVX-512
    ({**NUMPY_OPENBLAS, "internal_api": "mkl"}, AVX512),  # not OpenBLAS
    ({**NUMPY_OPENBLAS, "architecture": None}, AVX512),
    (None, AVX512),  # no BLAS found
])
def test_no_hint_where_none_applies(blas, flags):
    assert avx512_hint(blas, flags, {"OPENBLAS_CORETYPE": "Haswell"}) is None


def _train_one_epoch(data_dir, out, backend="numpy"):
    argv = ["--dataset", "mnist", "--data-dir", str(data_dir), "--hidden", "8", "--latent-dim", "2",
            "--epochs", "1", "--backend", backend, "--out", str(out)]
    assert train.main(argv) == 0


@pytest.mark.parametrize("backend", ["numpy", "numba"])
def test_the_trainer_prints_the_hint(tiny_data_dir, tmp_path, capsys, monkeypatch, backend):
    monkeypatch.setattr(train, "numpy_blas", lambda: NUMPY_OPENBLAS)
    monkeypatch.setattr(train, "cpu_flags", lambda: AVX512)
    monkeypatch.setenv("OPENBLAS_CORETYPE", "Haswell")
    _train_one_epoch(tiny_data_dir, tmp_path / "run", backend)
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("run directory:")
    assert lines[1].startswith("note: NumPy's OpenBLAS runs its AVX2 kernels (Haswell)")


def test_the_trainer_prints_no_hint_on_avx512_kernels(tiny_data_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(train, "numpy_blas", lambda: SCIPY_OPENBLAS)
    monkeypatch.setattr(train, "cpu_flags", lambda: AVX512)
    _train_one_epoch(tiny_data_dir, tmp_path / "run")
    assert "note:" not in capsys.readouterr().out

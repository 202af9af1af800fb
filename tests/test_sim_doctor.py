"""``fortis doctor``: versions, torch, the compiled kernels and the MNIST folder."""

import importlib.metadata
import json

import pytest

import robust
import simulations.doctor as doctor
from fortis import __version__
from simulations.cli import main
from simulations.datasets import MNIST_KEYS
from simulations.errors import SimulationError

MNIST_NAMES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte.gz",
    "test_images": "t10k-images.idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}


def test_doctor_prints_versions_kernels_and_data(capsys):
    assert main(["doctor"]) == 0
    out = capsys.readouterr().out
    assert f"fortis      {__version__}" in out
    for name in ("numpy", "cryptography", "phe", "gmpy2", "torch"):
        assert f"{name} {importlib.metadata.version(name)}" in out
    assert "torch       importable: yes" in out
    assert "kernels     in use" in out or "kernels     not in use" in out
    assert "\nmnist       " in out


def test_doctor_json_has_every_fact(capsys):
    assert main(["doctor", "--json"]) == 0
    facts = json.loads(capsys.readouterr().out)
    assert facts["fortis"] == __version__
    assert set(facts["required"]) == set(doctor.REQUIRED)
    assert facts["torch_importable"] is True
    assert isinstance(facts["kernels"]["in_use"], bool) and facts["kernels"]["reason"]


def test_kernels_come_from_kernel_status_when_robust_has_it(monkeypatch):
    status = {"available": True, "in_use": False, "reason": "hash mismatch", "path": "/x.so"}
    monkeypatch.setattr(robust, "kernel_status", lambda: status, raising=False)
    assert doctor.kernel_report() == {"source": "robust.kernel_status", **status}


def test_kernels_fall_back_to_robust_native(monkeypatch):
    from robust import _native

    monkeypatch.delattr(robust, "kernel_status", raising=False)
    report = doctor.kernel_report()
    assert report["source"] == "robust._native"
    assert report["in_use"] == _native.enabled() and report["available"] == _native.available()
    monkeypatch.setenv("FORTIS_KERNELS", "numpy")
    report = doctor.kernel_report()
    assert report["in_use"] is False
    if _native.available():
        assert "FORTIS_KERNELS=numpy" in report["reason"]


def test_a_broken_kernel_setting_is_reported_not_raised(monkeypatch):
    def broken():
        raise RuntimeError("FORTIS_KERNELS must be 'auto', 'compiled' or 'numpy'")

    monkeypatch.setattr(robust, "kernel_status", broken, raising=False)
    report = doctor.kernel_report()
    assert report["in_use"] is False and "FORTIS_KERNELS must be" in report["reason"]


def test_mnist_folder_check(tmp_path, capsys):
    for key in MNIST_KEYS:
        (tmp_path / MNIST_NAMES[key]).write_bytes(b"")
    assert doctor.mnist_report(str(tmp_path)) == {
        "tried": [str(tmp_path)],
        "folder": str(tmp_path.resolve()),
        "ok": True,
        "reason": "the four IDX files",
    }
    (tmp_path / MNIST_NAMES["test_labels"]).unlink()
    report = doctor.mnist_report(str(tmp_path))
    assert not report["ok"] and report["reason"] == "missing test_labels"
    assert main(["doctor", "--data-dir", str(tmp_path / "absent")]) == 0
    assert (
        f"mnist       not found: {tmp_path / 'absent'} (no such folder)" in capsys.readouterr().out
    )


def test_mnist_default_folder_honours_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("FORTIS_MNIST_DIR", str(tmp_path))
    report = doctor.mnist_report()
    assert report["tried"][0] == str(tmp_path) and report["folder"] == str(tmp_path.resolve())


def test_a_missing_required_dependency_exits_1(monkeypatch, capsys):
    real = doctor._version
    monkeypatch.setattr(doctor, "_version", lambda name: None if name == "phe" else real(name))
    assert main(["doctor"]) == 1
    assert "phe MISSING" in capsys.readouterr().out


def test_a_fortis_error_in_doctor_is_one_line(monkeypatch, capsys):
    def refuses(data_dir):
        raise SimulationError("injected")

    monkeypatch.setattr(doctor, "diagnose", refuses)
    with pytest.raises(SystemExit) as exc:
        main(["doctor"])
    assert exc.value.code == 2
    assert capsys.readouterr().err == "fortis doctor: error: injected\n"

import subprocess

import pytest
import torch

from facemogle.atomic import DiskFull, atomic_dir, atomic_write, atomic_write_json, atomic_write_text
from facemogle.cli import run_cli


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    target = atomic_write_text(tmp_path / "a.txt", "old")

    def half_then_full_disk(tmp):
        tmp.write_text("ha")
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space left"):
        atomic_write(target, half_then_full_disk)
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["a.txt"]


def test_json_and_text_land_complete_in_new_folders(tmp_path):
    atomic_write_json(tmp_path / "deep" / "er" / "x.json", {"a": 1})
    assert (tmp_path / "deep" / "er" / "x.json").read_text() == '{\n "a": 1\n}'


def test_a_folder_replaces_the_old_one_only_when_complete(tmp_path):
    with atomic_dir(tmp_path / "export") as tmp:
        (tmp / "v").write_text("1")
    with pytest.raises(RuntimeError), atomic_dir(tmp_path / "export") as tmp:
        (tmp / "v").write_text("2")
        raise RuntimeError("killed mid-way")
    assert (tmp_path / "export" / "v").read_text() == "1"
    with atomic_dir(tmp_path / "export") as tmp:
        (tmp / "w").write_text("3")
    assert [p.name for p in (tmp_path / "export").iterdir()] == ["w"]
    assert [p.name for p in tmp_path.iterdir()] == ["export"]


@pytest.fixture
def small_disk(tmp_path):
    """A real 1 MiB filesystem (tmpfs) where this process may mount one (root), else the test is skipped."""
    mount = tmp_path / "small"
    mount.mkdir()
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], capture_output=True)
    if made.returncode:
        pytest.skip(f"cannot mount a small filesystem here: {made.stderr.decode().strip()}")
    yield mount
    subprocess.run(["umount", "--lazy", str(mount)], check=True)  # lazy: a logger may hold a file open


def test_a_full_disk_is_one_oserror_naming_the_file_and_its_folder(small_disk):
    target = small_disk / "runs" / "x" / "last.ckpt"
    with pytest.raises(DiskFull, match=rf"No space left on device: writing {target} failed \(\d+ bytes free"):
        atomic_write(
            target, lambda tmp: torch.save({"w": torch.zeros(1 << 19)}, tmp)
        )  # 2 MiB: torch's own error
    with pytest.raises(DiskFull, match=r"writing .*big.txt failed"):
        atomic_write_text(small_disk / "big.txt", "x" * (2 << 20))
    with pytest.raises(DiskFull, match=r"writing .*export failed"):
        with atomic_dir(small_disk / "export") as tmp:
            (tmp / "w.bin").write_bytes(bytes(2 << 20))
    assert sorted(p.name for p in small_disk.rglob("*") if p.is_file()) == []  # no temporary left


def test_training_onto_a_full_disk_ends_in_one_line_naming_the_folder(small_disk, workspace, capsys):
    from experiments import train as train_cli
    from experiments.config.load import to_yaml
    from tests.run_fixtures import tiny_config

    config = small_disk.parent / "c.yaml"
    config.write_text(to_yaml(tiny_config(workspace, small_disk / "run", 4)))
    with pytest.raises(SystemExit) as stopped:
        run_cli(lambda: train_cli.main(["--config", str(config)]))
    assert stopped.value.code == 2
    err = capsys.readouterr().err
    [line] = [line for line in err.splitlines() if line.startswith("error:")]
    assert "Traceback" not in err and "No space left on device" in line and str(small_disk / "run") in line

import pytest

from facemogle.atomic import atomic_dir, atomic_write, atomic_write_json, atomic_write_text


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

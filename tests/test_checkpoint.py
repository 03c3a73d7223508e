import pytest
import torch

from dsod.engine.checkpoint import (
    CheckpointError,
    CheckpointManager,
    load_checkpoint,
    load_model_weights,
    save_atomic,
)


def test_save_is_atomic_and_failed_save_keeps_previous(tmp_path, monkeypatch):
    path = tmp_path / "c.pth"
    save_atomic({"model": {"w": torch.ones(2)}}, path)

    def broken_save(obj, handle):
        handle.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(
        CheckpointError,
        match=r"cannot write checkpoint .*c\.pth: disk full "
        r"\(.*MiB free.*previous file is intact",
    ):
        save_atomic({"model": {"w": torch.zeros(2)}}, path)
    monkeypatch.undo()
    assert torch.equal(load_checkpoint(path)["model"]["w"], torch.ones(2))
    assert [p.name for p in tmp_path.iterdir()] == ["c.pth"]  # no temporary left behind


def test_code_in_a_checkpoint_is_not_run(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    path = tmp_path / "evil.pth"
    torch.save({"model": {}, "payload": Evil()}, path)
    with pytest.raises(CheckpointError, match=r"evil.pth: it holds objects other than") as info:
        load_checkpoint(path)
    assert "weights_only" not in str(info.value)  # no advice to load it unsafely


def test_truncated_and_missing_files_are_clear_errors(tmp_path):
    path = tmp_path / "c.pth"
    save_atomic({"model": {"w": torch.ones(1000)}}, path)
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(CheckpointError, match=r"c.pth: it is not a PyTorch checkpoint"):
        load_checkpoint(path)
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "none.pth")
    path.write_bytes(b"")
    with pytest.raises(CheckpointError, match=r"c.pth: the file is empty"):
        load_checkpoint(path)
    (tmp_path / "d.pth").mkdir()
    with pytest.raises(CheckpointError, match=r"d.pth is a directory"):
        load_checkpoint(tmp_path / "d.pth")


def test_mismatched_model_lists_keys_and_shapes():
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Linear(4, 2))
    other = torch.nn.Sequential(torch.nn.Linear(3, 5), torch.nn.Linear(5, 2), torch.nn.ReLU())
    state = dict(other.state_dict())
    state["extra.weight"] = torch.zeros(1)
    with pytest.raises(CheckpointError) as info:
        load_model_weights(model, state, "ck.pth")
    message = str(info.value)
    assert "0.weight: checkpoint (5, 3) vs model (4, 3)" in message
    assert "extra.weight" in message


def test_manager_keeps_last_n_and_skips_damaged_latest(tmp_path):
    manager = CheckpointManager(tmp_path, keep=2)
    for step in (10, 20, 30):
        manager.save({"model": {}, "step": step}, step)
    assert [s for s, _ in manager.step_files()] == [20, 30]
    manager.step_files()[-1][1].write_bytes(b"garbage")
    path, state = manager.latest()
    assert state["step"] == 20

"""What every tool prints for errors a user can fix: one line, no traceback."""

from __future__ import annotations

import pytest
from torch.utils.data import DataLoader, Dataset

from dsod.cli import run_guarded, user_message
from dsod.data.errors import ImageReadError


class _Unreadable(Dataset):
    def __len__(self) -> int:
        return 1

    def __getitem__(self, index: int):
        raise ImageReadError("/data/a.jpg", "the file is truncated")


def test_an_error_from_a_loader_worker_prints_its_own_message(capsys):
    def work():
        next(iter(DataLoader(_Unreadable(), num_workers=1)))

    assert run_guarded(work) == 2
    err = capsys.readouterr().err
    assert err == "error: cannot read image /data/a.jpg: the file is truncated\n"


def test_user_message_keeps_ordinary_messages():
    assert user_message(ValueError("a: b")) == "a: b"


@pytest.mark.parametrize(
    "make",
    [
        lambda tmp: (tmp / "afile").write_text("x") and (tmp / "afile" / "out").mkdir(),
        lambda tmp: open(tmp, "rb"),  # a directory
    ],
)
def test_os_errors_are_one_line_with_the_path(tmp_path, capsys, make):
    assert run_guarded(lambda: make(tmp_path)) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and str(tmp_path) in err and "Traceback" not in err
    assert err.count("\n") == 1

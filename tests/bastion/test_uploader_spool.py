"""The uploader's spool clean-up tolerates a spool changed under it.

An operator (or a test) removing a day's directory from the spool while the node
runs made the removal of an uploaded copy raise, and the exception ended the
uploader's task: no later recording was uploaded until the node restarted.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any, cast

import pytest

from bastion.s3_config import S3Config
from bastion.uploader import RecordingUploader
from recorder import LocalStorage


def _uploader(root: Path) -> RecordingUploader:
    return RecordingUploader(
        S3Config("bucket"), LocalStorage(root), cast(Any, None), cast(Any, None)
    )


def test_removing_a_copy_whose_directory_goes_meanwhile_is_not_an_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The directory vanishes between the unlink and the directory sync (a fault
    injected at that point: the race itself is too narrow to stage)."""
    spool = LocalStorage(tmp_path)
    location = spool.location_for("01J0000000000000000000000A", 1_700_000_000)
    path = spool.path_of(location)
    path.parent.mkdir(parents=True)
    path.write_bytes(b"sealed")
    real_unlink = os.unlink

    def unlink_and_lose_the_day(target: Any) -> None:
        real_unlink(target)
        shutil.rmtree(tmp_path / location.split("/")[0])

    monkeypatch.setattr(os, "unlink", unlink_and_lose_the_day)
    _uploader(tmp_path)._remove_spool_copy(location)
    assert not path.exists()


def test_only_recordings_are_removed(tmp_path: Path) -> None:
    other = tmp_path / "2026" / "notes.txt"
    other.parent.mkdir(parents=True)
    other.write_text("kept")
    _uploader(tmp_path)._remove_spool_copy("2026/notes.txt")
    assert other.read_text() == "kept"

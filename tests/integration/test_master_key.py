"""The database remembers its master key."""

from __future__ import annotations

import asyncio
import os

import pytest

from controller.bootstrap import MasterKeyMismatchError, verify_master_key
from controller.crypto import SecretBox
from controller.db.uow import UnitOfWorkFactory


async def test_first_starts_at_once_agree_on_one_key(uow_factory: UnitOfWorkFactory) -> None:
    box = SecretBox(os.urandom(32))
    await asyncio.gather(*(verify_master_key(uow_factory, box) for _ in range(6)))
    await verify_master_key(uow_factory, box)  # and later starts accept it


async def test_racing_first_starts_with_different_keys_let_one_win(
    uow_factory: UnitOfWorkFactory,
) -> None:
    boxes = [SecretBox(os.urandom(32)) for _ in range(4)]
    results = await asyncio.gather(
        *(verify_master_key(uow_factory, box) for box in boxes), return_exceptions=True
    )
    winners = [box for box, result in zip(boxes, results, strict=True) if result is None]
    assert len(winners) == 1
    assert all(isinstance(r, MasterKeyMismatchError) for r in results if r is not None)
    with pytest.raises(MasterKeyMismatchError):
        await verify_master_key(uow_factory, SecretBox(os.urandom(32)))
    await verify_master_key(uow_factory, winners[0])

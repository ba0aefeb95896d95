"""A pool of fixed-size KV blocks with reference counts and a prefix cache.

A block holds `block_size` consecutive positions of one sequence (for every layer of its group).
Full blocks are registered under a chain hash of all token ids up to and including the block, so
a later sequence that starts with the same tokens can reuse them. A block whose reference count
drops to zero goes to the free list but keeps its contents and hash until it is handed out again
(least recently freed first), so cached prefixes survive as long as memory allows.
"""
from __future__ import annotations

import hashlib
from array import array
from collections import OrderedDict
from dataclasses import dataclass
from typing import Sequence


class CacheFullError(RuntimeError):
    """No free block is left (the scheduler checks `num_free` first; this is a bug guard)."""


def chain_hash(previous: bytes | None, token_ids: Sequence[int]) -> bytes:
    """128-bit hash of a block's tokens chained to the hash of everything before it."""
    h = hashlib.blake2b(previous or b"", digest_size=16)
    h.update(array("q", token_ids).tobytes())
    return h.digest()


def adapter_salt(name: str | None) -> bytes | None:
    """Where the hash chain of a request computed by LoRA adapter `name` starts (None: the base
    model), so that KV blocks of different adapters never match each other."""
    if name is None:
        return None
    return hashlib.blake2b(b"lora:" + name.encode(), digest_size=16).digest()


@dataclass
class Block:
    block_id: int
    ref_count: int = 0
    hash: bytes | None = None
    token_ids: tuple[int, ...] = ()  # kept to rule out hash collisions on lookup


class BlockPool:
    def __init__(self, num_blocks: int, block_size: int):
        if num_blocks <= 0 or block_size <= 0:
            raise ValueError(f"BlockPool needs positive num_blocks and block_size, got "
                             f"{num_blocks} and {block_size}")
        self.block_size = block_size
        self.blocks = [Block(i) for i in range(num_blocks)]
        self.free: OrderedDict[int, None] = OrderedDict((i, None) for i in range(num_blocks))
        self.cached: dict[bytes, int] = {}  # chain hash -> block id

    @property
    def num_blocks(self) -> int:
        return len(self.blocks)

    @property
    def num_free(self) -> int:
        """Blocks that can be handed out (including cached blocks nobody holds)."""
        return len(self.free)

    def allocate(self) -> int:
        """Take the least recently freed block, forgetting whatever prefix it cached."""
        if not self.free:
            raise CacheFullError(f"all {self.num_blocks} KV blocks are in use")
        block_id, _ = self.free.popitem(last=False)
        block = self.blocks[block_id]
        if block.hash is not None and self.cached.get(block.hash) == block_id:
            del self.cached[block.hash]
        block.hash, block.token_ids, block.ref_count = None, (), 1
        return block_id

    def acquire(self, block_id: int) -> None:
        """Take another reference to a (cached) block."""
        block = self.blocks[block_id]
        if block.ref_count == 0:
            del self.free[block_id]
        block.ref_count += 1

    def release(self, block_id: int) -> None:
        block = self.blocks[block_id]
        if block.ref_count <= 0:
            raise RuntimeError(f"KV block {block_id} released more often than acquired")
        block.ref_count -= 1
        if block.ref_count == 0:
            self.free[block_id] = None

    def register(self, block_id: int, block_hash: bytes, token_ids: Sequence[int]) -> None:
        """Mark a full, computed block as reusable under `block_hash`."""
        block = self.blocks[block_id]
        if block.hash == block_hash:
            return
        block.hash, block.token_ids = block_hash, tuple(token_ids)
        self.cached.setdefault(block_hash, block_id)

    def lookup(self, block_hash: bytes, token_ids: Sequence[int]) -> int | None:
        block_id = self.cached.get(block_hash)
        if block_id is None or self.blocks[block_id].token_ids != tuple(token_ids):
            return None
        return block_id

    def is_free(self, block_id: int) -> bool:
        return self.blocks[block_id].ref_count == 0

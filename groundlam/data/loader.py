"""The training loader: one rank's batches of clips, resumable mid-epoch, whatever the corpus.

    loader = TrainLoader.build(config, episodes, rank, world)
    loader.load_state_dict(checkpoint_state, where)   # on resume
    while training:
        for batch in loader:      # the rest of the current epoch; the next call starts the next
            ...
        state = loader.state_dict()                   # a collective call: every rank makes it

A map-style corpus (``datasets.Dataset``) is cut into ``ClipDataset`` clips, shuffled per epoch
by a ``DistributedSampler`` that can start part-way; a streamed one (``datasets.IterableDataset``)
goes through ``ClipStream`` and ``StreamingLoader``, whose state holds every worker's position.
The trainer sees one interface: the epoch and the batches done in it, a ``state_dict`` it stores
in each checkpoint (the same keys as before this class existed, so old checkpoints resume) and
the count of bad episodes passed over.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import datasets
import torch
import torch.distributed as dist

from groundlam.data.episodes import ClipDataset, collate_clips
from groundlam.data.streaming import ClipStream, StreamingLoader

if TYPE_CHECKING:
    from groundlam.config import Config

__all__ = ["TrainLoader"]

logger = logging.getLogger(__name__)


class _ResumableSampler(torch.utils.data.DistributedSampler):
    """A DistributedSampler that can start an epoch part-way, to resume mid-epoch."""

    skip = 0

    def __iter__(self):
        indices = list(super().__iter__())
        skip, self.skip = self.skip, 0
        return iter(indices[skip:])


class TrainLoader:
    """Batches for one rank of ``world``; ``epoch`` and ``batches_done`` say where it stands."""

    def __init__(self, loader: Any, sampler: _ResumableSampler | None, batch_size: int,
                 rank: int, world: int, name: str) -> None:
        self.loader, self.sampler = loader, sampler  # sampler None: a StreamingLoader
        self.batch_size, self.rank, self.world, self.name = batch_size, rank, world, name
        self.epoch, self.batches_done = 0, 0
        self.passed_over: list[str] = []  # bad episodes met this epoch (clips replaced)

    @classmethod
    def build(cls, config: Config, episodes: datasets.Dataset | datasets.IterableDataset,
              rank: int, world: int) -> TrainLoader:
        """The loader ``config.data`` and ``config.train.batch_size`` ask for."""
        data, batch_size = config.data, config.train.batch_size
        if isinstance(episodes, datasets.IterableDataset):
            stream = ClipStream(episodes, data.clip_length, config.model.image_size,
                                data.frame_stride, rank=rank, world_size=world,
                                seed=config.train.seed,
                                buffer_episodes=data.stream_buffer_episodes, name=data.train,
                                strict=data.strict)
            return cls(StreamingLoader(stream, batch_size, data.num_workers), None, batch_size,
                       rank, world, data.train)
        clips = ClipDataset(episodes, data.clip_length, config.model.image_size,
                            data.frame_stride, name=data.train, strict=data.strict)
        sampler = _ResumableSampler(clips, num_replicas=world, rank=rank, shuffle=True,
                                    seed=config.train.seed, drop_last=True)
        loader = torch.utils.data.DataLoader(clips, batch_size=batch_size, sampler=sampler,
                                             collate_fn=collate_clips,
                                             num_workers=data.num_workers, drop_last=True)
        if len(loader) == 0:
            raise ValueError(f"{len(clips)} clips give no full batch of {batch_size} on each "
                             f"of {world} ranks; lower train.batch_size")
        return cls(loader, sampler, batch_size, rank, world, data.train)

    @property
    def streaming(self) -> bool:
        return self.sampler is None

    def __iter__(self) -> Iterator[dict[str, Any]]:
        """The rest of the current epoch; when it is used up, the next epoch begins.

        ``batches_done`` counts a batch as it is handed out, so a checkpoint taken after using it
        resumes after it.
        """
        if self.streaming:
            self.loader.set_epoch(self.epoch)  # keeps a resumed epoch's position
            batches = self._even_batches()
        else:
            self.sampler.set_epoch(self.epoch)
            self.sampler.skip = self.batches_done * self.batch_size
            batches = iter(self.loader)
        for batch in batches:
            self.passed_over += batch.get("skipped", [])
            self.batches_done += 1
            yield batch
        if self.streaming and self.batches_done == 0:
            raise ValueError(f"{self.name}: the stream gave no batch of clips on rank "
                             f"{self.rank} in epoch {self.epoch}")
        if self.passed_over:
            logger.warning("epoch %d: rank %d passed over %d clips of bad episodes: %s",
                           self.epoch, self.rank, len(self.passed_over),
                           "; ".join(self.passed_over[:10]))
        self.epoch, self.batches_done, self.passed_over = self.epoch + 1, 0, []

    def _even_batches(self) -> Iterator[dict[str, Any]]:
        """The stream's batches while every rank still has one: ranks stream different numbers
        of clips, and one rank stepping alone would hang the others in the gradient
        all-reduce."""
        iterator = iter(self.loader)
        while True:
            batch = next(iterator, None)
            have = torch.tensor(float(batch is not None))
            dist.all_reduce(have, op=dist.ReduceOp.MIN)
            if not have.item():
                if batch is not None:
                    logger.info("epoch ends: another rank ran out of clips first; the rest of "
                                "this rank's epoch is not trained on")
                return
            yield batch

    def state_dict(self) -> dict[str, Any]:
        """Where every rank stands: the epoch and batches done in it; streamed, each rank's
        stream position too (gathered, since DeepSpeed keeps rank 0's client state only).
        A collective call when streaming."""
        state: dict[str, Any] = {"epoch": self.epoch, "batches_done": self.batches_done}
        if self.streaming:
            streams: list[Any] = [None] * self.world
            dist.all_gather_object(streams, self.loader.state_dict())
            state["stream"] = streams
        return state

    def load_state_dict(self, state: dict[str, Any], where: str | Path = "the checkpoint"
                        ) -> None:
        """Continue from ``state`` (a checkpoint's client state; ``where`` names it in errors)."""
        self.epoch, self.batches_done = state["epoch"], state["batches_done"]
        if not self.streaming:
            return
        if "stream" not in state:
            raise ValueError(f"--resume with data.streaming: {where} holds no stream position "
                             "(saved without data.streaming)")
        if len(state["stream"]) != self.world:
            raise ValueError(f"--resume with data.streaming: {where} was saved by "
                             f"{len(state['stream'])} ranks, this run has {self.world}")
        self.loader.load_state_dict(state["stream"][self.rank])

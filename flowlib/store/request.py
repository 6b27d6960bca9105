"""A run request: what a run is asked to be, typed, from the form or the command line to the store.

    from flowlib.store.request import RunRequest
    request = RunRequest("mnist-a", preset("mnist-fast"), TrainConfig(dataset="mnist", max_steps=2000),
                         owner=visitor, preset="mnist-fast")
    request.dataset                          # the training config's dataset (one place says it)
    RunRequest.from_dicts(name, config_dict, train_dict)   # ConfigError naming the field

The Train page, the CLI and a study make one; ``flowlib.jobs.worker.submit`` hands it to
:meth:`flowlib.store.runs.RunStore.create_run`, which stores it; the worker process reads it
back with :meth:`~flowlib.store.runs.RunStore.stored_request`, which checks it again, so a row
changed behind the app's back is refused in words rather than trained.

Its settings are checked when it is made: a :class:`~flowlib.config.FlowConfig` and a
:class:`~flowlib.config.TrainConfig` cannot hold a bad value. What the server allows (the
classroom caps) is the store's check, not the request's: the same request may be fine on one
server and over the limit on another.
"""

from __future__ import annotations

from dataclasses import dataclass

from flowlib.config import FlowConfig, TrainConfig

__all__ = ["RunRequest"]


@dataclass(frozen=True)
class RunRequest:
    """One run to store: its name, model, training, owner and the preset it started from."""

    name: str                    # a label, sanitised and made unique by the store
    config: FlowConfig           # the model: how to rebuild it, seed included
    train: TrainConfig           # how to train it, the dataset included
    owner: str | None = None     # the visitor id the app passes; None: trusted (the CLI, the teacher)
    preset: str | None = None    # the model preset the form or the CLI started from, for display

    def __post_init__(self):
        if not isinstance(self.config, FlowConfig):
            raise TypeError(f"RunRequest.config must be a FlowConfig, got {type(self.config).__name__} "
                            "(RunRequest.from_dicts builds one from a dict)")
        if not isinstance(self.train, TrainConfig):
            raise TypeError(f"RunRequest.train must be a TrainConfig, got {type(self.train).__name__} "
                            "(RunRequest.from_dicts builds one from a dict)")

    @property
    def dataset(self) -> str:
        """The registry name of the data it trains on (``train.dataset``)."""
        return self.train.dataset

    @classmethod
    def from_dicts(cls, name, config: dict, train: dict, owner: str | None = None,
                   preset: str | None = None) -> "RunRequest":
        """A request from ``FlowConfig.to_dict()`` / ``TrainConfig.to_dict()``-shaped dicts;
        ConfigError (a ValueError) naming the field when a value is out of its range or a key is unknown."""
        return cls(name, FlowConfig.from_dict(config), TrainConfig.from_dict(train), owner, preset)

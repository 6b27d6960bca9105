"""Server-wide limits: classroom caps, concurrency, timing windows.

    from flowlib.store.limits import Limits
    limits = Limits.from_env()          # what RunStore() uses when no Limits is given
    limits.check_train(train_dict)      # ConfigError (a ValueError) naming the field, the cap and its variable
    limits.check_run(config_dict, train_dict)   # also the model-size caps (classroom)

The run store enforces these limits; the policy lives here so the store stays a store. The
variables behind them (``FLOWLAB_MAX_CONCURRENT``, ``FLOWLAB_CLASSROOM`` and the caps it turns
on, ``FLOWLAB_HEARTBEAT_STALE_S``, ``FLOWLAB_START_TIMEOUT_S``, ``FLOWLAB_DB_TIMEOUT_S`` ...)
are declared, with their defaults and classroom defaults, in :mod:`flowlib.env`, so the app,
the worker and the CLI read them the same way. The model-size caps are arithmetic on the
config (:func:`flowlib.size.parameter_count`, :func:`flowlib.size.activation_mb`): nothing is
built to check them.
"""

from __future__ import annotations

from dataclasses import dataclass

from flowlib import env
from flowlib.machine.gpu import default_concurrent_runs
from flowlib.settings import ConfigError
from flowlib.size import activation_mb, parameter_count

__all__ = ["Limits"]

@dataclass(frozen=True)
class Limits:
    """Server-wide caps and timing windows (see the module docstring for the variables)."""

    max_concurrent: int = 1           # active runs at once; 1 keeps a CPU server responsive
    max_steps: int | None = None      # classroom cap on a run's step budget
    max_batch: int | None = None      # classroom cap on batch size (memory, fairness)
    max_minutes: float | None = None  # classroom cap on a run's time budget
    classroom: bool = False           # classroom mode: runs must have a capped budget
    max_params: int | None = None     # classroom cap on the model's parameter count
    max_activation_mb: int | None = None  # classroom cap on activation_mb(config, batch)
    max_waiting_per_owner: int | None = None  # runs one visitor may have waiting or active
    stale_after_s: float = 30.0       # heartbeat age that marks a running run lost
    start_timeout_s: float = 120.0    # a queued run whose process never came up is lost after this
    db_timeout_s: float = 5.0         # SQLite busy timeout, and the bound on write retries

    @classmethod
    def from_env(cls) -> "Limits":
        """The limits the FLOWLAB_* variables set (flowlib.env), with the classroom defaults
        where FLOWLAB_CLASSROOM is on; ValueError naming a variable that does not parse."""
        classroom = env.flag("FLOWLAB_CLASSROOM")

        def read(name):
            return env.read(name, classroom=classroom)

        return cls(
            max_concurrent=read("FLOWLAB_MAX_CONCURRENT") or default_concurrent_runs(),
            max_steps=read("FLOWLAB_MAX_STEPS"),
            max_batch=read("FLOWLAB_MAX_BATCH"),
            max_minutes=read("FLOWLAB_MAX_MINUTES"),
            classroom=classroom,
            max_params=read("FLOWLAB_MAX_PARAMS"),
            max_activation_mb=read("FLOWLAB_MAX_ACTIVATION_MB"),
            max_waiting_per_owner=read("FLOWLAB_MAX_WAITING_PER_VISITOR"),
            stale_after_s=read("FLOWLAB_HEARTBEAT_STALE_S"),
            start_timeout_s=read("FLOWLAB_START_TIMEOUT_S"),
            db_timeout_s=read("FLOWLAB_DB_TIMEOUT_S"),
        )

    def check_train(self, train: dict) -> None:
        """Refuse a training config over this server's caps: ConfigError (a ValueError) whose
        ``field`` is the setting and whose message names the cap and its variable."""
        steps, batch, minutes = train.get("max_steps"), train.get("batch_size"), train.get("max_minutes")
        if self.max_batch is not None and isinstance(batch, int) and batch > self.max_batch:
            raise ConfigError(f"batch_size {batch} is above this server's limit of {self.max_batch} "
                              "(FLOWLAB_MAX_BATCH)", "batch_size")
        if self.max_steps is not None:
            if steps is None and (self.classroom or minutes is None):
                raise ConfigError(f"a step budget (max_steps) of at most {self.max_steps} is required on "
                                  "this server (FLOWLAB_MAX_STEPS)", "max_steps")
            if isinstance(steps, int) and steps > self.max_steps:
                raise ConfigError(f"max_steps {steps} is above this server's limit of {self.max_steps} "
                                  "steps per run (FLOWLAB_MAX_STEPS)", "max_steps")
        if self.max_minutes is not None and isinstance(minutes, (int, float)) and minutes > self.max_minutes:
            raise ConfigError(f"max_minutes {minutes} is above this server's limit of {self.max_minutes:g} "
                              "minutes per run (FLOWLAB_MAX_MINUTES)", "max_minutes")

    def check_model(self, config: dict, batch_size: int | None) -> None:
        """Refuse a model over the parameter or activation cap (ConfigError naming the field).

        Arithmetic only (:func:`flowlib.size.parameter_count`, :func:`activation_mb`):
        no model is built. A config that does not parse is a ConfigError from FlowConfig.
        """
        if self.max_params is None and self.max_activation_mb is None:
            return
        from flowlib.config import FlowConfig
        cfg = FlowConfig.from_dict(config)
        if self.max_params is not None:
            n = parameter_count(cfg)
            if n > self.max_params:
                raise ConfigError(
                    f"this model has {n:,} parameters, above this server's limit of "
                    f"{self.max_params:,} (FLOWLAB_MAX_PARAMS); lower hidden, steps or levels",
                    "hidden")
        if self.max_activation_mb is not None and isinstance(batch_size, int):
            mb = activation_mb(cfg, batch_size)
            if mb > self.max_activation_mb:
                fits = max(1, int(batch_size * self.max_activation_mb / mb))
                raise ConfigError(
                    f"batch_size {batch_size} with this model needs about {mb:,.0f} MB of "
                    f"activations, above this server's limit of {self.max_activation_mb:,} MB "
                    f"(FLOWLAB_MAX_ACTIVATION_MB); try batch_size {fits} or a smaller model",
                    "batch_size")

    def check_run(self, config: dict, train: dict) -> None:
        """check_train, then check_model with the run's batch size."""
        self.check_train(train)
        self.check_model(config, train.get("batch_size"))

"""The schema of settings: one dataclass per section, the dotted keys with their types, the choices, and
which keys a resumed run may change. values.py reads and checks single values, layers.py builds a whole Config
from layers of sources, files.py reads and writes YAML."""

from dataclasses import dataclass, fields


@dataclass
class ModelConfig:
    """Network shape and initialisation."""

    cell: str = "lstm"  # lstm | gru | rnn
    hidden_size: int = 256
    num_layers: int = 2
    dropout: float = 0.2  # between layers and before the decoder, training only
    embedding_size: int = 0  # 0 = one-hot input
    init: str = "uniform"  # uniform: every parameter ~ U(-init_scale, init_scale) | torch: PyTorch's own
    init_scale: float = 0.08  # the uniform init's bound
    forget_bias: float | None = None  # LSTM forget-gate bias at init; None = drawn like every other bias
    orthogonal_recurrent: bool = False  # each gate's H x H block of weight_hh a random orthogonal matrix


@dataclass
class DataConfig:
    """How the corpus is decoded and split."""

    val_fraction: float = 0.05
    test_fraction: float = 0.05
    encoding: str = "utf-8"
    errors: str = "strict"  # strict | replace
    glob: str = ""  # a directory corpus reads only the files whose relative path matches ('' = all)
    separator: str = "\n\n"  # put between the files of a corpus of several files


@dataclass
class OptimConfig:
    """Optimizer, gradient clipping and learning-rate schedule."""

    optimizer: str = "adam"  # adam | rmsprop | adagrad | sgd
    lr: float = 0.003
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8
    momentum: float = 0.9  # sgd
    alpha: float = 0.95  # rmsprop decay
    weight_decay: float = 0.0
    grad_clip: float = 5.0  # global norm, 0 = off
    grad_clip_value: float = 0.0  # per element, 0 = off
    schedule: str = "linear"  # constant | step | cosine | linear
    schedule_length: str = "auto"  # cosine/linear end at: steps (the step budget) | auto (also max_time)
    warmup_steps: int = 0
    decay_rate: float = 0.97  # step schedule: lr *= decay_rate every decay_every steps
    decay_every: int = 1000
    min_lr: float = 0.0
    decay_fraction: float = 0.2  # cosine/linear decay only over the budget's last fraction (lr held before)
    ema: float = 0.0  # weight averaging: evaluate/sample/save an average of the weights, this decay per step; 0 = off


@dataclass
class TrainConfig:
    """Batching, stopping, logging, sampling and checkpointing."""

    batch_size: int = 64
    seq_len: int = 100
    max_steps: int = 0  # 0 = no limit
    max_epochs: int | None = None  # 0 = no limit; None (auto) = AUTO_EPOCHS unless max_steps or max_time is set
    max_time: float = 0.0  # seconds, 0 = no limit; "90s", "10m", "1.5h" accepted
    seed: int = 1
    log_every: int = 10
    eval_every: int = 200  # the last step is evaluated too; 0 = the last step only
    eval_max_chars: int = 1_000_000  # cap per evaluation; 0 = whole val split
    sample_every: int = 500  # 0 = never
    sample_length: int = 300
    temperature: float = 0.8  # 0 = greedy
    checkpoint_every: int = 500  # 0 = no periodic checkpoints
    keep_last: int = 3  # 0 = keep all
    max_bad_steps: int = 5  # consecutive non-finite losses before giving up
    patience: int = 0  # stop after this many evaluations without a better val loss (0 = off)

    @property
    def epoch_limit(self) -> int:
        """max_epochs as applied (0 = none). auto bounds only a run given no other limit: a user's
        --max-time or --max-steps is then the whole budget, not cut short by a default epoch count."""
        if self.max_epochs is not None:
            return self.max_epochs
        return 0 if self.max_steps or self.max_time else AUTO_EPOCHS


AUTO_EPOCHS = 20  # train.max_epochs=auto with neither max_steps nor max_time: 20 passes, then stop


# Section name -> dataclass, in the order sections are written out (layers.Config has one field per
# section, in this order; tests/test_config.py checks that they agree).
SECTIONS: dict[str, type] = {"model": ModelConfig, "data": DataConfig, "optim": OptimConfig,
                             "train": TrainConfig}
# Dotted key -> Python type of the field (int, float or str), in section/field order.
TYPES: dict[str, type] = {
    f"{sec}.{f.name}": f.type for sec, dc in SECTIONS.items() for f in fields(dc)}
KEYS: tuple[str, ...] = tuple(TYPES)

CHOICES: dict[str, tuple[str, ...]] = {
    "model.cell": ("lstm", "gru", "rnn"),
    "data.errors": ("strict", "replace"),
    "optim.optimizer": ("adam", "rmsprop", "adagrad", "sgd"),
    "model.init": ("uniform", "torch"),
    "optim.schedule": ("constant", "step", "cosine", "linear"),
    "optim.schedule_length": ("steps", "auto"),
}

# Keys that only change how long or how chattily a run goes, never the model or its optimisation,
# so a resumed run may override them without invalidating the checkpoint.
SAFE_ON_RESUME: frozenset[str] = frozenset(f"train.{name}" for name in (
    "max_steps", "max_epochs", "max_time", "log_every", "eval_every", "eval_max_chars",
    "sample_every", "sample_length", "temperature", "checkpoint_every", "keep_last",
    "max_bad_steps", "patience"))

# Keys whose null has a name of its own in messages and YAML (`max_epochs: auto`).
NULL_NAMES: dict[str, str] = {"train.max_epochs": "auto"}

"""Layered configuration: typed defaults < YAML file < --set key=value < direct CLI options.

Every setting has a dotted key (``model.hidden_size``): a section and a field of that section's
dataclass. Each layer is checked on its own (unknown keys, types) so an error names the layer it
came from; range checks run once, on the merged result.

schema.py holds the sections and keys, values.py reads one value, layers.py merges layers into a Config and
validates it, files.py reads YAML and --set items and writes config.yaml. Import from here.
"""

from .files import (
    BUNDLED_DIR,
    bundled_config_names,
    load_yaml,
    parse_set,
    resolve,
    resolve_config_path,
    save_config,
)
from .layers import Config, diff, flatten, get, key_type, overlay, set_value, validate
from .schema import (
    AUTO_EPOCHS,
    CHOICES,
    KEYS,
    SAFE_ON_RESUME,
    SECTIONS,
    DataConfig,
    ModelConfig,
    OptimConfig,
    TrainConfig,
)
from .values import check_key, parse_duration, spell

__all__ = [
    "AUTO_EPOCHS", "BUNDLED_DIR", "CHOICES", "KEYS", "SAFE_ON_RESUME", "SECTIONS", "Config", "DataConfig",
    "ModelConfig", "OptimConfig", "TrainConfig", "bundled_config_names", "check_key", "diff", "flatten", "get",
    "key_type", "load_yaml", "overlay", "parse_duration", "parse_set", "resolve", "resolve_config_path",
    "save_config", "set_value", "spell", "validate",
]

"""The version, in a leaf module: inner modules (checkpoint meta, exports, --version) read it from here,
never from the package __init__."""
__version__ = "0.1.0"

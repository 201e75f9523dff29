"""weldreview core: all domain logic, importable and testable without a display.

Nothing in this package imports Qt. TensorFlow is imported lazily by the modules that need it.
"""

__version__ = "0.1.0"

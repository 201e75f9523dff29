"""weldreview app: the PySide6 + pyqtgraph review application and the command line.

The only package that imports Qt. Domain logic lives in ``core``.
"""

"""Guard against Qt bindings that corrupt reference counts (PySide6 6.12.0 on Python 3.11 aborted
the application after a minute of panning with 'Fatal Python error: none_dealloc')."""

import sys


def test_qt_calls_keep_reference_counts(qapp):
    from PySide6.QtWidgets import QLabel

    label = QLabel()
    before = sys.getrefcount(None)
    for _ in range(1000):
        label.setText("x")
        label.setVisible(False)
    assert sys.getrefcount(None) - before > -100

"""The main window of the review application."""

from __future__ import annotations

from PySide6.QtWidgets import QLabel, QMainWindow


class MainWindow(QMainWindow):
    def __init__(self) -> None:
        super().__init__()
        self.setWindowTitle("weldreview")
        self.setCentralWidget(QLabel("weldreview"))
        self.resize(1280, 800)

    def open_demo(self) -> None:
        pass

    def open_paths(self, paths: list[str]) -> None:
        pass

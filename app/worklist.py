"""The worklist: the radiographs of a folder (or opened one by one) with each one's review state."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import QHeaderView, QTreeWidget, QTreeWidgetItem

from core.imageio import IMAGE_SUFFIXES

STATES = ("not scanned", "scanning", "flagged", "done", "failed")


@dataclass
class WorkItem:
    """One radiograph of the worklist and its state."""

    path: Path
    state: str = "not scanned"
    n_flagged: int = 0
    n_reviewed: int = 0
    message: str = ""

    def state_text(self) -> str:
        if self.state == "flagged":
            return f"{self.n_flagged} flagged / {self.n_reviewed} reviewed"
        if self.state == "done":
            return f"done ({self.n_flagged} flagged, all reviewed)" if self.n_flagged else \
                "done (nothing flagged)"
        if self.state == "failed":
            return f"failed: {self.message}"
        return self.state


def state_for(n_flagged: int, n_reviewed: int) -> str:
    """'done' when every flagged region has a verdict (also when none is), else 'flagged'."""
    return "done" if n_reviewed >= n_flagged else "flagged"


def radiographs_in(folder: Path) -> list[Path]:
    """Radiograph files (by suffix) directly in ``folder``, sorted by name; masks are skipped."""
    return sorted(
        p for p in Path(folder).iterdir()
        if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not p.stem.endswith("_mask")
    )


class Worklist(QTreeWidget):
    """Two columns (radiograph, state); emits ``open_requested(path)`` on activation."""

    open_requested = Signal(Path)

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.setColumnCount(2)
        self.setHeaderLabels(["Radiograph", "State"])
        self.setRootIsDecorated(False)
        self.header().setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        self.header().setSectionResizeMode(1, QHeaderView.ResizeMode.ResizeToContents)
        self.entries: dict[Path, WorkItem] = {}
        self._items: dict[Path, QTreeWidgetItem] = {}
        self.itemActivated.connect(self._on_activated)

    def set_paths(self, paths) -> None:
        """Replace the worklist by ``paths``."""
        self.clear()
        self.entries, self._items = {}, {}
        for p in paths:
            self.add_path(p)

    def add_path(self, path) -> WorkItem:
        """Add one radiograph (no-op when present); returns its entry."""
        path = Path(path).resolve()
        if path in self.entries:
            return self.entries[path]
        entry = WorkItem(path)
        item = QTreeWidgetItem([path.name, entry.state_text()])
        item.setToolTip(0, str(path))
        item.setData(0, Qt.ItemDataRole.UserRole, str(path))
        self.addTopLevelItem(item)
        self.entries[path], self._items[path] = entry, item
        return entry

    def update_entry(self, path, **fields) -> WorkItem:
        """Change fields of an entry (state, n_flagged, n_reviewed, message) and redraw it."""
        entry = self.add_path(path)
        for key, value in fields.items():
            setattr(entry, key, value)
        self._items[entry.path].setText(1, entry.state_text())
        return entry

    def select_path(self, path) -> None:
        item = self._items.get(Path(path).resolve())
        if item is not None:
            self.setCurrentItem(item)

    def paths(self) -> list[Path]:
        return list(self.entries)

    def next_path(self, current) -> Path | None:
        """The radiograph after ``current`` in the list, or None at the end."""
        paths = self.paths()
        try:
            i = paths.index(Path(current).resolve())
        except ValueError:
            return paths[0] if paths else None
        return paths[i + 1] if i + 1 < len(paths) else None

    def _on_activated(self, item: QTreeWidgetItem, _column: int) -> None:
        self.open_requested.emit(Path(item.data(0, Qt.ItemDataRole.UserRole)))

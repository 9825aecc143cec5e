"""The archive as a genealogy Tree: incremental updates, filter, sort, marks, and a spinner on the training node."""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual.widgets import Tree
from textual.widgets.tree import TreeNode

from core.elites import is_confirmed
from poise_tui.rundata import delta_to_parent, parent_id, score_of

STATUS_ICONS = {
    "proposed": "·", "implemented": "∘", "verified": "○", "rejected": "✗", "training": "▶",
    "evaluated": "●", "diverged": "↯", "crashed": "✖", "timed_out": "⧖", "cancelled": "⊘",
    "reflected": "★", "vetoed": "⊗",
}
SPINNER = "⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏"
SORTS = ("time", "overall")
CHUNK = 200  # nodes added per frame while building a large tree
COMPACT_BELOW = 40  # tree columns under which labels drop the score's ± (the Metrics tab has the CI)


def matches(cand: Any, query: str) -> bool:
    """Filter words: `status:<s>`, `tag:<t>`, anything else is searched in id, title and mechanism."""
    for word in query.lower().split():
        if word.startswith("status:"):
            ok = cand.status.lower().startswith(word[7:])
        elif word.startswith("tag:"):
            ok = any(word[4:] in str(t).lower() for t in (cand.tags or []))
        else:
            text = " ".join([cand.id, cand.title or "", str((cand.proposal or {}).get("mechanism", ""))])
            ok = word in text.lower()
        if not ok:
            return False
    return True


class ArchiveTree(Tree[str]):
    """Node data is the candidate id. Call `sync` with the whole archive; it adds and relabels only what changed."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__("archive", **kwargs)
        self.show_root = False
        self.guide_depth = 2
        self.filter_text = ""
        self.sort_by = "time"
        self.marked: list[str] = []
        self._cands: dict[str, Any] = {}
        self._node_of: dict[str, TreeNode[str]] = {}
        self._labels: dict[str, Text] = {}
        self._training: tuple[str, float] | None = None
        self._pending: list[str] = []  # ids waiting to be added, parents first
        self._keep: str | None = None  # after a rebuild: candidate to put the cursor back on ("" for none)
        self._frame = 0
        self.compact = False  # narrow tree: labels leave room for the title

    def on_resize(self) -> None:
        compact = self.size.width < COMPACT_BELOW
        if compact != self.compact:
            self.compact = compact
            for cand_id in list(self._labels):
                self._relabel(cand_id)

    def on_mount(self) -> None:
        self.root.expand()
        self.set_interval(0.2, self._spin)

    # ---- queries -------------------------------------------------------------
    @property
    def selected_id(self) -> str | None:
        node = self.cursor_node
        return node.data if node is not None and node.data else None

    def candidate(self, cand_id: str | None) -> Any:
        return self._cands.get(cand_id or "")

    @property
    def candidates(self) -> dict[str, Any]:
        return self._cands

    def visible_ids(self) -> list[str]:
        """Candidates the filter lets through (with their ancestors); all of them without a filter."""
        return list(self._visible())

    # ---- updates -------------------------------------------------------------
    def sync(self, candidates: list[Any]) -> None:
        """Show the archive: new nodes are queued and added in chunks, changed records relabelled."""
        old = self._cands
        self._cands = {c.id: c for c in candidates}
        visible = self._visible()
        shown = set(self._node_of) | set(self._pending)
        new_ids = [i for i in visible if i not in shown]
        if any(i not in visible for i in shown) or (new_ids and self.sort_by != "time"):
            self.rebuild()
            return
        changed = {i for i in self._node_of if old.get(i) != self._cands[i]}
        changed |= {i for i in self._node_of if parent_id(self._cands[i]) in changed}  # their delta moved
        for cand_id in changed:
            self._relabel(cand_id)
        if new_ids:
            self._pending.extend(i for i in self._ordered(visible) if i in set(new_ids))
            self._drain()

    def rebuild(self) -> None:
        """Clear and build again (filter or sort changed); keeps the cursor on the same candidate."""
        self._keep = self.selected_id or self._keep or ""
        self.clear()
        self._node_of.clear()
        self._labels.clear()
        self._pending = self._ordered(self._visible())
        self._drain()

    def _drain(self) -> None:
        """Add queued nodes, CHUNK per frame, so a big archive paints at once and fills in without a freeze."""
        batch, self._pending = self._pending[:CHUNK], self._pending[CHUNK:]
        for cand_id in batch:
            if cand_id in self._cands and cand_id not in self._node_of:
                self._add(cand_id)
        if self._pending:
            self.call_after_refresh(self._drain)
        elif self._keep is not None:
            self._restore_cursor(self._keep)
            self._keep = None

    def _restore_cursor(self, cand_id: str) -> None:
        """After a rebuild: back on `cand_id`, or on the first node when the filter hid it. Announced either way:
        the cursor line may not have changed, and then Tree would not tell the screen that another node is under it."""
        if not (cand_id and self.select_id(cand_id)):
            self.cursor_line = 0
        if self.cursor_node is not None:
            self.post_message(self.NodeHighlighted(self.cursor_node))

    def set_training(self, cand_id: str, progress: float) -> None:
        """Which node shows the spinner and progress ("" for none)."""
        new = (cand_id, progress) if cand_id else None
        if new == self._training:
            return
        old, self._training = self._training, new
        for node_id in {old[0] if old else "", cand_id} & set(self._labels):
            self._relabel(node_id)

    def toggle_mark(self, cand_id: str) -> list[str]:
        """Mark for comparison; at most two marks, the oldest drops off."""
        before = set(self.marked)
        if cand_id in self.marked:
            self.marked.remove(cand_id)
        else:
            self.marked = (self.marked + [cand_id])[-2:]
        for node_id in (before ^ set(self.marked)) & set(self._labels):
            self._relabel(node_id)
        return self.marked

    def select_id(self, cand_id: str) -> bool:
        node = self._node_of.get(cand_id)
        if node is None:
            return False
        parent = node.parent
        while parent is not None:
            parent.expand()
            parent = parent.parent
        self.move_cursor(node)
        return True

    def toggle_sort(self) -> str:
        self.sort_by = SORTS[(SORTS.index(self.sort_by) + 1) % len(SORTS)]
        self.rebuild()
        return self.sort_by

    def set_filter(self, text: str) -> None:
        self.filter_text = text.strip()
        self.rebuild()

    # ---- internals -----------------------------------------------------------
    def _visible(self) -> dict[str, None]:
        """Ids to show, in archive order: matches of the filter plus their ancestors (to keep the genealogy)."""
        if not self.filter_text:
            return dict.fromkeys(self._cands)
        keep: set[str] = set()
        for cand in self._cands.values():
            if matches(cand, self.filter_text):
                cur: Any = cand
                while cur is not None and cur.id not in keep:
                    keep.add(cur.id)
                    cur = self._cands.get(parent_id(cur) or "")
        return dict.fromkeys(i for i in self._cands if i in keep)

    def _ordered(self, visible: dict[str, None]) -> list[str]:
        """Parents before children; siblings by time or by overall (best first)."""
        children: dict[str, list[str]] = {}
        for cand_id in visible:
            pid = parent_id(self._cands[cand_id])
            children.setdefault(pid if pid in visible else "", []).append(cand_id)
        out: list[str] = []
        stack = list(reversed(self._sorted(children.get("", []))))
        while stack:
            cand_id = stack.pop()
            out.append(cand_id)
            stack.extend(reversed(self._sorted(children.get(cand_id, []))))
        return out

    def _sorted(self, ids: list[str]) -> list[str]:
        if self.sort_by == "overall":
            return sorted(ids, key=lambda i: -(s.mean if (s := score_of(self._cands[i])) else -1.0))
        return sorted(ids, key=lambda i: (float(self._cands[i].created_at or 0.0), i))

    def _add(self, cand_id: str) -> None:
        pid = parent_id(self._cands[cand_id])
        parent = self._node_of.get(pid or "", self.root)
        parent.allow_expand = True
        label = self._label(cand_id)
        self._node_of[cand_id] = parent.add(label, data=cand_id, expand=True, allow_expand=False)
        self._labels[cand_id] = label

    def _relabel(self, cand_id: str) -> None:
        label = self._label(cand_id)
        if self._labels.get(cand_id) != label:
            self._labels[cand_id] = label
            self._node_of[cand_id].set_label(label)

    def _label(self, cand_id: str) -> Text:
        cand = self._cands[cand_id]
        text = Text()
        if cand_id in self.marked:
            text.append("◆", style="bold reverse")
        training = self._training is not None and self._training[0] == cand_id
        icon = SPINNER[self._frame % len(SPINNER)] if training else STATUS_ICONS.get(cand.status, "?")
        text.append(f"{icon} {cand_id} ", style="bold")
        if training:
            text.append(f"{self._training[1] * 100:3.0f}% ", style="italic")  # type: ignore[index]
        score = score_of(cand)
        if score is not None:
            half = "" if self.compact else f"±{score.half * 100:.1f}"
            text.append(f"{score.mean * 100:.1f}{half} ")
        if is_confirmed(cand):  # re-evaluated on fresh seeds
            text.append("✓ ", style="green")
        delta = delta_to_parent(cand, self._cands)
        if delta is not None:
            text.append(f"{delta * 100:+.1f} ", style="green" if delta >= 0 else "red")
        text.append(cand.title or "", style="dim" if cand.status in ("rejected", "vetoed") else "")
        return text

    def _spin(self) -> None:
        if self._training is not None and self._training[0] in self._node_of:
            self._frame += 1
            self._relabel(self._training[0])

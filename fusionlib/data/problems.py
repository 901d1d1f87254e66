"""What a scan of a cohort folder found wrong: :class:`FolderProblems` and the dropped-image count.

Kept apart from the readers so that :class:`fusionlib.data.Cohort` (whose summary
prints the problems) and the folder scan both use it without importing each other.
"""

from __future__ import annotations

from dataclasses import dataclass, field

PROBLEM_KINDS = {
    "unreadable_image": "unreadable or corrupt PNG",
    "broken_link": "broken or looping symbolic link",
    "not_a_file": "folder or special file named as an image",
    "bad_filename": "file name outside the convention",
    "no_clinical_row": "image with no clinical row",
    "box_outside_image": "box outside the image",
    "box_without_image": "box but no image",
}
"""Kinds of data-folder problem :func:`scan_images` collects, with their readable names."""


@dataclass
class FolderProblems:
    """Problems found while scanning a cohort folder: counts per kind and the first few files.

    Files with a problem are left out of the cohort; the rest loads normally.
    ``examples[kind]`` holds up to ``keep`` names (``folder/file.png`` relative to the
    cohort folder; for ``box_without_image`` the box table's Filename).
    """

    root: str = ""
    counts: dict = field(default_factory=dict)
    examples: dict = field(default_factory=dict)
    keep: int = 5

    def add(self, kind: str, name: str) -> None:
        if kind not in PROBLEM_KINDS:
            raise ValueError(f"unknown problem kind {kind!r}; expected one of {', '.join(PROBLEM_KINDS)}")
        self.counts[kind] = self.counts.get(kind, 0) + 1
        shown = self.examples.setdefault(kind, [])
        if len(shown) < self.keep:
            shown.append(name)

    @property
    def total(self) -> int:
        return int(sum(self.counts.values()))

    def __bool__(self) -> bool:
        return self.total > 0

    def to_dict(self) -> dict:
        """Plain, JSON-able form (what ``cohort.meta["problems"]`` holds)."""
        return {"root": self.root, "total": self.total,
                "counts": {k: int(self.counts[k]) for k in PROBLEM_KINDS if k in self.counts},
                "examples": {k: list(self.examples[k]) for k in PROBLEM_KINDS if k in self.examples}}

    @classmethod
    def from_dict(cls, data: dict) -> "FolderProblems":
        return cls(root=data.get("root", ""), counts=dict(data.get("counts", {})),
                   examples={k: list(v) for k, v in data.get("examples", {}).items()})

    def summary(self) -> list[str]:
        """Readable lines: one per kind with its count and first files (none when clean)."""
        lines = []
        for kind, label in PROBLEM_KINDS.items():
            n = self.counts.get(kind, 0)
            if n:
                shown = ", ".join(self.examples.get(kind, []))
                more = ", ..." if n > len(self.examples.get(kind, [])) else ""
                lines.append(f"{label}: {n} ({shown}{more})")
        return lines

    def one_line(self) -> str:
        """``N problems: 2 corrupt..., 1 ...; first: <file>`` for a strict-mode DataError."""
        parts = [f"{self.counts[k]} {label}" for k, label in PROBLEM_KINDS.items() if self.counts.get(k)]
        first = next((self.examples[k][0] for k in PROBLEM_KINDS if self.examples.get(k)), None)
        return (f"{self.total} data-folder problem{'s' if self.total != 1 else ''} "
                f"({', '.join(parts)}); first: {first}")



DROPPED_KINDS = ("unreadable_image", "broken_link", "not_a_file", "bad_filename", "no_clinical_row",
                 "box_outside_image")
"""Problem kinds that leave an image file out of the cohort (a box row without image is not one)."""


def dropped_images(problems: FolderProblems | dict | None) -> dict:
    """``{"count": n, "by_reason": {kind: n}}``: image files a folder scan left out, by reason."""
    if isinstance(problems, dict):
        problems = FolderProblems.from_dict(problems)
    counts = {} if problems is None else problems.counts
    by_reason = {k: int(counts[k]) for k in DROPPED_KINDS if counts.get(k)}
    return {"count": int(sum(by_reason.values())), "by_reason": by_reason}

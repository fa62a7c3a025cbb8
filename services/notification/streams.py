"""Live streams open in this process, counted per person and per MDT, so that one leaked stream token
or one runaway page cannot hold every connection the service has."""

from __future__ import annotations


class StreamSlots:
    def __init__(self, per_subject: int, per_mdt: int) -> None:
        self.per_subject, self.per_mdt = per_subject, per_mdt
        self._subjects: dict[str, int] = {}
        self._mdts: dict[str, int] = {}

    def take(self, subject: str, mdt: str) -> bool:
        if self._subjects.get(subject, 0) >= self.per_subject or self._mdts.get(mdt, 0) >= self.per_mdt:
            return False
        self._subjects[subject] = self._subjects.get(subject, 0) + 1
        self._mdts[mdt] = self._mdts.get(mdt, 0) + 1
        return True

    def give_back(self, subject: str, mdt: str) -> None:
        for counts, key in ((self._subjects, subject), (self._mdts, mdt)):
            counts[key] -= 1
            if not counts[key]:
                del counts[key]

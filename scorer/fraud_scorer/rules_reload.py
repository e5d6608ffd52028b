"""Hot reload of the scorer's rules, thresholds and user slice from its config file.

The operator rewrites the ConfigMap; the kubelet swaps the mounted file. The scorer looks at the
file's stamp every ``interval_s`` and, when it changed, compiles what it holds. A file that does
not compile is rejected and the running rules stay: a bad edit never stops scoring.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from fraud_scorer.config import SliceSettings, read_reloadable
from fraud_scorer.feature_sets import V1, FeatureSet
from fraud_scorer.rules import RuleCompileError, RuleSet, compile_rules


@dataclass(frozen=True)
class FileStamp:
    mtime_ns: int
    size: int
    inode: int

    @classmethod
    def of(cls, path: Path) -> FileStamp | None:
        try:
            st = path.stat()
        except OSError:
            return None
        return cls(st.st_mtime_ns, st.st_size, st.st_ino)


@dataclass(frozen=True)
class Reloaded:
    ruleset: RuleSet
    slice: SliceSettings


@dataclass(frozen=True)
class Rejected:
    error: str


class RulesReloader:
    """Watches one config file. :meth:`check` returns None (nothing new or not time yet),
    :class:`Reloaded` (what the file now holds, compiled) or :class:`Rejected` (why not)."""

    def __init__(self, path: Path, interval_s: float, features: FeatureSet = V1) -> None:
        """``features``: the set rules compile against (fixed while the process runs: a
        feature set change restarts the scorer, since the model depends on it)."""
        self.path = path
        self.features = features
        self.interval_s = interval_s
        self._stamp = FileStamp.of(path)
        self._next_check = time.monotonic() + interval_s

    def check(self) -> Reloaded | Rejected | None:
        now = time.monotonic()
        if now < self._next_check:
            return None
        self._next_check = now + self.interval_s
        stamp = FileStamp.of(self.path)
        if stamp is None or stamp == self._stamp:
            return None
        self._stamp = stamp
        try:
            rules, decision, slice_ = read_reloadable(self.path)
            return Reloaded(compile_rules(rules, decision, self.features), slice_)
        except (RuleCompileError, ValueError, OSError) as exc:
            return Rejected(str(exc))
        except Exception as exc:  # a hand-edited file (bad YAML, say) never ends the scorer
            return Rejected(f"{type(exc).__name__}: {exc}")

"""Progress of long work: a tqdm bar on a terminal, plain lines anywhere else.

On a log file or a pipe tqdm is either silent (``disable=None``) or writes carriage returns that pile up on one
line; a job on a cluster or under ``nohup`` then shows nothing for hours. ``progress_bar`` gives the same
``update``/``close`` interface in both places.
"""

from __future__ import annotations

import sys
import time

LINE_EVERY_S = 60.0  # at least one line a minute while the work advances


class LineProgress:
    """Plain progress lines: one at each tenth of ``total`` (so a short job's log is the same every run), one
    every ``interval_s`` seconds in between when work advanced, and one at the end.

    Example:
        >>> import io
        >>> out = io.StringIO()
        >>> with LineProgress(total=4, desc="eval", unit="item", file=out, interval_s=1e9) as bar:
        ...     for _ in range(4):
        ...         bar.update(1)
        >>> [line.split(",")[0] for line in out.getvalue().splitlines()]
        ['eval: 1/4 items (25%)', 'eval: 2/4 items (50%)', 'eval: 3/4 items (75%)', 'eval: 4/4 items (100%)']
    """

    def __init__(self, total: int | None = None, desc: str | None = None, unit: str = "it", initial: int = 0,
                 file=None, interval_s: float = LINE_EVERY_S):
        self.total, self.desc, self.unit, self.n = total, desc or "progress", unit, initial
        self.file, self.interval_s = file or sys.stderr, interval_s
        self._start_n, self._start = initial, time.monotonic()
        self._last_t, self._last_n, self._last_tenth = self._start, initial, self._tenth(initial)

    def _tenth(self, n: int) -> int:
        return n * 10 // self.total if self.total else 0

    def update(self, n: int = 1) -> None:
        self.n += n
        if self._tenth(self.n) > self._last_tenth or time.monotonic() - self._last_t >= self.interval_s:
            self._line()

    def _line(self) -> None:
        now = time.monotonic()
        rate = (self.n - self._start_n) / max(now - self._start, 1e-9)
        done = f"{self.n}/{self.total} {self.unit}s ({100 * self.n // self.total}%)" if self.total else \
            f"{self.n} {self.unit}s"
        eta = ""
        if self.total and rate > 0 and self.n < self.total:
            left = (self.total - self.n) / rate
            eta = f", about {left / 60:.1f} min left" if left >= 60 else f", about {left:.0f} s left"
        self.file.write(f"{self.desc}: {done}, {rate:.3g} {self.unit}/s{eta}\n")
        self.file.flush()
        self._last_t, self._last_n, self._last_tenth = now, self.n, self._tenth(self.n)

    def close(self) -> None:
        if self.n != self._last_n:
            self._line()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _is_terminal(file) -> bool:
    try:
        return file.isatty()
    except (AttributeError, ValueError):
        return False


def progress_bar(total: int | None = None, desc: str | None = None, unit: str = "it", initial: int = 0,
                 disable: bool = False, leave: bool = True, file=None):
    """A tqdm bar when ``file`` (default stderr) is a terminal, else a ``LineProgress``; ``disable`` shows nothing."""
    from tqdm import tqdm

    file = file or sys.stderr
    if disable or _is_terminal(file):
        return tqdm(total=total, desc=desc, unit=unit, initial=initial, disable=disable, leave=leave, file=file)
    return LineProgress(total, desc, unit, initial, file)

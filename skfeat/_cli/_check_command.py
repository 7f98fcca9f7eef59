"""``skfeat check``: which images in a folder, list or table cannot be read, and why."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from skfeat._cli._common import CommandError

__all__ = ["check_report"]

_LISTED = 50


def check_report(
    paths: list[str], *, n_jobs: int | None = None, report: Path | None = None
) -> tuple[str, int]:
    """Scan ``paths`` with :func:`skfeat.check_images`; return the text and the bad count.

    With ``report``, every row of the scan is also written there as CSV.
    """
    from skfeat import check_images

    if report is not None:
        _check_report_path(report)
    rows: list[dict[str, Any]] = check_images(paths, n_jobs=n_jobs, as_frame=False)
    bad = [row for row in rows if not row["ok"]]
    lines = [f"{len(rows)} images: {len(rows) - len(bad)} readable, {len(bad)} bad."]
    for row in bad[:_LISTED]:
        lines.append(f"  row {row['index']}: {row['item']}: {row['error']}")
    if len(bad) > _LISTED:
        lines.append(f"  ... and {len(bad) - _LISTED} more (see --report).")
    if report is not None:
        _write_report(rows, report)
        lines.append(f"Report of every image: {str(report)!r}")
    return "\n".join(lines), len(bad)


def _check_report_path(report: Path) -> None:
    if report.suffix.lower() != ".csv":
        raise CommandError(f"--report must name a .csv file, got {str(report)!r}.")
    if not report.parent.is_dir():
        raise CommandError(f"the report folder {str(report.parent)!r} does not exist.")


def _write_report(rows: list[dict[str, Any]], report: Path) -> None:
    import csv

    columns = list(rows[0])
    with report.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)

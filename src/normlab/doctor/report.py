"""What the doctor found: :class:`Finding`, :class:`Diagnosis`, and their table and JSON forms."""

from __future__ import annotations

import json
import sys
import textwrap
from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = ["Finding", "Cause", "Diagnosis", "SEVERITIES"]

#: most serious first: "error" is wrong, "warning" is likely a problem, "info" is a note
SEVERITIES = ("error", "warning", "info")


@dataclass(frozen=True)
class Finding:
    """One problem (or note) in one module.

    Attributes:
        check: the stable id of the check that found it (``bn-momentum-convention``, ...).
        severity: ``"error"`` (wrong), ``"warning"`` (likely a problem) or ``"info"`` (a note).
        module: the dotted name of the module, as ``model.named_modules()`` gives it
            (``""`` is the model itself).
        message: what was seen, with the number.
        fix: what to do, concretely.
        claim: the evidence-suite claim id that backs it (``"C09"``), or None.
        autofix: how :meth:`Diagnosis.apply` fixes it (see :mod:`normlab.doctor.fixes`), or None.
    """

    check: str
    severity: str
    module: str
    message: str
    fix: str
    claim: str | None = None
    autofix: tuple | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        if self.severity not in SEVERITIES:
            raise ValueError(f"Finding.severity must be one of {', '.join(SEVERITIES)}, got {self.severity!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Cause:
    """The findings of one cause: one check with one fix, in every module where it was found.

    ``message`` is the first module's (the others differ only in the module's own numbers, which
    ``findings`` keeps, one per module).
    """

    check: str
    severity: str
    modules: tuple[str, ...]
    message: str
    fix: str
    claim: str | None
    findings: tuple[Finding, ...]

    @property
    def count(self) -> int:
        return len(self.modules)

    def modules_text(self, limit: int = 6) -> str:
        """The modules, at most ``limit`` of them by name, then how many more."""
        names = [m or "(model)" for m in self.modules]
        more = len(names) - limit
        return ", ".join(names[:limit]) + (f" and {more} more" if more > 0 else "")

    def to_dict(self) -> dict[str, Any]:
        return {"check": self.check, "severity": self.severity, "count": self.count, "modules": list(self.modules),
                "message": self.message, "fix": self.fix, "claim": self.claim,
                "autofix": sum(f.autofix is not None for f in self.findings)}


def group_findings(findings: list[Finding]) -> list[Cause]:
    """One :class:`Cause` per (check, severity, fix), in the order of the first finding of each."""
    groups: dict[tuple[str, str, str], list[Finding]] = {}
    for f in findings:
        groups.setdefault((f.check, f.severity, f.fix), []).append(f)
    return [Cause(fs[0].check, fs[0].severity, tuple(f.module for f in fs), fs[0].message, fs[0].fix, fs[0].claim,
                  tuple(fs)) for fs in groups.values()]


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


@dataclass
class Diagnosis:
    """The doctor's result: ``findings`` (most serious first), what each check did, the norms it saw.

    ``print(diagnosis)`` shows a table (rich colours on a terminal),
    ``diagnosis.to_json()`` the same as JSON, ``diagnosis.errors`` the
    findings of severity ``"error"``.
    """

    findings: list[Finding]
    checks: dict[str, str] = field(default_factory=dict)  # check id -> "ran" / "skipped: why" / "failed: why"
    norms: list[dict[str, Any]] = field(default_factory=list)  # the norm-like modules found, and how
    notes: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        order = {s: i for i, s in enumerate(SEVERITIES)}
        self.findings = sorted(self.findings, key=lambda f: order[f.severity])  # stable: check order kept

    # ------------------------------------------------------------ access
    @property
    def causes(self) -> list[Cause]:
        """The findings grouped by cause (check and fix), most serious first: what the report shows."""
        return group_findings(self.findings)

    @property
    def errors(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == "error"]

    @property
    def warnings(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == "warning"]

    @property
    def infos(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == "info"]

    @property
    def ok(self) -> bool:
        """No errors."""
        return not self.errors

    def counts(self) -> dict[str, int]:
        return {s: sum(f.severity == s for f in self.findings) for s in SEVERITIES}

    def by_check(self, check: str) -> list[Finding]:
        return [f for f in self.findings if f.check == check]

    def by_module(self, module: str) -> list[Finding]:
        return [f for f in self.findings if f.module == module]

    def __iter__(self):
        return iter(self.findings)

    def __len__(self) -> int:
        return len(self.findings)

    def cause_counts(self) -> dict[str, int]:
        """Causes per severity (a cause found in 52 modules counts once)."""
        causes = self.causes
        return {s: sum(c.severity == s for c in causes) for s in SEVERITIES}

    def summary(self) -> str:
        c, per = self.cause_counts(), self.counts()
        words = {"error": "error", "warning": "warning", "info": "note"}
        parts = [_plural(c[s], words[s]) + (f" in {per[s]} modules" if per[s] > c[s] else "") for s in SEVERITIES]
        ran = sum(v == "ran" for v in self.checks.values())
        return (f"{', '.join(parts)} ({ran} of {len(self.checks)} checks ran; "
                f"{_plural(len(self.norms), 'norm-like module')})")

    def __repr__(self) -> str:
        return f"Diagnosis({self.summary()})"

    def fixable(self) -> list[Finding]:
        """The findings :meth:`apply` can fix."""
        return [f for f in self.findings if f.autofix is not None]

    def apply(self, model: Any, optimizer: Any = None) -> Any:
        """Apply the mechanical fixes to ``model`` (the model that was diagnosed) and ``optimizer``, in place.

        Fixed: BatchNorm momentum in the Keras convention (outputs unchanged), eps 0 or too small for its dtype,
        a conv/linear bias that the next norm removes (dropped, the norm's running mean moved by it: outputs
        unchanged), weight decay on norm parameters (the optimizer's groups split as ``nl.param_groups``
        does, its state kept; without an optimizer the groups are returned), BatchNorm under
        DistributedDataParallel (made a normlab SyncBatchNorm on the same tensors), BatchNorm with frozen gamma/beta
        that still trains its statistics (frozen with ``nl.freeze_batchnorm``).  Nothing else is touched; run
        the doctor again to see the result.

        Returns:
            a :class:`~normlab.doctor.fixes.Applied`: ``done``, ``skipped``, ``param_groups``.
        """
        from .fixes import apply_fixes

        return apply_fixes(self.findings, model, optimizer)

    # ------------------------------------------------------------ output
    def to_dict(self) -> dict[str, Any]:
        from .. import __version__

        return {"normlab": __version__, "counts": self.counts(), "cause_counts": self.cause_counts(),
                "causes": [c.to_dict() for c in self.causes], "findings": [f.to_dict() for f in self.findings],
                "checks": dict(self.checks), "norms": list(self.norms), "notes": list(self.notes)}

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    def _not_run(self) -> list[str]:
        return [f"{k} ({v})" for k, v in self.checks.items() if v != "ran"]

    def render(self, color: bool | None = None, width: int | None = None) -> str:
        """The table as text: with rich's colours if ``color`` (default: when stdout is a terminal)."""
        if color is None:
            color = sys.stdout.isatty()
        if color:
            try:
                from rich.console import Console
            except ImportError:  # a lean install (rich comes with normlab[suite]): plain text
                return self._plain(width or 100)

            console = Console(width=width, force_terminal=True, record=True, file=_Null())
            console.print(self.__rich__())
            return console.export_text(styles=True).rstrip("\n")
        return self._plain(width or 100)

    def __str__(self) -> str:
        return self.render()

    def _plain(self, width: int) -> str:
        lines = [f"normlab doctor: {self.summary()}"]
        for c in self.causes:
            claim = f"  [{c.claim}]" if c.claim else ""
            lines.append("")
            where = c.modules[0] or "(model)" if c.count == 1 else f"{c.count} modules"
            auto = "  (auto-fix: diagnosis.apply / --fix)" if any(f.autofix for f in c.findings) else ""
            lines.append(f"{c.severity.upper():<8}{c.check}  {where}{claim}{auto}")
            message = c.message
            if c.count > 1:
                lines += textwrap.wrap(f"modules: {c.modules_text()}", width, initial_indent="  ",
                                       subsequent_indent="    ")
                message = f"the first, '{c.modules[0]}': {message}"
            lines += textwrap.wrap(message, width, initial_indent="  ", subsequent_indent="  ")
            lines += textwrap.wrap(f"fix: {c.fix}", width, initial_indent="  ", subsequent_indent="       ")
        if not self.findings:
            lines.append("no findings")
        rest = self._not_run()
        if rest:
            lines.append("")
            lines += textwrap.wrap("not run: " + "; ".join(rest), width, subsequent_indent="  ")
        for note in self.notes:
            lines += textwrap.wrap(f"note: {note}", width, subsequent_indent="  ")
        return "\n".join(lines)

    def __rich__(self):
        from rich.console import Group
        from rich.table import Table
        from rich.text import Text

        styles = {"error": "bold red", "warning": "yellow", "info": "cyan"}
        title = Text(f"normlab doctor: {self.summary()}", style="bold")
        if not self.findings:
            parts: list[Any] = [title, Text("no findings", style="green")]
        else:
            table = Table(show_lines=True, expand=True)
            table.add_column("severity", no_wrap=True)
            table.add_column("check", no_wrap=True)
            table.add_column("module", overflow="fold", max_width=40)
            table.add_column("finding and fix", ratio=1)
            table.add_column("claim", no_wrap=True)
            for c in self.causes:
                body = Text(c.message if c.count == 1 else f"the first, '{c.modules[0]}': {c.message}")
                body.append("\nfix: ", style="bold")
                body.append(c.fix)
                where = c.modules[0] or "(model)" if c.count == 1 else f"{c.count} modules: {c.modules_text()}"
                table.add_row(Text(c.severity, style=styles[c.severity]), c.check, where, body, c.claim or "")
            parts = [title, table]
        rest = self._not_run()
        if rest:
            parts.append(Text("not run: " + "; ".join(rest), style="dim"))
        parts += [Text(f"note: {n}", style="dim") for n in self.notes]
        return Group(*parts)


class _Null:
    def write(self, s: str) -> int:
        return len(s)

    def flush(self) -> None:
        pass

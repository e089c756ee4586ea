"""The domains FAMix trains on and is evaluated on (pure Python, no torch).

A domain has a registry name (``cityscapes``), the column it fills in the
paper's tables (``C``) and the folder it lives in under a data root
(``cityscapes``). Configs and sweep files may name a domain either way.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

__all__ = ["Domain", "DOMAINS", "COLUMNS", "DEFAULT_TARGETS", "SHARED_FOLDERS", "resolve_domain", "repeated_domain", "UnknownDomainError"]


@dataclass(frozen=True)
class Domain:
    """One dataset split family.

    Attributes:
        name: registry name, used in configs and file names.
        column: short column name in tables (``None`` for a source-only domain).
        folder: default folder under ``data.root``.
        condition: ACDC condition (night/snow/rain/fog) or ``None``.
    """

    name: str
    column: str | None
    folder: str
    condition: str | None = None

    @property
    def short_name(self) -> str:
        """The column, or the name of a source domain (no column): what results, configs and stage keys call it."""
        return self.column or self.name


DOMAINS: dict[str, Domain] = {
    d.name: d
    for d in (
        Domain("gta5", None, "gta5"),
        Domain("synthia", "S", "synthia"),
        Domain("cityscapes", "C", "cityscapes"),
        Domain("bdd100k", "B", "bdd100k"),
        Domain("mapillary", "M", "mapillary"),
        Domain("acdc_night", "AN", "acdc", "night"),
        Domain("acdc_snow", "AS", "acdc", "snow"),
        Domain("acdc_rain", "AR", "acdc", "rain"),
        Domain("acdc_fog", "AF", "acdc", "fog"),
    )
}

COLUMNS: dict[str, str] = {d.column: d.name for d in DOMAINS.values() if d.column}
"""Table column -> domain name."""

SHARED_FOLDERS: dict[str, list[str]] = {
    f: names for f in dict.fromkeys(d.folder for d in DOMAINS.values()) if len(names := [d.name for d in DOMAINS.values() if d.folder == f]) > 1
}
"""A dataset folder that holds several domains -> their names (``acdc``: its four conditions)."""

DEFAULT_TARGETS: tuple[str, ...] = ("C", "B", "M", "S", "AN", "AS", "AR", "AF")
"""The paper's eight evaluation columns, in the paper's order."""


class UnknownDomainError(ValueError):
    pass


_ALIASES: dict[str, str] = {"cs": "C", "city": "C", "bdd": "B", "bdd10k": "B", "vistas": "M", "gta": "gta5", "gtav": "gta5"}
"""Names a researcher types for a domain (lower case) -> the column or registry name it is."""


def unknown_domain(name: str, folders: Sequence[str] = ()) -> UnknownDomainError:
    """``unknown domain 'CS' (known: …) (did you mean C?)``: the columns and names known, ``folders``
    (``data.roots``' dataset folders of several domains) where they are valid too, and the closest,
    with the names researchers type (``CS``, ``Cityscapes``, ``bdd``)."""
    from famix_core.errors import suggest

    known = ", ".join([*COLUMNS, *DOMAINS]) + (f"; or a dataset folder of several: {', '.join(folders)}" if folders else "")
    alias = _ALIASES.get(name.casefold())
    near = f" (did you mean {alias}?)" if alias else suggest(name, [*COLUMNS, *DOMAINS, *folders])
    return UnknownDomainError(f"unknown domain {name!r} (known: {known}){near}")


def resolve_domain(name_or_column: str) -> Domain:
    """Look a domain up by registry name (``cityscapes``) or column (``C``).

    Raises:
        UnknownDomainError: naming the known names and columns.
    """
    if name_or_column in DOMAINS:
        return DOMAINS[name_or_column]
    if name_or_column in COLUMNS:
        return DOMAINS[COLUMNS[name_or_column]]
    raise unknown_domain(str(name_or_column))


def repeated_domain(names: Sequence[str]) -> tuple[str, list[int]] | None:
    """The domain given again first in ``names`` (``C`` and ``cityscapes`` are one) and the positions
    that give it, or None when each is given once. The domain is named by its column, a
    source domain (no column) by its name.

    Raises:
        UnknownDomainError: a name that is no domain.
    """
    where: dict[str, list[int]] = {}
    for i, name in enumerate(names):
        dom = resolve_domain(name)
        where.setdefault(dom.short_name, []).append(i)
    return min(((col, at) for col, at in where.items() if len(at) > 1), key=lambda c: c[1][1], default=None)


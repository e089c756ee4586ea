"""The one config layer of every command: read YAML, merge, apply overrides, validate, hash.

- :func:`read_yaml`: plain data from a YAML file (``yaml.safe_load`` semantics), size- and
  alias-capped, duplicate keys and tags refused, every problem one line with file, line, column.
- :func:`merge`: later trees over earlier ones (mappings merge, anything else replaces, ``None``
  included). ``???`` (:data:`MISSING`, OmegaConf's marker) is a value still to give: a later layer, a
  grid or the command line must set the key, else :func:`validate` says so. Unlike OmegaConf's merge,
  a later ``???`` replaces an earlier value (so a profile can ask for what the base gives).
- :func:`parse_overrides` / :func:`apply_overrides`: Hydra-style command-line overrides
  (``key=value`` sets, ``+key=value`` adds a key the config does not hold, ``~key`` deletes one;
  values are YAML: ``[a,b]`` a list, ``'1.0'`` a quoted string, ``null`` None).
- :func:`validate` / :func:`format_error`: a pydantic model from a tree; the first error as ONE
  line ``<source>: <dotted.key>: <what was expected>[ (did you mean …?)][ (+N more)]``.
- :func:`canonical_hash`: sha256 of the canonical JSON (sorted keys, no spaces, ASCII) — stage
  keys, trial ids, plan fingerprints and the synthetic benchmark's folder all use it.

Every mistake raises :class:`~famix_core.errors.ConfigError` (the CLI prints it, exit 2). No torch.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Literal, Mapping, Sequence, TypeVar

import yaml
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException
from pydantic import BaseModel, ValidationError

from famix_core.errors import ConfigError, suggest

__all__ = [
    "MAX_YAML_BYTES",
    "MAX_YAML_NODES",
    "Override",
    "read_yaml",
    "MISSING",
    "missing_keys",
    "merge",
    "set_dotted",
    "mapping_sets",
    "parse_overrides",
    "apply_overrides",
    "check_overrides",
    "validate",
    "format_error",
    "also_known_as",
    "also_in_its_section",
    "canonical_json",
    "canonical_hash",
]

M = TypeVar("M", bound=BaseModel)

MISSING = "???"
"""A value still to give (OmegaConf's and Hydra's marker): a layer may hold it, a later layer, a grid
or the command line sets the key; one left at validation is refused, naming the key."""
MAX_YAML_BYTES = 1 << 20
"""Largest YAML file read: configs and sweep files are a few KB; this stops pathological input early."""
MAX_YAML_NODES = 100_000
"""Most YAML nodes after alias expansion (an "anchor bomb" of nested aliases grows exponentially)."""
MAX_YAML_DEPTH = 100
"""Deepest nesting of lists and mappings (a config is about four levels deep); past it, or where
PyYAML's own recursion gives out first, one line says so rather than a RecursionError."""


# ----------------------------------------------------------------------------------------------- reading


class _Loader(yaml.SafeLoader):
    """``SafeLoader`` that rejects duplicate mapping keys (PyYAML silently keeps the last one).

    A date (``2024-01-01``) stays a string: configs hold plain data, and OmegaConf has no dates.
    """

    yaml_implicit_resolvers = {
        first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
        for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
    }

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue  # ``<<: *anchor``: merged keys may be overridden by the mapping's own
            key = self.construct_object(key_node, deep=True)
            try:
                hash(key)
            except TypeError:
                continue  # the base class reports unhashable keys itself
            line = key_node.start_mark.line + 1
            if key in seen:
                raise _DuplicateKey(key, line, seen[key])
            seen[key] = line
        return super().construct_mapping(node, deep=deep)


class _DuplicateKey(Exception):
    def __init__(self, key: Any, line: int, first: int):
        super().__init__(key)
        self.key, self.line, self.first = key, line, first


class _TooDeep(Exception):
    """Lists and mappings nested past :data:`MAX_YAML_DEPTH` (or a self-referencing alias)."""


def _expanded_nodes(root: yaml.Node, limit: int) -> int:
    """How many nodes ``root`` has once every alias is expanded (stops counting past ``limit``).

    Raises:
        _TooDeep: nesting past :data:`MAX_YAML_DEPTH`, a self-referencing alias included.
    """
    memo: dict[int, int] = {}

    def count(node: yaml.Node, depth: int) -> int:
        if id(node) in memo:
            return memo[id(node)]
        if depth > MAX_YAML_DEPTH:
            raise _TooDeep
        n = 1
        if isinstance(node, yaml.SequenceNode):
            for child in node.value:
                n += count(child, depth + 1)
                if n > limit:
                    break
        elif isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                n += count(k, depth + 1) + count(v, depth + 1)
                if n > limit:
                    break
        memo[id(node)] = n
        return n

    return count(root, 0)


def _where(mark: Any) -> str:
    return f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""


def _load_text(text: str, source: str, kind: str) -> Any:
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        if _expanded_nodes(node, MAX_YAML_NODES) > MAX_YAML_NODES:
            raise ConfigError(
                f"{source}: more than {MAX_YAML_NODES} YAML nodes once aliases are expanded; "
                f"{kind} files are small (nested anchors/aliases multiply)"
            )
        return loader.construct_document(node)
    except (_TooDeep, RecursionError):
        raise ConfigError(
            f"{source}: lists or mappings nested more than {MAX_YAML_DEPTH} levels deep (or an alias inside itself);"
            f" {kind} files are a few levels deep"
        ) from None
    except _DuplicateKey as e:
        raise ConfigError(f"{source}: line {e.line}: duplicate key {e.key!r} (first at line {e.first}); each key may appear once") from None
    except yaml.constructor.ConstructorError as e:
        if "unhashable key" in (e.problem or ""):  # `[a]: 1`, `{a: 1}: 2`: a list or mapping used as a key
            line = f": line {e.problem_mark.line + 1}" if e.problem_mark else ""
            raise ConfigError(f"{source}{line}: a list or mapping used as a key; keys are plain names (e.g. style.mix)") from None
        quoted = re.search(r"'([^']*)'", e.problem or "")  # "... for the tag 'tag:yaml.org,2002:python/object:…'"
        tag = quoted.group(1) if quoted else (e.problem or "")
        raise ConfigError(
            f"{source}: invalid YAML tag {tag!r}{_where(e.problem_mark)}: not allowed, {kind} files hold plain data only "
            "(mappings, lists, strings, numbers, booleans)"
        ) from None
    except yaml.YAMLError as e:
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        if problem.startswith("but ") and getattr(e, "context", None):  # "but found another document" ends a sentence
            problem = f"{e.context}, {problem}"  # "expected a single document in the stream, but found …"
        raise ConfigError(f"{source}: invalid YAML{_where(getattr(e, 'problem_mark', None))}: {problem}") from None
    finally:
        loader.dispose()


def read_yaml(path: str | Path, source: str | None = None, *, kind: str = "config") -> Any:
    """Plain data from a YAML (or JSON) file.

    Args:
        path: the file.
        source: how the file is named in messages (default: ``path`` as given).
        kind: what the file is, in messages (``config``, ``sweep``).

    Raises:
        ConfigError: one line (file, line, what) for a missing, unreadable, too large, binary or
            non-UTF-8 file, invalid YAML, a tag, a duplicate key or too many expanded nodes.
    """
    path = Path(path)
    source = str(path) if source is None else source
    try:
        size = path.stat().st_size  # a pipe reads as a file (`--config <(…)`): size 0, read to its end
        if size > MAX_YAML_BYTES:
            raise ConfigError(f"{source}: file is {size / 1e6:.1f} MB; {kind} files are limited to {MAX_YAML_BYTES // 1024} KB")
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"{source}: file not found") from None
    except OSError as e:
        raise ConfigError(f"{source}: cannot read ({e.strerror})") from None
    if b"\0" in raw:
        raise ConfigError(f"{source}: binary file (NUL bytes); expected a YAML text file")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise ConfigError(f"{source}: not UTF-8 text (line {line}, byte {e.start}); save the file as UTF-8") from None
    return _load_text(text, source, kind)


# ----------------------------------------------------------------------------------------------- trees


@contextlib.contextmanager
def _plain_data(source: str) -> Iterator[None]:
    """OmegaConf's refusals (a ``null`` or list as a mapping key) as one line naming the key."""
    try:
        yield
    except OmegaConfBaseException as e:
        where = f"{e.full_key}: " if getattr(e, "full_key", None) else ""
        what = str(e).splitlines()[0]
        raise ConfigError(f"{source}: {where}{what} (config keys are strings; values plain data)") from None


def merge(*trees: dict[str, Any], source: str = "config") -> dict[str, Any]:
    """Later trees over earlier ones: mappings merge, everything else (lists, ``None``, ``???``) replaces;
    inputs untouched. (OmegaConf's own merge would keep the earlier value under a ``???``, silently.)

    Raises:
        ConfigError: a tree OmegaConf cannot hold (e.g. a ``null`` mapping key), naming ``source``.
    """
    with _plain_data(source):
        for t in trees:  # what a config may hold is what OmegaConf can: string keys, plain values
            OmegaConf.create(t)
    out: dict[str, Any] = {}
    for t in trees:
        out = _merged(out, t)
    return out


def missing_keys(tree: Any) -> list[str]:
    """The dotted keys of ``tree`` whose value is :data:`MISSING` (``???``), in the tree's order."""
    return [".".join(p) for p in _missing_paths(tree)]


def _missing_paths(tree: Any, at: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    if not isinstance(tree, dict):
        return []
    found = []
    for k, v in tree.items():
        if isinstance(v, str) and v == MISSING:
            found.append((*at, str(k)))
        else:
            found.extend(_missing_paths(v, (*at, str(k))))
    return found


def _missing_items(tree: Any, at: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """The paths (ending in the item's index) of :data:`MISSING` items inside lists of ``tree``."""
    if isinstance(tree, dict):
        return [p for k, v in tree.items() for p in _missing_items(v, (*at, str(k)))]
    if not isinstance(tree, (list, tuple)):
        return []
    found = []
    for i, v in enumerate(tree):
        if isinstance(v, str) and v == MISSING:
            found.append((*at, str(i)))
        else:
            found.extend(_missing_items(v, (*at, str(i))))
    return found


def _key_of(item: tuple[str, ...]) -> tuple[str, ...]:
    """The mapping keys of a list item's path: ``train.val_crop`` of ``(train, val_crop, 0)`` (and of a
    nested list's ``(…, 1, 0)``)."""
    n = len(item)
    while n and item[n - 1].isdigit():
        n -= 1
    return item[:n]


def _without(tree: dict[str, Any], paths: Sequence[tuple[str, ...]]) -> dict[str, Any]:
    """``tree`` less the keys at ``paths`` (the mappings on their way are copied)."""
    out = dict(tree)
    for path in paths:
        node = out
        for part in path[:-1]:
            node[part] = dict(node[part])
            node = node[part]
        node.pop(path[-1], None)
    return out


def _parts(key: str) -> list[str]:
    """``data.roots.<domain>`` keeps the domain whole (a column such as ``AF`` or a name); else split on dots."""
    if key.startswith("data.roots."):
        return ["data", "roots", key[len("data.roots.") :]]
    return key.split(".")


def set_dotted(tree: dict[str, Any], key: str, value: Any) -> None:
    """``tree[a][b][c] = value`` for ``key`` ``a.b.c``, creating (or replacing non-mapping) parents.

    A mapping ``value`` merges into the mapping ``tree`` holds there (a grid value ``{freeze: paper}``
    of ``model`` keeps the section's other keys), as a command-line override does."""
    node = tree
    parts = _parts(key)
    for part in parts[:-1]:
        nxt = node.get(part)
        if not isinstance(nxt, dict):
            nxt = {}
            node[part] = nxt
        node = nxt
    old = node.get(parts[-1])
    node[parts[-1]] = _merged(old, value) if isinstance(old, dict) and isinstance(value, dict) else value


def mapping_sets(section: str, value: Any, key: str) -> bool:
    """Whether :func:`set_dotted` of ``value`` at ``section`` sets ``key``: ``key`` is ``section``, or lies
    below it and ``value`` is a mapping holding it (``model``, ``{freeze: paper}``: ``model.freeze``)."""
    if key == section:
        return True
    if not key.startswith(section + "."):
        return False
    node = value
    for part in key[len(section) + 1 :].split("."):
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True


def _merged(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """``b`` over ``a``, as :func:`merge`: mappings merge, everything else replaces; inputs untouched."""
    out = dict(a)
    for k, v in b.items():
        out[k] = _merged(out[k], v) if isinstance(out.get(k), dict) and isinstance(v, dict) else copy.deepcopy(v)
    return out


# ----------------------------------------------------------------------------------------------- overrides


@dataclass(frozen=True)
class Override:
    """One command-line override: ``set`` (``key=value``), ``add`` (``+key=value``) or ``delete`` (``~key``)."""

    op: Literal["set", "add", "delete"]
    key: str
    value: Any = None
    text: str = field(default="", compare=False)  # the item as typed (to print a command to run again)

    @property
    def spelled(self) -> str:
        """The key as written on the command line: ``key``, ``+key`` or ``~key``."""
        return {"set": "", "add": "+", "delete": "~"}[self.op] + self.key


_EXAMPLE = "key=value, +key=value or ~key (e.g. train.iterations=100)"


def _value(raw: str, item: str, source: str) -> Any:
    """A YAML value; a plain word that YAML refuses (``%x``, ``@x``) stays a string, a broken list or quote does not."""
    if not raw.strip():
        return ""
    try:
        return yaml.load(raw, Loader=_Loader)  # noqa: S506 (SafeLoader subclass)
    except yaml.constructor.ConstructorError:
        shown = repr(item) if len(item) <= 40 else f"{item[:40]!r}…"
        raise ConfigError(f"{source}: {shown}: YAML tags are not allowed in values") from None
    except RecursionError:
        shown = repr(item) if len(item) <= 40 else f"{item[:40]!r}…"
        raise ConfigError(f"{source}: {shown}: lists or mappings nested past what a value can hold") from None
    except yaml.YAMLError as e:
        if raw.lstrip()[:1] not in ("[", "{", '"', "'"):
            return raw
        mark = getattr(e, "problem_mark", None)
        col = f" (column {len(item) - len(raw) + mark.column + 1})" if mark else ""
        problem = getattr(e, "problem", None) or "invalid YAML"
        raise ConfigError(f"{source}: {item!r}: malformed value{col}: {problem}; quote a string, close a [list]") from None


def parse_overrides(items: Sequence[str], source: str = "command line") -> list[Override]:
    """``["train.iterations=5", "+data.roots.B=/x", "~eval.max_images"]`` -> overrides (values parsed as YAML).

    Raises:
        ConfigError: one line naming the item: no ``=``, an empty key, a value given to ``~key``,
            a malformed value (an unclosed ``[``/quote).
    """
    out: list[Override] = []
    for item in items:
        op: Literal["set", "add", "delete"] = "set"
        body = item
        if item.startswith("~"):
            op, body = "delete", item[1:]
        elif item.startswith("+"):
            op, body = "add", item[1:]
        key, sep, raw = body.partition("=")
        key = key.strip()
        if not key or any(not p for p in key.split(".")) or any(c.isspace() for c in key):
            raise ConfigError(f"{source}: {item!r}: expected {_EXAMPLE}")
        if op == "delete":
            if sep:
                raise ConfigError(f"{source}: {item!r}: ~key deletes a key and takes no value (expected ~{key})")
            out.append(Override("delete", key, text=item))
            continue
        if not sep:
            raise ConfigError(f"{source}: {item!r}: expected {_EXAMPLE}")
        out.append(Override(op, key, _value(raw, item, source), text=item))
    return out


def apply_overrides(tree: dict[str, Any], overrides: Sequence[Override], *, tree_source: str = "config") -> dict[str, Any]:
    """A copy of ``tree`` with the command-line ``overrides`` applied in order (on an OmegaConf tree).

    ``key=value`` sets (creating parents; a ``None`` parent becomes a mapping); a mapping value merges
    into the mapping ``tree`` holds there (``model={backbone: RN50}`` keeps ``model``'s other keys, as in
    Hydra; ``~model model={…}`` replaces the section). ``+key=value`` adds a key ``tree`` does not hold,
    ``~key`` removes one that it holds (back to its default).

    Raises:
        ConfigError: ``command line: …`` for ``+key`` of a key already set, ``~key`` of a key not
            set, a key below a non-mapping value; ``<tree_source>: …`` for a tree OmegaConf cannot hold.
    """
    source = "command line"
    with _plain_data(tree_source):
        conf = OmegaConf.create(copy.deepcopy(tree))
    for o in overrides:
        parts = _parts(o.key)
        node = conf
        missing = False
        for i, part in enumerate(parts[:-1]):
            child = node.get(part) if part in node.keys() else None
            if child is not None and not OmegaConf.is_dict(child):
                raise ConfigError(f"{source}: {o.key}: {'.'.join(parts[: i + 1])} is not a mapping, cannot set a key below it")
            if child is None:
                if o.op == "delete":
                    missing = True
                    break
                node[part] = {}
                child = node[part]
            node = child
        present = not missing and parts[-1] in node.keys()  # `in node` reads a ??? as absent
        if o.op == "delete":
            if not present:
                raise ConfigError(f"{source}: ~{o.key}: not set, nothing to delete")
            del node[parts[-1]]
        elif o.op == "add" and present:
            raise ConfigError(f"{source}: +{o.key}: already set; use {o.key}=… to change it")
        else:
            value = o.value
            if present and isinstance(value, dict) and OmegaConf.is_dict(node[parts[-1]]):
                # a mapping merges into the section it names (as in Hydra): its other keys stay. Merged as plain
                # data: OmegaConf's merge would keep the old value under a "???" (its MISSING) silently
                value = _merged(OmegaConf.to_container(node[parts[-1]], resolve=False), value)
            try:
                node[parts[-1]] = value
            except OmegaConfBaseException as e:  # a null key in a mapping, a broken ${…}: not a traceback
                what = str(e).splitlines()[0]
                hint = "${…} is an interpolation, which config values do not use" if "${" in what else "keys are names, values plain data"
                raise ConfigError(f"{source}: {o.spelled}: {what} ({hint})") from None
    return OmegaConf.to_container(conf, resolve=False)  # type: ignore[return-value]


# ----------------------------------------------------------------------------------------------- validation


def _shown(value: Any) -> str:
    """A rejected value as a message quotes it: YAML's words for None and booleans, repr otherwise, cut at 60 characters."""
    text = "null" if value is None else str(value).lower() if isinstance(value, bool) else repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


_EXPONENT_WITHOUT_DOT = re.compile(r"^[-+]?[0-9]+[eE][-+]?[0-9]+$")
"""``1e3``: a number to the eye, a string to YAML 1.1 (PyYAML's float needs a dot: ``1.0e+3``)."""


def _whole_number(text: str) -> int | None:
    """``4e2`` as the integer it means (400), or None: not an exponent without a dot, or not whole
    (pydantic reads ``1e-2`` as a float itself; only an integer field is left with the text)."""
    from decimal import Decimal

    if not _EXPONENT_WITHOUT_DOT.match(text):
        return None
    value = Decimal(text)
    return int(value) if value == value.to_integral_value() else None


def format_error(
    err: ValidationError,
    source: str,
    prefix: str = "",
    valid_keys: Sequence[str] | None = None,
    names: Mapping[str, str] | None = None,
    errors: Sequence[Any] | None = None,
    also: Mapping[str, str] | None = None,
) -> str:
    """The first pydantic error as one line: ``<source>: <prefix.dotted.key>: <what>[ (+N more)]``.

    An unknown key reads ``unknown key`` (with the closest of ``valid_keys``, dotted paths or
    names, when one is close), and is the error shown when there is one: a misspelt required key is
    also a missing one, and the unknown spelling is what the user can find in the file. An unknown
    section given a mapping (``train.iterations=10`` where the schema has no ``train``) is named by
    its full dotted key, and where nothing is close to that key, its last part is looked up
    (``model.backbone``: ``backbone``). An empty list reads ``empty list (expected at least one value)``.
    ``names`` maps a dotted key to what the user typed for it (``{"train_images": "--train"}``).
    ``errors``: those of ``err`` to consider (default: all).
    ``also``: a name a user may reach for -> the key that does it (:func:`also_known_as`), suggested first.
    """
    errors = list(err.errors()) if errors is None else list(errors)
    e = next((x for x in errors if x["type"] == "extra_forbidden"), errors[0])
    key_of = tuple(e["loc"][-1:]) == ("[key]",)  # a mapping's key, not its value: `1: [a]` under grid (a root error has no loc)
    # a fixed-length tuple given too few values (`data.jitter=[1, 2]`): pydantic names each missing position
    short = [x["loc"][-1] for x in errors if x["type"] == "missing" and x["loc"] and isinstance(x["loc"][-1], int)
             and x["loc"][:-1] == e["loc"][:-1]] if e["type"] == "missing" and e["loc"] and isinstance(e["loc"][-1], int) else []  # fmt: skip
    if short:
        errors = [x for x in errors if not (x["type"] == "missing" and x["loc"][:-1] == e["loc"][:-1])] + [e]
        e = {**e, "loc": e["loc"][:-1], "msg": f"{min(short)} value{'s' if min(short) != 1 else ''}; expected {max(short) + 1}"}
    loc = ".".join(str(p) for p in e["loc"][: -1 if key_of else None])
    path = ".".join(x for x in (prefix, loc) if x) or "<root>"
    path = (names or {}).get(path, path)
    msg = e["msg"].removeprefix("Value error, ")
    if e["type"] == "model_type":  # "Input should be a valid dictionary or instance of TrainConfig": a class name
        msg = "expected a mapping"
    if key_of:
        msg = f"a key that is not a name (got {type(e.get('input')).__name__} {e.get('input')!r}); keys are names (e.g. style.mix)"
    elif e["type"] == "extra_forbidden":
        keys = list(valid_keys or [])
        bad = loc if loc in keys or any("." in k for k in keys) else str(e["loc"][-1])
        below = _first_key(e.get("input"))  # `train.iterations=10` without a train section: the key as typed
        typed = f"{bad}.{below}" if below else bad
        hint, whole = _unknown_key_hint(typed, keys, also or {}, unknown=bad)
        if below and whole:  # the hint replaces the whole key (steps for train.iterations): name it whole
            path = f"{path}.{below}"
        msg = "unknown key" + hint
    elif e["type"] == "too_short" and e.get("input") is not None and len(e["input"]) == 0:
        msg = "empty list (expected at least one value)"
    elif e["type"] not in ("value_error", "missing", "too_short", "too_long") and "input" in e and not isinstance(e["input"], (dict, list)):
        msg += f" (got {_shown(e['input'])})"  # pydantic's own wording does not repeat the value
        if e["type"].startswith("int_") and isinstance(e["input"], str) and (whole := _whole_number(e["input"])) is not None:
            msg += f"; YAML reads an exponent without a dot as text: write {whole}"  # seeds: [1e3]
    more = f" (+{len(errors) - 1} more)" if len(errors) > 1 else ""
    if path == "<root>" and e["type"] == "value_error":  # a check across sections: its message names the keys
        return f"{source}: {msg}{more}"
    return f"{source}: {path}: {msg}{more}"


def _first_key(value: Any) -> str:
    """The dotted path of the first leaf of a mapping (``{"iterations": 10}``: ``iterations``), ``""`` for anything else."""
    parts = []
    while isinstance(value, dict) and value:
        key, value = next(iter(value.items()))
        parts.append(str(key))
    return ".".join(parts)


def _unknown_key_hint(typed: str, keys: Sequence[str], also: Mapping[str, str], unknown: str | None = None) -> tuple[str, bool]:
    """`` (did you mean X?)`` for an unknown dotted key ``typed`` whose first unknown part is ``unknown``
    (``trian`` of ``trian.iterations``; default ``typed``), or ``""``; and whether it stands for the whole
    of ``typed`` (else for ``unknown`` alone: ``gird`` of ``gird.model.freeze`` is ``grid``). In turn: the
    key ``also`` names for it; the closest of ``keys`` as deep as it (:func:`~famix_core.errors.closest`);
    the closest to its unknown part; then the same for its last part (another command's key:
    ``model.backbone``, ``train.iterations``)."""
    unknown = typed if unknown is None else unknown
    last = typed.rsplit(".", 1)[-1]
    if typed in also:
        return f" (did you mean {also[typed]}?)", True
    if unknown != typed:  # a mapping under an unknown section: a key as deep as the one typed, first
        hint = suggest(typed, [k for k in keys if k.count(".") == typed.count(".")])
        if hint:
            return hint, True
    hint = suggest(unknown, keys)
    if hint or last == typed:
        return hint, False
    return (f" (did you mean {also[last]}?)" if last in also else suggest(last, keys)), True


def also_known_as(schema: type[BaseModel], prefix: str = "") -> dict[str, str]:
    """The names a user may reach for, and the dotted key of ``schema`` that does it: each field's
    ``json_schema_extra={"also": [...]}`` (``steps`` of the pretraining config: ``iterations``, the
    engine's word), its sections' fields included."""
    import typing

    out: dict[str, str] = {}
    for name, f in schema.model_fields.items():
        path = f"{prefix}.{name}" if prefix else name
        extra = f.json_schema_extra if isinstance(f.json_schema_extra, dict) else {}
        for other in extra.get("also") or ():  # type: ignore[union-attr]
            out.setdefault(str(other), path)
        for sub in (f.annotation, *typing.get_args(f.annotation)):
            if isinstance(sub, type) and issubclass(sub, BaseModel):
                out.update({k: v for k, v in also_known_as(sub, path).items() if k not in out})
    return out


def also_in_its_section(schema: type[BaseModel]) -> dict[str, str]:
    """:func:`also_known_as` as dotted keys of the section that holds the field (``train.amp`` ->
    ``train.precision``): a former name, written where the key is now."""
    return {".".join(filter(None, (new.rpartition(".")[0], old))): new for old, new in also_known_as(schema).items()}


def validate(
    schema: type[M],
    tree: Any,
    source: str,
    prefix: str = "",
    valid_keys: Sequence[str] | None = None,
    names: Mapping[str, str] | None = None,
    overridable: bool = False,
    allow_missing: bool = False,
) -> M | None:
    """``schema.model_validate(tree)``; a failure raises :class:`ConfigError` with :func:`format_error`'s line.

    A key still :data:`MISSING` (``???``) is refused once the rest of the tree validates (a misspelt
    key is named as such first); with ``overridable`` (an engine config, whose keys the command line
    sets) the message says how to give it there. ``???`` stands for one value: where ``valid_keys``
    names a section there, it is refused. ``allow_missing``: a layer that a later one (the command
    line, a grid) may complete: the rest of it is checked, and the model is built without those keys,
    or ``None`` when it cannot be (a rule across keys, e.g. ``select`` needing ``val_every``, that
    only the value to give can settle). Without ``allow_missing`` the result is never ``None``.
    """
    paths = _missing_paths(tree)
    missing = [".".join(p) for p in paths]
    keys = list(valid_keys or [])
    where = lambda key: ".".join(x for x in (prefix, key) if x)  # noqa: E731
    items = _missing_items(tree)  # ["???", 64]: a list is one value, given whole (after the key's own check)
    for key in missing if keys else ():  # a section's keys would fall back to the engine's defaults, not the layers'
        if _is_section(key, keys):
            below = next(k for k in keys if k.startswith(key + "."))
            raise ConfigError(f"{source}: {where(key)}: ??? stands for one value, not a section; write it at each key to give (e.g. {below}: ???)")
    try:
        model = schema.model_validate(_without(tree, paths) if paths else tree)
    except ValidationError as e:
        # an error at a ??? key (a required one left out) or at a section above one (a rule across
        # its keys, checked without the value to give) is the ???'s: it waits for that value
        own = [x for x in e.errors() if not any(_at_or_above(x["loc"], p) for p in [*paths, *items])]
        if own:
            raise ConfigError(format_error(e, source, prefix, valid_keys, names, errors=own, also=also_known_as(schema))) from None
        model = None
    mappings = [k for k in keys if not _is_section(k, keys)] if missing or items else []  # leaves that may hold mappings (data.roots)
    held = [".".join(_key_of(p)) for p in items]  # the keys whose lists hold a ???
    for key in [*missing, *held] if keys else ():
        if key not in keys and not any(key.startswith(k + ".") for k in mappings):
            raise ConfigError(f"{source}: {where(key)}: unknown key{_unknown_key_hint(key, keys, also_known_as(schema))[0]}")
    for path, key in zip(items, held):
        raise ConfigError(f"{source}: {where('.'.join(path))}: ??? stands for a whole value, not an item of a list; "
                          f"write {key}: ??? and give the whole list")  # fmt: skip
    if missing and not allow_missing:  # each of them, as all must be given
        it = "it" if len(missing) == 1 else "them"
        how = f"give {it} on the command line: {' '.join(k + '=…' for k in missing)}" if overridable else "write the value in its place"
        raise ConfigError(f"{source}: {', '.join(where(k) for k in missing)}: ??? (a value still to give) was not given; {how}")
    return model


def _is_section(key: str, keys: Sequence[str]) -> bool:
    """Whether dotted ``key`` has keys below it among ``keys`` (``train``, not ``train.iterations``)."""
    return any(k.startswith(key + ".") for k in keys)


def _at_or_above(loc: Sequence[Any], path: tuple[str, ...]) -> bool:
    """Whether a pydantic error location is ``path`` or a mapping above it."""
    return len(loc) <= len(path) and tuple(str(x) for x in loc) == path[: len(loc)]


def check_overrides(schema: type[BaseModel], before: Any, after: Any, valid_keys: Sequence[str] | None = None) -> None:
    """When ``before`` validates and ``after`` (``before`` with command-line overrides) does not, the
    overrides made the mistake: raise :class:`ConfigError` naming ``command line: <key>``. A ``before``
    that is itself invalid is left to its own source's message, and so is a ``???`` it holds that the
    overrides did not give.
    """
    held = set(_missing_paths(before))
    try:
        schema.model_validate(_without(before, sorted(held)) if held else before)
    except ValidationError:
        return
    left = [p for p in _missing_paths(after) if p in held]
    validate(schema, _without(after, left) if left else after, "command line", valid_keys=valid_keys, overridable=True)


# ----------------------------------------------------------------------------------------------- hashing


def canonical_json(obj: Any) -> str:
    """JSON with sorted keys, no spaces, ASCII only: equal data, equal text."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def canonical_hash(obj: Any) -> str:
    """sha256 hex of :func:`canonical_json` (stage keys, trial ids, plan fingerprints)."""
    return hashlib.sha256(canonical_json(obj).encode()).hexdigest()

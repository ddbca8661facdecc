"""Fuzzed config files: the loader answers with a ConfigError naming the key, nothing else.

Hypothesis takes the file ``bastion init`` writes and changes one key to a value of any
TOML type (or adds an unknown key, or turns a section into a scalar); the loader must
load it or raise ConfigError naming ``section.key`` - never a TypeError, ValueError or
KeyError from deep inside. Row K8; ``scripts/fuzz-long`` runs it with a long budget.
"""

from __future__ import annotations

import datetime
import json
import math
import tomllib
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bastion.config import load_config, render_config
from bastion.errors import ConfigError
from tests.fuzzing import budget

TEMPLATE: dict[str, dict[str, Any]] = tomllib.loads(render_config("n1", "127.0.0.1:2299"))
KEYS = sorted((section, key) for section, table in TEMPLATE.items() for key in table)

_SCALARS = st.one_of(
    st.text(max_size=20),
    st.sampled_from(
        ["", "0", "-1", "1h", "30d", "127.0.0.1:0", "[::1]:22", ":", "a:b:c", "x" * 300]
    ),
    st.integers(-(2**63), 2**63 - 1),
    st.sampled_from([0, -1, 1, 2**31, 2**62, 65536]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    st.dates(),
    st.datetimes(),
    st.times(),
)
_VALUES = st.recursive(
    _SCALARS,
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(st.sampled_from(["a", "b"]), inner, max_size=2)
    ),
    max_leaves=5,
)


def toml_value(v: Any) -> str:
    """One value as TOML text (the project has no TOML writer; this covers what we draw)."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v, ensure_ascii=False).replace("\x7f", "\\u007f")
    if isinstance(v, datetime.datetime | datetime.date | datetime.time):
        return v.isoformat()
    if isinstance(v, list):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{k} = {toml_value(x)}" for k, x in v.items()) + "}"
    raise TypeError(v)


def toml_text(doc: dict[str, Any]) -> str:
    lines = []
    for section, table in doc.items():
        if not isinstance(table, dict):
            lines.append(f"{section} = {toml_value(table)}")
    for section, table in doc.items():
        if isinstance(table, dict):
            lines.append(f"[{section}]")
            lines.extend(f"{k} = {toml_value(v)}" for k, v in table.items())
    return "\n".join(lines) + "\n"


def _load(tmp_path: Path, doc: dict[str, Any]) -> None:
    path = tmp_path / "bastion.toml"
    path.write_text(toml_text(doc))
    load_config(path)


def test_the_template_round_trips_through_the_writer(tmp_path: Path) -> None:
    """The harness itself: the unchanged template, written back, loads."""
    _load(tmp_path, TEMPLATE)


_FUZZ = settings(
    max_examples=budget(150),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@_FUZZ
@given(where=st.sampled_from(KEYS), value=_VALUES)
def test_any_value_for_a_known_key_loads_or_names_the_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, where: tuple[str, str], value: Any
) -> None:
    monkeypatch.delenv("BASTION_STATE_URL", raising=False)
    section, key = where
    doc = {s: dict(t) for s, t in TEMPLATE.items()}
    doc[section][key] = value
    try:
        _load(tmp_path, doc)
    except ConfigError as e:
        assert f"{section}.{key}" in str(e), (where, value, str(e))


@_FUZZ
@given(
    section=st.sampled_from(sorted(TEMPLATE)),
    key=st.text(alphabet="abcdefghijklmnopqrstuvwxyz_", min_size=1, max_size=12),
    value=_VALUES,
    whole=st.booleans(),
)
def test_unknown_keys_and_sections_that_are_not_tables_are_named(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    section: str,
    key: str,
    value: Any,
    whole: bool,
) -> None:
    monkeypatch.delenv("BASTION_STATE_URL", raising=False)
    doc: dict[str, Any] = {s: dict(t) for s, t in TEMPLATE.items()}
    if whole:
        doc[section] = value if not isinstance(value, dict) else [value]
        named = section
    elif key in doc[section]:
        return  # a known key: the test above
    else:
        doc[section][key] = value
        named = f"[{section}] {key}"  # the unknown-key message's own spelling
    with pytest.raises(ConfigError) as e:
        _load(tmp_path, doc)
    assert named in str(e.value), (section, key, value, str(e.value))

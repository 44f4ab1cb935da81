"""The error vocabulary: one list (stacdrop.errors.ErrorClass), the docs generated from it, every raised
class in it."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

from stacdrop.errors import ErrorClass, InvalidRaster, PermanentError, classify, error_classes_markdown, \
    permanent_error

ROOT = Path(__file__).resolve().parents[3]
PRODUCT = ("stacdrop", "watcher", "processor", "publisher")


def test_docs_are_generated_from_the_list() -> None:
    assert (ROOT / "docs" / "errors.md").read_text() == error_classes_markdown(), \
        "docs/errors.md is stale: run python -m stacdrop.errors > docs/errors.md"


def _error_class_literals() -> list[tuple[str, str]]:
    """Every string given as an error class in the product: ``error_class = "x"`` or ``error_class="x"``."""
    found = []
    for package in PRODUCT:
        for path in (ROOT / package).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                values = []
                if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "error_class" for t in node.targets):
                    values.append(node.value)
                if isinstance(node, ast.keyword) and node.arg == "error_class":
                    values.append(node.value)
                found += [(f"{path.relative_to(ROOT)}:{v.lineno}", v.value) for v in values
                          if isinstance(v, ast.Constant) and isinstance(v.value, str)]
    return found


def test_no_error_class_is_a_bare_string() -> None:
    assert _error_class_literals() == []


def test_every_error_subclass_has_a_listed_class() -> None:
    for stage in ("processor", "publisher", "watcher"):  # load every stage's errors
        importlib.import_module(stage)
    from stacdrop.errors import StacdropError

    def subclasses(cls: type) -> list[type]:
        return [cls, *[s for sub in cls.__subclasses__() for s in subclasses(sub)]]

    for cls in subclasses(StacdropError):
        assert isinstance(cls.error_class, ErrorClass), cls
        assert cls.error_class.transient == cls.transient, f"{cls.__name__}: {cls.error_class} retried?"


def test_classify() -> None:
    assert classify(InvalidRaster("x.tif: not a raster")) == ("invalid_raster", False)
    assert classify(ConnectionResetError()) == ("network", True)
    assert classify(KeyError("k")) == ("KeyError", True)


def test_a_refusal_recorded_on_a_message_is_raised_again_with_its_class() -> None:
    assert permanent_error("outside_inbox", "a.tif: outside").error_class == ErrorClass.OUTSIDE_INBOX
    assert type(permanent_error("unsafe_url", "u")) is PermanentError
    assert permanent_error("unsafe_url", "u").error_class == ErrorClass.UNSAFE_URL
    # a class an older version wrote, no longer listed: still a permanent error, never a crash
    assert permanent_error("retired_class", "m").error_class == ErrorClass.PERMANENT


def test_a_class_is_its_text() -> None:
    assert ErrorClass.INVALID_SIDECAR == "invalid_sidecar" and f"{ErrorClass.INVALID_SIDECAR}" == "invalid_sidecar"
    with pytest.raises(ValueError):
        ErrorClass("not_a_class")

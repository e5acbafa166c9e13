"""The bench scripts' ``field=value`` parser (``bench/_common.py``): values typed, bad items refused
with a message that names the option."""
import importlib.util
from pathlib import Path

import pytest

_spec = importlib.util.spec_from_file_location("bench_common", Path(__file__).parent.parent / "bench" / "_common.py")
common = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(common)


def test_parse_fields_types_values():
    got = common.parse_fields(["a=1", "b=0.5", "c=True", "d=False", "e=normal", "f=-2.3", "g=1e-3"], "--x")
    assert got == {"a": 1, "b": 0.5, "c": True, "d": False, "e": "normal", "f": -2.3, "g": 1e-3}
    assert type(got["a"]) is int and type(got["b"]) is float
    assert common.parse_fields(["x=true", "y=false"], "--x") == {"x": True, "y": False}   # the CLI's spelling too


@pytest.mark.parametrize("item", ["kl_coef", "=3", ""])
def test_parse_fields_refuses_items_without_field_and_value(item):
    with pytest.raises(SystemExit, match="--maesn: expected field=value"):
        common.parse_fields([item], "--maesn")

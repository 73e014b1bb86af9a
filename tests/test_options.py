"""idtfv.options: command-line options generated from an options dataclass, on a small planted dataclass."""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass

import pytest

from idtfv.errors import ParameterError
from idtfv.options import add_params_options, choices_of, field_error, option, params_from_args

MODES = ("a", "b")


@dataclass(frozen=True)
class Toy:
    size: int = option(4, "size in px", metavar="PX")
    ratio: float = option(0.5, "a ratio", advanced=True)
    mode: str = option("a", "the mode", choices=MODES)
    on: bool = option(True, "a switch")
    path: str | None = option(None, "a file", metavar="FILE", none="no file")
    hidden: int = 0  # no option()

    def __post_init__(self):
        if self.size < 1:
            raise field_error("Toy", "size", "an integer >= 1", self.size, 4)
        if self.size % 2 and self.mode == "b":
            raise field_error("Toy", "mode", f"'a' with an odd size={self.size}", self.mode, "a")
        if self.mode not in choices_of(Toy)["mode"]:
            raise field_error("Toy", "mode", "one of a, b", self.mode, "a")

    @classmethod
    def big(cls, **changes):
        return cls(**{"size": 8, "ratio": 0.25, **changes})


def _parser(**kwargs):
    parser = argparse.ArgumentParser(prog="toy")
    add_params_options(parser, Toy, **kwargs)
    return parser


def test_each_field_with_option_metadata_becomes_an_option_of_its_type():
    parser = _parser()
    args = parser.parse_args(["--size", "6", "--ratio", "0.75", "--mode", "b", "--no-on", "--path", "x.txt"])
    assert params_from_args(args, Toy) == Toy(size=6, ratio=0.75, mode="b", on=False, path="x.txt")
    assert vars(parser.parse_args([])) == {"size": None, "ratio": None, "mode": None, "on": None, "path": None}
    assert params_from_args(parser.parse_args([]), Toy) == Toy()
    with pytest.raises(SystemExit):
        parser.parse_args(["--hidden", "1"])  # a field without option() is not offered
    with pytest.raises(SystemExit):
        parser.parse_args(["--mode", "c"])  # choices come from the field


def test_help_shows_each_presets_default_and_groups_the_advanced_options():
    parser = _parser(presets={"default": Toy, "big": Toy.big}, title="toy options")
    text = " ".join(parser.format_help().split())
    assert "size in px (default: 4; --preset big: 8)" in text
    assert "a ratio (default: 0.5; --preset big: 0.25)" in text
    assert "the mode (default: a)" in text and "a switch (default: on)" in text
    assert "a file (default: no file)" in text
    groups = text[text.index("toy options:"):]
    assert groups.index("--size PX") < groups.index("advanced Toy options:") < groups.index("--ratio RATIO a ratio")


def test_only_the_chosen_fields_are_offered_and_a_preset_builds_the_result():
    parser = _parser(fields=["size", "mode"])
    args = parser.parse_args(["--mode", "b"])
    assert params_from_args(args, Toy, fields=["size", "mode"], preset=Toy.big) == Toy.big(mode="b")
    with pytest.raises(SystemExit):
        parser.parse_args(["--ratio", "1"])
    with pytest.raises(TypeError, match="no field"):
        _parser(fields=["nope"])
    with pytest.raises(TypeError, match="no option metadata"):
        _parser(fields=["hidden"])


def test_errors_name_the_option_typed_or_the_option_whose_default_no_longer_fits():
    parser = _parser()
    with pytest.raises(ParameterError) as exc:
        params_from_args(parser.parse_args(["--size", "0"]), Toy)
    assert str(exc.value) == ("--size: expected an integer >= 1, got 0 (Toy.size); leave --size out for the "
                              "default (4)")
    with pytest.raises(ParameterError) as exc:
        params_from_args(parser.parse_args(["--size", "3", "--mode", "b"]), Toy)
    assert str(exc.value).startswith("--mode: expected 'a' with an odd size=3, got 'b' (Toy.mode); choose one of")
    with pytest.raises(ParameterError) as exc:  # the typed --size makes the preset's mode invalid
        params_from_args(_parser(fields=["size"]).parse_args(["--size", "3"]), Toy, fields=["size"],
                         preset=lambda **kw: Toy(**{"mode": "b", **kw}))
    assert str(exc.value).startswith("Toy.mode: expected")  # mode is not an option here: the field's own message


def test_field_error_keeps_the_field_for_rewording():
    exc = field_error("Toy", "size", "an integer >= 1", 0, 4)
    assert isinstance(exc, ParameterError) and (exc.field, exc.expected, exc.value) == ("size", "an integer >= 1", 0)
    assert str(exc) == "Toy.size: expected an integer >= 1, got 0; fix the option or use the default (4)"


def test_a_field_of_an_unsupported_type_needs_an_explicit_type():
    @dataclass(frozen=True)
    class Odd:
        pair: tuple = option((1, 2), "a pair")

    with pytest.raises(TypeError, match="type="):
        add_params_options(argparse.ArgumentParser(), Odd)
    assert dataclasses.fields(Odd)[0].metadata["help"] == "a pair"

"""The parameter table: it covers the estimator, its docstring and the command line, and its
checks give skfeat's messages."""

from __future__ import annotations

import inspect
import re

import numpy as np
import pytest

import skfeat._params as params_module
from skfeat import PretrainedCNNFeaturizer
from skfeat._params import PARAMETERS, Param, check_params, result_params, run_params, str_options
from skfeat.exceptions import InvalidParameterError

OWNER = "PretrainedCNNFeaturizer"


def _documented_parameters() -> dict[str, str]:
    """Parameter name -> its type line, from the Parameters section of the class docstring."""
    doc = inspect.getdoc(PretrainedCNNFeaturizer)
    section = doc.split("Parameters\n----------\n", 1)[1].split("Attributes\n----------", 1)[0]
    return dict(re.findall(r"^(\w+) : (.+)$", section, flags=re.MULTILINE))


def _documented_option(option: object) -> str:
    return "None" if option is None else f'"{option}"'


def test_the_table_has_every_parameter_in_the_estimators_order():
    assert list(PARAMETERS) == list(inspect.signature(PretrainedCNNFeaturizer).parameters)


def test_every_entry_is_documented_with_its_options():
    documented = _documented_parameters()
    assert list(documented) == list(PARAMETERS)  # and every documented one has an entry
    for name, param in PARAMETERS.items():
        line = documented[name]
        for option in param.options:
            assert _documented_option(option) in line, (name, option, line)
        listed = re.match(r"\{(.*?)\}", line)
        if listed:  # a {...} set lists exactly the table's options
            written = [part.strip() for part in listed.group(1).split(",")]
            assert written == [_documented_option(option) for option in param.options], name


@pytest.mark.parametrize("name", list(PARAMETERS))
def test_a_value_of_no_accepted_type_is_refused_in_fit_with_what_is_expected(name, tiny_model):
    bad = type("BadType", (), {})()  # a value no parameter accepts, as in scikit-learn's check
    featurizer = PretrainedCNNFeaturizer(tiny_model).set_params(**{name: bad})
    expected = re.escape(PARAMETERS[name].expected_text())
    with pytest.raises(
        InvalidParameterError,
        match=rf"^The '{name}' parameter of {OWNER} must be {expected}\. Got .* instead\.",
    ):
        featurizer.fit(np.zeros((1, 8, 8, 3), np.uint8))


@pytest.mark.parametrize(
    ("name", "value"), [(name, option) for name, p in PARAMETERS.items() for option in p.options]
)
def test_every_option_is_accepted(name, value):
    check_params({name: value}, OWNER)


def test_a_near_miss_gets_a_did_you_mean():
    with pytest.raises(
        InvalidParameterError,
        match=r"The 'precision' parameter of PretrainedCNNFeaturizer must be one of "
        r"\('auto', 'fp32', 'bf16', 'fp16'\)\. Got 'fp23' instead\. Did you mean 'fp32'",
    ):
        check_params({"precision": "fp23"}, OWNER)


def test_options_are_kept_by_identity_but_strings_by_value():
    check_params({"normalize": None}, OWNER)
    check_params({"layer": np.str_("layer4")}, OWNER)
    with pytest.raises(InvalidParameterError, match="'progress' parameter"):
        check_params({"progress": 0}, OWNER)


def test_a_further_condition_has_its_own_message():
    with pytest.raises(InvalidParameterError, match=r"must be a list of distinct layer names"):
        check_params({"layer": ["a", "a"]}, OWNER)


def test_a_new_entry_is_one_line_and_checked(monkeypatch):
    monkeypatch.setitem(PARAMETERS, "colour", Param(options=(None, "srgb")))
    check_params({"colour": "srgb"}, OWNER)
    with pytest.raises(
        InvalidParameterError,
        match=r"'colour' parameter of PretrainedCNNFeaturizer must be one of None, 'srgb'\. "
        r"Got 'rgb' instead\. Did you mean 'srgb'",
    ):
        check_params({"colour": "rgb"}, OWNER)
    assert str_options("colour") == ["srgb"]
    assert "colour" in result_params({"colour": None}) and not run_params({"colour": None})


def test_the_run_parameters_are_the_keywords_of_resolve_settings():
    from skfeat._runtime import resolve_settings

    keywords = set(inspect.signature(resolve_settings).parameters) - {"model_label", "crop_size"}
    everything = PretrainedCNNFeaturizer().get_params(deep=False)
    assert set(run_params(everything)) == keywords


def test_the_result_parameters_hold_at_least_what_the_resume_check_always_held():
    everything = PretrainedCNNFeaturizer().get_params(deep=False)
    held = {"model", "weights", "normalize", "precision", "runtime", "decoder", "on_error"}
    assert held | {"layer", "pooling"} <= set(result_params(everything))
    assert not {"batch_size", "n_jobs", "cache", "progress"} & set(result_params(everything))


def _choices_of_extract() -> dict[str, list[str]]:
    from skfeat._cli import build_parser

    parser = build_parser()
    commands = next(a for a in parser._actions if a.dest == "command")
    extract = commands.choices["extract"]
    return {
        action.featurizer_parameter: list(action.choices)
        for action in extract._actions
        if getattr(action, "featurizer_parameter", None) and action.choices is not None
    }


def test_the_command_line_offers_the_tables_options(monkeypatch):
    choices = _choices_of_extract()
    assert set(choices) == {
        *("pooling", "intermediate_norm", "normalize", "precision", "runtime", "decoder"),
        "on_error",
    }
    assert all(choices[name] == str_options(name) for name in choices)
    widened = Param(options=("raise", "nan", "zeros", "skip"))
    monkeypatch.setitem(params_module.PARAMETERS, "on_error", widened)
    assert _choices_of_extract()["on_error"] == ["raise", "nan", "zeros", "skip"]

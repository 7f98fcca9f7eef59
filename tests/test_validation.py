"""Parameter checks: what passes, what is refused, and the messages, pinned."""

from __future__ import annotations

import re

import numpy as np
import pytest

from skfeat._validation import check_choice, check_n_jobs, did_you_mean, is_int, parameter_error
from skfeat.exceptions import InvalidParameterError


@pytest.mark.parametrize("value", [3, -2, 0, np.int64(4), np.uint8(1)])
def test_is_int_takes_integers(value):
    assert is_int(value) is True


@pytest.mark.parametrize("value", [True, np.bool_(True), 3.0, "3", None])
def test_is_int_refuses_bools_and_other_types(value):
    assert is_int(value) is False


def test_did_you_mean_lists_close_choices_best_first():
    assert did_you_mean("layer5", ["layer3", "layer4", "fc"]) == " Did you mean 'layer4', 'layer3'?"
    assert did_you_mean("LAYER4", ["layer4", "fc"]) == " Did you mean 'layer4'?"  # any case
    assert did_you_mean("zzz", ["avg", "max"]) == ""
    many = [f"block{i}" for i in range(9)]
    assert did_you_mean("block", many).count("'") == 6  # at most three suggestions


def test_did_you_mean_puts_a_synonym_first_and_shows_as_asked():
    synonyms = {"mean": "avg", "global_max": "max"}
    assert did_you_mean("Mean", ["avg", "max"], synonyms=synonyms) == " Did you mean 'avg'?"
    assert did_you_mean("global-max", ["avg", "max"], synonyms=synonyms) == " Did you mean 'max'?"
    shown = did_you_mean("resnet5", ["resnet50"], show=lambda c: repr("timm:" + c))
    assert shown == " Did you mean 'timm:resnet50'?"
    assert did_you_mean("lay", ["layer4"], cutoff=0.9) == ""


def test_parameter_error_says_what_was_expected_and_what_came():
    error = parameter_error("Owner", "size", [1], "an int", " Pass 3.")
    assert isinstance(error, InvalidParameterError)
    assert str(error) == "The 'size' parameter of Owner must be an int. Got [1] instead. Pass 3."


@pytest.mark.parametrize("n_jobs", [None, 1, 4, -1, np.int32(2)])
def test_n_jobs_none_or_a_non_zero_int_passes(n_jobs):
    check_n_jobs(n_jobs, "check_images")


@pytest.mark.parametrize("n_jobs", [0, 1.0, "2", True])
def test_n_jobs_otherwise_is_refused(n_jobs):
    message = (
        "The 'n_jobs' parameter of check_images must be None or a non-zero int. "
        f"Got {n_jobs!r} instead."
    )
    with pytest.raises(InvalidParameterError, match=f"^{re.escape(message)}$"):
        check_n_jobs(n_jobs, "check_images")


def test_check_choice_matches_strings_by_value_and_others_by_identity():
    check_choice("nan", ("raise", "nan"), "on_error", "F")
    check_choice(None, (None, "l2"), "normalize", "F")
    check_choice(False, (False, True), "progress", "F")
    with pytest.raises(InvalidParameterError, match=r"Got 0 instead\.$"):
        check_choice(0, (False, True), "progress", "F")  # 0 == False, but is not False


def test_check_choice_messages_are_pinned():
    with pytest.raises(
        InvalidParameterError,
        match=r"^The 'on_error' parameter of F must be one of 'raise', 'nan'\. "
        r"Got 'NaN' instead\. Did you mean 'nan'\?$",
    ):
        check_choice("NaN", ("raise", "nan"), "on_error", "F")
    with pytest.raises(
        InvalidParameterError,
        match=r"^The 'normalize' parameter of F must be None or 'l2'\. Got 'L3' instead\.$",
    ):
        check_choice("L3", (None, "l2"), "normalize", "F", expected="None or 'l2'")
    with pytest.raises(InvalidParameterError, match=r"Got 'mean' instead\. Did you mean 'avg'\?$"):
        check_choice("mean", ("avg", "max"), "pooling", "F", synonyms={"mean": "avg"})
    with pytest.raises(
        InvalidParameterError, match=r"must be one of None, 'l2'\. Got 2 instead\.$"
    ):
        check_choice(2, (None, "l2"), "normalize", "F")

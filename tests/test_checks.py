"""The value rules of rapgen.checks: one phrasing per rule, the same from Python and from the checks that use them."""

import pytest

import rapgen.checks as rules
from rapgen.errors import RapgenError


@pytest.mark.parametrize(
    "rule, args, message",
    [
        (rules.positive_int, ("--batch_size", 0), "--batch_size must be a positive integer, got 0"),
        (rules.positive_int, ("--batch_size", True), "--batch_size must be a positive integer, got True"),
        (rules.positive_int, ("--batch_size", 2.5), "--batch_size must be a positive integer, got 2.5"),
        (rules.non_negative_int, ("--seed", -3), "--seed must be a non-negative integer, got -3"),
        (rules.non_negative_int, ("--seed", "lucky"), "--seed must be a non-negative integer, got 'lucky'"),
        (rules.zero_or_positive_int, ("--top_k", -1), "--top_k must be 0 (off) or a positive integer, got -1"),
        (rules.positive_number, ("--timeout", 0, "seconds"), "--timeout must be a positive number of seconds, got 0"),
        (
            rules.positive_number,
            ("--learning_rate", float("nan")),
            "--learning_rate must be a positive number, got nan",
        ),
        (rules.non_negative_number, ("--temperature", -1), "--temperature must be a non-negative number, got -1"),
        (rules.one_of, ("--rank", "vibes", ("rhyme", "score")), "--rank must be one of rhyme, score; got 'vibes'"),
        (rules.known_name, ("--optimizer", "lion", ("adam", "sgd")), "unknown --optimizer 'lion': choose adam, sgd"),
        (rules.true_false, ("--quiet", "maybe"), "--quiet must be True or False; got 'maybe'"),
        (rules.true_false_auto, ("--recompute", "maybe"), "--recompute must be True, False or auto; got 'maybe'"),
    ],
)
def test_each_rule_names_the_flag_the_value_and_what_it_takes(rule, args, message):
    with pytest.raises(RapgenError) as caught:
        rule(*args)
    assert str(caught.value) == message


def test_between_says_the_ends_and_which_end_is_excluded():
    with pytest.raises(RapgenError) as caught:
        rules.between("--val_fraction", 1, 0, 1, hi_included=False)
    assert str(caught.value) == "--val_fraction must be between 0 and 1 (1 excluded), got 1"
    with pytest.raises(RapgenError) as caught:
        rules.between("--sequence_length", 2.0, 2, 64, integer=True, hi_label="the model's n_ctx (64)")
    assert str(caught.value) == "--sequence_length must be between 2 and the model's n_ctx (64), got 2.0"
    with pytest.raises(RapgenError) as caught:
        rules.between("--top_p", 2, 0, 1, note="0 or 1 = off")
    assert str(caught.value) == "--top_p must be between 0 and 1 (0 or 1 = off), got 2"
    assert rules.between("--val_fraction", 0.99, 0, 1, hi_included=False) == 0.99
    assert rules.between("--top_p", 1, 0, 1) == 1


def test_rules_return_what_they_accept():
    assert rules.positive_int("--batch_size", 4) == 4
    assert rules.zero_or_positive_int("--top_k", 0) == 0
    assert rules.known_name("--optimizer", "Adam", ("adam", "sgd")) == "adam"
    assert rules.true_false("--xla", "off") is False
    assert rules.true_false_auto("--recompute", True) is True
    with pytest.raises(RapgenError, match="--xla must be True or False; got 'no'"):
        rules.true_false("--xla", "no", words=False)  # the Python API takes a bool, not a word


def test_training_sampling_and_collection_use_the_same_phrasing():
    from rapgen.data.collect.arguments import parse_count
    from rapgen.finetune.config import TrainConfig
    from rapgen.write.generation import check_sampling_options

    wanted = "--batch_size must be a positive integer, got 0"
    with pytest.raises(RapgenError) as from_sampling:
        check_sampling_options(length=8, temperature=1.0, top_k=0, top_p=1.0, batch_size=0)
    with pytest.raises(RapgenError) as from_training:
        TrainConfig(dataset="lyrics.txt", batch_size=0).check()
    with pytest.raises(RapgenError) as from_collection:
        parse_count(0, "--batch_size")
    assert str(from_sampling.value) == str(from_training.value) == str(from_collection.value) == wanted

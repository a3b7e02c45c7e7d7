"""Permutation banks: completeness, max-Hamming selection, reverse identification, determinism, save/load."""

from __future__ import annotations

import itertools
import math
import re

import pytest
import torch

from permgym.permutations import PermutationBank, make_bank, max_hamming_bank, num_distinct_permutations


@pytest.mark.parametrize("n", [2, 3, 4, 5])
def test_full_bank_holds_every_permutation_once(n: int) -> None:
    bank = make_bank(n)
    assert bank.size == math.factorial(n)
    assert {tuple(p) for p in bank.perms.tolist()} == set(itertools.permutations(range(n)))


@pytest.mark.parametrize("n", [3, 4, 5])
def test_identify_reverse_keeps_one_of_each_pair(n: int) -> None:
    bank = make_bank(n, identify_reverse=True)
    rows = {tuple(p) for p in bank.perms.tolist()}
    assert bank.size == math.factorial(n) // 2 == num_distinct_permutations(n, identify_reverse=True)
    assert all(tuple(reversed(p)) not in rows for p in rows if tuple(reversed(p)) != p)


def test_max_hamming_bank_is_spread_out_and_deterministic() -> None:
    bank = max_hamming_bank(9, 100, seed=3)
    assert bank.size == 100 and bank.num_elements == 9
    distance = bank.pairwise_hamming()
    off_diagonal = distance[~torch.eye(100, dtype=torch.bool)]
    assert off_diagonal.min() >= 6  # a random set of 100 permutations of 9 has pairs at distance 2
    torch.testing.assert_close(bank.perms, max_hamming_bank(9, 100, seed=3).perms)
    assert not torch.equal(max_hamming_bank(5, 20, seed=3).perms, max_hamming_bank(5, 20, seed=4).perms)


def test_max_hamming_beats_random_subsets() -> None:
    chosen = max_hamming_bank(5, 20, seed=0).pairwise_hamming().float()
    full = make_bank(5).perms
    random_rows = full[torch.randperm(len(full), generator=torch.Generator().manual_seed(0))[:20]]
    random_bank = PermutationBank(random_rows)
    mask = ~torch.eye(20, dtype=torch.bool)
    assert chosen[mask].min() > random_bank.pairwise_hamming()[mask].min()


def test_large_n_samples_candidates() -> None:
    bank = make_bank(10, size=8, seed=0)
    assert bank.perms.shape == (8, 10)


def test_save_load_round_trip(tmp_path) -> None:
    bank = make_bank(4, size=10, seed=1, identify_reverse=True)
    bank.save(tmp_path / "bank.pt")
    loaded = PermutationBank.load(tmp_path / "bank.pt")
    assert torch.equal(loaded.perms, bank.perms) and loaded.identify_reverse


def test_hamming_to_identity() -> None:
    bank = PermutationBank(torch.tensor([[0, 1, 2, 3], [1, 0, 2, 3], [3, 2, 1, 0]]), identify_reverse=True)
    assert bank.hamming_to_identity().tolist() == [0, 2, 0]  # the reverse of the identity is the identity's class


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"n": 4, "size": 25}, "a bank of 25 permutations of n=4 elements is impossible: only 24"),
        ({"n": 4, "size": 13, "identify_reverse": True}, "only 12 distinct permutations exist when reverses"),
        ({"n": 1}, "ordering needs at least 2 elements, got n=1"),
        ({"n": 10}, "pass size= to select a max-Hamming subset"),
    ],
)
def test_impossible_banks_fail_clearly(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        make_bank(**kwargs)


def test_rows_must_be_permutations() -> None:
    with pytest.raises(ValueError, match="permutation of range"):
        PermutationBank(torch.tensor([[0, 0, 1]]))
    with pytest.raises(ValueError, match="duplicate"):
        PermutationBank(torch.tensor([[0, 1], [0, 1]]))

"""Stripe-looking object ids that are unique across the whole demo store and reproducible.

Stripe ids are a type prefix and an opaque base-62 body. Here the body starts with a
scrambled counter, so two ids can never collide (within a site the counter never repeats and
the site's slot is folded into it), and ends with characters drawn from a seeded generator,
so the ids look as random as Stripe's while staying identical from one run to the next.
"""

from __future__ import annotations

import random

ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_HEAD_CHARS = 7
_SPACE = 62**_HEAD_CHARS
# Odd and not a multiple of 31, so multiplying by it permutes the numbers below 62**7.
_SCRAMBLE = 2_654_435_761
MAX_SITES = 8


# Maps every byte to a base-62 character; the slight bias towards the first eight characters
# is harmless in ids that only have to look random.
_BYTE_TO_CHAR = bytes((ALPHABET * 5)[:256], "ascii")


def random_token(rng: random.Random, length: int) -> str:
    """A base-62 string of `length` characters drawn from `rng`."""
    return rng.randbytes(length).translate(_BYTE_TO_CHAR).decode("ascii")


def account_id(seed: int, slot: int) -> str:
    """The connected account id of the site in `slot`, fixed by the seed: `acct_` + 16 chars."""
    rng = random.Random(f"trace-demo-account:{seed}:{slot}")
    # The counter part keeps two sites of one store apart even if the random part collided.
    return "acct_1" + ALPHABET[slot] + random_token(rng, 14)


class IdFactory:
    """Issues ids for one site; every id it returns is new in the whole store."""

    def __init__(self, rng: random.Random, slot: int, account: str) -> None:
        if not 0 <= slot < MAX_SITES:
            raise ValueError(f"site slot {slot} is out of range; at most {MAX_SITES} sites")
        self._rng = rng
        self._slot = slot
        # Counting from one keeps the first id from scrambling to an all-zero head.
        self._seq = 1
        # Stripe embeds a fragment of the account in many ids; it makes the demo ids look real.
        self._tag = account[-8:]

    def _head(self) -> str:
        number = (self._seq * MAX_SITES + self._slot) * _SCRAMBLE % _SPACE
        self._seq += 1
        chars = []
        for _ in range(_HEAD_CHARS):
            number, digit = divmod(number, 62)
            chars.append(ALPHABET[digit])
        return "".join(chars)

    def new(self, prefix: str, length: int = 24) -> str:
        """A fresh id `prefix` + `length` characters, e.g. `new("ch_")` for a charge."""
        head = self._head()
        # Short ids (customers, items) have no room for the account fragment.
        body = "3" + head + self._tag if length >= 24 else head
        return prefix + body + random_token(self._rng, length - len(body))

    def checkout_session(self) -> str:
        """A test-mode Checkout Session id, which Stripe makes much longer than the rest."""
        return "cs_test_a1" + self._head() + random_token(self._rng, 49)

"""BLEU, written here: GTAlign's character-level sentence BLEU (spec §1.4, `medium`) and GPO's Self-BLEU
of a new prompt against every earlier one (spec §5.1).

Sentence BLEU follows the usual definition: clipped n-gram precisions (clip = the largest count of the
n-gram in any one reference), geometric mean with the given weights, brevity penalty against the reference
length closest to the hypothesis (ties to the shorter). Without smoothing a zero precision makes BLEU 0
(NLTK returns a value below 1e-70 there; the difference is invisible at any printed precision). With
`epsilon` a zero count is replaced by epsilon (Chen & Cherry's method 1).
"""

from __future__ import annotations

import bisect
import math
import re
from collections import Counter
from collections.abc import Hashable, Sequence

Tokens = Sequence[Hashable]
UNIFORM_4 = (0.25, 0.25, 0.25, 0.25)
# GPO's diversity term uses n-grams of orders 2 to 5
SELF_BLEU_WEIGHTS = (0.0, 0.25, 0.25, 0.25, 0.25)


def ngrams(tokens: Tokens, n: int) -> Counter:
    return Counter(tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1))


def _bleu_from_counts(
    hyp: Tokens,
    max_ref: dict[int, Counter],
    closest_ref_len: int,
    weights: Sequence[float],
    epsilon: float | None,
) -> float:
    c = len(hyp)
    if c == 0:
        return 0.0
    log_sum = 0.0
    for order, w in enumerate(weights, start=1):
        if w == 0:
            continue
        hyp_counts = ngrams(hyp, order)
        clipped = sum(min(k, max_ref[order].get(g, 0)) for g, k in hyp_counts.items())
        total = max(1, sum(hyp_counts.values()))
        if clipped == 0:
            if epsilon is None:
                return 0.0
            clipped = epsilon
        log_sum += w * math.log(clipped / total)
    bp = 1.0 if c > closest_ref_len else math.exp(1.0 - closest_ref_len / c)
    return bp * math.exp(log_sum)


def _closest(lengths: Sequence[int], c: int) -> int:
    return min(lengths, key=lambda r: (abs(r - c), r))


def sentence_bleu(
    references: Sequence[Tokens],
    hypothesis: Tokens,
    weights: Sequence[float] = UNIFORM_4,
    epsilon: float | None = None,
) -> float:
    if not references:
        return 0.0
    max_ref: dict[int, Counter] = {}
    for order in range(1, len(weights) + 1):
        merged: Counter = Counter()
        for ref in references:
            merged |= ngrams(ref, order)  # |= keeps the larger count: the clip of multi-reference BLEU
        max_ref[order] = merged
    return _bleu_from_counts(
        hypothesis, max_ref, _closest([len(r) for r in references], len(hypothesis)), weights, epsilon
    )


def char_bleu(reference: str, hypothesis: str) -> float:
    """GTAlign's `medium` user term: BLEU-4 over characters of the raw strings, no smoothing."""
    return sentence_bleu([list(reference)], list(hypothesis))


def word_tokens(text: str) -> list[str]:
    return re.findall(r"\w+|[^\w\s]", text.lower())


class SelfBLEU:
    """Self-BLEU of each new text against all texts added before it. The clip table (largest count of each
    n-gram over the references) and the sorted reference lengths grow incrementally, so scoring stays
    cheap as the unbounded buffer grows."""

    def __init__(self, weights: Sequence[float] = SELF_BLEU_WEIGHTS, epsilon: float | None = 0.1) -> None:
        self.weights, self.epsilon = tuple(weights), epsilon
        self.max_ref: dict[int, Counter] = {n: Counter() for n in range(1, len(self.weights) + 1)}
        self.lengths: list[int] = []

    def __len__(self) -> int:
        return len(self.lengths)

    def score(self, text: str) -> float:
        """Self-BLEU of `text` against the buffer (0 while it is empty)."""
        if not self.lengths:
            return 0.0
        hyp = word_tokens(text)
        i = bisect.bisect_left(self.lengths, len(hyp))
        near = self.lengths[max(0, i - 1) : i + 1]
        return _bleu_from_counts(hyp, self.max_ref, _closest(near, len(hyp)), self.weights, self.epsilon)

    def add(self, text: str) -> None:
        tokens = word_tokens(text)
        for order, table in self.max_ref.items():
            table |= ngrams(tokens, order)
        bisect.insort(self.lengths, len(tokens))

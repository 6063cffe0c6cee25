"""What the generator draws from: text pools, names and countries taken from the bundled real sample.

Callers: :mod:`pinpipe.synth.generate` only (built once per process, cached). Text is picked from the real
values, so generated rows carry the real text quirks (commas, quotes, newlines, CJK/Cyrillic, ``…\\u00a0``
endings, ``15.1k Likes``) at their real frequencies; placeholders are *not* in the pools — the generator
places them itself at the measured rates.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from functools import cache
from typing import Any

import numpy as np
import numpy.typing as npt

from pinpipe.source.sample import load_sample_records

TITLE_PLACEHOLDER = "No Title Data Available"
STORY_DESCRIPTION = "No description available Story format"
NO_DESCRIPTION = "No description available"
UNTITLED = "Untitled"
USER_INFO_ERROR = "User Info Error"
NO_TAGS = "N,o, ,T,a,g,s, ,A,v,a,i,l,a,b,l,e"
IMAGE_SRC_ERROR = "Image src error."
STORY = "multi-video(story page format)"
SAVE_PREFIX = "Local save in "


@dataclass(frozen=True)
class Pool:
    """Values of one text field grouped by category: ``values[offsets[c] : offsets[c] + lengths[c]]``."""

    values: tuple[object, ...]
    offsets: npt.NDArray[np.int64]
    lengths: npt.NDArray[np.int64]

    def pick(self, category: npt.NDArray[np.int64], uniform: npt.NDArray[np.float64]) -> list[Any]:
        """One value per row from the row's category pool; ``uniform`` holds one U[0,1) draw per row."""
        index = self.offsets[category] + (uniform * self.lengths[category]).astype(np.int64)
        values = self.values
        return [values[i] for i in index.tolist()]


@dataclass(frozen=True)
class Vocabulary:
    categories: tuple[str, ...]
    category_weights: npt.NDArray[np.float64]
    titles: Pool
    descriptions: Pool
    posters: Pool  # (poster_name, follower_count) pairs: a poster keeps its follower count
    tags: Pool
    first_names: tuple[str, ...]
    last_names: tuple[str, ...]
    countries: tuple[str, ...]
    ages: npt.NDArray[np.int64]  # distinct ages of distinct people in the sample
    age_weights: npt.NDArray[np.float64]


def _pool(categories: tuple[str, ...], pairs: list[tuple[str, object]]) -> Pool:
    by_category: dict[str, list[object]] = {c: [] for c in categories}
    for category, value in pairs:
        by_category[category].append(value)
    values: list[object] = []
    offsets, lengths = [], []
    for c in categories:
        offsets.append(len(values))
        lengths.append(len(by_category[c]))
        values.extend(by_category[c])
    return Pool(tuple(values), np.array(offsets, dtype=np.int64), np.array(lengths, dtype=np.int64))


@cache
def vocabulary() -> Vocabulary:
    """The generator's vocabulary, built from the bundled sample (cached)."""
    pins = load_sample_records("pin")
    users = load_sample_records("user")
    geos = load_sample_records("geo")
    category_counts = Counter(p["category"] for p in pins)
    categories = tuple(sorted(category_counts))
    weights = np.array([category_counts[c] for c in categories], dtype=np.float64)
    people = {(u["first_name"], u["last_name"], u["age"], u["date_joined"]) for u in users}
    age_counts = Counter(age for _, _, age, _ in people)
    ages = sorted(age_counts)
    age_weights = np.array([age_counts[a] for a in ages], dtype=np.float64)
    return Vocabulary(
        categories=categories,
        category_weights=weights / weights.sum(),
        titles=_pool(
            categories, [(p["category"], p["title"]) for p in pins if p["title"] not in (TITLE_PLACEHOLDER, "")]
        ),
        descriptions=_pool(
            categories,
            [
                (p["category"], p["description"])
                for p in pins
                if p["description"] not in (STORY_DESCRIPTION, NO_DESCRIPTION, UNTITLED)
            ],
        ),
        posters=_pool(
            categories,
            [
                (p["category"], (p["poster_name"], p["follower_count"]))
                for p in pins
                if p["poster_name"] != USER_INFO_ERROR
            ],
        ),
        tags=_pool(categories, [(p["category"], p["tag_list"]) for p in pins if p["tag_list"] != NO_TAGS]),
        first_names=tuple(sorted({u["first_name"] for u in users})),
        last_names=tuple(sorted({u["last_name"] for u in users})),
        countries=tuple(sorted({g["country"] for g in geos})),
        ages=np.array(ages, dtype=np.int64),
        age_weights=age_weights / age_weights.sum(),
    )

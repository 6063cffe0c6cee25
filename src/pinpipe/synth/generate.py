"""Seeded synthetic source tables: the three linked tables at any size, dirty like the real ones.

Callers: ``pinpipe source init --from generated`` and ``pinpipe source generate`` (via
:mod:`pinpipe.source.load`), the benchmarks, and tests that need data of a given size. The expected clean output
of whatever is generated (and sent) is computed independently by :mod:`pinpipe.synth.oracle`.

Same ``seed`` and ``rows`` → the same rows, on every machine: rows are made in blocks of :data:`BLOCK_ROWS`,
each from its own ``numpy`` generator seeded by ``(seed, block number)``, so the output does not depend on how a
caller chunks it (and ``rows=n`` is a prefix of ``rows=m > n``). Keys are ``ind = start .. start + rows - 1`` in
all three tables, as in the original (11,154 rows, keys 0..11153, offset = key).

The dirt, with the rates measured on the bundled sample (seed-notes §2.2; counts out of 2,475 pins):

- ``is_image_or_video``: image 2218, video 75, story 175, SQL NULL 7 (with ``image_src`` NULL, downloaded 0);
- story posts: all have description ``No description available Story format``; 16 fully broken (title
  ``No Title Data Available``, poster and follower_count ``User Info Error``, tag_list
  ``N,o, ,T,a,g,s, ,A,v,a,i,l,a,b,l,e``, ``Image src error.``), 31 with only ``Image src error.`` (2 of them
  with an empty title), the rest normal video thumbnails;
- ``No description available`` 40 and ``Untitled`` 1 in 2,300 non-story posts; the tags placeholder in 13 of
  2,459 posts that are not fully broken; ``downloaded`` 0 exactly when ``image_src`` is an error or NULL;
- ``save_location`` always ``Local save in /data/<category>``; 13 categories at their sample frequencies;
- titles, descriptions, (poster, follower_count) pairs and tag lists drawn per category from the real values
  (so follower_count shapes ``NNk``/``NM``/digits, ``…\\u00a0`` endings, commas, quotes, newlines, CJK and
  ``15.1k Likes`` come at the real rates);
- people: a user row and its geo row belong to a *person* (name, age, date_joined, home coordinates and
  country — one person, one place, as in the sample). 67 % of posts come from 2,000 recurring people with
  Zipf(0.7) popularity, the rest from one-off people: on the real table size (11,154) and the sample's
  subsample size this reproduces the sample's repeated users and coordinates (≈46 % of rows in a repeated
  group; the top person ≈2 % of rows);
- ages 20–60 (distribution of distinct people in the sample), ``date_joined`` 2015-10-21…2017-10-18,
  ``timestamp`` 2017-10-20…2022-10-18, coordinates rounded to 6 significant digits like the original.

Injected faults (what the real data lacks) and send lists with re-sends live in :mod:`pinpipe.synth.faults`.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cache
from typing import Any

import numpy as np
import numpy.typing as npt

from pinpipe.errors import ConfigError
from pinpipe.synth import vocabulary as v
from pinpipe.tables import KINDS, RAW_TABLES, Kind

GENERATOR_VERSION = 1
"""Bumped whenever the same (rows, seed) would produce different rows."""

BLOCK_ROWS = 4096
"""Rows per block: the unit of determinism and of streaming."""

# ------------------------------------------------------------------------- measured on the bundled sample
_MEDIA: tuple[tuple[str | None, int], ...] = (("image", 2218), ("video", 75), (v.STORY, 175), (None, 7))
_STORY_BROKEN = 16 / 175
_STORY_IMAGE_ERROR = 31 / 175
_EMPTY_TITLE_IN_IMAGE_ERROR = 2 / 31
_NO_DESCRIPTION = 40 / 2300
_UNTITLED = 1 / 2300
_NO_TAGS = 13 / 2459
_IMAGE_EXT: tuple[tuple[str, int], ...] = (("jpg", 1839), ("png", 360), ("webp", 15), ("gif", 4))
_RECURRING_SHARE = 0.67
_RECURRING_PEOPLE = 2000
_ZIPF = 0.7
TIMESTAMP_RANGE = (datetime(2017, 10, 20, 1, 44, 3), datetime(2022, 10, 18, 15, 43, 0))
DATE_JOINED_RANGE = (datetime(2015, 10, 21, 3, 17, 47), datetime(2017, 10, 18, 22, 28, 35))
LATITUDE_RANGE = (-89.98, 89.83)
LONGITUDE_RANGE = (-179.91, 179.57)


def _weights(pairs: tuple[tuple[Any, int], ...]) -> npt.NDArray[np.float64]:
    w = np.array([n for _, n in pairs], dtype=np.float64)
    normalised: npt.NDArray[np.float64] = w / w.sum()
    return normalised


def _sig6(x: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """Round to 6 significant digits (``float(f"{x:.6g}")``, vectorised and exact: scale is a power of ten)."""
    magnitude = np.floor(np.log10(np.abs(np.where(x == 0, 1.0, x))))
    scale = 10.0 ** (5 - magnitude)
    rounded: npt.NDArray[np.float64] = np.round(x * scale) / scale
    return rounded


def _seconds(bounds: tuple[datetime, datetime]) -> int:
    return int((bounds[1] - bounds[0]).total_seconds())


@dataclass(frozen=True)
class _People:
    """Attributes of people, one array per attribute (recurring people, or one-off people of a block)."""

    first: npt.NDArray[np.int64]
    last: npt.NDArray[np.int64]
    age: npt.NDArray[np.int64]
    joined: npt.NDArray[np.int64]  # seconds after DATE_JOINED_RANGE[0]
    latitude: npt.NDArray[np.float64]
    longitude: npt.NDArray[np.float64]
    country: npt.NDArray[np.int64]

    @staticmethod
    def draw(rng: np.random.Generator, n: int) -> _People:
        voc = v.vocabulary()
        return _People(
            first=rng.integers(0, len(voc.first_names), n),
            last=rng.integers(0, len(voc.last_names), n),
            age=rng.choice(voc.ages, n, p=voc.age_weights),
            joined=rng.integers(0, _seconds(DATE_JOINED_RANGE) + 1, n),
            latitude=_sig6(rng.uniform(*LATITUDE_RANGE, n)),
            longitude=_sig6(rng.uniform(*LONGITUDE_RANGE, n)),
            country=rng.integers(0, len(voc.countries), n),
        )

    def take(self, index: npt.NDArray[np.int64]) -> _People:
        return _People(*(getattr(self, f)[index] for f in self.__dataclass_fields__))

    @staticmethod
    def where(mask: npt.NDArray[np.bool_], a: _People, b: _People) -> _People:
        return _People(*(np.where(mask, getattr(a, f), getattr(b, f)) for f in _People.__dataclass_fields__))


@cache
def _recurring(seed: int) -> tuple[_People, npt.NDArray[np.float64]]:
    rng = np.random.default_rng([seed, 0x5EED, 1])
    popularity = 1.0 / np.arange(1, _RECURRING_PEOPLE + 1) ** _ZIPF
    return _People.draw(rng, _RECURRING_PEOPLE), popularity / popularity.sum()


@dataclass(frozen=True)
class Block:
    """One block of generated rows: for each kind, tuples in the table's column order (``SELECT *`` order),
    datetimes as naive :class:`datetime.datetime`, NULL as None — ready for the database loader."""

    rows: dict[Kind, list[tuple[Any, ...]]]

    def __len__(self) -> int:
        return len(self.rows["pin"])

    def records(self, kind: Kind) -> list[dict[str, Any]]:
        """The rows of ``kind`` as JSON records, as the original emulator sends them (``json.dumps(row,
        default=str)``: datetimes ``YYYY-MM-DD HH:MM:SS``)."""
        names = RAW_TABLES[kind].column_names
        out = []
        for row in self.rows[kind]:
            record = dict(zip(names, row, strict=True))
            for name, value in record.items():
                if isinstance(value, datetime):
                    record[name] = str(value)
            out.append(record)
        return out


def check_size(rows: int, seed: int) -> None:
    """Raise ConfigError unless ``rows`` > 0 and ``seed`` is a non-negative integer."""
    if isinstance(rows, bool) or not isinstance(rows, int) or rows <= 0:
        raise ConfigError(f"number of rows must be a positive integer, got {rows!r}", hint="e.g. --rows 1000")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ConfigError(f"seed must be a non-negative integer, got {seed!r}", hint="e.g. --seed 0")


def generate(rows: int, seed: int = 0, *, start: int = 0) -> Iterator[Block]:
    """Yield the three linked tables of ``rows`` rows each (keys ``start..start+rows-1``), block by block."""
    check_size(rows, seed)
    if start < 0:
        raise ConfigError(f"first key must be >= 0, got {start}")
    for number, first in enumerate(range(0, rows, BLOCK_ROWS)):
        block = _block(seed, number, start + first)
        if rows - first < BLOCK_ROWS:  # always draw whole blocks, so a smaller size is a prefix of a larger
            block = Block({kind: block.rows[kind][: rows - first] for kind in KINDS})
        yield block


def generate_records(rows: int, seed: int = 0, *, start: int = 0) -> dict[Kind, list[dict[str, Any]]]:
    """All generated rows as JSON records per kind, in key order (in memory: for tests and small sizes)."""
    out: dict[Kind, list[dict[str, Any]]] = {kind: [] for kind in KINDS}
    for block in generate(rows, seed, start=start):
        for kind in KINDS:
            out[kind].extend(block.records(kind))
    return out


def _block(seed: int, number: int, first_key: int) -> Block:
    rng = np.random.default_rng([seed, number, 2])
    keys = list(range(first_key, first_key + BLOCK_ROWS))
    pin = _pins(rng, keys)
    geo, user = _geo_and_user(rng, seed, keys)
    return Block({"pin": pin, "geo": geo, "user": user})


def _pins(rng: np.random.Generator, keys: list[int]) -> list[tuple[Any, ...]]:
    voc = v.vocabulary()
    n = len(keys)
    category = rng.choice(len(voc.categories), n, p=voc.category_weights)
    media = rng.choice(len(_MEDIA), n, p=_weights(_MEDIA))
    story = media == 2
    u = rng.random(n)
    broken = story & (u < _STORY_BROKEN)
    image_error = broken | (story & (u >= _STORY_BROKEN) & (u < _STORY_BROKEN + _STORY_IMAGE_ERROR))
    empty_title = image_error & ~broken & (rng.random(n) < _EMPTY_TITLE_IN_IMAGE_ERROR)
    u = rng.random(n)
    no_description = ~story & (u < _NO_DESCRIPTION)
    untitled = ~story & (u >= _NO_DESCRIPTION) & (u < _NO_DESCRIPTION + _UNTITLED)
    no_tags = broken | (rng.random(n) < _NO_TAGS)
    extension = rng.choice(len(_IMAGE_EXT), n, p=_weights(_IMAGE_EXT)).tolist()
    hexes = rng.bytes(32 * n).hex()

    titles = voc.titles.pick(category, rng.random(n))
    descriptions = voc.descriptions.pick(category, rng.random(n))
    posters = voc.posters.pick(category, rng.random(n))
    tags = voc.tags.pick(category, rng.random(n))
    for i in np.flatnonzero(empty_title).tolist():
        titles[i] = ""
    for i in np.flatnonzero(broken).tolist():
        titles[i] = v.TITLE_PLACEHOLDER
        posters[i] = (v.USER_INFO_ERROR, v.USER_INFO_ERROR)
    for i in np.flatnonzero(story).tolist():
        descriptions[i] = v.STORY_DESCRIPTION
    for i in np.flatnonzero(no_description).tolist():
        descriptions[i] = v.NO_DESCRIPTION
    for i in np.flatnonzero(untitled).tolist():
        descriptions[i] = v.UNTITLED
    for i in np.flatnonzero(no_tags).tolist():
        tags[i] = v.NO_TAGS

    media_names = [name for name, _ in _MEDIA]
    ext_names = [name for name, _ in _IMAGE_EXT]
    categories = voc.categories
    errors = image_error.tolist()
    rows = []
    for i, (key, m, c, err) in enumerate(zip(keys, media.tolist(), category.tolist(), errors, strict=True)):
        h = hexes[64 * i : 64 * i + 64]
        unique_id = f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{'89ab'[int(h[16], 16) & 3]}{h[17:20]}-{h[20:32]}"
        if m == 3:
            image_src = None
        elif err:
            image_src = v.IMAGE_SRC_ERROR
        elif m == 0:
            image_src = (
                f"https://i.pinimg.com/originals/{h[32:34]}/{h[34:36]}/{h[36:38]}/{h[32:]}.{ext_names[extension[i]]}"
            )
        else:
            image_src = f"https://i.pinimg.com/videos/thumbnails/originals/{h[32:34]}/{h[34:36]}/{h[36:38]}/{h[32:]}.0000001.jpg"
        poster, followers = posters[i]
        category_name = categories[c]
        rows.append(
            (
                key,
                unique_id,
                titles[i],
                descriptions[i],
                poster,
                followers,
                tags[i],
                media_names[m],
                image_src,
                0 if image_src is None or err else 1,
                f"{v.SAVE_PREFIX}/data/{category_name}",
                category_name,
            )
        )
    return rows


def _geo_and_user(
    rng: np.random.Generator, seed: int, keys: list[int]
) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    voc = v.vocabulary()
    n = len(keys)
    recurring, popularity = _recurring(seed)
    is_recurring = rng.random(n) < _RECURRING_SHARE
    chosen = recurring.take(rng.choice(len(popularity), n, p=popularity))
    people = _People.where(is_recurring, chosen, _People.draw(rng, n))
    posted = rng.integers(0, _seconds(TIMESTAMP_RANGE) + 1, n).tolist()
    ts0, joined0 = TIMESTAMP_RANGE[0], DATE_JOINED_RANGE[0]
    countries, firsts, lasts = voc.countries, voc.first_names, voc.last_names
    geo = [
        (key, ts0 + timedelta(seconds=s), lat, lon, countries[c])
        for key, s, lat, lon, c in zip(
            keys,
            posted,
            people.latitude.tolist(),
            people.longitude.tolist(),
            people.country.tolist(),
            strict=True,
        )
    ]
    user = [
        (key, firsts[f], lasts[la], age, joined0 + timedelta(seconds=j))
        for key, f, la, age, j in zip(
            keys, people.first.tolist(), people.last.tolist(), people.age.tolist(), people.joined.tolist(), strict=True
        )
    ]
    return geo, user

"""Measure the dirt in raw records: the share of rows holding each dirty value of seed-notes §2.2.

Callers: the generator's tests (the generated rates must match the real sample's) and anyone checking what a
source holds. Input records are raw rows (dicts as the sample or the generator give them); a rate is the count
divided by the number of rows of that kind.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

from pinpipe.synth import vocabulary as v

_CJK = re.compile(r"[\u3040-\u30ff\u4e00-\u9fff\uac00-\ud7af]")
_CYRILLIC = re.compile(r"[\u0400-\u04ff]")
_FOLLOWER_SHAPES = (("k", re.compile(r"[0-9]+k")), ("M", re.compile(r"[0-9]+M")), ("digits", re.compile(r"[0-9]+")))

Record = dict[str, Any]

PIN_CHECKS: dict[str, Callable[[Record], bool]] = {
    "description=story_placeholder": lambda r: r.get("description") == v.STORY_DESCRIPTION,
    "description=no_description": lambda r: r.get("description") == v.NO_DESCRIPTION,
    "description=untitled": lambda r: r.get("description") == v.UNTITLED,
    "description:nbsp_ellipsis": lambda r: (
        isinstance(r.get("description"), str) and r["description"].endswith("…\u00a0")
    ),
    "description:comma": lambda r: "," in (r.get("description") or ""),
    "description:quote": lambda r: '"' in (r.get("description") or ""),
    "description:likes": lambda r: bool(re.search(r"[0-9.]+k Likes", r.get("description") or "")),
    "text:cjk": lambda r: bool(_CJK.search((r.get("title") or "") + (r.get("description") or ""))),
    "text:cyrillic": lambda r: bool(_CYRILLIC.search((r.get("title") or "") + (r.get("description") or ""))),
    "title:non_ascii": lambda r: any(ord(ch) > 127 for ch in r.get("title") or ""),
    "title=placeholder": lambda r: r.get("title") == v.TITLE_PLACEHOLDER,
    "title=empty": lambda r: r.get("title") == "",
    "title:trailing_whitespace": lambda r: bool(r.get("title")) and r["title"] != r["title"].rstrip(),
    "poster_name=user_info_error": lambda r: r.get("poster_name") == v.USER_INFO_ERROR,
    "follower_count=user_info_error": lambda r: r.get("follower_count") == v.USER_INFO_ERROR,
    "tag_list=placeholder": lambda r: r.get("tag_list") == v.NO_TAGS,
    "image_src=error": lambda r: r.get("image_src") == v.IMAGE_SRC_ERROR,
    "image_src=null": lambda r: r.get("image_src") is None,
    "is_image_or_video=image": lambda r: r.get("is_image_or_video") == "image",
    "is_image_or_video=video": lambda r: r.get("is_image_or_video") == "video",
    "is_image_or_video=story": lambda r: r.get("is_image_or_video") == v.STORY,
    "is_image_or_video=null": lambda r: r.get("is_image_or_video") is None,
    "downloaded=0": lambda r: r.get("downloaded") == 0,
    "save_location:prefixed": lambda r: r.get("save_location") == f"{v.SAVE_PREFIX}/data/{r.get('category')}",
    "story:fully_broken": lambda r: r.get("is_image_or_video") == v.STORY and r.get("title") == v.TITLE_PLACEHOLDER,
    "story:image_error_only": lambda r: (
        r.get("is_image_or_video") == v.STORY
        and r.get("image_src") == v.IMAGE_SRC_ERROR
        and r.get("title") != v.TITLE_PLACEHOLDER
    ),
}


def follower_shape(value: Any) -> str:
    """``k``, ``M``, ``digits``, ``user_info_error``, ``null`` or ``other`` for a raw follower_count."""
    if value is None:
        return "null"
    if value == v.USER_INFO_ERROR:
        return "user_info_error"
    for name, pattern in _FOLLOWER_SHAPES:
        if isinstance(value, str) and pattern.fullmatch(value):
            return name
    return "other"


def pin_profile(pins: Sequence[Record]) -> dict[str, float]:
    """Share of pin rows for each check in :data:`PIN_CHECKS` and each ``follower_count`` shape."""
    n = len(pins)
    rates = {name: sum(1 for r in pins if check(r)) / n for name, check in PIN_CHECKS.items()}
    shapes = Counter(follower_shape(r.get("follower_count")) for r in pins)
    rates.update({f"follower_count:{shape}": count / n for shape, count in shapes.items()})
    return rates


def repeated_share(records: Sequence[Record], columns: Sequence[str]) -> float:
    """Share of rows whose values in ``columns`` occur in more than one row (repeated users/coordinates)."""
    counts = Counter(tuple(r.get(c) for c in columns) for r in records)
    return sum(n for n in counts.values() if n > 1) / len(records)


PERSON_COLUMNS = ("first_name", "last_name", "age", "date_joined")
PLACE_COLUMNS = ("latitude", "longitude", "country")

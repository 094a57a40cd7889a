"""The file from issue 8 that a quality gate must never pass: every row wrong in every way it can be.

Each of its rows has negative likes, an ``ftp://`` URL (off Instagram, without the post id), a date in
2099 and a status outside the vocabulary. The schema rejects every row (likes < 0, URL not http(s)).
"""

from __future__ import annotations

import csv
import io

#: Stamped 13 January 2026, so the 2099 dates are in its future.
GARBAGE_POSTS_NAME = "post_results_20260113_090000.csv"
GARBAGE_ROWS = 20


def garbage_posts_rows(rows: int = GARBAGE_ROWS) -> list[dict[str, str]]:
    return [
        {
            "search_term": "pizza",
            "post_id": f"G{i:03d}",
            "creator": f"bot_{i}",
            "posted_date": "2099-01-01",
            "likes": str(-5 - i),
            "comments": "1",
            "hashtags": "#pizza",
            "caption": "spam",
            "image_description": "nothing",
            "post_url": f"ftp://files.example.com/{i}",
            "status": "??",
        }
        for i in range(rows)
    ]


def garbage_posts_csv(rows: int = GARBAGE_ROWS) -> bytes:
    records = garbage_posts_rows(rows)
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(records[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(records)
    return out.getvalue().encode()

"""Write the sample CSV that exercises RFC 4180 quoting in downloads and exports.

Rows are deterministic (fixed seed) so the committed file only changes when this
script does. Values deliberately contain commas, double quotes, embedded newlines
and non-ASCII UTF-8, which is exactly what naive CSV handling gets wrong.

Usage: python scripts/make_sample_csv.py OUT.csv [--rows N]
"""

import argparse
import csv
import random
from collections.abc import Iterator
from datetime import date, timedelta

HEADER = ["id", "name", "city", "country", "amount", "joined_on", "comment"]

PEOPLE = [
    "Zoë Faure",
    "José Núñez",
    "François Dubois",
    "Øyvind Nesse",
    "Małgorzata Wójcik",
    "Ana Lúcia Gonçalves",
    "Jürgen Groß",
    "Siobhán O'Connor",
    "山田 太郎",
    "김민준",
    "Ελένη Παπαδοπούλου",
    "Дмитрий Иванов",
    "Smith, John",
    "Lee, Ji-woo",
    'Robert "Bobby" Tables',
    "Ada Lovelace",
    "Grace Hopper",
    "Alan Turing",
]

CITIES = [
    ("東京", "JP"),
    ("São Paulo", "BR"),
    ("Zürich", "CH"),
    ("Kraków", "PL"),
    ("Reykjavík", "IS"),
    ("Montréal", "CA"),
    ("Washington, D.C.", "US"),
    ("Paris", "FR"),
    ("Αθήνα", "GR"),
    ("Москва", "RU"),
    ("서울", "KR"),
    ("Dublin", "IE"),
]

COMMENTS = [
    "",
    "plain text",
    "contains, a comma",
    'says "hello"',
    'both, "comma" and quotes',
    "first line\nsecond line",
    "pasted from Windows\r\nwith a CRLF inside",
    'multi-line\nwith "quotes", commas\nand a third line',
    "naïve café déjà vu",
    "emoji 🎬🎧 and symbols € £ ¥",
    "trailing space ",
    " leading space",
    "tab\tseparated",
    "semicolon; not a delimiter here",
    "=1+1 (formula-looking)",
]


def rows(count: int, seed: int = 4180) -> Iterator[list[object]]:
    """Yield data rows; the first ones use every comment, so each edge case appears early."""
    rng = random.Random(seed)
    start = date(2020, 1, 1)
    for i in range(1, count + 1):
        city, country = rng.choice(CITIES)
        comment = COMMENTS[i - 1] if i <= len(COMMENTS) else rng.choice(COMMENTS)
        yield [
            i,
            rng.choice(PEOPLE),
            city,
            country,
            f"{rng.randint(100, 999_999) / 100:.2f}",
            (start + timedelta(days=rng.randrange(1500))).isoformat(),
            comment,
        ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out")
    parser.add_argument("--rows", type=int, default=200)
    args = parser.parse_args()
    # newline="" lets the csv module write RFC 4180 CRLF record endings itself.
    with open(args.out, "w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(HEADER)
        writer.writerows(rows(args.rows))


if __name__ == "__main__":
    main()

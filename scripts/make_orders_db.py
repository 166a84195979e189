"""Build a deterministic SQLite orders database for CSV-export tests and benchmarks.

The same seed and --orders always give the same rows, so tests can assert on
them and benchmarks are comparable. Order ids rise with ordered_at and every
order is placed after its customer signed up, as in a real shop. Notes are
mostly NULL and otherwise hold the values CSV exports get wrong: commas,
quotes, newlines, non-ASCII text and the empty string. The tables are STRICT (SQLite 3.37+):
every cell is of its column's type, which csv_export's arrow engine needs.

Usage: python scripts/make_orders_db.py OUT.sqlite [--orders N] [--seed S]
"""

import argparse
import os
import random
import sqlite3
from collections.abc import Iterator
from datetime import datetime, timezone
from itertools import islice

SCHEMA = """
CREATE TABLE customers (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    email TEXT NOT NULL UNIQUE,
    country TEXT NOT NULL,
    created_at TEXT NOT NULL
) STRICT;
CREATE TABLE orders (
    id INTEGER PRIMARY KEY,
    customer_id INTEGER NOT NULL REFERENCES customers(id),
    ordered_at TEXT NOT NULL,
    status TEXT NOT NULL
        CHECK (status IN ('pending', 'paid', 'shipped', 'delivered', 'cancelled', 'refunded')),
    total_cents INTEGER NOT NULL CHECK (total_cents >= 0),
    currency TEXT NOT NULL,
    note TEXT
) STRICT;
"""

# Orders span two years; customers start signing up a year before the first order.
FIRST_ORDER = int(datetime(2023, 1, 1, tzinfo=timezone.utc).timestamp())
LAST_ORDER = int(datetime(2025, 1, 1, tzinfo=timezone.utc).timestamp())
FIRST_SIGNUP = FIRST_ORDER - 365 * 86400

# (display name, ASCII form for the email address)
FIRST_NAMES = [
    ("Emma", "emma"),
    ("Liam", "liam"),
    ("Olivia", "olivia"),
    ("Noah", "noah"),
    ("Zoë", "zoe"),
    ("José", "jose"),
    ("François", "francois"),
    ("Øyvind", "oyvind"),
    ("Małgorzata", "malgorzata"),
    ("Siobhán", "siobhan"),
    ("Jürgen", "juergen"),
    ("Ana Lúcia", "analucia"),
    ("Priya", "priya"),
    ("Mohammed", "mohammed"),
    ("Wei", "wei"),
    ("Yuki", "yuki"),
    ("Chloé", "chloe"),
    ("Søren", "soren"),
]
LAST_NAMES = [
    ("Smith", "smith"),
    ("García", "garcia"),
    ("Müller", "muller"),
    ("O'Brien", "obrien"),
    ("Nguyễn", "nguyen"),
    ("Kowalski", "kowalski"),
    ("Dubois", "dubois"),
    ("Johansson", "johansson"),
    ("Rossi", "rossi"),
    ("Tanaka", "tanaka"),
    ("Núñez", "nunez"),
    ("van der Berg", "vanderberg"),
    ("Šimić", "simic"),
    ("Patel", "patel"),
]
# Some customers register under a native-script name only.
NATIVE_NAMES = [
    ("山田 太郎", "yamada"),
    ("김민준", "minjun"),
    ("Дмитрий Иванов", "ivanov"),
    ("Ελένη Παπαδοπούλου", "papadopoulou"),
    ("王芳", "wangfang"),
]
DOMAINS = ["example.com", "example.org", "example.net"]

# country -> (currency, weight); the shop prices in a handful of currencies.
COUNTRIES = {
    "US": ("USD", 30),
    "GB": ("GBP", 10),
    "DE": ("EUR", 10),
    "FR": ("EUR", 8),
    "ES": ("EUR", 4),
    "IT": ("EUR", 4),
    "NL": ("EUR", 3),
    "IE": ("EUR", 2),
    "CA": ("CAD", 6),
    "AU": ("AUD", 5),
    "CH": ("CHF", 2),
    "SE": ("SEK", 2),
    "JP": ("USD", 5),
    "KR": ("USD", 3),
    "BR": ("USD", 3),
    "PL": ("EUR", 2),
}

STATUSES = ["delivered", "shipped", "paid", "pending", "cancelled", "refunded"]
STATUS_WEIGHTS = [70, 8, 6, 3, 9, 4]
RECENT_STATUSES = ["pending", "paid", "shipped", "cancelled"]
RECENT_WEIGHTS = [30, 40, 25, 5]
RECENT_SECONDS = 5 * 86400

NOTES = [
    "Leave at the door",
    "Gift wrap, please",
    'Customer says: "ring twice"',
    "Deliver after 6pm, not before",
    "Line one\nLine two",
    'Address:\n12 "Old" Mill Rd, Apt 4\nSpringfield',
    "Zoë asked for a receipt in € — merci!",
    "東京都港区 配送",
    "Доставка до двери",
    "Fragile 📦 handle with care",
    "Tab\tseparated\tvalues",
    "=SUM(A1:A9)",
    "Back-ordered; ships in 2–3 weeks",
    "",
]
NOTE_PROBABILITY = 0.3
BATCH = 20_000


def iso(ts: int) -> str:
    """Format a UTC epoch second as ISO-8601 with a Z suffix (sorts lexically by time)."""
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


Customer = tuple[int, str, str, str, str]
Order = tuple[int, int, str, str, int, str, str | None]


def make_customers(rng: random.Random, count: int) -> tuple[list[Customer], list[int]]:
    """Return customer rows ordered by signup time, so ids rise with created_at."""
    signups = sorted(rng.randrange(FIRST_SIGNUP, LAST_ORDER) for _ in range(count))
    countries = list(COUNTRIES)
    weights = [w for _, w in COUNTRIES.values()]
    rows: list[Customer] = []
    for cid, ts in enumerate(signups, start=1):
        if rng.random() < 0.08:
            name, local = rng.choice(NATIVE_NAMES)
        else:
            first, last = rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES)
            name, local = f"{first[0]} {last[0]}", f"{first[1]}.{last[1]}"
        email = f"{local}{cid}@{rng.choice(DOMAINS)}"
        country = rng.choices(countries, weights)[0]
        rows.append((cid, name, email, country, iso(ts)))
    return rows, signups


def make_orders(
    rng: random.Random, count: int, customers: list[Customer], signups: list[int]
) -> Iterator[Order]:
    """Yield order rows in time order, each for a customer who had already signed up."""
    # One random instant per equal slice of the span: rising times that end on time.
    slot = (LAST_ORDER - FIRST_ORDER) / count
    # Customers who signed up before the first order can order from the start.
    known = sum(1 for ts in signups if ts <= FIRST_ORDER) or 1
    for oid in range(1, count + 1):
        ts = FIRST_ORDER + int((oid - 1 + rng.random()) * slot)
        while known < len(signups) and signups[known] <= ts:
            known += 1
        cust = customers[rng.randrange(known)]
        if LAST_ORDER - ts < RECENT_SECONDS:
            status = rng.choices(RECENT_STATUSES, RECENT_WEIGHTS)[0]
        else:
            status = rng.choices(STATUSES, STATUS_WEIGHTS)[0]
        total = max(199, int(rng.lognormvariate(8.3, 0.9)))
        note = rng.choice(NOTES) if rng.random() < NOTE_PROBABILITY else None
        yield (oid, cust[0], iso(ts), status, total, COUNTRIES[cust[3]][0], note)


def build(path: str, orders: int, seed: int = 20240101) -> None:
    """Create the database at path, replacing any existing file."""
    if os.path.exists(path):
        os.remove(path)
    rng = random.Random(seed)
    customers, signups = make_customers(rng, max(1, orders // 10))
    con = sqlite3.connect(path, isolation_level=None)
    try:
        # Nothing to protect while building: skip the journal and fsyncs.
        con.execute("PRAGMA journal_mode=OFF")
        con.execute("PRAGMA synchronous=OFF")
        con.execute("BEGIN")
        for statement in SCHEMA.split(";"):
            if statement.strip():
                con.execute(statement)
        con.executemany("INSERT INTO customers VALUES (?, ?, ?, ?, ?)", customers)
        rows = make_orders(rng, orders, customers, signups)
        while batch := list(islice(rows, BATCH)):
            con.executemany("INSERT INTO orders VALUES (?, ?, ?, ?, ?, ?, ?)", batch)
        # Indexing once after the bulk insert is much faster than maintaining it per row.
        con.execute("CREATE INDEX orders_ordered_at ON orders(ordered_at)")
        con.execute("CREATE INDEX orders_customer_id ON orders(customer_id)")
        con.execute("COMMIT")
    finally:
        con.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out")
    parser.add_argument("--orders", type=int, default=5000)
    parser.add_argument("--seed", type=int, default=20240101)
    args = parser.parse_args()
    if args.orders < 1:
        parser.error("--orders must be at least 1")
    build(args.out, args.orders, args.seed)


if __name__ == "__main__":
    main()

"""A synthetic e-commerce click log, as ``datasets/shop-synthetic.yaml`` declares it.

String keys (``c-000196``, ``SKU-16341``), ``view`` / ``add_to_cart`` / ``purchase``
events with ISO 8601 times, products with a name, category, brand and price, customers
with a country. The structure a model can learn is planted:

- each customer prefers two categories and a few brands within them;
- most views (``PERSONAL_SHARE``) are of products the customer prefers, the rest follow a
  Zipf-like global popularity, so popular products exist;
- a view of a preferred product turns into a cart and a purchase far more often, so the
  positives (add_to_cart, purchase) are mostly personal: a model that learns the
  preferences beats popularity.

The same arguments always give the same tables.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from recops.errors import DataError

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["PERSONAL_SHARE", "SHOP_END", "shop_tables"]

#: Share of views drawn from the customer's own preferences.
PERSONAL_SHARE = 0.75
#: The log ends the day before this date (UTC).
SHOP_END = "2024-06-01"

_COUNTRIES = ("DE", "FR", "GB", "ES", "IT", "NL", "PL", "SE")
_COUNTRY_P = (0.24, 0.18, 0.18, 0.12, 0.1, 0.08, 0.06, 0.04)
#: Categories and a few product nouns each, for the names.
_CATEGORIES: dict[str, tuple[str, ...]] = {
    "electronics": ("headphones", "charger", "speaker", "monitor", "keyboard"),
    "books": ("novel", "cookbook", "atlas", "biography", "comic"),
    "clothing": ("t-shirt", "jacket", "hoodie", "scarf", "dress"),
    "shoes": ("sneakers", "boots", "sandals", "loafers", "slippers"),
    "home": ("lamp", "cushion", "blanket", "vase", "mirror"),
    "kitchen": ("kettle", "pan", "knife set", "blender", "mug"),
    "toys": ("puzzle", "robot", "plush bear", "board game", "kite"),
    "sports": ("yoga mat", "dumbbell", "racket", "bottle", "helmet"),
    "beauty": ("shampoo", "lipstick", "perfume", "face cream", "brush"),
    "garden": ("hose", "planter", "shovel", "seed kit", "lantern"),
    "grocery": ("coffee", "tea", "chocolate", "olive oil", "honey"),
    "music": ("guitar strings", "vinyl", "ukulele", "metronome", "microphone"),
}
#: Typical price per category (the median of a log-normal).
_PRICE = (80.0, 15.0, 35.0, 70.0, 40.0, 30.0, 25.0, 30.0, 18.0, 22.0, 8.0, 45.0)
_ADJECTIVES = ("classic", "pro", "eco", "smart", "compact", "deluxe", "basic", "ultra")
_BRAND_HEADS = ("Nor", "Vel", "Zen", "Arc", "Lum", "Kor", "Tri", "Sol")
_BRAND_TAILS = ("dex", "ora", "ix", "on", "ica")


def shop_tables(
    *, rows: int, customers: int, products: int, days: int, seed: int
) -> dict[str, pd.DataFrame]:
    """The shop's events, customers and products, as the shop spec's files hold them.

    Args:
        rows: Number of views; carts and purchases come on top (about 15 % more rows).
        customers: Number of customers (``c-000001`` ...).
        products: Number of products (``SKU-`` and five or more digits).
        days: Days the events span, ending the day before ``SHOP_END``.
        seed: Generator seed; the same arguments always give the same tables.

    Returns:
        ``events`` (customer, sku, event, ts), ``users`` (the customers: customer,
        country) and ``items`` (the products: sku, name, category, brand, price) frames,
        values as the CSV files hold them.

    Raises:
        DataError: A count is below 1.
    """
    import numpy as np
    import pandas as pd

    if min(rows, customers, products, days) < 1:
        raise DataError("shop rows, customers, products and days must all be >= 1")
    rng = np.random.default_rng(seed)
    categories = list(_CATEGORIES)
    n_cat = len(categories)
    brands = [h + t for h in _BRAND_HEADS for t in _BRAND_TAILS]
    n_brand = len(brands)
    # Each brand sells in one or two home categories.
    brand_cat = rng.integers(0, n_cat, size=(n_brand, 2))
    brand_cat[:, 1] = np.where(rng.random(n_brand) < 0.5, brand_cat[:, 0], brand_cat[:, 1])

    cat_weight = 1.0 / np.arange(1, n_cat + 1) ** 0.5
    cat_p = cat_weight / cat_weight.sum()
    item_cat = rng.choice(n_cat, size=products, p=cat_p)
    item_brand = np.empty(products, dtype=np.int64)
    for c in range(n_cat):
        idx = np.flatnonzero(item_cat == c)
        sellers = np.flatnonzero((brand_cat == c).any(axis=1))
        sellers = sellers if sellers.size else np.arange(n_brand)
        item_brand[idx] = rng.choice(sellers, size=idx.size)
    no_brand = rng.random(products) < 0.04
    price = np.round(np.asarray(_PRICE)[item_cat] * rng.lognormal(0.0, 0.5, products), 2)
    popularity = 1.0 / np.arange(1, products + 1) ** 0.9
    popularity = popularity[rng.permutation(products)]

    width = max(5, len(str(products * 4)))
    numbers = rng.choice(np.arange(10 ** (width - 1), 10**width), size=products, replace=False)
    skus = np.asarray([f"SKU-{n}" for n in numbers], dtype=object)
    adjectives = rng.integers(0, len(_ADJECTIVES), products)
    nouns = rng.integers(0, 5, products)
    names = [
        f"{'Generic' if nb else brands[b]} {_ADJECTIVES[a]} {_CATEGORIES[categories[c]][n]} "
        f"{m}"
        for nb, b, a, c, n, m in zip(
            no_brand, item_brand, adjectives, item_cat, nouns,
            rng.integers(100, 1000, products), strict=True,
        )
    ]  # fmt: skip

    # Preferences: two categories (popular ones more often) and the brands that sell there.
    prefer = np.stack([rng.choice(n_cat, size=2, replace=False, p=cat_p)
                       for _ in range(customers)])  # fmt: skip
    activity = rng.lognormal(0.0, 0.7, customers)
    u = rng.choice(customers, size=rows, p=activity / activity.sum())
    personal = rng.random(rows) < PERSONAL_SHARE
    chosen = rng.choice(products, size=rows, p=popularity / popularity.sum())
    order = np.argsort(u, kind="stable")
    starts = np.searchsorted(u[order], np.arange(customers + 1))
    favoured = np.zeros(rows, dtype=bool)
    for c in range(customers):
        rows_c = order[starts[c] : starts[c + 1]]
        if not rows_c.size:
            continue
        in_cat = np.isin(item_cat, prefer[c])
        pool = np.flatnonzero(in_cat)
        if not pool.size:
            continue
        # Within the preferred categories, two or three favourite brands weigh triple.
        pool_brands = np.unique(item_brand[pool])
        liked = rng.choice(pool_brands, size=min(3, pool_brands.size), replace=False)
        weight = np.sqrt(popularity[pool]) * np.where(np.isin(item_brand[pool], liked), 3.0, 1.0)
        mine = rows_c[personal[rows_c]]
        chosen[mine] = rng.choice(pool, size=mine.size, p=weight / weight.sum())
        favoured[rows_c] = np.isin(chosen[rows_c], pool)

    end = pd.Timestamp(SHOP_END, tz="UTC")
    start = end - pd.Timedelta(days=days)
    # Views stop an hour before midnight so a cart and a purchase stay on the same day.
    seen_at = rng.integers(0, days * 86_400 - 3_600, size=rows)
    to_cart = rng.random(rows) < np.where(favoured, 0.22, 0.03)
    to_buy = to_cart & (rng.random(rows) < np.where(favoured, 0.55, 0.2))
    cart_at = seen_at + rng.integers(30, 1_200, size=rows)
    buy_at = cart_at + rng.integers(60, 2_400, size=rows)
    parts = [
        (np.ones(rows, dtype=bool), seen_at, "view"),
        (to_cart, cart_at, "add_to_cart"),
        (to_buy, buy_at, "purchase"),
    ]
    frames = [
        pd.DataFrame({"u": u[m], "i": chosen[m], "event": kind, "t": t[m]}) for m, t, kind in parts
    ]
    log = pd.concat(frames, ignore_index=True)
    log = log.drop_duplicates(["u", "i", "event", "t"]).sort_values(["t", "u", "i", "event"])
    stamps = start + pd.to_timedelta(log["t"].to_numpy(), unit="s")
    events = pd.DataFrame(
        {
            "customer": [f"c-{k + 1:06d}" for k in log["u"]],
            "sku": skus[log["i"].to_numpy()],
            "event": log["event"].to_numpy(),
            "ts": stamps.strftime("%Y-%m-%dT%H:%M:%SZ"),
        }
    )
    customers_df = pd.DataFrame(
        {
            "customer": [f"c-{k + 1:06d}" for k in range(customers)],
            "country": rng.choice(np.asarray(_COUNTRIES), size=customers, p=_COUNTRY_P),
        }
    )
    products_df = pd.DataFrame(
        {
            "sku": skus,
            "name": names,
            "category": np.asarray(categories, dtype=object)[item_cat],
            "brand": [
                None if nb else brands[b] for nb, b in zip(no_brand, item_brand, strict=True)
            ],
            "price": price,
        }
    )
    return {"events": events, "users": customers_df, "items": products_df}

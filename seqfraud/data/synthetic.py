"""Synthetic e-commerce clickstream whose fraud typologies each hide behind exactly one kind of signal.

Each fraud typology differs from legitimate traffic through a single channel (event order, inter-event
timing, device/country context, amounts, or event types that only exist late in the time range) and
comes with a population of legitimate hard negatives that shares the rest of its pattern. That lets a
per-typology metric say which signal a model actually learned. Labels are observed with noise in both
directions, as chargeback-based labels are; the true typology of every session is kept aside.

``seqfraud synthetic --sessions 20000 --seed 0 --out data/synthetic`` writes the three
Parquet files (events, labels, typologies).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import cast

import numpy as np
import numpy.typing as npt
import polars as pl

from seqfraud.schema import LABEL_NOISE, SYNTHETIC, TYPOLOGY

LEGIT = "legit"
HARD_NEGATIVE = "hard_negative"

ATO_ORDER = "ato_order"
BOT_TIMING = "bot_timing"
RISKY_CONTEXT = "risky_context"
AMOUNT_SPIKE = "amount_spike"
LATE_VARIANT = "late_variant"
TYPOLOGIES = (ATO_ORDER, BOT_TIMING, RISKY_CONTEXT, AMOUNT_SPIKE, LATE_VARIANT)

HN_ORDER = f"{HARD_NEGATIVE}_order"
HN_FAST = f"{HARD_NEGATIVE}_fast"
HN_CONTEXT = f"{HARD_NEGATIVE}_context"
HN_AMOUNT = f"{HARD_NEGATIVE}_amount"
HN_GIFT_CARD = f"{HARD_NEGATIVE}_gift_card"
HARD_NEGATIVES = (HN_ORDER, HN_FAST, HN_CONTEXT, HN_AMOUNT, HN_GIFT_CARD)
# The legitimate look-alikes of each fraud typology: telling the two apart needs exactly the typology's signal.
HARD_NEGATIVE_OF = {
    ATO_ORDER: HN_ORDER,
    BOT_TIMING: HN_FAST,
    RISKY_CONTEXT: HN_CONTEXT,
    AMOUNT_SPIKE: HN_AMOUNT,
    LATE_VARIANT: HN_GIFT_CARD,
}

KINDS = (LEGIT, *HARD_NEGATIVES, *TYPOLOGIES)
_K = {name: i for i, name in enumerate(KINDS)}

# Share of all sessions drawn for each kind; the rest is plain legit. Gift-card hard negatives are not
# drawn here: they are the late-period legit sessions that take up the new gift-card events.
KIND_RATES = {
    ATO_ORDER: 0.005,
    BOT_TIMING: 0.005,
    RISKY_CONTEXT: 0.004,
    AMOUNT_SPIKE: 0.004,
    LATE_VARIANT: 0.0025,
    HN_ORDER: 0.008,
    HN_FAST: 0.015,
    HN_CONTEXT: 0.008,
    HN_AMOUNT: 0.008,
}
GIFT_CARD_ADOPTION = 0.02  # of legit sessions starting in the late period
LATE_FRACTION = 0.28  # the trailing part of the time range where gift cards (and their fraud) exist
MISSED_CHARGEBACK = 0.07  # fraud observed as label 0
FALSE_CHARGEBACK = 0.0008  # legit observed as label 1 (friendly fraud, disputes)

EVENT_TYPES = (
    "login",
    "logout",
    "view_home",
    "search",
    "view_category",
    "view_item",
    "view_reviews",
    "add_to_wishlist",
    "add_to_cart",
    "view_cart",
    "remove_from_cart",
    "checkout_start",
    "apply_coupon",
    "payment_attempt",
    "payment_success",
    "payment_failed",
    "view_account",
    "change_email",
    "change_password",
    "change_phone",
    "change_address",
    "add_payment_method",
    "view_orders",
    "track_order",
    "contact_support",
    "add_gift_card",
    "redeem_gift_card",
)
NEW_EVENT_TYPES = ("add_gift_card", "redeem_gift_card")
PAYMENT_EVENTS = ("add_payment_method", "payment_attempt", "payment_success", "payment_failed")
AMOUNT_EVENTS = (
    "add_to_cart",
    "remove_from_cart",
    "view_cart",
    "checkout_start",
    "apply_coupon",
    "payment_attempt",
    "payment_success",
    "payment_failed",
    "add_gift_card",
    "redeem_gift_card",
)
_E = {name: i for i, name in enumerate(EVENT_TYPES)}

# Median seconds a human takes to reach each event from the previous one (reading, typing a form).
_DWELL_S = {
    "login": 8,
    "logout": 6,
    "view_home": 5,
    "search": 9,
    "view_category": 6,
    "view_item": 12,
    "view_reviews": 18,
    "add_to_wishlist": 5,
    "add_to_cart": 7,
    "view_cart": 5,
    "remove_from_cart": 5,
    "checkout_start": 9,
    "apply_coupon": 20,
    "payment_attempt": 30,
    "payment_success": 2.5,
    "payment_failed": 2.5,
    "view_account": 6,
    "change_email": 25,
    "change_password": 28,
    "change_phone": 25,
    "change_address": 45,
    "add_payment_method": 50,
    "view_orders": 6,
    "track_order": 8,
    "contact_support": 40,
    "add_gift_card": 15,
    "redeem_gift_card": 25,
}
DWELL_S = np.array([_DWELL_S[e] for e in EVENT_TYPES], dtype=np.float64)
# Payment outcomes arrive at processor latency, for humans and bots alike.
SYSTEM_EVENTS = np.isin(EVENT_TYPES, ("payment_success", "payment_failed"))

DEVICES = ("desktop", "mobile", "tablet", "smart_tv", "other", "emulator")
DEVICE_P = np.array([0.44, 0.45, 0.09, 0.008, 0.008, 0.004])
RISKY_DEVICE = "emulator"

# (country, traffic share, UTC offset in hours): an EU/US-centred marketplace with a long tail.
_COUNTRIES = (
    ("US", 0.36, -6),
    ("GB", 0.09, 0),
    ("DE", 0.08, 1),
    ("FR", 0.06, 1),
    ("CA", 0.045, -5),
    ("ES", 0.035, 1),
    ("IT", 0.035, 1),
    ("BR", 0.03, -3),
    ("IN", 0.03, 5.5),
    ("NL", 0.025, 1),
    ("AU", 0.025, 10),
    ("MX", 0.02, -6),
    ("PL", 0.015, 1),
    ("JP", 0.015, 9),
    ("SE", 0.012, 1),
    ("BE", 0.012, 1),
    ("IE", 0.01, 0),
    ("AT", 0.01, 1),
    ("CH", 0.01, 1),
    ("TR", 0.01, 3),
    ("PT", 0.008, 0),
    ("RO", 0.008, 2),
    ("PH", 0.008, 8),
    ("KR", 0.008, 9),
    ("ZA", 0.007, 2),
    ("SG", 0.006, 8),
    ("AE", 0.006, 4),
    ("AR", 0.006, -3),
    ("CO", 0.006, -5),
    ("NG", 0.005, 1),
)
COUNTRIES = tuple(c for c, _, _ in _COUNTRIES)
COUNTRY_P = np.array([p for _, p, _ in _COUNTRIES]) / sum(p for _, p, _ in _COUNTRIES)
_UTC_OFFSET_MS = np.array([h * 3_600_000 for _, _, h in _COUNTRIES], dtype=np.int64)
RISKY_COUNTRY = "BR"

PAYMENT_METHODS = ("card", "wallet", "bnpl", "bank_transfer")
_METHOD_P_DEFAULT = (0.55, 0.27, 0.10, 0.08)
# Local payment habits: iDEAL, PayPal, Klarna, Pix, UPI, BLIK.
_METHOD_P_LOCAL = {
    "NL": (0.20, 0.15, 0.10, 0.55),
    "DE": (0.30, 0.32, 0.18, 0.20),
    "SE": (0.35, 0.20, 0.35, 0.10),
    "BR": (0.55, 0.12, 0.03, 0.30),
    "IN": (0.35, 0.45, 0.05, 0.15),
    "PL": (0.30, 0.20, 0.10, 0.40),
    "JP": (0.70, 0.20, 0.02, 0.08),
}


def _cumulative(p: npt.ArrayLike) -> np.ndarray:
    """Row-wise CDF whose last column is exactly 1, so a uniform draw below 1 always lands in range."""
    p = np.asarray(p, dtype=np.float64)
    c = np.cumsum(p / p.sum(axis=-1, keepdims=True), axis=-1)
    c[..., -1] = 1.0
    return c


_METHOD_CUM = _cumulative([_METHOD_P_LOCAL.get(c, _METHOD_P_DEFAULT) for c in COUNTRIES])

# Browsing and cart behaviour as a Markov chain; browse-only segments never touch the cart.
_SHOP_STATES = (
    "view_home",
    "search",
    "view_category",
    "view_item",
    "view_reviews",
    "add_to_wishlist",
    "add_to_cart",
    "view_cart",
    "remove_from_cart",
)
_SHOP_CODES = np.array([_E[s] for s in _SHOP_STATES], dtype=np.int8)
_SHOP_START = np.array([0.45, 0.20, 0.10, 0.25, 0, 0, 0, 0, 0])
_SHOP_TRANS = np.array(
    [
        # home  search  categ  item  reviews wish  add   cart  remove
        [0.00, 0.35, 0.35, 0.25, 0.00, 0.00, 0.00, 0.05, 0.00],  # view_home
        [0.03, 0.15, 0.10, 0.70, 0.00, 0.00, 0.00, 0.02, 0.00],  # search
        [0.08, 0.15, 0.15, 0.60, 0.00, 0.00, 0.00, 0.02, 0.00],  # view_category
        [0.04, 0.16, 0.12, 0.30, 0.12, 0.04, 0.17, 0.05, 0.00],  # view_item
        [0.00, 0.15, 0.10, 0.55, 0.00, 0.02, 0.18, 0.00, 0.00],  # view_reviews
        [0.05, 0.30, 0.25, 0.40, 0.00, 0.00, 0.00, 0.00, 0.00],  # add_to_wishlist
        [0.02, 0.20, 0.13, 0.30, 0.00, 0.00, 0.00, 0.35, 0.00],  # add_to_cart
        [0.10, 0.25, 0.10, 0.25, 0.00, 0.00, 0.00, 0.00, 0.30],  # view_cart
        [0.05, 0.25, 0.10, 0.25, 0.00, 0.00, 0.00, 0.35, 0.00],  # remove_from_cart
    ]
)
_SHOP_CUM = _cumulative(_SHOP_TRANS)
_BROWSE_TRANS = _SHOP_TRANS.copy()
_BROWSE_TRANS[:, 6:] = 0.0
_BROWSE_CUM = _cumulative(_BROWSE_TRANS)
_START_CUM = _cumulative(_SHOP_START)
_ADD_STATE = _SHOP_STATES.index("add_to_cart")

Segment = Callable[[np.random.Generator, int], np.ndarray]


def _lengths(rng: np.random.Generator, m: int, median: float, sigma: float, lo: int, hi: int) -> np.ndarray:
    return np.clip(np.rint(median * np.exp(sigma * rng.standard_normal(m))), lo, hi).astype(np.int64)


def _markov(rng: np.random.Generator, lengths: np.ndarray, trans_cum: np.ndarray) -> np.ndarray:
    """Chains of the given lengths, padded with -1; one vectorized step per position, longest first."""
    m = lengths.size
    order = np.argsort(-lengths, kind="stable")
    desc = -lengths[order]
    out = np.full((m, int(lengths.max())), -1, dtype=np.int8)
    state = (rng.random(m)[:, None] > _START_CUM).sum(axis=1)
    out[:, 0] = state
    for t in range(1, out.shape[1]):
        active = int(np.searchsorted(desc, -t, side="left"))  # chains longer than t
        state = (rng.random(active)[:, None] > trans_cum[state[:active]]).sum(axis=1)
        out[:active, t] = state
    result = np.empty_like(out)
    result[order] = out
    return result


def _chain(trans_cum: np.ndarray, median: float, sigma: float, lo: int, hi: int, buys: bool) -> Segment:
    """A browsing segment; a segment that leads to checkout always puts something in the cart."""

    def gen(rng: np.random.Generator, m: int) -> np.ndarray:
        lengths = _lengths(rng, m, median, sigma, lo, hi)
        states = _markov(rng, lengths, trans_cum)
        if buys:
            rows = np.flatnonzero(~(states == _ADD_STATE).any(axis=1))
            states[rows, lengths[rows] - 1] = _ADD_STATE
        return np.where(states >= 0, _SHOP_CODES[states], -1).astype(np.int8)

    return gen


def _fixed(name: str) -> Segment:
    return lambda rng, m: np.full((m, 1), _E[name], dtype=np.int8)


def _optional(rng: np.random.Generator, m: int, p: float, name: str) -> np.ndarray:
    return np.where(rng.random(m) < p, _E[name], -1)


def _checkout(rng: np.random.Generator, m: int) -> np.ndarray:
    """Checkout with declines and retries; a few walk away at the payment form."""
    out = np.full((m, 9), -1, dtype=np.int8)
    out[:, 0] = _optional(rng, m, 0.6, "view_cart")
    out[:, 1] = _E["checkout_start"]
    out[:, 2] = _optional(rng, m, 0.12, "apply_coupon")
    pending = rng.random(m) >= 0.06
    for k, (retry, success) in enumerate(((1.0, 0.92), (0.6, 0.75), (0.5, 0.7))):
        pending &= rng.random(m) < retry
        ok = rng.random(m) < success
        out[:, 3 + 2 * k] = np.where(pending, _E["payment_attempt"], -1)
        out[:, 4 + 2 * k] = np.where(pending, np.where(ok, _E["payment_success"], _E["payment_failed"]), -1)
        pending &= ~ok
    return out


_ACCOUNT_CHANGES = ("change_email", "change_password", "change_phone", "change_address", "add_payment_method")
_ACCOUNT_CODES = np.array([_E[n] for n in _ACCOUNT_CHANGES], dtype=np.int8)


def _account(probs: Sequence[float]) -> Segment:
    """Account settings: view_account, then the chosen changes in random order (at least one)."""
    p = np.asarray(probs)

    def gen(rng: np.random.Generator, m: int) -> np.ndarray:
        chosen = rng.random((m, p.size)) < p
        chosen[~chosen.any(axis=1), _ACCOUNT_CHANGES.index("change_address")] = True
        order = np.argsort(np.where(chosen, rng.random((m, p.size)), 2.0), axis=1)
        changes = np.where(np.take_along_axis(chosen, order, axis=1), _ACCOUNT_CODES[order], -1)
        return np.hstack([np.full((m, 1), _E["view_account"]), changes]).astype(np.int8)

    return gen


def _orders(rng: np.random.Generator, m: int) -> np.ndarray:
    return np.stack(
        [
            np.full(m, _E["view_orders"]),
            _optional(rng, m, 0.5, "track_order"),
            _optional(rng, m, 0.08, "contact_support"),
        ],
        axis=1,
    ).astype(np.int8)


def _gift_cards(max_cards: int, p_more: float, min_cards: int = 1) -> Segment:
    def gen(rng: np.random.Generator, m: int) -> np.ndarray:
        n_cards = np.minimum(min_cards + rng.geometric(1 - p_more, m) - 1, max_cards)
        return np.where(np.arange(max_cards) < n_cards[:, None], _E["add_gift_card"], -1).astype(np.int8)

    return gen


SEGMENTS: dict[str, Segment] = {
    "login": _fixed("login"),
    "logout": _fixed("logout"),
    "redeem": _fixed("redeem_gift_card"),
    "bounce": _chain(_BROWSE_CUM, 3, 0.25, 2, 4, buys=False),
    "browse": _chain(_BROWSE_CUM, 17, 0.85, 2, 140, buys=False),
    "browse_short": _chain(_BROWSE_CUM, 2, 0.4, 1, 4, buys=False),
    "shop": _chain(_SHOP_CUM, 24, 0.8, 3, 140, buys=True),
    "shop_short": _chain(_SHOP_CUM, 4, 0.35, 2, 7, buys=True),
    "checkout": _checkout,
    "orders": _orders,
    "profile": _account((0.15, 0.25, 0.10, 0.45, 0.35)),
    # The takeover set: contact details, credentials and a payment instrument.
    "secure_account": _account((1.0, 1.0, 0.35, 0.2, 1.0)),
    "gift_card": _gift_cards(3, 0.15),
    "gift_card_bulk": _gift_cards(6, 0.6, min_cards=2),
}
_SEGMENT_NAMES = tuple(SEGMENTS)

# User intents as ordered (segment, probability of being present) slots.
TEMPLATES: dict[str, tuple[tuple[str, float], ...]] = {
    "browse": (("login", 0.35), ("browse", 1), ("logout", 0.05)),
    "bounce": (("bounce", 1),),
    "abandon_cart": (("login", 0.55), ("shop", 1), ("logout", 0.05)),
    "buy": (("login", 0.85), ("shop", 1), ("checkout", 1), ("orders", 0.08), ("logout", 0.2)),
    "check_orders": (("login", 1), ("orders", 1), ("browse", 0.35), ("logout", 0.25)),
    "update_profile": (("login", 1), ("profile", 1), ("browse", 0.3), ("logout", 0.35)),
    "profile_then_buy": (("login", 1), ("profile", 1), ("shop", 1), ("checkout", 1), ("logout", 0.2)),
    "buy_then_profile": (("login", 1), ("shop", 1), ("checkout", 1), ("profile", 1), ("logout", 0.3)),
    # The same segments in two orders: a quick purchase then securing the account, versus a takeover.
    "buy_then_secure_account": (
        ("login", 1),
        ("shop_short", 1),
        ("checkout", 1),
        ("secure_account", 1),
        ("logout", 0.3),
    ),
    "takeover_buy": (
        ("login", 1),
        ("secure_account", 1),
        ("shop_short", 1),
        ("checkout", 1),
        ("logout", 0.3),
    ),
    "buy_gift_card": (("login", 0.85), ("shop", 1), ("gift_card", 1), ("checkout", 1), ("logout", 0.2)),
    "redeem_and_shop": (("login", 1), ("redeem", 1), ("shop", 1), ("checkout", 0.7), ("logout", 0.2)),
    "gift_card_cashout": (
        ("login", 0.9),
        ("browse_short", 1),
        ("gift_card_bulk", 1),
        ("checkout", 1),
        ("redeem", 0.5),
        ("logout", 0.15),
    ),
}
_INTENTS = tuple(TEMPLATES)
_I = {name: i for i, name in enumerate(_INTENTS)}
LEGIT_INTENT_MIX = {
    "browse": 0.29,
    "bounce": 0.08,
    "abandon_cart": 0.14,
    "buy": 0.28,
    "check_orders": 0.10,
    "update_profile": 0.05,
    "profile_then_buy": 0.03,
    "buy_then_profile": 0.03,
}
_FIXED_INTENT = {
    ATO_ORDER: "takeover_buy",
    HN_ORDER: "buy_then_secure_account",
    AMOUNT_SPIKE: "buy",
    HN_AMOUNT: "buy",
    LATE_VARIANT: "gift_card_cashout",
}

# Item price scale (median, log-sigma) per kind: everyday goods, big-ticket buyers, fraud cash-outs.
_PRICE = {LEGIT: (30.0, 0.95), HN_AMOUNT: (300.0, 0.7), AMOUNT_SPIKE: (750.0, 0.5)}
_GIFT_CARD_VALUES = np.array([25.0, 50.0, 100.0, 150.0, 200.0, 250.0, 500.0])
_GIFT_CARD_P_LEGIT = np.array([0.3, 0.35, 0.25, 0.1, 0, 0, 0])
_GIFT_CARD_P_FRAUD = np.array([0, 0, 0.2, 0, 0.3, 0.2, 0.3])

DAY_MS = 86_400_000
HOUR_MS = 3_600_000
# Local-time traffic by hour (evening peak) and by weekday (Monday first; Sunday peak).
_HOUR_W = np.array(
    [
        2.5,
        1.5,
        1.0,
        0.7,
        0.6,
        0.8,
        1.5,
        2.5,
        3.5,
        4.5,
        5.0,
        5.2,
        5.5,
        5.3,
        5.0,
        5.0,
        5.2,
        5.5,
        6.0,
        6.8,
        7.2,
        7.0,
        5.8,
        4.0,
    ]
)
_WEEKDAY_W = np.array([1.02, 0.97, 0.97, 0.98, 0.95, 1.02, 1.12])
_GROWTH = 0.2  # traffic grows by this fraction over the range
_TIE_RATE = 0.015  # events logged in the same millisecond as the previous one
_MAX_GAP_S = 29.5 * 60  # 30 minutes of inactivity would have closed the session


@dataclass
class SyntheticData:
    events: pl.DataFrame
    labels: pl.DataFrame
    typologies: pl.DataFrame


def _start_ms(start: str) -> int:
    t = datetime.fromisoformat(start)
    if t.tzinfo is None:
        t = t.replace(tzinfo=timezone.utc)
    return int(t.timestamp() * 1000)


def _late_offset_ms(days: int) -> int:
    return int((1 - LATE_FRACTION) * days * DAY_MS)


def late_period_start(start: str = "2026-01-01", days: int = 180) -> datetime:
    """First instant at which the gift-card events (and the late_variant typology) may appear."""
    return datetime.fromtimestamp((_start_ms(start) + _late_offset_ms(days)) / 1000, tz=timezone.utc)


def _draw(rng: np.random.Generator, p: np.ndarray, size: int) -> np.ndarray:
    return rng.choice(len(p), size=size, p=p / p.sum())


def _draw_rows(rng: np.random.Generator, cum: np.ndarray) -> np.ndarray:
    """One category per row, each row with its own CDF."""
    return (rng.random(len(cum))[:, None] > cum).sum(axis=1)


def _kinds(rng: np.random.Generator, n: int) -> np.ndarray:
    p = np.zeros(len(KINDS))
    for name, rate in KIND_RATES.items():
        p[_K[name]] = rate
    p[_K[LEGIT]] = 1 - p.sum()
    return _draw(rng, p, n)


def _context(rng: np.random.Generator, kind: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Device and country; risky_context is the emulator-in-BR pair, each half of it is common alone."""
    n = kind.size
    emulator, risky_country = DEVICES.index(RISKY_DEVICE), COUNTRIES.index(RISKY_COUNTRY)
    device, country = _draw(rng, DEVICE_P, n), _draw(rng, COUNTRY_P, n)
    other_device = _draw(rng, np.where(np.arange(len(DEVICES)) == emulator, 0.0, DEVICE_P), n)
    other_country = _draw(rng, np.where(np.arange(len(COUNTRIES)) == risky_country, 0.0, COUNTRY_P), n)
    risky = kind == _K[RISKY_CONTEXT]
    hn = kind == _K[HN_CONTEXT]
    hn_device_side = hn & (rng.random(n) < 0.5)  # emulator users elsewhere
    hn_country_side = hn & ~hn_device_side  # risky-country users on ordinary devices
    device = np.where(risky | hn_device_side, emulator, np.where(hn_country_side, other_device, device))
    country = np.where(
        risky | hn_country_side, risky_country, np.where(hn_device_side, other_country, country)
    )
    return device, country


def _start_times(
    rng: np.random.Generator, kind: np.ndarray, country: np.ndarray, t0: int, days: int
) -> np.ndarray:
    """Session starts with growth, weekly and local diurnal seasonality; late_variant only late."""
    n = kind.size
    span = days * DAY_MS
    late0 = _late_offset_ms(days)
    d = np.arange(days)
    weekday0 = datetime.fromtimestamp(t0 / 1000, tz=timezone.utc).weekday()
    w = _WEEKDAY_W[(weekday0 + d) % 7] * (1 + _GROWTH * d / days)
    day = _draw(rng, w, n)
    local = day * DAY_MS + _draw(rng, _HOUR_W, n) * HOUR_MS + rng.integers(0, HOUR_MS, n)
    t = local - _UTC_OFFSET_MS[country]
    late = kind == _K[LATE_VARIANT]
    t = np.where(late, late0 + (t - late0) % (span - late0), t % span)
    return t0 + t


def _intents(rng: np.random.Generator, kind: np.ndarray) -> np.ndarray:
    mix = np.zeros(len(_INTENTS))
    for name, p in LEGIT_INTENT_MIX.items():
        mix[_I[name]] = p
    intent = _draw(rng, mix, kind.size)
    for k, name in _FIXED_INTENT.items():
        intent[kind == _K[k]] = _I[name]
    gift = kind == _K[HN_GIFT_CARD]
    intent[gift] = np.where(rng.random(int(gift.sum())) < 0.7, _I["buy_gift_card"], _I["redeem_and_shop"])
    return intent


def _sequences(rng: np.random.Generator, intent: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Event codes of all sessions, contiguous per session, built segment kind by segment kind."""
    seg_sess, seg_slot, seg_kind = [], [], []
    for i, name in enumerate(_INTENTS):
        sess = np.flatnonzero(intent == i)
        for slot, (seg, p) in enumerate(TEMPLATES[name]):
            keep = sess if p >= 1 else sess[rng.random(sess.size) < p]
            seg_sess.append(keep)
            seg_slot.append(np.full(keep.size, slot))
            seg_kind.append(np.full(keep.size, _SEGMENT_NAMES.index(seg)))
    sess, slots, kind = (np.concatenate(a) for a in (seg_sess, seg_slot, seg_kind))
    order = np.lexsort((slots, sess))
    sess, kind = sess[order], kind[order]

    seg_len = np.zeros(sess.size, dtype=np.int64)
    blocks = []
    for k, name in enumerate(_SEGMENT_NAMES):
        rows = np.flatnonzero(kind == k)
        if rows.size:
            block = SEGMENTS[name](rng, rows.size)
            valid = block >= 0
            seg_len[rows] = valid.sum(axis=1)
            blocks.append((rows, block[valid]))
    seg_start = np.cumsum(seg_len) - seg_len
    codes = np.empty(int(seg_len.sum()), dtype=np.int8)
    for rows, flat in blocks:
        lens = seg_len[rows]
        within = np.arange(flat.size) - np.repeat(np.cumsum(lens) - lens, lens)
        codes[np.repeat(seg_start[rows], lens) + within] = flat
    return np.repeat(sess, seg_len), codes


def _cumsum_within(x: np.ndarray, first: np.ndarray) -> np.ndarray:
    """Running sum restarting at each session; ``first`` is each event's session's first index."""
    cs = np.cumsum(x)
    return cs - cs[first] + x[first]


def _ffill_within(mask: np.ndarray, values: np.ndarray, first: np.ndarray) -> np.ndarray:
    """Latest value at a masked event so far in the session (NaN before the first one)."""
    idx = np.maximum.accumulate(np.where(mask, np.arange(mask.size), -1))
    return np.where(idx >= first, values[np.maximum(idx, 0)], np.nan)


def _gaps_ms(
    rng: np.random.Generator, codes: np.ndarray, ev_sess: np.ndarray, kind: np.ndarray
) -> np.ndarray:
    """Time from the previous event: lognormal human dwell with pauses, or a bot's steady tick."""
    n, n_ev = kind.size, codes.size
    speed = np.where(
        kind == _K[HN_FAST],
        np.exp(np.log(0.2) + 0.3 * rng.standard_normal(n)),
        np.exp(0.35 * rng.standard_normal(n)),
    )
    tick = np.where(
        kind == _K[BOT_TIMING], np.clip(1.2 * np.exp(0.5 * rng.standard_normal(n)), 0.25, 6.0), np.nan
    )
    human = speed[ev_sess] * DWELL_S[codes] * np.exp(0.85 * rng.standard_normal(n_ev))
    human += np.where(rng.random(n_ev) < 0.02, 240.0 * np.exp(0.9 * rng.standard_normal(n_ev)), 0.0)
    tick_ev = tick[ev_sess]
    gap = np.where(np.isnan(tick_ev), human, tick_ev * (1 + 0.06 * rng.standard_normal(n_ev)))
    gap = np.where(SYSTEM_EVENTS[codes], 2.5 * np.exp(0.5 * rng.standard_normal(n_ev)), gap)
    gap_ms = np.rint(np.minimum(gap, _MAX_GAP_S) * 1000).astype(np.int64)
    gap_ms[rng.random(n_ev) < _TIE_RATE] = 0
    return gap_ms


def _prices(rng: np.random.Generator, kind: np.ndarray) -> np.ndarray:
    """Shelf prices, mostly ending in .99."""
    med, sig = (np.full(kind.size, _PRICE[LEGIT][i]) for i in range(2))
    for k in (HN_AMOUNT, AMOUNT_SPIKE):
        med[kind == _K[k]], sig[kind == _K[k]] = _PRICE[k]
    raw = med * np.exp(sig * rng.standard_normal(kind.size))
    price = np.where(rng.random(kind.size) < 0.6, np.floor(raw) + 0.99, np.round(raw, 2))
    return np.maximum(price, 0.99)


def _amounts(
    rng: np.random.Generator, codes: np.ndarray, ev_sess: np.ndarray, first: np.ndarray, kind: np.ndarray
) -> np.ndarray:
    """Item prices on cart events, the running cart value on views, the charged total on payments."""
    n, n_ev = kind.size, codes.size
    price = _prices(rng, kind[ev_sess])
    bulk = kind[ev_sess] == _K[LATE_VARIANT]
    card = np.where(bulk, _draw(rng, _GIFT_CARD_P_FRAUD, n_ev), _draw(rng, _GIFT_CARD_P_LEGIT, n_ev))
    card_value = _GIFT_CARD_VALUES[card]
    is_add, is_card = codes == _E["add_to_cart"], codes == _E["add_gift_card"]
    is_remove = codes == _E["remove_from_cart"]
    added = np.where(is_add, price, np.where(is_card, card_value, 0.0))
    last_added = _ffill_within(is_add | is_card, added, first)
    # A removal before any addition takes out an item left in the cart on an earlier visit.
    orphan = is_remove & np.isnan(last_added)
    removed = np.where(is_remove, np.where(orphan, price, last_added), 0.0)
    left_over = np.where(rng.random(n) < 0.15, _prices(rng, kind), 0.0)
    carry = left_over + np.bincount(ev_sess, weights=np.where(orphan, removed, 0.0), minlength=n)
    subtotal = np.maximum(carry[ev_sess] + _cumsum_within(added - removed, first), 0.0)
    is_coupon = codes == _E["apply_coupon"]
    discount_here = np.round(subtotal * rng.uniform(0.1, 0.2, n_ev), 2)
    discount = np.nan_to_num(_ffill_within(is_coupon, discount_here, first))
    charged = np.maximum(subtotal - discount, 0.0) + np.where(subtotal < 35, 4.99, 0.0)

    amount = np.full(n_ev, np.nan)
    amount[is_add] = price[is_add]
    amount[is_remove] = removed[is_remove]
    amount[is_coupon] = discount_here[is_coupon]
    cards = is_card | (codes == _E["redeem_gift_card"])
    amount[cards] = card_value[cards]
    cart_views = np.isin(codes, [_E["view_cart"], _E["checkout_start"]])
    amount[cart_views] = subtotal[cart_views]
    payments = np.isin(codes, [_E[e] for e in ("payment_attempt", "payment_success", "payment_failed")])
    amount[payments] = charged[payments]
    return np.round(amount, 2)


def _event_countries(
    rng: np.random.Generator, country: np.ndarray, ev_sess: np.ndarray, first: np.ndarray, lens: np.ndarray
) -> np.ndarray:
    """Session country, except a few sessions that hop country mid-way (travel, VPN, roaming)."""
    n = country.size
    hop = (rng.random(n) < 0.004) & (lens > 1)
    at = 1 + (rng.random(n) * (lens - 1)).astype(np.int64)
    new = _draw(rng, COUNTRY_P, n)
    pos = np.arange(ev_sess.size) - first
    return np.where(hop[ev_sess] & (pos >= at[ev_sess]), new[ev_sess], country[ev_sess])


def _strings(names: Sequence[str], codes: np.ndarray) -> pl.Series:
    """String column from codes; -1 becomes null."""
    lookup = pl.Series(list(names) + [None], dtype=pl.String)
    return lookup.gather(np.where(codes < 0, len(names), codes).astype(np.uint32))


def generate(n_sessions: int, seed: int = 0, start: str = "2026-01-01", days: int = 180) -> SyntheticData:
    """Generate ``n_sessions`` sessions starting over ``days`` days from ``start``; same seed, same frames."""
    if n_sessions < 1 or days < 1:
        raise ValueError(f"need n_sessions >= 1 and days >= 1, got {n_sessions} and {days}")
    rng = np.random.default_rng(seed)
    t0 = _start_ms(start)
    n = n_sessions

    kind = _kinds(rng, n)
    device, country = _context(rng, kind)
    start_ms = _start_times(rng, kind, country, t0, days)
    # Session ids follow start time, like an auto-increment id would.
    order = np.argsort(start_ms, kind="stable")
    kind, device, country, start_ms = kind[order], device[order], country[order], start_ms[order]
    late_legit = (kind == _K[LEGIT]) & (start_ms >= t0 + _late_offset_ms(days))
    kind[late_legit & (rng.random(n) < GIFT_CARD_ADOPTION)] = _K[HN_GIFT_CARD]

    ev_sess, codes = _sequences(rng, _intents(rng, kind))
    lens = np.bincount(ev_sess, minlength=n)
    first = np.repeat(np.cumsum(lens) - lens, lens)
    gaps = _gaps_ms(rng, codes, ev_sess, kind)
    gaps[first == np.arange(codes.size)] = 0
    ts = start_ms[ev_sess] + _cumsum_within(gaps, first)
    amount = _amounts(rng, codes, ev_sess, first, kind)
    ev_country = _event_countries(rng, country, ev_sess, first, lens)
    method = _draw_rows(rng, _METHOD_CUM[country])
    new_method = _draw_rows(rng, _METHOD_CUM[ev_country])
    is_payment = np.isin(codes, [_E[e] for e in PAYMENT_EVENTS])
    pay = np.where(codes == _E["add_payment_method"], new_method, method[ev_sess])
    pay = np.where(is_payment, pay, -1)

    fraud = np.isin(kind, [_K[t] for t in TYPOLOGIES])
    u = rng.random(n)
    noise = np.where(fraud, u < MISSED_CHARGEBACK, u < FALSE_CHARGEBACK)

    width = max(7, len(str(n - 1)))
    sid = pl.select(
        pl.lit("s") + pl.int_range(n, dtype=pl.Int64).cast(pl.String).str.zfill(width)
    ).to_series()
    s = SYNTHETIC
    shuffle = rng.permutation(codes.size)  # logs arrive unordered
    ev_sess, codes, ts, amount, ev_country, pay = (
        a[shuffle] for a in (ev_sess, codes, ts, amount, ev_country, pay)
    )
    device_col, country_col, method_col = s.categorical
    events = pl.DataFrame(
        [
            sid.gather(ev_sess.astype(np.uint32)).alias(s.session_id),
            pl.Series(s.timestamp, ts).cast(pl.Datetime("ms", "UTC")),
            _strings(EVENT_TYPES, codes).alias(s.event_type),
            _strings(DEVICES, device[ev_sess]).alias(device_col),
            _strings(COUNTRIES, ev_country).alias(country_col),
            _strings(PAYMENT_METHODS, pay).alias(method_col),
            pl.Series(s.numerical[0], amount).fill_nan(None),
        ]
    )
    labels = pl.DataFrame([sid.alias(s.session_id), pl.Series(s.label, (fraud ^ noise).astype(np.int8))])
    typologies = pl.DataFrame(
        [
            sid.alias(s.session_id),
            _strings(KINDS, kind).alias(TYPOLOGY),
            pl.Series(LABEL_NOISE, noise, dtype=pl.Boolean),
        ]
    )
    return SyntheticData(events=events, labels=labels, typologies=typologies)


def write(data: SyntheticData, out_dir: str | Path) -> dict[str, Path]:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {name: out / f"{name}.parquet" for name in ("events", "labels", "typologies")}
    for name, path in paths.items():
        getattr(data, name).write_parquet(path)
    return paths


def summary(data: SyntheticData) -> str:
    counts = dict(data.typologies[TYPOLOGY].value_counts().iter_rows())
    n = data.labels.height
    fraud = sum(counts.get(t, 0) for t in TYPOLOGIES)
    per_typology = " ".join(f"{t}={counts.get(t, 0)}" for t in TYPOLOGIES)
    return (
        f"sessions={n} events={data.events.height} fraud_rate={fraud / n:.4f} "
        f"observed_label_rate={cast(float, data.labels[SYNTHETIC.label].mean()):.4f} {per_typology}"
    )

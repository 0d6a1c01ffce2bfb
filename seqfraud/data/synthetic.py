"""Synthetic e-commerce clickstream whose fraud typologies each hide behind exactly one kind of signal.

Each fraud typology differs from legitimate traffic through a single channel (event order, inter-event
timing, device/country context, amounts, event types that only exist late in the time range, or the
entities a session shares with others) and comes with a population of legitimate hard negatives that
shares the rest of its pattern. That lets a per-typology metric say which signal a model actually
learned. Labels are observed with noise in both directions, as chargeback-based labels are, and a
chargeback arrives 3 to 60 days after its session; the true typology of every session is kept aside.

**Entities.** Every event names its account, device and IP (:data:`seqfraud.schema.SYNTHETIC_ENTITIES`).
Accounts recur over the whole range (about :data:`SESSIONS_PER_ACCOUNT` sessions each, lognormal
activity); an account keeps 1-3 devices, some first used part-way through the range (a new phone), and
a home IP shared with its household (1-4 accounts), plus for some a second IP of its own (work, mobile).
A session's device type is its device's and its country the account's home country, except for
travel (:data:`TRAVEL`: another country, from an IP seen nowhere else), for risky_context and its hard
negatives, which get the emulator or BR their pattern needs on the account's usual device (so that the
entity columns say nothing about them), and for ring sessions (below). All events of a session share
account, device and IP, except that the IP changes where a session hops country mid-way (VPN, roaming).
Ids are dense numbers in random order; IPs are pseudonyms in 10.0.0.0/8.

The ``entity_ring`` typology is account takeover by fraud rings: each ring is active for days to weeks
and works through a few devices and IPs of its own across many victims' accounts (drawn, like every
session's account, by activity), with the victims' countries, plain legitimate intents, timing, amounts
and payment habits, and a device type spoofed per session from the population's mix (anti-detect
browsers; the device id is what they cannot spoof). A ring session alone looks legitimate: only what its
device and IP do across sessions (and the chargebacks they collect) gives it away. Its hard negatives
(``hard_negative_shared``) are legitimately shared entities: family devices of 2-4 accounts over the
whole range, office NAT IPs shared by dozens of colleagues on working days, public wifi used by many
accounts for hours to days, and public terminals (library computers) used by many accounts for weeks
(:data:`SHARED_RATES`). The other typologies and hard negatives use their accounts' own devices and IPs,
as plain sessions do, so the entity columns tell nothing about them.

**Label times.** The label table's :data:`seqfraud.schema.SYNTHETIC_LABEL_TIME` column is the chargeback
date of every observed positive (false chargebacks included), :data:`CHARGEBACK_DAYS` after the session's
last event; it is null for observed negatives, which are only known once the chargeback window closes
(``data.policy.label_delay``).

``seqfraud synthetic --sessions 20000 --seed 0 --out data/synthetic`` writes the three
Parquet files (events, labels with their label times, typologies).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, cast

import numpy as np
import numpy.typing as npt
import polars as pl

from seqfraud.schema import LABEL_NOISE, SYNTHETIC, SYNTHETIC_ENTITIES, SYNTHETIC_LABEL_TIME, TYPOLOGY

LEGIT = "legit"
HARD_NEGATIVE = "hard_negative"

ATO_ORDER = "ato_order"
BOT_TIMING = "bot_timing"
RISKY_CONTEXT = "risky_context"
AMOUNT_SPIKE = "amount_spike"
LATE_VARIANT = "late_variant"
ENTITY_RING = "entity_ring"
TYPOLOGIES = (ATO_ORDER, BOT_TIMING, RISKY_CONTEXT, AMOUNT_SPIKE, LATE_VARIANT, ENTITY_RING)

HN_ORDER = f"{HARD_NEGATIVE}_order"
HN_FAST = f"{HARD_NEGATIVE}_fast"
HN_CONTEXT = f"{HARD_NEGATIVE}_context"
HN_AMOUNT = f"{HARD_NEGATIVE}_amount"
HN_GIFT_CARD = f"{HARD_NEGATIVE}_gift_card"
HN_SHARED = f"{HARD_NEGATIVE}_shared"
HARD_NEGATIVES = (HN_ORDER, HN_FAST, HN_CONTEXT, HN_AMOUNT, HN_GIFT_CARD, HN_SHARED)
# The legitimate look-alikes of each fraud typology: telling the two apart needs exactly the typology's signal.
HARD_NEGATIVE_OF = {
    ATO_ORDER: HN_ORDER,
    BOT_TIMING: HN_FAST,
    RISKY_CONTEXT: HN_CONTEXT,
    AMOUNT_SPIKE: HN_AMOUNT,
    LATE_VARIANT: HN_GIFT_CARD,
    ENTITY_RING: HN_SHARED,
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
    ENTITY_RING: 0.005,
    HN_ORDER: 0.008,
    HN_FAST: 0.015,
    HN_CONTEXT: 0.008,
    HN_AMOUNT: 0.008,
}
# The settings of legitimately shared entities (hard_negative_shared), as shares of all sessions.
SHARED_RATES = {"family_device": 0.008, "office_ip": 0.008, "public_wifi": 0.004, "public_terminal": 0.002}
KIND_RATES[HN_SHARED] = sum(SHARED_RATES.values())
GIFT_CARD_ADOPTION = 0.02  # of legit sessions starting in the late period
LATE_FRACTION = 0.28  # the trailing part of the time range where gift cards (and their fraud) exist
MISSED_CHARGEBACK = 0.07  # fraud observed as label 0
FALSE_CHARGEBACK = 0.0008  # legit observed as label 1 (friendly fraud, disputes)
# An observed positive's label time (its chargeback), in days after its last event: 3 + 57 * beta(2, 4),
# mode ~17 days.
CHARGEBACK_DAYS = (3, 60)

SESSIONS_PER_ACCOUNT = 6  # mean; activity is lognormal, so some accounts come back far more often
ACCOUNT_ACTIVITY_SIGMA = 1.0
ACCOUNT_DEVICES_P = (0.5, 0.35, 0.15)  # an account's 1, 2 or 3 devices
NEW_DEVICE = 0.3  # a second or third device first used part-way through the range
HOUSEHOLD_P = (0.8, 0.12, 0.05, 0.03)  # households of 1-4 accounts; a household shares its home IP
SECOND_IP = 0.4  # accounts with a second IP of their own (work, mobile)
SECOND_IP_USE = 0.3  # share of such an account's sessions from that IP
TRAVEL = 0.03  # sessions of a plain account away from home: another country, a one-off IP
COUNTRY_HOP = 0.004  # sessions whose country (and IP) changes mid-way: VPN, roaming
# Fraud rings: victims per ring (mean), active span in days (log-uniform), devices and IPs per ring.
RING_SESSIONS = 30
RING_DAYS = (4, 35)
RING_DEVICES_P = (0.4, 0.4, 0.2)
RING_IPS_P = (0.5, 0.3, 0.2)
# Shared settings: sessions per family device / office / hotspot / terminal (mean), and their extents.
FAMILY_SESSIONS = 12
OFFICE_SESSIONS = 150
OFFICE_STAFF = (15, 60)
OFFICE_HOURS = (9, 18)  # local, Monday to Friday
HOTSPOT_SESSIONS = 12
HOTSPOT_HOURS = (2, 72)
TERMINAL_SESSIONS = 25
TERMINAL_DAYS = (20, 120)

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


def drift_windows(data: SyntheticData, late: datetime) -> dict[str, pl.DataFrame]:
    """The raw events as the drift monitor's example and tests read them: the sessions that start before ``late``,
    in order of start, are the ``reference`` (the first half) and the ``early`` window (the second half); those
    that start from ``late`` on are the ``late`` window, where the gift-card events appear."""
    s = SYNTHETIC
    starts = data.events.group_by(s.session_id).agg(pl.col(s.timestamp).min().alias("start"))
    early = starts.filter(pl.col("start") < late).sort("start", s.session_id)
    half = early.height // 2
    ids = {
        "reference": early.head(half)[s.session_id],
        "early": early.tail(early.height - half)[s.session_id],
        "late": starts.filter(pl.col("start") >= late)[s.session_id],
    }
    return {name: data.events.filter(pl.col(s.session_id).is_in(v.implode())) for name, v in ids.items()}


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


def _log_uniform(rng: np.random.Generator, lo: float, hi: float, size: int) -> np.ndarray:
    return np.exp(rng.uniform(np.log(lo), np.log(hi), size))


@dataclass
class _Accounts:
    """The account population. A household's accounts are consecutive and share its home IP."""

    home: np.ndarray  # home country of each account
    household: np.ndarray  # household of each account
    household_start: np.ndarray  # first account of each household
    household_size: np.ndarray
    n_devices: np.ndarray  # 1-3; the account's devices have raw ids account * 3 + slot
    device_from: np.ndarray  # (accounts, 3): ms into the range from which each device is in use
    second_ip: np.ndarray  # whether the account has an IP of its own besides the household's
    by_country: np.ndarray  # account ids sorted by home country
    bounds: np.ndarray  # by_country[bounds[c]:bounds[c + 1]] live in country c
    activity: np.ndarray  # cumulative activity along by_country

    def pick(self, rng: np.random.Generator, size: int, country: np.ndarray | None = None) -> np.ndarray:
        """Accounts drawn by how active they are, from anywhere or each from the given home country."""
        if country is None:
            lo, hi = np.zeros(size, dtype=np.int64), np.full(size, self.home.size)
        else:
            lo, hi = self.bounds[country], self.bounds[country + 1]
        below = np.where(lo > 0, self.activity[np.maximum(lo - 1, 0)], 0.0)
        u = below + rng.random(size) * (self.activity[hi - 1] - below)
        return self.by_country[np.clip(np.searchsorted(self.activity, u, side="right"), lo, hi - 1)]


class _Registry:
    """Raw ids of the devices (with their device types) and IPs, handed out as they are made."""

    def __init__(self, device_types: np.ndarray, n_ips: int) -> None:
        self._types = [device_types]
        self.n_devices = device_types.size
        self.n_ips = n_ips

    def new_devices(self, types: np.ndarray) -> int:
        first = self.n_devices
        self._types.append(types)
        self.n_devices += types.size
        return first

    def new_ips(self, count: int) -> int:
        first = self.n_ips
        self.n_ips += count
        return first

    def device_types(self) -> np.ndarray:
        return np.concatenate(self._types)


def _population(rng: np.random.Generator, n_accounts: int, span_ms: int) -> tuple[_Accounts, _Registry]:
    """Accounts in households, each with its devices and IPs; IP raw ids: households, then second IPs."""
    a = n_accounts
    household = np.repeat(np.arange(a), _draw(rng, np.array(HOUSEHOLD_P), a) + 1)[:a]
    size = np.bincount(household)
    home = _draw(rng, COUNTRY_P, size.size)[household]
    later = (np.arange(3) > 0) & (rng.random((a, 3)) < NEW_DEVICE)
    by_country = np.argsort(home, kind="stable")
    accounts = _Accounts(
        home=home,
        household=household,
        household_start=np.cumsum(size) - size,
        household_size=size,
        n_devices=_draw(rng, np.array(ACCOUNT_DEVICES_P), a) + 1,
        device_from=np.where(later, rng.integers(0, span_ms, (a, 3)), 0),
        second_ip=rng.random(a) < SECOND_IP,
        by_country=by_country,
        bounds=np.searchsorted(home[by_country], np.arange(len(COUNTRIES) + 1)),
        activity=np.cumsum(np.exp(ACCOUNT_ACTIVITY_SIGMA * rng.standard_normal(a))[by_country]),
    )
    return accounts, _Registry(_draw(rng, DEVICE_P, 3 * a), size.size + a)


# How a session's start is drawn: the ordinary seasonality, a day within its window (rings, terminals),
# office hours on a working day (offices), or any instant within its window (wifi hotspots).
_ANY_TIME, _DAY_WINDOW, _OFFICE_HOURS, _INSTANT_WINDOW = range(4)


@dataclass
class _Placement:
    """Per session: account, and device / IP raw ids where the setting fixes them (-1: the account's own)."""

    account: np.ndarray
    device: np.ndarray
    ip: np.ndarray
    rule: np.ndarray
    lo: np.ndarray  # time window, ms into the range
    hi: np.ndarray


def _pools(rng: np.random.Generator, first_id: int, counts: np.ndarray, group: np.ndarray) -> np.ndarray:
    """One id per session, uniform over its group's ``counts[group]`` consecutive ids."""
    offset = np.cumsum(counts) - counts
    return first_id + offset[group] + (rng.random(group.size) * counts[group]).astype(np.int64)


def _place(
    rng: np.random.Generator, kind: np.ndarray, acc: _Accounts, reg: _Registry, days: int
) -> _Placement:
    """Accounts for every session, and the rings and shared settings some sessions happen in."""
    n, span = kind.size, days * DAY_MS
    p = _Placement(
        account=acc.pick(rng, n),  # plain sessions and ring victims alike
        device=np.full(n, -1, dtype=np.int64),
        ip=np.full(n, -1, dtype=np.int64),
        rule=np.full(n, _ANY_TIME, dtype=np.int8),
        lo=np.zeros(n, dtype=np.int64),
        hi=np.full(n, span, dtype=np.int64),
    )

    def day_window(rows: np.ndarray, group: np.ndarray, length_days: np.ndarray) -> None:
        length = np.minimum(days, np.ceil(length_days)).astype(np.int64)
        first = rng.integers(0, days - length + 1)
        p.rule[rows] = _DAY_WINDOW
        p.lo[rows], p.hi[rows] = first[group] * DAY_MS, (first + length)[group] * DAY_MS

    def local_accounts(rows: np.ndarray, n_groups: int) -> np.ndarray:
        """Each session in one of ``n_groups`` places, by an account living in the place's country."""
        country = acc.home[acc.pick(rng, n_groups)]
        group = rng.integers(0, n_groups, rows.size)
        p.account[rows] = acc.pick(rng, rows.size, country[group])
        return group

    # Fraud rings: a few devices and IPs of their own across many victims, for days to weeks.
    rows = np.flatnonzero(kind == _K[ENTITY_RING])
    if rows.size:
        r = max(1, round(rows.size / RING_SESSIONS))
        group = _draw(rng, np.exp(0.5 * rng.standard_normal(r)), rows.size)
        devices = _draw(rng, np.array(RING_DEVICES_P), r) + 1
        # What a ring's device reports as its type is spoofed per session (see generate).
        p.device[rows] = _pools(
            rng, reg.new_devices(np.zeros(int(devices.sum()), dtype=np.int64)), devices, group
        )
        ips = _draw(rng, np.array(RING_IPS_P), r) + 1
        p.ip[rows] = _pools(rng, reg.new_ips(int(ips.sum())), ips, group)
        day_window(rows, group, _log_uniform(rng, *RING_DAYS, r))

    rows = np.flatnonzero(kind == _K[HN_SHARED])
    setting = _draw(rng, np.array(list(SHARED_RATES.values())), rows.size)
    family, office, wifi, terminal = (rows[setting == i] for i in range(len(SHARED_RATES)))
    if family.size:  # a household's shared tablet or computer, over the whole range
        multi = np.flatnonzero(acc.household_size >= 2)
        multi = multi if multi.size else np.arange(acc.household_size.size)
        f = min(multi.size, max(1, round(family.size / FAMILY_SESSIONS)))
        household = rng.choice(multi, f, replace=False)
        group = rng.integers(0, f, family.size)
        h = household[group]
        member = (rng.random(family.size) * acc.household_size[h]).astype(np.int64)
        p.account[family] = acc.household_start[h] + member
        p.device[family] = reg.new_devices(_draw(rng, DEVICE_P, f)) + group
        p.ip[family] = h
    if office.size:  # colleagues behind their office's NAT, on their own devices, in office hours
        o = max(1, round(office.size / OFFICE_SESSIONS))
        country = acc.home[acc.pick(rng, o)]
        staff = rng.integers(OFFICE_STAFF[0], OFFICE_STAFF[1] + 1, o)
        group = _draw(rng, staff.astype(np.float64), office.size)
        for k in range(o):
            members = np.unique(acc.pick(rng, int(staff[k]), np.full(int(staff[k]), country[k])))
            sel = office[group == k]
            p.account[sel] = members[rng.integers(0, members.size, sel.size)]
        p.ip[office] = reg.new_ips(o) + group
        p.rule[office] = _OFFICE_HOURS
    if wifi.size:  # a café's, hotel's or conference's wifi, for hours to days
        w = max(1, round(wifi.size / HOTSPOT_SESSIONS))
        group = local_accounts(wifi, w)
        length = np.minimum(span, _log_uniform(rng, *HOTSPOT_HOURS, w) * HOUR_MS).astype(np.int64)
        begin = (rng.random(w) * (span - length + 1)).astype(np.int64)
        p.ip[wifi] = reg.new_ips(w) + group
        p.rule[wifi] = _INSTANT_WINDOW
        p.lo[wifi], p.hi[wifi] = begin[group], (begin + length)[group]
    if terminal.size:  # a library's or hotel lobby's computer, for weeks
        t = max(1, round(terminal.size / TERMINAL_SESSIONS))
        group = local_accounts(terminal, t)
        p.device[terminal] = reg.new_devices(np.full(t, DEVICES.index("desktop"))) + group
        p.ip[terminal] = reg.new_ips(t) + group
        day_window(terminal, group, _log_uniform(rng, *TERMINAL_DAYS, t))
    return p


def _own_devices(
    rng: np.random.Generator, acc: _Accounts, account: np.ndarray, at_ms: np.ndarray
) -> np.ndarray:
    """One of the account's devices already in use at the session's start."""
    usable = (np.arange(3) < acc.n_devices[account, None]) & (acc.device_from[account] <= at_ms[:, None])
    pick = (rng.random(account.size) * usable.sum(axis=1)).astype(np.int64)
    return account * 3 + (np.cumsum(usable, axis=1) <= pick[:, None]).sum(axis=1)


def _relabel(rng: np.random.Generator, raw: np.ndarray) -> tuple[np.ndarray, int]:
    """Dense ids in random order, so that an id says nothing about how its entity was made."""
    unique, inverse = np.unique(raw, return_inverse=True)
    return rng.permutation(unique.size)[inverse], unique.size


def _numbered(prefix: str, count: int, width: int) -> pl.Series:
    width = max(width, len(str(count - 1)))
    return pl.select(
        pl.lit(prefix) + pl.int_range(count, dtype=pl.Int64).cast(pl.String).str.zfill(width)
    ).to_series()


def _ip_names(count: int) -> pl.Series:
    """Pseudonymous IPs 10.x.y.z (z in 1-254), then 11.x.y.z and on."""
    u = np.arange(count, dtype=np.int64)
    parts = (10 + u // 16_646_144, u // 65_024 % 256, u // 254 % 256, u % 254 + 1)
    return pl.select(pl.format("{}.{}.{}.{}", *(pl.lit(pl.Series(x)) for x in parts))).to_series()


def _context_country(
    rng: np.random.Generator, kind: np.ndarray, country: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """risky_context is the emulator-in-BR pair; each half of it is common alone.

    Its sessions and half its hard negatives (risky-country users on ordinary devices) come from BR; the
    other half (emulator users elsewhere, returned as a mask) from anywhere else.
    """
    n = kind.size
    risky_country = COUNTRIES.index(RISKY_COUNTRY)
    other_country = _draw(rng, np.where(np.arange(len(COUNTRIES)) == risky_country, 0.0, COUNTRY_P), n)
    hn = kind == _K[HN_CONTEXT]
    device_side = hn & (rng.random(n) < 0.5)
    to_risky = (kind == _K[RISKY_CONTEXT]) | (hn & ~device_side)
    elsewhere = device_side & (country == risky_country)
    return np.where(to_risky, risky_country, np.where(elsewhere, other_country, country)), device_side


def _context_device(
    rng: np.random.Generator, kind: np.ndarray, device: np.ndarray, device_side: np.ndarray
) -> np.ndarray:
    """The device half of :func:`_context_country`: emulators for risky_context and the device side."""
    emulator = DEVICES.index(RISKY_DEVICE)
    other_device = _draw(rng, np.where(np.arange(len(DEVICES)) == emulator, 0.0, DEVICE_P), kind.size)
    country_side = (kind == _K[HN_CONTEXT]) & ~device_side
    to_emulator = (kind == _K[RISKY_CONTEXT]) | device_side
    ordinary = country_side & (device == emulator)
    return np.where(to_emulator, emulator, np.where(ordinary, other_device, device))


def _start_times(
    rng: np.random.Generator, kind: np.ndarray, country: np.ndarray, t0: int, days: int, place: _Placement
) -> np.ndarray:
    """Session starts with growth, weekly and local diurnal seasonality; late_variant only late.

    Sessions of a ring or a shared place keep to its window (see ``_ANY_TIME`` and the rest).
    """
    n = kind.size
    span = days * DAY_MS
    late0 = _late_offset_ms(days)
    d = np.arange(days)
    weekday = (datetime.fromtimestamp(t0 / 1000, tz=timezone.utc).weekday() + d) % 7
    w = _WEEKDAY_W[weekday] * (1 + _GROWTH * d / days)
    day = _draw(rng, w, n)
    hour = _draw(rng, _HOUR_W, n)
    windowed = place.rule == _DAY_WINDOW
    in_window = place.lo // DAY_MS + (rng.random(n) * ((place.hi - place.lo) // DAY_MS)).astype(np.int64)
    day = np.where(windowed, in_window, day)
    office = place.rule == _OFFICE_HOURS
    workdays = d[weekday < 5] if (weekday < 5).any() else d
    day = np.where(office, workdays[rng.integers(0, workdays.size, n)], day)
    hour = np.where(office, rng.integers(*OFFICE_HOURS, n), hour)
    local = day * DAY_MS + hour * HOUR_MS + rng.integers(0, HOUR_MS, n)
    t = local - _UTC_OFFSET_MS[country]
    instant = place.rule == _INSTANT_WINDOW
    t = np.where(instant, place.lo + (rng.random(n) * (place.hi - place.lo)).astype(np.int64), t)
    late = kind == _K[LATE_VARIANT]
    anywhere = place.rule == _ANY_TIME
    t = np.where(
        late, late0 + (t - late0) % (span - late0), np.where(anywhere, t % span, np.clip(t, 0, span - 1))
    )
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


def _hops(
    rng: np.random.Generator, lens: np.ndarray, ev_sess: np.ndarray, first: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """A few sessions hop country mid-way (travel, VPN, roaming): per event whether its session has hopped
    by then, and per session whether it hops at all."""
    n = lens.size
    hop = (rng.random(n) < COUNTRY_HOP) & (lens > 1)
    at = 1 + (rng.random(n) * (lens - 1)).astype(np.int64)
    pos = np.arange(ev_sess.size) - first
    return hop[ev_sess] & (pos >= at[ev_sess]), hop


def _strings(names: Sequence[str], codes: np.ndarray) -> pl.Series:
    """String column from codes; -1 becomes null."""
    lookup = pl.Series(list(names) + [None], dtype=pl.String)
    return lookup.gather(np.where(codes < 0, len(names), codes).astype(np.uint32))


DEFAULT_START, DEFAULT_DAYS = "2026-01-01", 180


def generate(
    n_sessions: int, seed: int = 0, start: str = DEFAULT_START, days: int = DEFAULT_DAYS
) -> SyntheticData:
    """Generate ``n_sessions`` sessions starting over ``days`` days from ``start``; same seed, same frames."""
    if n_sessions < 1 or days < 1:
        raise ValueError(f"need n_sessions >= 1 and days >= 1, got {n_sessions} and {days}")
    rng = np.random.default_rng(seed)
    t0 = _start_ms(start)
    n = n_sessions

    kind = _kinds(rng, n)
    acc, reg = _population(rng, max(1, round(n / SESSIONS_PER_ACCOUNT)), days * DAY_MS)
    place = _place(rng, kind, acc, reg, days)
    account = place.account
    # Sessions on no ring or shared place: at home (household or own second IP), or travelling.
    own = place.ip < 0
    travel = own & (rng.random(n) < TRAVEL)
    country = np.where(travel, _draw(rng, COUNTRY_P, n), acc.home[account])
    second = acc.second_ip[account] & (rng.random(n) < SECOND_IP_USE)
    home_ip = np.where(second, acc.household_size.size + account, acc.household[account])
    ip = np.where(own, np.where(travel, reg.new_ips(n) + np.arange(n), home_ip), place.ip)
    country, device_side = _context_country(rng, kind, country)
    start_ms = _start_times(rng, kind, country, t0, days, place)
    device = np.where(place.device < 0, _own_devices(rng, acc, account, start_ms - t0), place.device)
    device_type = _context_device(rng, kind, reg.device_types()[device], device_side)
    # Rings run anti-detect browsers: the device type they report is drawn afresh each session (as the
    # population's), while the device id, a fingerprint of what they cannot spoof, stays.
    ring = kind == _K[ENTITY_RING]
    device_type = np.where(ring, _draw(rng, DEVICE_P, n), device_type)
    # Session ids follow start time, like an auto-increment id would.
    order = np.argsort(start_ms, kind="stable")
    kind, device_type, country, start_ms, account, device, ip = (
        a[order] for a in (kind, device_type, country, start_ms, account, device, ip)
    )
    late_legit = (kind == _K[LEGIT]) & (start_ms >= t0 + _late_offset_ms(days))
    kind[late_legit & (rng.random(n) < GIFT_CARD_ADOPTION)] = _K[HN_GIFT_CARD]

    ev_sess, codes = _sequences(rng, _intents(rng, kind))
    lens = np.bincount(ev_sess, minlength=n)
    first = np.repeat(np.cumsum(lens) - lens, lens)
    gaps = _gaps_ms(rng, codes, ev_sess, kind)
    gaps[first == np.arange(codes.size)] = 0
    ts = start_ms[ev_sess] + _cumsum_within(gaps, first)
    end_ms = ts[np.cumsum(lens) - 1]
    amount = _amounts(rng, codes, ev_sess, first, kind)
    hopped, hop = _hops(rng, lens, ev_sess, first)
    ev_country = np.where(hopped, _draw(rng, COUNTRY_P, n)[ev_sess], country[ev_sess])
    method = _draw_rows(rng, _METHOD_CUM[country])
    new_method = _draw_rows(rng, _METHOD_CUM[ev_country])
    is_payment = np.isin(codes, [_E[e] for e in PAYMENT_EVENTS])
    pay = np.where(codes == _E["add_payment_method"], new_method, method[ev_sess])
    pay = np.where(is_payment, pay, -1)

    # A hop moves the session to an IP of its own; ids are numbered last, in random order.
    account, n_accounts = _relabel(rng, account)
    device, n_devices = _relabel(rng, device)
    ips, n_ips = _relabel(rng, np.concatenate([ip, reg.new_ips(n) + np.flatnonzero(hop)]))
    hop_ip = np.zeros(n, dtype=np.int64)
    hop_ip[hop] = ips[n:]
    ev_ip = np.where(hopped, hop_ip[ev_sess], ips[:n][ev_sess])

    fraud = np.isin(kind, [_K[t] for t in TYPOLOGIES])
    u = rng.random(n)
    noise = np.where(fraud, u < MISSED_CHARGEBACK, u < FALSE_CHARGEBACK)
    lo, hi = CHARGEBACK_DAYS
    chargeback_ms = end_ms + np.rint((lo + (hi - lo) * rng.beta(2.0, 4.0, n)) * DAY_MS).astype(np.int64)

    width = max(7, len(str(n - 1)))
    sid = pl.select(
        pl.lit("s") + pl.int_range(n, dtype=pl.Int64).cast(pl.String).str.zfill(width)
    ).to_series()
    s = SYNTHETIC
    shuffle = rng.permutation(codes.size)  # logs arrive unordered
    ev_sess, codes, ts, amount, ev_country, pay, ev_ip = (
        a[shuffle] for a in (ev_sess, codes, ts, amount, ev_country, pay, ev_ip)
    )
    device_col, country_col, method_col = s.categorical
    account_col, device_id_col, ip_col = SYNTHETIC_ENTITIES
    at_session = ev_sess.astype(np.uint32)
    events = pl.DataFrame(
        [
            sid.gather(at_session).alias(s.session_id),
            pl.Series(s.timestamp, ts).cast(pl.Datetime("ms", "UTC")),
            _strings(EVENT_TYPES, codes).alias(s.event_type),
            _strings(DEVICES, device_type[ev_sess]).alias(device_col),
            _strings(COUNTRIES, ev_country).alias(country_col),
            _strings(PAYMENT_METHODS, pay).alias(method_col),
            pl.Series(s.numerical[0], amount).fill_nan(None),
            _numbered("a", n_accounts, 7).gather(account[at_session]).alias(account_col),
            _numbered("d", n_devices, 6).gather(device[at_session]).alias(device_id_col),
            _ip_names(n_ips).gather(ev_ip.astype(np.uint32)).alias(ip_col),
        ]
    )
    observed = fraud ^ noise
    labels = pl.DataFrame(
        [
            sid.alias(s.session_id),
            pl.Series(s.label, observed.astype(np.int8)),
            # The chargeback date; a negative is only known once the chargeback window has closed.
            pl.Series(SYNTHETIC_LABEL_TIME, np.where(observed, chargeback_ms, 0))
            .cast(pl.Datetime("ms", "UTC"))
            .scatter(np.flatnonzero(~observed), None),
        ]
    )
    typologies = pl.DataFrame(
        [
            sid.alias(s.session_id),
            _strings(KINDS, kind).alias(TYPOLOGY),
            pl.Series(LABEL_NOISE, noise, dtype=pl.Boolean),
        ]
    )
    return SyntheticData(events=events, labels=labels, typologies=typologies)


# Bumped whenever the same seed would generate other data; config-driven data directories that carry another
# stamp are generated again (seqfraud.preprocess.ensure_synthetic).
GENERATOR_VERSION = 2
STAMP_FILE = "generator.json"


def stamp(sessions: int, seed: int, start: str = DEFAULT_START, days: int = DEFAULT_DAYS) -> dict[str, Any]:
    """What a data directory's :data:`STAMP_FILE` says made its files: the generator's version and arguments."""
    return {"generator": GENERATOR_VERSION, "sessions": sessions, "seed": seed, "start": start, "days": days}


def write(data: SyntheticData, out_dir: str | Path, made: Mapping[str, Any], *, by: str) -> dict[str, Path]:
    """The frames as Parquet, and the :func:`stamp` ``made`` that generated them, with ``by`` (``"config"`` or
    ``"command"``): data a command wrote is never replaced by a config that asks for other data."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {name: out / f"{name}.parquet" for name in ("events", "labels", "typologies")}
    for name, path in paths.items():
        getattr(data, name).write_parquet(path)
    (out / STAMP_FILE).write_text(json.dumps({**made, "by": by}))
    return paths


def summary(data: SyntheticData) -> str:
    """One line of what was generated (sessions, events, fraud rate, sessions per typology, entity values), as
    ``seqfraud synthetic`` prints it."""
    counts = dict(data.typologies[TYPOLOGY].value_counts().iter_rows())
    n = data.labels.height
    fraud = sum(counts.get(t, 0) for t in TYPOLOGIES)
    per_typology = " ".join(f"{t}={counts.get(t, 0)}" for t in TYPOLOGIES)
    rings = data.typologies.filter(pl.col(TYPOLOGY) == ENTITY_RING)[SYNTHETIC.session_id]
    ring_events = data.events.filter(pl.col(SYNTHETIC.session_id).is_in(rings.implode()))
    _, device_col, ip_col = SYNTHETIC_ENTITIES
    entities = " ".join(f"{c}s={data.events[c].n_unique()}" for c in SYNTHETIC_ENTITIES)
    return (
        f"sessions={n} events={data.events.height} fraud_rate={fraud / n:.4f} "
        f"observed_label_rate={cast(float, data.labels[SYNTHETIC.label].mean()):.4f} {per_typology} "
        f"{HN_SHARED}={counts.get(HN_SHARED, 0)} {entities} "
        f"ring_{device_col}s={ring_events[device_col].n_unique()} ring_{ip_col}s={ring_events[ip_col].n_unique()}"
    )

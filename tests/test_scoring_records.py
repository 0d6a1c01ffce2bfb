"""Events as a list of dicts: unknown keys are refused (a misspelled optional column must not read as missing)."""

from __future__ import annotations

import re
from datetime import datetime, timedelta

import polars as pl
import pytest
import torch

from seqfraud import schema as S
from seqfraud.data.events import DataValidationError
from seqfraud.features.spec import Spec
from seqfraud.schema import Schema
from seqfraud.scoring import Scorer
from seqfraud.scoring.prepare import as_frame

SPEC = Spec(
    schema=Schema(categorical=("device",), numerical=("amount",)),
    timestamp_unit="us",
    max_len=4,
    vocab={"event_type": ["login", "pay"], "device": ["ios", "web"]},
    edges={"amount": [0.0, 10.0], S.TIME_DELTA: [0.0, 1.0]},
)


def _events(n: int = 3) -> list[dict]:
    return [
        {
            "session_id": "s1",
            "timestamp": datetime(2026, 3, 1, 10, 0, i),
            "event_type": "pay",
            "device": "ios",
            "amount": 5.0,
        }
        for i in range(n)
    ]


def _scorer() -> Scorer:
    def model(tokens: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        return torch.full(lengths.shape, 0.5)

    return Scorer(model, SPEC, {"review": 0.6, "decline": 0.9}, model_version="test")


def test_a_misspelled_key_is_refused_with_its_count_and_a_suggestion():
    events = _events()
    for e in events[:2]:
        e["amout"] = e.pop("amount")
    events[2]["colour"] = "red"
    with pytest.raises(
        DataValidationError,
        match=r"^events: unknown key\(s\) 'amout' in 2 event\(s\) \(did you mean "
        r"'amount'\?\); 'colour' in 1 event\(s\)\. Keys are the model's "
        r"columns: \['session_id', 'timestamp', 'event_type', 'device', "
        r"'amount'\]",
    ):
        _scorer().score(events)


def test_known_keys_may_be_left_out_and_frames_keep_extra_columns_ignored():
    scorer = _scorer()
    without = [{k: v for k, v in e.items() if k != "amount"} for e in _events()]
    assert scorer.score(without)[S.SCORE].len() == 1
    frame = pl.DataFrame(_events()).with_columns(pl.lit(1).alias("label"))
    assert (
        "label" in as_frame(frame, SPEC, "events").columns
    )  # training, too, reads only the schema's columns
    assert scorer.score(frame).equals(scorer.score(_events()))


def test_integer_ids_for_ids_trained_as_zero_padded_text_are_refused_on_every_path(tmp_path):
    """A card log's ids are text with leading zeros (``00002037``); a client sending 2037 (a JSON integer, or a
    file read with ids as numbers) met no history or label and was scored, or stored as pending, without a word
    (dogfood 63). An entity model records which id columns its training log zero-padded, and every scoring path
    refuses integers there, naming the column."""
    from dataclasses import replace

    from seqfraud.data.events import CSV_INFER_ROWS, ZERO_PADDED_IDS, load_events, read_labels
    from seqfraud.features.entities import EntitySpec
    from seqfraud.scoring.online import read_labels as read_posted_labels
    from seqfraud.scoring.prepare import normalized_events, record_columns

    # Detection, from the training log's first rows: the zero-padded text columns of an entity model.
    log = pl.DataFrame(
        {
            "session_id": ["00002037", "00002037", "00002040"],
            "timestamp": [datetime(2026, 3, 1, 10, 0, i) for i in range(3)],
            "event_type": ["pay"] * 3,
            "terminal": ["000201", "000201", "7"],
            "merchant": ["m1", "42", "m1"],  # one integer's digits among them: an integer may be one of these
            "phone": ["+447700900123", None, "+447700900124"],
            "label": [0, 0, 1],
        }
    )
    log.write_parquet(tmp_path / "e.parquet")
    schema = Schema(entities=("terminal", "merchant"))
    report = load_events(str(tmp_path / "e.parquet"), schema).report
    assert report[ZERO_PADDED_IDS] == ["session_id", "terminal"]
    # Text that no integer spells at all: a spreadsheet's 447700900123 for +447700900123 met no history (dogfood
    # 210), as a dotted IP address's integer did (dogfood 209).
    with_phone = load_events(str(tmp_path / "e.parquet"), Schema(entities=("phone", "merchant"))).report
    assert with_phone[ZERO_PADDED_IDS] == ["session_id", "phone"]
    # Read whole: merchants whose integer codes come after the first rows hold integers (review 213).
    n = CSV_INFER_ROWS + 50
    late = pl.DataFrame(
        {
            "session_id": [f"s{i // 4}" for i in range(n)],
            "timestamp": [datetime(2026, 3, 1) + timedelta(seconds=i) for i in range(n)],
            "event_type": ["pay"] * n,
            "merchant": [f"m{i % 50}" for i in range(CSV_INFER_ROWS)] + [str(i) for i in range(50)],
            "label": [0] * n,
        }
    )
    late.write_parquet(tmp_path / "late.parquet")
    assert (
        load_events(str(tmp_path / "late.parquet"), Schema(entities=("merchant",))).report.get(
            ZERO_PADDED_IDS, []
        )
        == []
    )
    # Judged on each column's first values, not rows: payees null on a folder's first file of analytics events,
    # then zero-padded, were judged on nulls, and payees sent as integers scored unsaid (dogfood 227).
    nulls_first = late.with_columns(
        pl.Series("payee", [None] * CSV_INFER_ROWS + [f"{i * 3_000_000:08d}" for i in range(50)], pl.String)
    )
    nulls_first.write_parquet(tmp_path / "nulls_first.parquet")
    report = load_events(str(tmp_path / "nulls_first.parquet"), Schema(entities=("payee",))).report
    assert report[ZERO_PADDED_IDS] == ["payee"]
    # A model without entities keys its scores, state and labels by the session id too (dogfood 200: 095460 scored
    # as 95460 joined no case file, and /events opened 4512 beside 004512).
    assert load_events(str(tmp_path / "e.parquet"), Schema()).report[ZERO_PADDED_IDS] == ["session_id"]
    # pandas' category dtype, written to Parquet, is text too (review 66).
    log.with_columns(pl.col("session_id").cast(pl.Categorical)).write_parquet(tmp_path / "c.parquet")
    assert load_events(str(tmp_path / "c.parquet"), schema).report[ZERO_PADDED_IDS] == [
        "session_id",
        "terminal",
    ]

    spec = replace(
        SPEC,
        schema=replace(SPEC.schema, entities=("terminal",), label_time="cb"),
        entity=EntitySpec(("terminal",), ("1h",), risk=True, smoothing=1.0, prior=0.1, label_delay=None),
        fit_info={ZERO_PADDED_IDS: ["session_id", "terminal"]},
    )
    event = {**_events(1)[0], "timestamp": "2026-03-01T10:00:00Z", "terminal": "000201"}
    says = "column 'terminal' holds integers, but the model's training log wrote its values as text that no integer"
    for events in (
        [{**event, "terminal": 201}],
        [event, {**event, "terminal": 201}],
    ):  # alone, or beside text
        assert record_columns(events, spec) is None
        with pytest.raises(DataValidationError, match=says):
            normalized_events(as_frame(events, spec, "request").lazy(), spec, "request")
    with pytest.raises(DataValidationError, match="column 'session_id' holds integers"):
        normalized_events(as_frame([{**event, "session_id": 2037}], spec, "request").lazy(), spec, "request")
    plain = replace(SPEC, fit_info={ZERO_PADDED_IDS: ["session_id"]})  # a model without entities alike
    assert record_columns([{**_events(1)[0], "session_id": 2037}], plain) is None
    with pytest.raises(DataValidationError, match="column 'session_id' holds integers"):
        normalized_events(
            as_frame([{**_events(1)[0], "session_id": 2037}], plain, "request").lazy(), plain, "r"
        )
    assert record_columns([event], spec) is not None  # text as trained: the fast path answers
    frame = pl.DataFrame({**{k: [v] for k, v in event.items()}, "terminal": [201]})
    with pytest.raises(DataValidationError, match=f"file.parquet: {says}"):
        normalized_events(frame.lazy(), spec, "file.parquet")

    # Labels: posted, and as a history's table.
    with pytest.raises(DataValidationError, match="request: column 'session_id' holds integers"):
        read_posted_labels([{"session_id": 2037, "label": 1, "cb": "2026-03-02"}], spec, "request")
    assert read_posted_labels([{"session_id": "00002037", "label": 1, "cb": "2026-03-02"}], spec, "request")
    pl.DataFrame({"session_id": [2037], "label": [1]}).write_parquet(tmp_path / "l.parquet")
    with pytest.raises(DataValidationError, match="l.parquet: column 'session_id' holds integers"):
        read_labels(str(tmp_path / "l.parquet"), spec.schema, zero_padded=spec.zero_padded_ids)


def test_ids_that_lost_their_zeros_as_text_are_said(tmp_path, caplog):
    """Routing numbers all of nine digits, some from 0: a spreadsheet wrote 036106101 back as the text 36106101,
    scored without a word, meeting no mule account of the history (dogfood 216: scores moved up to 0.33, 6 bands),
    where the integer 36106101 was refused. Said on every path, a history's and the monitor's label tables too
    (review 217), not refused: a code of another width may be new."""
    from dataclasses import replace

    from seqfraud.data.events import PADDED_WIDTH_IDS, ZERO_PADDED_IDS, load_events, read_labels
    from seqfraud.features.entities import EntitySpec
    from seqfraud.scoring.online import refuse_misread_ids
    from seqfraud.scoring.prepare import _SAID, normalized_events, record_columns

    _SAID.difference_update({("unpadded terminal", "request"), ("unpadded session_id", "posted")})
    n = 40
    routing = [f"{(i * 37_000_001) % 400_000_000:09d}" for i in range(n)]  # nine digits, many from 0
    log = pl.DataFrame(
        {
            "session_id": [f"s{i}" for i in range(n)],
            "timestamp": [datetime(2026, 3, 1, 10) + timedelta(minutes=i) for i in range(n)],
            "event_type": ["bank_change"] * n,
            "routing": routing,
            "widths_apart": [f"{i:0{4 + i % 3}d}" for i in range(n)],  # padded, but not to one width
            "label": [0] * n,
        }
    )
    log.write_parquet(tmp_path / "e.parquet")
    report = load_events(str(tmp_path / "e.parquet"), Schema(entities=("routing", "widths_apart"))).report
    assert report[ZERO_PADDED_IDS] == ["routing", "widths_apart"] and report[PADDED_WIDTH_IDS] == {
        "routing": 9
    }

    spec = replace(
        SPEC,
        schema=replace(SPEC.schema, entities=("terminal",)),
        entity=EntitySpec(("terminal",), ("1h",), risk=False, smoothing=1.0, prior=0.1, label_delay=None),
        fit_info={ZERO_PADDED_IDS: ["terminal"], PADDED_WIDTH_IDS: {"terminal": 6}},
    )
    event = {**_events(1)[0], "timestamp": "2026-03-01T10:00:00Z", "terminal": "000201"}
    assert (
        record_columns([event, {**event, "terminal": "T201"}], spec) is not None
    )  # as trained, or no digits
    lost = [event, {**event, "terminal": "201"}]
    assert record_columns(lost, spec) is None  # the full path says it
    says = "column 'terminal': 1 row(s) hold an id of fewer digits than the 6 the model's training log wrote each"
    with caplog.at_level("WARNING"):
        normalized_events(as_frame(lost, spec, "request").lazy(), spec, "request")
        assert f"request: {says} with (first: '201', in that form '000201')" in caplog.text
        labelled = replace(
            spec, fit_info={ZERO_PADDED_IDS: ["session_id"], PADDED_WIDTH_IDS: {"session_id": 6}}
        )
        refuse_misread_ids(["000201", "201"], "session_id", "session_id", labelled, "posted")
        assert "posted: column 'session_id': 1 row(s) hold an id of fewer digits than the 6" in caplog.text
        pl.DataFrame({"session_id": ["000201", "202"], "label": [1, 1]}).write_parquet(tmp_path / "l.parquet")
        read_labels(str(tmp_path / "l.parquet"), labelled.schema, forms=labelled.id_forms)
        assert "l.parquet: column 'session_id': 1 row(s) hold an id of fewer digits than the 6" in caplog.text


def test_ids_in_another_case_than_training_wrote_are_said(tmp_path, caplog):
    """Hex device ids all upper-case in training, lower-cased by one client or a history's export: each met no
    event, label or shared entity of its upper-case form, scored without a word (dogfoods 203, 206; a history's
    re-cased entity values and online session ids stayed unsaid). A text id column of many values whose letters
    are all in one case records it, and scoring says the other case on every path; an id of both cases (base62)
    records none."""
    from dataclasses import replace

    from seqfraud.data.events import ONE_CASE_IDS, load_events, read_labels
    from seqfraud.features.entities import EntitySpec
    from seqfraud.scoring.online import refuse_misread_ids
    from seqfraud.scoring.prepare import _SAID, normalized_events, record_columns

    n = 40
    log = pl.DataFrame(
        {
            "session_id": [f"s{i}" for i in range(n)],
            "timestamp": [datetime(2026, 3, 1, 10) + timedelta(minutes=i) for i in range(n)],
            "event_type": ["login"] * n,
            "hw": [f"{i * 2654435761 % 2**32:08X}" for i in range(n)],
            "base62": [f"aB{i}" for i in range(n)],
            "few": [f"X{i % 5}" for i in range(n)],  # five values: no evidence of a form
            # numbers and one placeholder: no evidence of a case (review 222: '1234567X' was then said re-cased)
            "numbers": [f"{1000 + i}" for i in range(n - 1)] + ["unknown"],
            "label": [0] * n,
        }
    )
    log.write_parquet(tmp_path / "e.parquet")
    schema = Schema(entities=("hw", "base62", "few", "numbers"))
    report = load_events(str(tmp_path / "e.parquet"), schema).report
    assert report[ONE_CASE_IDS] == {"session_id": "lower", "hw": "upper"}

    spec = replace(
        SPEC,
        schema=replace(SPEC.schema, entities=("hw",)),
        entity=EntitySpec(("hw",), ("1h",), risk=False, smoothing=1.0, prior=0.1, label_delay=None),
        fit_info={ONE_CASE_IDS: {"hw": "upper", "session_id": "lower"}},
    )
    event = {**_events(1)[0], "timestamp": "2026-03-01T10:00:00Z", "hw": "9E3779B1"}
    assert record_columns([event, {**event, "hw": "12345"}], spec) is not None  # as trained, or no letters
    recased = [event, {**event, "hw": "9e3779b1"}]
    assert record_columns(recased, spec) is None  # the full path says it
    # Said once a process: whatever another test of this worker said first is said again here.
    _SAID.difference_update(
        {(f"recased {c}", w) for c in ("hw", "session_id", "eid") for w in ("request", "posted")}
    )
    with caplog.at_level("WARNING"):
        # Both columns said, each once a source: one key for all hid the second (review 222).
        normalized_events(
            as_frame([*recased, {**event, "session_id": "S9"}], spec, "request").lazy(), spec, "request"
        )
        assert (
            "request: column 'hw': 1 row(s) hold an id with letters in another case than the upper case the "
            "model's training log wrote every letter of it in (first: '9e3779b1', in that form '9E3779B1')"
        ) in caplog.text
        assert "request: column 'session_id': 1 row(s) hold an id with letters in another case" in caplog.text
        # Once said, the fast path answers such ids (review 222: every request of a new client's 'S0001' went
        # through Polars).
        assert record_columns(recased, spec) is not None
        refuse_misread_ids(["s1", "S2"], "session_id", "session_id", spec, "posted")
        assert "posted: column 'session_id': 1 row(s) hold an id with letters in another case" in caplog.text
        # The event id too: a resend under a re-cased id counts as a new event (review 222).
        with_ids = replace(
            spec, schema=replace(spec.schema, event_id="eid"), fit_info={ONE_CASE_IDS: {"eid": "lower"}}
        )
        refuse_misread_ids(["e1", "E2"], "eid", "eid", with_ids, "posted")
        assert "posted: column 'eid': 1 row(s) hold an id with letters in another case" in caplog.text
        assert "it is another id, so a resend under it counts as a new event" in caplog.text
        pl.DataFrame({"session_id": ["s1", "S2", "S3"], "label": [1, 1, 0]}).write_parquet(
            tmp_path / "l.parquet"
        )
        read_labels(str(tmp_path / "l.parquet"), spec.schema, forms=spec.id_forms)
        assert (
            "l.parquet: column 'session_id': 2 row(s) hold an id with letters in another case" in caplog.text
        )
    # A spec whose record was edited to another word reads no case (a KeyError at every request otherwise).
    assert not replace(spec, fit_info={ONE_CASE_IDS: {"hw": "title"}}).id_forms


def test_a_code_of_fixed_width_may_begin_with_zero(tmp_path):
    """A CSV log whose IMEIs were all 15 digits from '35' typed them as integer ids, and an iPhone's
    '013456789012345' was then refused as an integer that had lost its zeros, a whole batch with it, and every
    request of that phone (dogfood 190). A text id column whose ids all had one width is a code of that width:
    a leading zero at that width is another code; at any other width, or as a decimal, still a rewriting."""
    from dataclasses import replace

    from seqfraud.data.events import FIXED_WIDTH_IDS, INTEGER_IDS, load_events
    from seqfraud.features.entities import EntitySpec
    from seqfraud.scoring.online import refuse_misread_ids
    from seqfraud.scoring.prepare import normalized_events, record_columns

    def log(n: int) -> dict:
        """``n`` sessions' IMEIs (15 digits), stores of one to ``n`` digits, ids 10 to 9 + n, and ids of four
        digits some of them negative."""
        rows = "session_id,timestamp,event_type,imei,store,seq,signed,label\n"
        rows += "".join(
            f"s{i},2026-03-01T10:00:{i:02d}Z,pay,35{i:02d}99999999992,{7 * 10**i},{10 + i},"
            f"{(-1) ** i * (1000 + i)},{i % 2}\n"
            for i in range(n)
        )
        (tmp_path / "e.csv").write_text(rows)
        return load_events(
            str(tmp_path / "e.csv"), Schema(entities=("imei", "store", "seq", "signed"))
        ).report

    report = log(25)
    assert report[INTEGER_IDS] == ["imei", "store", "seq", "signed"]
    # Ids 10 to 34 (two digits), or with a sign, are no code of fixed width (review 202); nor two sessions' IMEIs.
    assert report[FIXED_WIDTH_IDS] == {"imei": 15}
    assert FIXED_WIDTH_IDS not in log(3)

    spec = replace(
        SPEC,
        schema=replace(SPEC.schema, entities=("imei",)),
        entity=EntitySpec(("imei",), ("1h",), risk=False, smoothing=1.0, prior=0.1, label_delay=None),
        fit_info={INTEGER_IDS: ["imei"], FIXED_WIDTH_IDS: {"imei": 15}},
    )
    assert spec.integer_ids == {"imei": 15}
    event = {**_events(1)[0], "timestamp": "2026-03-01T10:00:00Z", "imei": "013456789012345"}
    assert record_columns([event], spec) is not None
    normalized_events(as_frame([event], spec, "request").lazy(), spec, "request")
    refuse_misread_ids(["013456789012345"], "imei", "imei", spec, "request")
    for written in ("01345678901234", "0013456789012345", "359999999999992.0", "+35999999999999"):
        events = [{**event, "imei": written}]
        assert record_columns(events, spec) is None
        says = f"request: column 'imei': 1 row(s) hold an integer id written otherwise than as its digits (first: '{written}'"
        with pytest.raises(DataValidationError, match=re.escape(says)):
            normalized_events(as_frame(events, spec, "request").lazy(), spec, "request")
        with pytest.raises(DataValidationError, match=re.escape(f"(first: '{written}'")):
            refuse_misread_ids([written], "imei", "imei", spec, "request")


def test_ids_trained_as_integers_written_otherwise_are_refused(tmp_path):
    """A card log's ids are integers; a scoring CSV from pandas wrote them 3278.0 (an integer column with a gap
    turns float), read back as text: no card met its history, and 260 of 3,451 bands moved without a word
    (dogfood 72); a terminal export that zero-pads (00375) moved 3 of 809 bands the same way (dogfood 102). An
    entity model records which id columns its training log typed as integers, and scoring refuses decimals,
    padding and signs there, by column and count."""
    from dataclasses import replace

    from seqfraud.data.events import INTEGER_IDS, load_events
    from seqfraud.features.entities import EntitySpec
    from seqfraud.scoring.prepare import normalized_events, record_columns

    log = pl.DataFrame(
        {
            "session_id": [11, 11, 12],
            "timestamp": [datetime(2026, 3, 1, 10, 0, i) for i in range(3)],
            "event_type": ["pay"] * 3,
            "card": [3278, 3278, 7],
            "merchant": ["m1", "m2", "m1"],
            "label": [0, 0, 1],
        }
    )
    log.write_parquet(tmp_path / "e.parquet")
    schema = Schema(entities=("card", "merchant"))
    assert load_events(str(tmp_path / "e.parquet"), schema).report[INTEGER_IDS] == ["session_id", "card"]
    assert load_events(str(tmp_path / "e.parquet"), Schema()).report[INTEGER_IDS] == ["session_id"]

    spec = replace(
        SPEC,
        schema=replace(SPEC.schema, entities=("card",)),
        entity=EntitySpec(("card",), ("1h",), risk=False, smoothing=1.0, prior=0.1, label_delay=None),
        fit_info={INTEGER_IDS: ["session_id", "card"]},
    )
    event = {**_events(1)[0], "timestamp": "2026-03-01T10:00:00Z", "card": "3278"}
    # Other digits than ASCII's, and underscores, are ids Python's int() reads as the same integer: as new text
    # they met no history, so a ring's card written in full-width digits looked fresh (dogfood 126).
    others = (("３２７８", 3278), ("\u0663\u0662\u0667\u0668", 3278), ("3_278", 3278), ("-٣", -3))
    for written, plain in (
        ("3278.0", 3278),
        ("-3.00", -3),
        ("03278", 3278),
        ("+3278", 3278),
        ("-0", 0),
        *others,
    ):
        events = [event, {**event, "card": written}]
        assert record_columns(events, spec) is None
        says = (
            f"request: column 'card': 1 row(s) hold an integer id written otherwise than as its digits (first: "
            f"'{written}', the id {plain}), but the model's training log held integers there"
        )
        with pytest.raises(DataValidationError, match=re.escape(says)):
            normalized_events(as_frame(events, spec, "request").lazy(), spec, "request")
    with pytest.raises(DataValidationError, match="column 'session_id': 1 row"):
        normalized_events(
            as_frame([{**event, "session_id": "11.0"}], spec, "request").lazy(), spec, "request"
        )
    # Integers as text, or as integers, and other text, answer as trained.
    # Digits of Unicode versions Python's re and Polars' regex do not share (Garay, Kawi) are text on both paths,
    # where Polars alone refused them and the message's int() raised (review 130).
    for card in (
        "3278",
        3278,
        "0",
        "-7",
        "3278.5",
        "a.0",
        "0x1f",
        "1e5",
        "²",
        "3_",
        "x３",
        "\U00010d43",
        "1\U00011f53",
    ):
        assert record_columns([{**event, "card": card}], spec) is not None
        normalized_events(as_frame([{**event, "card": card}], spec, "request").lazy(), spec, "request")
    # Posted labels with their times, where the event ids were integers too: the times are read by a spec without
    # an event id, which looked for one in them (dogfood 109: every dated POST /labels answered 500).
    from seqfraud.scoring.online import read_labels

    dated = replace(
        spec,
        schema=replace(spec.schema, event_id="event_id", label_time="cb"),
        entity=replace(spec.entity, risk=True),
        fit_info={INTEGER_IDS: ["session_id", "card", "event_id"]},
    )
    (label,) = read_labels([{"session_id": "11", "label": 1, "cb": "2026-03-02"}], dated, "request")
    assert (label.session_id, label.label, label.label_time_us is not None) == ("11", 1, True)
    with pytest.raises(DataValidationError, match="column 'session_id': 1 row"):
        read_labels([{"session_id": "11.0", "label": 1, "cb": "2026-03-02"}], dated, "request")


def test_csv_ids_written_as_integers_are_held_as_integers_and_their_decimals_refused(tmp_path):
    """A CSV log's ids are read as text, so a CSV-trained model recorded no integer ids: 100 rows of a player id
    written 1340.0 beside 1340 trained without a word, and scoring took 1340.0 as a new player (scores moved up
    to 0.868, dogfood 91). Text id columns of integers alone are recorded as integer ids; text of integers with
    some written as decimals is refused at fit time, by file, column, count and example."""
    from dataclasses import replace

    from seqfraud.data.events import INTEGER_IDS, load_events
    from seqfraud.features.entities import EntitySpec
    from seqfraud.scoring.prepare import normalized_events, record_columns

    n = 12
    log = pl.DataFrame(
        {
            "session_id": [str(10 + i // 4) for i in range(n)],
            "timestamp": [f"2026-03-01T10:00:{i:02d}Z" for i in range(n)],
            "event_type": ["pay"] * n,
            "card": [str(3278 + i % 3) for i in range(n)],
            "terminal": ["007", "12"] * (n // 2),  # zero-padded: text, not integers
            "merchant": ["m1", "m2", "3"] * (n // 3),
            "label": [i // 4 % 2 for i in range(n)],
        }
    )
    schema = Schema(entities=("card", "terminal", "merchant"))
    log.write_csv(tmp_path / "e.csv")
    assert load_events(str(tmp_path / "e.csv"), schema).report[INTEGER_IDS] == ["session_id", "card"]
    log.with_columns(pl.col("card").cast(pl.Int64)).write_parquet(tmp_path / "e.parquet")  # as typed ones are
    assert load_events(str(tmp_path / "e.parquet"), schema).report[INTEGER_IDS] == ["session_id", "card"]
    for column, decimal in (("card", "3279.0"), ("session_id", "11.00")):
        bad = pl.int_range(pl.len()).is_in([5, 6])
        log.with_columns(
            pl.when(bad).then(pl.lit(decimal)).otherwise(pl.col(column)).alias(column)
        ).write_csv(tmp_path / "bad.csv")
        says = (
            f"{tmp_path / 'bad.csv'}: column {column!r}: 2 row(s) hold an integer id written otherwise than as its "
            f"digits (first: '{decimal}', the id {int(float(decimal))}), but its other 10 row(s) hold integers"
        )
        with pytest.raises(DataValidationError, match=re.escape(says)):
            load_events(str(tmp_path / "bad.csv"), schema)
    # Of a folder, the file (dogfood 204: a month's CSV named as the folder of 7).
    (tmp_path / "months").mkdir()
    log.write_csv(tmp_path / "months" / "a.csv")
    (tmp_path / "bad.csv").rename(tmp_path / "months" / "b.csv")
    with pytest.raises(DataValidationError, match=re.escape(f"(first in {tmp_path / 'months' / 'b.csv'})")):
        load_events(str(tmp_path / "months"), schema)

    # A text column of integers with one zero-padded: keys as written, not integers.
    late = pl.int_range(pl.len()) == n - 1
    log.with_columns(pl.when(late).then(pl.lit("03279")).otherwise(pl.col("card")).alias("card")).write_csv(
        tmp_path / "late.csv"
    )
    assert load_events(str(tmp_path / "late.csv"), schema).report[INTEGER_IDS] == ["session_id"]

    # A model fitted on it refuses decimals there on every path; one fitted before (no integer ids) scores them.
    entity = EntitySpec(("card",), ("1h",), risk=False, smoothing=1.0, prior=0.1, label_delay=None)
    before = replace(SPEC, schema=replace(SPEC.schema, entities=("card",)), entity=entity)
    spec = replace(before, fit_info={INTEGER_IDS: ["session_id", "card"]})
    event = {**_events(1)[0], "timestamp": "2026-03-01T10:00:00Z", "card": "3278.0"}
    assert record_columns([event], spec) is None
    with pytest.raises(DataValidationError, match="request: column 'card': 1 row"):
        normalized_events(as_frame([event], spec, "request").lazy(), spec, "request")
    assert record_columns([event], before) is not None
    assert (
        normalized_events(as_frame([event], before, "request").lazy(), before, "request")["card"][0]
        == "3278.0"
    )


def test_event_ids_trained_as_integers_written_otherwise_are_refused(tmp_path):
    """Online scoring takes a resent event by its id: a gateway that zero-pads a retry's id (0775 for 775) had it
    scored as a new event, flipping the band (dogfood 102). The event id's form is recorded as the other ids'
    are, for every model with event ids, and POST /events refuses it written otherwise (tests/test_online.py);
    a file or a /score request reads its event ids only for their repeats, and takes them (review 107)."""
    from dataclasses import replace

    from seqfraud.data.events import INTEGER_IDS, load_events
    from seqfraud.scoring.prepare import normalized_events

    log = pl.DataFrame(
        {
            "session_id": ["a", "a", "b"],
            "timestamp": [f"2026-03-01T10:00:0{i}Z" for i in range(3)],
            "event_type": ["pay"] * 3,
            "txn": ["775", "776", "900"],
            "label": [0, 0, 1],
        }
    )
    log.write_csv(tmp_path / "e.csv")
    assert load_events(str(tmp_path / "e.csv"), Schema(event_id="txn")).report[INTEGER_IDS] == ["txn"]
    assert INTEGER_IDS not in load_events(str(tmp_path / "e.csv"), Schema()).report
    spec = replace(SPEC, schema=replace(SPEC.schema, event_id="txn"), fit_info={INTEGER_IDS: ["txn"]})
    event = {**_events(1)[0], "timestamp": "2026-03-01T10:00:00Z"}
    for txn in ("0775", "775", 775, "t775"):
        normalized_events(as_frame([event | {"txn": txn}], spec, "request").lazy(), spec, "request")
    normalized_events(as_frame([event], spec, "request").lazy(), spec, "request")  # a log without event ids


def test_naive_times_sent_to_a_model_trained_on_zoned_ones_are_said_once_per_source(tmp_path, caplog):
    """A client that drops every offset (a whole file, or POST /events one event at a time) was never told,
    since the warning fired only where one file or request mixed both kinds, though the spec could know that
    training's times carried offsets (dogfood 91). The spec records it, and scoring says naive times sent to
    such a model once per source, on the full path and on the fast path alike; specs fitted before say nothing."""
    from dataclasses import replace

    from seqfraud.data.events import ZONED_TIMESTAMPS, load_events
    from seqfraud.scoring.prepare import normalized_events, record_columns

    stamps = [datetime(2026, 3, 1, 10, 0, i) for i in range(4)]
    log = pl.DataFrame(
        {
            "session_id": ["a", "a", "b", "b"],
            "timestamp": stamps,
            "event_type": ["pay"] * 4,
            "label": [0, 0, 1, 1],
        }
    )
    for timestamps, zoned in (
        (pl.col("timestamp").dt.strftime("%Y-%m-%dT%H:%M:%S+01:00"), True),
        (pl.col("timestamp").dt.strftime("%Y-%m-%dT%H:%M:%SZ"), True),
        (pl.col("timestamp").dt.strftime("%Y-%m-%dT%H:%M:%S"), False),  # a log in UTC
        (pl.col("timestamp").dt.replace_time_zone("UTC"), True),
        (pl.col("timestamp"), False),
        (pl.col("timestamp").dt.epoch("ms"), "epochs"),  # instants (dogfood 216: local strings read as UTC)
    ):
        log.with_columns(timestamps).write_parquet(tmp_path / "e.parquet")
        report = load_events(str(tmp_path / "e.parquet"), Schema()).report
        assert report.get(ZONED_TIMESTAMPS, False) == zoned, timestamps

    spec = replace(SPEC, fit_info={ZONED_TIMESTAMPS: True})
    naive = [{**e, "timestamp": f"2026-03-01T10:00:0{i}"} for i, e in enumerate(_events())]
    said = "timestamps carry no UTC offset and are read as UTC, where the model's training times carried one (or were epochs)"
    for n, source in ((1, "fast-request"), (3, "fast-requests")):
        for _ in range(2):
            assert record_columns(naive[:n], spec, source) is not None  # still the fast path
        assert caplog.text.count(f"{source}: column 'timestamp': {n} of its {n} {said}") == 1
    frame = as_frame(naive, spec, "naive.csv").lazy()
    for _ in range(2):
        normalized_events(frame, spec, "naive.csv")
    assert (
        caplog.text.count(f"naive.csv: column 'timestamp': 3 of its 3 {said} (first: '2026-03-01T10:00:00'")
        == 1
    )
    # Datetimes without a zone are naive too (dogfood 173: a pandas file written after tz_localize(None)).
    times = as_frame(naive, spec, "naive.csv").with_columns(pl.col("timestamp").str.to_datetime())
    normalized_events(times.lazy(), spec, "naive.parquet")
    assert caplog.text.count(f"naive.parquet: column 'timestamp': 3 of its 3 {said}") == 1
    caplog.clear()
    normalized_events(times.with_columns(pl.col("timestamp").dt.replace_time_zone("UTC")).lazy(), spec, "utc")
    zoned = [{**e, "timestamp": e["timestamp"] + "Z"} for e in naive]
    record_columns(zoned, spec, "zoned-request")
    normalized_events(as_frame(zoned, spec, "zoned.csv").lazy(), spec, "zoned.csv")
    record_columns(naive, SPEC, "before-request")  # a spec fitted before, or on naive times
    normalized_events(as_frame(naive, SPEC, "before.csv").lazy(), SPEC, "before.csv")
    assert "no UTC offset" not in caplog.text
    # Trained on epochs: naive strings are said, naive datetimes (converted from epochs, as pandas does) are their
    # instants (review 217).
    epochs = replace(SPEC, fit_info={ZONED_TIMESTAMPS: "epochs"})
    normalized_events(times.lazy(), epochs, "epoch-datetimes.parquet")
    assert "no UTC offset" not in caplog.text
    normalized_events(as_frame(naive, epochs, "epoch-strings.csv").lazy(), epochs, "epoch-strings.csv")
    assert f"epoch-strings.csv: column 'timestamp': 3 of its 3 {said}" in caplog.text


def test_repeated_ids_of_a_one_event_model_are_said_once_per_source(caplog):
    """A transaction table's scoring file with an id written twice: two transactions scored as one session, the
    output a row short, without a word (dogfood 72)."""
    from dataclasses import replace

    from seqfraud.features.spec import LONGEST_TRAINED
    from seqfraud.scoring.prepare import normalized_events

    spec = replace(SPEC, fit_info={LONGEST_TRAINED: 1})
    event = {**_events(1)[0], "timestamp": "2026-03-01T10:00:00Z"}
    rows = [event, {**event, "session_id": "tx2"}, {**event, "session_id": "tx2"}]
    for _ in range(2):
        normalized_events(as_frame(rows, spec, "file.csv").lazy(), spec, "file.csv")
    said = "file.csv: column 'session_id': 1 row(s) repeat the id of another (first: 'tx2')"
    assert caplog.text.count(said) == 1
    caplog.clear()
    normalized_events(
        as_frame(rows, SPEC, "other.csv").lazy(), SPEC, "other.csv"
    )  # sessions of several events
    assert "repeat the id" not in caplog.text


def test_session_ids_written_as_decimals_are_said_where_the_model_records_no_integer_ids(caplog):
    """A CSV whose integer ids a reader turned into floats (1008338.0) was scored without a word, under ids that
    join nothing, where a Parquet float column and the service refuse them (dogfood 108)."""
    from seqfraud.scoring.prepare import normalized_events

    events = [{**e, "timestamp": "2026-03-01T10:00:00Z"} for e in _events(3)]
    for i, sid in enumerate(("1008338.0", "1008338.0", "1008701")):
        events[i]["session_id"] = sid
    normalized_events(as_frame(events, SPEC, "floats.csv").lazy(), SPEC, "floats.csv")
    assert (
        "floats.csv: column 'session_id': 2 row(s) hold an id written as a decimal (first: '1008338.0')"
        in caplog.text
    )
    # The fast path of a few clean events (POST /score) leaves them to the full one, which says so.
    from seqfraud.scoring.prepare import record_columns

    assert record_columns(events, SPEC) is None and record_columns(events[2:], SPEC) is not None
    caplog.clear()
    categories = as_frame(events, SPEC, "floats.parquet").with_columns(
        pl.col("session_id").cast(pl.Categorical)
    )
    normalized_events(categories.lazy(), SPEC, "floats.parquet")  # pandas' category dtype, written to Parquet
    assert "floats.parquet: column 'session_id': 2 row(s) hold an id written as a decimal" in caplog.text
    caplog.clear()
    for e in events:
        e["session_id"] = "1008338"
    normalized_events(as_frame(events, SPEC, "digits.csv").lazy(), SPEC, "digits.csv")
    assert "written as a decimal" not in caplog.text


def test_sessions_cut_at_a_files_edges_are_said():
    """A month partition cut 90 of 822 payment runs, 33 of them to one event, and score and monitor read them as
    whole, unsaid (dogfood 204): three times training's 1% of sessions shorter than its 1st percentile is said."""
    from dataclasses import replace

    from seqfraud.features.spec import SHORTEST_TRAINED
    from seqfraud.scoring.prepare import cut_sessions_said

    spec = replace(SPEC, fit_info={SHORTEST_TRAINED: 3})
    said = cut_sessions_said("june.parquet", spec, 90, 822)
    assert said is not None and said.startswith(
        "june.parquet: 90 of its 822 sessions (10.9%) have fewer events"
    )
    assert cut_sessions_said("june.parquet", spec, 20, 822) is None  # 2.4%: traffic
    assert cut_sessions_said("june.parquet", spec, 9, 100) is None  # too few to tell
    assert cut_sessions_said("june.parquet", SPEC, 90, 822) is None  # a spec from before it was recorded


def test_sessions_that_start_where_trainings_never_did_are_said():
    """The last events of April sessions delivered in May's file scored as whole sessions, unsaid (dogfood 238: 61
    of 1,493, frauds moved to approve): sessions whose first event is of a type that opened under 1% of training's
    sessions are said from three times training's share of them (and 10, 1%)."""
    from dataclasses import replace

    from seqfraud.features.spec import OPENING_SHARES
    from seqfraud.scoring.prepare import unopened_said

    spec = replace(
        SPEC,
        vocab={**SPEC.vocab, "event_type": ["login", "open_app", "send", "confirm"]},
        fit_info={OPENING_SHARES: {"login": 0.97, "open_app": 0.02}},  # 1% open otherwise
    )
    said = unopened_said("may.parquet", spec, {"send": 50, "confirm": 13, "4": 900}, 1_493, recoded=True)
    assert said is not None and said.startswith(
        "may.parquet: 63 of its 1,493 sessions (4.2%) start with an event of a type that opens under 1% of "
        "training's sessions ('send' 50, 'confirm' 13), against 1.0% in training"
    )  # types the model never learnt are a recoding's to say, where it was said (review 240)
    # Where it was not, a new first event is said (review 242: a release's app_open before every session, unsaid).
    said = unopened_said("may.parquet", spec, {"app_open": 1_493}, 1_493)
    assert said is not None and "1,493 of its 1,493 sessions" in said and "('app_open' 1,493)" in said
    assert unopened_said("may.parquet", spec, {"login": 1_450, "send": 43}, 1_493) is None  # 2.9%: under 3x
    assert unopened_said("may.parquet", spec, {"login": 100, "send": 9}, 109) is None  # too few to tell
    assert (
        unopened_said("may.parquet", SPEC, {"send": 500}, 500) is None
    )  # a spec from before it was recorded

#!/usr/bin/env python3
"""Compute the Olist key results straight from the shared raw files.

An independent cross-check for krscore: standard library only, no krscore
code, the scoring rules from DESIGN.md, as of 2018-03-31.

    python3 examples/olist/check_expected.py

The printed tables are what EXPECTED.md records.
"""

import csv
import datetime as dt
import tomllib
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent
DATA = ROOT / ".." / ".." / ".." / "shared" / "data" / "real"
AS_OF = dt.date(2018, 3, 31)

Q1 = (dt.date(2018, 1, 1), dt.date(2018, 3, 31))
Q4 = (dt.date(2017, 10, 1), dt.date(2017, 12, 31))


def read_leads():
    """(day, origin) per lead; origin '' where the export left it empty."""
    with open(DATA / "olist_marketing_qualified_leads_dmy.csv", encoding="utf-8", newline="") as src:
        return [
            (dt.datetime.strptime(row["first_contact_date"], "%d-%m-%Y").date(), row["origin"])
            for row in csv.DictReader(src)
        ]


def read_deals():
    """(day, segment, declared revenue) per deal; won_date is local time."""
    with open(DATA / "olist_closed_deals.csv", encoding="utf-8", newline="") as src:
        return [
            (
                dt.datetime.strptime(row["won_date"], "%Y-%m-%d %H:%M:%S").date(),
                row["business_segment"],
                float(row["declared_monthly_revenue"]) if row["declared_monthly_revenue"] else None,
            )
            for row in csv.DictReader(src)
        ]


LEADS = read_leads()
DEALS = read_deals()


def inside(day, window):
    return window[0] <= day <= min(window[1], AS_OF)


def leads(window, channel=None):
    return sum(1 for day, origin in LEADS if inside(day, window) and channel in (None, origin))


def deals(window):
    return sum(1 for day, _, _ in DEALS if inside(day, window))


def span(window):
    return f"{window[0]}..{min(window[1], AS_OF)}"


def check_okr_file():
    """Stop if the OKR file no longer says what the rows below assume."""
    with open(ROOT / "config" / "okrs" / "seller_acquisition.toml", "rb") as src:
        objective = tomllib.load(src)["objective"][0]
    krs = {kr["id"]: kr for kr in objective["key_result"]}
    assert objective["period"] == "2018-Q1"
    assert set(krs) == {"organic-leads", "leads-total", "deals-won", "lead-to-deal"}, sorted(krs)
    assert krs["organic-leads"]["where"] == {"channel": "organic_search"}
    assert krs["organic-leads"]["baseline"] == "previous_period"
    assert krs["organic-leads"]["target"] == "+40%"
    assert krs["leads-total"]["target"] == 3000 and "where" not in krs["leads-total"]
    assert krs["deals-won"]["target"] == 400 and krs["deals-won"]["weight"] == 2
    assert krs["lead-to-deal"]["target"] == 0.10
    return krs


def main():
    check_okr_file()
    rows = []

    # organic-leads: increase, baseline = previous calendar quarter
    value, baseline = leads(Q1, "organic_search"), leads(Q4, "organic_search")
    target = baseline * 1.4
    raw = (value - baseline) / (target - baseline)
    rows.append(("organic-leads", "leads", "channel=organic_search", value, baseline, target, raw, 1))

    # leads-total: at_least, no baseline, every lead row counts
    value = leads(Q1)
    rows.append(("leads-total", "leads", "-", value, None, 3000, value / 3000, 1))

    # deals-won: at_least
    value = deals(Q1)
    rows.append(("deals-won", "deals_won", "-", value, None, 400, value / 400, 2))

    # lead-to-deal: ratio of the window's sums
    value = deals(Q1) / leads(Q1)
    rows.append(("lead-to-deal", "lead_to_deal", "-", value, None, 0.10, value / 0.10, 1))

    print(f"as of {AS_OF}; value window {span(Q1)}; baseline window {span(Q4)}\n")
    print("| KR | metric | where | value | baseline | target | raw | score |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for kr, metric, where, value, baseline, target, raw, _ in rows:
        shown = f"{value:.6g}" if isinstance(value, float) else str(value)
        print(
            f"| {kr} | {metric} | {where} | {shown} | {baseline if baseline is not None else '-'} | "
            f"{target:g} | {raw:.4f} | {min(1.0, max(0.0, raw)):.4f} |"
        )
    weighted = sum(min(1.0, max(0.0, raw)) * w for *_, raw, w in rows) / sum(w for *_, w in rows)
    print(f"\nobjective seller-funnel, weighted score: {weighted:.4f}")

    print("\nLeads per channel, 2017-Q4 and 2018-Q1")
    print("\n| channel | 2017-Q4 | 2018-Q1 |")
    print("| --- | --- | --- |")
    q4 = Counter(origin for day, origin in LEADS if inside(day, Q4))
    q1 = Counter(origin for day, origin in LEADS if inside(day, Q1))
    for origin, count in q1.most_common():
        print(f"| {origin or '(empty)'} | {q4[origin]} | {count} |")
    print(f"| total | {sum(q4.values())} | {sum(q1.values())} |")

    q1_deals = [deal for deal in DEALS if inside(deal[0], Q1)]
    print(f"\ndeals won 2017-Q4: {deals(Q4)}; 2018-Q1: {len(q1_deals)}")
    print(f"deals in 2018-Q1 with an empty business_segment: {sum(1 for d in q1_deals if not d[1])}")
    print(f"declared_revenue 2018-Q1: {sum(d[2] or 0 for d in q1_deals):.2f}")
    print(f"lead rows with an empty origin in 2018-Q1: {q1['']}")
    print(f"lead_to_deal without the empty-origin rows: {len(q1_deals) / (leads(Q1) - q1['']):.6f}")


if __name__ == "__main__":
    main()

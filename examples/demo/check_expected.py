#!/usr/bin/env python3
"""Compute the demo's key results straight from the raw files.

This is an independent cross-check for krscore: it parses the exports with
the standard library only and applies the scoring rules from DESIGN.md, as
of 2026-12-03. It shares no code with generate.py or with krscore.

    python3 examples/demo/check_expected.py

The printed tables are what EXPECTED.md records.
"""

import csv
import datetime as dt
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent
AS_OF = dt.date(2026, 12, 3)

Q3 = (dt.date(2026, 7, 1), dt.date(2026, 9, 30))
Q4 = (dt.date(2026, 10, 1), dt.date(2026, 12, 31))
NPS_WINDOW = (dt.date(2026, 11, 1), dt.date(2026, 11, 1) + dt.timedelta(days=29))

MISSING = {"", "--", "N/A"}


# ------------------------------------------------------------------ parsing

def number(text, decimal=".", thousands=","):
    """Parse a cell the way the connector files describe; None if missing."""
    text = text.strip()
    if text in MISSING:
        return None
    percent = text.endswith("%")
    if percent:
        text = text[:-1]
    if thousands:
        text = text.replace(thousands, "")
    if decimal != ".":
        text = text.replace(decimal, ".")
    value = float(text)
    return value / 100 if percent else value


def read_points():
    """Return a list of (metric, day, dims, value) from every source."""
    points = []

    # web analytics: ';', decimal comma, space thousands, DD.MM.YYYY
    for path in sorted((ROOT / "data" / "web").glob("web_analytics_*.csv")):
        with open(path, encoding="utf-8", newline="") as src:
            for row in csv.DictReader(src, delimiter=";"):
                day = dt.datetime.strptime(row["Дата"], "%d.%m.%Y").date()
                dims = {"channel": row["Канал"], "region": row["Регион"]}
                for metric, column in (
                    ("sessions", "Визиты"),
                    ("orders", "Заказы"),
                    ("revenue", "Выручка, ₽"),
                ):
                    value = number(row[column], decimal=",", thousands=" ")
                    if value is not None:
                        points.append((metric, day, dims, value))

    # Yandex Direct: ',', quoted "1,234", ISO days, '--' for none
    with open(ROOT / "data" / "ads" / "yandex_direct_2026.csv", encoding="utf-8", newline="") as src:
        for row in csv.DictReader(src):
            day = dt.date.fromisoformat(row["Day"])
            dims = {"channel": "paid_search", "region": row["Region"], "campaign": row["Campaign"]}
            for metric, column in (
                ("impressions", "Impressions"),
                ("clicks", "Clicks"),
                ("ad_spend", "Cost (RUB)"),
                ("conversions", "Conversions"),
            ):
                value = number(row[column])
                if value is not None:
                    points.append((metric, day, dims, value))

    # CRM: one row per lead
    with open(ROOT / "data" / "crm" / "leads_export.csv", encoding="utf-8", newline="") as src:
        for row in csv.DictReader(src):
            day = dt.datetime.strptime(row["Created"], "%Y-%m-%d %H:%M:%S").date()
            dims = {"region": row["Region"], "channel": row["Channel"]}
            points.append(("leads", day, dims, 1.0))
            if row["Status"] == "qualified":
                points.append(("qualified_leads", day, dims, 1.0))

    # NPS survey: one row per response
    with open(ROOT / "data" / "survey" / "nps_responses.csv", encoding="utf-8", newline="") as src:
        for row in csv.DictReader(src):
            day = dt.datetime.strptime(row["Submitted"], "%d.%m.%Y").date()
            points.append(("nps_responses", day, {}, 1.0))
            if row["Score"] in ("9", "10"):
                points.append(("nps_promoters", day, {}, 1.0))
            if row["Score"] in ("0", "1", "2", "3", "4", "5", "6"):
                points.append(("nps_detractors", day, {}, 1.0))

    # brand tracker: monthly waves, percentages
    with open(ROOT / "data" / "survey" / "brand_tracker.csv", encoding="utf-8", newline="") as src:
        for row in csv.DictReader(src):
            day = dt.date.fromisoformat(row["Wave"])
            value = number(row["Aided awareness"])
            points.append(("aided_awareness", day, {"region": row["Region"]}, value))

    return points


POINTS = read_points()


# ------------------------------------------------------------------ rollups

def matches(dims, where):
    for key, wanted in where.items():
        allowed = wanted if isinstance(wanted, list) else [wanted]
        if dims.get(key) not in allowed:
            return False
    return True


def total(metric, window, where):
    first, last = window
    return sum(
        value
        for name, day, dims, value in POINTS
        if name == metric and first <= day <= last and matches(dims, where)
    )


def last_value(metric, window, where):
    first, last = window
    found = [
        (day, value)
        for name, day, dims, value in POINTS
        if name == metric and first <= day <= last and matches(dims, where)
    ]
    return max(found)[1] if found else None


DERIVED = {
    "conversion_rate": lambda t: t("orders") / t("sessions"),
    "cpa": lambda t: t("ad_spend") / t("conversions"),
    "ctr": lambda t: t("clicks") / t("impressions"),
    "nps": lambda t: 100 * (t("nps_promoters") - t("nps_detractors")) / t("nps_responses"),
    "lead_rate": lambda t: t("qualified_leads") / t("sessions"),
}


def value_of(metric, window, where):
    """Roll a metric up over a window (clipped at the as-of day)."""
    window = (window[0], min(window[1], AS_OF))
    if metric in DERIVED:
        return DERIVED[metric](lambda name: total(name, window, where))
    if metric == "aided_awareness":
        return last_value(metric, window, where)
    return total(metric, window, where)


# ------------------------------------------------------------------ the KRs

# (objective, kr id, metric, where, window, type, target, baseline window, weight)
KRS = [
    ("kz-launch", "kz-qualified-leads", "qualified_leads", {"region": "KZ"}, Q4, "at_least", 2000, None, 2),
    ("kz-launch", "kz-aided-awareness", "aided_awareness", {"region": "KZ"}, Q4, "at_least", 0.15, None, 1),
    ("kz-launch", "kz-lead-rate", "lead_rate", {"region": "KZ"}, Q4, "at_least", 0.08, None, 1),
    ("traffic-to-purchases", "conversion-rate-up", "conversion_rate", {}, Q4, "increase", "+25%", Q3, 1),
    ("traffic-to-purchases", "cpa-down", "cpa", {}, Q4, "decrease", "-15%", Q3, 1),
    ("traffic-to-purchases", "search-ads-ctr", "ctr", {}, Q4, "at_least", 0.065, None, 1),
    ("expert-source", "organic-sessions-up", "sessions", {"channel": "organic"}, Q4, "increase", "+40%", Q3, 2),
    ("expert-source", "referral-sessions-up", "sessions", {"channel": "referral"}, Q4, "increase", "+30%", Q3, 1),
    ("new-product-launch", "nps-first-30-days", "nps", {}, NPS_WINDOW, "at_least", 40, None, 2),
    ("new-product-launch", "nps-responses", "nps_responses", {}, NPS_WINDOW, "at_least", 300, None, 1),
]

COUNTERS = {"qualified_leads", "sessions", "nps_responses"}

# KRs whose expected results EXPECTED.md works out by hand, in its second table (a milestone
# by count and one by date, a CPA cap with a budget, a band)
BY_HAND = {"kz-november-leads", "direct-cpa-cap", "order-value-band", "landing-pages-live"}


def resolve_target(target, baseline):
    if isinstance(target, str):
        return baseline * (1 + float(target.rstrip("%")) / 100)
    return target


def raw_score(kind, value, baseline, target):
    if kind in ("increase", "decrease"):
        return (value - baseline) / (target - baseline)
    return value / target  # at_least without a baseline


def clamp(x):
    return max(0.0, min(1.0, x))


def fmt(x):
    if x is None:
        return "-"
    if float(x).is_integer():
        return f"{int(x):,}".replace(",", " ")
    if abs(x) >= 100:
        return f"{x:,.2f}".replace(",", " ")
    return f"{x:.6g}"


def span(window):
    first, last = window[0], min(window[1], AS_OF)
    return f"{first}..{last}"


def check_okr_files():
    """Stop if the OKR files no longer say what the KRS table above assumes."""
    files = {}
    for path in sorted((ROOT / "config" / "okrs").glob("*.toml")):
        with open(path, "rb") as src:
            for objective in tomllib.load(src)["objective"]:
                for kr in objective["key_result"]:
                    files[kr["id"]] = (objective["id"], kr)
    assert set(files) == {row[1] for row in KRS} | BY_HAND, sorted(files)
    for objective, kr_id, metric, where, window, kind, target, base_window, weight in KRS:
        owner, kr = files[kr_id]
        assert owner == objective, kr_id
        assert kr["metric"] == metric, kr_id
        assert kr.get("where", {}) == where, kr_id
        assert kr["target"] == target, kr_id
        assert kr.get("type", kind) == kind, kr_id
        assert kr.get("weight", 1) == weight, kr_id
        baseline = kr.get("baseline")
        if isinstance(baseline, dict):  # written as dates: the same days as the window's
            baseline = (dt.date.fromisoformat(baseline["start"]),
                        dt.date.fromisoformat(baseline["end"]))
            assert baseline == base_window, kr_id
        else:
            assert (baseline == "previous_period") == (base_window is not None), kr_id
        if "start" in kr:
            start = dt.date.fromisoformat(kr["start"])
            assert window == (start, start + dt.timedelta(days=kr["days"] - 1)), kr_id


def main():
    check_okr_files()
    print(f"as of {AS_OF}\n")
    print("| objective | KR | metric | where | value window | value | baseline window | baseline | target | raw | score |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    scores = {}
    forecasts = []
    for objective, kr, metric, where, window, kind, target, base_window, weight in KRS:
        value = value_of(metric, window, where)
        baseline = value_of(metric, base_window, where) if base_window else None
        goal = resolve_target(target, baseline)
        raw = raw_score(kind, value, baseline, goal)
        scores.setdefault(objective, []).append((clamp(raw), weight))
        where_text = ", ".join(f"{k}={v}" for k, v in where.items()) or "-"
        print(
            f"| {objective} | {kr} | {metric} | {where_text} | {span(window)} | {fmt(value)} | "
            f"{span(base_window) if base_window else '-'} | {fmt(baseline)} | {fmt(goal)} | "
            f"{raw:.4f} | {clamp(raw):.4f} |"
        )
        if metric in COUNTERS and window[1] > AS_OF:
            elapsed = (AS_OF - window[0]).days + 1
            length = (window[1] - window[0]).days + 1
            projected = value * length / elapsed
            forecasts.append((kr, elapsed, length, value, projected, raw_score(kind, projected, baseline, goal)))

    print("\n| objective | weighted score |")
    print("| --- | --- |")
    for objective, parts in scores.items():
        weighted = sum(s * w for s, w in parts) / sum(w for _, w in parts)
        print(f"| {objective} | {weighted:.4f} |")

    print("\nCounter KRs whose window is still open: run-rate forecast to the window's end")
    print("\n| KR | days elapsed / in window | value to date | projected at window end | raw at projection |")
    print("| --- | --- | --- | --- | --- |")
    for kr, elapsed, length, value, projected, raw in forecasts:
        print(f"| {kr} | {elapsed} / {length} | {fmt(value)} | {fmt(projected)} | {raw:.4f} |")

    # a partial quarter against a whole one: the like-for-like alternative
    print("\nCounter KRs with a previous_period baseline, like for like (same number of days)")
    print("\n| KR | value window | value | baseline window | baseline | target | raw |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for objective, kr, metric, where, window, kind, target, base_window, weight in KRS:
        if metric not in COUNTERS or base_window is None:
            continue
        elapsed = (AS_OF - window[0]).days
        same_days = (base_window[0], base_window[0] + dt.timedelta(days=elapsed))
        value = value_of(metric, window, where)
        baseline = value_of(metric, same_days, where)
        goal = resolve_target(target, baseline)
        raw = raw_score(kind, value, baseline, goal)
        print(
            f"| {kr} | {span(window)} | {fmt(value)} | {span(same_days)} | {fmt(baseline)} | "
            f"{fmt(goal)} | {raw:.4f} |"
        )

    # the sums behind each ratio, for tracking down a disagreement
    parts = {
        "conversion_rate": ("orders", "sessions"),
        "cpa": ("ad_spend", "conversions"),
        "ctr": ("clicks", "impressions"),
        "nps": ("nps_promoters", "nps_detractors", "nps_responses"),
        "lead_rate": ("qualified_leads", "sessions"),
    }
    print("\nSums behind the derived KRs")
    print("\n| KR | window | sums |")
    print("| --- | --- | --- |")
    for objective, kr, metric, where, window, kind, target, base_window, weight in KRS:
        if metric not in parts:
            continue
        for win in (window, base_window):
            if win is None:
                continue
            clipped = (win[0], min(win[1], AS_OF))
            sums = ", ".join(f"{name} {fmt(total(name, clipped, where))}" for name in parts[metric])
            print(f"| {kr} | {span(win)} | {sums} |")

    # the story's checkpoints, as daily rates so a partial quarter compares fairly
    q4_to_date = (Q4[0], AS_OF)
    q4_days = (AS_OF - Q4[0]).days + 1
    q3_days = (Q3[1] - Q3[0]).days + 1
    print("\nStory checkpoints (Q4 to date vs Q3)")
    for label, metric, where in (
        ("organic sessions per day", "sessions", {"channel": "organic"}),
        ("referral sessions per day", "sessions", {"channel": "referral"}),
        ("KZ sessions per day", "sessions", {"region": "KZ"}),
    ):
        q3 = total(metric, Q3, where) / q3_days
        q4 = total(metric, q4_to_date, where) / q4_days
        print(f"  {label}: Q3 {q3:,.1f}, Q4 {q4:,.1f}, change {100 * (q4 / q3 - 1):+.1f}%")
    for metric in ("conversion_rate", "cpa", "ctr"):
        q3 = value_of(metric, Q3, {})
        q4 = value_of(metric, Q4, {})
        print(f"  {metric}: Q3 {q3:.6g}, Q4 {q4:.6g}, change {100 * (q4 / q3 - 1):+.1f}%")
    kz_days = {day for name, day, dims, _ in POINTS if name == "sessions" and dims["region"] == "KZ"}
    print(f"  first KZ web day: {min(kz_days)}")
    print(
        "  NPS first 30 days: "
        + ", ".join(
            f"{name} {value_of(name, NPS_WINDOW, {}):.0f}"
            for name in ("nps_responses", "nps_promoters", "nps_detractors")
        )
    )
    extra = (NPS_WINDOW[1] + dt.timedelta(days=1), AS_OF)
    print(
        f"  NPS 2026-11-01..{AS_OF} (one window too long): "
        f"{value_of('nps', (NPS_WINDOW[0], AS_OF), {}):.4f} over "
        f"{value_of('nps_responses', (NPS_WINDOW[0], AS_OF), {}):.0f} responses; "
        f"{value_of('nps_responses', extra, {}):.0f} responses fall after the 30 days"
    )


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Generate the demo's raw exports under examples/demo/data/.

The story: a Russian online retailer runs its marketing out of Moscow and
launches in Kazakhstan on 2026-07-01. The files imitate what the team would
download by hand from its tools, quirks included:

  data/web/web_analytics_2026-MM.csv   web analytics, Russian Excel export
  data/ads/yandex_direct_2026.csv      ad platform, English export
  data/crm/leads_export.csv            CRM, one row per lead
  data/survey/nps_responses.csv        NPS survey for the new product
  data/survey/brand_tracker.csv        monthly brand awareness waves

Standard library only. The output is deterministic: running the script again
rewrites byte-identical files.

    python3 examples/demo/generate.py
"""

import csv
import datetime as dt
import math
import random
from pathlib import Path

SEED = 20261204
FIRST_DAY = dt.date(2026, 4, 1)
LAST_DAY = dt.date(2026, 12, 3)
KZ_LAUNCH = dt.date(2026, 7, 1)
NEW_PRODUCT_LAUNCH = dt.date(2026, 11, 1)
BLACK_FRIDAY = dt.date(2026, 11, 27)

DATA = Path(__file__).resolve().parent / "data"

CHANNELS = ["organic", "paid_search", "social", "email", "referral", "direct"]


def days(first, last):
    day = first
    while day <= last:
        yield day
        day += dt.timedelta(days=1)


def months_since(day, origin):
    """Fractional months between two dates (30.44-day months)."""
    return (day - origin).days / 30.44


def ramp(day, start, end, low, high):
    """Linear from `low` at `start` to `high` at `end`, flat outside."""
    if day <= start:
        return low
    if day >= end:
        return high
    share = (day - start).days / (end - start).days
    return low + (high - low) * share


def noisy(rng, value, spread):
    return value * math.exp(rng.gauss(0.0, spread))


def poisson(rng, lam):
    """Knuth's method; fine for the small rates used here."""
    if lam <= 0:
        return 0
    if lam > 30:
        return max(0, round(rng.gauss(lam, math.sqrt(lam))))
    limit = math.exp(-lam)
    count = 0
    product = rng.random()
    while product > limit:
        count += 1
        product *= rng.random()
    return count


def write_csv(path, header, rows, delimiter=","):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8", newline="") as out:
        writer = csv.writer(out, delimiter=delimiter, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)


# ---------------------------------------------------------------- formatting

def ru_int(n):
    """12345 -> '12 345' (space as thousands separator)."""
    return f"{n:,}".replace(",", " ")


def ru_money(x):
    """1234567.891 -> '1 234 567,89'."""
    return f"{x:,.2f}".replace(",", " ").replace(".", ",")


def en_int(n):
    return f"{n:,}"


def en_money(x):
    return f"{x:,.2f}"


# --------------------------------------------------------------- web traffic

# Typical daily sessions per channel in Russia in April 2026.
RU_SESSIONS = {
    "organic": 5200,
    "paid_search": 3600,
    "social": 1900,
    "email": 850,
    "referral": 640,
    "direct": 2500,
}
# Share of Kazakhstan sessions per channel (paid search carries the launch).
KZ_SHARE = {
    "organic": 0.24,
    "paid_search": 0.38,
    "social": 0.20,
    "email": 0.04,
    "referral": 0.05,
    "direct": 0.09,
}
# Orders per session before the checkout redesign.
BASE_CR = {
    "organic": 0.018,
    "paid_search": 0.022,
    "social": 0.009,
    "email": 0.041,
    "referral": 0.026,
    "direct": 0.031,
}
WEEKDAY = [1.05, 1.06, 1.04, 1.02, 0.96, 0.88, 0.93]  # Monday first


def channel_growth(channel, day):
    """Traffic multiplier against April for one channel in Russia."""
    months = months_since(day, FIRST_DAY)
    if channel == "organic":
        # slow drift until the content programme starts paying off in October
        base = 1.0 + 0.012 * months
        return base * ramp(day, dt.date(2026, 9, 20), dt.date(2026, 12, 3), 1.0, 1.45)
    if channel == "referral":
        base = 1.0 + 0.01 * months
        return base * ramp(day, dt.date(2026, 9, 25), dt.date(2026, 12, 3), 1.0, 1.32)
    if channel == "paid_search":
        return 1.0 + 0.02 * months
    if channel == "social":
        return 1.0 + 0.015 * months
    if channel == "email":
        return 1.0 + 0.01 * months
    return 1.0 + 0.008 * months  # direct


def kz_daily_sessions(day):
    """All-channel Kazakhstan sessions per day, growing after the launch."""
    if day < KZ_LAUNCH:
        return 0.0
    if day < dt.date(2026, 10, 1):
        return ramp(day, KZ_LAUNCH, dt.date(2026, 9, 30), 70.0, 190.0)
    return ramp(day, dt.date(2026, 10, 1), LAST_DAY, 205.0, 390.0)


def conversion_lift(day):
    """The checkout redesign ships in late September and keeps improving."""
    return ramp(day, dt.date(2026, 9, 21), dt.date(2026, 11, 15), 1.0, 1.26)


def seasonal(day):
    """Black Friday week lifts traffic and conversion."""
    gap = (day - BLACK_FRIDAY).days
    if -3 <= gap <= 3:
        return 1.25 - 0.05 * abs(gap)
    return 1.0


def basket_total(rng, orders, aov):
    """Revenue of `orders` orders averaging `aov` roubles."""
    if orders < 40:
        return sum(noisy(rng, aov, 0.35) for _ in range(orders))
    return noisy(rng, orders * aov, 0.04)


def web_rows(rng):
    rows_by_month = {}
    for day in days(FIRST_DAY, LAST_DAY):
        weekday = WEEKDAY[day.weekday()]
        season = seasonal(day)
        for region in ("RU", "KZ"):
            if region == "KZ" and day < KZ_LAUNCH:
                continue
            for channel in CHANNELS:
                if region == "RU":
                    level = RU_SESSIONS[channel] * channel_growth(channel, day)
                    aov = 3650.0
                    region_cr = 1.0
                else:
                    level = kz_daily_sessions(day) * KZ_SHARE[channel]
                    aov = 4150.0
                    region_cr = 0.55
                if channel == "email" and day.weekday() in (1, 3):
                    level *= 1.6  # newsletters go out on Tuesdays and Thursdays
                sessions = max(0, round(noisy(rng, level * weekday * season, 0.07)))
                cr = BASE_CR[channel] * region_cr * conversion_lift(day) * season
                orders = poisson(rng, sessions * cr)
                revenue = basket_total(rng, orders, aov)
                rows_by_month.setdefault(day.strftime("%Y-%m"), []).append([
                    day.strftime("%d.%m.%Y"),
                    channel,
                    region,
                    ru_int(sessions),
                    ru_int(orders),
                    ru_money(revenue),
                ])
    return rows_by_month


# ----------------------------------------------------------- Yandex Direct ads

# name, region, first day, impressions per day, CTR, cost per click (RUB)
CAMPAIGNS = [
    ("RU_Brand_Search", "RU", FIRST_DAY, 6200, 0.118, 21.0),
    ("RU_Generic_Search", "RU", FIRST_DAY, 41000, 0.061, 38.0),
    ("RU_Retargeting_YAN", "RU", FIRST_DAY, 9500, 0.016, 14.0),
    ("KZ_Launch_Search", "KZ", KZ_LAUNCH, 1500, 0.057, 31.0),
    ("KZ_Brand_Search", "KZ", dt.date(2026, 10, 1), 300, 0.102, 18.0),
]
# Clicks that turn into a conversion, before the new landing pages.
CAMPAIGN_CVR = {
    "RU_Brand_Search": 0.062,
    "RU_Generic_Search": 0.021,
    "RU_Retargeting_YAN": 0.035,
    "KZ_Launch_Search": 0.024,
    "KZ_Brand_Search": 0.040,
}


def landing_page_lift(day):
    """New landing pages (A/B-tested in October) raise click-to-conversion."""
    return ramp(day, dt.date(2026, 9, 28), dt.date(2026, 11, 10), 1.0, 1.12)


def ads_rows(rng):
    rows = []
    for day in days(FIRST_DAY, LAST_DAY):
        weekday = WEEKDAY[day.weekday()]
        season = seasonal(day)
        for name, region, start, impressions, ctr, cpc in CAMPAIGNS:
            if day < start:
                continue
            grow = 1.0 + 0.015 * months_since(day, start)
            if region == "KZ":
                grow = 1.0 + 0.09 * months_since(day, start)
            shown = max(0, round(noisy(rng, impressions * grow * weekday * season, 0.10)))
            clicks = min(shown, max(0, round(noisy(rng, shown * ctr, 0.08))))
            # auction prices creep up in Q4
            price = noisy(rng, cpc * ramp(day, dt.date(2026, 10, 1), LAST_DAY, 1.0, 1.08), 0.06)
            cost = round(clicks * price, 2)
            conversions = poisson(
                rng, clicks * CAMPAIGN_CVR[name] * landing_page_lift(day) * season
            )
            ctr_text = f"{100 * clicks / shown:.2f}%" if shown else "0.00%"
            rows.append([
                day.isoformat(),
                name,
                region,
                en_int(shown),
                en_int(clicks),
                ctr_text,
                en_money(cost),
                str(conversions) if conversions else "--",
            ])
    return rows


# ------------------------------------------------------------------- CRM leads

# Leads per day in Russia by channel.
RU_LEADS = {
    "organic": 9.0,
    "paid_search": 11.0,
    "social": 4.0,
    "email": 3.0,
    "referral": 2.0,
    "direct": 5.0,
}
KZ_LEAD_SHARE = {
    "organic": 0.22,
    "paid_search": 0.42,
    "social": 0.21,
    "email": 0.03,
    "referral": 0.05,
    "direct": 0.07,
}
# Working hours carry most leads; weights per hour of day.
HOUR_WEIGHTS = [1, 1, 1, 1, 1, 1, 2, 4, 7, 10, 12, 12, 11, 12, 12, 11, 10, 9, 8, 7, 6, 4, 3, 2]


def kz_daily_leads(day):
    if day < KZ_LAUNCH:
        return 0.0
    if day < dt.date(2026, 10, 1):
        return ramp(day, KZ_LAUNCH, dt.date(2026, 9, 30), 5.0, 17.0)
    return ramp(day, dt.date(2026, 10, 1), LAST_DAY, 28.8, 52.6)


def lead_status(rng, region, created, today):
    """Sales qualify a lead within a few days; recent leads are still new."""
    age = (today - created.date()).days
    if age < 5 and rng.random() < 0.85 - 0.15 * age:
        return "new"
    qualified_share = 0.57 if region == "KZ" else 0.42
    return "qualified" if rng.random() < qualified_share else "disqualified"


def crm_rows(rng):
    leads = []
    for day in days(FIRST_DAY, LAST_DAY):
        weekday = 0.7 if day.weekday() >= 5 else 1.07
        for region in ("RU", "KZ"):
            for channel in CHANNELS:
                if region == "RU":
                    rate = RU_LEADS[channel] * (1.0 + 0.01 * months_since(day, FIRST_DAY))
                else:
                    rate = kz_daily_leads(day) * KZ_LEAD_SHARE[channel]
                for _ in range(poisson(rng, rate * weekday)):
                    hour = rng.choices(range(24), weights=HOUR_WEIGHTS)[0]
                    second = rng.randrange(3600)
                    created = dt.datetime.combine(day, dt.time(hour, second // 60, second % 60))
                    status = lead_status(rng, region, created, LAST_DAY)
                    leads.append((created, region, channel, status))
    leads.sort(key=lambda lead: lead[0])
    return [
        [f"L{number:06d}", created.strftime("%Y-%m-%d %H:%M:%S"), region, channel, status]
        for number, (created, region, channel, status) in enumerate(leads, start=1)
    ]


# ------------------------------------------------------------------ NPS survey

COMMENTS = {
    "promoter": [
        "Отличный продукт, всем советую",
        "Быстрая доставка, всё понравилось",
        "Очень удобно",
        "Лучше, чем ожидал",
        "Заказала второй раз, буду ещё",
        'Поддержка ответила за 5 минут, "спасибо" им',
    ],
    "passive": [
        "Нормально, но дороговато",
        "В целом хорошо",
        "Хотелось бы больше цветов",
        "Доставка задержалась на день",
    ],
    "detractor": [
        "Сломался через неделю",
        "Долго ждал ответа поддержки",
        "Не подошёл размер, возврат сложный",
        "Цена выше, чем у конкурентов",
        "Инструкция только на английском",
    ],
}


def score_for(rng, group):
    if group == "promoter":
        return rng.choice([9, 10, 10])
    if group == "passive":
        return rng.choice([7, 8, 8])
    return rng.choices(range(7), weights=[2, 1, 1, 2, 3, 5, 6])[0]


def nps_rows(rng):
    # Exact mix in the first 30 days (2026-11-01..2026-11-30), then a few
    # grumpier early-December answers, so the window's edge matters.
    groups_first_month = ["promoter"] * 152 + ["passive"] * 101 + ["detractor"] * 31
    groups_after = ["promoter"] * 8 + ["passive"] * 7 + ["detractor"] * 9
    rng.shuffle(groups_first_month)
    rng.shuffle(groups_after)

    first_month = list(days(NEW_PRODUCT_LAUNCH, dt.date(2026, 11, 30)))
    day_weights = [max(1.0, 20.0 - 0.6 * i) for i in range(len(first_month))]
    answered = [
        (rng.choices(first_month, weights=day_weights)[0], group)
        for group in groups_first_month
    ]
    december = list(days(dt.date(2026, 12, 1), LAST_DAY))
    answered += [(rng.choice(december), group) for group in groups_after]
    answered.sort(key=lambda item: item[0])

    respondent_ids = rng.sample(range(10000, 99999), len(answered))
    rows = []
    for (day, group), respondent in zip(answered, respondent_ids):
        comment = rng.choice(COMMENTS[group]) if rng.random() < 0.45 else ""
        rows.append([day.strftime("%d.%m.%Y"), f"R-{respondent}", str(score_for(rng, group)), comment])
    return rows


# ---------------------------------------------------------------- brand tracker

AWARENESS = {
    "RU": [38.4, 38.9, 39.6, 40.1, 40.7],
    "KZ": [3.2, 5.9, 8.4, 10.7, 13.1],
}
WAVES = [dt.date(2026, 7, 31), dt.date(2026, 8, 31), dt.date(2026, 9, 30),
         dt.date(2026, 10, 31), dt.date(2026, 11, 30)]


def brand_rows():
    rows = []
    for index, wave in enumerate(WAVES):
        for region in ("RU", "KZ"):
            rows.append([wave.isoformat(), region, f"{AWARENESS[region][index]:.1f}%"])
    return rows


def main():
    # one stream per source, all drawn from the seed, so tuning one source
    # leaves the others' numbers alone
    root = random.Random(SEED)
    streams = {name: random.Random(root.getrandbits(64)) for name in ("web", "ads", "crm", "nps")}

    for month, rows in web_rows(streams["web"]).items():
        write_csv(
            DATA / "web" / f"web_analytics_{month}.csv",
            ["Дата", "Канал", "Регион", "Визиты", "Заказы", "Выручка, ₽"],
            rows,
            delimiter=";",
        )
    write_csv(
        DATA / "ads" / "yandex_direct_2026.csv",
        ["Day", "Campaign", "Region", "Impressions", "Clicks", "CTR", "Cost (RUB)", "Conversions"],
        ads_rows(streams["ads"]),
    )
    write_csv(
        DATA / "crm" / "leads_export.csv",
        ["Lead ID", "Created", "Region", "Channel", "Status"],
        crm_rows(streams["crm"]),
    )
    write_csv(
        DATA / "survey" / "nps_responses.csv",
        ["Submitted", "Respondent", "Score", "Comment"],
        nps_rows(streams["nps"]),
    )
    write_csv(
        DATA / "survey" / "brand_tracker.csv",
        ["Wave", "Region", "Aided awareness"],
        brand_rows(),
    )
    print(f"wrote demo data under {DATA}")


if __name__ == "__main__":
    main()

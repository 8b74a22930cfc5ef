#!/usr/bin/env python3
"""Synthetic bank-transaction descriptions for the demo and the benchmarks (Python 3 stdlib only).

Writes `text,category` CSV (RFC 4180 via the csv module) that looks like a UK/European current
account export: payment prefixes (POS, DD, SO, CARD PAYMENT TO, CONTACTLESS, ...), merchant
names, towns, store numbers, card references (`CD 1234`), dates (`12 MAR`), case noise, stray
spacing, the odd comma (so the CSV needs RFC 4180 quoting) and the truncation banks apply to
long merchant fields.

Fifteen categories. The data is deliberately not separable by one token:
- brands share stems across categories (AMAZON PRIME vs AMAZON MKTPLACE, SHELL vs SHELL ENERGY,
  TESCO STORES vs TESCO PFS vs TESCO MOBILE, UBER vs UBER EATS, O2 vs THE O2 ARENA, ...), and
  truncation sometimes cuts the distinguishing word off;
- payment prefixes lean towards some categories but appear in several; a few big brands take
  most of a class's transactions (Zipf-like) and some lines carry a word saying what kind of
  payment it is (PFS, SUBSCRIPTION, PREMIUM, ...), as real statements do;
- references carry words from other categories (a fee naming a merchant, rent paid by standing
  order to a person, a PayPal payment to eBay);
- a share of the evaluation rows (`--unseen`) use merchants that never occur in train, as real
  statements do; their names carry ordinary words (TRATTORIA, OPTICIANS, ...) that a pretrained
  encoder can place but a bag of train-set tokens has never seen;
- optional label noise (`--label-noise`, default 0) flips a share of labels at random, as a
  hand-labelled export would.

Deterministic: the same arguments and `--seed` give byte-identical files.

Usage:
  gen_transactions.py --out-dir DIR [--rows 3000] [--eval-fraction 0.2] [--seed 13]
  gen_transactions.py --single FILE.csv --rows 50000
"""

from __future__ import annotations

import argparse
import csv
import os
import random
import sys
from dataclasses import dataclass, field

# --------------------------------------------------------------------------------------------
# Vocabulary
# --------------------------------------------------------------------------------------------

UK_TOWNS = [
    "LONDON", "EDINBURGH", "GLASGOW", "MANCHESTER", "LEEDS", "BRISTOL", "CARDIFF", "BELFAST",
    "YORK", "OXFORD", "CAMBRIDGE", "BRIGHTON", "NEWCASTLE", "LIVERPOOL", "BIRMINGHAM",
    "NOTTINGHAM", "SHEFFIELD", "ABERDEEN", "DUNDEE", "INVERNESS", "BATH", "EXETER", "NORWICH",
    "READING", "LEICESTER", "COVENTRY", "SWANSEA", "PLYMOUTH", "SOUTHAMPTON", "PORTSMOUTH",
    "STIRLING", "PERTH", "DERBY", "HULL", "CHESTER", "CANTERBURY", "MILTON KEYNES", "WATFORD",
    "CROYDON", "GUILDFORD", "HARROGATE", "DURHAM", "LANCASTER", "CARLISLE", "STOCKPORT",
    "CAMDEN", "ISLINGTON", "HACKNEY", "SHOREDITCH", "CLAPHAM", "WIMBLEDON", "LEITH", "PORTOBELLO",
]
EU_TOWNS = [
    "DUBLIN", "CORK", "PARIS", "LYON", "AMSTERDAM", "ROTTERDAM", "BERLIN", "MUNICH", "HAMBURG",
    "MADRID", "BARCELONA", "VALENCIA", "LISBON", "PORTO", "ROME", "MILAN", "FLORENCE",
    "BRUSSELS", "PRAGUE", "VIENNA", "COPENHAGEN", "STOCKHOLM", "KRAKOW", "BUDAPEST", "ATHENS",
]
LONDON = ["LONDON", "CAMDEN", "ISLINGTON", "HACKNEY", "SHOREDITCH", "CLAPHAM", "WIMBLEDON"]
SCOTLAND = ["EDINBURGH", "GLASGOW", "ABERDEEN", "DUNDEE", "INVERNESS", "STIRLING", "PERTH", "LEITH"]
MONTHS = ["JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"]
BANKS = [
    "HSBC", "BARCLAYS", "LLOYDS BANK", "NATWEST", "SANTANDER", "HALIFAX", "NATIONWIDE", "RBS",
    "TSB", "BANK OF SCOTLAND", "CLYDESDALE", "METRO BANK", "VIRGIN MONEY", "SAINSBURYS BANK",
    "TESCO BANK", "CO-OP BANK", "MONZO", "STARLING",
]
SURNAMES = [
    "SMITH", "JONES", "TAYLOR", "BROWN", "WILSON", "EVANS", "THOMAS", "ROBERTS", "CAMPBELL",
    "STEWART", "MURRAY", "MACDONALD", "PATEL", "KHAN", "OCONNOR", "KELLY", "WALKER", "WRIGHT",
    "HUGHES", "GREEN", "HALL", "WOOD", "CLARKE", "MORGAN", "REID", "FRASER", "ROSSI", "GARCIA",
    "MULLER", "DUBOIS", "NOWAK", "SILVA", "BIANCHI", "ANDERSEN", "KOWALSKI", "ALI", "SINGH",
]
INITIALS = list("ABCDEFGHJKLMNPRSTW")
FIRST_WORDS = [  # For invented local business names: "THE OLD MILL BISTRO", "ROSE & CROWN INN".
    "THE OLD MILL", "ROSE & CROWN", "RED LION", "MARKET STREET", "HIGH STREET", "STATION ROAD",
    "CASTLE", "RIVERSIDE", "HARBOUR", "PARK LANE", "KINGS", "QUEENS", "BRIDGE", "ABBEY",
    "VICTORIA", "ALBERT", "CORNER", "VILLAGE", "CITY", "NORTH STAR", "BLUEBELL", "OAKWOOD",
    "GREEN MAN", "WHITE HART", "GOLDEN", "SILVER BIRCH", "ORCHARD", "MEADOW", "FOUNTAIN",
]


@dataclass
class Category:
    """One class: its brands, the nouns local businesses of its kind are named with, and how
    its transactions are usually paid (weights over the description formats below)."""

    name: str
    weight: float  # Relative frequency in a statement.
    brands: list  # "NAME" or ("NAME", towns) for brands bound to places.
    nouns: list  # Local business kinds: "{FIRST_WORD|SURNAME} {NOUN}".
    formats: dict  # format name -> weight
    fixed: list = field(default_factory=list)  # Whole descriptions built by a callable.


CATEGORIES = [
    Category(
        "GROCERIES", 14,
        ["TESCO STORES", "TESCO EXPRESS", "TESCO METRO", "SAINSBURYS", "SAINSBURYS LOCAL",
         "ASDA STORES", "ASDA SUPERSTORE", "MORRISONS", "WM MORRISON", "WAITROSE", "M&S SIMPLY FOOD",
         "M&S FOOD", "LIDL GB", "ALDI STORES", "CO-OP GROUP FOOD", "ICELAND FOODS", "OCADO RETAIL",
         "SPAR", "NISA LOCAL", "BUDGENS", "FARMFOODS", "WHOLE FOODS MARKET", "AMAZON FRESH",
         ("CARREFOUR", EU_TOWNS), ("MONOPRIX", EU_TOWNS), ("ALBERT HEIJN", EU_TOWNS),
         ("EDEKA", EU_TOWNS), ("REWE", EU_TOWNS), ("MERCADONA", EU_TOWNS), ("ESSELUNGA", EU_TOWNS),
         ("DELHAIZE", EU_TOWNS), "SCOTMID", "COSTCUTTER", "LONDIS", "BOOKER"],
        ["GROCERS", "FOOD STORE", "MINI MARKET", "SUPERMARKET", "BUTCHERS", "BAKERY", "FISHMONGER",
         "DELICATESSEN", "FARM SHOP", "GREENGROCER", "CONVENIENCE STORE", "FOOD HALL",
         "ORGANIC MARKET", "CHEESEMONGER", "WHOLEFOODS", "ASIAN SUPERMARKET", "POLSKI SKLEP",
         "HALAL MEATS", "DAIRY", "PANTRY"],
        {"card": 6, "plain": 3, "contactless": 3, "online": 1},
    ),
    Category(
        "EATING_OUT", 14,
        ["COSTA COFFEE", "STARBUCKS", "PRET A MANGER", "GREGGS", "CAFFE NERO", "MCDONALDS",
         "BURGER KING", "KFC", "NANDOS", "PIZZA EXPRESS", "PIZZA HUT", "DOMINOS PIZZA", "WAGAMAMA",
         "ITSU", "LEON", "FIVE GUYS", "JD WETHERSPOON", "ZIZZI", "FRANKIE & BENNYS", "TOBY CARVERY",
         "HONEST BURGERS", "DISHOOM", "SUBWAY", "TIM HORTONS", "JUST EAT", "DELIVEROO",
         "UBER EATS", "WASABI", "BREWDOG", "ALL BAR ONE", "HARVESTER", "FRANCO MANCA",
         "BELLA ITALIA", "GAILS BAKERY", "BLACK SHEEP COFFEE", "TORTILLA", "COOK DAILY"],
        ["CAFE", "COFFEE HOUSE", "BISTRO", "KITCHEN", "GRILL", "TAVERN", "INN", "PIZZERIA",
         "TRATTORIA", "NOODLE BAR", "SUSHI", "TAQUERIA", "CURRY HOUSE", "TANDOORI", "KEBAB HOUSE",
         "FISH BAR", "BRASSERIE", "TEA ROOM", "BAR & GRILL", "STEAKHOUSE", "CANTINA", "DINER",
         "ESPRESSO BAR", "RESTAURANT", "PUB", "OSTERIA", "RAMEN", "DIM SUM", "BURGER JOINT",
         "CHIPPY", "GASTROPUB", "CREPERIE", "TAPAS BAR", "ROTISSERIE"],
        {"card": 5, "plain": 4, "contactless": 5, "online": 1},
    ),
    Category(
        "TRAVEL", 9,
        [("TFL TRAVEL", LONDON), ("TFL TRAVEL CH", LONDON), "TRAINLINE", "LNER",
         "AVANTI WEST COAST", "GWR", ("SCOTRAIL", SCOTLAND), "NORTHERN RAIL", "SOUTHERN RAIL",
         "EUROSTAR", "RYANAIR", "EASYJET", "BRITISH AIRWAYS", "VIRGIN ATLANTIC", "JET2", "WIZZ AIR",
         "KLM", "LUFTHANSA", "UBER TRIP", "BOLT.EU", "ADDISON LEE", "NATIONAL EXPRESS", "MEGABUS",
         "STAGECOACH", "FIRST BUS", ("LOTHIAN BUSES", ["EDINBURGH", "LEITH", "PORTOBELLO"]),
         ("EDINBURGH TRAMS", ["EDINBURGH"]), "PREMIER INN", "TRAVELODGE", "BOOKING.COM", "AIRBNB",
         "HOLIDAY INN", "HILTON HOTELS", "EXPEDIA", "HERTZ", "ENTERPRISE RENT-A-CAR",
         ("SNCF", EU_TOWNS), ("DB BAHN", EU_TOWNS), ("RENFE", EU_TOWNS), ("HEATHROW EXPRESS", LONDON),
         "NCP CAR PARKS", "RINGGO", "CALEDONIAN MACBRAYNE", "DFDS SEAWAYS"],
        ["GUEST HOUSE", "HOTEL", "B&B", "TAXIS", "CABS", "PRIVATE HIRE", "CAR PARK", "HOSTEL",
         "COACHES", "FERRIES", "CAR HIRE", "LODGE", "MOTEL", "MINICABS", "PARKING", "AIRPORT TRANSFERS",
         "BUS COMPANY", "RAILWAY STATION"],
        {"card": 5, "plain": 3, "contactless": 4, "online": 2},
    ),
    Category(
        "FUEL", 6,
        ["SHELL", "BP", "ESSO", "TEXACO", "JET", "GULF", "MURCO", "TESCO PFS", "SAINSBURYS PETROL",
         "ASDA PETROL", "MORRISONS PETROL", "MFG", "APPLEGREEN", "TOTALENERGIES", "CIRCLE K",
         ("Q8", EU_TOWNS), ("ARAL", EU_TOWNS), ("REPSOL", EU_TOWNS), ("GALP", EU_TOWNS),
         ("AGIP", EU_TOWNS), "POD POINT", "BP PULSE", "INSTAVOLT", "GRIDSERVE",
         "TESLA SUPERCHARGER", "IONITY", "SHELL RECHARGE", "MOTO HOSPITALITY"],
        ["SERVICE STATION", "FILLING STATION", "FUEL STOP", "PETROLEUM", "FUELS", "FORECOURT",
         "GARAGE PETROL", "EV CHARGING", "DIESEL", "SERVICES"],
        {"card": 6, "plain": 2, "contactless": 3},
    ),
    Category(
        "UTILITIES", 5,
        ["BRITISH GAS", "SHELL ENERGY", "OCTOPUS ENERGY", "EDF ENERGY", "E.ON NEXT",
         "SCOTTISH POWER", "OVO ENERGY", "BULB ENERGY", "SSE ENERGY", "UTILITA", "THAMES WATER",
         "SCOTTISH WATER", "SEVERN TRENT", "ANGLIAN WATER", "UNITED UTILITIES", "YORKSHIRE WATER",
         "WELSH WATER", "SOUTHERN WATER", "AFFINITY WATER", "TV LICENCE MBP", "SO ENERGY",
         "GOOD ENERGY", "ECOTRICITY"],
        ["WATER SERVICES", "ENERGY", "GAS & ELECTRIC", "ELECTRICITY", "HEATING OIL", "POWER",
         "WATER", "UTILITY"],
        {"dd": 8, "card": 1, "online": 1},
    ),
    Category(
        "TELECOMS", 5,
        ["VODAFONE", "EE LIMITED", "O2 UK", "THREE", "H3G", "GIFFGAFF", "TESCO MOBILE",
         "SKY BROADBAND", "BT GROUP", "BT BROADBAND", "VIRGIN MEDIA", "VIRGIN MOBILE", "TALKTALK",
         "PLUSNET", "HYPEROPTIC", "COMMUNITYFIBRE", "LEBARA", "LYCAMOBILE", "SMARTY", "VOXI",
         "ID MOBILE", ("ORANGE", EU_TOWNS), ("BOUYGUES TELECOM", EU_TOWNS), "VODAFONE TOPUP",
         "EE TOPUP", "SKY MOBILE", "SHELL BROADBAND"],
        ["BROADBAND", "FIBRE", "TELECOM", "MOBILE", "COMMUNICATIONS", "WIRELESS", "NETWORKS"],
        {"dd": 7, "card": 2, "online": 2},
    ),
    Category(
        "INSURANCE", 4,
        ["AVIVA", "DIRECT LINE", "ADMIRAL INSURANCE", "LV INSURANCE", "AXA INSURANCE", "CHURCHILL",
         "HASTINGS DIRECT", "ZURICH", "LEGAL & GENERAL", "VITALITY", "BUPA", "PETPLAN", "ESURE",
         "SAGA INSURANCE", "TESCO BANK INSURANCE", "MORE THAN", "SHEILAS WHEELS", "ROYAL LONDON",
         "SCOTTISH WIDOWS", ("ALLIANZ", EU_TOWNS), ("GENERALI", EU_TOWNS), "AA INSURANCE",
         "RAC MOTOR INSURANCE", "BY MILES", "HIPPO HOME"],
        ["INSURANCE", "ASSURANCE", "INSURANCE BROKERS", "UNDERWRITING", "LIFE COVER", "PET COVER",
         "MUTUAL", "INDEMNITY"],
        {"dd": 8, "card": 1, "online": 1},
    ),
    Category(
        "ENTERTAINMENT", 6,
        ["ODEON", "VUE CINEMA", "CINEWORLD", "EVERYMAN CINEMA", "PICTUREHOUSE", "TICKETMASTER",
         "SEE TICKETS", "EVENTBRITE", "DICE.FM", "STEAM GAMES", "PLAYSTATION NETWORK",
         "NINTENDO ESHOP", "XBOX STORE", "HOLLYWOOD BOWL", "NATIONAL TRUST", "MERLIN ENTERTAINMENTS",
         "ALTON TOWERS", "LONDON ZOO", "SCIENCE MUSEUM", "ROYAL ALBERT HALL", "O2 ACADEMY",
         "THE O2 ARENA", "NATIONAL THEATRE", "AMAZON PRIME VIDEO STORE", "APPLE ITUNES",
         "TOPGOLF", "FLIP OUT", "ROCK CITY", "BARBICAN"],
        ["THEATRE", "CINEMA", "COMEDY CLUB", "BOWLING", "ESCAPE ROOMS", "LEISURE CENTRE", "GALLERY",
         "MUSEUM", "MINI GOLF", "KARAOKE", "ARCADE", "CLIMBING WALL", "CONCERT HALL", "PLAYHOUSE",
         "JAZZ CLUB", "SNOOKER CLUB", "TRAMPOLINE PARK", "LASER TAG", "ICE RINK", "AQUARIUM",
         "OPERA HOUSE", "GOLF CLUB", "FESTIVAL"],
        {"card": 5, "plain": 2, "contactless": 2, "online": 3},
    ),
    Category(
        "SHOPPING", 12,
        ["AMAZON MKTPLACE", "AMAZON.CO.UK", "AMZN MKTP UK", "ARGOS", "JOHN LEWIS", "MARKS & SPENCER",
         "NEXT RETAIL", "PRIMARK", "H&M", "ZARA", "UNIQLO", "TK MAXX", "CURRYS", "APPLE STORE",
         "IKEA", "B&Q", "WICKES", "SCREWFIX", "WHSMITH", "WATERSTONES", "EBAY", "ASOS", "JD SPORTS",
         "SPORTS DIRECT", "DECATHLON", "SUPERDRY", "HOBBYCRAFT", "THE WORKS", "HOME BARGAINS",
         "B&M RETAIL", "POUNDLAND", "SELFRIDGES", "HARRODS", "LIBERTY", "ETSY", "SHEIN", "VINTED",
         ("ZALANDO", EU_TOWNS), ("FNAC", EU_TOWNS), ("EL CORTE INGLES", EU_TOWNS), "TESCO F&F",
         "ASDA GEORGE", "SAINSBURYS TU", "PAYPAL *EBAY", "DUNELM", "SMYTHS TOYS", "PETS AT HOME"],
        ["BOUTIQUE", "GIFT SHOP", "HARDWARE", "BOOKSHOP", "FLORIST", "TOY SHOP", "ANTIQUES",
         "JEWELLERS", "SHOE SHOP", "OUTFITTERS", "HOMEWARES", "DIY", "GARDEN CENTRE", "ELECTRICALS",
         "CHARITY SHOP", "HABERDASHERY", "STATIONERS", "FURNITURE", "CYCLES", "PET SUPPLIES",
         "RECORD SHOP", "VINTAGE", "TAILORS", "OPTICAL FRAMES", "CRAFTS", "KITCHENWARE"],
        {"card": 5, "plain": 2, "contactless": 3, "online": 4},
    ),
    Category(
        "HEALTH", 5,
        ["BOOTS", "BOOTS PHARMACY", "SUPERDRUG", "LLOYDS PHARMACY", "WELL PHARMACY", "SPECSAVERS",
         "VISION EXPRESS", "BUPA DENTAL CARE", "MYDENTIST", "NHS PRESCRIPTION", "NHSBSA",
         "HOLLAND & BARRETT", "ASDA PHARMACY", "TESCO PHARMACY", "CHEMIST 4 U", "NUFFIELD HEALTH",
         "SPIRE HEALTHCARE", "PHYSIOMED", "ROWLANDS PHARMACY", "BOOTS OPTICIANS", "VITALITY GP",
         "BOOTS HEARINGCARE"],
        ["PHARMACY", "CHEMIST", "DENTAL PRACTICE", "DENTAL CARE", "OPTICIANS", "PHYSIOTHERAPY",
         "MEDICAL CENTRE", "SURGERY", "CLINIC", "CHIROPRACTIC", "OSTEOPATHY", "PODIATRY",
         "HEARING CENTRE", "ORTHODONTICS", "DERMATOLOGY", "HEALTH CENTRE", "EYECARE",
         "DISPENSARY", "ACUPUNCTURE", "PHYSIO"],
        {"card": 5, "plain": 3, "contactless": 3, "dd": 1},
    ),
    Category(
        "CASH", 5, [], [], {"cash": 1},
    ),
    Category(
        "TRANSFERS", 7, [], [], {"transfer": 1},
    ),
    Category(
        "FEES_CHARGES", 3, [], [], {"fee": 1},
    ),
    Category(
        "SUBSCRIPTIONS", 6,
        ["NETFLIX.COM", "SPOTIFY", "AMAZON PRIME", "PRIME VIDEO", "DISNEY PLUS", "APPLE.COM/BILL",
         "GOOGLE *YOUTUBE PREMIUM", "GOOGLE STORAGE", "MICROSOFT*365", "ADOBE SYSTEMS", "NOW TV",
         "BRITBOX", "AUDIBLE", "DROPBOX", "ICLOUD", "PLAYSTATION PLUS", "XBOX GAME PASS",
         "PATREON", "SUBSTACK", "THE GUARDIAN", "THE TIMES", "THE ECONOMIST", "PUREGYM",
         "THE GYM GROUP", "DAVID LLOYD CLUBS", "ANYTIME FITNESS", "HELLOFRESH", "GOUSTO", "DEEZER",
         "YOUTUBE MUSIC", "OPENAI *CHATGPT", "CANVA", "LINKEDIN PREMIUM", "DUOLINGO", "HEADSPACE",
         "CALM.COM", "SKY DIGITAL", "AMAZON KINDLE UNLTD", "NINTENDO SWITCH ONLINE", "STRAVA"],
        ["MEMBERSHIP", "MONTHLY PLAN", "SUBSCRIPTION", "CLUB MEMBERSHIP", "FITNESS", "GYM",
         "YOGA STUDIO", "BOX CLUB", "STREAMING"],
        {"dd": 4, "card": 3, "online": 4},
    ),
    Category(
        "HOUSING", 4, [], [], {"housing": 1},
    ),
]

# --------------------------------------------------------------------------------------------
# Pieces of a description
# --------------------------------------------------------------------------------------------

ACRONYMS = {  # Kept upper-case when a description is title-cased ("TFL Travel London").
    "TFL", "KFC", "BP", "EE", "O2", "GWR", "LNER", "NHS", "NHSBSA", "BT", "H3G", "AA", "RAC",
    "SSE", "TV", "MBP", "DD", "SO", "POS", "ATM", "GB", "UK", "JD", "TK", "B&Q", "H&M", "M&S",
    "B&B", "B&M", "F&F", "EV", "MFG", "KLM", "DB", "NCP", "LV", "RBS", "TSB", "HSBC", "ID", "FPI",
    "FPO", "BGC", "CHAPS", "ISA", "PFS", "TU", "CD", "BS", "DFDS", "EU", "VIS", "DEB",
}


class Gen:
    """All random choices go through one `random.Random`, so output depends only on the seed."""

    def __init__(self, rng: random.Random):
        self.r = rng

    # --- small pieces -------------------------------------------------------------------------
    def date(self) -> str:
        d, m = self.r.randint(1, 28), self.r.choice(MONTHS)
        return self.r.choice([f"{d:02d} {m}", f"{d:02d}{m}", f"{d:02d}/{MONTHS.index(m) + 1:02d}",
                              f"ON {d:02d} {m}"])

    def card_ref(self) -> str:
        n = self.r.randint(1000, 9999)
        return self.r.choice([f"CD {n}", f"CD {n}", f"CARD {n}", f"****{n}", f"XXXX{n}"])

    def store_no(self) -> str:
        n = self.r.randint(1, 9999)
        return self.r.choice([f"{n:04d}", f"#{n}", f"S{n}", f"STORE {n}", f"{n}"])

    def ref(self) -> str:
        letters = "".join(self.r.choice("ABCDEFGHJKLMNPQRSTUVWXYZ") for _ in range(self.r.randint(2, 4)))
        return letters + str(self.r.randint(10000, 99999999))

    def person(self) -> str:
        first = self.r.choice(INITIALS)
        if self.r.random() < 0.3:
            first += " " + self.r.choice(INITIALS)
        return f"{first} {self.r.choice(SURNAMES)}"

    def town(self, towns=None) -> str:
        if towns:
            return self.r.choice(towns)
        return self.r.choice(EU_TOWNS) if self.r.random() < 0.08 else self.r.choice(UK_TOWNS)

    def local_name(self, noun: str) -> str:
        head = self.r.random()
        if head < 0.45:
            return f"{self.r.choice(FIRST_WORDS)} {noun}"
        if head < 0.8:
            surname = self.r.choice(SURNAMES)
            return f"{surname}{'' if surname.endswith('S') else 'S'} {noun}"
        return f"{noun} {self.r.choice(SURNAMES)}"

    # --- card-style descriptions for merchants ------------------------------------------------
    def card_like(self, fmt: str, merchant: str, towns) -> str:
        r = self.r
        town = self.town(towns)
        if fmt == "plain":  # 'Costa Coffee Edinburgh'
            return f"{merchant} {town}" if r.random() < 0.85 else f"{merchant} {self.store_no()} {town}"
        if fmt == "contactless":
            return r.choice([
                f"CONTACTLESS {merchant} {town} GB",
                f"CONTACTLESS PAYMENT {merchant} {town}",
                f"{merchant} {town} CONTACTLESS {self.date()}",
                f"CL {merchant} {self.store_no()} {town}",
            ])
        if fmt == "online":
            site = merchant.replace(" ", "").replace("'", "")
            return r.choice([
                f"CARD PAYMENT TO {merchant} ON {self.date().replace('ON ', '')}",
                f"{site}.{'COM' if towns is EU_TOWNS else 'CO.UK'} {self.card_ref()}"
                if "." not in merchant else f"{merchant} {self.card_ref()}",
                f"PAYPAL *{site}",
                f"VIS {merchant}*{self.ref()} INTERNET",
                f"ONLINE {merchant} {self.date()}",
            ])
        if fmt == "card":
            field_ = f"{merchant} {town}"
            if r.random() < 0.35:  # Banks cut the merchant field to a fixed width.
                field_ = field_[: r.randint(12, 20)].rstrip()
            return r.choice([
                f"POS {self.card_ref()} {self.date()} {field_}",
                f"POS PURCHASE {field_} * {self.date()}",
                f"CARD PAYMENT TO {merchant} {self.store_no()} {self.date()}",
                f"{field_} {self.card_ref()}",
                f"DEB {merchant} {town}",
                f"{merchant} {self.store_no()} {town} {self.card_ref()}",
                f"VIS {field_}",
                f"{self.date()} {field_}",
            ])
        if fmt == "dd":
            return r.choice([
                f"DD {merchant} {self.ref()}",
                f"DIRECT DEBIT PAYMENT TO {merchant} REF {self.ref()}",
                f"{merchant} DD",
                f"DDR {merchant}",
                f"{merchant} {self.ref()} DDR",
                f"DIRECT DEBIT {merchant}",
            ])
        raise ValueError(fmt)

    # --- categories with their own shapes -----------------------------------------------------
    def cash(self, unseen: bool) -> str:
        r = self.r
        # Unseen shapes: ATM operators and wordings that train never shows.
        if unseen:
            return r.choice([
                f"CASH MACHINE {self.town()} {self.date()}",
                f"TELLER WITHDRAWAL {r.choice(BANKS)} BRANCH",
                f"BANKOMAT {r.choice(EU_TOWNS)} {self.card_ref()}",
                f"DISTRIBUTEUR {r.choice(EU_TOWNS)} {self.date()}",
                f"CASH ADVANCE {r.choice(BANKS)} {self.town()}",
            ])
        bank = r.choice(BANKS)
        town = self.town()
        return r.choice([
            f"ATM WITHDRAWAL {bank} {town}",
            f"CASH {bank} {self.date()} {town}",
            f"CASH {bank} {town} {self.card_ref()}",
            f"LINK {town} {self.date()}",
            f"CASH WITHDRAWAL AT {bank} ATM {town}",
            f"CASHPOINT {bank} {town}",
            f"POST OFFICE COUNTER {town} CASH",
            f"NOTEMACHINE {town} {self.date()}",
            f"CARDTRONICS {town}",
            f"EURONET {r.choice(EU_TOWNS)} {self.card_ref()}",
            f"TRAVELEX {town} CURRENCY",
            f"CASH DEPOSIT {bank} {town}",
            f"CASH {self.card_ref()} {self.date()} {bank} ATM",
        ])

    def transfer(self, unseen: bool) -> str:
        r = self.r
        memo = r.choice(["SAVINGS", "POCKET MONEY", "BIRTHDAY", "DINNER", "BILLS", "LOAN", "HOLIDAY",
                         "GIFT", "THANKS", "TICKETS", "PETROL MONEY", "SHOPPING", "FOOD", ""])
        if unseen:
            return r.choice([
                f"SEPA CREDIT TRANSFER {self.person()} {memo}".strip(),
                f"GIRO {self.person()} {self.ref()}",
                f"PAYM {self.person()} {memo}".strip(),
                f"ZELLE {self.person()}",
                f"REMITTANCE {self.person()} {self.ref()}",
            ])
        p = self.person()
        return r.choice([
            f"FASTER PAYMENT TO {p} REF {memo or self.ref()}",
            f"TRANSFER TO {p} {memo}".strip(),
            f"FPO {p} {self.ref()} {memo}".strip(),
            f"FPI {p} {self.ref()}",
            f"BANK TRANSFER {p} {memo}".strip(),
            f"TFR TO SAVINGS {r.randint(10000000, 99999999)}",
            f"INTERNAL TRANSFER {r.choice(['ISA', 'SAVER', 'JOINT ACCOUNT', 'EASY ACCESS'])}",
            f"TO {r.choice(BANKS)} SAVINGS",
            f"MONZO POT {r.choice(['HOLIDAY', 'BILLS', 'RAINY DAY', 'CAR'])}",
            f"REVOLUT TOP UP {self.card_ref()}",
            f"PAYPAL *{p.replace(' ', '')}",
            f"WISE TRANSFER {p}",
            f"SO {p} {memo or self.ref()}",
            f"STANDING ORDER {p} {memo}".strip(),
            f"BGC {p} {memo or self.ref()}",
        ])

    def fee(self, unseen: bool) -> str:
        r = self.r
        if unseen:
            return r.choice([
                f"DEBIT INTEREST {self.date()}",
                f"CHEQUE BOOK CHARGE",
                f"STATEMENT COPY CHARGE {self.date()}",
                f"EXCESS CHARGE {r.randint(1, 12)} ITEMS",
                f"COMMISSION {self.card_ref()}",
            ])
        other = self.r.choice([c for c in CATEGORIES if c.brands])
        brand = self.brand_name(r.choice(other.brands))
        return r.choice([
            "OVERDRAFT FEE",
            "ARRANGED OVERDRAFT INTEREST",
            f"UNARRANGED OVERDRAFT FEE {self.date()}",
            f"NON-STERLING TRANSACTION FEE {brand}",
            f"NON-STERLING CASH FEE {r.choice(EU_TOWNS)}",
            f"FOREIGN TRANSACTION FEE {brand} {r.choice(EU_TOWNS)}",
            "MONTHLY ACCOUNT FEE",
            f"PACKAGED ACCOUNT FEE {self.date()}",
            f"UNPAID ITEM FEE {brand}",
            f"RETURNED DD FEE {brand}",
            "LATE PAYMENT FEE",
            "CARD REPLACEMENT FEE",
            "CHAPS PAYMENT FEE",
            f"INTEREST CHARGED {self.date()}",
            "ACCOUNT SERVICE CHARGE",
            f"ATM FEE {self.town()}",
            f"{r.choice(BANKS)} ACCOUNT FEE",
        ])

    def housing(self, unseen: bool) -> str:
        r = self.r
        town = self.town()
        agents = ["FOXTONS", "OPENRENT", "DEXTERS", "SAVILLS", "COUNTRYWIDE", "LINLEY & SIMPSON",
                  "CLARION HOUSING", "PEABODY", "L&Q HOUSING", "GRAINGER", "LETTINGS HUB"]
        if unseen:
            return r.choice([
                f"LEASEHOLD CHARGE {r.choice(SURNAMES)} ESTATES",
                f"HOMEOWNERS ASSOC {self.ref()}",
                f"TENANCY DEPOSIT SCHEME {self.ref()}",
                f"{r.choice(SURNAMES)} PROPERTY MANAGEMENT",
                f"LOYER {r.choice(EU_TOWNS)} {self.ref()}",
            ])
        return r.choice([
            f"SO {self.person()} RENT",
            f"STANDING ORDER {self.person()} RENT {r.choice(MONTHS)}",
            f"RENT {r.choice(agents)} {self.ref()}",
            f"{r.choice(agents)} RENT {town}",
            f"DD {r.choice(['NATIONWIDE BS', 'HALIFAX', 'SANTANDER', 'BARCLAYS', 'NATWEST', 'HSBC'])} MORTGAGE",
            f"{r.choice(['NATIONWIDE', 'HALIFAX', 'SANTANDER', 'BARCLAYS', 'TSB'])} MORTGAGE {self.ref()}",
            f"{town} COUNCIL CTAX {self.ref()}",
            f"DD {town} CITY COUNCIL COUNCIL TAX",
            f"COUNCIL TAX {town} {self.ref()}",
            f"GROUND RENT {r.choice(agents)}",
            f"SERVICE CHARGE {r.choice(SURNAMES)} BLOCK MGMT",
            f"FASTER PAYMENT TO {self.person()} REF RENT",
            f"{r.choice(agents)} {self.ref()}",
        ])

    @staticmethod
    def brand_name(b) -> str:
        return b[0] if isinstance(b, tuple) else b

    # --- noise --------------------------------------------------------------------------------
    def noisy(self, text: str) -> str:
        r = self.r
        words = text.split(" ")
        if r.random() < 0.15:  # Double spaces where the bank pads fields.
            i = r.randrange(len(words))
            words[i] = words[i] + " " * r.randint(1, 3)
        if len(words) > 2 and r.random() < 0.04:  # Two words run together.
            i = r.randrange(len(words) - 1)
            words[i: i + 2] = [words[i] + words[i + 1]]
        text = " ".join(w for w in words if w != "" or r.random() < 0.5)
        head, _, tail = text.strip().rpartition(" ")
        if (r.random() < 0.03 and head and len(tail) >= 4 and tail.isalpha()
                and not head.split(" ")[-1].isdigit()):  # Some exports put a comma before the place.
            text = f"{head}, {tail}"
        style = r.random()
        if style < 0.55:
            text = text.upper()
        elif style < 0.9:
            text = " ".join(w if w.upper() in ACRONYMS else w.capitalize() for w in text.split(" "))
        elif style < 0.95:
            text = text.lower()
        # else: as generated (upper) with nothing changed.
        return text.strip()


# Brand popularity exponent: the i-th brand of a class (0-based, in the seed's shuffled order) is
# drawn with weight 1 / (i + 1) ** ZIPF.
ZIPF = 0.8

# Words banks and merchants add that say what kind of payment it is ("SHELL WATFORD PFS",
# "NETFLIX.COM SUBSCRIPTION"); one is added to some of a class's card/DD descriptions.
CUES = {
    "FUEL": ["PFS", "PETROL", "SERVICE STN", "FUEL", "FORECOURT", "UNLEADED"],
    "SUBSCRIPTIONS": ["SUBSCRIPTION", "MONTHLY", "MEMBERSHIP", "RENEWAL", "PLAN"],
    "INSURANCE": ["PREMIUM", "POLICY", "INS", "COVER"],
    "ENTERTAINMENT": ["TICKETS", "BOX OFFICE", "ADMISSION", "BOOKING FEE"],
    "TELECOMS": ["MOBILE", "BROADBAND", "AIRTIME", "BILL"],
    "UTILITIES": ["ENERGY BILL", "WATER RATES", "GAS", "ELECTRIC"],
    "HEALTH": ["PRESCRIPTION", "PHARMACY", "DENTAL", "OPTICAL"],
    "TRAVEL": ["FARE", "TRAVEL", "TICKET", "JOURNEY"],
    "EATING_OUT": ["RESTAURANT", "TAKEAWAY", "CAFE"],
    "GROCERIES": ["SUPERMARKET", "GROCERIES", "FOOD"],
    "SHOPPING": ["RETAIL", "ONLINE ORDER", "STORE"],
}
CUE_RATE = 0.3

# Brands the demo predicts on ('Costa Coffee Edinburgh', 'TFL Travel London'): always in train.
NEVER_HELD_OUT = {"COSTA COFFEE", "TFL TRAVEL"}


class Pools:
    """Each category's brands and nouns split into a seen part (train and evaluation) and an
    unseen part (evaluation only), chosen by the seed; `NEVER_HELD_OUT` brands stay seen."""

    def __init__(self, rng: random.Random, unseen_share: float):
        self.seen: dict = {}
        self.unseen: dict = {}
        for c in CATEGORIES:
            brands, nouns = list(c.brands), list(c.nouns)
            rng.shuffle(brands)
            rng.shuffle(nouns)
            # Stable sort: anchors move to the seen end, the shuffled order is otherwise kept.
            brands.sort(key=lambda b: Gen.brand_name(b) in NEVER_HELD_OUT)
            kb = round(len(brands) * unseen_share)
            kn = round(len(nouns) * unseen_share)
            seen_brands = brands[kb:]
            # Anchors first: they are also the most popular brands of their class.
            seen_brands.sort(key=lambda b: Gen.brand_name(b) not in NEVER_HELD_OUT)
            self.seen[c.name] = (seen_brands, nouns[kn:])
            self.unseen[c.name] = (brands[:kb], nouns[:kn])


def describe(g: Gen, pools: Pools, cat: Category, unseen: bool) -> str:
    """One description of `cat`; `unseen` draws merchants (or shapes) train never shows."""
    r = g.r
    if cat.name == "CASH":
        return g.noisy(g.cash(unseen))
    if cat.name == "TRANSFERS":
        return g.noisy(g.transfer(unseen))
    if cat.name == "FEES_CHARGES":
        return g.noisy(g.fee(unseen))
    if cat.name == "HOUSING":
        return g.noisy(g.housing(unseen))
    brands, nouns = (pools.unseen if unseen else pools.seen)[cat.name]
    if not brands and not nouns:
        brands, nouns = pools.seen[cat.name]
    use_brand = brands and (not nouns or r.random() < 0.6)
    if use_brand:
        # A few big brands take most transactions (Zipf-like), as on real statements.
        b = r.choices(brands, weights=[1.0 / (i + 1) ** ZIPF for i in range(len(brands))])[0]
        merchant, towns = (b[0], b[1]) if isinstance(b, tuple) else (b, None)
    else:
        merchant, towns = g.local_name(r.choice(nouns)), None
    fmts = list(cat.formats)
    fmt = r.choices(fmts, weights=[cat.formats[f] for f in fmts])[0]
    text = g.card_like(fmt, merchant, towns)
    if cat.name in CUES and r.random() < CUE_RATE:
        cue = r.choice(CUES[cat.name])
        text = f"{text} {cue}" if r.random() < 0.7 else f"{cue} {text}"
    return g.noisy(text)


def quotas(total: int, weights: list) -> list:
    """Splits `total` over classes in proportion to `weights` (largest remainder), at least 1 each
    when total allows, so every split is stratified the same way."""
    s = sum(weights)
    raw = [total * w / s for w in weights]
    q = [int(x) for x in raw]
    for i in sorted(range(len(raw)), key=lambda i: raw[i] - q[i], reverse=True)[: total - sum(q)]:
        q[i] += 1
    return q


def make_split(g: Gen, pools: Pools, n: int, unseen_rate: float, noise: float) -> list:
    names = [c.name for c in CATEGORIES]
    rows = []
    for cat, k in zip(CATEGORIES, quotas(n, [c.weight for c in CATEGORIES])):
        for _ in range(k):
            text = describe(g, pools, cat, g.r.random() < unseen_rate)
            label = cat.name
            if noise > 0 and g.r.random() < noise:
                label = g.r.choice([x for x in names if x != cat.name])
            rows.append((text, label))
    g.r.shuffle(rows)
    return rows


def write_csv(path: str, rows: list) -> None:
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)  # Default dialect: RFC 4180 quoting, \r\n line ends.
        w.writerow(["text", "category"])
        w.writerows(rows)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    out = p.add_mutually_exclusive_group(required=True)
    out.add_argument("--out-dir", help="write train.csv, val.csv and test.csv here")
    out.add_argument("--single", metavar="FILE", help="write one CSV file of --rows rows")
    p.add_argument("--rows", type=int, default=3000, help="train rows (or all rows with --single)")
    p.add_argument("--eval-fraction", type=float, default=0.2,
                   help="val and test each get this many rows per train row (default 0.2)")
    p.add_argument("--unseen", type=float, default=0.2,
                   help="share of val/test rows whose merchant never occurs in train (default 0.2)")
    p.add_argument("--holdout", type=float, default=0.2,
                   help="share of each class's brands and business kinds kept out of train (default 0.2)")
    p.add_argument("--label-noise", type=float, default=0.0,
                   help="share of rows given a random wrong label, in every split (default 0)")
    p.add_argument("--seed", type=int, default=13)
    a = p.parse_args(argv)
    if a.rows < len(CATEGORIES):
        p.error(f"--rows must be at least {len(CATEGORIES)} (one per category)")
    for name in ("eval_fraction", "unseen", "holdout", "label_noise"):
        v = getattr(a, name)
        if not 0.0 <= v <= 1.0:
            p.error(f"--{name.replace('_', '-')} must be in [0, 1], got {v}")

    rng = random.Random(a.seed)
    pools = Pools(rng, a.holdout)
    g = Gen(rng)
    if a.single:
        # One file drawn from the seen pools only, like a train split.
        write_csv(a.single, make_split(g, pools, a.rows, 0.0, a.label_noise))
        print(f"wrote {a.rows} rows to {a.single}", file=sys.stderr)
        return 0
    os.makedirs(a.out_dir, exist_ok=True)
    n_eval = max(len(CATEGORIES), round(a.rows * a.eval_fraction))
    for split, n, unseen in (("train", a.rows, 0.0), ("val", n_eval, a.unseen),
                             ("test", n_eval, a.unseen)):
        write_csv(os.path.join(a.out_dir, f"{split}.csv"), make_split(g, pools, n, unseen, a.label_noise))
    print(f"wrote {a.rows}/{n_eval}/{n_eval} train/val/test rows to {a.out_dir}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

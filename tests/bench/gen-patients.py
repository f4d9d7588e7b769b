#!/usr/bin/env python3
"""Writes N synthetic patient rows in the format of mappings/legacy/patients.map (Latin-1, ';',
day/month/year dates) to stdout: the input of tests/bench/import and of the kill -9 resume test."""

import sys

FAMILY = ["M\xfcller", "Dupont", "O'Brien", "Smith", "Nakamura", "Garc\xeda", "Kowalski", "Rossi"]
GIVEN = ["J\xfcrgen", "Marie", "Se\xe1n", "Anna", "Yuki", "Luc\xeda", "Piotr", "Giulia"]
CITY = ["Berlin", "Lyon", "Galway", "Leeds", "Tokyo", "Sevilla", "Krak\xf3w", "Torino"]


def main():
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 1000000
    out = sys.stdout.buffer
    out.write(b"mrn;authority;family;given;birth_date;sex;phone;street;city;postcode;died\r\n")
    rows = []
    for i in range(n):
        k = i % 8
        rows.append("%d;HOSP;%s;%s;%02d/%02d/%d;%s;+1 555 %07d;%d Main Street;%s;%05d;\r\n" % (
            100000 + i, FAMILY[k], GIVEN[(i // 8) % 8], 1 + i % 28, 1 + i % 12, 1930 + i % 90,
            "MF"[i % 2], i, 1 + i % 300, CITY[(i // 3) % 8], i % 100000))
        if len(rows) == 10000:
            out.write("".join(rows).encode("latin-1"))
            rows = []
    out.write("".join(rows).encode("latin-1"))


if __name__ == "__main__":
    main()

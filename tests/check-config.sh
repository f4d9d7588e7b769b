#!/bin/sh
# The example config lists every option with its default: it must equal what the option table
# prints, and it must load; the fhirgate.conf(5) man page is generated from it. Emits TAP.
cd "${top_srcdir:?}" || exit 1
out=$("${FHIRGATE:?}" serve -c /dev/null --print-config) || { echo "not ok 1 - --print-config runs"; echo 1..1; exit 1; }
if [ "$out" = "$(cat etc/fhirgate.conf)" ]; then
	echo "ok 1 - etc/fhirgate.conf lists every option with its default"
	ok=0
else
	echo "not ok 1 - etc/fhirgate.conf differs from --print-config (regenerate it)"
	printf '%s\n' "$out" | diff etc/fhirgate.conf - | sed 's/^/# /'
	ok=1
fi
if "$FHIRGATE" serve -c etc/fhirgate.conf --print-config >/dev/null; then
	echo "ok 2 - etc/fhirgate.conf loads"
else
	echo "not ok 2 - etc/fhirgate.conf loads"
	ok=1
fi
# fhirgate.conf(5) is generated from the same output.
man=$(printf '%s\n' "$out" | "${PYTHON3:-python3}" tools/gen-conf-man.py)
if [ "$man" = "$(cat docs/fhirgate.conf.5)" ]; then
	echo "ok 3 - docs/fhirgate.conf.5 documents every option"
else
	echo "not ok 3 - docs/fhirgate.conf.5 is stale (regenerate it with tools/gen-conf-man.py)"
	printf '%s\n' "$man" | diff docs/fhirgate.conf.5 - | sed 's/^/# /' | head -20
	ok=1
fi
echo 1..3
exit $ok

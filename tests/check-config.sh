#!/bin/sh
# The example config lists every option with its default: it must equal what the option table
# prints, and it must load. Emits TAP.
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
echo 1..2
exit $ok

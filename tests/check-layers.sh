#!/bin/sh
# Fails when a layer includes a header from a layer above it (ARCHITECTURE.md § Layers), when
# store/ includes fhir/, or when anything outside store/ includes lmdb.h or outside gateway/
# includes libevent or OpenSSL. Emits TAP.
cd "${top_srcdir:-$(dirname "$0")/..}" || exit 1
rank() {
	case "$1" in
	lib) echo 0 ;; store | fhir) echo 1 ;; mappings | scoring) echo 2 ;; gateway) echo 3 ;;
	*) echo -1 ;;
	esac
}
bad=0
n=0
for dir in lib store fhir mappings scoring gateway; do
	n=$((n + 1))
	problems=$(
		for f in $(find "$dir" -name '*.[ch]' 2>/dev/null | sort); do
			grep -nE '^[[:space:]]*#[[:space:]]*include' "$f" | while IFS= read -r line; do
				inc=$(printf '%s' "$line" | sed -nE 's/.*#[[:space:]]*include[[:space:]]+"([a-z_]+)\/.*/\1/p')
				sys=$(printf '%s' "$line" | sed -nE 's/.*#[[:space:]]*include[[:space:]]+<([^>]+)>.*/\1/p')
				if [ -n "$inc" ]; then
					if [ "$(rank "$inc")" -gt "$(rank "$dir")" ]; then
						echo "$f: $line (reaches up to $inc/)"
					fi
					if [ "$dir" = store ] && [ "$inc" = fhir ]; then
						echo "$f: $line (store knows bytes and keys, not FHIR)"
					fi
				fi
				case "$sys" in
				lmdb.h) [ "$dir" = store ] || echo "$f: $line (only store/ includes lmdb.h)" ;;
				event2/* | openssl/ssl.h) [ "$dir" = gateway ] || echo "$f: $line (only gateway/ uses libevent and TLS)" ;;
				esac
			done
		done
	)
	if [ -n "$problems" ]; then
		printf 'not ok %d - layer %s\n' "$n" "$dir"
		printf '%s\n' "$problems" | sed 's/^/# /'
		bad=1
	else
		printf 'ok %d - layer %s\n' "$n" "$dir"
	fi
done
printf '1..%d\n' "$n"
exit $bad

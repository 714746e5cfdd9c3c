#!/usr/bin/env bash
# Validate the Kubernetes manifests against the API schemas, offline, with kubernetes-validate
# in strict mode (unknown fields are errors, as well as wrong types).
#
#   bash scripts/k8s-validate.sh            # every *.yaml/*.yml under deploy/k8s/
#   bash scripts/k8s-validate.sh FILE...    # these files instead
#
# Prints one line per file ("FILE: valid (...)", "FILE: INVALID" followed by the validator's
# messages indented, or "FILE: skipped (...)") and exits non-zero if any file is not valid.
#
# The validator lives in a venv made once and then reused:
#   ${XDG_CACHE_HOME:-$HOME/.cache}/netstack-lat/venv
# The first run needs PyPI; later ones work offline. python3 must have the venv module:
# Debian's system python3 needs the python3-venv package (apt-get install python3-venv).
#
# Environment:
#   PYTHON                      interpreter for the venv (default python3)
#   NETSTACK_LAT_K8S_VERSIONS   Kubernetes versions to check against (default "1.31.0 1.37.0":
#                               an older release still in wide use, and the newest schema that
#                               kubernetes-validate 1.37.0 ships; it has none before 1.25)
#
# What kubernetes-validate does not catch: enum values (e.g. a misspelt mountPropagation or
# hostPath type passes), and anything only the API server decides (selector vs. template
# labels, capability names, admission policies).
set -euo pipefail

KV_VERSION=1.37.0
read -r -a K8S_VERSIONS <<<"${NETSTACK_LAT_K8S_VERSIONS:-1.31.0 1.37.0}"
PYTHON=${PYTHON:-python3}

# Files whose kinds are CRDs: kubernetes-validate has no schema for them and would only warn.
# They are checked to parse and to hold the expected kind, and are otherwise skipped.
declare -A CRD_FILES=([servicemonitor.yaml]=ServiceMonitor)

root=$(cd "$(dirname "$0")/.." && pwd)

cache_home=${XDG_CACHE_HOME:-${HOME:-/root}/.cache}
cache="$cache_home/netstack-lat"
venv="$cache/venv"
marker="$venv/.kubernetes-validate-$KV_VERSION"
kv="$venv/bin/kubernetes-validate"

venv_ready() {
	[ -f "$marker" ] && [ -x "$kv" ] && "$venv/bin/python" -c '' >/dev/null 2>&1
}

make_venv() {
	echo "k8s-validate: installing kubernetes-validate $KV_VERSION into $venv (once)" >&2
	rm -rf "$venv"
	if ! "$PYTHON" -m venv "$venv" >&2; then
		rm -rf "$venv"
		echo "k8s-validate: '$PYTHON -m venv' failed; on Debian/Ubuntu the system python3 needs" \
			"the python3-venv package (apt-get install python3-venv)" >&2
		exit 1
	fi
	if ! PIP_NO_INPUT=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore \
		"$venv/bin/python" -m pip install -q "kubernetes-validate==$KV_VERSION" </dev/null >&2; then
		rm -rf "$venv"
		echo "k8s-validate: pip install kubernetes-validate==$KV_VERSION failed (PyPI reachable?)" >&2
		exit 1
	fi
	touch "$marker"
}

mkdir -p "$cache"
if ! venv_ready; then
	# Tests may start several of us at once: one builds the venv, the others wait for it.
	if command -v flock >/dev/null 2>&1; then
		exec 9>"$cache/venv.lock"
		flock 9
		venv_ready || make_venv
		flock -u 9
		exec 9>&-
	else
		make_venv
	fi
fi

if [ "$#" -gt 0 ]; then
	files=("$@")
else
	mapfile -t files < <(find "$root/deploy/k8s" -type f \( -name '*.yaml' -o -name '*.yml' \) | sort)
	if [ "${#files[@]}" -eq 0 ]; then
		echo "k8s-validate: no manifests under $root/deploy/k8s" >&2
		exit 1
	fi
fi

# Shown relative to the repository when they are inside it.
show() {
	case "$1" in
	"$root"/*) echo "${1#"$root"/}" ;;
	*) echo "$1" ;;
	esac
}

kargs=(--strict)
for v in "${K8S_VERSIONS[@]}"; do
	kargs+=(-k "$v")
done
versions=$(printf '%s\n' "${K8S_VERSIONS[@]}" | sed -E 's/^v?([0-9]+\.[0-9]+).*/\1/' | paste -sd, | sed 's/,/, /g')

# "apiVersion:kind" of each document of a file, with the venv's PyYAML.
crd_kinds() {
	"$venv/bin/python" -c '
import sys, yaml
with open(sys.argv[1]) as f:
    docs = [d for d in yaml.safe_load_all(f) if d]
print(" ".join("%s:%s" % (d.get("apiVersion"), d.get("kind")) for d in docs))
' "$1" 2>&1
}

failed=0
for f in "${files[@]}"; do
	name=$(show "$f")
	# kubernetes-validate takes every argument after the first file name as another file
	# name (options included), so options go first and a name starting with '-' gets a ./
	case "$f" in -*) f="./$f" ;; esac

	crd=${CRD_FILES[$(basename "$f")]:-}
	if [ -n "$crd" ]; then
		if kinds=$(crd_kinds "$f") && [ -n "$kinds" ] && ! grep -qv ":$crd\$" <<<"${kinds// /$'\n'}"; then
			echo "$name: skipped ($crd is a Prometheus Operator CRD: kubernetes-validate has no schema for it; YAML parses)"
		else
			echo "$name: INVALID (expected only $crd resources)"
			sed 's/^/    /' <<<"${kinds:-no resources in the file}"
			failed=1
		fi
		continue
	fi

	rc=0
	out=$("$kv" "${kargs[@]}" "$f" 2>&1 </dev/null) || rc=$?
	# A kind or apiVersion it has no schema for is only a WARN with exit status 0: a typo
	# there would pass unchecked, so anything but INFO lines is a failure here.
	if [ "$rc" -eq 0 ] && [ -n "$out" ] && ! grep -qv '^INFO ' <<<"$out"; then
		resources=$(sed -nE 's/.* for resource ([^ ]+) against version .*/\1/p' <<<"$out" |
			awk '!seen[$0]++' | paste -sd, | sed 's/,/, /g')
		echo "$name: valid ($resources; Kubernetes $versions, strict)"
	else
		[ -n "$out" ] || out="no resources in the file"
		echo "$name: INVALID"
		grep -v '^INFO ' <<<"$out" | sed 's/^/    /'
		failed=1
	fi
done

exit "$failed"

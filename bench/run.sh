#!/usr/bin/env bash
# Side-by-side benchmarks: each autogentoo command against the tool people use instead, on the
# same real tree, in one run, printed as ratios (ours / theirs: below 1.00x we are faster).
# See bench/README.md. Run as root: debootstrap, device nodes and owners need it.
set -euo pipefail

# EPOCHREALTIME and printf use the locale's decimal separator; the arithmetic below needs '.'.
export LC_ALL=C

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
readonly REPO
CACHE=${AUTOGENTOO_BENCH_CACHE:-/var/tmp/autogentoo-bench}
MIRROR=${AUTOGENTOO_BENCH_MIRROR:-http://deb.debian.org/debian}
readonly SUITE=bookworm
# Every comparison, in the order they run; `bench_NAME` runs one (see "Comparisons" below).
readonly ALL_BENCHES=(stage_import root_create repo_pack)

BACKEND=dir
RUNS=3
JSON=0
SCRATCH_PARENT=""
BENCHES=("${ALL_BENCHES[@]}")

usage() {
    cat <<EOF
Usage: bench/run.sh [--backend NAME] [--runs N] [--only NAME,...] [--scratch DIR] [--json]

Times autogentoo commands against their usual alternatives on a debootstrap'ed Debian
$SUITE minbase tree and prints median times and ratios (ours / theirs; lower is better for us).

  --backend NAME  storage backend passed to autogentoo (default: dir)
  --runs N        timed runs of each side, alternating; the median is reported (default: 3)
  --only LIST     comma-separated comparisons to run (default: ${ALL_BENCHES[*]})
  --scratch DIR   where workdirs and the alternatives' output go, on the filesystem under
                  test (default: a fresh directory under the cache)
  --json          also print one JSON object per comparison at the end

Environment: AUTOGENTOO_BIN (skip the release build and use this binary),
AUTOGENTOO_BENCH_CACHE (fixture cache, default /var/tmp/autogentoo-bench),
AUTOGENTOO_BENCH_MIRROR (Debian mirror for debootstrap).
EOF
}

say() { printf '%s\n' "$*" >&2; }
die() {
    say "bench: $*"
    exit 1
}

parse_args() {
    while (($#)); do
        case $1 in
            --backend) BACKEND=${2:?--backend needs a name}; shift ;;
            --runs) RUNS=${2:?--runs needs a number}; shift ;;
            --only) IFS=, read -ra BENCHES <<<"${2:?--only needs a list}"; shift ;;
            --scratch) SCRATCH_PARENT=${2:?--scratch needs a directory}; shift ;;
            --json) JSON=1 ;;
            -h | --help) usage; exit 0 ;;
            *) usage >&2; die "unknown argument '$1'" ;;
        esac
        shift
    done
    [[ $RUNS =~ ^[1-9][0-9]*$ ]] || die "--runs wants a positive number, not '$RUNS'"
    local name
    for name in "${BENCHES[@]}"; do
        declare -F "bench_$name" >/dev/null || die "unknown comparison '$name' (known: ${ALL_BENCHES[*]})"
    done
}

# ---------------------------------------------------------------------------------------------
# Prerequisites

# Installs whatever is missing, through apt, so a fresh Debian machine can run the script as is.
require_tools() {
    local -A package_of=([debootstrap]=debootstrap [xz]=xz-utils [pigz]=pigz [tar]=tar
        [mksquashfs]=squashfs-tools)
    local cmd missing=()
    for cmd in "${!package_of[@]}"; do
        command -v "$cmd" >/dev/null || missing+=("${package_of[$cmd]}")
    done
    ((${#missing[@]} == 0)) && return
    say "installing ${missing[*]}"
    apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >&2
}

# The release build, because a debug build's times say nothing about the product. AUTOGENTOO_BIN
# skips the build (a binary built elsewhere, or a debug build while working on this script).
find_binary() {
    if [[ -n ${AUTOGENTOO_BIN:-} ]]; then
        [[ -x $AUTOGENTOO_BIN ]] || die "AUTOGENTOO_BIN=$AUTOGENTOO_BIN is not an executable"
        return
    fi
    say "building the release binary (cargo build --release -p autogentoo-cli)"
    (cd "$REPO" && cargo build --release -p autogentoo-cli) >&2
    AUTOGENTOO_BIN=${CARGO_TARGET_DIR:-$REPO/target}/release/autogentoo
}

# Our command, quiet (no progress bars to draw) and with the backend under test.
ag() { "$AUTOGENTOO_BIN" -q --backend "$BACKEND" "$@"; }

# ---------------------------------------------------------------------------------------------
# Fixture: a real Debian root, built once and cached, because a stage3-sized tree with real
# owners, modes, device nodes and hardlinks is what the commands are for. Each step writes to a
# temporary name and renames, so an interrupted run never leaves a half-made fixture behind.

build_fixture() {
    FIXTURE_ROOT=$CACHE/minbase-root
    TARBALL=$CACHE/minbase.tar.xz
    mkdir -p "$CACHE"
    if [[ ! -d $FIXTURE_ROOT ]]; then
        say "building the fixture: debootstrap --variant=minbase $SUITE (a few minutes, once)"
        rm -rf "$FIXTURE_ROOT.tmp"
        if ! debootstrap --variant=minbase "$SUITE" "$FIXTURE_ROOT.tmp" "$MIRROR" \
            >"$CACHE/debootstrap.log" 2>&1; then
            tail -n 20 "$CACHE/debootstrap.log" >&2
            die "debootstrap failed; the whole log is $CACHE/debootstrap.log"
        fi
        mv "$FIXTURE_ROOT.tmp" "$FIXTURE_ROOT"
        rm -f "$TARBALL" # packed from the old root, if any
    fi
    if [[ ! -f $TARBALL ]]; then
        say "packing $TARBALL"
        # xz -T0 writes a multi-block file, which lets a decoder use several threads too.
        tar --xattrs --numeric-owner -cpf - -C "$FIXTURE_ROOT" . | xz -T0 -6 >"$TARBALL.tmp"
        mv "$TARBALL.tmp" "$TARBALL"
    fi
    TREE_BYTES=$(du -sb "$FIXTURE_ROOT" | cut -f1)
    TREE_FILES=$(find "$FIXTURE_ROOT" -mindepth 1 | wc -l)
    TARBALL_BYTES=$(stat -c %s "$TARBALL")
    TARBALL_BLOCKS=$(xz --robot --list "$TARBALL" | awk '$1 == "file" { print $3 }')
}

# ---------------------------------------------------------------------------------------------
# Scratch space: workdirs and the alternatives' output live side by side on one filesystem, so
# both sides write to the same disk. Removed on exit; the cache stays.

make_scratch() {
    local parent=${SCRATCH_PARENT:-$CACHE}
    mkdir -p "$parent"
    SCRATCH=$(mktemp -d "$parent/run.XXXXXX")
}

# A fresh, initialised workdir in WD.
new_workdir() {
    WD=$(mktemp -d "$SCRATCH/workdir.XXXXXX")
    ag --workdir "$WD" workdir init >/dev/null
}

# Removes roots and stages through autogentoo before the directory, so backends that keep volumes
# outside the workdir (zfs datasets, btrfs subvolumes) let go of them too.
remove_workdir() {
    local wd=$1 name
    for name in $(ag --workdir "$wd" root list | cut -f1); do
        ag --workdir "$wd" root remove --recursive "$name" || true
    done
    for name in $(ag --workdir "$wd" stage list | cut -f1); do
        ag --workdir "$wd" stage remove "$name" || true
    done
    rm -rf "$wd"
}

cleanup() {
    [[ -n ${SCRATCH:-} && -d $SCRATCH ]] || return 0
    local wd
    for wd in "$SCRATCH"/workdir.*; do
        [[ -d $wd ]] && { remove_workdir "$wd" 2>/dev/null || true; }
    done
    rm -rf "$SCRATCH"
}

# ---------------------------------------------------------------------------------------------
# Timing and statistics

# Runs "$@" and sets ELAPSED to its wall-clock seconds. Output goes to a log (shown only on
# failure), so neither side pays for a terminal.
timed() {
    local log=$SCRATCH/timed.log start end us
    start=${EPOCHREALTIME/./}
    if ! "$@" >"$log" 2>&1; then
        cat "$log" >&2
        die "failed: $*"
    fi
    end=${EPOCHREALTIME/./}
    us=$((end - start))
    printf -v ELAPSED '%d.%06d' $((us / 1000000)) $((us % 1000000))
}

median() {
    printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 }
        END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

call_if_defined() { if declare -F "$1" >/dev/null; then "$@"; fi; }

# One timed run of one side: SIDE_setup and SIDE_cleanup (both optional) are not timed, SIDE_run
# is. `sync` first, so the previous run's dirty pages are not written back on this run's clock.
run_side() {
    local side=$1
    call_if_defined "${side}_setup"
    sync
    timed "${side}_run"
    call_if_defined "${side}_cleanup"
}

# compare KEY LABEL THEIRS_LABEL OURS_SIDE THEIRS_SIDE
# RUNS rounds of ours-then-theirs, so drift over the run (page cache warming, other load on the
# machine) hits both sides alike; the median of each side keeps one outlier from deciding.
compare() {
    local key=$1 label=$2 theirs_label=$3 ours=$4 theirs=$5
    local -a ours_times=() theirs_times=()
    for ((ROUND = 1; ROUND <= RUNS; ROUND++)); do
        run_side "$ours"
        ours_times+=("$ELAPSED")
        run_side "$theirs"
        theirs_times+=("$ELAPSED")
        say "  $key round $ROUND/$RUNS: ours ${ours_times[-1]} s, $theirs_label ${theirs_times[-1]} s"
    done
    local ours_median theirs_median ratio
    ours_median=$(median "${ours_times[@]}")
    theirs_median=$(median "${theirs_times[@]}")
    ratio=$(awk -v o="$ours_median" -v t="$theirs_median" 'BEGIN { printf "%.2f", o / t }')
    TABLE+=("$(printf '%s vs %s: %.2f s vs %.2f s = %sx' \
        "$label" "$theirs_label" "$ours_median" "$theirs_median" "$ratio")")
    JSON_LINES+=("$(printf '{"bench":"%s","backend":"%s","runs":%d,"ours_s":%.3f,"theirs_s":%.3f,"ratio":%s,"ours_runs_s":[%s],"theirs_runs_s":[%s],"tree_bytes":%d,"tree_files":%d}' \
        "$key" "$BACKEND" "$RUNS" "$ours_median" "$theirs_median" "$ratio" \
        "$(IFS=,; echo "${ours_times[*]}")" "$(IFS=,; echo "${theirs_times[*]}")" \
        "$TREE_BYTES" "$TREE_FILES")")
}

# ---------------------------------------------------------------------------------------------
# Comparisons. Each is a `bench_NAME` calling `compare` with two sides; a side is the functions
# SIDE_setup, SIDE_run (the timed part) and SIDE_cleanup. To add one, write both sides and its
# bench_ function and list it in ALL_BENCHES.

# The stage that roots are cloned from, in STAGE_WD/STAGE_DIR; imported only if no import round
# left one behind (e.g. --only root_create).
ensure_stage() {
    if [[ -z ${STAGE_WD:-} ]]; then
        new_workdir
        STAGE_WD=$WD
        ag --workdir "$STAGE_WD" stage import "$TARBALL" --name bench >/dev/null
    fi
    STAGE_DIR=$(ag --workdir "$STAGE_WD" stage path bench)
}

# stage import vs GNU tar: both unpack the same .tar.xz into a fresh directory.
stage_import_ours_setup() { new_workdir; }
stage_import_ours_run() { ag --workdir "$WD" stage import "$TARBALL" --name bench; }
stage_import_ours_cleanup() {
    # The newest import is kept for root create, which saves importing once more.
    if [[ -n ${STAGE_WD:-} ]]; then remove_workdir "$STAGE_WD"; fi
    STAGE_WD=$WD
}
stage_import_tar_setup() { DEST=$SCRATCH/tar-dest && mkdir "$DEST"; }
stage_import_tar_run() {
    tar --xattrs --xattrs-include='*' --numeric-owner -xpf "$TARBALL" -C "$DEST"
}
stage_import_tar_cleanup() { rm -rf "$DEST"; }
bench_stage_import() {
    compare stage_import "stage import ($BACKEND)" "tar -xpf" stage_import_ours stage_import_tar
}

# root create vs cp -a: both make a writable copy of the imported stage.
root_create_ours_setup() { ensure_stage; }
root_create_ours_run() { ag --workdir "$STAGE_WD" root create "r$ROUND" --stage bench; }
root_create_ours_cleanup() { ag --workdir "$STAGE_WD" root remove "r$ROUND"; }
root_create_cp_setup() { ensure_stage; DEST=$SCRATCH/cp-dest; }
root_create_cp_run() { cp -a "$STAGE_DIR" "$DEST"; }
root_create_cp_cleanup() { rm -rf "$DEST"; }
bench_root_create() {
    compare root_create "root create ($BACKEND)" "cp -a" root_create_ours root_create_cp
}

# repo pack vs mksquashfs: both pack the fixture's usr/share (thousands of small text files,
# like an ebuild repository; the whole tree has device nodes, which repo pack refuses) with the
# same compressor, level and block size: zstd at 15 (what repo pack uses, mksquashfs's own
# default) in 128 KiB blocks, on every core. The image sizes are compared too.
readonly PACK_LEVEL=15
repo_pack_ours_setup() {
    if [[ -z ${PACK_WD:-} ]]; then new_workdir; PACK_WD=$WD; fi
}
repo_pack_ours_run() {
    ag --workdir "$PACK_WD" repo pack --dir "$FIXTURE_ROOT/usr/share" --name bench \
        --compression zstd --block-size 128K
}
repo_pack_ours_cleanup() {
    OURS_BYTES=$(stat -c %s "$PACK_WD/repos/bench.sqfs")
    rm -f "$PACK_WD/repos/bench.sqfs"
}
repo_pack_mksquashfs_setup() { DEST=$SCRATCH/mksquashfs.sqfs; }
repo_pack_mksquashfs_run() {
    mksquashfs "$FIXTURE_ROOT/usr/share" "$DEST" -comp zstd -Xcompression-level "$PACK_LEVEL" \
        -b 131072 -noappend -no-xattrs -processors "$(nproc)" -no-progress
}
repo_pack_mksquashfs_cleanup() {
    THEIRS_BYTES=$(stat -c %s "$DEST")
    rm -f "$DEST"
}
bench_repo_pack() {
    compare repo_pack "repo pack (zstd $PACK_LEVEL, 128K)" "mksquashfs" \
        repo_pack_ours repo_pack_mksquashfs
    compare_sizes repo_pack_size "repo pack image size" "mksquashfs's" "$OURS_BYTES" "$THEIRS_BYTES"
}

# compare_sizes KEY LABEL THEIRS_LABEL OURS_BYTES THEIRS_BYTES: a size ratio, lower is better.
compare_sizes() {
    local key=$1 label=$2 theirs_label=$3 ours=$4 theirs=$5 ratio
    ratio=$(awk -v o="$ours" -v t="$theirs" 'BEGIN { printf "%.3f", o / t }')
    TABLE+=("$(printf '%s vs %s: %.2f MB vs %.2f MB = %sx' "$label" "$theirs_label" \
        "$(awk -v b="$ours" 'BEGIN { print b / 1e6 }')" \
        "$(awk -v b="$theirs" 'BEGIN { print b / 1e6 }')" "$ratio")")
    JSON_LINES+=("$(printf '{"bench":"%s","ours_bytes":%d,"theirs_bytes":%d,"ratio":%s}' \
        "$key" "$ours" "$theirs" "$ratio")")
}

# ---------------------------------------------------------------------------------------------

main() {
    parse_args "$@"
    ((EUID == 0)) || die "run as root: debootstrap and the imports create device nodes and owners"
    local started=${EPOCHREALTIME/./}
    find_binary
    require_tools
    build_fixture
    make_scratch
    trap cleanup EXIT
    # Without these, a Ctrl-C or kill would end bash without running the EXIT trap.
    trap 'exit 130' INT
    trap 'exit 143' TERM

    TABLE=()
    JSON_LINES=()
    local name
    for name in "${BENCHES[@]}"; do
        say "running $name ($RUNS rounds)"
        "bench_$name"
    done

    printf 'fixture: debootstrap --variant=minbase %s, %.1f MB in %d files; minbase.tar.xz %.1f MB, %d xz blocks\n' \
        "$SUITE" "$(awk -v b="$TREE_BYTES" 'BEGIN { print b / 1e6 }')" "$TREE_FILES" \
        "$(awk -v b="$TARBALL_BYTES" 'BEGIN { print b / 1e6 }')" "$TARBALL_BLOCKS"
    printf 'binary: %s; median of %d runs; ratio = ours / theirs, lower is better for us\n' \
        "$AUTOGENTOO_BIN" "$RUNS"
    printf '%s\n' "${TABLE[@]}"
    if ((JSON)); then printf '%s\n' "${JSON_LINES[@]}"; fi
    say "done in $(((${EPOCHREALTIME/./} - started) / 1000000)) s"
}

main "$@"

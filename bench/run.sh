#!/usr/bin/env bash
# Side-by-side benchmarks: each autogentoo command against the tool people use instead, on the
# same real tree, in one run, printed as ratios (ours / theirs: below 1.00x we are faster).
# See bench/README.md. Run as root: debootstrap, device nodes, owners, loop devices and zfs-fuse
# need it.
set -euo pipefail

# EPOCHREALTIME and printf use the locale's decimal separator; the arithmetic below needs '.'.
export LC_ALL=C

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
readonly REPO
CACHE=${AUTOGENTOO_BENCH_CACHE:-/var/tmp/autogentoo-bench}
MIRROR=${AUTOGENTOO_BENCH_MIRROR:-http://deb.debian.org/debian}
readonly SUITE=bookworm
# Every comparison, in the order they run; `bench_NAME` runs one (see "Comparisons" below).
readonly ALL_BENCHES=(stage_import root_create root_pack repo_pack kernel_relink emerge_binary emerge_qemu build_record builds_list farm_load)
# The backends `--backend all` means, in the order they run.
readonly ALL_BACKENDS=(dir btrfs zfs)
# The size of the sparse images the btrfs filesystem and the zfs pool live in; only what is
# written takes space (about 1 GB each in a default run).
readonly VOLUME_SIZE=16G

BACKEND_ARG=all
RUNS=3
JSON=0
SCRATCH_PARENT=""
BENCHES=("${ALL_BENCHES[@]}")

usage() {
    cat <<EOF
Usage: bench/run.sh [--backend dir|btrfs|zfs|all] [--runs N] [--only NAME,...] [--scratch DIR] [--json]

Times autogentoo commands against their usual alternatives on a debootstrap'ed Debian
$SUITE minbase tree and prints median times and ratios (ours / theirs; lower is better for us).

  --backend NAME  storage backend(s) for stage_import and root_create: dir, btrfs, zfs or
                  all (default: all). btrfs gets a loop-mounted image and zfs a file-backed
                  pool (and zfs-fuse, if no ZFS answers), made under the cache and removed on
                  exit. root_pack and repo_pack use the named backend, or dir for all.
  --runs N        timed runs of each side, alternating; the median is reported (default: 3)
  --only LIST     comma-separated comparisons to run (default: $(IFS=,; echo "${ALL_BENCHES[*]}"))
  --scratch DIR   where the dir backend's workdirs and the alternatives' output go, on the
                  filesystem under test (default: a fresh ext4 on a loop device, made under
                  the cache and removed on exit)
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
            --backend) BACKEND_ARG=${2:?--backend needs a name}; shift ;;
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
    case $BACKEND_ARG in
        all) BACKENDS=("${ALL_BACKENDS[@]}"); PACK_BACKEND=dir ;;
        dir | btrfs | zfs) BACKENDS=("$BACKEND_ARG"); PACK_BACKEND=$BACKEND_ARG ;;
        *) die "--backend wants dir, btrfs, zfs or all, not '$BACKEND_ARG'" ;;
    esac
    # The backend our commands run on at the moment; use_backend switches it.
    BACKEND=$PACK_BACKEND
}

# Whether the comparisons picked will use BACKEND $1.
uses_backend() {
    local name backend
    for name in "${BENCHES[@]}"; do
        case $name in
            stage_import | root_create)
                for backend in "${BACKENDS[@]}"; do [[ $backend == "$1" ]] && return 0; done ;;
            *) [[ $PACK_BACKEND == "$1" ]] && return 0 ;;
        esac
    done
    return 1
}

# ---------------------------------------------------------------------------------------------
# Prerequisites

# Installs whatever is missing, through apt, so a fresh Debian machine can run the script as is.
require_tools() {
    local -a missing_files=()
    local -A package_of=([debootstrap]=debootstrap [xz]=xz-utils [pigz]=pigz [tar]=tar
        [mksquashfs]=squashfs-tools [cpio]=cpio [flock]=util-linux)
    if [[ -z $SCRATCH_PARENT ]]; then package_of+=([mkfs.ext4]=e2fsprogs [losetup]=mount); fi
    if uses_backend btrfs; then package_of+=([mkfs.btrfs]=btrfs-progs [losetup]=mount); fi
    if uses_backend zfs; then package_of+=([zfs-fuse]=zfs-fuse [zpool]=zfs-fuse [zfs]=zfs-fuse); fi
    if [[ " ${BENCHES[*]} " == *" kernel_relink "* ]]; then
        package_of+=([make]=make [gcc]=gcc [bc]=bc [flex]=flex [bison]=bison [busybox]=busybox-static
            [objcopy]=binutils)
        [[ -f $KERNEL_TARBALL ]] || missing_files+=(linux-source)
        [[ -f /usr/include/libelf.h ]] || missing_files+=(libelf-dev)
        [[ -f /usr/include/openssl/ssl.h ]] || missing_files+=(libssl-dev)
        [[ -f $UKI_STUB ]] || missing_files+=(systemd-boot-efi)
    fi
    if [[ " ${BENCHES[*]} " == *" emerge_binary "* || " ${BENCHES[*]} " == *" emerge_qemu "* ]]; then
        package_of+=([zstd]=zstd [pip3]=python3-pip)
    fi
    if [[ " ${BENCHES[*]} " == *" emerge_qemu "* ]]; then
        package_of+=([qemu-aarch64-static]=qemu-user-static)
    fi
    if [[ " ${BENCHES[*]} " == *" builds_list "* ]]; then
        package_of+=([psql]=postgresql [pg_isready]=postgresql [python3]=python3 [setpriv]=util-linux)
    fi
    if [[ " ${BENCHES[*]} " == *" farm_load "* ]]; then
        package_of+=([psql]=postgresql [pg_isready]=postgresql [python3]=python3 [setpriv]=util-linux
            [openssl]=openssl [busybox]=busybox-static)
    fi
    if [[ " ${BENCHES[*]} " == *" build_record "* ]]; then
        package_of+=([cargo]=cargo [git]=git)
    fi
    local cmd missing=("${missing_files[@]}")
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

# zfs-fuse stores no extended attributes, and stage import refuses a tarball with any onto a
# backend that cannot keep them. Sets ZFS_TARBALL to the tarball to import there: the fixture's
# if it has none, else a copy packed without them (cached, like the fixture), and NOTE_ZFS to
# the line that says which.
zfs_tarball() {
    local count=$CACHE/minbase.xattrs plain=$CACHE/minbase-noxattrs.tar.xz
    if [[ ! -f $count || $TARBALL -nt $count ]]; then
        say "counting the extended attributes in $TARBALL"
        # tar -tvv lists each stored attribute of an entry on a line of its own: "  x: SIZE NAME".
        tar --xattrs -tvvf "$TARBALL" | awk '/^  x: / { n++ } END { print n + 0 }' >"$count.tmp"
        mv "$count.tmp" "$count"
    fi
    TARBALL_XATTRS=$(<"$count")
    if ((TARBALL_XATTRS == 0)); then
        ZFS_TARBALL=$TARBALL
        NOTE_ZFS="zfs: minbase.tar.xz has no extended attributes, so zfs-fuse (which stores none) imports it as is"
        return
    fi
    if [[ ! -f $plain || $TARBALL -nt $plain ]]; then
        say "packing $plain (zfs-fuse stores no extended attributes)"
        tar --no-xattrs --numeric-owner -cpf - -C "$FIXTURE_ROOT" . | xz -T0 -6 >"$plain.tmp"
        mv "$plain.tmp" "$plain"
    fi
    ZFS_TARBALL=$plain
    NOTE_ZFS="zfs: minbase.tar.xz has $TARBALL_XATTRS extended attributes, which zfs-fuse cannot store: stage import (zfs) and its tar -xpf unpack minbase-noxattrs.tar.xz ($(awk -v b="$(stat -c %s "$plain")" 'BEGIN { printf "%.1f", b / 1e6 }') MB) instead"
}

# The stages root create clones: FILES small files (1-4 KB, of text) in directories of 100
# (NN/NNN/fNN), the same bytes every time; built once and cached like the fixture.
gen_tree() {
    local dest=$1 files=$2
    mkdir -p "$dest"
    (
        umask 022
        cd "$dest"
        awk -v files="$files" 'BEGIN {
            for (d = 0; d < files / 100; d++) printf "%02d/%03d\n", int(d / 100), d % 100 }' |
            xargs mkdir -p
        awk -v files="$files" 'BEGIN {
            for (n = 0; n < files; n++) {
                d = int(n / 100)
                size = 1024 + (n * 797) % 3072
                s = ""
                for (l = 0; length(s) < size; l++) s = s sprintf("file %d line %d\n", n, l)
                path = sprintf("%02d/%03d/f%02d", int(d / 100), d % 100, n % 100)
                printf "%s", substr(s, 1, size) > path
                close(path)
            }
        }'
    )
}

# TREE_OF[10k] and TREE_OF[100k]: the generated stage trees.
readonly GROW_SIZES=(10k 100k)
declare -A TREE_OF=() TREE_BYTES_OF=()
build_trees() {
    local size files tree
    for size in "${GROW_SIZES[@]}"; do
        files=$((${size%k} * 1000))
        tree=$CACHE/tree-$size
        if [[ ! -d $tree ]]; then
            say "generating $tree ($files files, once)"
            rm -rf "$tree.tmp"
            gen_tree "$tree.tmp" "$files"
            mv "$tree.tmp" "$tree"
        fi
        TREE_OF[$size]=$tree
        TREE_BYTES_OF[$size]=$(du -sb "$tree" | cut -f1)
    done
}

# ---------------------------------------------------------------------------------------------
# Filesystems. The scratch space (the dir backend's workdirs and the alternatives' output, side
# by side, so both sides write to the same disk) is a fresh ext4 unless --scratch names a
# directory; btrfs and zfs get theirs on first use. All of them live in sparse images under VOLS
# (a fresh directory in the cache) and are undone by cleanup_volumes: each thing is recorded
# (device, mount point, pool name, PID) the moment it exists, so the exit trap undoes exactly
# what was made. The cache stays.
#
# Why not a directory on the cache's own filesystem: one mounted with `discard` (like this
# machine's root) spends tens of seconds discarding after every deletion of 100k files, and the
# discards slow down the next timed runs. The images' filesystems are mounted without discard,
# and thrown away whole at the end instead of file by file.
VOLS=""
EXT4_LOOP=""
EXT4_MNT=""
BTRFS_LOOP=""
BTRFS_MNT=""
ZFS_PID=""
ZFS_POOL=""
ZFS_MNT=""

volumes_dir() { [[ -n $VOLS ]] || VOLS=$(mktemp -d "$CACHE/volumes.XXXXXX"); }

# make_loop_fs NAME DEV_VAR MNT_VAR MKFS...: a sparse image VOLS/NAME.img made by MKFS, attached
# to a loop device (its name in DEV_VAR) and mounted without discard at VOLS/NAME (in MNT_VAR).
make_loop_fs() {
    local name=$1 image=$VOLS/$1.img
    local -n dev=$2 mnt=$3
    shift 3
    say "making the $name filesystem on a loop device ($image)"
    truncate -s "$VOLUME_SIZE" "$image"
    "$@" "$image" >"$VOLS/mkfs.log" 2>&1 || { cat "$VOLS/mkfs.log" >&2; die "$1 failed"; }
    dev=$(losetup --find --show "$image")
    mkdir "$VOLS/$name"
    mount -t "$name" -o nodiscard "$dev" "$VOLS/$name"
    mnt=$VOLS/$name
}

# undo_loop_fs NAME DEV MNT: unmounts MNT and detaches DEV if it is still attached to
# VOLS/NAME.img; fails if either is left.
undo_loop_fs() {
    local name=$1 dev=$2 mnt=$3 ok=0
    if [[ -n $mnt ]]; then
        say "unmounting $mnt${dev:+ and detaching $dev}"
        umount "$mnt" || umount -l "$mnt" || ok=1
    fi
    if [[ -n $dev ]] && losetup -j "$VOLS/$name.img" | grep -q "^$dev:"; then
        losetup -d "$dev" || ok=1
    fi
    return $ok
}

make_scratch() {
    if [[ -n $SCRATCH_PARENT ]]; then
        mkdir -p "$SCRATCH_PARENT"
        SCRATCH=$(mktemp -d "$SCRATCH_PARENT/run.XXXXXX")
        return
    fi
    volumes_dir
    make_loop_fs ext4 EXT4_LOOP EXT4_MNT mkfs.ext4 -q -F -E nodiscard
    SCRATCH=$(mktemp -d "$EXT4_MNT/run.XXXXXX")
}

make_btrfs() {
    volumes_dir
    make_loop_fs btrfs BTRFS_LOOP BTRFS_MNT mkfs.btrfs -q -f
}

zfs_answers() { zfs list -H -o name >/dev/null 2>&1; }

# Starts zfs-fuse when no ZFS answers, under the lock the test suite starts it under, so the two
# never start one each. ZFS_PID is set only for a daemon started here.
start_zfs_fuse() {
    local lock=${TMPDIR:-/tmp}/autogentoo-zfs-fuse.lock pidfile=$VOLS/zfs-fuse.pid fd i
    exec {fd}>"$lock"
    flock "$fd"
    if ! zfs_answers; then
        say "starting zfs-fuse (pidfile $pidfile)"
        # Its output to a log, not ours: a daemon holding our stderr would keep a pipe open. Nor
        # does it get the lock, which would stay held as long as it runs.
        zfs-fuse --pidfile "$pidfile" --no-kstat-mount </dev/null >"$VOLS/zfs-fuse.log" 2>&1 \
            {fd}>&- {ERR_FD}>&- ||
            { cat "$VOLS/zfs-fuse.log" >&2; die "zfs-fuse did not start"; }
        for ((i = 0; i < 300; i++)); do
            [[ -z $ZFS_PID && -s $pidfile ]] && ZFS_PID=$(<"$pidfile")
            [[ -n $ZFS_PID ]] && zfs_answers && break
            sleep 0.1
        done
        zfs_answers || die "zfs-fuse did not answer within 30 s"
    fi
    exec {fd}>&-
}

# Stops the zfs-fuse started here, by its PID, unless another process's pool lives on it. Our
# own pool is gone by now, or could not be destroyed: then stopping the daemon drops it (it is
# in no cache file) and cleanup_volumes unmounts what it leaves behind.
stop_zfs_fuse() {
    [[ -n $ZFS_PID ]] || return 0
    [[ $(cat "/proc/$ZFS_PID/comm" 2>/dev/null) == zfs-fuse ]] || return 0
    local pools i
    pools=$(zpool list -H -o name 2>/dev/null | grep -vFx "${ZFS_POOL:-}") || pools=""
    if [[ -n $pools ]]; then
        say "leaving zfs-fuse (PID $ZFS_PID) running: other pools live on it (${pools//$'\n'/ })"
        return 0
    fi
    kill "$ZFS_PID" 2>/dev/null || return 0
    for ((i = 0; i < 300; i++)); do
        [[ -e /proc/$ZFS_PID ]] || return 0
        sleep 0.1
    done
    say "zfs-fuse (PID $ZFS_PID) did not stop within 30 s; killing it"
    kill -KILL "$ZFS_PID" 2>/dev/null || true
}

# A fresh zfs pool in a sparse file, its root dataset mounted at ZFS_MNT: that is the workdir
# (the zfs backend's workdir is a dataset's mount point).
make_zfs() {
    volumes_dir
    start_zfs_fuse
    local image=$VOLS/zfs.img name=agbench$$
    say "making a zfs pool $name in $image"
    truncate -s "$VOLUME_SIZE" "$image"
    # Not in the daemon's pool cache (cachefile=none): the pool must not come back after a restart.
    zpool create -o cachefile=none -m "$VOLS/zfs" "$name" "$image" >"$VOLS/zpool.log" 2>&1 ||
        { cat "$VOLS/zpool.log" >&2; die "zpool create $name failed"; }
    ZFS_POOL=$name
    ZFS_MNT=$VOLS/zfs
    ag --workdir "$ZFS_MNT" workdir init >/dev/null
}

# Makes BACKEND's filesystem if it has none yet, and switches our commands to it.
use_backend() {
    BACKEND=$1
    case $BACKEND in
        btrfs) [[ -n $BTRFS_MNT ]] || make_btrfs ;;
        zfs) [[ -n $ZFS_MNT ]] || make_zfs ;;
    esac
}

cleanup_volumes() {
    [[ -n $VOLS ]] || return 0
    local ok=1
    undo_loop_fs ext4 "$EXT4_LOOP" "$EXT4_MNT" || ok=0
    undo_loop_fs btrfs "$BTRFS_LOOP" "$BTRFS_MNT" || ok=0
    # zfs-fuse can call a pool busy for a moment after a dataset on it was unmounted.
    local i destroyed=1
    if [[ -n $ZFS_POOL ]]; then
        say "destroying the zfs pool $ZFS_POOL${ZFS_PID:+ and stopping zfs-fuse (PID $ZFS_PID)}"
        for ((i = 0; i < 30; i++)); do
            zpool destroy -f "$ZFS_POOL" 2>"$VOLS/destroy.log" && break
            sleep 1
        done
        ((i < 30)) || { cat "$VOLS/destroy.log" >&2; destroyed=0; ok=0; }
    fi
    stop_zfs_fuse
    # What a pool that was not destroyed left mounted under VOLS, deepest first, by exact path.
    if ((!destroyed)); then
        local target
        while read -r target; do
            umount -l "$target" || true
        done < <(findmnt -rn -o TARGET | grep -F "$VOLS/zfs" | sort -r)
    fi
    if [[ -n $VOLS && -d $VOLS ]]; then
        if ((ok)); then
            rm -rf --one-file-system "$VOLS"
        else
            say "bench: could not undo everything under $VOLS; left it in place"
        fi
    fi
    VOLS="" EXT4_MNT="" EXT4_LOOP="" BTRFS_MNT="" BTRFS_LOOP="" ZFS_POOL="" ZFS_MNT="" ZFS_PID=""
}

# A fresh, initialised workdir in WD: a new directory in the scratch space (dir) or on the btrfs
# filesystem; for zfs the pool's one workdir (its root dataset, initialised when it was made).
new_workdir() {
    case $BACKEND in
        zfs) WD=$ZFS_MNT; return ;;
        btrfs) WD=$(mktemp -d "$BTRFS_MNT/workdir.XXXXXX") ;;
        *) WD=$(mktemp -d "$SCRATCH/workdir.XXXXXX") ;;
    esac
    ag --workdir "$WD" workdir init >/dev/null
}

# Removes roots and stages through autogentoo before the directory, so backends that keep volumes
# outside the workdir (zfs datasets, btrfs subvolumes) let go of them too. The zfs workdir (the
# pool's root dataset) stays.
remove_workdir() {
    local wd=$1 name
    for name in $(ag --workdir "$wd" root list | cut -f1); do
        ag --workdir "$wd" root remove --recursive "$name" || true
    done
    for name in $(ag --workdir "$wd" stage list | cut -f1); do
        ag --workdir "$wd" stage remove "$name" || true
    done
    [[ $wd == "$ZFS_MNT" ]] || rm -rf "$wd"
}

# The exit trap. The filesystems the script made go whole; in a --scratch directory the dir
# backend's workdirs are removed one by one.
# main calls it too, to time it; then the trap finds nothing left to do. Its messages go to the
# stderr the script started with (ERR_FD): a signal can arrive while a timed command's output
# goes to a log.
cleanup() {
    stop_farm
    stop_postgres 2>&"$ERR_FD"
    undo_all 2>&"$ERR_FD"
}
undo_all() {
    # On our own ext4 they go with the filesystem; in a --scratch directory one by one.
    if [[ -n ${SCRATCH:-} && -d $SCRATCH && -z $EXT4_MNT ]]; then
        say "removing the workdirs and copies in $SCRATCH"
        local wd BACKEND=dir
        for wd in "$SCRATCH"/workdir.*; do
            [[ -d $wd ]] && { remove_workdir "$wd" 2>/dev/null || true; }
        done
        rm -rf "$SCRATCH"
    fi
    SCRATCH=""
    cleanup_volumes
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
# With THEIRS_SIDE empty only ours runs, and the line gives its time alone. Leaves the medians
# in OURS_MEDIAN and THEIRS_MEDIAN. The tree is the fixture's unless the caller sets CMP_TREE_*.
compare() {
    local key=$1 label=$2 theirs_label=$3 ours=$4 theirs=$5
    local -a ours_times=() theirs_times=()
    for ((ROUND = 1; ROUND <= RUNS; ROUND++)); do
        run_side "$ours"
        ours_times+=("$ELAPSED")
        if [[ -n $theirs ]]; then
            run_side "$theirs"
            theirs_times+=("$ELAPSED")
            say "  $key ($BACKEND) round $ROUND/$RUNS: ours ${ours_times[-1]} s, $theirs_label ${theirs_times[-1]} s"
        else
            say "  $key ($BACKEND) round $ROUND/$RUNS: ours ${ours_times[-1]} s"
        fi
    done
    local tree="\"tree_bytes\":${CMP_TREE_BYTES:-$TREE_BYTES},\"tree_files\":${CMP_TREE_FILES:-$TREE_FILES}"
    OURS_MEDIAN=$(median "${ours_times[@]}")
    if [[ -z $theirs ]]; then
        THEIRS_MEDIAN=""
        TABLE+=("$(printf '%s: %.2f s' "$label" "$OURS_MEDIAN")")
        JSON_LINES+=("$(printf '{"bench":"%s","backend":"%s","runs":%d,"ours_s":%.3f,"ours_runs_s":[%s],%s}' \
            "$key" "$BACKEND" "$RUNS" "$OURS_MEDIAN" "$(IFS=,; echo "${ours_times[*]}")" "$tree")")
        return
    fi
    local ratio
    THEIRS_MEDIAN=$(median "${theirs_times[@]}")
    ratio=$(awk -v o="$OURS_MEDIAN" -v t="$THEIRS_MEDIAN" 'BEGIN { printf "%.2f", o / t }')
    TABLE+=("$(printf '%s vs %s: %.2f s vs %.2f s = %sx%s' \
        "$label" "$theirs_label" "$OURS_MEDIAN" "$THEIRS_MEDIAN" "$ratio" "${CMP_GOAL:-}")")
    JSON_LINES+=("$(printf '{"bench":"%s","backend":"%s","runs":%d,"ours_s":%.3f,"theirs_s":%.3f,"ratio":%s,"ours_runs_s":[%s],"theirs_runs_s":[%s],%s}' \
        "$key" "$BACKEND" "$RUNS" "$OURS_MEDIAN" "$THEIRS_MEDIAN" "$ratio" \
        "$(IFS=,; echo "${ours_times[*]}")" "$(IFS=,; echo "${theirs_times[*]}")" "$tree")")
}

# compare_sizes KEY LABEL THEIRS_LABEL OURS_BYTES THEIRS_BYTES: a size ratio, lower is better.
compare_sizes() {
    local key=$1 label=$2 theirs_label=$3 ours=$4 theirs=$5 ratio
    ratio=$(awk -v o="$ours" -v t="$theirs" 'BEGIN { printf "%.3f", o / t }')
    TABLE+=("$(printf '%s vs %s: %.2f MB vs %.2f MB = %sx%s' "$label" "$theirs_label" \
        "$(awk -v b="$ours" 'BEGIN { print b / 1e6 }')" \
        "$(awk -v b="$theirs" 'BEGIN { print b / 1e6 }')" "$ratio" "${CMP_GOAL:-}")")
    JSON_LINES+=("$(printf '{"bench":"%s","backend":"%s","ours_bytes":%d,"theirs_bytes":%d,"ratio":%s}' \
        "$key" "$BACKEND" "$ours" "$theirs" "$ratio")")
}

# ---------------------------------------------------------------------------------------------
# Comparisons. Each is a `bench_NAME` calling `compare` with two sides; a side is the functions
# SIDE_setup, SIDE_run (the timed part) and SIDE_cleanup. To add one, write both sides and its
# bench_ function and list it in ALL_BENCHES. The per-backend ones loop over BACKENDS, calling
# use_backend first.

# stage import vs GNU tar: both unpack the same .tar.xz into a fresh directory; ours into a
# workdir of each backend, tar into a plain directory in the scratch space.
stage_import_ours_setup() { new_workdir; }
stage_import_ours_run() { ag --workdir "$WD" stage import "$IMPORT_TARBALL" --name bench; }
stage_import_ours_cleanup() {
    # The zfs workdir is shared with root_create's stages: only this import goes.
    if [[ $BACKEND == zfs ]]; then ag --workdir "$WD" stage remove bench; else remove_workdir "$WD"; fi
}
stage_import_tar_setup() { DEST=$SCRATCH/tar-dest && mkdir "$DEST"; }
stage_import_tar_run() {
    tar --xattrs --xattrs-include='*' --numeric-owner -xpf "$IMPORT_TARBALL" -C "$DEST"
}
stage_import_tar_cleanup() { rm -rf "$DEST"; }
bench_stage_import() {
    local backend
    for backend in "${BACKENDS[@]}"; do
        use_backend "$backend"
        IMPORT_TARBALL=$TARBALL
        if [[ $backend == zfs ]]; then
            zfs_tarball
            IMPORT_TARBALL=$ZFS_TARBALL
            TABLE+=("$NOTE_ZFS")
        fi
        compare stage_import "stage import ($BACKEND)" "tar -xpf" stage_import_ours stage_import_tar
    done
}

# root create from a 10k-file and a 100k-file stage: on dir a copy, so it grows with the stage
# (and cp -a of the same stage is the reference); on btrfs and zfs a snapshot or clone, so it
# should not. The stages are imported once per backend, untimed, into GROW_WD[backend].
declare -A GROW_WD=()
ensure_grow_stages() {
    [[ -n ${GROW_WD[$BACKEND]:-} ]] && return
    new_workdir
    local size
    for size in "${GROW_SIZES[@]}"; do
        say "  importing ${TREE_OF[$size]} as stage s$size ($BACKEND, untimed)"
        ag --workdir "$WD" stage import "${TREE_OF[$size]}" --name "s$size" >/dev/null
    done
    GROW_WD[$BACKEND]=$WD
}
root_create_ours_run() { ag --workdir "${GROW_WD[$BACKEND]}" root create "r$ROUND" --stage "s$SIZE"; }
root_create_ours_cleanup() { ag --workdir "${GROW_WD[$BACKEND]}" root remove "r$ROUND"; }
root_create_cp_setup() { DEST=$SCRATCH/cp-dest; }
root_create_cp_run() { cp -a "$STAGE_DIR" "$DEST"; }
root_create_cp_cleanup() { rm -rf "$DEST"; }
bench_root_create() {
    build_trees
    TABLE+=("$(printf 'root create stages: generated, 10k and 100k files of 1-4 KB in directories of 100 (%.1f MB and %.1f MB)' \
        "$(awk -v b="${TREE_BYTES_OF[10k]}" 'BEGIN { print b / 1e6 }')" \
        "$(awk -v b="${TREE_BYTES_OF[100k]}" 'BEGIN { print b / 1e6 }')")")
    local backend small_ours small_theirs
    for backend in "${BACKENDS[@]}"; do
        use_backend "$backend"
        ensure_grow_stages
        for SIZE in "${GROW_SIZES[@]}"; do
            STAGE_DIR=$(ag --workdir "${GROW_WD[$BACKEND]}" stage path "s$SIZE")
            CMP_TREE_BYTES=${TREE_BYTES_OF[$SIZE]}
            CMP_TREE_FILES=$((${SIZE%k} * 1000))
            if [[ $BACKEND == dir ]]; then
                compare "root_create_$SIZE" "root create ($BACKEND, $SIZE files)" "cp -a" \
                    root_create_ours root_create_cp
            else
                compare "root_create_$SIZE" "root create ($BACKEND, $SIZE files)" "" root_create_ours ""
            fi
            if [[ $SIZE == "${GROW_SIZES[0]}" ]]; then
                small_ours=$OURS_MEDIAN small_theirs=$THEIRS_MEDIAN
            fi
        done
        unset CMP_TREE_BYTES CMP_TREE_FILES
        compare_growth "$small_ours" "$OURS_MEDIAN" "$small_theirs" "$THEIRS_MEDIAN"
    done
}

# compare_growth OURS_10K OURS_100K [CP_10K CP_100K]: how root create's time grows with the
# stage, time(100k) / time(10k); ~1x is constant, ~10x linear in the files.
compare_growth() {
    local s=$1 l=$2 cs=${3:-} cl=${4:-} ratio cp_ratio line
    ratio=$(awk -v l="$l" -v s="$s" 'BEGIN { printf "%.2f", l / s }')
    line=$(printf 'root create (%s) growth, 100k files vs 10k files: %.2f s vs %.2f s = %sx' \
        "$BACKEND" "$l" "$s" "$ratio")
    local json
    json=$(printf '{"bench":"root_create_growth","backend":"%s","runs":%d,"ours_10k_s":%.3f,"ours_100k_s":%.3f,"ratio":%s' \
        "$BACKEND" "$RUNS" "$s" "$l" "$ratio")
    if [[ -n $cs ]]; then
        cp_ratio=$(awk -v l="$cl" -v s="$cs" 'BEGIN { printf "%.2f", l / s }')
        line+=$(printf ' (cp -a: %.2f s vs %.2f s = %sx)' "$cl" "$cs" "$cp_ratio")
        json+=$(printf ',"cp_10k_s":%.3f,"cp_100k_s":%.3f,"cp_ratio":%s' "$cs" "$cl" "$cp_ratio")
    fi
    TABLE+=("$line")
    JSON_LINES+=("$json}")
}

# root pack vs find | cpio | pigz: both pack the fixture, imported as a stage and cloned as a
# root with an /init added (root pack refuses a tree without one), into a gzip'd newc cpio at
# level 6 on every core, leaving out the contents of the same directories (pack.exclude's
# default: core/src/site_config.rs) and keeping the directories. The sizes are compared too.
readonly PACK_EXCLUDE=(var/cache/distfiles var/cache/binpkgs var/db/repos usr/src var/tmp tmp
    proc sys dev run)
readonly PACK_GOAL_TIME=0.50 PACK_GOAL_SIZE=1.04
ensure_pack_root() {
    [[ -z ${PACK_ROOT:-} ]] || return 0
    new_workdir
    PACK_ROOT_WD=$WD
    local source=$FIXTURE_ROOT
    if [[ $BACKEND == zfs ]]; then zfs_tarball; source=$ZFS_TARBALL; fi
    say "  importing the fixture as stage minbase and creating root pack ($BACKEND, untimed)"
    ag --workdir "$WD" stage import "$source" --name minbase >/dev/null
    ag --workdir "$WD" root create pack --stage minbase >/dev/null
    PACK_ROOT=$(ag --workdir "$WD" root path pack)
    printf '#!/bin/sh\nexec /bin/sh\n' >"$PACK_ROOT/init"
    chmod 755 "$PACK_ROOT/init"
}
root_pack_ours_setup() { ensure_pack_root; DEST=$SCRATCH/ours.cpio.gz; }
# gzip at 6 is root pack's default; spelled out so a site config cannot change it.
root_pack_ours_run() {
    ag --workdir "$PACK_ROOT_WD" root pack pack -o "$DEST" --compression gzip --level 6
}
root_pack_ours_cleanup() {
    OURS_BYTES=$(stat -c %s "$DEST")
    rm -f "$DEST" "$DEST.manifest.json"
}
root_pack_cpio_setup() { ensure_pack_root; DEST=$SCRATCH/theirs.cpio.gz; }
# In a subshell, for the cd. An excluded directory matches -prune (not descended into) and is
# printed; everything else is printed.
root_pack_cpio_run() (
    local prune=() dir
    for dir in "${PACK_EXCLUDE[@]}"; do prune+=(${prune[0]+-o} -path "./$dir"); done
    cd "$PACK_ROOT"
    find . \( "${prune[@]}" \) -prune -print -o -print | cpio -o -H newc --quiet | pigz -6 >"$DEST"
)
root_pack_cpio_cleanup() {
    THEIRS_BYTES=$(stat -c %s "$DEST")
    rm -f "$DEST"
}
bench_root_pack() {
    use_backend "$PACK_BACKEND"
    CMP_GOAL=" (goal: <= ${PACK_GOAL_TIME}x)" compare root_pack "root pack (gzip 6, $BACKEND)" \
        "find | cpio | pigz -6" root_pack_ours root_pack_cpio
    CMP_GOAL=" (goal: <= ${PACK_GOAL_SIZE}x)" compare_sizes root_pack_size "root pack archive size" \
        "find | cpio | pigz -6's" "$OURS_BYTES" "$THEIRS_BYTES"
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
    use_backend "$PACK_BACKEND"
    compare repo_pack "repo pack (zstd $PACK_LEVEL, 128K)" "mksquashfs" \
        repo_pack_ours repo_pack_mksquashfs
    compare_sizes repo_pack_size "repo pack image size" "mksquashfs's" "$OURS_BYTES" "$THEIRS_BYTES"
}

# kernel build after an initramfs-only change vs a bare relink. The demo system (a busybox
# stage, Debian's linux-source, the example site) is built once, untimed, by the host builder and
# by the uki plugin's builder. Each round changes a site file (untimed); ours is `build SYSTEM`
# (repack, olddefconfig, relink or reassembly, results copied out), theirs `make bzImage` in the
# host builder's build directory after the archive changed, which only relinks.
readonly KERNEL_TARBALL=/usr/src/linux-source-6.1.tar.xz
readonly UKI_STUB=/usr/lib/systemd/boot/efi/linuxx64.efi.stub
ensure_kernel_site() {
    [[ -z ${KSITE:-} ]] || return 0
    KWD=$(mktemp -d "$SCRATCH/workdir.XXXXXX")
    KSITE=$SCRATCH/site
    cp -a "$REPO/config" "$KSITE"
    local plugins=$KSITE/plugins
    mkdir -p "$plugins"
    say "  building the uki plugin (cargo build --release -p autogentoo-plugin-uki)"
    (cd "$REPO" && cargo build --release -q -p autogentoo-plugin-uki) >&2
    ln -s "${CARGO_TARGET_DIR:-$REPO/target}/release/libautogentoo_plugin_uki.so" "$plugins/"
    {
        printf '[storage]\nbackend = "dir"\n\n[plugins]\ndirs = ["plugins"]\n'
        local system
        for system in demo demo-uki; do
            printf '\n[systems.%s]\nstage = "demo"\nkernel = "linux-6.1"\n' "$system"
            printf 'overlays = ["hardware/qemu-x86_64", "secret-sauce/hello"]\n'
            printf 'kernel_config = "kernel/qemu-x86_64.kconfig"\ncmdline = "console=ttyS0 rdinit=/init"\n'
            printf 'kernel_build = "%s"\n' "$([[ $system == demo ]] && echo host || echo uki)"
        done
    } >"$KSITE/autogentoo.toml"
    local tree=$SCRATCH/demo-stage applet
    mkdir -p "$tree"/{bin,etc,dev,proc,sys,run,tmp}
    cp /bin/busybox "$tree/bin/busybox"
    for applet in sh cat echo mount poweroff; do ln -s busybox "$tree/bin/$applet"; done
    printf '#!/bin/sh\necho autogentoo-bench: init reached\npoweroff -f\n' >"$tree/init"
    chmod 755 "$tree/init"
    kag workdir init >/dev/null
    kag stage import "$tree" --name demo >/dev/null
    kag kernel import "$KERNEL_TARBALL" --name linux-6.1 >/dev/null
    local system
    for system in demo demo-uki; do
        say "  building $system once, with the kernel (untimed, a few minutes)"
        kag build "$system" >/dev/null
    done
}
# Our command on the kernel site; BACKEND is dir, as the site says.
kag() { "$AUTOGENTOO_BIN" -q --config "$KSITE/autogentoo.toml" --workdir "$KWD" "$@"; }
site_change() {
    local motd=$KSITE/overlays/secret-sauce/hello/etc/motd
    mkdir -p "${motd%/*}"
    printf 'round %s of %s\n' "$ROUND" "$1" >"$motd"
}
kernel_relink_ours_setup() {
    site_change "$KSYSTEM"
    IMAGE_BEFORE=$(sha256sum <"$KWD/out/$KSYSTEM/$KSYSTEM.efi")
}
kernel_relink_ours_run() { kag build "$KSYSTEM"; }
# A build that skipped its steps would time nothing: the image must be a new one.
kernel_relink_ours_cleanup() {
    [[ $(sha256sum <"$KWD/out/$KSYSTEM/$KSYSTEM.efi") != "$IMAGE_BEFORE" ]] ||
        die "build $KSYSTEM left $KSYSTEM.efi as it was after a site change"
}
kernel_relink_make_setup() { touch "$KWD/out/demo/initramfs.cpio.gz"; }
kernel_relink_make_run() {
    make -s -C "$(kag kernel path linux-6.1)"/linux-source-6.1 O="$KWD/kbuild/demo" -j"$(nproc)" bzImage
}
bench_kernel_relink() {
    use_backend dir
    ensure_kernel_site
    CMP_TREE_BYTES=$(stat -c %s "$KWD/out/demo/initramfs.cpio.gz")
    CMP_TREE_FILES=$(gzip -dc "$KWD/out/demo/initramfs.cpio.gz" | cpio -t --quiet | wc -l)
    KSYSTEM=demo compare kernel_relink "build after an initramfs-only change (host builder)" \
        "make bzImage (relink)" kernel_relink_ours kernel_relink_make
    KSYSTEM=demo-uki compare kernel_relink_uki "build after an initramfs-only change (uki builder)" \
        "make bzImage (relink)" kernel_relink_ours kernel_relink_make
    unset CMP_TREE_BYTES CMP_TREE_FILES
}

# emerge of the example repository's packages in a fresh root: from the shared binary packages
# (--usepkgonly, what a second root of a site does) against a build from source (what it would do
# without them). Both run through `root run` in a root cloned from the Portage stand-in stage
# (scripts/portage-stage), on the dir backend; the binary packages are made once, untimed.
PORTAGE_WD=""
ensure_portage_site() {
    [[ -n $PORTAGE_WD ]] && return
    PORTAGE_WD=$SCRATCH/portage-workdir
    PSITE=$SCRATCH/portage-site
    mkdir -p "$PSITE"
    printf '[storage]\nbackend = "dir"\n\n[mounts]\nrepo = "var/db/repos/example"\n' >"$PSITE/autogentoo.toml"
    say "  the Portage stand-in stage (scripts/portage-stage; built once, then cached)"
    local stage
    stage=$("$REPO/scripts/portage-stage")
    pag workdir init >/dev/null
    pag stage import "$stage" --name portage >/dev/null
    pag repo pack --dir "$REPO/config/repo" --name example >/dev/null
    "$REPO/scripts/example-distfiles" "$PORTAGE_WD/cache/distfiles"
    say "  building the binary packages once (untimed)"
    pag root create maker --stage portage >/dev/null
    pag root run maker -- emerge --quiet --buildpkg=y app-misc/greet app-misc/hello >/dev/null
    pag root remove maker
}
# Our command on the Portage site.
pag() { "$AUTOGENTOO_BIN" -q --config "$PSITE/autogentoo.toml" --workdir "$PORTAGE_WD" "$@"; }
emerge_binary_ours_setup() { pag root create "bin$ROUND" --stage portage >/dev/null; }
emerge_binary_ours_run() {
    pag root run "bin$ROUND" -- emerge --usepkgonly --buildpkg=n app-misc/greet app-misc/hello
}
emerge_binary_ours_cleanup() { pag root remove "bin$ROUND"; }
emerge_binary_source_setup() { pag root create "src$ROUND" --stage portage >/dev/null; }
emerge_binary_source_run() {
    pag root run "src$ROUND" -- emerge --usepkg=n --buildpkg=n app-misc/greet app-misc/hello
}
emerge_binary_source_cleanup() { pag root remove "src$ROUND"; }
bench_emerge_binary() {
    use_backend dir
    ensure_portage_site
    CMP_TREE_BYTES=$(du -sb "$PORTAGE_WD/cache/binpkgs" | cut -f1)
    CMP_TREE_FILES=3
    compare emerge_binary "emerge --usepkgonly of 3 packages in a fresh root" \
        "emerge from source" emerge_binary_ours emerge_binary_source
    unset CMP_TREE_BYTES CMP_TREE_FILES
}

# emerge_qemu: the same source build of the example packages in a fresh arm64 root (its
# programs, compiler included, run through qemu-user) against a fresh amd64 root (native): what
# building another architecture's system on this host costs. The arm64 stage is the Portage
# stand-in made for arm64 (scripts/portage-stage --arch arm64, cached), which needs
# qemu-user-static's binfmt_misc handler: registered here, said first, when missing.
ensure_arm64_stage() {
    [[ -n ${ARM64_STAGE_DONE:-} ]] && return
    ensure_portage_site
    if ! grep -qs '^flags: .*F' /proc/sys/fs/binfmt_misc/qemu-aarch64; then
        say "  registering qemu-user-static's aarch64 handler in binfmt_misc (with the F flag)"
        mountpoint -q /proc/sys/fs/binfmt_misc ||
            mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
        grep '^:' /usr/lib/binfmt.d/qemu-aarch64.conf >/proc/sys/fs/binfmt_misc/register
    fi
    say "  the arm64 Portage stand-in stage (scripts/portage-stage --arch arm64; built once)"
    local stage
    stage=$("$REPO/scripts/portage-stage" --arch arm64)
    pag stage import "$stage" --name portage-arm64 >/dev/null
    ARM64_STAGE_DONE=1
}
emerge_qemu_arm64_setup() { pag root create "a64-$ROUND" --stage portage-arm64 >/dev/null; }
emerge_qemu_arm64_run() {
    pag root run "a64-$ROUND" -- emerge --usepkg=n --buildpkg=n app-misc/greet app-misc/hello
}
emerge_qemu_arm64_cleanup() { pag root remove "a64-$ROUND"; }
# The native side is emerge_binary's source build.
bench_emerge_qemu() {
    use_backend dir
    ensure_arm64_stage
    compare emerge_qemu "emerge from source of 3 packages, arm64 root through qemu-user" \
        "the same emerge in an amd64 root, native" emerge_qemu_arm64 emerge_binary_source
}

# ---------------------------------------------------------------------------------------------

# build_record: a build that changes nothing (every step skipped), recorded in the build
# database (SQLite in the workdir: open, the build, five steps, the kept results linked into
# out/noop/N with their hashes) against the same build by the binary of the commit before the
# database, which records nothing. The goal is at most 2% more.
BASELINE_BIN=""
find_baseline() {
    [[ -n $BASELINE_BIN ]] && return
    if [[ -n ${AUTOGENTOO_BASELINE_BIN:-} ]]; then
        BASELINE_BIN=$AUTOGENTOO_BASELINE_BIN
        return
    fi
    local added base src
    added=$(git -C "$REPO" log --diff-filter=A --format=%H -- db/Cargo.toml | tail -n 1)
    [[ -n $added ]] || die "cannot find the commit that added the build database"
    base=$(git -C "$REPO" rev-parse "$added^")
    BASELINE_BIN=$CACHE/baseline-${base:0:12}/release/autogentoo
    [[ -x $BASELINE_BIN ]] && return
    say "  building the binary of ${base:0:12}, before the build database (once, then cached)"
    src=$(mktemp -d "$CACHE/baseline-src.XXXXXX")
    git -C "$REPO" archive "$base" | tar -x -C "$src"
    (cd "$src" && CARGO_TARGET_DIR=$CACHE/baseline-${base:0:12} cargo build --release -q -p autogentoo-cli) >&2
    rm -rf "$src"
}
# A workdir with SOURCE (a stage tarball or tree) as stage `minbase` and the system of
# NOOP_CONFIG, built once, untimed, so that the timed builds find nothing to do. Prints the
# workdir.
noop_site() {
    local bin=$1 source=$2 wd
    wd=$(mktemp -d "$SCRATCH/workdir.XXXXXX")
    "$bin" -q --backend dir --workdir "$wd" workdir init >/dev/null
    "$bin" -q --backend dir --workdir "$wd" stage import "$source" --name minbase >/dev/null
    # The root, with the /init a pack wants (the generated tree has no shell to make it with).
    "$bin" -q --backend dir --workdir "$wd" root create noop --stage minbase >/dev/null
    printf '#!/bin/sh\n' >"$wd/roots/noop/init"
    chmod 755 "$wd/roots/noop/init"
    "$bin" -q --backend dir --workdir "$wd" --config "$NOOP_CONFIG" build noop >/dev/null
    echo "$wd"
}
build_record_ours_run() { "$AUTOGENTOO_BIN" -q --backend dir --workdir "$WD_RECORDED" --config "$NOOP_CONFIG" build noop; }
build_record_base_run() { "$BASELINE_BIN" -q --backend dir --workdir "$WD_BASELINE" --config "$NOOP_CONFIG" build noop; }
# Twice: on the minbase fixture (a small root: the build itself takes milliseconds) and on the
# generated 100,000-file stage (the size of a Gentoo stage3's root, whose fingerprint walk is
# most of a no-op build).
bench_build_record() {
    use_backend dir
    find_baseline
    build_trees
    NOOP_CONFIG=$SCRATCH/noop.toml
    printf '[systems.noop]\nstage = "minbase"\nkernel_build = "none"\n' >"$NOOP_CONFIG"
    # A no-op build takes a fraction of a second: more rounds, so 2% is above the noise.
    local runs=$RUNS
    ((RUNS >= 21)) || RUNS=21
    CMP_GOAL=" (goal: at most 1.02x)"
    WD_RECORDED=$(noop_site "$AUTOGENTOO_BIN" "$TARBALL")
    WD_BASELINE=$(noop_site "$BASELINE_BIN" "$TARBALL")
    compare build_record_minbase "no-op build of the minbase root, recorded" \
        "the same build unrecorded" build_record_ours build_record_base
    WD_RECORDED=$(noop_site "$AUTOGENTOO_BIN" "${TREE_OF[100k]}")
    WD_BASELINE=$(noop_site "$BASELINE_BIN" "${TREE_OF[100k]}")
    CMP_TREE_BYTES=${TREE_BYTES_OF[100k]} CMP_TREE_FILES=100000 \
        compare build_record_100k "no-op build of a 100,000-file root, recorded" \
        "the same build unrecorded" build_record_ours build_record_base
    RUNS=$runs
    unset CMP_GOAL
}

# builds_list: `autogentoo builds list` (the newest 50 of all systems) over 100,000 recorded
# builds, on SQLite and on PostgreSQL (a private cluster the script starts and stops by PID),
# against the same query through the database's own client (Python's sqlite3, psql). The goal
# is under 100 ms.
readonly LIST_QUERY="SELECT system, number, host, started_by, pid, started_at, ended_at, outcome, error, config_hash, stage, repo, packages, inputs, out_dir, kept FROM builds ORDER BY started_at DESC LIMIT 50"
# 100,000 builds of 100 systems, a minute apart; the SELECT both databases take.
readonly FILL_BUILDS="INSERT INTO builds (system, number, host, started_by, pid, pid_start, boot_id, started_at, ended_at, outcome, config_hash, stage, repo, packages, inputs, out_dir) SELECT 'system' || (i % 100), i, 'bench', 'bench', 1, 1, 'bench', 1700000000000 + i * 60000, 1700000000000 + i * 60000 + 1000, 'succeeded', 'h', 'minbase', '', '', 'f', '/nonexistent' FROM"
PG_PID=""
PG_DIR=""
start_postgres() {
    local bin port
    bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
    PG_DIR=$(mktemp -d "$CACHE/pg.XXXXXX")
    chown postgres: "$PG_DIR"
    chmod 700 "$PG_DIR"
    printf 'bench-%s\n' "$RANDOM$RANDOM" >"$PG_DIR/password"
    chown postgres: "$PG_DIR/password"
    setpriv --reuid=postgres --regid=postgres --init-groups -- "$bin/initdb" -D "$PG_DIR/data" \
        -U autogentoo --auth=scram-sha-256 --pwfile="$PG_DIR/password" --no-sync >"$PG_DIR/initdb.log" 2>&1 ||
        { cat "$PG_DIR/initdb.log" >&2; die "initdb failed"; }
    port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    setpriv --reuid=postgres --regid=postgres --init-groups -- "$bin/postgres" -D "$PG_DIR/data" \
        -p "$port" -k "$PG_DIR" -c listen_addresses=127.0.0.1 -c fsync=off >"$PG_DIR/server.log" 2>&1 &
    PG_PID=$!
    local tries=0
    until pg_isready -q -h 127.0.0.1 -p "$port"; do
        ((++tries < 300)) || die "the private PostgreSQL did not start; see $PG_DIR/server.log"
        sleep 0.2
    done
    PG_URL="postgres://autogentoo:$(cat "$PG_DIR/password")@127.0.0.1:$port/postgres"
    PG_PORT=$port
}
stop_postgres() {
    [[ -n $PG_PID ]] || return 0
    kill -INT "$PG_PID" 2>/dev/null || true
    wait "$PG_PID" 2>/dev/null || true
    PG_PID=""
    rm -rf "$PG_DIR"
}
pg_client() {
    PGPASSWORD=$(cat "$PG_DIR/password") psql -q -At -h 127.0.0.1 -p "$PG_PORT" -U autogentoo -d postgres "$@"
}
builds_list_sqlite_ours_run() { "$AUTOGENTOO_BIN" -q --workdir "$LIST_WD" builds list; }
builds_list_sqlite_client_run() {
    python3 -c 'import sqlite3, sys; print(len(sqlite3.connect(sys.argv[1]).execute(sys.argv[2]).fetchall()))' \
        "$LIST_WD/autogentoo.db" "$LIST_QUERY"
}
builds_list_pg_ours_run() { AUTOGENTOO_DATABASE_URL=$PG_URL "$AUTOGENTOO_BIN" -q --workdir "$LIST_WD" builds list; }
builds_list_pg_client_run() { pg_client -c "$LIST_QUERY"; }
bench_builds_list() {
    use_backend dir
    LIST_WD=$(mktemp -d "$SCRATCH/workdir.XXXXXX")
    "$AUTOGENTOO_BIN" -q --workdir "$LIST_WD" builds list >/dev/null # creates and migrates it
    python3 -c 'import sqlite3, sys; c = sqlite3.connect(sys.argv[1]); c.execute(sys.argv[2]); c.commit()' \
        "$LIST_WD/autogentoo.db" \
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 100000) $FILL_BUILDS n"
    CMP_GOAL=" (goal: under 0.10 s)"
    compare builds_list_sqlite "builds list, 100,000 builds, SQLite" "python3 sqlite3, the same query" \
        builds_list_sqlite_ours builds_list_sqlite_client
    start_postgres
    AUTOGENTOO_DATABASE_URL=$PG_URL "$AUTOGENTOO_BIN" -q --workdir "$LIST_WD" builds list >/dev/null
    pg_client -c "$FILL_BUILDS generate_series(1::bigint, 100000::bigint) AS n(i)" >/dev/null
    pg_client -c "ANALYZE builds" >/dev/null
    compare builds_list_pg "builds list, 100,000 builds, PostgreSQL" "psql, the same query" \
        builds_list_pg_ours builds_list_pg_client
    unset CMP_GOAL
    stop_postgres
}

# The farm under a bounded load, on loopback: FARM_HOSTS real worker processes (each its own
# workdir with a busybox stage) against one `serve` on a private PostgreSQL, over TLS. The jobs
# are real but tiny builds (a root cloned from the stage, packed into an initramfs). Printed:
# submissions per second, submit-to-lease time (p50, p99, from the server's own records), the
# API's read latency while the hosts work (p50, p99), and the server's CPU time and peak memory.
# Not a comparison: there is no usual alternative to a farm's coordinator on the same input.
FARM_HOSTS=${AUTOGENTOO_BENCH_FARM_HOSTS:-100}
FARM_PIDS=()
# Stops the farm's server and workers, by the PIDs this script started.
stop_farm() {
    local pid
    for pid in "${FARM_PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${FARM_PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    FARM_PIDS=()
}
FARM_JOBS=${AUTOGENTOO_BENCH_FARM_JOBS:-300}
# The load on a farm server on PostgreSQL, then on one on SQLite (its own worker off: the same
# hosts do the building), to show how far a single machine's database carries.
bench_farm_load() {
    use_backend dir
    farm_load_on postgres
    farm_load_on sqlite
}

# farm_load_on postgres|sqlite: one load run on a server with that database.
farm_load_on() {
    local engine=$1
    local dir=$SCRATCH/farm i port
    mkdir -p "$dir/site" "$dir/stage/bin"
    cp "$(command -v busybox)" "$dir/stage/bin/busybox"
    ln -s busybox "$dir/stage/bin/sh"
    printf '#!/bin/sh\nexec sh\n' >"$dir/stage/init"
    chmod 755 "$dir/stage/init"
    tar -C "$dir/stage" -czf "$dir/stage.tar.gz" .
    [[ $engine == postgres ]] && start_postgres
    {
        if [[ $engine == postgres ]]; then
            printf '[database]\nurl = "postgres://autogentoo@127.0.0.1:%s/postgres"\npassword_file = "%s"\n' \
                "$PG_PORT" "$PG_DIR/password"
        fi
        for ((i = 0; i < FARM_JOBS; i++)); do
            printf '[systems.tiny-%d]\nstage = "tiny"\nkernel_build = "none"\n' "$i"
        done
    } >"$dir/site/autogentoo.toml"
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout "$dir/ca.key" \
        -out "$dir/ca.pem" -days 1 -subj /CN=bench-ca 2>/dev/null
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout "$dir/server.key" \
        -out "$dir/server.csr" -subj /CN=bench 2>/dev/null
    printf 'subjectAltName=IP:127.0.0.1\n' >"$dir/san.ext"
    openssl x509 -req -in "$dir/server.csr" -CA "$dir/ca.pem" -CAkey "$dir/ca.key" -CAcreateserial \
        -days 1 -out "$dir/server.pem" -extfile "$dir/san.ext" 2>/dev/null
    port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    local url=https://127.0.0.1:$port server=("$AUTOGENTOO_BIN" --config "$dir/site/autogentoo.toml" --workdir "$dir/server")
    "${server[@]}" -q farm token create bench --role admin >"$dir/admin.token"
    "${server[@]}" serve --listen "127.0.0.1:$port" --tls-cert "$dir/server.pem" --tls-key "$dir/server.key" \
        --no-local-worker >"$dir/server.log" 2>&1 &
    FARM_PIDS=($!)
    local server_pid=$!
    until grep -q "serving the farm API" "$dir/server.log"; do sleep 0.1; done
    local client=(env AUTOGENTOO_SERVER="$url" AUTOGENTOO_CA="$dir/ca.pem" AUTOGENTOO_TOKEN_FILE="$dir/admin.token" "$AUTOGENTOO_BIN")
    say "  $FARM_HOSTS hosts: workdirs, stages, enrollment"
    for ((i = 0; i < FARM_HOSTS; i++)); do
        "$AUTOGENTOO_BIN" -q --backend dir --workdir "$dir/host-$i" workdir init
        "$AUTOGENTOO_BIN" -q --backend dir --workdir "$dir/host-$i" stage import "$dir/stage.tar.gz" --name tiny >/dev/null
        "${client[@]}" -q farm key create --expires 1h >"$dir/host-$i.key"
        "$AUTOGENTOO_BIN" --backend dir --workdir "$dir/host-$i" worker --server "$url" --ca "$dir/ca.pem" \
            --name "host-$i" --enroll-key-file "$dir/host-$i.key" >"$dir/host-$i.log" 2>&1 &
        FARM_PIDS+=($!)
    done
    until (($(grep -l "takes jobs from" "$dir"/host-*.log 2>/dev/null | wc -l) == FARM_HOSTS)); do sleep 0.2; done
    local cpu_before mem result
    cpu_before=$(awk '{ print $14 + $15 }' "/proc/$server_pid/stat")
    say "  $FARM_JOBS jobs"
    result=$(python3 "$REPO/bench/farm_load.py" "$url" "$dir/ca.pem" "$dir/admin.token" "$FARM_JOBS" 8)
    local cpu_s
    cpu_s=$(awk -v a="$cpu_before" -v t="$(getconf CLK_TCK)" '{ printf "%.1f", ($14 + $15 - a) / t }' "/proc/$server_pid/stat")
    mem=$(awk '/VmHWM/ { printf "%.0f", $2 / 1024 }' "/proc/$server_pid/status")
    local lease
    if [[ $engine == postgres ]]; then
        lease=$(pg_client -c "SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY leased_at - submitted_at), \
            percentile_cont(0.99) WITHIN GROUP (ORDER BY leased_at - submitted_at) FROM farm_jobs")
    else
        lease=$(python3 -c '
import sqlite3, sys
waits = sorted(r[0] for r in sqlite3.connect(sys.argv[1]).execute(
    "SELECT leased_at - submitted_at FROM farm_jobs WHERE leased_at IS NOT NULL"))
print("%s|%s" % (waits[len(waits) // 2], waits[min(len(waits) - 1, len(waits) * 99 // 100)]))
' "$dir/server/autogentoo.db")
    fi
    stop_farm
    local line
    line=$(python3 -c '
import json, sys
r = json.loads(sys.argv[1]); p50, p99 = (float(x) / 1000 for x in sys.argv[2].split("|"))
print("farm load on %s, %d hosts, %d tiny jobs over TLS on loopback: %.0f submissions/s (p99 %.3f s); "
      "submit to lease p50 %.2f s, p99 %.2f s; API reads while loaded p50 %.3f s, p99 %.3f s "
      "(%d reads); all ended in %.1f s, %d failed, %d request errors; server CPU %s s, peak RSS %s MB"
      % (sys.argv[6], int(sys.argv[3]), r["jobs"], r["submissions_per_s"], r["submit_p99_s"], p50,
         p99, r["api_read_p50_s"], r["api_read_p99_s"], r["api_reads"], r["drained_s"], r["failed"],
         r["error_count"], sys.argv[4], sys.argv[5]))
' "$result" "$lease" "$FARM_HOSTS" "$cpu_s" "$mem" "$engine")
    TABLE+=("$line")
    JSON_LINES+=("$result")
    [[ $engine == postgres ]] && stop_postgres
    rm -rf "$dir"
}

main() {
    parse_args "$@"
    ((EUID == 0)) || die "run as root: debootstrap and the imports create device nodes and owners"
    local started=${EPOCHREALTIME/./}
    find_binary
    require_tools
    exec {ERR_FD}>&2
    # Before anything that cleanup undoes is made. Without the INT and TERM traps, a Ctrl-C or
    # kill would end bash without running the EXIT trap.
    trap cleanup EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
    build_fixture
    make_scratch

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
    local cleaning=${EPOCHREALTIME/./}
    cleanup
    say "done in $(((${EPOCHREALTIME/./} - started) / 1000000)) s, of which cleaning up $(((${EPOCHREALTIME/./} - cleaning) / 1000000)) s"
}

main "$@"

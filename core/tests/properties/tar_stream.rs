//! The tar member reader and extractor behind `stage import`, fed what a hostile or broken
//! tarball holds: archives GNU tar wrote (sparse members in every form, pax records, a global
//! header, long names, links, nodes), archives generated with random header fields, sizes,
//! records and sparse maps, and any of these mutated (bytes flipped, fields rewritten with and
//! without a good checksum, numbers replaced, blocks cut, repeated or dropped), and plain noise.
//!
//! For every stream, [`extract_tar`] into an empty directory must:
//! - not panic;
//! - allocate at most [`heap_bound`] bytes at its peak: a fixed 2 MiB (the extractor's 256 KiB
//!   write buffer, the mount table read for a full-disk message) plus 32 bytes for every byte
//!   of the stream, so that memory follows what the stream holds, never what its headers claim
//!   (a 16 MiB extension header, a terabyte of data, a million runs);
//! - fail, if it fails, with one line per cause and no control character in any;
//! - write nothing outside that directory: a sibling directory with a file, a directory and a
//!   symlink, and the directory above, are the same afterwards (names, types, modes, owners,
//!   times, link counts, contents).
//!
//! Cases run as root, as an import does: owners, device nodes and `trusted.` xattrs are set.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{symlink, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::AtomicBool;
use std::sync::OnceLock;

use autogentoo_core::stage_import::extract_tar;
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::{select, Index};
use tar::{EntryType, GnuExtSparseHeader, Header};

// ---------------------------------------------------------------------------------------------
// The heap, measured per thread: proptest runs a case on the thread that asks, and the other
// properties of this binary run on threads of their own.

/// The system allocator, counting the live bytes of each thread.
struct Counting;

thread_local! {
    static LIVE: Cell<isize> = const { Cell::new(0) };
    static PEAK: Cell<isize> = const { Cell::new(0) };
}

fn count(delta: isize) {
    // `try_with`: a thread being torn down has no counters left, and frees all the same.
    let _ = LIVE.try_with(|live| {
        let now = live.get() + delta;
        live.set(now);
        let _ = PEAK.try_with(|peak| peak.set(peak.get().max(now)));
    });
}

// SAFETY: every call goes to the system allocator unchanged; only the counts are ours.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let ptr = unsafe { System.alloc(layout) };
        if !ptr.is_null() {
            count(layout.size() as isize);
        }
        ptr
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let ptr = unsafe { System.alloc_zeroed(layout) };
        if !ptr.is_null() {
            count(layout.size() as isize);
        }
        ptr
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        count(-(layout.size() as isize));
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let new = unsafe { System.realloc(ptr, layout, new_size) };
        if !new.is_null() {
            count(new_size as isize - layout.size() as isize);
        }
        new
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Runs `f` and returns its result with the most heap it held at once, beyond what this
/// thread held before.
fn peak_heap<T>(f: impl FnOnce() -> T) -> (T, isize) {
    let start = LIVE.with(Cell::get);
    PEAK.with(|peak| peak.set(start));
    let result = f();
    (result, PEAK.with(Cell::get) - start)
}

/// What an extraction may allocate at its peak for a stream of `len` bytes: see the module
/// documentation.
fn heap_bound(len: usize) -> isize {
    (2 << 20) + 32 * len as isize
}

// ---------------------------------------------------------------------------------------------
// Archives GNU tar wrote, made once from a tree holding every kind of entry.

const BLOCK: usize = 512;

/// A file that is not UTF-8, a long name, a long link target, a sparse file, links, a fifo, a
/// device node and an xattr.
fn build_seed_tree(root: &Path) {
    let dir = root.join("usr/lib");
    fs::create_dir_all(&dir).unwrap();
    fs::write(dir.join("libc.so.6"), b"\x7fELF not really\n").unwrap();
    fs::write(
        root.join("usr").join(OsStr::from_bytes(b"caf\xe9.txt")),
        b"latin-1\n",
    )
    .unwrap();
    let long = root.join("usr").join("l".repeat(120));
    fs::write(&long, b"a name longer than a header holds\n").unwrap();
    symlink("t".repeat(140), root.join("usr/long-link")).unwrap();
    symlink("../lib/libc.so.6", root.join("usr/lib/libc.so")).unwrap();
    fs::hard_link(dir.join("libc.so.6"), root.join("usr/hardlinked")).unwrap();
    let sparse = fs::File::create(root.join("usr/sparse.img")).unwrap();
    sparse.set_len(64 << 10).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&sparse, &[b'd'; 1500], 8192).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&sparse, &[b'e'; 700], 40_000).unwrap();
    rustix::fs::mknodat(
        rustix::fs::CWD,
        root.join("usr/fifo"),
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o600),
        0,
    )
    .unwrap();
    rustix::fs::mknodat(
        rustix::fs::CWD,
        root.join("usr/null"),
        rustix::fs::FileType::CharacterDevice,
        rustix::fs::Mode::from_raw_mode(0o666),
        rustix::fs::makedev(1, 3),
    )
    .expect("make a device node (the properties run as root)");
    rustix::fs::setxattr(
        dir.join("libc.so.6"),
        "user.autogentoo",
        b"value\nwith a line break",
        rustix::fs::XattrFlags::empty(),
    )
    .expect("set a user xattr in the temporary directory");
}

/// The tarballs GNU tar makes of the seed tree, in each format with each sparse form.
fn seeds() -> &'static [Vec<u8>] {
    static SEEDS: OnceLock<Vec<Vec<u8>>> = OnceLock::new();
    SEEDS.get_or_init(|| {
        assert!(
            rustix::process::geteuid().is_root(),
            "the stage import properties set owners and make device nodes, as an import does: \
             run them as root (`cargo xtask test` does)"
        );
        let tmp = tempfile::tempdir().unwrap();
        let tree = tmp.path().join("tree");
        build_seed_tree(&tree);
        let formats: [&[&str]; 6] = [
            &["--format=gnu"],
            &["--format=posix", "--sparse-version=0.0", "--xattrs"],
            &["--format=posix", "--sparse-version=0.1", "--xattrs"],
            &["--format=posix", "--sparse-version=1.0", "--xattrs"],
            // A global header, as `git archive` writes one first.
            &["--format=posix", "--pax-option=comment=seed", "--xattrs"],
            &["--format=ustar"],
        ];
        formats
            .iter()
            .map(|args| {
                let archive = tmp.path().join("seed.tar");
                let output = Command::new("tar")
                    .args([
                        "--create",
                        "--sparse",
                        "--numeric-owner",
                        "--blocking-factor=1",
                    ])
                    .args(*args)
                    .arg("--file")
                    .arg(&archive)
                    .arg("-C")
                    .arg(&tree)
                    .arg(".")
                    .output()
                    .expect("run GNU tar (apt-get install tar)");
                // The ustar format cannot hold some names; GNU tar says so and writes the rest.
                assert!(
                    output.status.success() || args.contains(&"--format=ustar"),
                    "tar {args:?}: {}",
                    String::from_utf8_lossy(&output.stderr)
                );
                fs::read(&archive).unwrap()
            })
            .collect()
    })
}

// ---------------------------------------------------------------------------------------------
// Archives generated from random members.

/// Names that climb out, are absolute, go through a symlink or are nothing at all, among
/// ordinary ones.
fn name() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        select(vec![
            "etc",
            "etc/",
            "etc/passwd",
            "usr/bin/sh",
            "link",
            "link/through",
            "./",
            ".",
            "",
            "../outside/x",
            "../../x",
            "/outside/x",
            "a/../../x",
            "dev/x",
            "GNUSparseFile.1/x",
        ])
        .prop_map(|n| n.as_bytes().to_vec()),
        "[a-c/.]{1,12}".prop_map(String::into_bytes),
        vec(any::<u8>(), 0..120),
        (1usize..300).prop_map(|n| "d/".repeat(n).into_bytes()),
    ]
}

/// Numbers at the edges of every field's range, and any.
fn number() -> impl Strategy<Value = u64> {
    prop_oneof![
        select(vec![
            0,
            1,
            511,
            512,
            513,
            0o7777777,
            0o77777777777,
            1 << 32,
            u32::MAX as u64,
            i64::MAX as u64,
            1 << 63,
            u64::MAX - 511,
            u64::MAX,
        ]),
        0u64..70_000,
        any::<u64>(),
    ]
}

/// A decimal as pax records and 1.0 maps write them, or something that is not one.
fn decimal() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        number().prop_map(|n| n.to_string().into_bytes()),
        select(vec![
            "-1",
            "-9223372036854775808.5",
            "9223372036854775807.999999999",
            "1.5",
            "-0.5",
            "",
            "1e9",
            "+5",
            "18446744073709551616",
            "99999999999999999999999999999999999999999999",
        ])
        .prop_map(|s| s.as_bytes().to_vec()),
    ]
}

/// pax records: the keys the reader honours, a sparse map in each form, xattrs and noise.
fn record() -> impl Strategy<Value = (String, Vec<u8>)> {
    let key = select(vec![
        "path",
        "linkpath",
        "size",
        "mtime",
        "uid",
        "gid",
        "comment",
        "GNU.sparse.size",
        "GNU.sparse.realsize",
        "GNU.sparse.numblocks",
        "GNU.sparse.offset",
        "GNU.sparse.numbytes",
        "GNU.sparse.map",
        "GNU.sparse.name",
        "GNU.sparse.major",
        "GNU.sparse.minor",
        "SCHILY.xattr.user.test",
        "SCHILY.xattr.trusted.test",
        "SCHILY.xattr.security.capability",
    ]);
    let value = prop_oneof![
        decimal(),
        name(),
        vec(decimal(), 0..40).prop_map(|numbers| numbers.join(&b","[..])),
        vec(any::<u8>(), 0..64),
    ];
    (key.prop_map(str::to_owned), value)
}

/// What a generated member is.
#[derive(Clone, Debug)]
enum Kind {
    File,
    Dir,
    Symlink,
    Hardlink,
    Fifo,
    Char,
    /// A type the extractor does not know.
    Other(u8),
    /// Old GNU sparse, with its map's runs (some in extension blocks).
    OldSparse(Vec<(u64, u64)>),
}

#[derive(Clone, Debug)]
struct Generated {
    /// A global header's records, before the member.
    global: Option<Vec<(String, Vec<u8>)>>,
    /// The member's own pax records.
    pax: Vec<(String, Vec<u8>)>,
    /// A GNU long name before the member.
    long_name: Option<Vec<u8>>,
    kind: Kind,
    name: Vec<u8>,
    link: Vec<u8>,
    /// The size the header states, and the data that follows (which may be shorter).
    size: u64,
    data: Vec<u8>,
    mode: u32,
    uid: u64,
    mtime: u64,
    real_size: u64,
    device: (u32, u32),
}

fn kind() -> impl Strategy<Value = Kind> {
    prop_oneof![
        4 => Just(Kind::File),
        2 => Just(Kind::Dir),
        2 => Just(Kind::Symlink),
        2 => Just(Kind::Hardlink),
        1 => Just(Kind::Fifo),
        1 => Just(Kind::Char),
        1 => any::<u8>().prop_map(Kind::Other),
        3 => vec((number(), number()), 0..60).prop_map(Kind::OldSparse),
    ]
}

fn generated() -> impl Strategy<Value = Generated> {
    (
        (
            proptest::option::weighted(0.2, vec(record(), 0..4)),
            vec(record(), 0..6),
            proptest::option::weighted(0.2, name()),
            kind(),
            name(),
            name(),
        ),
        (
            prop_oneof![0u64..2000, number()],
            vec(any::<u8>(), 0..2000),
            any::<u32>(),
            prop_oneof![0u64..3000, number()],
            number(),
            prop_oneof![0u64..100_000, number()],
            (0u32..300, 0u32..300),
        ),
    )
        .prop_map(
            |(
                (global, pax, long_name, kind, name, link),
                (size, data, mode, uid, mtime, real_size, device),
            )| Generated {
                global,
                pax,
                long_name,
                kind,
                name,
                link,
                size,
                data,
                mode,
                uid,
                mtime,
                real_size,
                device,
            },
        )
}

/// A pax header of `kind` holding `records`, as raw blocks.
fn pax_blocks(kind: EntryType, records: &[(String, Vec<u8>)]) -> Vec<u8> {
    let mut data = Vec::new();
    for (key, value) in records {
        let body = key.len() + value.len() + 3;
        let mut len = body + 1;
        while len.to_string().len() + body != len {
            len += 1;
        }
        data.extend_from_slice(format!("{len} {key}=").as_bytes());
        data.extend_from_slice(value);
        data.push(b'\n');
    }
    let mut header = Header::new_ustar();
    header.set_entry_type(kind);
    header.set_size(data.len() as u64);
    let _ = header.set_path("PaxHeaders/x");
    header.set_cksum();
    let mut out = header.as_bytes().to_vec();
    out.extend(padded(data));
    out
}

fn padded(mut data: Vec<u8>) -> Vec<u8> {
    data.resize(data.len().div_ceil(BLOCK) * BLOCK, 0);
    data
}

/// Copies as much of `value` into `field` as fits.
fn put(field: &mut [u8], value: &[u8]) {
    field.fill(0);
    let n = field.len().min(value.len());
    field[..n].copy_from_slice(&value[..n]);
}

impl Generated {
    fn blocks(&self) -> Vec<u8> {
        let mut out = Vec::new();
        if let Some(global) = &self.global {
            out.extend(pax_blocks(EntryType::XGlobalHeader, global));
        }
        if !self.pax.is_empty() {
            out.extend(pax_blocks(EntryType::XHeader, &self.pax));
        }
        if let Some(long) = &self.long_name {
            let mut header = Header::new_gnu();
            header.set_entry_type(EntryType::GNULongName);
            header.set_size(long.len() as u64);
            let _ = header.set_path("././@LongLink");
            header.set_cksum();
            out.extend_from_slice(header.as_bytes());
            out.extend(padded(long.clone()));
        }
        let mut header = Header::new_gnu();
        let kind = match &self.kind {
            Kind::File => EntryType::Regular,
            Kind::Dir => EntryType::Directory,
            Kind::Symlink => EntryType::Symlink,
            Kind::Hardlink => EntryType::Link,
            Kind::Fifo => EntryType::Fifo,
            Kind::Char => EntryType::Char,
            Kind::Other(byte) => EntryType::new(*byte),
            Kind::OldSparse(_) => EntryType::GNUSparse,
        };
        header.set_entry_type(kind);
        put(&mut header.as_old_mut().name, &self.name);
        put(&mut header.as_old_mut().linkname, &self.link);
        header.set_size(self.size);
        header.set_mode(self.mode);
        header.set_uid(self.uid);
        header.set_gid(self.uid / 3);
        header.set_mtime(self.mtime);
        let _ = header.set_device_major(self.device.0);
        let _ = header.set_device_minor(self.device.1);
        let mut extension = Vec::new();
        if let Kind::OldSparse(runs) = &self.kind {
            let gnu = header.as_gnu_mut().expect("a GNU header");
            gnu.set_real_size(self.real_size);
            let (first, rest) = runs.split_at(runs.len().min(4));
            for (slot, (offset, len)) in gnu.sparse.iter_mut().zip(first) {
                slot.set_offset(*offset);
                slot.set_length(*len);
            }
            gnu.set_is_extended(!rest.is_empty());
            let chunks: Vec<_> = rest.chunks(21).collect();
            for (i, chunk) in chunks.iter().enumerate() {
                let mut ext = GnuExtSparseHeader::new();
                for (slot, (offset, len)) in ext.sparse_mut().iter_mut().zip(chunk.iter()) {
                    slot.set_offset(*offset);
                    slot.set_length(*len);
                }
                ext.set_is_extended(i + 1 < chunks.len());
                extension.extend_from_slice(ext.as_bytes());
            }
        }
        header.set_cksum();
        out.extend_from_slice(header.as_bytes());
        out.extend(extension);
        out.extend(padded(self.data.clone()));
        out
    }
}

/// A generated archive: members, and the two zero blocks that end it (or not).
fn generated_archive() -> impl Strategy<Value = Vec<u8>> {
    (vec(generated(), 1..6), any::<bool>()).prop_map(|(members, end)| {
        let mut out: Vec<u8> = members.iter().flat_map(Generated::blocks).collect();
        if end {
            out.extend_from_slice(&[0; 2 * BLOCK]);
        }
        out
    })
}

// ---------------------------------------------------------------------------------------------
// Mutations.

/// Where a header field lies in its block.
#[derive(Clone, Copy, Debug)]
enum Field {
    Name,
    Mode,
    Uid,
    Gid,
    Size,
    Mtime,
    Checksum,
    Type,
    LinkName,
    Magic,
    DevMajor,
    DevMinor,
    /// Old GNU: the file's size, a run's offset or length, the extension flag.
    RealSize,
    SparseOffset(usize),
    SparseLength(usize),
    Extended,
}

impl Field {
    fn range(self) -> std::ops::Range<usize> {
        match self {
            Self::Name => 0..100,
            Self::Mode => 100..108,
            Self::Uid => 108..116,
            Self::Gid => 116..124,
            Self::Size => 124..136,
            Self::Mtime => 136..148,
            Self::Checksum => 148..156,
            Self::Type => 156..157,
            Self::LinkName => 157..257,
            Self::Magic => 257..265,
            Self::DevMajor => 329..337,
            Self::DevMinor => 337..345,
            Self::RealSize => 483..495,
            Self::SparseOffset(i) => 386 + 24 * i..398 + 24 * i,
            Self::SparseLength(i) => 398 + 24 * i..410 + 24 * i,
            Self::Extended => 482..483,
        }
    }
}

fn field() -> impl Strategy<Value = Field> {
    prop_oneof![
        select(vec![
            Field::Name,
            Field::Mode,
            Field::Uid,
            Field::Gid,
            Field::Size,
            Field::Mtime,
            Field::Checksum,
            Field::Type,
            Field::LinkName,
            Field::Magic,
            Field::DevMajor,
            Field::DevMinor,
            Field::RealSize,
            Field::Extended,
        ]),
        (0usize..4).prop_map(Field::SparseOffset),
        (0usize..4).prop_map(Field::SparseLength),
    ]
}

/// What a field is rewritten with.
#[derive(Clone, Debug)]
enum Value {
    Octal(u64),
    /// GNU's base-256, positive or (with the sign bit) negative.
    Base256 {
        negative: bool,
        value: u64,
    },
    Bytes(Vec<u8>),
}

fn value() -> impl Strategy<Value = Value> {
    prop_oneof![
        number().prop_map(Value::Octal),
        (any::<bool>(), number()).prop_map(|(negative, value)| Value::Base256 { negative, value }),
        vec(any::<u8>(), 0..16).prop_map(Value::Bytes),
        select(vec![
            b'0', b'1', b'2', b'3', b'4', b'5', b'6', b'7', b'g', b'x', b'L', b'K', b'S', b'V',
            b'M'
        ])
        .prop_map(|t| Value::Bytes(vec![t])),
    ]
}

impl Value {
    fn write(&self, field: &mut [u8]) {
        match self {
            Self::Octal(n) => {
                let text = format!("{n:0width$o}", width = field.len().saturating_sub(1));
                put(field, text.as_bytes());
            }
            Self::Base256 { negative, value } => {
                let fill = if *negative { 0xff } else { 0 };
                field.fill(fill);
                let bytes = value.to_be_bytes();
                let n = field.len().min(8);
                let len = field.len();
                field[len - n..].copy_from_slice(&bytes[8 - n..]);
                field[0] = if *negative { 0xff } else { 0x80 };
            }
            Self::Bytes(bytes) => put(field, bytes),
        }
    }
}

#[derive(Clone, Debug)]
enum Mutation {
    Flip {
        at: Index,
        xor: u8,
    },
    Field {
        block: Index,
        field: Field,
        value: Value,
        fix_checksum: bool,
    },
    /// A decimal in the stream (a pax record's, a 1.0 map's) replaced, its length kept or not.
    Decimal {
        at: Index,
        with: Vec<u8>,
        keep_length: bool,
    },
    Truncate {
        at: Index,
    },
    Insert {
        at: Index,
        bytes: Vec<u8>,
    },
    RepeatBlock {
        from: Index,
        to: Index,
    },
    DropBlock {
        at: Index,
    },
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        2 => (any::<Index>(), 1u8..=255).prop_map(|(at, xor)| Mutation::Flip { at, xor }),
        4 => (any::<Index>(), field(), value(), prop::bool::weighted(0.8)).prop_map(
            |(block, field, value, fix_checksum)| Mutation::Field { block, field, value, fix_checksum }
        ),
        3 => (any::<Index>(), decimal(), any::<bool>())
            .prop_map(|(at, with, keep_length)| Mutation::Decimal { at, with, keep_length }),
        1 => any::<Index>().prop_map(|at| Mutation::Truncate { at }),
        1 => (any::<Index>(), vec(any::<u8>(), 1..600)).prop_map(|(at, bytes)| Mutation::Insert { at, bytes }),
        1 => (any::<Index>(), any::<Index>()).prop_map(|(from, to)| Mutation::RepeatBlock { from, to }),
        1 => any::<Index>().prop_map(|at| Mutation::DropBlock { at }),
    ]
}

/// Sets a header block's checksum to what its bytes sum to.
fn fix_checksum(block: &mut [u8]) {
    block[148..156].fill(b' ');
    let sum: u32 = block.iter().map(|&b| u32::from(b)).sum();
    put(&mut block[148..156], format!("{sum:06o}\0 ").as_bytes());
}

/// The blocks that hold a header (the `ustar` magic), else all of them.
fn header_blocks(archive: &[u8]) -> Vec<usize> {
    let blocks = archive.len() / BLOCK;
    let headers: Vec<usize> = (0..blocks)
        .filter(|b| archive[b * BLOCK + 257..b * BLOCK + 262] == *b"ustar")
        .collect();
    if headers.is_empty() {
        (0..blocks).collect()
    } else {
        headers
    }
}

impl Mutation {
    fn apply(&self, archive: &mut Vec<u8>) {
        if archive.is_empty() {
            return;
        }
        let blocks = archive.len() / BLOCK;
        match self {
            Self::Flip { at, xor } => {
                let i = at.index(archive.len());
                archive[i] ^= xor;
            }
            Self::Field {
                block,
                field,
                value,
                fix_checksum: fix,
            } => {
                let headers = header_blocks(archive);
                if headers.is_empty() {
                    return;
                }
                let start = headers[block.index(headers.len())] * BLOCK;
                let header = &mut archive[start..start + BLOCK];
                value.write(&mut header[field.range()]);
                if *fix && !matches!(field, Field::Checksum) {
                    fix_checksum(header);
                }
            }
            Self::Decimal {
                at,
                with,
                keep_length,
            } => {
                let runs = decimal_runs(archive);
                if runs.is_empty() {
                    return;
                }
                let (start, end) = runs[at.index(runs.len())];
                let mut with = with.clone();
                if *keep_length {
                    with.resize(end - start, b'9');
                }
                archive.splice(start..end, with);
            }
            Self::Truncate { at } => archive.truncate(at.index(archive.len())),
            Self::Insert { at, bytes } => {
                let i = at.index(archive.len() + 1);
                archive.splice(i..i, bytes.iter().copied());
            }
            Self::RepeatBlock { from, to } if blocks > 0 => {
                let from = from.index(blocks) * BLOCK;
                let to = to.index(blocks + 1) * BLOCK;
                let block = archive[from..from + BLOCK].to_vec();
                archive.splice(to..to, block);
            }
            Self::DropBlock { at } if blocks > 0 => {
                let at = at.index(blocks) * BLOCK;
                archive.drain(at..at + BLOCK);
            }
            Self::RepeatBlock { .. } | Self::DropBlock { .. } => {}
        }
    }
}

/// Where the decimal numbers of the stream are: runs of ASCII digits after a `=`, a `,` or a
/// line break (pax records, 0.1 maps, 1.0 maps).
fn decimal_runs(archive: &[u8]) -> Vec<(usize, usize)> {
    let mut runs = Vec::new();
    let mut i = 1;
    while i < archive.len() {
        if archive[i].is_ascii_digit() && matches!(archive[i - 1], b'=' | b',' | b'\n') {
            let start = i;
            while i < archive.len() && archive[i].is_ascii_digit() {
                i += 1;
            }
            runs.push((start, i));
        }
        i += 1;
    }
    runs
}

fn mutated(base: impl Strategy<Value = Vec<u8>>) -> impl Strategy<Value = Vec<u8>> {
    (base, vec(mutation(), 0..5)).prop_map(|(mut archive, mutations)| {
        for mutation in &mutations {
            mutation.apply(&mut archive);
        }
        archive
    })
}

fn seed() -> impl Strategy<Value = Vec<u8>> {
    (0..seeds().len()).prop_map(|i| seeds()[i].clone())
}

/// Noise: anything at all, or a block that passes the checksum followed by anything.
fn noise() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        vec(any::<u8>(), 0..3000),
        (vec(any::<u8>(), BLOCK..=BLOCK), vec(any::<u8>(), 0..3000)).prop_map(
            |(mut header, rest)| {
                header[257..263].copy_from_slice(b"ustar\0");
                fix_checksum(&mut header);
                header.extend(rest);
                header
            }
        ),
    ]
}

// ---------------------------------------------------------------------------------------------
// The check.

/// What an entry outside the target is: its type, mode, owners, times, links and content.
type Observed = BTreeMap<PathBuf, String>;

/// Everything below `dir` but `skip`, without following symlinks.
fn observe(dir: &Path, skip: &Path) -> Observed {
    let mut seen = Observed::new();
    let mut todo = vec![dir.to_owned()];
    while let Some(current) = todo.pop() {
        let meta = fs::symlink_metadata(&current).unwrap();
        let mut what = format!(
            "{:o} {}:{} {}.{} links={} size={}",
            meta.mode(),
            meta.uid(),
            meta.gid(),
            meta.mtime(),
            meta.mtime_nsec(),
            meta.nlink(),
            meta.size(),
        );
        if meta.is_file() {
            what.push_str(&format!(" {:?}", fs::read(&current).unwrap()));
        } else if meta.is_symlink() {
            what.push_str(&format!(" -> {:?}", fs::read_link(&current).unwrap()));
        } else if meta.is_dir() {
            todo.extend(
                fs::read_dir(&current)
                    .unwrap()
                    .map(|e| e.unwrap().path())
                    .filter(|p| p != skip),
            );
        }
        seen.insert(current, what);
    }
    seen
}

/// Extracts `archive` into an empty directory beside a sentinel tree and checks every promise
/// of the module documentation.
fn check(archive: &[u8]) -> Result<(), TestCaseError> {
    let tmp = tempfile::tempdir().unwrap();
    let top = tmp.path();
    let stage = top.join("stage");
    fs::create_dir(&stage).unwrap();
    // What a name that climbs out, an absolute name or a symlink would reach.
    let outside = top.join("outside");
    fs::create_dir_all(outside.join("dir")).unwrap();
    fs::write(outside.join("x"), b"sentinel").unwrap();
    symlink("../stage", outside.join("back")).unwrap();
    let before = observe(top, &stage);

    let cancel = AtomicBool::new(false);
    let archive_path = Path::new("/nonexistent/mutated.tar");
    let (extracted, peak) = peak_heap(|| extract_tar(archive, archive_path, &stage, "p", &cancel));

    prop_assert!(
        peak <= heap_bound(archive.len()),
        "{peak} bytes of heap for a stream of {} bytes (bound {})",
        archive.len(),
        heap_bound(archive.len())
    );
    if let Err(err) = &extracted {
        let mut cause: Option<&dyn std::error::Error> = Some(err);
        while let Some(current) = cause {
            let text = current.to_string();
            prop_assert!(
                !text.is_empty() && !text.chars().any(char::is_control),
                "a cause that is not one clean line: {text:?}"
            );
            cause = current.source();
        }
    }
    prop_assert_eq!(
        observe(top, &stage),
        before,
        "something changed outside the stage"
    );
    Ok(())
}

proptest! {
    #![proptest_config(crate::cases(1024))]

    /// GNU tar's own archives, mutated.
    #[test]
    fn mutated_gnu_tar_archives_are_extracted_or_refused_in_bounds(archive in mutated(seed())) {
        check(&archive)?;
    }

    /// Archives of random members (random header fields, sizes, records, sparse maps, global
    /// headers), mutated or not.
    #[test]
    fn generated_archives_are_extracted_or_refused_in_bounds(archive in mutated(generated_archive())) {
        check(&archive)?;
    }
}

proptest! {
    #![proptest_config(crate::cases(256))]

    /// Noise, and noise behind a header that passes its checksum.
    #[test]
    fn noise_is_refused_in_bounds(archive in noise()) {
        check(&archive)?;
    }
}

#[test]
fn the_seeds_hold_every_form_they_are_meant_to() {
    let seeds = seeds();
    let holds = |i: usize, needle: &[u8]| seeds[i].windows(needle.len()).any(|w| w == needle);
    let old_gnu_sparse = seeds[0]
        .chunks(BLOCK)
        .any(|b| b.len() == BLOCK && &b[257..265] == b"ustar  \0" && b[156] == b'S');
    assert!(old_gnu_sparse, "an old GNU sparse member");
    assert!(holds(1, b" GNU.sparse.offset="), "PAX 0.0");
    assert!(holds(2, b" GNU.sparse.map="), "PAX 0.1");
    assert!(holds(3, b" GNU.sparse.major=1\n"), "PAX 1.0");
    assert!(
        seeds[4]
            .chunks(BLOCK)
            .any(|b| b.len() == BLOCK && b[156] == b'g'),
        "a global header"
    );
    assert!(holds(1, b"SCHILY.xattr.user.autogentoo="), "an xattr");
    // And each is extracted whole.
    for (i, archive) in seeds.iter().enumerate() {
        let tmp = tempfile::tempdir().unwrap();
        let extracted = extract_tar(
            &archive[..],
            Path::new("seed.tar"),
            tmp.path(),
            "seed",
            &AtomicBool::new(false),
        );
        assert!(extracted.is_ok(), "seed {i}: {extracted:?}");
    }
}

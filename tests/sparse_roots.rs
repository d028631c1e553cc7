//! Sparse files through the dir backend: a stage imported from a directory and a root cloned
//! from it keep the holes, so a 1 TiB disk image holding a few hundred KiB costs each copy its
//! data, not a terabyte.

use std::fs::{self, File};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::Path;

use anyhow::{ensure, Context as _, Result};
use autogentoo_tests::{noise, Tmpfs, Workdir};
use rustix::fs::SeekFrom;
use rustix::io::Errno;

const KIB: u64 = 1 << 10;
const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;
const TIB: u64 = 1 << 40;

/// How far a filesystem may round a run of data out to its blocks (tmpfs: a page).
const BLOCK: u64 = 64 * KIB;

/// A sparse file of the test tree: its path, its length and its runs of data as
/// `(offset, length)`; holes everywhere else.
struct Sparse {
    rel: &'static str,
    len: u64,
    runs: &'static [(u64, u64)],
}

/// A disk image with data at its start, in its middle (not on a block boundary) and at its
/// end, and a database that ends in a hole.
const SPARSE: [Sparse; 2] = [
    Sparse {
        rel: "var/lib/images/disk.img",
        len: TIB,
        runs: &[
            (0, 64 * KIB),
            (300 * GIB + 12_345, 100_000),
            (TIB - 50_000, 50_000),
        ],
    },
    Sparse {
        rel: "var/lib/db/tail-hole.db",
        len: TIB,
        runs: &[(4 * KIB, 8 * KIB), (GIB, 200_000)],
    },
];

/// The bytes of run `run` of file `file`: noise, different for each.
fn run_data(file: usize, run: usize, len: u64) -> Vec<u8> {
    noise(len as usize, 1 + (file * 10 + run) as u64)
}

/// A small stage-like tree holding the sparse files.
fn build_tree(root: &Path) -> Result<()> {
    fs::create_dir_all(root.join("etc"))?;
    fs::write(root.join("etc/hostname"), "sparse\n")?;
    for (i, sparse) in SPARSE.iter().enumerate() {
        let path = root.join(sparse.rel);
        fs::create_dir_all(path.parent().expect("a parent"))?;
        let file = File::create(&path).with_context(|| format!("create {}", path.display()))?;
        file.set_len(sparse.len)?;
        for (j, &(offset, len)) in sparse.runs.iter().enumerate() {
            file.write_all_at(&run_data(i, j, len), offset)
                .with_context(|| format!("write {} at {offset}", path.display()))?;
        }
    }
    Ok(())
}

/// The runs of `file` that hold data, as the filesystem reports them; holes are never read.
fn data_regions(file: &File, len: u64) -> Result<Vec<(u64, u64)>> {
    let mut regions = Vec::new();
    let mut at = 0;
    while at < len {
        let start = match rustix::fs::seek(file, SeekFrom::Data(at)) {
            Ok(start) => start,
            Err(Errno::NXIO) => break,
            Err(e) => return Err(e).context("SEEK_DATA"),
        };
        let end = rustix::fs::seek(file, SeekFrom::Hole(start)).context("SEEK_HOLE")?;
        regions.push((start, end));
        at = end;
    }
    Ok(regions)
}

/// Checks that the copy of each sparse file in `tree` has its length, its data at its offsets
/// and holes elsewhere, and costs the disk about its data; without reading a hole but for one
/// block.
fn assert_sparse_copies(tree: &Path) -> Result<()> {
    for (i, sparse) in SPARSE.iter().enumerate() {
        let path = tree.join(sparse.rel);
        let file = File::open(&path).with_context(|| format!("open {}", path.display()))?;
        let meta = file.metadata()?;
        ensure!(
            meta.len() == sparse.len,
            "{}: {} bytes long, not {}",
            path.display(),
            meta.len(),
            sparse.len
        );
        let data: u64 = sparse.runs.iter().map(|run| run.1).sum();
        let used = meta.blocks() * 512;
        ensure!(
            used >= data && used <= data + 2 * BLOCK * sparse.runs.len() as u64,
            "{}: {used} bytes on disk for {data} bytes of data",
            path.display()
        );

        let regions = data_regions(&file, sparse.len)
            .with_context(|| format!("find the data in {}", path.display()))?;
        for &(offset, len) in sparse.runs {
            ensure!(
                regions
                    .iter()
                    .any(|&(start, end)| start <= offset && offset + len <= end),
                "{}: no data region holds {offset}..{}; regions {regions:?}",
                path.display(),
                offset + len
            );
        }
        for &(start, end) in &regions {
            ensure!(
                sparse.runs.iter().any(|&(offset, len)| {
                    start >= (offset / BLOCK) * BLOCK
                        && end <= (offset + len).div_ceil(BLOCK) * BLOCK
                }),
                "{}: data at {start}..{end}, where the source has a hole",
                path.display()
            );
        }

        for (j, &(offset, len)) in sparse.runs.iter().enumerate() {
            let mut read = vec![0; len as usize];
            file.read_exact_at(&mut read, offset)
                .with_context(|| format!("read {} at {offset}", path.display()))?;
            ensure!(
                read == run_data(i, j, len),
                "{}: the data at {offset} differs from the source's",
                path.display()
            );
        }
        let mut hole = vec![1; 4096];
        file.read_exact_at(&mut hole, sparse.len / 2 + 3 * GIB)?;
        ensure!(
            hole.iter().all(|&b| b == 0),
            "{}: a hole reads as something else than zeros",
            path.display()
        );
    }
    Ok(())
}

#[test]
fn a_root_cloned_from_a_sparse_stage_costs_only_its_data() -> Result<()> {
    let workdir = Workdir::uninitialised();
    // The workdir is a small tmpfs, a filesystem without reflinks like ext4: a copy that filled
    // the holes fails there at once, where on the host's disk it would first write a terabyte.
    let tmpfs = Tmpfs::mount(workdir.path(), 256 * MIB)?;
    workdir.ok(["workdir", "init"]);
    let status = workdir.ok(["workdir", "status", "--json"]).json();
    assert_eq!(status["backend"], "dir", "{status}");
    let tree = workdir.scratch().join("tree");
    build_tree(&tree)?;
    // The test is worth something only if the source itself is sparse.
    for sparse in &SPARSE {
        let used = fs::metadata(tree.join(sparse.rel))?.blocks() * 512;
        ensure!(
            used < 64 * MIB,
            "{} takes {used} bytes: the scratch filesystem keeps no holes",
            sparse.rel
        );
    }

    let stage = workdir.import(&tree, "s");
    assert_sparse_copies(&stage).context("the stage")?;
    workdir.ok(["root", "create", "r", "--stage", "s"]);
    assert_sparse_copies(&workdir.root_path("r")).context("the root")?;

    tmpfs.close()
}
